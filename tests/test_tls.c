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
  if (getenv("WS_TLS_NO_INTEROP") == NULL) RUN(test_interop);
  free(g_big);
  sh("rm -rf %s", g_dir);
  return t_done("test_tls");
}

#endif
