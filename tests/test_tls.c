/*
 * test_tls.c - wss:// over mbedTLS on loopback, with certificates made at
 * test time by the openssl CLI in a temporary directory: a CA, a server
 * certificate for localhost and 127.0.0.1, one for another host, an
 * expired one and a self-signed one. ws client against ws server on one
 * loop (whole messages and streamed), refusals with a clear error, a
 * plain client on the TLS port, the handshake timeout covering TLS, then
 * tests/tls/interop.sh (openssl s_client, Node ws) against the examples.
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

static int make_certs(void) {
  FILE *f;
  strcpy(g_dir, "/tmp/ws_tls_XXXXXX");
  if (mkdtemp(g_dir) == NULL) return -1;
  f = fopen(path("t.cnf"), "w");
  if (f == NULL) return -1;
  fprintf(f,
          "[req]\ndistinguished_name = dn\n[dn]\n"
          "[v3ca]\nbasicConstraints = critical,CA:TRUE\n"
          "keyUsage = critical,keyCertSign,cRLSign\nsubjectKeyIdentifier = hash\n"
          "[srv]\nbasicConstraints = CA:FALSE\n"
          "keyUsage = critical,digitalSignature,keyEncipherment\n"
          "extendedKeyUsage = serverAuth\n"
          "subjectAltName = DNS:localhost,IP:127.0.0.1,IP:::1\n"
          "[other]\nbasicConstraints = CA:FALSE\n"
          "extendedKeyUsage = serverAuth\nsubjectAltName = DNS:other.example\n"
          "[expca]\ndir = %s\ndatabase = $dir/index.txt\nnew_certs_dir = $dir\n"
          "serial = $dir/serial\ncertificate = $dir/ca.pem\n"
          "private_key = $dir/ca.key\ndefault_md = sha256\npolicy = pol\n"
          "x509_extensions = srv\nunique_subject = no\n"
          "[pol]\ncommonName = supplied\n",
          g_dir);
  fclose(f);
  return sh("(cd %s && : > index.txt && echo 10 > serial && "
            "K='openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256' && "
            "$K -out ca.key && $K -out srv.key && "
            "openssl req -x509 -new -key ca.key -subj /CN=ws-test-ca -days 2 "
            "-config t.cnf -extensions v3ca -out ca.pem && "
            "openssl req -new -key srv.key -subj /CN=localhost -config t.cnf -out srv.csr && "
            "openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -set_serial 2 "
            "-days 2 -extfile t.cnf -extensions srv -out srv.pem && "
            "openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -set_serial 3 "
            "-days 2 -extfile t.cnf -extensions other -out other.pem && "
            "openssl ca -batch -notext -config t.cnf -name expca -in srv.csr "
            "-startdate 20200101000000Z -enddate 20200102000000Z -out expired.pem && "
            "openssl req -x509 -new -key srv.key -subj /CN=localhost -days 2 "
            "-config t.cnf -extensions srv -out self.pem"
            ") >%s/openssl.log 2>&1",
            g_dir, g_dir);
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
} run_opts;

/* Runs one client against one TLS server until the client is closed and
 * the server connection is gone too. */
static void run_pair(const run_opts *ro) {
  ws_loop loop;
  ws_loop_config cfg;
  ws_loop_callbacks cb;
  ws_tls_config *stc = server_config(ro->cert), *ctc = client_config(ro->insecure);
  unsigned port = 0;
  char url[128];
  uint64_t end;
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
  CHECK_INT(ws_loop_connect(&loop, url, NULL, &g_cli, NULL), WS_OK);
  end = ws__loop_clock() + 20000;
  while ((!g_cli.closed || ws_loop_conn_count(&loop) > 0) && ws__loop_clock() < end)
    ws_loop_run_once(&loop, 50);
  CHECK_INT(g_cli.closed, 1);
  ws_loop_free(&loop);
out:
  ws_tls_config_free(stc);
  ws_tls_config_free(ctc);
}

static void test_echo_ip(void) {
  run_opts ro = {"srv.pem", "127.0.0.1", 0, 0};
  run_pair(&ro);
  CHECK_INT(g_cli.opened, 1);
  CHECK_INT(g_cli.step, 3);
  CHECK_INT(g_cli.code, 1000);
  CHECK_INT(g_srv.closed, 1);
}

static void test_echo_name_stream(void) {
  run_opts ro = {"srv.pem", "localhost", 0, 1};
  run_pair(&ro);
  CHECK_INT(g_cli.opened, 1);
  CHECK_INT(g_cli.step, 3);
  CHECK_INT(g_cli.code, 1000);
}

static void test_insecure_flag(void) {
  run_opts ro = {"other.pem", "127.0.0.1", 1, 0};
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
  ws_config cfg;
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
  ws_config_init(&cfg, WS_CLIENT);
  CHECK_INT(ws_conn_init(&cli->c, &cfg, &cb, cli), WS_OK);
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
  RUN(test_config_errors);
  RUN(test_echo_ip);
  RUN(test_echo_name_stream);
  RUN(test_insecure_flag);
  RUN(test_wrong_host);
  RUN(test_wrong_host_name);
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
  if (getenv("WS_TLS_NO_INTEROP") == NULL) RUN(test_interop);
  free(g_big);
  sh("rm -rf %s", g_dir);
  return t_done("test_tls");
}

#endif
