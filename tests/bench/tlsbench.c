/*
 * tlsbench.c - what wss:// costs a ws server: memory per idle TLS
 * connection and TLS handshakes per second, against build/echo_server
 * --cert/--key (and, with --plain, the same against a plain echo_server,
 * for the ratio).
 *
 *   tlsbench idle      -p PORT [-n CONNS] --pid SERVER_PID [--plain]
 *   tlsbench handshake -p PORT [-c CONCURRENT] [-d SECS] [--pid PID] [--plain]
 * Common: -w WARMUP_SECS (0.5), --cafile FILE (verify the server against
 * it; default: no chain check, insecure_skip_verify, which changes nothing
 * on the server's side), --timeout SECS (hard bound; default D + 120).
 *
 * The client is this library's own: a ws_conn over ws_tls_new() on a
 * non-blocking socket, driven by epoll as docs/tls.md says (the session's
 * wants during the TLS handshake, the connection's afterwards). One
 * process, one thread. Every upgrade is checked (the core checks the
 * accept key); a handshake cycle is connect + TLS handshake + upgrade +
 * close 1000 answered by the server with 1000 + TCP close.
 *
 * Output: a human-readable line on stderr and one "RESULT mode=... k=v"
 * line on stdout. Exit status 0 on success, 1 on any failed connection,
 * 2 on bad usage, 3 on the hard timeout. Never fails because of a number.
 * Linux only (epoll, /proc).
 */
#define _GNU_SOURCE
#include "ws.h"
#include "bench_common.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

enum { ST_FREE, ST_CONNECTING, ST_WS };

typedef struct tconn {
  int fd, st, closed, opened, inited;
  unsigned ev;
  ws_conn c;
  ws_tls *t;
} tconn;

static int g_ep = -1, g_port, g_plain, g_handshake_mode, g_pid;
static int g_n = 1000, g_conc = 32, g_errors, g_open, g_opening;
static double g_secs = 3, g_warm = 0.5, g_timeout;
static unsigned g_src_next, g_src_spread = 1;
static uint64_t g_count, g_ws_start, g_ws_end;
static const char *g_cafile;
static ws_tls_config *g_tc;
static ws_callbacks g_cb;
static ws_config g_cfg;
static tconn *g_c;

static void on_alarm(int sig) {
  static const char m[] = "tlsbench: hard timeout\n";
  (void)sig;
  if (write(2, m, sizeof m - 1) < 0) _exit(3);
  _exit(3);
}

static void die(const char *what) {
  perror(what);
  exit(1);
}

/* ---- the transport under each ws_conn --------------------------------- */

static int tb_read(ws_conn *c, void *buf, size_t cap, size_t *n, void *user) {
  tconn *k = (tconn *)user;
  ssize_t r;
  (void)c;
  if (k->t) return ws_tls_read(k->t, buf, cap, n);
  do r = recv(k->fd, buf, cap, 0); while (r < 0 && errno == EINTR);
  if (r >= 0) {
    *n = (size_t)r;
    return WS_OK;
  }
  return errno == EAGAIN || errno == EWOULDBLOCK ? WS_EAGAIN : WS_EIO;
}

static int tb_write(ws_conn *c, const void *buf, size_t len, size_t *n, void *user) {
  tconn *k = (tconn *)user;
  ssize_t r;
  (void)c;
  if (k->t) return ws_tls_write(k->t, buf, len, n);
  do r = send(k->fd, buf, len, MSG_NOSIGNAL); while (r < 0 && errno == EINTR);
  if (r >= 0) {
    *n = (size_t)r;
    return WS_OK;
  }
  return errno == EAGAIN || errno == EWOULDBLOCK ? WS_EAGAIN : WS_EIO;
}

static void tb_on_open(ws_conn *c, const char *p, size_t n, void *user) {
  tconn *k = (tconn *)user;
  (void)p, (void)n;
  k->opened = 1;
  g_open++, g_opening--;
  if (g_handshake_mode) ws_close(c, WS_CLOSE_NORMAL, NULL, 0);
}

static void tb_on_close(ws_conn *c, int code, const char *reason, size_t len,
                        void *user) {
  tconn *k = (tconn *)user;
  (void)c;
  k->closed = 1;
  if (g_handshake_mode && k->opened && code == WS_CLOSE_NORMAL) {
    uint64_t now = bench_now_ns();
    if (now >= g_ws_start && now < g_ws_end) g_count++;
    return;
  }
  if (g_errors++ < 5)
    fprintf(stderr, "tlsbench: connection %d closed: %d %.*s%s%s\n", (int)(k - g_c), code,
            (int)len, reason, k->t ? "; TLS: " : "", k->t ? ws_tls_error(k->t) : "");
}

/* ---- connections -------------------------------------------------------- */

static void set_ev(tconn *k, unsigned ev) {
  struct epoll_event e;
  if (ev == k->ev) return;
  e.events = ev;
  e.data.ptr = k;
  if (epoll_ctl(g_ep, EPOLL_CTL_MOD, k->fd, &e) < 0) die("epoll_ctl mod");
  k->ev = ev;
}

static void conn_start(tconn *k) {
  struct sockaddr_in a;
  struct epoll_event e;
  int one = 1;
  memset(k, 0, sizeof *k);
  k->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (k->fd < 0) die("socket");
  setsockopt(k->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (g_src_spread > 1) { /* source addresses 127.0.0.2.. against port exhaustion */
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(0x7F000002u + (g_src_next++ % g_src_spread));
    setsockopt(k->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    if (bind(k->fd, (struct sockaddr *)&a, sizeof a) < 0) die("bind");
  }
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_port = htons((uint16_t)g_port);
  a.sin_addr.s_addr = htonl(0x7F000001u);
  if (connect(k->fd, (struct sockaddr *)&a, sizeof a) < 0 && errno != EINPROGRESS)
    die("connect");
  k->st = ST_CONNECTING;
  g_opening++;
  e.events = EPOLLOUT;
  e.data.ptr = k;
  k->ev = e.events;
  if (epoll_ctl(g_ep, EPOLL_CTL_ADD, k->fd, &e) < 0) die("epoll_ctl add");
}

static void conn_end(tconn *k) {
  if (k->t) (void)ws_tls_close(k->t); /* close_notify */
  epoll_ctl(g_ep, EPOLL_CTL_DEL, k->fd, NULL);
  close(k->fd);
  if (k->inited) ws_conn_free(&k->c);
  ws_tls_free(k->t);
  if (k->opened) g_open--;
  else g_opening--;
  k->t = NULL;
  k->st = ST_FREE;
}

/* Connected: the TLS session (unless --plain), then the ws client. */
static void conn_connected(tconn *k) {
  ws_client_opts o;
  char host[32];
  int err = 0, rc;
  socklen_t el = sizeof err;
  if (getsockopt(k->fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0 || err != 0) {
    if (g_errors++ < 5) fprintf(stderr, "tlsbench: connect: %s\n", strerror(err));
    k->closed = 1;
    return;
  }
  if (!g_plain && (rc = ws_tls_new(&k->t, g_tc, k->fd, "127.0.0.1")) != WS_OK) {
    fprintf(stderr, "tlsbench: ws_tls_new: %s\n", ws_strerror(rc));
    exit(1);
  }
  if (ws_conn_init(&k->c, &g_cfg, &g_cb, k) != WS_OK) exit(1);
  k->inited = 1;
  snprintf(host, sizeof host, "127.0.0.1:%d", g_port);
  memset(&o, 0, sizeof o);
  o.host = host;
  o.path = "/";
  k->st = ST_WS;
  rc = ws_client_start(&k->c, &o);
  if (rc != WS_OK && rc != WS_ECLOSED && g_errors++ < 5)
    fprintf(stderr, "tlsbench: ws_client_start: %s\n", ws_strerror(rc));
}

/* The readiness to wait for: while the TLS handshake runs, exactly what
 * the session names; then the connection's wishes plus any TLS wish. */
static unsigned conn_interest(tconn *k) {
  unsigned w = k->t ? ws_tls_wants(k->t) : 0;
  if (w & WS_TLS_HANDSHAKING) return w & WS_TLS_WANT_WRITE ? EPOLLOUT : EPOLLIN;
  return EPOLLIN | (ws_conn_want_write(&k->c) || (w & WS_TLS_WANT_WRITE) ? EPOLLOUT : 0u);
}

static void conn_event(tconn *k, unsigned ev) {
  if (k->st == ST_CONNECTING) {
    conn_connected(k);
  } else {
    if (ws_conn_on_readable(&k->c) != WS_ECLOSED && !k->closed &&
        (ev & EPOLLOUT) && ws_conn_want_write(&k->c))
      (void)ws_conn_on_writable(&k->c);
    if (!k->closed && ws_conn_state(&k->c) == WS_STATE_CLOSED) k->closed = 1;
  }
  if (k->closed)
    conn_end(k);
  else
    set_ev(k, conn_interest(k));
}

static void poll_once(int timeout_ms) {
  struct epoll_event ev[256];
  int n = epoll_wait(g_ep, ev, 256, timeout_ms), i;
  if (n < 0 && errno != EINTR) die("epoll_wait");
  for (i = 0; i < n; i++) conn_event((tconn *)ev[i].data.ptr, ev[i].events);
}

static void run_for(double secs) {
  uint64_t end = bench_now_ns() + (uint64_t)(secs * 1e9);
  while (bench_now_ns() < end) poll_once(5);
}

/* ---- modes ---------------------------------------------------------------- */

static int mode_idle(void) {
  long rss0, rss1, self0, self1;
  uint64_t end;
  int next = 0;
  if (g_pid <= 0) {
    fprintf(stderr, "tlsbench idle: --pid is required\n");
    return 2;
  }
  g_src_spread = 64;
  run_for(0.3);
  rss0 = bench_rss_kb(g_pid);
  self0 = bench_rss_kb(getpid());
  end = bench_now_ns() + 120000000000ull;
  while (g_open < g_n && !g_errors && bench_now_ns() < end) {
    while (next < g_n && g_opening < 64) conn_start(&g_c[next++]);
    poll_once(5);
  }
  if (g_open < g_n) {
    fprintf(stderr, "tlsbench idle: only %d of %d connections opened\n", g_open, g_n);
    return 1;
  }
  run_for(1.0);
  rss1 = bench_rss_kb(g_pid);
  self1 = bench_rss_kb(getpid());
  fprintf(stderr,
          "idle %s: %d connections: server RSS %ld -> %ld kB (%.0f B/conn); "
          "client RSS %+ld kB (%.0f B/conn); errors %d\n",
          g_plain ? "ws://" : "wss://", g_n, rss0, rss1,
          (double)(rss1 - rss0) * 1024 / g_n, self1 - self0,
          (double)(self1 - self0) * 1024 / g_n, g_errors);
  printf("RESULT mode=idle tls=%d conns=%d rss0_kb=%ld rss1_kb=%ld rss_per_conn=%.0f "
         "client_rss_per_conn=%.0f errors=%d\n",
         !g_plain, g_n, rss0, rss1, (double)(rss1 - rss0) * 1024 / g_n,
         (double)(self1 - self0) * 1024 / g_n, g_errors);
  return g_errors ? 1 : 0;
}

static int mode_handshake(void) {
  double cpu0 = -1, cpu1, lg0 = 0, lg1;
  uint64_t end;
  int i;
  g_handshake_mode = 1;
  g_src_spread = 250;
  g_ws_start = bench_now_ns() + (uint64_t)(g_warm * 1e9);
  g_ws_end = g_ws_start + (uint64_t)(g_secs * 1e9);
  while (bench_now_ns() < g_ws_end && !g_errors) {
    for (i = 0; i < g_conc; i++)
      if (g_c[i].st == ST_FREE) conn_start(&g_c[i]);
    poll_once(1);
    if (cpu0 < 0 && bench_now_ns() >= g_ws_start) {
      cpu0 = bench_cpu_s(g_pid);
      lg0 = bench_self_cpu_s();
    }
  }
  cpu1 = bench_cpu_s(g_pid);
  lg1 = bench_self_cpu_s();
  if (cpu0 < 0) cpu0 = cpu1;
  end = bench_now_ns() + 5000000000ull; /* let the last ones finish */
  for (;;) {
    int busy = 0;
    for (i = 0; i < g_conc; i++) busy += g_c[i].st != ST_FREE;
    if (!busy || bench_now_ns() > end) {
      if (busy) { /* a cycle that stalls is a failure, not a slow number */
        fprintf(stderr, "tlsbench: %d connections still unfinished 5 s after the end\n", busy);
        g_errors++;
      }
      break;
    }
    poll_once(5);
  }
  fprintf(stderr,
          "handshake %s: %d at once: %.0f connect+%supgrade+close per s, server cpu "
          "%.2f (%.0f us per handshake), client cpu %.2f, errors %d\n",
          g_plain ? "ws://" : "wss://", g_conc, (double)g_count / g_secs,
          g_plain ? "" : "TLS handshake+", (cpu1 - cpu0) / g_secs,
          g_count ? (cpu1 - cpu0) * 1e6 / (double)g_count : 0.0, (lg1 - lg0) / g_secs,
          g_errors);
  printf("RESULT mode=handshake tls=%d conns=%d hs_per_s=%.0f server_cpu=%.3f "
         "server_us_per_hs=%.1f hs_per_cpu_s=%.0f lg_cpu=%.3f errors=%d\n",
         !g_plain, g_conc, (double)g_count / g_secs, (cpu1 - cpu0) / g_secs,
         g_count ? (cpu1 - cpu0) * 1e6 / (double)g_count : 0.0,
         cpu1 > cpu0 ? (double)g_count / (cpu1 - cpu0) : 0.0, (lg1 - lg0) / g_secs,
         g_errors);
  return g_errors ? 1 : 0;
}

static void usage(void) {
  fprintf(stderr,
          "usage: tlsbench idle|handshake -p PORT [-n CONNS] [-c CONCURRENT] [-d SECS]\n"
          "                [-w WARMUP] [--pid SERVER_PID] [--plain] [--cafile FILE]\n"
          "                [--timeout SECS]\n");
  exit(2);
}

int main(int argc, char **argv) {
  struct rlimit rl;
  const char *mode;
  int i, total, rc;
  if (argc < 2) usage();
  mode = argv[1];
  for (i = 2; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--plain")) { g_plain = 1; continue; }
    if (!v) usage();
    if (!strcmp(a, "-p")) g_port = atoi(v);
    else if (!strcmp(a, "-n")) g_n = atoi(v);
    else if (!strcmp(a, "-c")) g_conc = atoi(v);
    else if (!strcmp(a, "-d")) g_secs = atof(v);
    else if (!strcmp(a, "-w")) g_warm = atof(v);
    else if (!strcmp(a, "--pid")) g_pid = atoi(v);
    else if (!strcmp(a, "--cafile")) g_cafile = v;
    else if (!strcmp(a, "--timeout")) g_timeout = atof(v);
    else usage();
    i++;
  }
  if (g_port <= 0 || g_n <= 0 || g_conc <= 0 || g_secs <= 0) usage();
  if (strcmp(mode, "idle") != 0 && strcmp(mode, "handshake") != 0) usage();
  signal(SIGPIPE, SIG_IGN);
  signal(SIGALRM, on_alarm);
  alarm((unsigned)(g_timeout > 0 ? g_timeout : g_secs + 120));
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  if (!g_plain) {
    ws_tls_options o;
    char err[200];
    if (!ws_tls_available()) {
      fprintf(stderr, "tlsbench: libws built without TLS\n");
      return 2;
    }
    ws_tls_options_init(&o, WS_CLIENT);
    o.ca_file = g_cafile;
    o.insecure_skip_verify = g_cafile == NULL;
    if (ws_tls_config_new(&g_tc, &o, err, sizeof err) != WS_OK) {
      fprintf(stderr, "tlsbench: TLS config: %s\n", err);
      return 1;
    }
  }
  ws_config_init(&g_cfg, WS_CLIENT);
  g_cb.read = tb_read;
  g_cb.write = tb_write;
  g_cb.on_open = tb_on_open;
  g_cb.on_close = tb_on_close;
  if ((g_ep = epoll_create1(EPOLL_CLOEXEC)) < 0) die("epoll_create1");
  total = strcmp(mode, "idle") == 0 ? g_n : g_conc;
  g_c = (tconn *)calloc((size_t)total, sizeof *g_c);
  if (g_c == NULL) die("calloc");
  rc = strcmp(mode, "idle") == 0 ? mode_idle() : mode_handshake();
  /* Leaving: the kernel closes what is still open (the sessions still
   * use g_tc, so it is not freed). */
  return rc;
}
