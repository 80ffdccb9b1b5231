/*
 * loadgen.c - the WebSocket load generator of the ws benchmarks.
 *
 * One thread, epoll, non-blocking sockets, libc only. It speaks RFC 6455 as
 * a client by itself (it does not use ws), checks every handshake's
 * Sec-WebSocket-Accept and every echoed or broadcast payload byte for byte,
 * and masks every frame it sends, as a browser would.
 *
 *   loadgen echo      -p PORT [-c CONNS] [-k INFLIGHT] [-s SIZE] [-t|-u|-b] [-d SECS]
 *   loadgen idle      -p PORT [-n CONNS] --pid SERVER_PID
 *   loadgen handshake -p PORT [-c CONCURRENT] [-d SECS]
 *   loadgen broadcast -p PORT [-n SUBSCRIBERS] [-s SIZE] [-d SECS]
 *   loadgen freeport             prints a free TCP port on 127.0.0.1
 *   loadgen wait -p PORT         waits (10 s at most) until PORT accepts
 * Common: -H HOST (127.0.0.1), -w WARMUP_SECS, --pid PID (the server, for
 * its CPU time and memory), --timeout SECS (hard bound; default D + 60).
 * -t sends text of printable ASCII, -u text of mostly 2- to 4-byte UTF-8
 * characters (SIZE a multiple of 4), -b binary (the default).
 * --deflate (echo and broadcast; a build with -DLOADGEN_ZLIB, -lz) offers
 * permessage-deflate as a browser does ("permessage-deflate;
 * client_max_window_bits"), requires it agreed, compresses every message
 * it sends with context takeover (zlib's default level, the window the
 * server allows), inflates what comes back, and sends text made of JSON
 * chat messages (compressible, as real traffic is). The RESULT line then
 * adds wire_in_per_msg (echo) or wire_in_per_delivery (broadcast): bytes
 * received per message, headers included. In broadcast only the
 * publisher compresses (subscribers only inflate).
 *
 * Output: human-readable lines on stderr and one machine-readable line on
 * stdout, "RESULT mode=... key=value ...". The server's CPU per second of the
 * window: server_cpu (user + kernel), server_usr and server_sys (the two
 * parts; echo also gives them per message: usr_ns_per_msg, sys_ns_per_msg). Exit status 0 on success, 1 on
 * any verification or protocol error (a wrong byte, a missing reply, a
 * refused connection), 2 on bad usage, 3 on the hard timeout. It never
 * fails because of a number.
 */
#define _GNU_SOURCE
#include "bench_common.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
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
#ifdef LOADGEN_ZLIB
#include <zlib.h>
#endif

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

enum { ST_FREE, ST_HS, ST_OPEN, ST_CLOSING };
enum { M_ECHO, M_IDLE, M_HANDSHAKE, M_BROADCAST };

typedef struct conn {
  int fd, st, idx;
  unsigned ev;
  unsigned char *rb;
  size_t rlen, rpos, rcap;
  unsigned char *wb;
  size_t wlen, woff, wcap;
  char accept[29];
  uint64_t sent, recvd;   /* echo: messages sent / echoes verified */
  uint64_t *ts;           /* echo: send times, ring of `inflight` */
  unsigned char *mb;      /* fragmented message being assembled */
  size_t mlen, mcap;
  int mop, frag;
  uint64_t t0;            /* handshake: cycle start */
  uint32_t rng;
  int zon, zdon, mz;      /* --deflate: agreed; compressor made; the message
                             is compressed */
#ifdef LOADGEN_ZLIB
  z_stream zd, zi;        /* our compressor, our decompressor */
#endif
} conn;

/* Settings. */
static int g_mode;
static const char *g_host = "127.0.0.1";
static int g_port;
static int g_conns = 16, g_inflight = 1, g_text;  /* 1: ASCII, 2: multi-byte UTF-8 */
static size_t g_size = 32;
static double g_secs = 2, g_warm = -1;
static int g_n = 1000;
static int g_pid;
static int g_deflate;           /* --deflate */
static uint64_t g_wire;         /* --deflate: bytes received in the window */
static unsigned char *g_zbuf;   /* scratch for (de)compression */
static size_t g_zcap;
static int g_src_spread = 1;   /* source addresses 127.0.0.2.. */

/* State. */
static int g_ep;
static conn *g_c;
static int g_nc;
static unsigned char *g_pat;
static size_t g_patlen;
static int g_errors;
static int g_running;          /* echo: keep sending */
static uint64_t g_ws_start, g_ws_end;  /* measurement window */
static uint64_t g_count, g_bytes;
static uint64_t *g_lat;
static size_t g_nlat, g_latcap;
static int g_open, g_opening;
static unsigned g_src_next;

/* Broadcast. */
static uint64_t g_bseq, g_bt0, g_bsum;
static int g_bgot, g_bwait;

static void err(const char *fmt, ...) {
  va_list ap;
  if (++g_errors > 10) return;
  va_start(ap, fmt);
  fprintf(stderr, "loadgen: ");
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\n");
  va_end(ap);
}

static void die(const char *what) {
  fprintf(stderr, "loadgen: %s: %s\n", what, strerror(errno));
  exit(1);
}

static void on_alarm(int sig) {
  static const char m[] = "loadgen: hard timeout reached\n";
  (void)sig;
  if (write(2, m, sizeof m - 1) < 0) _exit(3);
  _exit(3);
}

static uint32_t xs32(uint32_t *s) {
  uint32_t x = *s;
  x ^= x << 13, x ^= x >> 17, x ^= x << 5;
  return *s = x ? x : 0x9E3779B9u;
}

static void lat_add(uint64_t ns) {
  if (g_nlat == g_latcap) {
    g_latcap = g_latcap ? g_latcap * 2 : 65536;
    if (g_latcap > ((size_t)1 << 26)) { g_latcap = g_nlat; return; }
    g_lat = realloc(g_lat, g_latcap * sizeof *g_lat);
    if (!g_lat) die("realloc");
  }
  g_lat[g_nlat++] = ns;
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

static double pct(double p) {
  size_t i;
  if (!g_nlat) return 0;
  i = (size_t)(p * (double)(g_nlat - 1) + 0.5);
  return (double)g_lat[i];
}

/* ---- /proc readers (the per-process ones are in bench_common.h) ------- */

static double g_lg0, g_lg1;
static double g_usr0, g_sys0, g_usr1, g_sys1;   /* the server's, at the window's ends */

/* The server's user-space and kernel CPU seconds per second of window. */
static double usr_rate(double el) { return (g_usr1 - g_usr0) / el; }
static double sys_rate(double el) { return (g_sys1 - g_sys0) / el; }

static long meminfo_kb(const char *key) {
  char line[256];
  size_t kl = strlen(key);
  long v = -1;
  FILE *f = fopen("/proc/meminfo", "r");
  if (!f) return -1;
  while (fgets(line, sizeof line, f))
    if (strncmp(line, key, kl) == 0 && line[kl] == ':') {
      v = strtol(line + kl + 1, NULL, 10);
      break;
    }
  fclose(f);
  return v;
}

/* TCP "inuse" sockets and "mem" pages from /proc/net/sockstat. */
static void sockstat(long *inuse, long *mem) {
  char line[256];
  FILE *f = fopen("/proc/net/sockstat", "r");
  *inuse = *mem = -1;
  if (!f) return;
  while (fgets(line, sizeof line, f)) {
    char *p;
    if (strncmp(line, "TCP:", 4) != 0) continue;
    if ((p = strstr(line, "inuse "))) *inuse = strtol(p + 6, NULL, 10);
    if ((p = strstr(line, "mem "))) *mem = strtol(p + 4, NULL, 10);
  }
  fclose(f);
}

/* ---- sockets ----------------------------------------------------------- */

static void set_ev(conn *c, unsigned ev) {
  struct epoll_event e;
  if (c->ev == ev) return;
  e.events = ev;
  e.data.ptr = c;
  if (epoll_ctl(g_ep, EPOLL_CTL_MOD, c->fd, &e) < 0) die("epoll_ctl");
  c->ev = ev;
}

static void wb_reserve(conn *c, size_t more) {
  if (c->woff && c->woff == c->wlen) c->woff = c->wlen = 0;
  if (c->wlen + more <= c->wcap) return;
  if (c->woff) {
    memmove(c->wb, c->wb + c->woff, c->wlen - c->woff);
    c->wlen -= c->woff, c->woff = 0;
    if (c->wlen + more <= c->wcap) return;
  }
  c->wcap = (c->wlen + more) * 2;
  if (!(c->wb = realloc(c->wb, c->wcap))) die("realloc");
}

static void conn_close(conn *c) {
  if (c->st == ST_FREE) return;
#ifdef LOADGEN_ZLIB
  if (c->zon) {
    if (c->zdon) deflateEnd(&c->zd);
    inflateEnd(&c->zi);
    c->zon = c->zdon = 0;
  }
#endif
  if (c->st == ST_OPEN) g_open--;
  else if (c->st == ST_HS) g_opening--;
  close(c->fd);  /* also leaves the epoll set */
  c->fd = -1;
  c->st = ST_FREE;
  c->rlen = c->rpos = c->wlen = c->woff = 0;
  c->mlen = 0, c->frag = 0;
  c->ev = 0;
}

static void conn_fail(conn *c, const char *why) {
  err("conn %d: %s", c->idx, why);
  conn_close(c);
}

/* 0 ok, -1 failed (c closed). */
static int conn_flush(conn *c) {
  while (c->woff < c->wlen) {
    ssize_t n = send(c->fd, c->wb + c->woff, c->wlen - c->woff, MSG_NOSIGNAL);
    if (n > 0) { c->woff += (size_t)n; continue; }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      set_ev(c, EPOLLIN | EPOLLOUT);
      return 0;
    }
    conn_fail(c, n < 0 ? strerror(errno) : "send returned 0");
    return -1;
  }
  c->woff = c->wlen = 0;
  set_ev(c, EPOLLIN);
  return 0;
}

static void conn_start(conn *c) {
  struct sockaddr_in a;
  struct epoll_event e;
  unsigned char nonce[16];
  char key[25], req[512];
  int one = 1, n, i;
  c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (c->fd < 0) die("socket");
  setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (g_src_spread > 1) {
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(0x7F000002u + (g_src_next++ % (unsigned)g_src_spread));
    setsockopt(c->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    if (bind(c->fd, (struct sockaddr *)&a, sizeof a) < 0) die("bind");
  }
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_port = htons((uint16_t)g_port);
  if (inet_pton(AF_INET, g_host, &a.sin_addr) != 1) {
    fprintf(stderr, "loadgen: bad host %s\n", g_host);
    exit(2);
  }
  if (connect(c->fd, (struct sockaddr *)&a, sizeof a) < 0 && errno != EINPROGRESS)
    die("connect");
  for (i = 0; i < 16; i++) nonce[i] = (unsigned char)xs32(&c->rng);
  bench_b64(nonce, 16, key);
  bench_accept(key, 24, c->accept);
  n = snprintf(req, sizeof req,
               "GET / HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
               "Sec-WebSocket-Version: 13\r\n%s\r\n",
               g_host, g_port, key,
               g_deflate ? "Sec-WebSocket-Extensions: permessage-deflate; "
                           "client_max_window_bits\r\n" : "");
  wb_reserve(c, (size_t)n);
  memcpy(c->wb + c->wlen, req, (size_t)n);
  c->wlen += (size_t)n;
  c->st = ST_HS;
  c->rlen = c->rpos = 0;
  g_opening++;
  e.events = EPOLLIN | EPOLLOUT;
  e.data.ptr = c;
  c->ev = e.events;
  if (epoll_ctl(g_ep, EPOLL_CTL_ADD, c->fd, &e) < 0) die("epoll_ctl add");
}

static void zbuf_reserve(size_t n) {
  if (n <= g_zcap) return;
  g_zcap = n * 2;
  if (!(g_zbuf = realloc(g_zbuf, g_zcap))) die("realloc");
}

static void send_frame_b0(conn *c, int b0, const unsigned char *src, size_t len);

/* Appends one masked frame; payload from src (NULL: zeros). With deflate
 * agreed, a data frame's payload is compressed first (RSV1). */
static void send_frame(conn *c, int op, const unsigned char *src, size_t len) {
#ifdef LOADGEN_ZLIB
  if (c->zdon && (op == 1 || op == 2) && src) {
    size_t n = 0;
    zbuf_reserve(len + len / 8 + 64);
    c->zd.next_in = (Bytef *)(uintptr_t)src;
    c->zd.avail_in = (uInt)len;
    for (;;) {
      c->zd.next_out = g_zbuf + n;
      c->zd.avail_out = (uInt)(g_zcap - n);
      deflate(&c->zd, Z_SYNC_FLUSH);
      n = g_zcap - c->zd.avail_out;
      if (c->zd.avail_out > 0) break;
      zbuf_reserve(g_zcap + 1);
    }
    if (n >= 4) n -= 4; /* the 00 00 ff ff tail */
    send_frame_b0(c, 0x80 | 0x40 | op, g_zbuf, n);
    return;
  }
#endif
  send_frame_b0(c, 0x80 | op, src, len);
}

static void send_frame_b0(conn *c, int b0, const unsigned char *src, size_t len) {
  unsigned char *h;
  uint32_t k = xs32(&c->rng);
  unsigned char key[4];
  size_t hl = 2, i;
  uint64_t k8;
  wb_reserve(c, len + 14);
  h = c->wb + c->wlen;
  h[0] = (unsigned char)b0;
  if (len < 126) h[1] = (unsigned char)(0x80 | len);
  else if (len < 65536) {
    h[1] = 0x80 | 126, h[2] = (unsigned char)(len >> 8), h[3] = (unsigned char)len;
    hl = 4;
  } else {
    h[1] = 0x80 | 127;
    for (i = 0; i < 8; i++) h[2 + i] = (unsigned char)((uint64_t)len >> (56 - 8 * i));
    hl = 10;
  }
  memcpy(key, &k, 4);
  memcpy(h + hl, key, 4);
  hl += 4;
  h += hl;
  if (src) memcpy(h, src, len); else memset(h, 0, len);
  memcpy(&k8, key, 4);
  memcpy((unsigned char *)&k8 + 4, key, 4);
  for (i = 0; i + 8 <= len; i += 8) {
    uint64_t w;
    memcpy(&w, h + i, 8);
    w ^= k8;
    memcpy(h + i, &w, 8);
  }
  for (; i < len; i++) h[i] ^= key[i & 3];
  c->wlen += hl + len;
}

static size_t pat_off(uint64_t seq, int idx) {
  /* -u: on a 4-byte boundary, where every character of the pattern starts */
  /* --deflate: anywhere in 1 MiB of chat, so that the messages differ as
   * real ones do (a 4 KiB pattern would compress to a few bytes) */
  return (size_t)((seq * 2654435761u + (uint64_t)idx * 40503u) &
                  (g_deflate ? 0xFFFFFu : g_text == 2 ? 4092u : 4095u));
}

static void echo_send_next(conn *c) {
  c->ts[c->sent % (uint64_t)g_inflight] = bench_now_ns();
  send_frame(c, g_text ? 1 : 2, g_pat + pat_off(c->sent, c->idx), g_size);
  c->sent++;
}

static void bcast_publish(void) {
  conn *p = &g_c[g_n];
  unsigned char *buf = malloc(g_size);
  if (!buf) die("malloc");
  memcpy(buf, g_pat + pat_off(g_bseq, 0), g_size);
  memcpy(buf, &g_bseq, 8);
  g_bgot = 0, g_bsum = 0, g_bwait = 1;
  g_bt0 = bench_now_ns();
  send_frame(p, 2, buf, g_size);
  free(buf);
  conn_flush(p);
}

/* A whole message arrived. 0 ok, -1 c failed. */
static int on_message(conn *c, int op, const unsigned char *d, size_t len) {
  uint64_t now;
  if (g_mode == M_ECHO || g_mode == M_IDLE) {
    size_t off;
    if (c->recvd >= c->sent) { conn_fail(c, "echo of a message never sent"); return -1; }
    off = pat_off(c->recvd, c->idx);
    if (op != (g_text ? 1 : 2) || len != g_size || memcmp(d, g_pat + off, len) != 0) {
      char why[128];
      snprintf(why, sizeof why, "echo %llu differs (op %d, %zu bytes)",
               (unsigned long long)c->recvd, op, len);
      conn_fail(c, why);
      return -1;
    }
    now = bench_now_ns();
    if (now >= g_ws_start && now < g_ws_end && g_mode == M_ECHO) {
      g_count++;
      g_bytes += len;
      lat_add(now - c->ts[c->recvd % (uint64_t)g_inflight]);
    }
    c->recvd++;
    if (g_running && g_mode == M_ECHO) echo_send_next(c);
    return 0;
  }
  if (g_mode == M_BROADCAST) {
    uint64_t seq;
    if (len != g_size || op != 2) { conn_fail(c, "broadcast: wrong size or opcode"); return -1; }
    memcpy(&seq, d, 8);
    if (memcmp(d + 8, g_pat + pat_off(seq, 0) + 8, len - 8) != 0) {
      conn_fail(c, "broadcast payload differs");
      return -1;
    }
    if (c->idx == g_n) return 0;   /* the publisher's own copy */
    if (!g_bwait || seq != g_bseq) { conn_fail(c, "broadcast out of order"); return -1; }
    now = bench_now_ns();
    g_bgot++;
    g_bsum += now - g_bt0;
    if (g_bgot == g_n) {
      g_bwait = 0;
      if (g_bt0 >= g_ws_start && g_bt0 < g_ws_end) {
        g_count++;
        g_bytes += g_bsum;   /* summed per-recipient latency */
        lat_add(now - g_bt0);
      }
      g_bseq++;
      if (g_running) bcast_publish();
    }
    return 0;
  }
  conn_fail(c, "unexpected message");
  return -1;
}

/* A whole message, inflated first when it is compressed. */
static int deliver(conn *c, int op, const unsigned char *d, size_t len) {
#ifdef LOADGEN_ZLIB
  if (c->mz) {
    static const unsigned char tail[4] = {0, 0, 0xff, 0xff};
    size_t n = 0;
    int pass, rc = Z_OK;
    if (len == 0) return on_message(c, op, d, 0);
    zbuf_reserve(g_size + 65536);
    for (pass = 0; pass < 2 && rc != Z_DATA_ERROR; pass++) {
      c->zi.next_in = (Bytef *)(uintptr_t)(pass ? tail : d);
      c->zi.avail_in = pass ? 4 : (uInt)len;
      do {
        if (g_zcap - n < 4096) zbuf_reserve(g_zcap + 4096);
        c->zi.next_out = g_zbuf + n;
        c->zi.avail_out = (uInt)(g_zcap - n);
        rc = inflate(&c->zi, Z_SYNC_FLUSH);
        n = g_zcap - c->zi.avail_out;
      } while (rc == Z_OK && c->zi.avail_out == 0);
    }
    if (rc != Z_OK && rc != Z_BUF_ERROR) { conn_fail(c, "inflate failed"); return -1; }
    return on_message(c, op, g_zbuf, n);
  }
#endif
  return on_message(c, op, d, len);
}

/* Processes the bytes in c->rb. 0 ok, -1 c failed/closed. */
static int process(conn *c) {
  if (c->st == ST_HS) {
    unsigned char *e = memmem(c->rb, c->rlen, "\r\n\r\n", 4);
    const char *v;
    size_t vl, hl;
    if (!e) {
      if (c->rlen > 8192) { conn_fail(c, "handshake response too long"); return -1; }
      return 0;
    }
    hl = (size_t)(e - c->rb) + 4;
    if (c->rlen < 12 || memcmp(c->rb, "HTTP/1.1 101", 12) != 0) {
      conn_fail(c, "handshake: not 101");
      return -1;
    }
    v = bench_header((const char *)c->rb, hl, "Sec-WebSocket-Accept", &vl);
    if (!v || vl != 28 || memcmp(v, c->accept, 28) != 0) {
      conn_fail(c, "handshake: wrong Sec-WebSocket-Accept");
      return -1;
    }
    if (g_deflate) {
#ifdef LOADGEN_ZLIB
      const char *x = bench_header((const char *)c->rb, hl, "Sec-WebSocket-Extensions", &vl);
      const char *b;
      int bits = 15;
      if (!x || vl < 18 || memcmp(x, "permessage-deflate", 18) != 0) {
        conn_fail(c, "handshake: permessage-deflate not agreed");
        return -1;
      }
      b = memmem(x, vl, "client_max_window_bits=", 23);
      if (b) bits = atoi(b + 23);
      if (bits < 9) bits = 9; /* zlib has no 8-bit raw window: 9 is the same stream format */
      /* Broadcast subscribers never send a message: no compressor. */
      c->zdon = g_mode == M_ECHO || c->idx == g_n;
      if ((c->zdon && deflateInit2(&c->zd, Z_DEFAULT_COMPRESSION, Z_DEFLATED,
                                   -bits, 8, Z_DEFAULT_STRATEGY) != Z_OK) ||
          inflateInit2(&c->zi, -15) != Z_OK)
        die("zlib init");
      c->zon = 1;
#endif
    }
    c->rpos = hl;
    c->st = ST_OPEN;
    g_opening--, g_open++;
    if (g_mode == M_HANDSHAKE) {
      unsigned char cl[2] = {0x03, 0xE8};   /* 1000 */
      send_frame(c, 8, cl, 2);
      c->st = ST_CLOSING;
    }
  }
  for (;;) {
    unsigned char *h = c->rb + c->rpos;
    size_t avail = c->rlen - c->rpos, hl = 2;
    uint64_t len;
    int op, fin;
    if (avail < 2) break;
    if (h[1] & 0x80) { conn_fail(c, "masked frame from the server"); return -1; }
    len = h[1] & 0x7F;
    if (len == 126) {
      if (avail < 4) break;
      len = (uint64_t)h[2] << 8 | h[3];
      hl = 4;
    } else if (len == 127) {
      int i;
      if (avail < 10) break;
      for (len = 0, i = 0; i < 8; i++) len = len << 8 | h[2 + i];
      hl = 10;
    }
    if (len > ((uint64_t)1 << 30)) { conn_fail(c, "frame too large"); return -1; }
    if (avail < hl + len) {
      if (hl + len > c->rcap) {
        /* make room for the whole frame */
        memmove(c->rb, h, avail);
        c->rlen = avail, c->rpos = 0;
        c->rcap = hl + (size_t)len + 65536;
        if (!(c->rb = realloc(c->rb, c->rcap))) die("realloc");
      }
      break;
    }
    op = h[0] & 0x0F, fin = h[0] >> 7;
    if ((h[0] & 0x70) && !(c->zon && (h[0] & 0x70) == 0x40 && (op == 1 || op == 2))) {
      conn_fail(c, "RSV bits set");
      return -1;
    }
    if (g_deflate && bench_now_ns() >= g_ws_start && bench_now_ns() < g_ws_end)
      g_wire += hl + (size_t)len;
    c->rpos += hl + (size_t)len;
    h += hl;
    if (op == 1 || op == 2) c->mz = (h[-(long)hl] & 0x40) != 0;
    if (op == 9) { send_frame(c, 10, h, (size_t)len); continue; }
    if (op == 10) continue;
    if (op == 8) {
      if (c->st == ST_CLOSING && g_mode == M_HANDSHAKE) {
        uint64_t now = bench_now_ns();
        if (len < 2 || ((h[0] << 8) | h[1]) != 1000) {
          conn_fail(c, "close: the server did not echo code 1000");
          return -1;
        }
        if (now >= g_ws_start && now < g_ws_end) {
          g_count++;
          lat_add(now - c->t0);
        }
        conn_close(c);
        return -1;
      }
      conn_fail(c, "the server sent a close frame");
      return -1;
    }
    if (op == 1 || op == 2) {
      if (c->frag) { conn_fail(c, "new message inside a fragmented one"); return -1; }
      if (fin) {
        if (deliver(c, op, h, (size_t)len) < 0) return -1;
        continue;
      }
      c->frag = 1, c->mop = op, c->mlen = 0;
    } else if (op != 0 || !c->frag) {
      conn_fail(c, "bad opcode or continuation");
      return -1;
    }
    if (c->mlen + len > c->mcap) {
      c->mcap = (c->mlen + (size_t)len) * 2;
      if (!(c->mb = realloc(c->mb, c->mcap))) die("realloc");
    }
    memcpy(c->mb + c->mlen, h, (size_t)len);
    c->mlen += (size_t)len;
    if (fin) {
      c->frag = 0;
      if (deliver(c, c->mop, c->mb, c->mlen) < 0) return -1;
    }
  }
  if (c->rpos == c->rlen) c->rpos = c->rlen = 0;
  else if (c->rpos > c->rcap / 2) {
    memmove(c->rb, c->rb + c->rpos, c->rlen - c->rpos);
    c->rlen -= c->rpos, c->rpos = 0;
  }
  return 0;
}

static void on_readable(conn *c) {
  for (;;) {
    size_t room;
    ssize_t n;
    if (c->rlen == c->rcap) {
      if (c->rpos) {
        memmove(c->rb, c->rb + c->rpos, c->rlen - c->rpos);
        c->rlen -= c->rpos, c->rpos = 0;
      } else {
        c->rcap = c->rcap ? c->rcap * 2 : 65536;
        if (!(c->rb = realloc(c->rb, c->rcap))) die("realloc");
      }
    }
    room = c->rcap - c->rlen;
    n = recv(c->fd, c->rb + c->rlen, room, 0);
    if (n > 0) {
      c->rlen += (size_t)n;
      if (process(c) < 0) return;
      if ((size_t)n < room) break;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    conn_fail(c, n == 0 ? "the server closed the connection"
                        : strerror(errno));
    return;
  }
  conn_flush(c);
}

/* One epoll round; returns after events or timeout_ms. */
static void poll_once(int timeout_ms) {
  struct epoll_event ev[512];
  int n = epoll_wait(g_ep, ev, 512, timeout_ms), i;
  if (n < 0 && errno != EINTR) die("epoll_wait");
  for (i = 0; i < n; i++) {
    conn *c = ev[i].data.ptr;
    if (c->st == ST_FREE) continue;
    if (ev[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) on_readable(c);
    if (c->st != ST_FREE && (ev[i].events & EPOLLOUT)) conn_flush(c);
  }
}

static void alloc_conns(int n) {
  int i;
  g_nc = n;
  g_c = calloc((size_t)n, sizeof *g_c);
  if (!g_c) die("calloc");
  for (i = 0; i < n; i++) {
    g_c[i].idx = i;
    g_c[i].fd = -1;
    g_c[i].rng = 0x12345u + (uint32_t)i * 7919u;
    if (g_mode == M_ECHO || g_mode == M_IDLE) {
      g_c[i].ts = calloc((size_t)g_inflight, sizeof(uint64_t));
      if (!g_c[i].ts) die("calloc");
    }
  }
}

/* Opens connections [0, n) with at most `batch` handshakes at once; waits
 * until all are open. 0 ok, -1 failed. */
static int open_all(int n, int batch, double limit_s) {
  uint64_t end = bench_now_ns() + (uint64_t)(limit_s * 1e9);
  int next = 0;
  while (g_open < n) {
    while (next < n && g_opening < batch) conn_start(&g_c[next++]);
    poll_once(10);
    if (g_errors) return -1;
    if (bench_now_ns() > end) {
      err("only %d of %d connections opened in %.0f s", g_open, n, limit_s);
      return -1;
    }
  }
  return 0;
}

static void run_for(double secs) {
  uint64_t end = bench_now_ns() + (uint64_t)(secs * 1e9);
  while (bench_now_ns() < end) poll_once(5);
}

static void make_pattern(void) {
  uint32_t s = 0xC0FFEEu;
  size_t i;
  g_patlen = g_size + (g_deflate ? 1u << 20 : 4096) + 16;
  g_pat = malloc(g_patlen + 3);
  if (!g_pat) die("malloc");
  if (g_deflate) {
    /* JSON chat messages, one after another */
    static const char *const users[] = {"alice", "bob", "carol", "dave", "erin"};
    static const char *const words[] = {"hello", "anyone", "seen", "the", "new",
      "build", "works", "lunch", "at", "noon", "meeting", "moved", "thanks",
      "deploy", "tonight", "review", "please", "ok"};
    size_t at = 0;
    unsigned long id = 1000000;
    while (at < g_patlen) {
      char m[256];
      int k, n = snprintf(m, sizeof m, "{\"type\":\"message\",\"room\":\"general\","
                          "\"id\":%lu,\"user\":\"%s\",\"text\":\"", id++, users[xs32(&s) % 5]);
      for (k = 0; k < 8; k++)
        n += snprintf(m + n, sizeof m - (size_t)n, "%s%s", k ? " " : "", words[xs32(&s) % 18]);
      n += snprintf(m + n, sizeof m - (size_t)n, "\"}");
      for (k = 0; k < n && at < g_patlen; k++) g_pat[at++] = (unsigned char)m[k];
    }
    return;
  }
  if (g_text == 2) {
    /* 4-byte units that are whole characters: 2+2, 3+1, 4 bytes, and 1 in
     * 8 ASCII; every offset pat_off() returns starts a unit */
    static const char units[8][5] = {"\xc3\xa9\xc3\xa9", "\xd0\xb6\xd1\x8b",
      "\xe2\x82\xac" "a", "\xe4\xb8\xad" "b", "\xf0\x9d\x84\x9e",
      "\xf0\x9f\x98\x80", "\xce\xbb\xcf\x80", "ab c"};
    g_patlen = (g_patlen + 3) & ~(size_t)3;
    for (i = 0; i < g_patlen; i += 4) memcpy(g_pat + i, units[xs32(&s) % 8], 4);
    return;
  }
  for (i = 0; i < g_patlen; i++) {
    uint32_t r = xs32(&s);
    g_pat[i] = g_text ? (unsigned char)(" abcdefghijklmnopqrstuvwxyz0123456789.,"[r % 39])
                      : (unsigned char)(r >> 8);
  }
}

static void raise_nofile(void) {
  struct rlimit r;
  if (getrlimit(RLIMIT_NOFILE, &r) == 0 && r.rlim_cur < r.rlim_max) {
    r.rlim_cur = r.rlim_max;
    setrlimit(RLIMIT_NOFILE, &r);
  }
}

static void set_window(void) {
  uint64_t now = bench_now_ns();
  g_ws_start = now + (uint64_t)(g_warm * 1e9);
  g_ws_end = g_ws_start + (uint64_t)(g_secs * 1e9);
}

/* Waits for the window to open; returns the server's CPU seconds then. */
static double wait_window_start(void) {
  while (bench_now_ns() < g_ws_start) poll_once(1);
  g_lg0 = bench_self_cpu_s();
  bench_cpu_split(g_pid, &g_usr0, &g_sys0);
  return g_usr0 + g_sys0;
}

static double wait_window_end(void) {
  while (bench_now_ns() < g_ws_end && !g_errors) poll_once(5);
  g_lg1 = bench_self_cpu_s();
  bench_cpu_split(g_pid, &g_usr1, &g_sys1);
  return g_usr1 + g_sys1;
}

static int mode_echo(void) {
  int i;
  double cpu0, cpu1, el, msgs;
  uint64_t dl;
  alloc_conns(g_conns);
  if (open_all(g_conns, 256, 30) < 0) return 1;
  g_running = 1;
  set_window();
  for (i = 0; i < g_conns; i++) {
    int k;
    for (k = 0; k < g_inflight; k++) echo_send_next(&g_c[i]);
    conn_flush(&g_c[i]);
  }
  cpu0 = wait_window_start();
  cpu1 = wait_window_end();
  g_running = 0;
  /* drain: every message sent must come back, verified */
  dl = bench_now_ns() + 10000000000ull;
  for (;;) {
    int pending = 0;
    for (i = 0; i < g_conns; i++)
      if (g_c[i].st == ST_OPEN && g_c[i].recvd < g_c[i].sent) pending = 1;
    if (!pending || g_errors || bench_now_ns() > dl) break;
    poll_once(5);
  }
  for (i = 0; i < g_conns; i++) {
    if (g_c[i].st == ST_OPEN && g_c[i].recvd < g_c[i].sent)
      err("conn %d: %llu echoes missing", i,
          (unsigned long long)(g_c[i].sent - g_c[i].recvd));
    if (g_c[i].st != ST_OPEN && !g_errors) err("conn %d lost", i);
  }
  qsort(g_lat, g_nlat, sizeof *g_lat, cmp_u64);
  el = g_secs;
  msgs = (double)g_count / el;
  fprintf(stderr,
          "echo: %d conns x %d in flight, %zu-byte %s: %.0f msg/s, %.2f MB/s, "
          "rtt p50 %.1f us p99 %.1f us, server cpu %.2f (user %.2f, kernel %.2f), "
          "errors %d\n",
          g_conns, g_inflight, g_size, g_text == 2 ? "UTF-8 text" : g_text ? "text" : "binary", msgs,
          (double)g_bytes / el / 1e6, pct(0.5) / 1e3, pct(0.99) / 1e3,
          (cpu1 - cpu0) / el, usr_rate(el), sys_rate(el), g_errors);
  /* New keys go after the old ones, which keep their places. */
  printf("RESULT mode=echo conns=%d inflight=%d size=%zu text=%d msgs_per_s=%.0f "
         "mb_per_s=%.3f p50_us=%.1f p99_us=%.1f server_cpu=%.3f "
         "msgs_per_cpu_s=%.0f lg_cpu=%.3f errors=%d server_usr=%.3f server_sys=%.3f "
         "usr_ns_per_msg=%.1f sys_ns_per_msg=%.1f%s",
         g_conns, g_inflight, g_size, g_text, msgs, (double)g_bytes / el / 1e6,
         pct(0.5) / 1e3, pct(0.99) / 1e3, (cpu1 - cpu0) / el,
         cpu1 > cpu0 ? (double)g_count / (cpu1 - cpu0) : 0.0, (g_lg1 - g_lg0) / el, g_errors,
         usr_rate(el), sys_rate(el),
         g_count ? (g_usr1 - g_usr0) * 1e9 / (double)g_count : 0.0,
         g_count ? (g_sys1 - g_sys0) * 1e9 / (double)g_count : 0.0,
         g_deflate ? "" : "\n");
  if (g_deflate)
    printf(" deflate=1 wire_in_per_msg=%.1f\n", g_count ? (double)g_wire / (double)g_count : 0.0);
  return g_errors ? 1 : 0;
}

static int mode_idle(void) {
  long rss0, rss1, rss2, slab0, slab1, inuse0, inuse1, mem0, mem1;
  int i;
  uint64_t dl;
  if (g_pid <= 0) { fprintf(stderr, "loadgen idle: --pid is required\n"); return 2; }
  g_inflight = 1;
  g_size = 32;
  g_text = 0;
  make_pattern();
  alloc_conns(g_n);
  g_src_spread = 64;
  run_for(0.3);
  rss0 = bench_rss_kb(g_pid);
  slab0 = meminfo_kb("Slab");
  sockstat(&inuse0, &mem0);
  if (open_all(g_n, 200, 120) < 0) return 1;
  run_for(1.0);
  rss1 = bench_rss_kb(g_pid);
  slab1 = meminfo_kb("Slab");
  sockstat(&inuse1, &mem1);
  /* Then one small message each way on every connection, and idle again. */
  for (i = 0; i < g_n; i++) {
    echo_send_next(&g_c[i]);
    conn_flush(&g_c[i]);
  }
  g_ws_start = g_ws_end = 0;
  dl = bench_now_ns() + 60000000000ull;
  for (;;) {
    int pending = 0;
    for (i = 0; i < g_n; i++)
      if (g_c[i].st == ST_OPEN && g_c[i].recvd < g_c[i].sent) { pending = 1; break; }
    if (!pending || g_errors || bench_now_ns() > dl) break;
    poll_once(5);
  }
  for (i = 0; i < g_n; i++)
    if (g_c[i].st != ST_OPEN || g_c[i].recvd != g_c[i].sent) {
      err("conn %d: no echo after the idle period", i);
      break;
    }
  run_for(1.0);
  rss2 = bench_rss_kb(g_pid);
  fprintf(stderr,
          "idle: %d connections: server RSS %ld -> %ld kB (%.0f B/conn), after one "
          "message each %ld kB (%.0f B/conn); kernel slab %+ld kB (%.0f B per "
          "client+server socket pair), TCP sockstat mem %+ld pages, errors %d\n",
          g_n, rss0, rss1, (double)(rss1 - rss0) * 1024 / g_n, rss2,
          (double)(rss2 - rss0) * 1024 / g_n, slab1 - slab0,
          (double)(slab1 - slab0) * 1024 / g_n, mem1 - mem0, g_errors);
  printf("RESULT mode=idle conns=%d rss0_kb=%ld rss1_kb=%ld rss2_kb=%ld "
         "rss_per_conn=%.0f rss_per_conn_used=%.0f slab_delta_kb=%ld "
         "slab_per_pair=%.0f sockmem_pages=%ld tcp_inuse_delta=%ld errors=%d\n",
         g_n, rss0, rss1, rss2, (double)(rss1 - rss0) * 1024 / g_n,
         (double)(rss2 - rss0) * 1024 / g_n, slab1 - slab0,
         (double)(slab1 - slab0) * 1024 / g_n, mem1 - mem0, inuse1 - inuse0,
         g_errors);
  return g_errors ? 1 : 0;
}

static int mode_handshake(void) {
  int i;
  double cpu0, cpu1;
  uint64_t dl;
  alloc_conns(g_conns);
  g_src_spread = 250;
  set_window();
  for (i = 0; i < g_conns; i++) {
    g_c[i].t0 = bench_now_ns();
    conn_start(&g_c[i]);
  }
  cpu0 = -1;
  cpu1 = 0;
  while (bench_now_ns() < g_ws_end && !g_errors) {
    poll_once(1);
    if (cpu0 < 0 && bench_now_ns() >= g_ws_start) {
      bench_cpu_split(g_pid, &g_usr0, &g_sys0);
      cpu0 = g_usr0 + g_sys0;
      g_lg0 = bench_self_cpu_s();
    }
    for (i = 0; i < g_conns; i++)
      if (g_c[i].st == ST_FREE) {
        g_c[i].t0 = bench_now_ns();
        conn_start(&g_c[i]);
      }
  }
  bench_cpu_split(g_pid, &g_usr1, &g_sys1);
  cpu1 = g_usr1 + g_sys1;
  g_lg1 = bench_self_cpu_s();
  if (cpu0 < 0) cpu0 = cpu1, g_usr0 = g_usr1, g_sys0 = g_sys1;
  dl = bench_now_ns() + 5000000000ull;
  while (bench_now_ns() < dl && !g_errors) {
    int busy = 0;
    for (i = 0; i < g_conns; i++) busy |= g_c[i].st != ST_FREE;
    if (!busy) break;
    poll_once(5);
  }
  qsort(g_lat, g_nlat, sizeof *g_lat, cmp_u64);
  fprintf(stderr,
          "handshake: %d at once: %.0f connect+upgrade+close per s, p50 %.1f us, "
          "p99 %.1f us, server cpu %.2f (user %.2f, kernel %.2f), errors %d\n",
          g_conns, (double)g_count / g_secs, pct(0.5) / 1e3, pct(0.99) / 1e3,
          (cpu1 - cpu0) / g_secs, usr_rate(g_secs), sys_rate(g_secs), g_errors);
  printf("RESULT mode=handshake conns=%d hs_per_s=%.0f p50_us=%.1f p99_us=%.1f "
         "server_cpu=%.3f hs_per_cpu_s=%.0f lg_cpu=%.3f errors=%d server_usr=%.3f "
         "server_sys=%.3f\n",
         g_conns, (double)g_count / g_secs, pct(0.5) / 1e3, pct(0.99) / 1e3,
         (cpu1 - cpu0) / g_secs,
         cpu1 > cpu0 ? (double)g_count / (cpu1 - cpu0) : 0.0,
         (g_lg1 - g_lg0) / g_secs, g_errors, usr_rate(g_secs), sys_rate(g_secs));
  return g_errors ? 1 : 0;
}

static int mode_broadcast(void) {
  double cpu0, cpu1, deliveries;
  if (g_size < 8) g_size = 8;
  alloc_conns(g_n + 1);
  g_src_spread = 64;
  if (open_all(g_n + 1, 200, 60) < 0) return 1;
  run_for(0.3);   /* let every server finish subscribing */
  g_running = 1;
  set_window();
  bcast_publish();
  cpu0 = wait_window_start();
  cpu1 = wait_window_end();
  g_running = 0;
  {
    uint64_t dl = bench_now_ns() + 10000000000ull;
    while (g_bwait && !g_errors && bench_now_ns() < dl) poll_once(5);
    if (g_bwait) err("broadcast %llu: only %d of %d subscribers got it",
                     (unsigned long long)g_bseq, g_bgot, g_n);
  }
  qsort(g_lat, g_nlat, sizeof *g_lat, cmp_u64);
  deliveries = (double)g_count * g_n;
  fprintf(stderr,
          "broadcast: %d subscribers, %zu bytes: %.0f broadcasts/s, all received "
          "after p50 %.1f us p99 %.1f us (%.0f ns per recipient), mean latency "
          "%.1f us, server cpu %.2f (user %.2f, kernel %.2f), errors %d\n",
          g_n, g_size, (double)g_count / g_secs, pct(0.5) / 1e3, pct(0.99) / 1e3,
          pct(0.5) / g_n, g_count ? (double)g_bytes / deliveries / 1e3 : 0.0,
          (cpu1 - cpu0) / g_secs, usr_rate(g_secs), sys_rate(g_secs), g_errors);
  printf("RESULT mode=broadcast subs=%d size=%zu bcast_per_s=%.1f all_p50_us=%.1f "
         "all_p99_us=%.1f ns_per_recipient=%.1f mean_us=%.1f deliveries_per_s=%.0f "
         "server_cpu=%.3f cpu_ns_per_delivery=%.1f lg_cpu=%.3f errors=%d "
         "server_usr=%.3f server_sys=%.3f%s",
         g_n, g_size, (double)g_count / g_secs, pct(0.5) / 1e3, pct(0.99) / 1e3,
         pct(0.5) / g_n, g_count ? (double)g_bytes / deliveries / 1e3 : 0.0,
         deliveries / g_secs, (cpu1 - cpu0) / g_secs,
         deliveries > 0 ? (cpu1 - cpu0) * 1e9 / deliveries : 0.0,
         (g_lg1 - g_lg0) / g_secs, g_errors, usr_rate(g_secs), sys_rate(g_secs),
         g_deflate ? "" : "\n");
  if (g_deflate)
    printf(" deflate=1 wire_in_per_delivery=%.1f\n",
           deliveries > 0 ? (double)g_wire / (deliveries + (double)g_count) : 0.0);
  return g_errors ? 1 : 0;
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

static int mode_wait(void) {
  uint64_t end = bench_now_ns() + 10000000000ull;
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_port = htons((uint16_t)g_port);
  inet_pton(AF_INET, g_host, &a.sin_addr);
  while (bench_now_ns() < end) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) == 0) {
      close(fd);
      return 0;
    }
    if (fd >= 0) close(fd);
    usleep(20000);
  }
  fprintf(stderr, "loadgen: nothing listens on %s:%d\n", g_host, g_port);
  return 1;
}

static void usage(void) {
  fprintf(stderr,
          "usage: loadgen echo|idle|handshake|broadcast -p PORT [-H HOST] [-c CONNS]\n"
          "         [-k INFLIGHT] [-s SIZE] [-t|-u|-b] [-n N] [-d SECS] [-w WARMUP]\n"
          "         [--pid SERVER_PID] [--timeout SECS] [--deflate]\n"
          "       loadgen freeport | loadgen wait -p PORT\n");
  exit(2);
}

int main(int argc, char **argv) {
  const char *m;
  double timeout = -1;
  int i;
  if (argc < 2) usage();
  m = argv[1];
  for (i = 2; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "-t")) { g_text = 1; continue; }
    if (!strcmp(a, "-u")) { g_text = 2; continue; }
    if (!strcmp(a, "-b")) { g_text = 0; continue; }
    if (!strcmp(a, "--deflate")) { g_deflate = 1; g_text = 1; continue; }
    if (!v) usage();
    i++;
    if (!strcmp(a, "-p")) g_port = atoi(v);
    else if (!strcmp(a, "-H")) g_host = v;
    else if (!strcmp(a, "-c")) g_conns = atoi(v);
    else if (!strcmp(a, "-k")) g_inflight = atoi(v);
    else if (!strcmp(a, "-s")) g_size = (size_t)strtoul(v, NULL, 10);
    else if (!strcmp(a, "-n")) g_n = atoi(v);
    else if (!strcmp(a, "-d")) g_secs = atof(v);
    else if (!strcmp(a, "-w")) g_warm = atof(v);
    else if (!strcmp(a, "--pid")) g_pid = atoi(v);
    else if (!strcmp(a, "--timeout")) timeout = atof(v);
    else usage();
  }
  if (!strcmp(m, "freeport")) return mode_freeport();
  if (!strcmp(m, "wait")) return mode_wait();
  if (!strcmp(m, "echo")) g_mode = M_ECHO;
  else if (!strcmp(m, "idle")) g_mode = M_IDLE;
  else if (!strcmp(m, "handshake")) g_mode = M_HANDSHAKE;
  else if (!strcmp(m, "broadcast")) g_mode = M_BROADCAST;
  else usage();
  if (g_port <= 0 || g_conns < 1 || g_inflight < 1 || g_n < 1 || g_secs <= 0) usage();
  if (g_text == 2 && (g_size % 4 || g_mode != M_ECHO)) {
    fprintf(stderr, "loadgen: -u is for echo, with a SIZE that is a multiple of 4\n");
    return 2;
  }
#ifndef LOADGEN_ZLIB
  if (g_deflate) {
    fprintf(stderr, "loadgen: --deflate needs a build with -DLOADGEN_ZLIB -lz\n");
    return 2;
  }
#endif
  if (g_deflate && g_mode != M_ECHO && g_mode != M_BROADCAST) {
    fprintf(stderr, "loadgen: --deflate is for echo and broadcast\n");
    return 2;
  }
  if (g_warm < 0) g_warm = g_secs / 4 < 1 ? g_secs / 4 : 1;
  if (timeout < 0) timeout = g_secs + g_warm + 90;
  signal(SIGALRM, on_alarm);
  signal(SIGPIPE, SIG_IGN);
  alarm((unsigned)(timeout + 1));
  raise_nofile();
  g_ep = epoll_create1(EPOLL_CLOEXEC);
  if (g_ep < 0) die("epoll_create1");
  if (g_mode != M_IDLE) make_pattern();
  switch (g_mode) {
  case M_ECHO: return mode_echo();
  case M_IDLE: return mode_idle();
  case M_HANDSHAKE: return mode_handshake();
  default: return mode_broadcast();
  }
}
