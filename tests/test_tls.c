/*
 * test_tls.c - wss:// over mbedTLS on loopback, with certificates made at
 * test time by tests/tls/certs.sh (openssl CLI) in a temporary directory: a
 * CA, a server certificate for localhost and 127.0.0.1, one for another
 * host, an expired one and a self-signed one. ws client against ws server
 * on one loop (whole messages and streamed), refusals with a clear error, a
 * plain client on the TLS port, the handshake timeout covering TLS; then,
 * without the loop, a ws_conn pair over ws_tls sessions on fixed buffers
 * (ws_conn_set_buffers(): echoes, 1009 over the limit, no allocation);
 * then tests/tls/interop.sh (openssl s_client, Node ws, Python websockets)
 * against the examples.
 * Built without mbedTLS it prints a skip line and passes nothing.
 */
#include "../src/ws.c"
#include "t.h"

#if !WS_ENABLE_MBEDTLS

int main(void) {
  (void)t_check; /* no checks in this build */
  printf("# skipped: built without TLS (mbedTLS not found; apt-get install "
         "libmbedtls-dev, or make WS_TLS=1)\n");
  return t_done("test_tls");
}

#else

#include <stdarg.h>
#include <signal.h>
#include <poll.h>
#include <pthread.h>
#include <sys/wait.h>

static char g_dir[64];
static unsigned char *g_big;
#define BIG (1u << 20)

static int sh(const char *fmt, ...) {
  char cmd[2048];
  va_list ap;
  int rc;
  va_start(ap, fmt);
  vsnprintf(cmd, sizeof cmd, fmt, ap);
  va_end(ap);
  rc = system(cmd);
  return rc == -1 ? -1 : WIFEXITED(rc) ? WEXITSTATUS(rc) : 128;
}

static const char *path(const char *name) {
  static char buf[8][160];
  static int k;
  k = (k + 1) % 8;
  snprintf(buf[k], sizeof buf[k], "%s/%s", g_dir, name);
  return buf[k];
}

/* The certificates: tests/tls/certs.sh (openssl CLI) in a fresh temporary
 * directory. */
static int make_certs(void) {
  strcpy(g_dir, "/tmp/ws_tls_XXXXXX");
  if (mkdtemp(g_dir) == NULL) return -1;
  return sh("sh tests/tls/certs.sh %s", g_dir);
}

/* One loop holds the server and the client. ----------------------------- */

typedef struct peer {
  int is_client, opened, closed, code, step, stream_mid;
  size_t got;
  char err[256];
  unsigned char *buf;
} peer;

static peer g_srv, g_cli;
static const size_t g_sizes[] = {5, 100000, BIG};

static int send_step(ws_conn *c) {
  size_t n = g_sizes[g_cli.step];
  g_cli.got = 0;
  return ws_send(c, n == 5 ? WS_OP_TEXT : WS_OP_BINARY, n == 5 ? (const void *)"hello" : g_big, n);
}

static void on_open(ws_conn *c, const char *p, size_t n, void *user) {
  peer *pe = (peer *)user;
  (void)p, (void)n;
  pe->opened++;
  if (pe == &g_cli) CHECK_INT(send_step(c), WS_OK);
}

static int on_message(ws_conn *c, int op, const void *data, size_t len,
                      int fin, void *user) {
  peer *pe = (peer *)user;
  if (pe != &g_cli) { /* server: echo, piece by piece in stream mode */
    int rc = ws_send_fragment(c, pe->stream_mid ? WS_OP_CONT : op, data, len, fin);
    pe->stream_mid = !fin;
    return rc == WS_OK ? 0 : -1;
  }
  {
    size_t want = g_sizes[g_cli.step];
    CHECK_INT(len, want);
    CHECK(len == want && memcmp(data, want == 5 ? (const void *)"hello" : g_big, len) == 0);
    (void)op, (void)fin;
    if (++g_cli.step < (int)(sizeof g_sizes / sizeof g_sizes[0]))
      CHECK_INT(send_step(c), WS_OK);
    else
      ws_close(c, WS_CLOSE_NORMAL, "done", 4);
  }
  return 0;
}

static void on_close(ws_conn *c, int code, const char *reason, size_t len,
                     void *user) {
  peer *pe = (peer *)user;
  ws_tls *t = ws_loop_conn_tls(c);
  (void)reason, (void)len;
  pe->closed++;
  pe->code = code;
  snprintf(pe->err, sizeof pe->err, "%s", t ? ws_tls_error(t) : "(not TLS)");
}

static ws_tls_config *server_config(const char *cert) {
  ws_tls_options o;
  ws_tls_config *tc = NULL;
  char err[200];
  ws_tls_options_init(&o, WS_SERVER);
  o.cert_file = path(cert);
  o.key_file = path("srv.key");
  if (!CHECK(ws_tls_config_new(&tc, &o, err, sizeof err) == WS_OK))
    printf("# server config: %s\n", err);
  return tc;
}

static ws_tls_config *client_config(int insecure) {
  ws_tls_options o;
  ws_tls_config *tc = NULL;
  char err[200];
  ws_tls_options_init(&o, WS_CLIENT);
  o.ca_file = path("ca.pem");
  o.insecure_skip_verify = insecure;
  if (!CHECK(ws_tls_config_new(&tc, &o, err, sizeof err) == WS_OK))
    printf("# client config: %s\n", err);
  return tc;
}

typedef struct run_opts {
  const char *cert;   /* server certificate */
  const char *host;   /* URL host */
  int insecure, stream;
  int keep;           /* a reconnecting client (ws_loop_client) */
  int proxy;          /* through the test's CONNECT proxy (below) */
} run_opts;

/* A CONNECT proxy of the test's own, on a thread, for one tunnel: it
 * records the request and connects to the server's port on 127.0.0.1
 * whatever host the request names (so a name that resolves nowhere, like
 * other.example, still reaches the server), then relays both ways. */
typedef struct tproxy {
  int lfd, up;
  unsigned port, to;
  char req[512];
  pthread_t th;
} tproxy;

static void *tproxy_main(void *arg) {
  tproxy *t = (tproxy *)arg;
  struct pollfd pf = {t->lfd, POLLIN, 0};
  struct sockaddr_in a;
  size_t got = 0;
  int fd;
  char buf[16384];
  static const char ok[] = "HTTP/1.1 200 Connection established\r\n\r\n";
  if (poll(&pf, 1, 10000) <= 0 || (fd = accept(t->lfd, NULL, NULL)) < 0) return NULL;
  while (got + 1 < sizeof t->req) { /* the head, byte by byte: no more */
    if (recv(fd, t->req + got, 1, 0) != 1) break;
    got++;
    if (got >= 4 && memcmp(t->req + got - 4, "\r\n\r\n", 4) == 0) break;
  }
  t->req[got] = '\0';
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_port = htons((uint16_t)t->to);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  t->up = socket(AF_INET, SOCK_STREAM, 0);
  if (connect(t->up, (struct sockaddr *)&a, sizeof a) == 0 &&
      send(fd, ok, sizeof ok - 1, MSG_NOSIGNAL) == (ssize_t)(sizeof ok - 1)) {
    for (;;) {
      struct pollfd two[2] = {{fd, POLLIN, 0}, {t->up, POLLIN, 0}};
      int i, done = 0;
      if (poll(two, 2, 10000) <= 0) break;
      for (i = 0; i < 2 && !done; i++) {
        ssize_t r;
        if (!two[i].revents) continue;
        r = recv(two[i].fd, buf, sizeof buf, 0);
        if (r <= 0 || send(two[1 - i].fd, buf, (size_t)r, MSG_NOSIGNAL) != r) done = 1;
      }
      if (done) break;
    }
  }
  close(t->up);
  close(fd);
  return NULL;
}

static void tproxy_start(tproxy *t, unsigned to) {
  struct sockaddr_in a;
  socklen_t n = sizeof a;
  memset(t, 0, sizeof *t);
  t->to = to;
  t->lfd = socket(AF_INET, SOCK_STREAM, 0);
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  CHECK(bind(t->lfd, (struct sockaddr *)&a, sizeof a) == 0);
  CHECK(listen(t->lfd, 4) == 0);
  CHECK(getsockname(t->lfd, (struct sockaddr *)&a, &n) == 0);
  t->port = ntohs(a.sin_port);
  CHECK(pthread_create(&t->th, NULL, tproxy_main, t) == 0);
}

static tproxy g_proxy;

static int g_keep_attempts, g_keep_gave_up;
static int keep_attempt(ws_loop_client *k, unsigned a, uint32_t d, int e, int s, void *u) {
  (void)k, (void)a, (void)d, (void)e, (void)s, (void)u;
  g_keep_attempts++;
  return 0;
}
static void keep_give_up(ws_loop_client *k, int e, int s, void *u) {
  (void)k, (void)e, (void)s, (void)u;
  g_keep_gave_up++;
}

/* Runs one client against one TLS server until the client is closed and
 * the server connection is gone too. */
static ws_loop_client g_keeper;
static void run_pair(const run_opts *ro) {
  ws_loop loop;
  ws_loop_config cfg;
  ws_loop_callbacks cb;
  ws_tls_config *stc = server_config(ro->cert), *ctc = client_config(ro->insecure);
  unsigned port = 0;
  char url[128];
  uint64_t end;
  struct ws_loop_stats st;
  size_t tls_peak = 0;
  memset(&g_srv, 0, sizeof g_srv);
  memset(&g_cli, 0, sizeof g_cli);
  g_cli.is_client = 1;
  if (stc == NULL || ctc == NULL) goto out;
  ws_loop_config_init(&cfg);
  cfg.server.stream = ro->stream;
  cfg.tls_client = ctc;
  cfg.linger_ms = 200;
  memset(&cb, 0, sizeof cb);
  cb.conn.on_open = on_open;
  cb.conn.on_message = on_message;
  cb.conn.on_close = on_close;
  CHECK_INT(ws_loop_init(&loop, &cfg, &cb, &g_srv), WS_OK);
  if (ws_loop_listen_tls(&loop, "::", 0, stc, &port) != WS_OK)
    CHECK_INT(ws_loop_listen_tls(&loop, "127.0.0.1", 0, stc, &port), WS_OK);
  snprintf(url, sizeof url, strchr(ro->host, ':') ? "wss://[%s]:%u/x" : "wss://%s:%u/x",
           ro->host, port);
  if (ro->proxy) {
    static char px[64];
    ws_client_opts o;
    memset(&o, 0, sizeof o);
    tproxy_start(&g_proxy, port);
    snprintf(px, sizeof px, "http://127.0.0.1:%u", g_proxy.port);
    o.proxy = px;
    CHECK_INT(ws_loop_connect(&loop, url, &o, &g_cli, NULL), WS_OK);
  } else if (ro->keep) {
    ws_reconnect r;
    ws_reconnect_init(&r);
    r.first_ms = 50;
    r.on_attempt = keep_attempt;
    r.on_give_up = keep_give_up;
    g_keep_attempts = g_keep_gave_up = 0;
    CHECK_INT(ws_loop_client_start(&loop, &g_keeper, url, NULL, &r, &g_cli), WS_OK);
  } else {
    CHECK_INT(ws_loop_connect(&loop, url, NULL, &g_cli, NULL), WS_OK);
  }
  end = ws__loop_clock() + 20000;
  while ((!g_cli.closed || ws_loop_conn_count(&loop) > 0) && ws__loop_clock() < end) {
    ws_loop_run_once(&loop, 50);
    ws_loop_stats(&loop, &st);
    if (st.held_tls > tls_peak) tls_peak = st.held_tls;
  }
  if (ro->keep) { /* a while longer: no retry may come */
    end = ws__loop_clock() + 500;
    while (ws__loop_clock() < end) ws_loop_run_once(&loop, 50);
  }
  CHECK_INT(g_cli.closed, 1);
  /* The memory budget counted both sessions (each with its two record
   * buffers), and gave every byte back once the connections were gone. */
  ws_loop_stats(&loop, &st);
  CHECK(tls_peak >= 2 * (size_t)(MBEDTLS_SSL_IN_CONTENT_LEN + MBEDTLS_SSL_OUT_CONTENT_LEN));
  CHECK_INT((int)st.held, 0);
  CHECK_INT((int)st.holders, 0);
  ws_loop_free(&loop);
  if (ro->proxy) {
    pthread_join(g_proxy.th, NULL);
    close(g_proxy.lfd);
  }
out:
  ws_tls_config_free(stc);
  ws_tls_config_free(ctc);
}

static void test_echo_ip(void) {
  run_opts ro = {"srv.pem", "127.0.0.1", 0, 0, 0, 0};
  run_pair(&ro);
  CHECK_INT(g_cli.opened, 1);
  CHECK_INT(g_cli.step, 3);
  CHECK_INT(g_cli.code, 1000);
  CHECK_INT(g_srv.closed, 1);
}

static void test_echo_name_stream(void) {
  run_opts ro = {"srv.pem", "localhost", 0, 1, 0, 0};
  run_pair(&ro);
  CHECK_INT(g_cli.opened, 1);
  CHECK_INT(g_cli.step, 3);
  CHECK_INT(g_cli.code, 1000);
}

static void test_insecure_flag(void) {
  run_opts ro = {"other.pem", "127.0.0.1", 1, 0, 0, 0};
  run_pair(&ro);
  CHECK_INT(g_cli.opened, 1);
  CHECK_INT(g_cli.code, 1000);
}

static void refused(const char *cert, const char *host, const char *needle) {
  run_opts ro;
  ro.cert = cert;
  ro.host = host;
  ro.insecure = 0;
  ro.stream = 0;
  ro.keep = 0;
  ro.proxy = 0;
  run_pair(&ro);
  CHECK_INT(g_cli.opened, 0);
  CHECK_INT(g_cli.code, WS_CLOSE_ABNORMAL);
  CHECK_INT(g_srv.opened, 0);
  printf("# %s for %s refused: %s\n", cert, host, g_cli.err);
  CHECK(strstr(g_cli.err, "verification failed") != NULL);
  if (!CHECK(strstr(g_cli.err, needle) != NULL)) printf("#   no '%s'\n", needle);
}

static void test_wrong_host(void) { refused("other.pem", "127.0.0.1", "CN"); }
static void test_wrong_host_name(void) { refused("other.pem", "localhost", "CN"); }

static void test_reconnect_gives_up_on_certificate(void) {
  /* A reconnecting client whose server's certificate does not verify
   * gives up at once: retrying would not cure it. */
  run_opts ro = {"other.pem", "localhost", 0, 0, 1, 0};
  run_pair(&ro);
  CHECK_INT(g_cli.opened, 0);
  CHECK_INT(g_keep_gave_up, 1);
  CHECK_INT(g_keep_attempts, 0);
  CHECK(ws_loop_client_conn(&g_keeper) == NULL);
}
static void test_proxy_tunnel(void) {
  /* wss:// through a CONNECT proxy: TLS inside the tunnel, with SNI and
   * the certificate check against the URL's host, never the proxy's. The
   * name is the proxy's to resolve: other.example resolves nowhere, and
   * the test's proxy takes it to the server, whose certificate is for
   * other.example: it verifies. */
  run_opts ro = {"other.pem", "other.example", 0, 0, 0, 1};
  char want[64];
  run_pair(&ro);
  CHECK_INT(g_cli.opened, 1);
  CHECK_INT(g_cli.step, 3);
  CHECK_INT(g_cli.code, 1000);
  snprintf(want, sizeof want, "CONNECT other.example:%u HTTP/1.1\r\n", g_proxy.to);
  CHECK(strncmp(g_proxy.req, want, strlen(want)) == 0);
}

static void test_proxy_tunnel_wrong_host(void) {
  /* The same server certificate (for localhost and 127.0.0.1, like the
   * proxy's address) asked for as other.example: refused, because the
   * check is against the URL's host. */
  run_opts ro = {"srv.pem", "other.example", 0, 0, 0, 1};
  run_pair(&ro);
  CHECK_INT(g_cli.opened, 0);
  CHECK_INT(g_cli.code, WS_CLOSE_ABNORMAL);
  CHECK(strstr(g_cli.err, "verification failed") != NULL);
  CHECK(strncmp(g_proxy.req, "CONNECT other.example:", 22) == 0);
}

static void test_expired(void) { refused("expired.pem", "127.0.0.1", "expired"); }
static void test_untrusted(void) { refused("self.pem", "127.0.0.1", "not correctly signed"); }

/* A raw TCP client on the TLS port: `send` (may be NULL) goes out, then it
 * waits for the server to end the connection; returns recv()'s last
 * result (0: a clean FIN) and the time it took. */
static long raw_client(const char *send_text, uint32_t hs_timeout, uint64_t *ms) {
  ws_loop loop;
  ws_loop_config cfg;
  ws_tls_config *stc = server_config("srv.pem");
  struct sockaddr_in a;
  unsigned port = 0;
  int fd;
  long last = -2;
  uint64_t start, end;
  ws_loop_config_init(&cfg);
  cfg.server.handshake_timeout_ms = hs_timeout;
  CHECK_INT(ws_loop_init(&loop, &cfg, NULL, NULL), WS_OK);
  CHECK_INT(ws_loop_listen_tls(&loop, "127.0.0.1", 0, stc, &port), WS_OK);
  fd = socket(AF_INET, SOCK_STREAM, 0);
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_port = htons((uint16_t)port);
  a.sin_addr.s_addr = htonl(0x7f000001);
  CHECK(connect(fd, (struct sockaddr *)&a, sizeof a) == 0);
  ws__io_nonblock(fd);
  if (send_text) CHECK(send(fd, send_text, strlen(send_text), 0) > 0);
  start = ws__loop_clock();
  end = start + 5000;
  while (ws__loop_clock() < end) {
    char b[512];
    ssize_t r;
    ws_loop_run_once(&loop, 20);
    r = recv(fd, b, sizeof b, 0);
    if (r > 0) continue; /* an alert, perhaps */
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) continue;
    last = r < 0 ? -errno : 0;
    break;
  }
  *ms = ws__loop_clock() - start;
  close(fd);
  ws_loop_free(&loop);
  ws_tls_config_free(stc);
  return last;
}

static void test_plain_http_client(void) {
  uint64_t ms;
  long r = raw_client("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                      "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                      "Sec-WebSocket-Version: 13\r\n\r\n", 10000, &ms);
  CHECK_INT(r, 0); /* FIN, not a reset, and long before any timeout */
  CHECK(ms < 2000);
}

static void test_handshake_timeout(void) {
  uint64_t ms;
  long r = raw_client(NULL, 300, &ms); /* says nothing at all */
  CHECK_INT(r, 0);
  CHECK(ms >= 250 && ms < 3000);
}

/* A ws:// client of this library on a wss:// port fails, quickly. */
static void test_ws_client_on_tls_port(void) {
  ws_loop loop;
  ws_loop_config cfg;
  ws_loop_callbacks cb;
  ws_tls_config *stc = server_config("srv.pem");
  unsigned port = 0;
  char url[64];
  uint64_t end;
  memset(&g_cli, 0, sizeof g_cli);
  memset(&g_srv, 0, sizeof g_srv);
  ws_loop_config_init(&cfg);
  memset(&cb, 0, sizeof cb);
  cb.conn.on_open = on_open;
  cb.conn.on_close = on_close;
  CHECK_INT(ws_loop_init(&loop, &cfg, &cb, &g_srv), WS_OK);
  CHECK_INT(ws_loop_listen_tls(&loop, "127.0.0.1", 0, stc, &port), WS_OK);
  snprintf(url, sizeof url, "ws://127.0.0.1:%u/", port);
  CHECK_INT(ws_loop_connect(&loop, url, NULL, &g_cli, NULL), WS_OK);
  end = ws__loop_clock() + 5000;
  while (!g_cli.closed && ws__loop_clock() < end) ws_loop_run_once(&loop, 20);
  CHECK_INT(g_cli.closed, 1);
  CHECK_INT(g_cli.opened, 0);
  ws_loop_free(&loop);
  ws_tls_config_free(stc);
}

/* Fixed buffers over TLS, without the loop. -------------------------------
 * A ws server and a ws client, each a ws_conn over a ws_tls session on a
 * loopback socket pair, driven by a poll() loop written here as docs/tls.md
 * ("Without the loop") says. Either side, or both, runs on fixed buffers
 * (ws_conn_set_buffers()) and must never call its allocator; the other
 * side grows its buffers through the same counting allocator. The
 * capacities are generous (the connection may keep part of a buffer for
 * itself), and the checks are on behaviour: echoes up to FB_MAX_ECHO bytes
 * come back whole, a message over the limit fails the connection with
 * 1009, a send too big for the fixed output buffer returns WS_ETOOBIG. */

#include <poll.h>

#define FB_IN (96u * 1024)    /* either side's fixed input buffer */
#define FB_SRV_OUT (128u * 1024)
#define FB_CLI_OUT (256u * 1024)
#define FB_MAX_ECHO 90000u    /* fits FB_IN with room to spare */
#define FB_OVER 150000u       /* does not fit FB_IN */

typedef struct fb_side {
  ws_conn c;
  ws_config cfg;          /* kept by pointer by the connection */
  ws_callbacks cb;
  ws_tls *t;
  int fd, fixed, started, opened, closed, code, fd_closed;
  unsigned long allocs;   /* calls of the allocator that asked for memory */
  int toobig;             /* server: ws_send returned WS_ETOOBIG */
  unsigned char *in, *out;
} fb_side;

/* A client step: send `len` bytes (text when `text`); `big` > 0 sends
 * "big N" instead, asking the server for N bytes. The expected answer is
 * the echo, the N bytes, or the text "TOOBIG" (want_toobig). over: the
 * connection must end after this send, with the case's close codes. */
typedef struct fb_step {
  size_t len;
  int text;
  size_t big;
  int want_toobig, over;
} fb_step;

typedef struct fb_case {
  const char *name;
  int srv_fixed, cli_fixed, srv_code, cli_code;
  const fb_step *steps;
  size_t nsteps;
} fb_case;

static fb_side g_fs, g_fc;
static const fb_case *g_fb;
static size_t g_fb_step, g_fb_done;
static unsigned char *g_text; /* FB_OVER bytes of ASCII text */

static void *fb_realloc(void *ptr, size_t size, void *ctx) {
  fb_side *s = (fb_side *)ctx;
  if (size == 0) {
    free(ptr);
    return NULL;
  }
  s->allocs++;
  return realloc(ptr, size);
}

static int fb_read(ws_conn *c, void *buf, size_t cap, size_t *n, void *user) {
  (void)c;
  return ws_tls_read(((fb_side *)user)->t, buf, cap, n);
}

static int fb_write(ws_conn *c, const void *buf, size_t len, size_t *n,
                    void *user) {
  (void)c;
  return ws_tls_write(((fb_side *)user)->t, buf, len, n);
}

static const void *fb_payload(const fb_step *st) {
  return st->text ? (const void *)g_text : (const void *)g_big;
}

/* The client sends the current step, or closes with 1000 after the last. */
static void fb_send_step(ws_conn *c) {
  const fb_step *st;
  if (g_fb_step == g_fb->nsteps) {
    CHECK_INT(ws_close(c, WS_CLOSE_NORMAL, "done", 4), WS_OK);
    return;
  }
  st = &g_fb->steps[g_fb_step];
  if (st->big) {
    char cmd[32];
    int n = snprintf(cmd, sizeof cmd, "big %lu", (unsigned long)st->big);
    CHECK_INT(ws_send(c, WS_OP_TEXT, cmd, (size_t)n), WS_OK);
  } else {
    int rc = ws_send(c, st->text ? WS_OP_TEXT : WS_OP_BINARY, fb_payload(st), st->len);
    if (rc != WS_OK) printf("#   %s: client send of %lu bytes: %s\n", g_fb->name,
                            (unsigned long)st->len, ws_errname(rc));
    CHECK_INT(rc, WS_OK);
  }
}

static void fb_on_open(ws_conn *c, const char *p, size_t n, void *user) {
  fb_side *s = (fb_side *)user;
  (void)p, (void)n;
  s->opened++;
  if (s == &g_fc) fb_send_step(c);
}

static int fb_on_message(ws_conn *c, int op, const void *data, size_t len,
                         int fin, void *user) {
  fb_side *s = (fb_side *)user;
  const fb_step *st;
  CHECK_INT(fin, 1);
  if (s == &g_fs) { /* the server: echo, or "big N" */
    if (op == WS_OP_TEXT && len > 4 && len < 32 && memcmp(data, "big ", 4) == 0) {
      char num[32];
      unsigned long n;
      int rc;
      memcpy(num, (const char *)data + 4, len - 4); /* data is not a C string */
      num[len - 4] = '\0';
      n = strtoul(num, NULL, 10);
      rc = ws_send(c, WS_OP_BINARY, g_big, (size_t)n);
      if (rc == WS_ETOOBIG) {
        s->toobig++;
        rc = ws_send(c, WS_OP_TEXT, "TOOBIG", 6);
      }
      return rc == WS_OK ? 0 : -1;
    }
    return ws_send(c, op, data, len) == WS_OK ? 0 : -1;
  }
  if (!CHECK(g_fb_step < g_fb->nsteps)) return -1;
  st = &g_fb->steps[g_fb_step];
  if (st->over) {
    printf("#   %s: step %lu (%lu bytes over the limit) was answered\n", g_fb->name,
           (unsigned long)g_fb_step, (unsigned long)(st->big ? st->big : st->len));
    CHECK(0);
    return -1;
  }
  if (st->want_toobig) {
    CHECK(op == WS_OP_TEXT && len == 6 && memcmp(data, "TOOBIG", 6) == 0);
  } else if (st->big) {
    CHECK_INT(op, WS_OP_BINARY);
    CHECK_INT(len, st->big);
    CHECK(len == st->big && memcmp(data, g_big, len) == 0);
  } else {
    CHECK_INT(op, st->text ? WS_OP_TEXT : WS_OP_BINARY);
    CHECK_INT(len, st->len);
    if (!CHECK(len == st->len && memcmp(data, fb_payload(st), len) == 0))
      printf("#   %s: echo of step %lu differs\n", g_fb->name, (unsigned long)g_fb_step);
  }
  g_fb_done++;
  g_fb_step++;
  fb_send_step(c);
  return 0;
}

static void fb_on_close(ws_conn *c, int code, const char *reason, size_t len,
                        void *user) {
  fb_side *s = (fb_side *)user;
  (void)c, (void)reason, (void)len;
  s->closed++;
  s->code = code;
}

/* Sets up one side on a connected socket: TLS session, connection, fixed
 * buffers or the counting allocator. */
static int fb_side_init(fb_side *s, int role, int fd, ws_tls_config *tc, int fixed) {
  ws_config *cfg = &s->cfg;
  ws_callbacks *cb = &s->cb;
  memset(s, 0, sizeof *s);
  s->fd = fd;
  s->fixed = fixed;
  if (ws__io_nonblock(fd) < 0) return -1;
  if (ws_tls_new(&s->t, tc, fd, role == WS_CLIENT ? "localhost" : NULL) != WS_OK) return -1;
  ws_config_init(cfg, role);
  cfg->realloc = fb_realloc;
  cfg->alloc_ctx = s;
  cb->read = fb_read;
  cb->write = fb_write;
  cb->on_open = fb_on_open;
  cb->on_message = fb_on_message;
  cb->on_close = fb_on_close;
  if (ws_conn_init(&s->c, cfg, cb, s) != WS_OK) return -1;
  if (fixed) {
    size_t out = role == WS_SERVER ? FB_SRV_OUT : FB_CLI_OUT;
    s->in = (unsigned char *)malloc(FB_IN);
    s->out = (unsigned char *)malloc(out);
    if (s->in == NULL || s->out == NULL) return -1;
    if (ws_conn_set_buffers(&s->c, s->in, FB_IN, s->out, out) != WS_OK) return -1;
  }
  return 0;
}

/* One poll() round's interest for a side, as docs/tls.md says: during the
 * TLS handshake exactly what TLS waits for, then the connection's wishes
 * plus any TLS want. */
static short fb_events(fb_side *s) {
  unsigned w = ws_tls_wants(s->t);
  short ev = 0;
  if (!(w & WS_TLS_HANDSHAKING)) {
    if (ws_conn_want_read(&s->c)) ev |= POLLIN;
    if (ws_conn_want_write(&s->c)) ev |= POLLOUT;
  }
  if (w & WS_TLS_WANT_READ) ev |= POLLIN;
  if (w & WS_TLS_WANT_WRITE) ev |= POLLOUT;
  return ev;
}

static void fb_event(fb_side *s, short rev) {
  int hs = (ws_tls_wants(s->t) & WS_TLS_HANDSHAKING) != 0;
  if (ws_conn_state(&s->c) == WS_STATE_CLOSED) return;
  if ((rev & (POLLIN | POLLHUP | POLLERR)) || (hs && (rev & POLLOUT)))
    ws_conn_on_readable(&s->c);
  if (ws_conn_state(&s->c) == WS_STATE_CLOSED) return;
  if (rev & POLLOUT) ws_conn_on_writable(&s->c);
  /* Input paused for backpressure may go on now. */
  if (ws_conn_state(&s->c) != WS_STATE_CLOSED && ws_conn_want_read(&s->c) &&
      !(rev & POLLIN))
    ws_conn_on_readable(&s->c);
}

/* Once CLOSED: close_notify, then the socket (the server's first). */
static void fb_finish(fb_side *s) {
  if (s->fd_closed || ws_conn_state(&s->c) != WS_STATE_CLOSED) return;
  ws_tls_close(s->t);
  close(s->fd);
  s->fd_closed = 1;
}

static void fb_run(const fb_case *fc) {
  ws_tls_config *stc = server_config("srv.pem"), *ctc = client_config(0);
  struct sockaddr_in a;
  socklen_t alen = sizeof a;
  int lfd = -1, cfd = -1, sfd = -1;
  ws_client_opts co;
  uint64_t end;
  printf("# fixed buffers over TLS: %s\n", fc->name);
  g_fb = fc;
  g_fb_step = g_fb_done = 0;
  memset(&g_fs, 0, sizeof g_fs);
  memset(&g_fc, 0, sizeof g_fc);
  if (stc == NULL || ctc == NULL) goto out;
  lfd = socket(AF_INET, SOCK_STREAM, 0);
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(0x7f000001);
  if (!CHECK(lfd >= 0 && bind(lfd, (struct sockaddr *)&a, sizeof a) == 0 &&
             listen(lfd, 4) == 0 &&
             getsockname(lfd, (struct sockaddr *)&a, &alen) == 0))
    goto out;
  cfd = socket(AF_INET, SOCK_STREAM, 0);
  if (!CHECK(cfd >= 0 && connect(cfd, (struct sockaddr *)&a, sizeof a) == 0)) goto out;
  sfd = accept(lfd, NULL, NULL);
  if (!CHECK(sfd >= 0)) goto out;
  if (!CHECK(fb_side_init(&g_fs, WS_SERVER, sfd, stc, fc->srv_fixed) == 0)) goto out;
  g_fs.started = 1;
  if (!CHECK(fb_side_init(&g_fc, WS_CLIENT, cfd, ctc, fc->cli_fixed) == 0)) goto out;
  memset(&co, 0, sizeof co);
  co.host = "localhost";
  co.path = "/fixed";
  CHECK_INT(ws_client_start(&g_fc.c, &co), WS_OK);
  g_fc.started = 1;
  end = ws__loop_clock() + 15000;
  while ((!g_fs.fd_closed || !g_fc.fd_closed) && ws__loop_clock() < end) {
    struct pollfd pf[2];
    fb_side *sides[2];
    int n = 0, i;
    if (!g_fs.fd_closed) sides[n] = &g_fs, pf[n].fd = g_fs.fd, pf[n].events = fb_events(&g_fs), n++;
    if (!g_fc.fd_closed) sides[n] = &g_fc, pf[n].fd = g_fc.fd, pf[n].events = fb_events(&g_fc), n++;
    for (i = 0; i < n; i++) pf[i].revents = 0;
    if (poll(pf, (nfds_t)n, 100) < 0 && errno != EINTR) break;
    for (i = 0; i < n; i++) {
      if (pf[i].revents) fb_event(sides[i], pf[i].revents);
      ws_conn_tick(&sides[i]->c, ws__loop_clock());
      fb_finish(sides[i]);
    }
  }
  if (!CHECK(g_fs.fd_closed && g_fc.fd_closed))
    printf("#   %s: not finished in 15 s (server state %d, client state %d, step %lu)\n",
           fc->name, ws_conn_state(&g_fs.c), ws_conn_state(&g_fc.c), (unsigned long)g_fb_step);
  CHECK_INT(g_fs.opened, 1);
  CHECK_INT(g_fc.opened, 1);
  CHECK_INT(g_fs.closed, 1);
  CHECK_INT(g_fc.closed, 1);
  if (!CHECK(g_fb_done == fc->nsteps - (fc->steps[fc->nsteps - 1].over ? 1u : 0u)))
    printf("#   %s: %lu of %lu steps answered\n", fc->name, (unsigned long)g_fb_done,
           (unsigned long)fc->nsteps);
  CHECK_INT(g_fs.code, fc->srv_code);
  CHECK_INT(g_fc.code, fc->cli_code);
  /* Fixed buffers never allocate; growing ones do (the hook is live). */
  if (fc->srv_fixed) CHECK_INT(g_fs.allocs, 0); else CHECK(g_fs.allocs > 0);
  if (fc->cli_fixed) CHECK_INT(g_fc.allocs, 0); else CHECK(g_fc.allocs > 0);
out:
  if (g_fs.started) ws_conn_free(&g_fs.c);
  if (g_fc.started) ws_conn_free(&g_fc.c);
  ws_tls_free(g_fs.t);
  ws_tls_free(g_fc.t);
  free(g_fs.in), free(g_fs.out), free(g_fc.in), free(g_fc.out);
  if (sfd >= 0 && !g_fs.fd_closed) close(sfd);
  if (cfd >= 0 && !g_fc.fd_closed) close(cfd);
  if (lfd >= 0) close(lfd);
  ws_tls_config_free(stc);
  ws_tls_config_free(ctc);
}

/* Echoes of many sizes, around the 126/65536 length forms and the 16 KiB
 * TLS record, text and binary, up to FB_MAX_ECHO. */
#define FB_ECHOES                                                          \
  {0, 1, 0, 0, 0}, {1, 0, 0, 0, 0}, {125, 1, 0, 0, 0}, {126, 0, 0, 0, 0},  \
  {127, 1, 0, 0, 0}, {1000, 0, 0, 0, 0}, {16383, 1, 0, 0, 0},              \
  {16384, 0, 0, 0, 0}, {16385, 1, 0, 0, 0}, {40000, 0, 0, 0, 0},           \
  {65535, 1, 0, 0, 0}, {65536, 0, 0, 0, 0}, {65537, 1, 0, 0, 0},           \
  {80000, 0, 0, 0, 0}, {FB_MAX_ECHO, 1, 0, 0, 0}, {FB_MAX_ECHO, 0, 0, 0, 0}

static const fb_step fb_echo_then_over[] = {
  FB_ECHOES,
  {0, 0, FB_MAX_ECHO, 0, 0},   /* the server sends that much unasked */
  {0, 0, 200000, 1, 0},        /* too big for its out: WS_ETOOBIG */
  {FB_OVER, 0, 0, 0, 1},       /* over the server's input: 1009 */
};
static const fb_step fb_big_to_client[] = {
  {5, 1, 0, 0, 0}, {0, 0, 40000, 0, 0},
  {0, 0, 120000, 0, 1},        /* over the client's input: 1009 */
};
static const fb_step fb_echoes_only[] = {FB_ECHOES};
static const fb_step fb_echo_over_client[] = {
  FB_ECHOES,
  {FB_OVER, 1, 0, 0, 1},       /* the server echoes it; the client fails */
};

#define FB_N(a) (sizeof a / sizeof a[0])

static void test_fixed_both(void) {
  static const fb_case fc = {"both fixed; echoes, then a message over the server's buffer",
                             1, 1, 1009, 1009, fb_echo_then_over, FB_N(fb_echo_then_over)};
  fb_run(&fc);
  CHECK_INT(g_fs.toobig, 1);
}

static void test_fixed_both_client_limit(void) {
  static const fb_case fc = {"both fixed; the server sends more than the client's buffer",
                             1, 1, 1009, 1009, fb_big_to_client, FB_N(fb_big_to_client)};
  fb_run(&fc);
}

static void test_fixed_both_clean_close(void) {
  static const fb_case fc = {"both fixed; echoes, then close 1000",
                             1, 1, 1000, 1000, fb_echoes_only, FB_N(fb_echoes_only)};
  fb_run(&fc);
}

static void test_fixed_server_only(void) {
  static const fb_case fc = {"fixed server, growing client; then over the server's buffer",
                             1, 0, 1009, 1009, fb_echo_then_over, FB_N(fb_echo_then_over)};
  fb_run(&fc);
}

static void test_fixed_client_only(void) {
  static const fb_case fc = {"fixed client, growing server; the echo of an over-limit message",
                             0, 1, 1009, 1009, fb_echo_over_client, FB_N(fb_echo_over_client)};
  fb_run(&fc);
}

static void test_config_errors(void) {
  ws_tls_options o;
  ws_tls_config *tc = NULL;
  char err[200];
  ws_tls_options_init(&o, WS_SERVER);
  o.cert_file = path("missing.pem");
  o.key_file = path("srv.key");
  CHECK_INT(ws_tls_config_new(&tc, &o, err, sizeof err), WS_EINVAL);
  CHECK(tc == NULL && strstr(err, "server certificate") != NULL);
  ws_tls_options_init(&o, WS_CLIENT);
  o.ca_file = path("missing.pem");
  CHECK_INT(ws_tls_config_new(&tc, &o, err, sizeof err), WS_EINVAL);
  CHECK(strstr(err, "CA certificates") != NULL);
  CHECK_INT(ws_tls_available(), 1);
}

static void test_interop(void) {
  int rc = sh("sh tests/tls/interop.sh build %s", g_dir);
  CHECK_INT(rc, 0);
}

/* TLS over a caller's transport (ws_tls_new_io): no sockets. ----------- */

/* IP literals are parsed without the OS: the same answers as inet_pton. */
static void test_ip_literal(void) {
  static const char *cases[] = {
      "127.0.0.1", "0.0.0.0", "255.255.255.255", "1.2.3.4", "01.2.3.4",
      "256.1.1.1", "1.2.3", "1.2.3.4.5", "1.2.3.", ".1.2.3", "1..2.3",
      "1.2.3.4 ", "localhost", "", ":", "::", "::1", "1::", ":::", "1:::2",
      "1::2::3", "12345::", "g::", "::ffff:1.2.3.4", "::1.2.3.4",
      "2001:db8::8:800:200c:417a", "FE80::AbCd", "1:2:3:4:5:6:7:8",
      "1:2:3:4:5:6:7:8:9", "1:2:3:4:5:6:7::", "::2:3:4:5:6:7:8",
      "1:2:3:4:5:6:7::8", "1:2:3:4:5:6:1.2.3.4", "1:2:3:4:5:6:7:1.2.3.4",
      "1:2:3:4:5::1.2.3.4", "::1.2.3", "1.2.3.4:", "1:", ":1", "1:2",
      "fe80::1%eth0", "[::1]", "0:0:0:0:0:0:0:0", "::ffff:01.2.3.4"};
  size_t i;
  for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    unsigned char a[16], b[16];
    int got = ws__tls_ip(cases[i], a), want = 0;
    if (inet_pton(AF_INET, cases[i], b) == 1)
      want = 4;
    else if (inet_pton(AF_INET6, cases[i], b) == 1)
      want = 16;
    if (got != want) printf("# ip literal '%s': got %d, want %d\n", cases[i], got, want);
    CHECK_INT(got, want);
    if (got == want && want) CHECK_MEM(a, b, (size_t)want);
  }
}

#define MP_CAP 4096

/* mbedTLS 3.6 with TLS 1.3 tickets: a client that asks to be told of them
 * gets MBEDTLS_ERR_SSL_RECEIVED_NEW_SESSION_TICKET from reads. */
#if MBEDTLS_VERSION_NUMBER >= 0x03060000 && defined(MBEDTLS_SSL_PROTO_TLS1_3) && \
    defined(MBEDTLS_SSL_SESSION_TICKETS) && defined(MBEDTLS_SSL_TICKET_C) && \
    defined(MBEDTLS_SSL_CLI_C) && defined(MBEDTLS_SSL_SRV_C)
#include <mbedtls/ssl_ticket.h>
#define WS__TEST_TICKETS 1
#else
#define WS__TEST_TICKETS 0
#endif

typedef struct mpipe {
  unsigned char buf[MP_CAP];
  size_t len;
  int eof; /* the writer is gone: once empty, end of stream */
} mpipe;

typedef struct mend {
  const char *name;
  ws_conn c;
  ws_tls *t;
  mpipe *in, *out;
  size_t maxio;            /* bytes per transport call, at most */
  unsigned long nsend, nrecv, eagain_send, eagain_recv, entropy_calls;
  unsigned wants_seen;     /* every ws_tls_wants() bit seen */
  int fail_recv;           /* recv returns this (not WS_OK) from the start */
  int opened, closed, code, step, done, stream_mid;
  char err[200];
} mend;

static const size_t g_io_sizes[] = {5, 1000, 40000, 100000, 300000};
static size_t g_io_nsizes;

static int mp_send(ws_tls *t, const void *buf, size_t len, size_t *n, void *user) {
  mend *e = (mend *)user;
  size_t k;
  (void)t;
  if (++e->nsend % 2) { /* every other call would block */
    e->eagain_send++;
    return WS_EAGAIN;
  }
  k = WS__MIN(WS__MIN(len, e->maxio), MP_CAP - e->out->len);
  if (k == 0) {
    e->eagain_send++;
    return WS_EAGAIN;
  }
  memcpy(e->out->buf + e->out->len, buf, k);
  e->out->len += k;
  *n = k;
  return WS_OK;
}

static int mp_recv(ws_tls *t, void *buf, size_t cap, size_t *n, void *user) {
  mend *e = (mend *)user;
  size_t k;
  (void)t;
  if (e->fail_recv) return e->fail_recv;
  if (++e->nrecv % 2) {
    e->eagain_recv++;
    return WS_EAGAIN;
  }
  k = WS__MIN(WS__MIN(cap, e->maxio), e->in->len);
  if (k == 0) {
    if (e->in->eof) {
      *n = 0;
      return WS_OK;
    }
    e->eagain_recv++;
    return WS_EAGAIN;
  }
  memcpy(buf, e->in->buf, k);
  memmove(e->in->buf, e->in->buf + k, e->in->len - k);
  e->in->len -= k;
  *n = k;
  return WS_OK;
}

static int mc_read(ws_conn *c, void *buf, size_t cap, size_t *n, void *user) {
  (void)c;
  return ws_tls_read(((mend *)user)->t, buf, cap, n);
}

static int mc_write(ws_conn *c, const void *buf, size_t len, size_t *n, void *user) {
  (void)c;
  return ws_tls_write(((mend *)user)->t, buf, len, n);
}

static int mc_send_step(mend *e) {
  size_t n = g_io_sizes[e->step];
  return ws_send(&e->c, n == 5 ? WS_OP_TEXT : WS_OP_BINARY,
                 n == 5 ? (const void *)"hello" : g_big, n);
}

static void mc_on_open(ws_conn *c, const char *p, size_t n, void *user) {
  mend *e = (mend *)user;
  (void)c, (void)p, (void)n;
  e->opened++;
  if (ws_conn_state(c) == WS_STATE_OPEN && e->name[0] == 'c') CHECK_INT(mc_send_step(e), WS_OK);
}

static int mc_on_message(ws_conn *c, int op, const void *data, size_t len,
                         int fin, void *user) {
  mend *e = (mend *)user;
  size_t want;
  if (e->name[0] == 's') { /* server: echo, piece by piece when streaming */
    int rc = ws_send_fragment(c, e->stream_mid ? WS_OP_CONT : op, data, len, fin);
    e->stream_mid = !fin;
    return rc == WS_OK ? 0 : -1;
  }
  want = g_io_sizes[e->step];
  CHECK_INT(len, want);
  CHECK(len == want && memcmp(data, want == 5 ? (const void *)"hello" : g_big, len) == 0);
  CHECK_INT(op, want == 5 ? WS_OP_TEXT : WS_OP_BINARY);
  CHECK_INT(fin, 1);
  if ((size_t)++e->step < g_io_nsizes)
    CHECK_INT(mc_send_step(e), WS_OK);
  else
    ws_close(c, WS_CLOSE_NORMAL, "done", 4);
  return 0;
}

static void mc_on_close(ws_conn *c, int code, const char *reason, size_t len,
                        void *user) {
  mend *e = (mend *)user;
  (void)c, (void)reason, (void)len;
  e->closed++;
  e->code = code;
  snprintf(e->err, sizeof e->err, "%s", ws_tls_error(e->t));
}

static int test_entropy(void *buf, size_t n, void *user) {
  mend *e = (mend *)user;
  e->entropy_calls++;
  return ws__os_random(buf, n);
}

static char *slurp(const char *name, size_t *len) {
  FILE *f = fopen(path(name), "rb");
  char *b = (char *)malloc(8192);
  *len = f && b ? fread(b, 1, 8192, f) : 0;
  if (f) fclose(f);
  return b;
}

typedef struct io_opts {
  const char *host;
  size_t maxio, max_msgs; /* max_msgs: how many of g_io_sizes */
  int stream, fixed;      /* fixed: ws_conn_set_buffers, 64 KiB each way */
  int fail_srv_recv;      /* the server's transport fails at once */
  int tickets;            /* TLS 1.3 session tickets, signalled (3.6) */
} io_opts;

/* A ws client and a ws server, each a ws_conn over a TLS session over an
 * in-memory pipe pair; both transports would-block on every other call.
 * Runs until both connections are CLOSED (or a bound is hit). */
static void run_io_pair(const io_opts *io, mend *srv, mend *cli) {
  static mpipe a2b, b2a;
  static unsigned char fbuf[4][65536];
  static const ws_tls_io mio = {mp_send, mp_recv};
  ws_tls_options o;
  ws_tls_config *stc = NULL, *ctc = NULL;
  ws_config cfg, ccfg;
  ws_callbacks cb;
  ws_client_opts co;
  char *cert, *key, *ca, err[200];
  size_t cert_len, key_len, ca_len;
  unsigned long rounds = 0;
  uint64_t end = ws__loop_clock() + 60000;
  mend *ends[2];
  int k;
#if WS__TEST_TICKETS
  mbedtls_ssl_ticket_context tickets;
#endif
  memset(srv, 0, sizeof *srv);
  memset(cli, 0, sizeof *cli);
  memset(&a2b, 0, sizeof a2b);
  memset(&b2a, 0, sizeof b2a);
  g_io_nsizes = io->max_msgs;
  srv->name = "server";
  cli->name = "client";
  srv->in = cli->out = &a2b;
  cli->in = srv->out = &b2a;
  srv->maxio = cli->maxio = io->maxio;
  srv->fail_recv = io->fail_srv_recv;
  cert = slurp("srv.pem", &cert_len);
  key = slurp("srv.key", &key_len);
  ca = slurp("ca.pem", &ca_len);
  /* PEM from memory and the caller's entropy: what firmware has. */
  ws_tls_options_init(&o, WS_SERVER);
  o.cert_pem = cert, o.cert_pem_len = cert_len;
  o.key_pem = key, o.key_pem_len = key_len;
  o.entropy = test_entropy, o.entropy_user = srv;
  if (!CHECK(ws_tls_config_new(&stc, &o, err, sizeof err) == WS_OK)) printf("# %s\n", err);
  ws_tls_options_init(&o, WS_CLIENT);
  o.ca_pem = ca, o.ca_pem_len = ca_len;
  o.entropy = test_entropy, o.entropy_user = cli;
  if (!CHECK(ws_tls_config_new(&ctc, &o, err, sizeof err) == WS_OK)) printf("# %s\n", err);
  free(cert), free(key), free(ca);
  if (stc == NULL || ctc == NULL) goto out;
  CHECK(srv->entropy_calls > 0 && cli->entropy_calls > 0);
#if WS__TEST_TICKETS
  mbedtls_ssl_ticket_init(&tickets);
  if (io->tickets) {
    CHECK_INT(mbedtls_ssl_ticket_setup(&tickets, mbedtls_ctr_drbg_random, &stc->drbg,
                                       MBEDTLS_CIPHER_AES_256_GCM, 600), 0);
    mbedtls_ssl_conf_session_tickets_cb(ws_tls_config_mbedtls(stc), mbedtls_ssl_ticket_write,
                                        mbedtls_ssl_ticket_parse, &tickets);
    mbedtls_ssl_conf_tls13_enable_signal_new_session_tickets(
        ws_tls_config_mbedtls(ctc), MBEDTLS_SSL_TLS1_3_SIGNAL_NEW_SESSION_TICKETS_ENABLED);
  }
#endif
  CHECK_INT(ws_tls_new_io(&srv->t, stc, &mio, srv, NULL), WS_OK);
  CHECK_INT(ws_tls_new_io(&cli->t, ctc, &mio, cli, io->host), WS_OK);
  if (srv->t == NULL || cli->t == NULL) goto out;
  memset(&cb, 0, sizeof cb);
  cb.read = mc_read;
  cb.write = mc_write;
  cb.on_open = mc_on_open;
  cb.on_message = mc_on_message;
  cb.on_close = mc_on_close;
  ws_config_init(&cfg, WS_SERVER);
  cfg.stream = io->stream;
  CHECK_INT(ws_conn_init(&srv->c, &cfg, &cb, srv), WS_OK);
  ws_config_init(&ccfg, WS_CLIENT); /* its own: the connection keeps a pointer */
  CHECK_INT(ws_conn_init(&cli->c, &ccfg, &cb, cli), WS_OK);
  if (io->fixed) {
    CHECK_INT(ws_conn_set_buffers(&srv->c, fbuf[0], sizeof fbuf[0], fbuf[1], sizeof fbuf[1]), WS_OK);
    CHECK_INT(ws_conn_set_buffers(&cli->c, fbuf[2], sizeof fbuf[2], fbuf[3], sizeof fbuf[3]), WS_OK);
  }
  memset(&co, 0, sizeof co);
  co.host = io->host;
  co.path = "/io";
  CHECK_INT(ws_client_start(&cli->c, &co), WS_OK);
  ends[0] = cli, ends[1] = srv;
  while ((!srv->done || !cli->done) && ws__loop_clock() < end) {
    rounds++;
    for (k = 0; k < 2; k++) {
      mend *e = ends[k];
      if (e->done) continue;
      e->wants_seen |= ws_tls_wants(e->t);
      if (ws_conn_on_readable(&e->c) != WS_ECLOSED && ws_conn_state(&e->c) != WS_STATE_CLOSED)
        (void)ws_conn_on_writable(&e->c);
      e->wants_seen |= ws_tls_wants(e->t);
      if (ws_conn_state(&e->c) == WS_STATE_CLOSED) {
        e->done = 1;
        (void)ws_tls_close(e->t); /* close_notify, then the "FIN" */
        e->out->eof = 1;
      }
    }
  }
  printf("# %s, %zu B per call: %lu rounds; would-block: client %lu of %lu sends, "
         "%lu of %lu recvs; server %lu of %lu, %lu of %lu; %s\n", io->host,
         io->maxio, rounds, cli->eagain_send, cli->nsend, cli->eagain_recv,
         cli->nrecv, srv->eagain_send, srv->nsend, srv->eagain_recv, srv->nrecv,
         mbedtls_ssl_get_version(&cli->t->ssl));
  CHECK(srv->done && cli->done);
out:
  ws_conn_free(&srv->c);
  ws_conn_free(&cli->c);
  ws_tls_free(srv->t);
  ws_tls_free(cli->t);
  ws_tls_config_free(stc);
  ws_tls_config_free(ctc);
#if WS__TEST_TICKETS
  mbedtls_ssl_ticket_free(&tickets);
#endif
}

static void check_io_echo(const mend *srv, const mend *cli, size_t msgs) {
  CHECK_INT(cli->opened, 1);
  CHECK_INT(srv->opened, 1);
  CHECK_INT(cli->step, msgs);
  CHECK_INT(cli->closed, 1);
  CHECK_INT(srv->closed, 1);
  CHECK_INT(cli->code, WS_CLOSE_NORMAL);
  CHECK_INT(srv->code, WS_CLOSE_NORMAL);
  /* Every step would-block in both directions, on both sides. */
  CHECK(cli->eagain_send > 0 && cli->eagain_recv > 0);
  CHECK(srv->eagain_send > 0 && srv->eagain_recv > 0);
  CHECK(cli->wants_seen & WS_TLS_HANDSHAKING);
  CHECK((cli->wants_seen & WS_TLS_WANT_READ) && (srv->wants_seen & WS_TLS_WANT_READ));
  CHECK_MEM(cli->err, "", 1);
  CHECK_MEM(srv->err, "", 1);
}

static void test_io_pipe_echo(void) {
  mend srv, cli;
  io_opts io = {"127.0.0.1", 1500, 5, 0, 0, 0, 0};
  run_io_pair(&io, &srv, &cli);
  check_io_echo(&srv, &cli, 5);
}

static void test_io_pipe_stream_by_name(void) {
  mend srv, cli;
  io_opts io = {"localhost", 700, 4, 1, 0, 0, 0};
  run_io_pair(&io, &srv, &cli);
  check_io_echo(&srv, &cli, 4);
}

/* One byte per transport call: every TLS record arrives in pieces. */
static void test_io_pipe_one_byte(void) {
  mend srv, cli;
  io_opts io = {"localhost", 1, 2, 0, 0, 0, 0};
  run_io_pair(&io, &srv, &cli);
  check_io_echo(&srv, &cli, 2);
}

/* Fixed buffers (the connection never allocates) over TLS. */
static void test_io_pipe_fixed_buffers(void) {
  mend srv, cli;
  io_opts io = {"localhost", 4096, 3, 0, 1, 0, 0};
  run_io_pair(&io, &srv, &cli);
  check_io_echo(&srv, &cli, 3);
}

/* A transport error fails the session with a reason; a reset says so. */
static void test_io_transport_errors(void) {
  mend srv, cli;
  io_opts io = {"localhost", 4096, 1, 0, 0, WS_EEOF, 0};
  ws_tls *t = (ws_tls *)&io;
  ws_tls_io bad = {mp_send, NULL};
  run_io_pair(&io, &srv, &cli);
  CHECK_INT(srv.opened, 0);
  CHECK_INT(cli.opened, 0);
  CHECK_INT(srv.code, WS_CLOSE_ABNORMAL);
  CHECK_INT(cli.code, WS_CLOSE_ABNORMAL);
  printf("# server: %s\n# client: %s\n", srv.err, cli.err);
  CHECK(strstr(srv.err, "TLS handshake failed") != NULL);
  CHECK(strstr(srv.err, "reset") != NULL);
  CHECK(cli.err[0] != '\0');
  io.fail_srv_recv = WS_EIO;
  run_io_pair(&io, &srv, &cli);
  CHECK_INT(srv.code, WS_CLOSE_ABNORMAL);
  CHECK(strstr(srv.err, "TLS handshake failed") != NULL && strstr(srv.err, "reset") == NULL);
  /* Arguments. */
  CHECK_INT(ws_tls_new_io(&t, NULL, &bad, NULL, NULL), WS_EINVAL);
  CHECK(t == NULL);
}

/* TLS 1.3 session tickets arrive in the middle of the data (3.6). */
static void test_io_pipe_tls13_tickets(void) {
#if WS__TEST_TICKETS
  mend srv, cli;
  io_opts io = {"localhost", 2000, 3, 0, 0, 0, 1};
  run_io_pair(&io, &srv, &cli);
  check_io_echo(&srv, &cli, 3);
#else
  printf("# skipped: needs mbedTLS 3.6 with TLS 1.3 session tickets (this is %s)\n",
         MBEDTLS_VERSION_STRING);
#endif
}

static int failing_entropy(void *buf, size_t n, void *user) {
  (void)buf, (void)n, (void)user;
  return WS_EIO;
}

/* The caller's entropy source is used, and its failure is reported. */
static void test_io_entropy_fails(void) {
  ws_tls_options o;
  ws_tls_config *tc = (ws_tls_config *)&o;
  char err[200];
  ws_tls_options_init(&o, WS_CLIENT);
  o.insecure_skip_verify = 1;
  o.entropy = failing_entropy;
  CHECK_INT(ws_tls_config_new(&tc, &o, err, sizeof err), WS_EINVAL);
  CHECK(tc == NULL);
  printf("# %s\n", err);
  CHECK(strstr(err, "random generator") != NULL);
}

int main(void) {
  size_t i;
  signal(SIGPIPE, SIG_IGN);
  if (sh("command -v openssl >/dev/null 2>&1") != 0) {
    printf("# skipped: the openssl command is needed to make certificates\n");
    return t_done("test_tls");
  }
  if (!CHECK(make_certs() == 0)) {
    printf("# openssl failed: see %s/openssl.log\n", g_dir);
    return t_done("test_tls");
  }
  g_big = (unsigned char *)malloc(BIG);
  for (i = 0; i < BIG; i++) g_big[i] = (unsigned char)(i * 7 + (i >> 9));
  g_text = (unsigned char *)malloc(FB_OVER);
  for (i = 0; i < FB_OVER; i++) g_text[i] = (unsigned char)('a' + i % 26);
  RUN(test_config_errors);
  RUN(test_echo_ip);
  RUN(test_echo_name_stream);
  RUN(test_insecure_flag);
  RUN(test_wrong_host);
  RUN(test_wrong_host_name);
  RUN(test_reconnect_gives_up_on_certificate);
  RUN(test_proxy_tunnel);
  RUN(test_proxy_tunnel_wrong_host);
  RUN(test_expired);
  RUN(test_untrusted);
  RUN(test_plain_http_client);
  RUN(test_handshake_timeout);
  RUN(test_ws_client_on_tls_port);
  RUN(test_ip_literal);
  RUN(test_io_pipe_echo);
  RUN(test_io_pipe_stream_by_name);
  RUN(test_io_pipe_one_byte);
  RUN(test_io_pipe_fixed_buffers);
  RUN(test_io_pipe_tls13_tickets);
  RUN(test_io_transport_errors);
  RUN(test_io_entropy_fails);
  RUN(test_fixed_both);
  RUN(test_fixed_both_client_limit);
  RUN(test_fixed_both_clean_close);
  RUN(test_fixed_server_only);
  RUN(test_fixed_client_only);
  if (getenv("WS_TLS_NO_INTEROP") == NULL) RUN(test_interop);
  free(g_big);
  free(g_text);
  sh("rm -rf %s", g_dir);
  return t_done("test_tls");
}

#endif
