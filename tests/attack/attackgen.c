/*
 * attackgen.c - the hostile and the honest peers of `make attack`
 * (tests/attack/run.sh). One thread, epoll, non-blocking sockets, libc
 * only; it speaks RFC 6455 as a client by itself (not with ws), as
 * tests/scale/holdgen.c does.
 *
 *   attackgen attack -p PORT -m MODE -n N -d SECS [--trickle-ms T]
 *                    [--batch B] [--src-first K] [--src-last L]
 *   attackgen honest -p PORT -n N -d SECS [--interval-ms I] [-s SIZE]
 *   attackgen stats -p PORT      GET /stats: prints its body, or "n/a ..."
 *   attackgen freeport           prints a free TCP port on 127.0.0.1
 *
 * attack: N connections to 127.0.0.1:PORT, connection i bound before its
 * connect to 127.0.0.(K + i % (L - K + 1)) (K 2, L 254; with
 * IP_BIND_ADDRESS_NO_PORT each address has the whole ephemeral range), at
 * most B (512) of them connecting or waiting for the 101 at a time. Each
 * does one MODE:
 *   slow-reader     64 KiB binary messages, masked, as fast as the socket
 *                   takes them; never reads.
 *   unfinished      the header of a 16 MiB binary frame and 15 MiB of its
 *                   payload, then nothing more (reads what comes).
 *   ping-flood      pings of 125 bytes as fast as the socket takes them;
 *                   never reads (so never reads a pong).
 *   slow-handshake  the opening handshake's request, one byte per
 *                   connection every T ms (1000): it never completes
 *                   unless the run is long.
 *   fragment-flood  a text frame without FIN ("a"), then continuation
 *                   frames of 1 byte without FIN, forever.
 *   mix             the five above, connection i doing mode i % 5.
 *   idle            handshakes, then does nothing (reads what comes): the
 *                   runner's measure of what N connections cost at rest.
 * A connection that "never reads" is read once the kernel says the peer
 * closed (EPOLLRDHUP, EPOLLHUP, EPOLLERR), and at the end: whatever is
 * queued for it is parsed then, to find the server's close frame. Each
 * connection ends one way: close_CODE (a close frame was read: its code,
 * 1005 when it had none), http_STATUS (the handshake was answered with a
 * status other than 101), reset, eof (end of stream without a close
 * frame), connect_failed, error, or, still going when SECS have passed,
 * open (upgraded) or open_handshake (not yet); not_started counts those
 * never started (at most B wait for the server at a time, and it was too
 * slow to take all N within SECS). Output on stdout:
 *   connected n=N open=O secs=T       once every connection was tried
 *   REPORT mode=M conns=N sent_mb=X
 *   END mode=M what=W n=C mean_s=S   one per mode and way of ending; S:
 *                                    mean seconds from connect to the end
 *   DONE conns=N cpu_s=C
 *
 * honest: N echo clients from 127.0.0.1; each sends a masked text message
 * of SIZE bytes (32), waits for its echo (checked byte by byte), and sends
 * the next I ms (50) after the previous one was sent, or at once when the
 * echo took longer. It answers pings. Prints "connected n=N secs=T" when
 * all are open, then after SECS:
 *   HONEST conns=N open=O closed=C msgs=M p50_us=A p99_us=B max_us=X
 *          waiting=W errors=E
 * A message still without its echo at the end counts with its age so far.
 * Exit status 0 when all N opened, none closed, nothing was wrong and
 * every connection had at least one echo; else 1.
 *
 * stats: HTTP/1.1 GET /stats on 127.0.0.1:PORT; prints the body on one line
 * and exits 0 on a 200, else prints "n/a (...)" and exits 1.
 *
 * Exit status 2 on bad usage, 3 on the hard timeout (SECS + 60).
 */
#define _GNU_SOURCE
#include "../bench/bench_common.h"

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

#define RBUF (1024 * 1024)
#define NHIST 1400
#define CHUNK 65536                 /* a multiple of 4: the mask repeats */
#define FRAME_LEN (16u << 20)       /* the unfinished frame announces this */
#define UNF_SENT (15u << 20)        /* and sends this much of it */
#define TICK_MS 10                  /* slow handshakes advance in rounds */

enum { M_SLOW_READER, M_UNFINISHED, M_PING_FLOOD, M_SLOW_HS, M_FRAG_FLOOD,
       M_IDLE, NMODES, M_MIX = NMODES };
static const char *const g_mode_name[] = {
    "slow-reader", "unfinished", "ping-flood", "slow-handshake",
    "fragment-flood", "idle", "mix"};

enum { ST_CONNECTING, ST_TRICKLE, ST_HS, ST_OPEN, ST_STALLED, ST_DONE };
enum { END_NONE, END_CLOSE, END_HTTP, END_RESET, END_EOF, END_CONNFAIL,
       END_ERROR, END_OPEN, END_OPEN_HS };

/* One hostile connection: small, ten thousand of them. */
typedef struct aconn {
  int fd;
  uint8_t mode, st, end, hn;  /* hn: bytes of the incoming frame head in h */
  uint8_t crlf, seen_close;   /* crlf: bytes of "\r\n\r\n" matched */
  uint16_t code;              /* close code or HTTP status */
  uint32_t pos;               /* output: offset in the mode's pattern */
  uint32_t t_start, t_end;    /* ms since the program started */
  uint64_t sent;              /* bytes sent */
  uint64_t skip;              /* payload bytes of an incoming frame to skip */
  unsigned char h[16];        /* incoming frame head + 2 bytes of a close
                                 payload; during the handshake, the first
                                 12 bytes of the answer */
} aconn;

/* What a mode sends, over and over: b[0..len), then again from loop. */
typedef struct pattern {
  unsigned char *b;
  size_t len, loop;
} pattern;

static int g_port, g_n, g_batch = 512, g_src_first = 2, g_src_last = 254;
static int g_mode = -1, g_trickle_ms = 1000;
static double g_secs = 20;
static aconn *g_c;
static pattern g_pat[NMODES];
static unsigned char *g_rbuf, g_key[4];
static char g_req[256];
static size_t g_req_len;
static int g_ep, g_started, g_pending, g_ended;
static uint64_t g_t0_ns;
static volatile sig_atomic_t g_done;

static void die(const char *what) {
  fprintf(stderr, "attackgen: %s: %s\n", what, strerror(errno));
  exit(1);
}

static void on_alarm(int sig) {
  static const char m[] = "attackgen: hard timeout reached\n";
  (void)sig;
  if (write(2, m, sizeof m - 1) < 0) _exit(3);
  _exit(3);
}

static void on_done(int sig) {
  (void)sig;
  g_done = 1;
}

static uint32_t now_ms(void) {
  return (uint32_t)((bench_now_ns() - g_t0_ns) / 1000000u);
}

static uint32_t xs32(uint32_t *s) {
  uint32_t x = *s;
  x ^= x << 13, x ^= x >> 17, x ^= x << 5;
  return *s = x ? x : 0x9E3779B9u;
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

/* The value at quantile q of a histogram of t samples. */
static uint64_t hquant(const unsigned long long *h, unsigned long long t, double q) {
  unsigned long long s = 0;
  int i;
  if (!t) return 0;
  for (i = 0; i < NHIST; i++)
    if ((s += h[i]) >= q * (double)t) return hlower(i);
  return hlower(NHIST - 1);
}

/* A client frame header, masked with g_key: returns its length. */
static size_t put_head(unsigned char *f, int b0, uint64_t len) {
  size_t n;
  f[0] = (unsigned char)b0;
  if (len < 126) {
    f[1] = (unsigned char)(0x80 | len), n = 2;
  } else if (len < 65536) {
    f[1] = 0x80 | 126, f[2] = (unsigned char)(len >> 8), f[3] = (unsigned char)len;
    n = 4;
  } else {
    int i;
    f[1] = 0x80 | 127;
    for (i = 0; i < 8; i++) f[2 + i] = (unsigned char)(len >> (56 - 8 * i));
    n = 10;
  }
  memcpy(f + n, g_key, 4);
  return n + 4;
}

static void mask_into(unsigned char *dst, const unsigned char *src, size_t n) {
  size_t i;
  for (i = 0; i < n; i++) dst[i] = src[i] ^ g_key[i & 3];
}

static void make_patterns(void) {
  unsigned char plain[CHUNK], *b;
  size_t i, hl, k;
  uint32_t s = (uint32_t)getpid() * 2654435761u ^ (uint32_t)bench_now_ns();
  for (i = 0; i < 4; i++) g_key[i] = (unsigned char)xs32(&s);
  for (i = 0; i < CHUNK; i++) plain[i] = (unsigned char)(i * 7 + (i >> 8));
  /* slow-reader: one 64 KiB binary message */
  if (!(b = malloc(14 + CHUNK))) die("malloc");
  hl = put_head(b, 0x82, CHUNK);
  mask_into(b + hl, plain, CHUNK);
  g_pat[M_SLOW_READER].b = b, g_pat[M_SLOW_READER].len = hl + CHUNK;
  /* unfinished: the head of a FRAME_LEN frame, then its payload 64 KiB at a
   * time (CHUNK is a multiple of 4, so each repeat is masked alike) */
  if (!(b = malloc(14 + CHUNK))) die("malloc");
  hl = put_head(b, 0x82, FRAME_LEN);
  mask_into(b + hl, plain, CHUNK);
  g_pat[M_UNFINISHED].b = b, g_pat[M_UNFINISHED].len = hl + CHUNK;
  g_pat[M_UNFINISHED].loop = hl;
  /* ping-flood: 500 pings of 125 bytes */
  if (!(b = malloc(500 * 131))) die("malloc");
  for (k = 0; k < 500; k++) {
    hl = put_head(b + k * 131, 0x89, 125);
    mask_into(b + k * 131 + hl, plain, 125);
  }
  g_pat[M_PING_FLOOD].b = b, g_pat[M_PING_FLOOD].len = 500 * 131;
  /* fragment-flood: "a" in a text frame without FIN, then 1-byte
   * continuation frames without FIN (7 bytes each), forever */
  if (!(b = malloc(7 + 9000 * 7))) die("malloc");
  for (k = 0; k <= 9000; k++) {
    hl = put_head(b + k * 7, k ? 0x00 : 0x01, 1);
    b[k * 7 + hl] = (unsigned char)('a' ^ g_key[0]);
  }
  g_pat[M_FRAG_FLOOD].b = b, g_pat[M_FRAG_FLOOD].len = 7 + 9000 * 7;
  g_pat[M_FRAG_FLOOD].loop = 7;
  g_req_len = (size_t)snprintf(g_req, sizeof g_req,
      "GET / HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
      "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
      "Sec-WebSocket-Version: 13\r\n\r\n", g_port);
}

static void set_ev(aconn *c, uint32_t i, unsigned ev) {
  struct epoll_event e;
  e.events = ev;
  e.data.u32 = i;
  if (epoll_ctl(g_ep, EPOLL_CTL_MOD, c->fd, &e) < 0) die("epoll_ctl");
}

/* The mode writes without pause while open. */
static int floods(const aconn *c) {
  return c->mode == M_SLOW_READER || c->mode == M_UNFINISHED ||
         c->mode == M_PING_FLOOD || c->mode == M_FRAG_FLOOD;
}

/* The mode never reads once open (until the peer closes). */
static int deaf(const aconn *c) {
  return c->mode == M_SLOW_READER || c->mode == M_PING_FLOOD;
}

/* The connection's end; a close frame read before it names the end. */
static void finish(aconn *c, int how, int code) {
  if (c->st == ST_DONE) return;
  if (c->st == ST_CONNECTING || c->st == ST_HS) g_pending--;
  if (c->seen_close && how != END_HTTP) how = END_CLOSE, code = c->code;
  c->end = (uint8_t)how;
  c->code = (uint16_t)code;
  if (how != END_OPEN && how != END_OPEN_HS) {
    close(c->fd);
    c->fd = -1;
  }
  c->st = ST_DONE;
  c->t_end = now_ms();
  g_ended++;
}

static void fail_errno(aconn *c, int e) {
  finish(c, e == ECONNRESET || e == EPIPE ? END_RESET : END_ERROR, 0);
}

/* Parses what the server sent: the handshake answer, then frames, only
 * far enough to find a close frame. -1 when c ended. */
static int take(aconn *c, uint32_t i, const unsigned char *p, size_t n) {
  static const char crlf[] = "\r\n\r\n";
  while (c->st == ST_HS || c->st == ST_TRICKLE) {
    if (!n) return 0;
    if (c->hn < 12) c->h[c->hn++] = *p;
    c->crlf = (uint8_t)(*p == (unsigned char)crlf[c->crlf] ? c->crlf + 1
                        : *p == '\r' ? 1 : 0);
    p++, n--;
    if (c->crlf == 4) {
      int status = c->hn >= 12 ? atoi((const char *)c->h + 9) : 0;
      if (c->hn < 12 || memcmp(c->h, "HTTP/1.1 ", 9) != 0) status = 0;
      c->hn = 0;
      if (status != 101) {
        finish(c, END_HTTP, status);
        return -1;
      }
      if (c->st == ST_HS) g_pending--;
      c->st = ST_OPEN;
      if (c->mode == M_IDLE || c->mode == M_SLOW_HS)
        c->st = ST_STALLED, set_ev(c, i, EPOLLIN | EPOLLRDHUP);
      else
        set_ev(c, i, EPOLLOUT | EPOLLRDHUP | (deaf(c) ? 0u : EPOLLIN));
    }
  }
  while (n) {
    size_t hl, need;
    uint64_t len;
    int k;
    if (c->skip) {
      size_t t = n < c->skip ? n : (size_t)c->skip;
      c->skip -= t, p += t, n -= t;
      continue;
    }
    c->h[c->hn++] = *p++, n--;
    if (c->hn < 2) continue;
    len = c->h[1] & 0x7F;
    hl = 2 + (len == 126 ? 2 : len == 127 ? 8 : 0) + (c->h[1] & 0x80 ? 4 : 0);
    if (c->hn < hl) continue;
    if (len == 126) len = (uint64_t)c->h[2] << 8 | c->h[3];
    else if (len == 127)
      for (len = 0, k = 0; k < 8; k++) len = len << 8 | c->h[2 + k];
    need = (c->h[0] & 0x0F) == 8 && len >= 2 ? hl + 2 : hl;
    if (c->hn < need) continue;
    if ((c->h[0] & 0x0F) == 8 && !c->seen_close) {
      c->seen_close = 1;
      c->code = (uint16_t)(len >= 2 ? c->h[hl] << 8 | c->h[hl + 1] : 1005);
    }
    c->skip = len - (need - hl);
    c->hn = 0;
  }
  return 0;
}

/* Reads up to cap bytes; -1 when c ended (end of stream, error). */
static int readable(aconn *c, uint32_t i, size_t cap) {
  size_t got = 0;
  while (got < cap) {
    ssize_t r = recv(c->fd, g_rbuf, RBUF, 0);
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 0;
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      fail_errno(c, errno);
      return -1;
    }
    if (r == 0) {
      finish(c, END_EOF, 0);
      return -1;
    }
    got += (size_t)r;
    if (take(c, i, g_rbuf, (size_t)r) < 0) return -1;
  }
  return 0;
}

/* Writes the mode's pattern while the socket takes it, at most 256 KiB
 * a turn, so that every connection gets its turn. */
static void pump(aconn *c, uint32_t i) {
  const pattern *pt = &g_pat[c->mode];
  size_t turn = 256 * 1024;
  while (turn) {
    size_t n = pt->len - c->pos;
    ssize_t w;
    if (c->mode == M_UNFINISHED) {
      uint64_t left = (uint64_t)(pt->loop + UNF_SENT) - c->sent;
      if (!left) {
        /* all of it but the last MiB: wait, reading what comes */
        c->st = ST_STALLED;
        set_ev(c, i, EPOLLIN | EPOLLRDHUP);
        return;
      }
      if (n > left) n = (size_t)left;
    }
    if (n > turn) n = turn;
    w = send(c->fd, pt->b + c->pos, n, MSG_NOSIGNAL);
    if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      /* the peer is gone: what it sent before may say why */
      int e = w < 0 ? errno : EPIPE;
      if (readable(c, i, (size_t)64 << 20) == 0) fail_errno(c, e);
      return;
    }
    c->pos += (uint32_t)w, c->sent += (uint64_t)w, turn -= (size_t)w;
    if (c->pos == pt->len) c->pos = (uint32_t)pt->loop;
  }
}

static void start(uint32_t i) {
  aconn *c = &g_c[i];
  struct sockaddr_in a;
  struct epoll_event e;
  int one = 1, span = g_src_last - g_src_first + 1;
  struct linger lg = {1, 0};
  c->mode = (uint8_t)(g_mode == M_MIX ? (int)(i % 5) : g_mode);
  c->t_start = now_ms();
  c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (c->fd < 0) die("socket");
  setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  /* The end is a reset: no TIME_WAIT left holding ports after a run. */
  setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  setsockopt(c->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(0x7F000000u | (uint32_t)(g_src_first + (int)(i % (uint32_t)span)));
  if (bind(c->fd, (struct sockaddr *)&a, sizeof a) < 0) die("bind");
  a.sin_port = htons((uint16_t)g_port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  g_started++, g_pending++;
  c->st = ST_CONNECTING;
  if (connect(c->fd, (struct sockaddr *)&a, sizeof a) < 0 && errno != EINPROGRESS) {
    finish(c, END_CONNFAIL, 0);
    return;
  }
  e.events = EPOLLOUT | EPOLLIN;
  e.data.u32 = i;
  if (epoll_ctl(g_ep, EPOLL_CTL_ADD, c->fd, &e) < 0) die("epoll_ctl add");
}

static void connected(aconn *c, uint32_t i) {
  int e = 0;
  socklen_t len = sizeof e;
  getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &e, &len);
  if (e) {
    finish(c, END_CONNFAIL, 0);
    return;
  }
  if (c->mode == M_SLOW_HS) {
    /* not waiting for an answer: it is not pending any more */
    c->st = ST_TRICKLE;
    g_pending--;
    set_ev(c, i, EPOLLIN | EPOLLRDHUP);
    return;
  }
  c->st = ST_HS;
  set_ev(c, i, EPOLLIN | EPOLLRDHUP);
  if (send(c->fd, g_req, g_req_len, MSG_NOSIGNAL) != (ssize_t)g_req_len)
    fail_errno(c, errno);
}

/* One byte of the request for every slow handshake in this round's slice. */
static void trickle(uint32_t round) {
  uint32_t slots = (uint32_t)(g_trickle_ms / TICK_MS), i;
  if (slots < 1) slots = 1;
  for (i = round % slots; i < (uint32_t)g_started; i += slots) {
    aconn *c = &g_c[i];
    if (c->st != ST_TRICKLE) continue;
    if (send(c->fd, g_req + c->pos, 1, MSG_NOSIGNAL) == 1) {
      c->sent++;
      if (++c->pos == g_req_len) c->st = ST_HS, g_pending++;
    } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
      if (readable(c, i, RBUF) == 0) fail_errno(c, errno);
    }
  }
}

static void poll_once(int timeout_ms) {
  struct epoll_event ev[1024];
  int n = epoll_wait(g_ep, ev, 1024, timeout_ms), k;
  if (n < 0 && errno != EINTR) die("epoll_wait");
  for (k = 0; k < n; k++) {
    uint32_t i = ev[k].data.u32, e = ev[k].events;
    aconn *c = &g_c[i];
    if (c->st == ST_DONE) continue;
    if (c->st == ST_CONNECTING) {
      if (e & (EPOLLOUT | EPOLLERR | EPOLLHUP)) connected(c, i);
      continue;
    }
    if (e & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
      /* the peer closed: read what is left, to find its close frame */
      if (readable(c, i, (size_t)64 << 20) == 0 && (e & (EPOLLHUP | EPOLLERR))) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) fail_errno(c, err);
        else if (e & EPOLLHUP) finish(c, END_EOF, 0);
      }
      continue;
    }
    if ((e & EPOLLIN) && readable(c, i, RBUF) < 0) continue;
    if ((e & EPOLLOUT) && c->st == ST_OPEN && floods(c)) pump(c, i);
  }
}

typedef struct outcome {
  int mode, end, code;
  unsigned long long n, ms;
} outcome;

static const char *end_name(int end, int code, char *buf, size_t cap) {
  switch (end) {
    case END_CLOSE: snprintf(buf, cap, "close_%d", code); break;
    case END_HTTP: snprintf(buf, cap, "http_%d", code); break;
    case END_RESET: return "reset";
    case END_EOF: return "eof";
    case END_CONNFAIL: return "connect_failed";
    case END_OPEN: return "open";
    case END_OPEN_HS: return "open_handshake";
    default: return "error";
  }
  return buf;
}

static int mode_attack(void) {
  uint64_t end_ns, drain_end;
  uint32_t round = 0, next_round;
  unsigned long long sent[NMODES] = {0};
  outcome out[256];
  int nout = 0, said = 0, i, k, conns[NMODES] = {0};
  struct rusage ru;
  if (!(g_c = calloc((size_t)g_n, sizeof *g_c))) die("calloc");
  if (!(g_rbuf = malloc(RBUF))) die("malloc");
  make_patterns();
  end_ns = g_t0_ns + (uint64_t)(g_secs * 1e9);
  next_round = now_ms();
  while (!g_done && bench_now_ns() < end_ns) {
    while (g_started < g_n && g_pending < g_batch) start((uint32_t)g_started);
    if (!said && g_started == g_n && g_pending == 0) {
      int open = 0;
      for (i = 0; i < g_n; i++)
        open += g_c[i].st != ST_DONE && g_c[i].st != ST_CONNECTING;
      printf("connected n=%d open=%d secs=%.3f\n", g_n, open,
             (double)(bench_now_ns() - g_t0_ns) / 1e9);
      fflush(stdout);
      said = 1;
    }
    poll_once(TICK_MS);
    while (now_ms() >= next_round) trickle(round++), next_round += TICK_MS;
  }
  /* The end: what is queued for each connection still going is read (5 s
   * at most in all, 8 MiB each), for a close frame or the end. */
  drain_end = bench_now_ns() + 5000000000u;
  for (i = 0; i < g_n; i++) {
    aconn *c = &g_c[i];
    if (c->st == ST_DONE || c->st == ST_CONNECTING) continue;
    if (bench_now_ns() < drain_end) readable(c, (uint32_t)i, (size_t)8 << 20);
  }
  getrusage(RUSAGE_SELF, &ru);
  for (i = 0; i < g_started; i++) {
    aconn *c = &g_c[i];
    if (c->st != ST_DONE)
      finish(c, c->st == ST_OPEN || c->st == ST_STALLED ? END_OPEN : END_OPEN_HS, 0);
    for (k = 0; k < nout; k++)
      if (out[k].mode == c->mode && out[k].end == c->end && out[k].code == c->code) break;
    if (k == nout) {
      if (nout == 256) continue;
      out[nout].mode = c->mode, out[nout].end = c->end, out[nout].code = c->code;
      out[nout].n = out[nout].ms = 0;
      nout++;
    }
    out[k].n++;
    out[k].ms += c->t_end - c->t_start;
    sent[c->mode] += c->sent;
    conns[c->mode]++;
  }
  for (i = 0; i < NMODES; i++)
    if (conns[i])
      printf("REPORT mode=%s conns=%d sent_mb=%.1f\n", g_mode_name[i], conns[i],
             (double)sent[i] / 1e6);
  for (k = 0; k < nout; k++) {
    char b[32];
    printf("END mode=%s what=%s n=%llu mean_s=%.1f\n", g_mode_name[out[k].mode],
           end_name(out[k].end, out[k].code, b, sizeof b), out[k].n,
           (double)out[k].ms / 1000.0 / (double)out[k].n);
  }
  /* The server took them too slowly to start them all in time. */
  if (g_started < g_n)
    printf("END mode=%s what=not_started n=%d mean_s=0.0\n",
           g_mode_name[g_mode], g_n - g_started);
  printf("DONE conns=%d cpu_s=%.2f\n", g_started,
         (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
         (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6);
  fflush(stdout);
  return 0;
}

/* ---- honest: echo clients that measure ---------------------------------- */

enum { HS_CONNECTING, HS_HS, HS_OPEN, HS_DEAD };

typedef struct hconn {
  int fd, st, waiting;
  uint32_t seq, echoes;
  uint64_t t_sent, next;  /* ns */
  size_t ilen, olen;
  unsigned char in[4096], out[512];
} hconn;

static hconn *g_h;
static int g_size = 32, g_interval_ms = 50;
static int g_h_open, g_h_closed, g_h_errors;
static unsigned long long g_hist[NHIST], g_msgs, g_maxus;

static void h_lost(hconn *c, int i, const char *why) {
  if (c->st == HS_OPEN) g_h_open--;
  g_h_closed++;
  if (g_h_closed <= 10) fprintf(stderr, "attackgen honest: connection %d closed: %s\n", i, why);
  close(c->fd);
  c->fd = -1, c->st = HS_DEAD;
}

static void h_key(int i, char key[25]) {
  unsigned char nonce[16];
  uint32_t s = (uint32_t)(i + 1) * 2654435761u ^ (uint32_t)getpid();
  int k;
  for (k = 0; k < 16; k++) nonce[k] = (unsigned char)xs32(&s);
  bench_b64(nonce, 16, key);
}

/* Sends what waits in c->out; the rest waits for EPOLLOUT. */
static void h_flush(hconn *c, int i) {
  struct epoll_event e;
  while (c->olen) {
    ssize_t w = send(c->fd, c->out, c->olen, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    if (w <= 0) {
      h_lost(c, i, w < 0 ? strerror(errno) : "send returned 0");
      return;
    }
    memmove(c->out, c->out + w, c->olen - (size_t)w);
    c->olen -= (size_t)w;
  }
  e.events = EPOLLIN | (c->olen ? EPOLLOUT : 0u);
  e.data.u32 = (uint32_t)i;
  epoll_ctl(g_ep, EPOLL_CTL_MOD, c->fd, &e);
}

static void h_frame(hconn *c, int i, int op, const unsigned char *p, size_t n) {
  unsigned char f[14 + 125];
  size_t hl;
  if (c->olen + sizeof f > sizeof c->out) {
    g_h_errors++;
    return;
  }
  hl = put_head(f, 0x80 | op, n);
  mask_into(f + hl, p, n);
  memcpy(c->out + c->olen, f, hl + n);
  c->olen += hl + n;
  h_flush(c, i);
}

static void h_payload(uint32_t seq, int i, unsigned char *p) {
  int k;
  for (k = 0; k < g_size; k++) p[k] = (unsigned char)('a' + (seq * 7u + (uint32_t)i + (uint32_t)k) % 26u);
}

static void h_send(hconn *c, int i, uint64_t now) {
  unsigned char p[125];
  c->seq++;
  h_payload(c->seq, i, p);
  c->t_sent = now;
  c->waiting = 1;
  h_frame(c, i, 1, p, (size_t)g_size);
}

static void h_record(uint64_t us) {
  g_hist[hbucket(us)]++;
  g_msgs++;
  if (us > g_maxus) g_maxus = us;
}

/* Whole frames of c->in; -1 when c was closed. */
static int h_frames(hconn *c, int i) {
  size_t pos = 0;
  if (c->st == HS_HS) {
    unsigned char *e = memmem(c->in, c->ilen, "\r\n\r\n", 4);
    char key[25], acc[29];
    const char *v;
    size_t vl;
    if (!e) return c->ilen == sizeof c->in ? (h_lost(c, i, "answer too long"), -1) : 0;
    pos = (size_t)(e - c->in) + 4;
    h_key(i, key);
    bench_accept(key, 24, acc);
    v = bench_header((const char *)c->in, pos, "Sec-WebSocket-Accept", &vl);
    if (c->ilen < 12 || memcmp(c->in, "HTTP/1.1 101", 12) != 0 || !v || vl != 28 ||
        memcmp(v, acc, 28) != 0) {
      h_lost(c, i, "handshake refused");
      return -1;
    }
    c->st = HS_OPEN;
    g_h_open++;
  }
  while (c->ilen - pos >= 2) {
    unsigned char *h = c->in + pos;
    size_t avail = c->ilen - pos, hl = 2, len = h[1] & 0x7F;
    int op = h[0] & 0x0F;
    if (len == 126) {
      if (avail < 4) break;
      len = (size_t)h[2] << 8 | h[3], hl = 4;
    }
    if (len > 1024 || (h[1] & 0x80) || (h[0] & 0x70)) {
      h_lost(c, i, "unexpected frame from the server");
      g_h_errors++;
      return -1;
    }
    if (avail < hl + len) break;
    pos += hl + len;
    h += hl;
    if (op == 8) {
      char why[64];
      snprintf(why, sizeof why, "close frame %d", len >= 2 ? h[0] << 8 | h[1] : 1005);
      h_lost(c, i, why);
      return -1;
    } else if (op == 9) {
      h_frame(c, i, 10, h, len);
      if (c->st == HS_DEAD) return -1;
    } else if (op == 1 && c->waiting) {
      unsigned char want[125];
      uint64_t now = bench_now_ns();
      h_payload(c->seq, i, want);
      if (len != (size_t)g_size || memcmp(h, want, len) != 0) {
        g_h_errors++;
        fprintf(stderr, "attackgen honest: connection %d: wrong echo\n", i);
      }
      h_record((now - c->t_sent) / 1000);
      c->waiting = 0;
      c->echoes++;
      c->next = c->t_sent + (uint64_t)g_interval_ms * 1000000u;
    } else if (op != 10) {
      g_h_errors++;
    }
  }
  memmove(c->in, c->in + pos, c->ilen - pos);
  c->ilen -= pos;
  return 0;
}

static void h_readable(hconn *c, int i) {
  for (;;) {
    ssize_t r = recv(c->fd, c->in + c->ilen, sizeof c->in - c->ilen, 0);
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      h_lost(c, i, r < 0 ? strerror(errno) : "end of stream");
      return;
    }
    c->ilen += (size_t)r;
    if (h_frames(c, i) < 0) return;
  }
}

static int mode_honest(void) {
  struct epoll_event ev[256];
  uint64_t t0 = bench_now_ns(), end = 0, connect_end = t0 + 30000000000u;
  int i, said = 0, waiting = 0, noecho = 0;
  if (!(g_h = calloc((size_t)g_n, sizeof *g_h))) die("calloc");
  make_patterns();
  for (i = 0; i < g_n; i++) {
    hconn *c = &g_h[i];
    struct sockaddr_in a;
    struct epoll_event e;
    int one = 1;
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) die("socket");
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)g_port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(c->fd, (struct sockaddr *)&a, sizeof a) < 0 && errno != EINPROGRESS) {
      h_lost(c, i, strerror(errno));
      continue;
    }
    e.events = EPOLLOUT | EPOLLIN;
    e.data.u32 = (uint32_t)i;
    if (epoll_ctl(g_ep, EPOLL_CTL_ADD, c->fd, &e) < 0) die("epoll_ctl add");
  }
  while (!g_done) {
    uint64_t now = bench_now_ns(), wake = now + 10000000u;
    int n, k;
    if (!said && (g_h_open + g_h_closed == g_n || now > connect_end)) {
      printf("connected n=%d secs=%.3f\n", g_h_open, (double)(now - t0) / 1e9);
      fflush(stdout);
      said = 1;
      end = now + (uint64_t)(g_secs * 1e9);
      for (i = 0; i < g_n; i++) g_h[i].next = now + (uint64_t)i * 1000000u * (uint64_t)g_interval_ms / (uint64_t)g_n;
    }
    if (said && now >= end) break;
    if (said)
      for (i = 0; i < g_n; i++) {
        hconn *c = &g_h[i];
        if (c->st != HS_OPEN || c->waiting) continue;
        if (c->next <= now) h_send(c, i, now);
        else if (c->next < wake) wake = c->next;
      }
    n = epoll_wait(g_ep, ev, 256, (int)((wake - now) / 1000000u) + 1);
    if (n < 0 && errno != EINTR) die("epoll_wait");
    for (k = 0; k < n; k++) {
      hconn *c = &g_h[ev[k].data.u32];
      int ci = (int)ev[k].data.u32;
      if (c->st == HS_DEAD) continue;
      if (c->st == HS_CONNECTING) {
        int e = 0;
        socklen_t len = sizeof e;
        char key[25];
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &e, &len);
        if (e) {
          h_lost(c, ci, strerror(e));
          continue;
        }
        h_key(ci, key);
        c->olen = (size_t)snprintf((char *)c->out, sizeof c->out,
            "GET / HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n", g_port, key);
        c->st = HS_HS;
        h_flush(c, ci);
        continue;
      }
      if (ev[k].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) h_readable(c, ci);
      if (c->st != HS_DEAD && (ev[k].events & EPOLLOUT)) h_flush(c, ci);
    }
  }
  /* A message still waiting counts with its age: a lower bound. */
  for (i = 0; i < g_n; i++) {
    hconn *c = &g_h[i];
    if (c->st == HS_OPEN && c->waiting) {
      waiting++;
      h_record((bench_now_ns() - c->t_sent) / 1000);
    }
    if (c->st == HS_OPEN && !c->echoes) noecho++;
  }
  printf("HONEST conns=%d open=%d closed=%d msgs=%llu p50_us=%llu p99_us=%llu "
         "max_us=%llu waiting=%d errors=%d noecho=%d\n",
         g_n, g_h_open, g_h_closed, g_msgs,
         (unsigned long long)hquant(g_hist, g_msgs, 0.5),
         (unsigned long long)hquant(g_hist, g_msgs, 0.99), g_maxus, waiting,
         g_h_errors, noecho);
  fflush(stdout);
  return g_h_open == g_n && !g_h_closed && !g_h_errors && !noecho ? 0 : 1;
}

/* ---- stats: one plain HTTP GET ------------------------------------------- */

static int mode_stats(void) {
  struct sockaddr_in a;
  struct timeval tv = {5, 0};
  char req[128], buf[65536], *body;
  size_t n = 0;
  int fd, status = 0;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_port = htons((uint16_t)g_port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if ((fd = socket(AF_INET, SOCK_STREAM, 0)) < 0) die("socket");
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
    printf("n/a (connect: %s)\n", strerror(errno));
    return 1;
  }
  snprintf(req, sizeof req, "GET /stats HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
           "Connection: close\r\n\r\n", g_port);
  if (send(fd, req, strlen(req), MSG_NOSIGNAL) != (ssize_t)strlen(req)) {
    printf("n/a (send: %s)\n", strerror(errno));
    return 1;
  }
  /* To the end of the stream, or the body's Content-Length. */
  for (;;) {
    ssize_t r = recv(fd, buf + n, sizeof buf - 1 - n, 0);
    char *e;
    const char *cl;
    size_t vl;
    if (r <= 0) break;
    n += (size_t)r;
    buf[n] = 0;
    if ((e = strstr(buf, "\r\n\r\n")) &&
        (cl = bench_header(buf, (size_t)(e - buf), "Content-Length", &vl)) &&
        n >= (size_t)(e + 4 - buf) + (size_t)atol(cl))
      break;
    if (n == sizeof buf - 1) break;
  }
  close(fd);
  buf[n] = 0;
  if (n >= 12 && memcmp(buf, "HTTP/1.", 7) == 0) status = atoi(buf + 9);
  body = strstr(buf, "\r\n\r\n");
  if (status != 200 || !body) {
    printf("n/a (HTTP %d)\n", status);
    return 1;
  }
  for (body += 4; *body; body++)
    if (*body != '\r' && *body != '\n') putchar(*body);
  putchar('\n');
  return 0;
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
          "usage: attackgen attack -p PORT -m MODE -n N -d SECS [--trickle-ms T]\n"
          "                        [--batch B] [--src-first K] [--src-last L]\n"
          "         MODE: slow-reader unfinished ping-flood slow-handshake\n"
          "               fragment-flood mix idle\n"
          "       attackgen honest -p PORT -n N -d SECS [--interval-ms I] [-s SIZE]\n"
          "       attackgen stats -p PORT\n"
          "       attackgen freeport\n");
  exit(2);
}

int main(int argc, char **argv) {
  struct sigaction sa;
  struct rlimit rl;
  int i, attack, honest, stats;
  if (argc < 2) usage();
  if (strcmp(argv[1], "freeport") == 0) return mode_freeport();
  attack = strcmp(argv[1], "attack") == 0;
  honest = strcmp(argv[1], "honest") == 0;
  stats = strcmp(argv[1], "stats") == 0;
  if (!attack && !honest && !stats) usage();
  for (i = 2; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!v) usage();
    i++;
    if (!strcmp(a, "-p")) g_port = atoi(v);
    else if (!strcmp(a, "-n")) g_n = atoi(v);
    else if (!strcmp(a, "-d")) g_secs = atof(v);
    else if (!strcmp(a, "-s")) g_size = atoi(v);
    else if (!strcmp(a, "--interval-ms")) g_interval_ms = atoi(v);
    else if (!strcmp(a, "--trickle-ms")) g_trickle_ms = atoi(v);
    else if (!strcmp(a, "--batch")) g_batch = atoi(v);
    else if (!strcmp(a, "--src-first")) g_src_first = atoi(v);
    else if (!strcmp(a, "--src-last")) g_src_last = atoi(v);
    else if (!strcmp(a, "-m")) {
      for (g_mode = 0; g_mode <= M_MIX; g_mode++)
        if (!strcmp(v, g_mode_name[g_mode])) break;
      if (g_mode > M_MIX) usage();
    } else usage();
  }
  if (g_port <= 0 || g_port > 65535) usage();
  signal(SIGALRM, on_alarm);
  signal(SIGPIPE, SIG_IGN);
  if (stats) {
    alarm(20);
    return mode_stats();
  }
  if (g_n < 1 || g_secs <= 0 || g_batch < 1 || (attack && g_mode < 0) ||
      g_size < 1 || g_size > 125 || g_interval_ms < 0 || g_trickle_ms < TICK_MS ||
      g_src_first < 1 || g_src_last > 254 || g_src_last < g_src_first)
    usage();
  alarm((unsigned)g_secs + 60);
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_done;
  sigaction(SIGUSR1, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  /* The soft descriptor limit up to the hard one, as holdgen does; the
   * hard one is the machine's, and said by run.sh. */
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  g_t0_ns = bench_now_ns();
  g_ep = epoll_create1(EPOLL_CLOEXEC);
  if (g_ep < 0) die("epoll_create1");
  return attack ? mode_attack() : mode_honest();
}
