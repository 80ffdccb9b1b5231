/*
 * bench_common.h - small helpers shared by the bench tools (libc only):
 * SHA-1 and Base64 for the opening handshake's accept key, and a monotonic
 * clock. Not part of ws: the load generator and the wslay peer server must
 * not borrow ws's own code for the handshake they check or answer.
 */
#ifndef BENCH_COMMON_H
#define BENCH_COMMON_H

#include <stdint.h>
#include <string.h>
#include <stdio.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define BENCH_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

static inline uint64_t bench_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

typedef struct { uint32_t h[5]; uint64_t n; unsigned char b[64]; } bench_sha1;

static inline uint32_t bench_rol(uint32_t x, int k) { return (x << k) | (x >> (32 - k)); }

static inline void bench_sha1_block(bench_sha1 *s, const unsigned char *p) {
  uint32_t w[80], a, b, c, d, e, t;
  int i;
  for (i = 0; i < 16; i++)
    w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
           (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
  for (; i < 80; i++) w[i] = bench_rol(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
  a = s->h[0], b = s->h[1], c = s->h[2], d = s->h[3], e = s->h[4];
  for (i = 0; i < 80; i++) {
    uint32_t f, k;
    if (i < 20) f = (b & c) | (~b & d), k = 0x5A827999;
    else if (i < 40) f = b ^ c ^ d, k = 0x6ED9EBA1;
    else if (i < 60) f = (b & c) | (b & d) | (c & d), k = 0x8F1BBCDC;
    else f = b ^ c ^ d, k = 0xCA62C1D6;
    t = bench_rol(a, 5) + f + e + k + w[i];
    e = d, d = c, c = bench_rol(b, 30), b = a, a = t;
  }
  s->h[0] += a, s->h[1] += b, s->h[2] += c, s->h[3] += d, s->h[4] += e;
}

static inline void bench_sha1_init(bench_sha1 *s) {
  s->h[0] = 0x67452301, s->h[1] = 0xEFCDAB89, s->h[2] = 0x98BADCFE;
  s->h[3] = 0x10325476, s->h[4] = 0xC3D2E1F0, s->n = 0;
}

static inline void bench_sha1_add(bench_sha1 *s, const void *data, size_t len) {
  const unsigned char *p = (const unsigned char *)data;
  while (len--) {
    s->b[s->n++ % 64] = *p++;
    if (s->n % 64 == 0) bench_sha1_block(s, s->b);
  }
}

static inline void bench_sha1_done(bench_sha1 *s, unsigned char out[20]) {
  uint64_t bits = s->n * 8;
  unsigned char pad = 0x80, len[8];
  int i;
  bench_sha1_add(s, &pad, 1);
  pad = 0;
  while (s->n % 64 != 56) bench_sha1_add(s, &pad, 1);
  for (i = 0; i < 8; i++) len[i] = (unsigned char)(bits >> (56 - 8 * i));
  bench_sha1_add(s, len, 8);
  for (i = 0; i < 20; i++) out[i] = (unsigned char)(s->h[i / 4] >> (24 - 8 * (i % 4)));
}

/* Base64 of n bytes into out (NUL-terminated); returns the length. */
static inline size_t bench_b64(const unsigned char *in, size_t n, char *out) {
  static const char t[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  size_t i, o = 0;
  for (i = 0; i + 2 < n; i += 3) {
    uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
    out[o++] = t[v >> 18], out[o++] = t[(v >> 12) & 63];
    out[o++] = t[(v >> 6) & 63], out[o++] = t[v & 63];
  }
  if (n - i == 1) {
    uint32_t v = (uint32_t)in[i] << 16;
    out[o++] = t[v >> 18], out[o++] = t[(v >> 12) & 63], out[o++] = '=', out[o++] = '=';
  } else if (n - i == 2) {
    uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
    out[o++] = t[v >> 18], out[o++] = t[(v >> 12) & 63];
    out[o++] = t[(v >> 6) & 63], out[o++] = '=';
  }
  out[o] = 0;
  return o;
}

/* Sec-WebSocket-Accept for a key: 28 characters and a NUL. */
static inline void bench_accept(const char *key, size_t key_len, char out[29]) {
  bench_sha1 s;
  unsigned char d[20];
  bench_sha1_init(&s);
  bench_sha1_add(&s, key, key_len);
  bench_sha1_add(&s, BENCH_GUID, sizeof BENCH_GUID - 1);
  bench_sha1_done(&s, d);
  bench_b64(d, 20, out);
}

/* Case-insensitive search for a header name at a line start in head[0..n);
 * returns a pointer to its trimmed value and its length, or NULL. */
static inline const char *bench_header(const char *head, size_t n, const char *name,
                                size_t *vlen) {
  size_t nl = strlen(name), i = 0;
  while (i < n) {
    size_t e = i, j;
    while (e < n && head[e] != '\n') e++;
    if (e - i > nl && head[i + nl] == ':') {
      for (j = 0; j < nl; j++) {
        char a = head[i + j], b = name[j];
        if (a >= 'A' && a <= 'Z') a = (char)(a + 32);
        if (b >= 'A' && b <= 'Z') b = (char)(b + 32);
        if (a != b) break;
      }
      if (j == nl) {
        size_t v = i + nl + 1, ve = e;
        while (v < ve && (head[v] == ' ' || head[v] == '\t')) v++;
        while (ve > v && (head[ve - 1] == '\r' || head[ve - 1] == ' ')) ve--;
        *vlen = ve - v;
        return head + v;
      }
    }
    i = e + 1;
  }
  return NULL;
}

/* ---- what a process costs (Linux /proc, getrusage) -------------------- */

/* Resident set size of a process, kB (VmRSS); -1 when it cannot be read. */
static inline long bench_rss_kb(int pid) {
  char path[64], line[256];
  long v = -1;
  FILE *f;
  snprintf(path, sizeof path, "/proc/%d/status", pid);
  if (!(f = fopen(path, "r"))) return -1;
  while (fgets(line, sizeof line, f))
    if (sscanf(line, "VmRSS: %ld", &v) == 1) break;
  fclose(f);
  return v;
}

/* CPU seconds a process has used in user space (*usr, utime) and in the
 * kernel (*sys, stime); both 0 when unknown. The kernel splits its precise
 * total between the two by sampling at the timer tick, so the split is
 * statistical: over a short window a small share is only roughly right. */
static inline void bench_cpu_split(int pid, double *usr, double *sys) {
  char path[64], buf[2048], *p;
  unsigned long ut = 0, st = 0;
  size_t n;
  FILE *f;
  *usr = *sys = 0;
  if (pid <= 0) return;
  snprintf(path, sizeof path, "/proc/%d/stat", pid);
  if (!(f = fopen(path, "r"))) return;
  n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = 0;
  if (!(p = strrchr(buf, ')'))) return;
  /* fields after the name: state(3) ... utime(14) stime(15) */
  if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut,
             &st) != 2)
    return;
  *usr = (double)ut / (double)sysconf(_SC_CLK_TCK);
  *sys = (double)st / (double)sysconf(_SC_CLK_TCK);
}

/* CPU seconds (user + system) a process has used; 0 when unknown. */
static inline double bench_cpu_s(int pid) {
  double usr, sys;
  bench_cpu_split(pid, &usr, &sys);
  return usr + sys;
}

/* This process's CPU seconds: is the load generator the bottleneck? */
static inline double bench_self_cpu_s(void) {
  struct rusage u;
  getrusage(RUSAGE_SELF, &u);
  return (double)u.ru_utime.tv_sec + (double)u.ru_utime.tv_usec / 1e6 +
         (double)u.ru_stime.tv_sec + (double)u.ru_stime.tv_usec / 1e6;
}

#endif
