/*
 * lws_peer.c - libwebsockets as the server of the interoperability matrix
 * (tests/interop): the peer protocol of docs/interop.md on lws, so
 * build/echo_client and build/wsc can be tested against it. Our test
 * program, their library: built by tests/interop/interop.mk against
 * Debian's libwebsockets-dev.
 *
 *   build/interop/lws_peer [-p PORT] [--deflate]
 *
 * --deflate turns on lws's permessage-deflate extension
 * (lws_extension_callback_pm_deflate); without it lws offers none.
 * Prints "lws_peer listening on ws://127.0.0.1:PORT/ (libwebsockets V)"
 * first, then one line per event (open, close, drive) as the other peers
 * do. lws answers pings by itself and reports none, so there are no "ping"
 * lines. The path /drive drives the client (common.js drive()).
 */
#include <libwebsockets.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define T_US (20 * LWS_USEC_PER_SEC)
#define MIB (1u << 20)

static const size_t SIZES[] = {0, 1, 125, 126, 127, 65535, 65536, 65537,
                               1u << 20, 16u << 20};
#define NSIZES (sizeof SIZES / sizeof SIZES[0])
static const char UTF8[] = "h\xc3\xa9llo w\xc3\xb6rld \xe2\x80\x93 \xe2\x9c\x93 "
                           "\xf0\x9d\x84\x9e \xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e "
                           "\xf0\x9f\x8e\x89";
static const char ALPHABET[] = "abcdefghijklmnopqrstuvwxyz0123456789";

static volatile int g_stop;
static unsigned g_next_id;

/* One frame (or a message cut into `pieces` frames) waiting to be sent. */
typedef struct item {
  struct item *next;
  enum { IT_DATA, IT_PING, IT_CLOSE } kind;
  int binary, ping_between;
  unsigned pieces, done;      /* frames in the message, frames sent */
  int code;                   /* IT_CLOSE */
  size_t len;
  unsigned char *buf;         /* LWS_PRE bytes of room, then the payload */
} item;

typedef struct pss {
  unsigned id;
  char path[128];
  char proto[16];
  item *head, *tail;
  unsigned char *in;          /* the message being reassembled */
  size_t in_len, in_cap;
  int in_binary;
  int peer_code;              /* the peer's close code, 0 until one came */
  char peer_reason[128];
  int sent_code;
  unsigned long pongs;
  char want_pong[126];
  size_t want_pong_len;
  int awaiting_pong;
  /* drive */
  int driving, step, ok, fail;
  char first_fail[64];
  unsigned char *expect;
  size_t expect_len;
  int expect_binary;
  char case_name[64];
} pss;

static void out(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vprintf(fmt, ap);
  va_end(ap);
  fputc('\n', stdout);
  fflush(stdout);
}

static item *push(struct lws *wsi, pss *s, int kind, const void *data,
                  size_t len) {
  item *it = (item *)calloc(1, sizeof *it);
  if (it == NULL) return NULL;
  it->buf = (unsigned char *)malloc(LWS_PRE + len + 1);
  if (it->buf == NULL) {
    free(it);
    return NULL;
  }
  if (len) memcpy(it->buf + LWS_PRE, data, len);
  it->kind = kind;
  it->len = len;
  it->pieces = 1;
  if (s->tail) s->tail->next = it;
  else s->head = it;
  s->tail = it;
  lws_callback_on_writable(wsi);
  return it;
}

static void queue_close(struct lws *wsi, pss *s, int code, const char *reason,
                        size_t len) {
  item *it = push(wsi, s, IT_CLOSE, reason, len > 120 ? 120 : len);
  if (it) it->code = code;
}

static unsigned char *make_text(size_t n) {
  unsigned char *b = (unsigned char *)malloc(n + 1);
  size_t i;
  if (b)
    for (i = 0; i < n; i++) b[i] = (unsigned char)ALPHABET[i % 36];
  return b;
}

static unsigned char *make_binary(size_t n) {
  unsigned char *b = (unsigned char *)malloc(n + 1);
  size_t i;
  if (b)
    for (i = 0; i < n; i++) b[i] = (unsigned char)(i % 251);
  return b;
}

static void size_name(char *out, size_t cap, size_t n) {
  if (n >= MIB && n % MIB == 0) snprintf(out, cap, "%luMiB", (unsigned long)(n / MIB));
  else snprintf(out, cap, "%lu", (unsigned long)n);
}

static void record(pss *s, const char *name, int good, const char *why) {
  if (good) {
    s->ok++;
  } else {
    s->fail++;
    if (!s->first_fail[0]) snprintf(s->first_fail, sizeof s->first_fail, "%s", name);
  }
  out("drive case=%s %s%s", name, good ? "ok" : "fail ", good ? "" : why);
}

/* Queues drive step s->step: a message the client must echo, or the ping,
 * or the final close. */
static void drive_step(struct lws *wsi, pss *s) {
  int nsteps = 2 * (int)NSIZES + 1 + 2;
  int k = s->step;
  item *it;
  char sz[24];
  free(s->expect);
  s->expect = NULL;
  if (k < (int)NSIZES || (k > (int)NSIZES && k <= 2 * (int)NSIZES)) {
    int bin = k > (int)NSIZES;
    size_t n = SIZES[bin ? k - (int)NSIZES - 1 : k];
    size_name(sz, sizeof sz, n);
    snprintf(s->case_name, sizeof s->case_name, "%s-%s", bin ? "binary" : "text", sz);
    s->expect = bin ? make_binary(n) : make_text(n);
    s->expect_len = n;
    s->expect_binary = bin;
    it = push(wsi, s, IT_DATA, s->expect, n);
    if (it) it->binary = bin;
  } else if (k == (int)NSIZES) {
    snprintf(s->case_name, sizeof s->case_name, "text-utf8");
    s->expect_len = sizeof UTF8 - 1;
    s->expect = make_text(0);
    s->expect = (unsigned char *)realloc(s->expect, s->expect_len);
    memcpy(s->expect, UTF8, s->expect_len);
    s->expect_binary = 0;
    push(wsi, s, IT_DATA, UTF8, s->expect_len);
  } else if (k == nsteps - 2) {
    snprintf(s->case_name, sizeof s->case_name, "fragmented-text-utf8");
    s->expect_len = sizeof UTF8 - 1;
    s->expect = (unsigned char *)malloc(s->expect_len);
    memcpy(s->expect, UTF8, s->expect_len);
    s->expect_binary = 0;
    it = push(wsi, s, IT_DATA, UTF8, s->expect_len);
    if (it) it->pieces = 5; /* cut inside UTF-8 sequences */
  } else if (k == nsteps - 1) {
    snprintf(s->case_name, sizeof s->case_name, "fragmented-binary-ping-between");
    s->expect_len = 256 * 1024;
    s->expect = make_binary(s->expect_len);
    s->expect_binary = 1;
    it = push(wsi, s, IT_DATA, s->expect, s->expect_len);
    if (it) it->binary = 1, it->pieces = 4, it->ping_between = 1;
  } else if (k == nsteps) {
    snprintf(s->case_name, sizeof s->case_name, "server-ping-pong");
    memcpy(s->want_pong, "drive-ping", 10);
    s->want_pong_len = 10;
    s->awaiting_pong = 1;
    push(wsi, s, IT_PING, "drive-ping", 10);
  } else {
    char reason[100];
    s->driving = 0;
    lws_set_timer_usecs(wsi, -1);
    out("drive done ok=%d fail=%d", s->ok, s->fail);
    if (s->fail) {
      int n = snprintf(reason, sizeof reason, "drive failed: %s", s->first_fail);
      queue_close(wsi, s, 4001, reason, (size_t)n);
    } else {
      queue_close(wsi, s, 1000, "drive ok", 8);
    }
    return;
  }
  lws_set_timer_usecs(wsi, T_US);
}

static void drive_got(struct lws *wsi, pss *s, const unsigned char *d,
                      size_t len, int binary) {
  char why[96];
  if (binary != s->expect_binary) {
    snprintf(why, sizeof why, "echo came back as %s", binary ? "binary" : "text");
    record(s, s->case_name, 0, why);
  } else if (len != s->expect_len || (len && memcmp(d, s->expect, len) != 0)) {
    snprintf(why, sizeof why, "echo differs (%lu bytes, want %lu)",
             (unsigned long)len, (unsigned long)s->expect_len);
    record(s, s->case_name, 0, why);
  } else {
    record(s, s->case_name, 1, "");
  }
  s->step++;
  drive_step(wsi, s);
}

static int command(struct lws *wsi, pss *s, const char *m, size_t len) {
  char buf[256];
  char *arg;
  size_t n = len < sizeof buf - 1 ? len : sizeof buf - 1;
  item *it;
  memcpy(buf, m, n);
  buf[n] = '\0';
  arg = strchr(buf, ' ');
  if (arg) *arg++ = '\0';
  else arg = buf + n;
  if (strcmp(buf, "!close") == 0) {
    char *reason = strchr(arg, ' ');
    int code = atoi(arg);
    reason = reason ? reason + 1 : arg + strlen(arg);
    queue_close(wsi, s, code, reason, strlen(reason));
  } else if (strcmp(buf, "!ping") == 0) {
    s->want_pong_len = strlen(arg) > 125 ? 125 : strlen(arg);
    memcpy(s->want_pong, arg, s->want_pong_len);
    s->awaiting_pong = 1;
    push(wsi, s, IT_PING, arg, s->want_pong_len);
  } else if (strcmp(buf, "!frag") == 0) {
    char *rest = strchr(arg, ' ');
    unsigned pieces = (unsigned)atoi(arg);
    if (rest == NULL || pieces < 1) return -1;
    rest++;
    /* the text from the original message: it may be longer than buf */
    it = push(wsi, s, IT_DATA, m + (rest - buf), len - (size_t)(rest - buf));
    if (it) it->pieces = pieces;
  } else if (strcmp(buf, "!fragb") == 0) {
    unsigned pieces = (unsigned)atoi(arg);
    char *sp = strchr(arg, ' ');
    size_t size = sp ? (size_t)strtoul(sp + 1, NULL, 10) : 0;
    unsigned char *b;
    if (pieces < 1 || size > 64 * MIB) return -1;
    b = make_binary(size);
    if (b == NULL) return -1;
    it = push(wsi, s, IT_DATA, b, size);
    free(b);
    if (it) it->binary = 1, it->pieces = pieces, it->ping_between = 1;
  } else if (strcmp(buf, "!stats") == 0) {
    int k = snprintf(buf, sizeof buf, "stats pings=unknown pongs=%lu", s->pongs);
    push(wsi, s, IT_DATA, buf, (size_t)k);
  } else if (strcmp(buf, "!proto") == 0) {
    int k = snprintf(buf, sizeof buf, "proto:%s", s->proto);
    push(wsi, s, IT_DATA, buf, (size_t)k);
  } else {
    push(wsi, s, IT_DATA, m, len);
  }
  return 0;
}

/* Sends the next frame of the head item; 1 when the connection is to be
 * closed. */
static int write_next(struct lws *wsi, pss *s) {
  item *it = s->head;
  if (it == NULL) return 0;
  if (it->kind == IT_CLOSE) {
    s->sent_code = it->code;
    lws_close_reason(wsi, (enum lws_close_status)it->code, it->buf + LWS_PRE, it->len);
    return 1;
  }
  if (it->kind == IT_PING) {
    if (lws_write(wsi, it->buf + LWS_PRE, it->len, LWS_WRITE_PING) < (int)it->len) return 1;
    it->done = it->pieces;
  } else if (it->ping_between && it->done == 1 && it->pieces > 1) {
    /* a ping between the first and second fragments */
    static unsigned char ping[LWS_PRE + 8];
    memcpy(ping + LWS_PRE, "between", 7);
    if (lws_write(wsi, ping + LWS_PRE, 7, LWS_WRITE_PING) < 7) return 1;
    it->ping_between = 0;
  } else {
    size_t from = (size_t)((unsigned long long)it->len * it->done / it->pieces);
    size_t to = (size_t)((unsigned long long)it->len * (it->done + 1) / it->pieces);
    int flags = lws_write_ws_flags(it->binary ? LWS_WRITE_BINARY : LWS_WRITE_TEXT,
                                   it->done == 0, it->done + 1 == it->pieces);
    /* lws_write wants LWS_PRE writable bytes before the payload: the
     * bytes before a later piece are payload already sent, so save them. */
    unsigned char save[LWS_PRE];
    unsigned char *p = it->buf + LWS_PRE + from;
    int rc;
    memcpy(save, p - LWS_PRE, LWS_PRE);
    rc = lws_write(wsi, p, to - from, (enum lws_write_protocol)flags);
    memcpy(p - LWS_PRE, save, LWS_PRE);
    if (rc < (int)(to - from)) return 1;
    it->done++;
  }
  if (it->done >= it->pieces) {
    s->head = it->next;
    if (s->head == NULL) s->tail = NULL;
    free(it->buf);
    free(it);
  }
  if (s->head) lws_callback_on_writable(wsi);
  return 0;
}

static void on_message(struct lws *wsi, pss *s) {
  if (s->driving) {
    drive_got(wsi, s, s->in, s->in_len, s->in_binary);
  } else if (!s->in_binary && s->in_len > 0 && s->in[0] == '!') {
    if (command(wsi, s, (const char *)s->in, s->in_len) != 0)
      queue_close(wsi, s, 1011, "bad command", 11);
  } else {
    item *it = push(wsi, s, IT_DATA, s->in, s->in_len);
    if (it) it->binary = s->in_binary;
  }
}

static int callback(struct lws *wsi, enum lws_callback_reasons reason,
                    void *user, void *in, size_t len) {
  pss *s = (pss *)user;
  switch (reason) {
  case LWS_CALLBACK_ESTABLISHED: {
    int n;
    memset(s, 0, sizeof *s);
    s->id = ++g_next_id;
    n = lws_hdr_copy(wsi, s->path, sizeof s->path, WSI_TOKEN_GET_URI);
    if (n < 0) s->path[0] = '\0';
    /* lws binds the first protocol when the client offered none, but then
     * answers without one: only a Sec-WebSocket-Protocol request header
     * means one was negotiated. */
    if (lws_hdr_total_length(wsi, WSI_TOKEN_PROTOCOL) > 0)
      snprintf(s->proto, sizeof s->proto, "%s", lws_get_protocol(wsi)->name);
    out("open id=%u path=%s proto=%s", s->id, s->path, s->proto);
    if (strcmp(s->path, "/drive") == 0) {
      s->driving = 1;
      drive_step(wsi, s);
    }
    break;
  }
  case LWS_CALLBACK_RECEIVE:
    if (lws_is_first_fragment(wsi)) {
      s->in_len = 0;
      s->in_binary = lws_frame_is_binary(wsi);
    }
    if (s->in_len + len > s->in_cap) {
      size_t cap = s->in_cap ? s->in_cap : 4096;
      unsigned char *b;
      while (cap < s->in_len + len) cap *= 2;
      b = (unsigned char *)realloc(s->in, cap);
      if (b == NULL) return -1;
      s->in = b;
      s->in_cap = cap;
    }
    if (len) memcpy(s->in + s->in_len, in, len);
    s->in_len += len;
    if (lws_is_final_fragment(wsi) && lws_remaining_packet_payload(wsi) == 0)
      on_message(wsi, s);
    break;
  case LWS_CALLBACK_RECEIVE_PONG:
    s->pongs++;
    if (s->awaiting_pong && len == s->want_pong_len &&
        memcmp(in, s->want_pong, len) == 0) {
      s->awaiting_pong = 0;
      if (s->driving) {
        record(s, s->case_name, 1, "");
        s->step++;
        drive_step(wsi, s);
      } else {
        char buf[140];
        memcpy(buf, "pong:", 5);
        memcpy(buf + 5, in, len);
        push(wsi, s, IT_DATA, buf, len + 5);
      }
    }
    break;
  case LWS_CALLBACK_TIMER:
    if (s->driving) {
      record(s, s->case_name, 0, "no echo within 20 s");
      s->step++;
      drive_step(wsi, s);
    }
    break;
  case LWS_CALLBACK_SERVER_WRITEABLE:
    if (write_next(wsi, s)) return -1;
    break;
  case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
    if (len >= 2) {
      const unsigned char *p = (const unsigned char *)in;
      size_t r = len - 2 < sizeof s->peer_reason - 1 ? len - 2 : sizeof s->peer_reason - 1;
      s->peer_code = p[0] << 8 | p[1];
      memcpy(s->peer_reason, p + 2, r);
      s->peer_reason[r] = '\0';
    } else {
      s->peer_code = 1005;
    }
    break;
  case LWS_CALLBACK_CLOSED: {
    item *it;
    out("close id=%u path=%s code=%d reason=%s", s->id, s->path,
        s->peer_code ? s->peer_code : s->sent_code ? s->sent_code : 1006,
        s->peer_reason);
    while ((it = s->head) != NULL) {
      s->head = it->next;
      free(it->buf);
      free(it);
    }
    free(s->in);
    free(s->expect);
    s->in = s->expect = NULL;
    break;
  }
  default:
    break;
  }
  return 0;
}

static const struct lws_protocols protocols[] = {
    {"interop.v1", callback, sizeof(pss), 65536, 0, NULL, 0},
    {"interop.v2", callback, sizeof(pss), 65536, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0}};

static const struct lws_extension deflate_ext[] = {
    {"permessage-deflate", lws_extension_callback_pm_deflate,
     "permessage-deflate; client_max_window_bits"},
    {NULL, NULL, NULL}};

static void on_signal(int sig) {
  (void)sig;
  g_stop = 1;
}

int main(int argc, char **argv) {
  struct lws_context_creation_info info;
  struct lws_context *ctx;
  struct lws_vhost *vh;
  int i, port = 0, deflate = 0;
  for (i = 1; i < argc; i++) {
    if (strcmp(argv[i], "-p") == 0 && i + 1 < argc) {
      port = atoi(argv[++i]);
    } else if (strcmp(argv[i], "--deflate") == 0) {
      deflate = 1;
    } else {
      fprintf(stderr, "usage: lws_peer [-p PORT] [--deflate]\n");
      return 2;
    }
  }
  signal(SIGINT, on_signal);
  signal(SIGTERM, on_signal);
  signal(SIGPIPE, SIG_IGN);
  lws_set_log_level(LLL_ERR | LLL_WARN, NULL);
  memset(&info, 0, sizeof info);
  info.port = port;
  info.iface = "127.0.0.1";
  info.protocols = protocols;
  info.options = LWS_SERVER_OPTION_VALIDATE_UTF8 | LWS_SERVER_OPTION_DISABLE_IPV6;
  if (deflate) info.extensions = deflate_ext;
  ctx = lws_create_context(&info);
  if (ctx == NULL) {
    fprintf(stderr, "lws_peer: lws_create_context failed\n");
    return 1;
  }
  vh = lws_get_vhost_by_name(ctx, "default");
  out("lws_peer listening on ws://127.0.0.1:%d/ (libwebsockets %s)",
      vh ? lws_get_vhost_listen_port(vh) : port, lws_get_library_version());
  while (!g_stop && lws_service(ctx, 0) >= 0) {
  }
  lws_context_destroy(ctx);
  return 0;
}
