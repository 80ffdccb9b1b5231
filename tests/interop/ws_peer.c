/*
 * ws_peer.c - the ws side of the interoperability matrix (tests/interop):
 * an echo server on the ws loop that also speaks the matrix's small command
 * protocol, so real clients (Chromium, Node's ws, Python's websockets, and
 * clients behind nginx) can exercise every direction of RFC 6455 with it.
 *
 *   build/interop/ws_peer [-p PORT] [--ping-ms MS] [--page FILE]
 *                         [--deflate[=no-context]]
 *
 * Listens on 127.0.0.1:PORT (0 picks one) and prints
 * "ws_peer listening on ws://127.0.0.1:PORT/" first. --ping-ms sets the
 * keepalive ping interval (0, the default here, sends none). --page serves
 * FILE at "/" (the browser test page); every other plain HTTP request gets
 * 404. --deflate accepts permessage-deflate offers with the library's
 * defaults (no-context: without context takeover either way, and a
 * threshold of 0); the open event then says "deflate=1".
 *
 * The peer protocol (docs/interop.md; the Node, Python and
 * libwebsockets peers implement the same):
 *   - subprotocols "interop.v1" and "interop.v2": the first one the client
 *     offers is chosen; none when none of them is offered
 *   - every binary message, and every text message not starting with '!',
 *     is echoed unchanged as one message
 *   - "!close CODE [REASON]"  closes with CODE and REASON
 *   - "!ping PAYLOAD"         sends a ping; its pong is answered with the
 *                             text "pong:PAYLOAD"
 *   - "!frag N TEXT"          sends TEXT back in N fragments, cut at byte
 *                             boundaries (so inside UTF-8 sequences)
 *   - "!fragb N SIZE"         sends SIZE bytes (byte i is i % 251) as one
 *                             binary message in N fragments, with a ping
 *                             between the first two
 *   - "!stats"                answers "stats pings=P pongs=Q" (control
 *                             frames received on this connection)
 *   - "!proto"                answers "proto:NAME" (empty when none)
 * Events go to stdout, one line each, for the test driver:
 *   open id=N path=P proto=X [deflate=1]
 *   ping id=N len=L
 *   close id=N path=P code=C reason=R
 * SIGTERM/SIGINT: close everyone with 1001, exit 0.
 */
#define _POSIX_C_SOURCE 200809L
#include "ws.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct peer {
  unsigned id;
  char path[128];
  char proto[16];
  char want_pong[WS_CONTROL_MAX + 1];
  size_t want_pong_len;
  int awaiting;
  unsigned long pings, pongs;
} peer;

static ws_loop g_loop;
static char *g_page;
static size_t g_page_len;
static unsigned g_next_id;
static const char *const PROTOCOLS[] = {"interop.v1", "interop.v2"};

static void on_signal(int sig) {
  (void)sig;
  ws_loop_stop(&g_loop);
}

static int on_handshake(ws_conn *c, const ws_request *req, ws_accept *acc,
                        void *user) {
  size_t i, k, n = ws_request_protocol_count(req);
  peer *p = (peer *)calloc(1, sizeof *p);
  (void)user;
  if (p == NULL) return 503;
  p->id = ++g_next_id;
  k = req->path_len < sizeof p->path - 1 ? req->path_len : sizeof p->path - 1;
  memcpy(p->path, req->path, k);
  /* The client's order decides, as RFC 6455 4.2.2 suggests. */
  for (i = 0; i < n && acc->protocol == NULL; i++) {
    const char *name;
    size_t len;
    if (ws_request_protocol(req, i, &name, &len) != WS_OK) continue;
    for (k = 0; k < sizeof PROTOCOLS / sizeof PROTOCOLS[0]; k++)
      if (strlen(PROTOCOLS[k]) == len && memcmp(PROTOCOLS[k], name, len) == 0) {
        acc->protocol = PROTOCOLS[k];
        strcpy(p->proto, PROTOCOLS[k]);
        break;
      }
  }
  ws_conn_set_user(c, p);
  return 0;
}

static int on_http(ws_conn *c, const ws_request *req, void *user) {
  static const ws_header ct[] = {
      {"Content-Type", 12, "text/html; charset=utf-8", 24},
      {"Cache-Control", 13, "no-store", 8}};
  (void)user;
  if (g_page && req->path_len == 1 && req->path[0] == '/')
    return ws_http_respond(c, 200, ct, 2, g_page, g_page_len) == WS_OK ? 0 : 500;
  return 404;
}

static void on_open(ws_conn *c, const char *proto, size_t n, void *user) {
  peer *p = (peer *)user;
  if (p == NULL) return;
  printf("open id=%u path=%s proto=%.*s%s\n", p->id, p->path, (int)n,
         proto ? proto : "", ws_conn_deflate(c) ? " deflate=1" : "");
  fflush(stdout);
}

static int reply(ws_conn *c, const char *fmt, const char *a, unsigned long x,
                 unsigned long y) {
  char buf[256];
  int n = a ? snprintf(buf, sizeof buf, fmt, a) : snprintf(buf, sizeof buf, fmt, x, y);
  if (n < 0 || (size_t)n >= sizeof buf) return -1;
  return ws_send(c, WS_OP_TEXT, buf, (size_t)n);
}

/* Sends data in n fragments of op, one ping between the first two when
 * ping_between is set. */
static int send_pieces(ws_conn *c, int op, const unsigned char *data,
                       size_t len, unsigned long n, int ping_between) {
  unsigned long i;
  size_t at = 0;
  int rc = WS_OK;
  if (n < 1) n = 1;
  for (i = 0; i < n && rc == WS_OK; i++) {
    size_t end = (size_t)((len * (i + 1)) / n);
    rc = ws_send_fragment(c, i == 0 ? op : WS_OP_CONT, data + at, end - at,
                          i + 1 == n);
    at = end;
    if (rc == WS_OK && i == 0 && n > 1 && ping_between)
      rc = ws_ping(c, "between", 7);
  }
  return rc;
}

/* Reads a decimal number at s[*at..len) and the space after it. */
static unsigned long number(const char *s, size_t len, size_t *at, int *ok) {
  unsigned long v = 0;
  size_t start = *at;
  while (*at < len && s[*at] >= '0' && s[*at] <= '9' && v < 100000000ul)
    v = v * 10 + (unsigned long)(s[(*at)++] - '0');
  *ok = *at > start && (*at == len || s[*at] == ' ');
  if (*at < len) (*at)++;
  return v;
}

static int command(ws_conn *c, peer *p, const char *s, size_t len) {
  size_t at = 0;
  int ok;
  while (at < len && s[at] != ' ') at++;
#define IS(name) (at == sizeof name - 1 && memcmp(s, name, at) == 0)
  if (IS("!close")) {
    unsigned long code;
    at++;
    code = number(s, len, &at, &ok);
    if (!ok) return -1;
    return ws_close(c, (int)code, s + at, len > at ? len - at : 0);
  }
  if (IS("!ping")) {
    at += at < len;
    if (len - at > WS_CONTROL_MAX) return -1;
    memcpy(p->want_pong, s + at, len - at);
    p->want_pong_len = len - at;
    p->awaiting = 1;
    return ws_ping(c, s + at, len - at);
  }
  if (IS("!frag")) {
    unsigned long n;
    at++;
    n = number(s, len, &at, &ok);
    if (!ok || n < 1 || n > 1000) return -1;
    return send_pieces(c, WS_OP_TEXT, (const unsigned char *)s + at,
                       len > at ? len - at : 0, n, 0);
  }
  if (IS("!fragb")) {
    unsigned long n, size, i;
    unsigned char *buf;
    int rc;
    at++;
    n = number(s, len, &at, &ok);
    if (!ok || n < 1 || n > 1000) return -1;
    size = number(s, len, &at, &ok);
    if (!ok || size > (64ul << 20)) return -1;
    buf = (unsigned char *)malloc(size ? size : 1);
    if (buf == NULL) return -1;
    for (i = 0; i < size; i++) buf[i] = (unsigned char)(i % 251);
    rc = send_pieces(c, WS_OP_BINARY, buf, size, n, 1);
    free(buf);
    return rc;
  }
  if (IS("!stats"))
    return reply(c, "stats pings=%lu pongs=%lu", NULL, p->pings, p->pongs);
  if (IS("!proto")) return reply(c, "proto:%s", p->proto, 0, 0);
#undef IS
  return ws_send(c, WS_OP_TEXT, s, len); /* not a command: echo it */
}

static int on_message(ws_conn *c, int op, const void *data, size_t len,
                      int fin, void *user) {
  peer *p = (peer *)user;
  int rc;
  (void)fin;
  if (op == WS_OP_TEXT && len > 0 && *(const char *)data == '!' && p)
    rc = command(c, p, (const char *)data, len);
  else
    rc = ws_send(c, op, data, len);
  if (rc == WS_EFULL) ws_close(c, WS_CLOSE_POLICY, "not reading", 11);
  else if (rc != WS_OK) ws_close(c, WS_CLOSE_INTERNAL, "bad command", 11);
  return 0;
}

static void on_ping(ws_conn *c, const void *data, size_t len, void *user) {
  peer *p = (peer *)user;
  (void)c, (void)data;
  if (p == NULL) return;
  p->pings++;
  printf("ping id=%u len=%lu\n", p->id, (unsigned long)len);
  fflush(stdout);
}

static void on_pong(ws_conn *c, const void *data, size_t len, void *user) {
  peer *p = (peer *)user;
  if (p == NULL) return;
  p->pongs++;
  if (p->awaiting && len == p->want_pong_len &&
      memcmp(data, p->want_pong, len) == 0) {
    char buf[WS_CONTROL_MAX + 8];
    p->awaiting = 0;
    memcpy(buf, "pong:", 5);
    memcpy(buf + 5, data, len);
    ws_send(c, WS_OP_TEXT, buf, len + 5);
  }
}

static void on_close(ws_conn *c, int code, const char *reason, size_t len,
                     void *user) {
  peer *p = (peer *)user;
  (void)c;
  if (p == NULL) return; /* a plain HTTP request */
  printf("close id=%u path=%s code=%d reason=%.*s\n", p->id, p->path, code,
         (int)len, reason);
  fflush(stdout);
  free(p);
}

static char *read_file(const char *name, size_t *len) {
  FILE *f = fopen(name, "rb");
  char *buf = NULL;
  long n;
  if (f == NULL) return NULL;
  if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 &&
      fseek(f, 0, SEEK_SET) == 0 && (buf = (char *)malloc((size_t)n + 1)) &&
      fread(buf, 1, (size_t)n, f) == (size_t)n) {
    *len = (size_t)n;
  } else {
    free(buf);
    buf = NULL;
  }
  fclose(f);
  return buf;
}

int main(int argc, char **argv) {
  ws_loop_config cfg;
  ws_loop_callbacks cb;
  unsigned port = 0, bound = 0;
  long ping_ms = 0;
  int i, deflate = 0;
  struct sigaction sa;
  for (i = 1; i < argc; i++) {
    if (strcmp(argv[i], "-p") == 0 && i + 1 < argc) {
      port = (unsigned)atoi(argv[++i]);
    } else if (strcmp(argv[i], "--ping-ms") == 0 && i + 1 < argc) {
      ping_ms = atol(argv[++i]);
    } else if (strcmp(argv[i], "--page") == 0 && i + 1 < argc) {
      g_page = read_file(argv[++i], &g_page_len);
      if (g_page == NULL) {
        fprintf(stderr, "ws_peer: cannot read %s\n", argv[i]);
        return 2;
      }
    } else if (strcmp(argv[i], "--deflate") == 0) {
      deflate = 1;
    } else if (strcmp(argv[i], "--deflate=no-context") == 0) {
      deflate = 2;
    } else {
      fprintf(stderr, "usage: ws_peer [-p PORT] [--ping-ms MS] [--page FILE] [--deflate[=no-context]]\n");
      return 2;
    }
  }
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);

  ws_loop_config_init(&cfg); /* the library's limits: 16 MiB messages */
  cfg.server.ping_interval_ms = (uint32_t)(ping_ms > 0 ? ping_ms : 0);
  cfg.server.deflate.enable = deflate != 0;
  if (deflate == 2) {
    cfg.server.deflate.no_context_takeover = 1;
    cfg.server.deflate.peer_no_context_takeover = 1;
    cfg.server.deflate.threshold = 0;
  }
  memset(&cb, 0, sizeof cb);
  cb.conn.on_handshake = on_handshake;
  cb.conn.on_http = on_http;
  cb.conn.on_open = on_open;
  cb.conn.on_message = on_message;
  cb.conn.on_ping = on_ping;
  cb.conn.on_pong = on_pong;
  cb.conn.on_close = on_close;
  if (ws_loop_init(&g_loop, &cfg, &cb, NULL) != WS_OK) {
    fprintf(stderr, "ws_peer: cannot create the event loop\n");
    return 1;
  }
  if (ws_loop_listen(&g_loop, "127.0.0.1", port, &bound) != WS_OK) {
    perror("ws_peer: listen");
    return 1;
  }
  printf("ws_peer listening on ws://127.0.0.1:%u/\n", bound);
  fflush(stdout);
  ws_loop_run(&g_loop);
  ws_loop_shutdown(&g_loop);
  ws_loop_run(&g_loop);
  ws_loop_free(&g_loop);
  free(g_page);
  return 0;
}
