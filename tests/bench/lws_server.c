/*
 * lws_server.c - the libwebsockets peer of the ws benchmarks: a minimal
 * echo / broadcast server of our own over Debian's libwebsockets.
 *
 *   build/bench/lws_server -p PORT [--broadcast]
 *
 * Written the way lws's own minimal examples are: messages are assembled
 * from RECEIVE callbacks, queued, and written one lws_write() per
 * SERVER_WRITEABLE callback (lws's rule). Broadcast keeps the messages in
 * one list with a read position per connection and asks lws for a
 * writeable callback on every connection of the protocol
 * (lws_callback_on_writable_all_protocol), as the lws mirror example does.
 * UTF-8 of text messages is validated (LWS_SERVER_OPTION_VALIDATE_UTF8),
 * as ws and Node's ws always do. Listens on 127.0.0.1 only.
 */
#include <libwebsockets.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct msg {
  struct msg *next;
  size_t len;
  int binary;
  unsigned char buf[];   /* LWS_PRE bytes, then the payload */
};

struct pss {
  struct msg *head, *tail;
  unsigned char *rx;
  size_t rxlen, rxcap;
  size_t bnext;          /* broadcast: next message of g_b to send */
};

static int g_broadcast;
static volatile int g_stop;
static struct lws_context *g_ctx;
static struct msg **g_b;  /* broadcast: every message so far */
static size_t g_bn, g_bcap;

static struct msg *msg_new(const void *data, size_t len, int binary) {
  struct msg *m = malloc(sizeof *m + LWS_PRE + len);
  if (!m) return NULL;
  m->next = NULL, m->len = len, m->binary = binary;
  memcpy(m->buf + LWS_PRE, data, len);
  return m;
}

static int write_msg(struct lws *wsi, struct msg *m) {
  int n = lws_write(wsi, m->buf + LWS_PRE, m->len,
                    m->binary ? LWS_WRITE_BINARY : LWS_WRITE_TEXT);
  return n < (int)m->len ? -1 : 0;
}

static int on_whole(struct lws *wsi, struct pss *p, const void *data,
                    size_t len, int binary) {
  struct msg *m = msg_new(data, len, binary);
  if (!m) return -1;
  if (g_broadcast) {
    if (g_bn == g_bcap) {
      g_bcap = g_bcap ? g_bcap * 2 : 1024;
      g_b = realloc(g_b, g_bcap * sizeof *g_b);
      if (!g_b) return -1;
    }
    g_b[g_bn++] = m;
    lws_callback_on_writable_all_protocol(lws_get_context(wsi),
                                          lws_get_protocol(wsi));
    return 0;
  }
  if (p->tail) p->tail->next = m; else p->head = m;
  p->tail = m;
  lws_callback_on_writable(wsi);
  return 0;
}

static int callback(struct lws *wsi, enum lws_callback_reasons reason,
                    void *user, void *in, size_t len) {
  struct pss *p = (struct pss *)user;
  switch (reason) {
  case LWS_CALLBACK_ESTABLISHED:
    memset(p, 0, sizeof *p);
    p->bnext = g_bn;
    break;
  case LWS_CALLBACK_RECEIVE: {
    int first = lws_is_first_fragment(wsi);
    int last = lws_is_final_fragment(wsi) && !lws_remaining_packet_payload(wsi);
    if (first && last)   /* the common case: no assembly */
      return on_whole(wsi, p, in, len, lws_frame_is_binary(wsi));
    if (first) p->rxlen = 0;
    if (p->rxlen + len > p->rxcap) {
      p->rxcap = (p->rxlen + len) * 2;
      if (!(p->rx = realloc(p->rx, p->rxcap))) return -1;
    }
    memcpy(p->rx + p->rxlen, in, len);
    p->rxlen += len;
    if (last) {
      int rc = on_whole(wsi, p, p->rx, p->rxlen, lws_frame_is_binary(wsi));
      p->rxlen = 0;
      return rc;
    }
    break;
  }
  case LWS_CALLBACK_SERVER_WRITEABLE:
    if (g_broadcast) {
      if (p->bnext < g_bn && write_msg(wsi, g_b[p->bnext++]) < 0) return -1;
      if (p->bnext < g_bn) lws_callback_on_writable(wsi);
    } else if (p->head) {
      struct msg *m = p->head;
      if (write_msg(wsi, m) < 0) return -1;
      p->head = m->next;
      if (!p->head) p->tail = NULL;
      free(m);
      if (p->head) lws_callback_on_writable(wsi);
    }
    break;
  case LWS_CALLBACK_CLOSED:
    while (p->head) {
      struct msg *m = p->head;
      p->head = m->next;
      free(m);
    }
    free(p->rx);
    p->rx = NULL;
    break;
  default:
    break;
  }
  return 0;
}

static const struct lws_protocols protocols[] = {
    {"bench", callback, sizeof(struct pss), 0, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0}};

static void on_signal(int sig) {
  (void)sig;
  g_stop = 1;
  if (g_ctx) lws_cancel_service(g_ctx);
}

int main(int argc, char **argv) {
  struct lws_context_creation_info info;
  int port = 9004, i;
  for (i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "-p") && i + 1 < argc) port = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--broadcast")) g_broadcast = 1;
    else {
      fprintf(stderr, "usage: lws_server -p PORT [--broadcast]\n");
      return 2;
    }
  }
  signal(SIGINT, on_signal);
  signal(SIGTERM, on_signal);
  signal(SIGPIPE, SIG_IGN);
  lws_set_log_level(LLL_ERR, NULL);
  memset(&info, 0, sizeof info);
  info.port = port;
  info.iface = "127.0.0.1";
  info.protocols = protocols;
  info.gid = -1;
  info.uid = -1;
  info.options = LWS_SERVER_OPTION_VALIDATE_UTF8 | LWS_SERVER_OPTION_DISABLE_IPV6;
  g_ctx = lws_create_context(&info);
  if (!g_ctx) {
    fprintf(stderr, "lws_server: lws_create_context failed\n");
    return 1;
  }
  printf("lws_server (libwebsockets %s) listening on ws://127.0.0.1:%d/\n",
         lws_get_library_version(), port);
  fflush(stdout);
  while (!g_stop && lws_service(g_ctx, 0) >= 0) {}
  lws_context_destroy(g_ctx);
  return 0;
}
