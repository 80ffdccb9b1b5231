/*
 * holdgen.c - the load generator of `make scale` (tests/scale/run.sh):
 * holds many idle WebSocket connections and checks every broadcast they
 * receive. One thread, epoll, libc only; it speaks RFC 6455 as a client
 * by itself (not with ws), as tests/bench/loadgen.c does.
 *
 *   holdgen hold -p PORT -n N --src A.B.C.D [--nsrc K] [-s SIZE]
 *                [--batch B] [--connect-timeout S] [--timeout S]
 *   holdgen admin -P PORT[,PORT...] COMMAND
 *   holdgen freeport     prints a free TCP port on 127.0.0.1
 *
 * hold: opens N connections to 127.0.0.1:PORT, from the K source addresses
 * starting at A.B.C.D (bound with IP_BIND_ADDRESS_NO_PORT, so each address
 * has the whole ephemeral port range to the server's port), at most B
 * handshakes at a time (256), checking each Sec-WebSocket-Accept. Then it
 * prints "connected n=N secs=T" on stdout and holds them: it answers every
 * ping with a pong, and checks every message: a binary broadcast of SIZE
 * bytes (64) as tests/scale/scale_common.h lays it out, its sequence number
 * the connection's previous one plus 1, every byte as expected. For each it
 * records the latency (now - the timestamp in the payload). When every
 * open connection has a sequence number it prints "GOT seq=S n=C
 * max_us=M". A connection that ends (close frame, end of stream, error)
 * is a drop, and printed on stderr.
 * SIGUSR1 or SIGTERM: prints the report and exits, 0 when every connection
 * opened, none dropped and nothing was wrong, else 1:
 *   REPORT conns=N open=O dropped=D errors=E pings=P deliveries=X
 *          connect_s=T cpu_s=C
 *   SEQ seq=S n=C max_us=M          one per sequence number seen
 *   HIST us=L n=C                   latencies of all deliveries: C of them
 *                                   in [L, next L) (about 3 % wide)
 * admin: connects to /admin on each port (127.0.0.1), and when all are
 * open sends COMMAND to each, "@now" in it replaced by the CLOCK_MONOTONIC
 * time in ns, then prints each answer on a line of stdout.
 * Exit status 2 on bad usage, 3 on the hard timeout (--timeout, default
 * 3600 s for hold, 20 s for admin).
 */
#define _GNU_SOURCE
#include "../bench/bench_common.h"
#include "scale_common.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
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

#define MAXSEQ 4096
#define RBUF (256 * 1024)
#define NHIST 1400

enum { ST_IDLE, ST_CONNECTING, ST_HS, ST_OPEN, ST_DEAD };

/* Kept small: a million of these are held in user space by the generators
 * too. Input that stops inside a frame, and output the socket did not
 * take, go to buffers allocated only then. */
typedef struct hconn {
  int fd;
  uint8_t st, wantout;
  uint16_t ilen;
  uint32_t olen;
  uint32_t seq;          /* last broadcast sequence number received */
  unsigned char *in;     /* a partial frame (ilen bytes), or NULL */
  unsigned char *out;    /* output not yet taken (olen bytes), or NULL */
} hconn;

static int g_port, g_n, g_nsrc = 1, g_batch = 256;
static uint32_t g_src;
static size_t g_size = 64;
static hconn *g_c;
static int g_ep;
static int g_open, g_opening, g_started, g_dropped, g_errors;
static unsigned long long g_pings, g_deliveries;
static unsigned long long g_cnt[MAXSEQ], g_max[MAXSEQ], g_hist[NHIST];
static unsigned char g_got[MAXSEQ];
static unsigned char *g_rbuf, *g_pat;
static uint64_t g_patseq = (uint64_t)-1;
static uint32_t g_rng = 0x2545F491u;
static volatile sig_atomic_t g_done;

static int g_said;

/* A line on stderr; the first 20 only. */
static void say(const char *fmt, va_list ap) {
  if (++g_said > 20) return;
  fprintf(stderr, "holdgen[%ld]: ", (long)getpid());
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\n");
}

/* Something wrong (a bad byte, a refused handshake, ...). */
static void err(const char *fmt, ...) {
  va_list ap;
  g_errors++;
  va_start(ap, fmt);
  say(fmt, ap);
  va_end(ap);
}

/* A connection lost: counted apart from the errors. */
static void lost(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  say(fmt, ap);
  va_end(ap);
}

static void die(const char *what) {
  fprintf(stderr, "holdgen: %s: %s\n", what, strerror(errno));
  exit(1);
}

static void on_alarm(int sig) {
  static const char m[] = "holdgen: hard timeout reached\n";
  (void)sig;
  if (write(2, m, sizeof m - 1) < 0) _exit(3);
  _exit(3);
}

static void on_done(int sig) {
  (void)sig;
  g_done = 1;
}

static uint32_t xs32(uint32_t *s) {
  uint32_t x = *s;
  x ^= x << 13, x ^= x >> 17, x ^= x << 5;
  return *s = x ? x : 0x9E3779B9u;
}

/* The handshake key of connection i: derived again when the answer comes,
 * so nothing per connection holds it. */
static void key_of(uint32_t i, char key[25]) {
  unsigned char nonce[16];
  uint32_t s = (i + 1) * 2654435761u ^ (uint32_t)getpid();
  int k;
  for (k = 0; k < 16; k++) nonce[k] = (unsigned char)xs32(&s);
  bench_b64(nonce, 16, key);
}

static int hbucket(uint64_t us) {
  int e = 0, b;
  if (us < 64) return (int)us;
  while ((us >> e) > 1) e++;      /* e = floor(log2(us)) >= 6 */
  b = 64 + (e - 6) * 32 + (int)((us >> (e - 5)) & 31);
  return b < NHIST ? b : NHIST - 1;
}

static uint64_t hlower(int b) {
  int e;
  if (b < 64) return (uint64_t)b;
  e = (b - 64) / 32 + 6;
  return (uint64_t)(32 + (b - 64) % 32) << (e - 5);
}

static void set_ev(hconn *c, uint32_t idx, unsigned ev) {
  struct epoll_event e;
  e.events = ev;
  e.data.u32 = idx;
  if (epoll_ctl(g_ep, EPOLL_CTL_MOD, c->fd, &e) < 0) die("epoll_ctl");
}

static void drop(hconn *c, uint32_t idx, const char *why) {
  if (c->st == ST_OPEN) {
    g_open--;
    g_dropped++;
    lost("connection %u dropped: %s", idx, why);
  } else {
    if (c->st == ST_HS || c->st == ST_CONNECTING) g_opening--;
    err("connection %u failed to open: %s", idx, why);
  }
  close(c->fd);
  c->fd = -1;
  c->st = ST_DEAD;
  free(c->in), c->in = NULL, c->ilen = 0;
  free(c->out), c->out = NULL, c->olen = 0;
}

/* Sends p[0..n) after what waits; keeps what the socket does not take. */
static int out(hconn *c, uint32_t idx, const unsigned char *p, size_t n) {
  ssize_t w = 0;
  if (!c->olen) {
    w = send(c->fd, p, n, MSG_NOSIGNAL);
    if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
      drop(c, idx, strerror(errno));
      return -1;
    }
    if (w < 0) w = 0;
    if ((size_t)w == n) return 0;
  }
  if (!(c->out = realloc(c->out, c->olen + n - (size_t)w))) die("realloc");
  memcpy(c->out + c->olen, p + w, n - (size_t)w);
  c->olen += (uint32_t)(n - (size_t)w);
  if (!c->wantout) set_ev(c, idx, EPOLLIN | EPOLLOUT), c->wantout = 1;
  return 0;
}

static int flush(hconn *c, uint32_t idx) {
  while (c->olen) {
    ssize_t w = send(c->fd, c->out, c->olen, MSG_NOSIGNAL);
    if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 0;
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      drop(c, idx, w < 0 ? strerror(errno) : "send returned 0");
      return -1;
    }
    memmove(c->out, c->out + w, c->olen - (size_t)w);
    c->olen -= (uint32_t)w;
  }
  free(c->out), c->out = NULL;
  if (c->wantout) set_ev(c, idx, EPOLLIN), c->wantout = 0;
  return 0;
}

/* A masked frame from the client. */
static int send_frame(hconn *c, uint32_t idx, int op, const unsigned char *p,
                      size_t n) {
  unsigned char f[14 + 125];
  uint32_t k = xs32(&g_rng);
  size_t i;
  if (n > 125) return -1;
  f[0] = (unsigned char)(0x80 | op);
  f[1] = (unsigned char)(0x80 | n);
  memcpy(f + 2, &k, 4);
  for (i = 0; i < n; i++) f[6 + i] = p[i] ^ f[2 + (i & 3)];
  return out(c, idx, f, 6 + n);
}

static void start(uint32_t idx) {
  hconn *c = &g_c[idx];
  struct sockaddr_in a;
  struct epoll_event e;
  int one = 1;
  struct linger lg = {1, 0};
  c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (c->fd < 0) die("socket");
  setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  /* The end is a reset: no TIME_WAIT left holding ports after a run. */
  setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  setsockopt(c->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(g_src + idx % (uint32_t)g_nsrc);
  if (bind(c->fd, (struct sockaddr *)&a, sizeof a) < 0) die("bind");
  a.sin_port = htons((uint16_t)g_port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(c->fd, (struct sockaddr *)&a, sizeof a) < 0 && errno != EINPROGRESS)
    die("connect");
  c->st = ST_CONNECTING;
  c->wantout = 1;
  g_opening++, g_started++;
  e.events = EPOLLOUT | EPOLLIN;
  e.data.u32 = idx;
  if (epoll_ctl(g_ep, EPOLL_CTL_ADD, c->fd, &e) < 0) die("epoll_ctl add");
}

static void connected(hconn *c, uint32_t idx) {
  char key[25], req[256];
  int err_ = 0, n;
  socklen_t len = sizeof err_;
  getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err_, &len);
  if (err_) {
    drop(c, idx, strerror(err_));
    return;
  }
  key_of(idx, key);
  n = snprintf(req, sizeof req,
               "GET / HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
               "Sec-WebSocket-Version: 13\r\n\r\n", g_port, key);
  c->st = ST_HS;
  c->wantout = 0;
  set_ev(c, idx, EPOLLIN);
  out(c, idx, (const unsigned char *)req, (size_t)n);
}

static void check_broadcast(hconn *c, uint32_t idx, const unsigned char *p,
                            size_t n) {
  uint64_t seq, ts, now = scale_now_ns(), us;
  if (n != g_size || n < SCALE_HDR) {
    err("connection %u: broadcast of %zu bytes, not %zu", idx, n, g_size);
    return;
  }
  seq = scale_get64(p);
  ts = scale_get64(p + 8);
  if (seq == 0 || seq >= MAXSEQ || seq != (uint64_t)c->seq + 1) {
    err("connection %u: broadcast %llu after %u", idx, (unsigned long long)seq,
        c->seq);
    if (seq == 0 || seq >= MAXSEQ) return;
  }
  if (seq != g_patseq) {
    size_t i;
    for (i = SCALE_HDR; i < g_size; i++) g_pat[i] = scale_byte(seq, i);
    g_patseq = seq;
  }
  if (memcmp(p + SCALE_HDR, g_pat + SCALE_HDR, n - SCALE_HDR) != 0) {
    err("connection %u: broadcast %llu differs", idx, (unsigned long long)seq);
    return;
  }
  c->seq = (uint32_t)seq;
  us = now > ts ? (now - ts) / 1000 : 0;
  g_deliveries++;
  g_cnt[seq]++;
  if (us > g_max[seq]) g_max[seq] = us;
  g_hist[hbucket(us)]++;
  if (!g_got[seq] && g_cnt[seq] >= (unsigned long long)g_open) {
    g_got[seq] = 1;
    printf("GOT seq=%llu n=%llu max_us=%llu\n", (unsigned long long)seq,
           g_cnt[seq], g_max[seq]);
    fflush(stdout);
  }
}

/* Handles the whole frames in p[0..n); returns the bytes used, or -1 when c
 * was dropped. */
static long frames(hconn *c, uint32_t idx, unsigned char *p, size_t n) {
  size_t pos = 0;
  if (c->st == ST_HS) {
    unsigned char *e = memmem(p, n, "\r\n\r\n", 4);
    char key[25], acc[29];
    const char *v;
    size_t vl, hl;
    if (!e) {
      if (n > 4096) { drop(c, idx, "handshake answer too long"); return -1; }
      return 0;
    }
    hl = (size_t)(e - p) + 4;
    key_of(idx, key);
    bench_accept(key, 24, acc);
    v = bench_header((const char *)p, hl, "Sec-WebSocket-Accept", &vl);
    if (n < 12 || memcmp(p, "HTTP/1.1 101", 12) != 0 || !v || vl != 28 ||
        memcmp(v, acc, 28) != 0) {
      drop(c, idx, "handshake refused or wrong Sec-WebSocket-Accept");
      return -1;
    }
    c->st = ST_OPEN;
    g_opening--, g_open++;
    pos = hl;
  }
  while (n - pos >= 2) {
    unsigned char *h = p + pos;
    size_t avail = n - pos, hl = 2;
    uint64_t len = h[1] & 0x7F;
    int op = h[0] & 0x0F;
    if (h[1] & 0x80) { drop(c, idx, "masked frame from the server"); return -1; }
    if (len == 126) {
      if (avail < 4) break;
      len = (uint64_t)h[2] << 8 | h[3], hl = 4;
    } else if (len == 127) {
      int i;
      if (avail < 10) break;
      for (len = 0, i = 0; i < 8; i++) len = len << 8 | h[2 + i];
      hl = 10;
    }
    if (len > 60000) { drop(c, idx, "frame too large"); return -1; }
    if (avail < hl + len) break;
    if ((h[0] & 0xF0) != 0x80) { drop(c, idx, "fragment or RSV bits"); return -1; }
    pos += hl + (size_t)len;
    h += hl;
    if (op == 9) {
      g_pings++;
      if (send_frame(c, idx, 10, h, (size_t)len) < 0) return -1;
    } else if (op == 2) {
      check_broadcast(c, idx, h, (size_t)len);
    } else if (op == 8) {
      drop(c, idx, "close frame from the server");
      return -1;
    } else if (op != 10) {
      err("connection %u: unexpected opcode %d", idx, op);
    }
  }
  return (long)pos;
}

static void readable(hconn *c, uint32_t idx) {
  int rounds;
  for (rounds = 0; rounds < 8; rounds++) {
    size_t have = c->ilen;
    ssize_t r;
    long used;
    if (have) memcpy(g_rbuf, c->in, have);
    r = recv(c->fd, g_rbuf + have, RBUF - have, 0);
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      drop(c, idx, r < 0 ? strerror(errno) : "end of stream");
      return;
    }
    used = frames(c, idx, g_rbuf, have + (size_t)r);
    if (used < 0) return;
    c->ilen = (uint16_t)0;
    if ((size_t)used < have + (size_t)r) {
      size_t left = have + (size_t)r - (size_t)used;
      if (left > 65535) { drop(c, idx, "input backlog"); return; }
      if (!(c->in = realloc(c->in, left))) die("realloc");
      memcpy(c->in, g_rbuf + used, left);
      c->ilen = (uint16_t)left;
    } else {
      free(c->in), c->in = NULL;
    }
    if ((size_t)r < RBUF - have) return;
  }
}

static void poll_once(int timeout_ms) {
  struct epoll_event ev[1024];
  int n = epoll_wait(g_ep, ev, 1024, timeout_ms), i;
  if (n < 0 && errno != EINTR) die("epoll_wait");
  for (i = 0; i < n; i++) {
    uint32_t idx = ev[i].data.u32;
    hconn *c = &g_c[idx];
    if (c->st == ST_DEAD) continue;
    if (c->st == ST_CONNECTING) {
      if (ev[i].events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) connected(c, idx);
      continue;
    }
    if (ev[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) readable(c, idx);
    if (c->st != ST_DEAD && (ev[i].events & EPOLLOUT)) flush(c, idx);
  }
}

static int mode_hold(double connect_timeout) {
  uint64_t t0 = scale_now_ns(), end = t0 + (uint64_t)(connect_timeout * 1e9);
  struct rusage ru;
  double secs;
  int i, bad;
  if (!(g_c = calloc((size_t)g_n, sizeof *g_c))) die("calloc");
  if (!(g_rbuf = malloc(RBUF)) || !(g_pat = malloc(g_size))) die("malloc");
  while (g_open < g_n && !g_done) {
    while (g_started < g_n && g_opening < g_batch) start((uint32_t)g_started);
    if (g_started == g_n && g_opening == 0) break; /* some failed */
    poll_once(10);
    if (scale_now_ns() > end) {
      err("only %d of %d connections opened in %.0f s", g_open, g_n, connect_timeout);
      break;
    }
  }
  secs = (double)(scale_now_ns() - t0) / 1e9;
  printf("connected n=%d secs=%.3f\n", g_open, secs);
  fflush(stdout);
  while (!g_done) poll_once(-1);
  getrusage(RUSAGE_SELF, &ru);
  printf("REPORT conns=%d open=%d dropped=%d errors=%d pings=%llu deliveries=%llu "
         "connect_s=%.3f cpu_s=%.3f\n",
         g_n, g_open, g_dropped, g_errors, g_pings, g_deliveries, secs,
         (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
         (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6);
  for (i = 1; i < MAXSEQ; i++)
    if (g_cnt[i]) printf("SEQ seq=%d n=%llu max_us=%llu\n", i, g_cnt[i], g_max[i]);
  for (i = 0; i < NHIST; i++)
    if (g_hist[i]) printf("HIST us=%llu n=%llu\n", (unsigned long long)hlower(i), g_hist[i]);
  fflush(stdout);
  bad = g_open != g_n || g_dropped || g_errors;
  return bad ? 1 : 0;
}

/* ---- admin: a blocking client, one connection per port ---------------- */

static int admin_read(int fd, unsigned char *buf, size_t cap, size_t *len) {
  size_t n = 0;
  for (;;) {
    ssize_t r;
    if (n >= 2) {
      size_t l = buf[1] & 0x7F, hl = 2;
      int op = buf[0] & 0x0F;
      if (l == 127) return -1;
      if (l == 126 && n >= 4) l = (size_t)buf[2] << 8 | buf[3], hl = 4;
      if (l < 126 || hl == 4) {
        if (hl + l > cap) return -1;
        if (n >= hl + l) {
          if (op == 9 || op == 10) { /* a ping or pong: skipped */
            memmove(buf, buf + hl + l, n - hl - l);
            n -= hl + l;
            continue;
          }
          memmove(buf, buf + hl, l);
          *len = l;
          return op == 1 ? 0 : -1;
        }
      }
    }
    if (n == cap) return -1;
    r = recv(fd, buf + n, cap - n, 0);
    if (r <= 0) return -1;
    n += (size_t)r;
  }
}

/* Opens an admin connection to 127.0.0.1:port; -1 when it cannot. */
static int admin_open(int port, uint32_t i) {
  struct sockaddr_in a;
  unsigned char buf[4096];
  char req[512], key[25], acc[29];
  size_t n, vl;
  const char *v;
  int fd;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_port = htons((uint16_t)port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if ((fd = socket(AF_INET, SOCK_STREAM, 0)) < 0) return -1;
  if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
    fprintf(stderr, "holdgen admin: port %d: %s\n", port, strerror(errno));
    close(fd);
    return -1;
  }
  key_of(i, key);
  bench_accept(key, 24, acc);
  n = (size_t)snprintf(req, sizeof req,
                       "GET /admin HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
                       "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                       "Sec-WebSocket-Version: 13\r\n\r\n", port, key);
  if (send(fd, req, n, MSG_NOSIGNAL) != (ssize_t)n) n = 0;
  /* Read the answer's head byte by byte: nothing after it is taken. */
  else
    for (n = 0; n < sizeof buf - 1; n++) {
      if (recv(fd, buf + n, 1, 0) != 1) { n = 0; break; }
      if (n >= 3 && memcmp(buf + n - 3, "\r\n\r\n", 4) == 0) { n++; break; }
    }
  v = n ? bench_header((const char *)buf, n, "Sec-WebSocket-Accept", &vl) : NULL;
  if (n < 12 || memcmp(buf, "HTTP/1.1 101", 12) != 0 || !v || vl != 28 ||
      memcmp(v, acc, 28) != 0) {
    fprintf(stderr, "holdgen admin: port %d: handshake refused or broken\n", port);
    close(fd);
    return -1;
  }
  return fd;
}

/* Every port is tried; exit status 1 if any failed. */
static int mode_admin(const char *ports, const char *cmd) {
  int fds[256], np = 0, i, bad = 0;
  char msg[512];
  const char *s = ports;
  while (*s && np < 256) {
    fds[np] = admin_open(atoi(s), (uint32_t)np);
    bad |= fds[np] < 0;
    np++;
    while (*s && *s != ',') s++;
    if (*s == ',') s++;
  }
  {
    const char *at = strstr(cmd, "@now");
    if (at)
      snprintf(msg, sizeof msg, "%.*s%llu%s", (int)(at - cmd), cmd,
               (unsigned long long)scale_now_ns(), at + 4);
    else
      snprintf(msg, sizeof msg, "%s", cmd);
  }
  for (i = 0; i < np; i++) {
    hconn c;
    if (fds[i] < 0) continue;
    memset(&c, 0, sizeof c);
    c.fd = fds[i];
    if (send_frame(&c, 0, 1, (const unsigned char *)msg, strlen(msg)) < 0 || c.olen) {
      fprintf(stderr, "holdgen admin: send failed\n");
      close(fds[i]), fds[i] = -1, bad = 1;
    }
  }
  for (i = 0; i < np; i++) {
    unsigned char buf[4096];
    size_t len;
    if (fds[i] < 0) continue;
    if (admin_read(fds[i], buf, sizeof buf, &len) < 0) {
      fprintf(stderr, "holdgen admin: no answer\n");
      bad = 1;
    } else {
      printf("%.*s\n", (int)len, (const char *)buf);
    }
    close(fds[i]);
  }
  return bad;
}

static int mode_freeport(void) {
  struct sockaddr_in a;
  socklen_t al = sizeof a;
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) < 0 ||
      getsockname(fd, (struct sockaddr *)&a, &al) < 0)
    die("freeport");
  printf("%d\n", ntohs(a.sin_port));
  close(fd);
  return 0;
}

static void usage(void) {
  fprintf(stderr,
          "usage: holdgen hold -p PORT -n N --src A.B.C.D [--nsrc K] [-s SIZE]\n"
          "                    [--batch B] [--connect-timeout S] [--timeout S]\n"
          "       holdgen admin -P PORT[,PORT...] COMMAND\n"
          "       holdgen freeport\n");
  exit(2);
}

int main(int argc, char **argv) {
  const char *ports = NULL, *cmd = NULL;
  double timeout = -1, ctimeout = 600;
  struct sigaction sa;
  struct rlimit rl;
  int i, admin;
  if (argc < 2) usage();
  if (strcmp(argv[1], "freeport") == 0) return mode_freeport();
  admin = strcmp(argv[1], "admin") == 0;
  if (!admin && strcmp(argv[1], "hold") != 0) usage();
  for (i = 2; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (admin && !v && a[0] != '-') { cmd = a; continue; }
    if (!v) usage();
    i++;
    if (!strcmp(a, "-p")) g_port = atoi(v);
    else if (!strcmp(a, "-P")) ports = v;
    else if (!strcmp(a, "-n")) g_n = atoi(v);
    else if (!strcmp(a, "-s")) g_size = (size_t)atoi(v);
    else if (!strcmp(a, "--nsrc")) g_nsrc = atoi(v);
    else if (!strcmp(a, "--batch")) g_batch = atoi(v);
    else if (!strcmp(a, "--connect-timeout")) ctimeout = atof(v);
    else if (!strcmp(a, "--timeout")) timeout = atof(v);
    else if (!strcmp(a, "--src")) {
      struct in_addr in;
      if (inet_pton(AF_INET, v, &in) != 1) usage();
      g_src = ntohl(in.s_addr);
    } else usage();
  }
  signal(SIGALRM, on_alarm);
  signal(SIGPIPE, SIG_IGN);
  if (admin) {
    if (!ports || !cmd) usage();
    alarm((unsigned)(timeout < 0 ? 20 : timeout));
    return mode_admin(ports, cmd);
  }
  if (g_port <= 0 || g_n < 1 || !g_src || g_nsrc < 1 || g_batch < 1 ||
      g_size < SCALE_HDR || g_size > 60000)
    usage();
  alarm((unsigned)(timeout < 0 ? 3600 : timeout));
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_done;
  sigaction(SIGUSR1, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  g_ep = epoll_create1(EPOLL_CLOEXEC);
  if (g_ep < 0) die("epoll_create1");
  return mode_hold(ctimeout);
}
