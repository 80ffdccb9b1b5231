/*
 * micro.c - micro benchmarks of ws's codec, each against memcpy over the
 * same buffer (64 KiB: in cache; 16 MiB: from memory).
 *
 *   build/bench/micro [--quick] [--calls N] [row ...]
 *
 *   mask         ws_mask() in place over the buffer
 *   utf8-ascii   ws_utf8_check() over text that is ~97% ASCII
 *   utf8-multi   ws_utf8_check() over text that is mostly 2-, 3- and 4-byte
 *   frame-parse  ws_frame_parse() walking a buffer of back-to-back masked
 *                client frames (payloads 0..300 bytes), skipping payloads
 *   handshake    ws_request_parse() + ws_response_write() walking a buffer
 *                of back-to-back browser-like upgrade requests
 *   echo         an open server connection echoing: 16 masked 32-byte binary
 *                frames at a time copied out of the buffer and handed to
 *                ws_conn_feed_inplace(), each message sent back with
 *                ws_send() through a write callback that takes everything
 *                (the user-space work of a server per small message)
 *   echo-copy    the same through ws_conn_feed(), the copying path
 * Rows named on the command line run alone. --calls N calls each row's
 * operation N times over the 64 KiB buffer, untimed, and prints the items
 * done: instruction counts under callgrind, e.g.
 *   valgrind --tool=callgrind --toggle-collect=ws_conn_feed_inplace \
 *     build/bench/micro --calls 20 echo
 * gives the instructions of 20 x 1,712 messages (Ir / messages: per message).
 * Each is timed as the median of 5 trials of at least 0.2 s (--quick:
 * 0.01 s); "x memcpy" is its time over memcpy's time for the same bytes
 * (1.0 = as fast as copying the buffer; lower is better). Prints a
 * Markdown table and one "RESULT mode=micro ..." line per row.
 */
#define _POSIX_C_SOURCE 200809L
#include "ws.h"
#include "bench_common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static double g_min_s = 0.2;
static volatile size_t g_sink;

typedef size_t (*op_fn)(unsigned char *buf, size_t len, unsigned char *aux);

static size_t op_memcpy(unsigned char *buf, size_t len, unsigned char *aux) {
  memcpy(aux, buf, len);
  return aux[len / 2];
}

static size_t op_mask(unsigned char *buf, size_t len, unsigned char *aux) {
  static const uint8_t key[4] = {0x37, 0xFA, 0x21, 0x3D};
  (void)aux;
  ws_mask(buf, len, key, 0);
  return buf[len / 2];
}

static size_t op_utf8(unsigned char *buf, size_t len, unsigned char *aux) {
  uint32_t st = WS_UTF8_INIT;
  size_t bad = 0;
  int rc = ws_utf8_check(&st, buf, len, 1, &bad);
  (void)aux;
  if (rc != WS_OK) {
    fprintf(stderr, "micro: utf8 check failed at %zu\n", bad);
    exit(1);
  }
  return (size_t)rc;
}

static size_t g_frames, g_hs;

static size_t op_frames(unsigned char *buf, size_t len, unsigned char *aux) {
  size_t off = 0, n = 0;
  (void)aux;
  while (off < len) {
    ws_frame f;
    size_t hl;
    if (ws_frame_parse(buf + off, len - off, &f, &hl) != WS_OK) break;
    off += hl + (size_t)f.len;
    n++;
  }
  g_frames = n;
  return off;
}

static size_t op_handshake(unsigned char *buf, size_t len, unsigned char *aux) {
  size_t off = 0, n = 0;
  while (off < len) {
    ws_request req;
    ws_header h[32];
    size_t used, olen;
    int status;
    if (ws_request_parse(buf + off, len - off, &req, h, 32, &used, &status) != WS_OK)
      break;
    if (ws_response_write(aux, 512, req.key, req.key_len, NULL, NULL, 0, &olen) != WS_OK) {
      fprintf(stderr, "micro: ws_response_write failed\n");
      exit(1);
    }
    off += used;
    n++;
  }
  g_hs = n;
  return off;
}

static uint32_t rnd(void);

/* The echo row: one server connection, opened once. */
#define ECHO_BATCH 16
#define ECHO_FRAME 38 /* 2 header bytes, a 4-byte key, 32 bytes */
static ws_conn g_echo;
static ws_config g_echo_cfg;
static ws_callbacks g_echo_cb;
static size_t g_echo_msgs, g_echo_out;

static int echo_read(ws_conn *c, void *b, size_t cap, size_t *n, void *u) {
  (void)c, (void)b, (void)cap, (void)u;
  *n = 0;
  return WS_EAGAIN;
}

static int echo_write(ws_conn *c, const void *b, size_t len, size_t *n, void *u) {
  (void)c, (void)b, (void)u;
  g_echo_out += len;
  *n = len;
  return WS_OK;
}

static int echo_message(ws_conn *c, int op, const void *d, size_t n, int fin,
                        void *u) {
  (void)fin, (void)u;
  g_echo_msgs++;
  return ws_send(c, op, d, n) == WS_OK ? 0 : -1;
}

static void echo_open(void) {
  static const char req[] =
      "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n"
      "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
  ws_config_init(&g_echo_cfg, WS_SERVER);
  g_echo_cb.read = echo_read;
  g_echo_cb.write = echo_write;
  g_echo_cb.on_message = echo_message;
  if (ws_conn_init(&g_echo, &g_echo_cfg, &g_echo_cb, NULL) != WS_OK ||
      ws_conn_feed(&g_echo, req, sizeof req - 1) != WS_OK ||
      ws_conn_state(&g_echo) != WS_STATE_OPEN) {
    fprintf(stderr, "micro: the echo connection did not open\n");
    exit(1);
  }
}

/* Back-to-back masked 32-byte binary frames; returns the bytes used. */
static size_t fill_echo(unsigned char *buf, size_t len) {
  size_t o = 0;
  while (o + ECHO_FRAME <= len) {
    unsigned char *f = buf + o;
    int j;
    f[0] = 0x82;
    f[1] = 0x80 | 32;
    for (j = 0; j < 4; j++) f[2 + j] = (unsigned char)rnd();
    for (j = 0; j < 32; j++) f[6 + j] = (unsigned char)('a' + j % 26) ^ f[2 + j % 4];
    o += ECHO_FRAME;
  }
  memset(buf + o, 0, len - o);
  return o;
}

static size_t echo_feed(unsigned char *buf, size_t len, unsigned char *aux,
                        int copy) {
  const size_t chunk = ECHO_BATCH * ECHO_FRAME;
  size_t off, before = g_echo_msgs;
  for (off = 0; off + chunk <= len; off += chunk) {
    memcpy(aux, buf + off, chunk); /* unmasked in place: a fresh copy */
    if ((copy ? ws_conn_feed(&g_echo, aux, chunk)
              : ws_conn_feed_inplace(&g_echo, aux, chunk)) != WS_OK) {
      fprintf(stderr, "micro: the echo connection failed\n");
      exit(1);
    }
  }
  g_frames = g_echo_msgs - before;
  return off;
}

static size_t op_echo(unsigned char *buf, size_t len, unsigned char *aux) {
  return echo_feed(buf, len, aux, 0);
}

static size_t op_echo_copy(unsigned char *buf, size_t len, unsigned char *aux) {
  return echo_feed(buf, len, aux, 1);
}

static int cmp_d(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* Median seconds per call over 5 trials. */
static double time_op(op_fn f, unsigned char *buf, size_t len, unsigned char *aux) {
  double t[5];
  int i;
  g_sink += f(buf, len, aux);   /* warm */
  for (i = 0; i < 5; i++) {
    uint64_t t0 = bench_now_ns(), el;
    size_t reps = 0;
    do {
      g_sink += f(buf, len, aux);
      reps++;
      el = bench_now_ns() - t0;
    } while ((double)el < g_min_s * 1e9 / 5);
    t[i] = (double)el / 1e9 / (double)reps;
  }
  qsort(t, 5, sizeof t[0], cmp_d);
  return t[2];
}

static uint32_t g_rng = 0xBEEF;
static uint32_t rnd(void) {
  uint32_t x = g_rng;
  x ^= x << 13, x ^= x >> 17, x ^= x << 5;
  return g_rng = x;
}

/* Fills buf[0..len) with valid UTF-8 ending on a character boundary. */
static void fill_utf8(unsigned char *buf, size_t len, int multi) {
  static const char *ascii = "The quick brown fox jumps over the lazy dog. ";
  static const char *mb[] = {"\xC3\xA9", "\xD0\x96", "\xE4\xB8\xAD", "\xE6\x96\x87",
                             "\xE2\x82\xAC", "\xF0\x9F\x98\x80", "\xCE\xB1"};
  size_t o = 0;
  while (o < len) {
    const char *s;
    char one[2];
    uint32_t r = rnd();
    if (!multi ? (r % 100) < 97 : (r % 100) < 10) {
      one[0] = ascii[r % 45], one[1] = 0;
      s = one;
    } else {
      s = mb[(r >> 8) % 7];
    }
    if (o + strlen(s) > len) {
      while (o < len) buf[o++] = ' ';
      break;
    }
    memcpy(buf + o, s, strlen(s));
    o += strlen(s);
  }
}

static size_t fill_frames(unsigned char *buf, size_t len) {
  size_t o = 0;
  for (;;) {
    uint8_t key[4];
    uint32_t r = rnd();
    size_t pl = r % 301, hl;
    memcpy(key, &r, 4);
    if (o + WS_FRAME_HEADER_MAX + pl > len) break;
    hl = ws_frame_write(buf + o, 1, (r >> 9) & 1 ? WS_OP_TEXT : WS_OP_BINARY,
                        (uint64_t)pl, key);
    memset(buf + o + hl, 'x', pl);
    o += hl + pl;
  }
  memset(buf + o, 0, len - o);
  return o;
}

static size_t fill_requests(unsigned char *buf, size_t len) {
  size_t o = 0;
  for (;;) {
    unsigned char nonce[16];
    char key[25], req[1024];
    int i, n;
    for (i = 0; i < 16; i++) nonce[i] = (unsigned char)rnd();
    bench_b64(nonce, 16, key);
    n = snprintf(req, sizeof req,
                 "GET /chat?room=lobby HTTP/1.1\r\n"
                 "Host: example.com:8080\r\n"
                 "Connection: Upgrade\r\n"
                 "Pragma: no-cache\r\n"
                 "Cache-Control: no-cache\r\n"
                 "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 "
                 "(KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36\r\n"
                 "Upgrade: websocket\r\n"
                 "Origin: http://example.com:8080\r\n"
                 "Sec-WebSocket-Version: 13\r\n"
                 "Accept-Encoding: gzip, deflate, br\r\n"
                 "Accept-Language: en-US,en;q=0.9\r\n"
                 "Sec-WebSocket-Key: %s\r\n"
                 "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
                 "\r\n",
                 key);
    if (o + (size_t)n > len) break;
    memcpy(buf + o, req, (size_t)n);
    o += (size_t)n;
  }
  memset(buf + o, 0, len - o);
  return o;
}

#define NROWS 7
static const char *g_names[NROWS] = {"mask",      "utf8-ascii", "utf8-multi",
                                     "frame-parse", "handshake", "echo",
                                     "echo-copy"};

/* Fills buf for row k; returns its operation and sets the bytes it uses. */
static op_fn row_setup(size_t k, unsigned char *buf, size_t len, size_t *used) {
  *used = len;
  switch (k) {
  case 0: memset(buf, 0x5A, len); return op_mask;
  case 1: fill_utf8(buf, len, 0); return op_utf8;
  case 2: fill_utf8(buf, len, 1); return op_utf8;
  case 3: fill_frames(buf, len); return op_frames;
  case 4: fill_requests(buf, len); return op_handshake;
  case 5: *used = fill_echo(buf, len); return op_echo;
  default: *used = fill_echo(buf, len); return op_echo_copy;
  }
}

int main(int argc, char **argv) {
  static const size_t sizes[] = {64 * 1024, 16 * 1024 * 1024};
  int pick[NROWS] = {0}, picked = 0, a;
  long calls = 0;
  size_t si;
  for (a = 1; a < argc; a++) {
    size_t k;
    if (strcmp(argv[a], "--quick") == 0) {
      g_min_s = 0.01;
      continue;
    }
    if (strcmp(argv[a], "--calls") == 0 && a + 1 < argc) {
      calls = atol(argv[++a]);
      continue;
    }
    for (k = 0; k < NROWS && strcmp(argv[a], g_names[k]) != 0; k++)
      ;
    if (k == NROWS) {
      fprintf(stderr, "usage: micro [--quick] [--calls N] [row ...]\n");
      return 2;
    }
    pick[k] = 1;
    picked = 1;
  }
  echo_open();
  if (calls > 0) {
    /* Untimed, for instruction counts: each row's operation, N times. */
    size_t len = sizes[0], k;
    unsigned char *buf = malloc(len), *aux = malloc(len);
    if (!buf || !aux) return 1;
    for (k = 0; k < NROWS; k++) {
      size_t used, items = 0;
      op_fn f;
      long i;
      if (picked && !pick[k]) continue;
      f = row_setup(k, buf, len, &used);
      for (i = 0; i < calls; i++) {
        g_sink += f(buf, used, aux);
        items += k == 3 ? g_frames : k == 4 ? g_hs : k >= 5 ? g_frames : 1;
      }
      printf("%s: %ld calls, %zu items\n", g_names[k], calls, items);
    }
    free(buf);
    free(aux);
    return (int)(g_sink & 0);
  }
  printf("| operation | buffer | GB/s | memcpy GB/s | x memcpy time | per item |\n");
  printf("| --- | --- | ---: | ---: | ---: | --- |\n");
  for (si = 0; si < 2; si++) {
    size_t len = sizes[si], k;
    unsigned char *buf = malloc(len), *aux = malloc(len);
    double tm;
    if (!buf || !aux) return 1;
    memset(buf, 0xA5, len);
    memset(aux, 0, len);
    tm = time_op(op_memcpy, buf, len, aux);
    for (k = 0; k < NROWS; k++) {
      double t;
      size_t used;
      char item[64] = "";
      op_fn f;
      if (picked && !pick[k]) continue;
      f = row_setup(k, buf, len, &used);
      t = time_op(f, buf, used, aux);
      if (k == 3)
        snprintf(item, sizeof item, "%.1f ns/frame (%zu frames)",
                 t * 1e9 / (double)g_frames, g_frames);
      else if (k == 4)
        snprintf(item, sizeof item, "%.0f ns/handshake (%zu requests)",
                 t * 1e9 / (double)g_hs, g_hs);
      else if (k >= 5)
        snprintf(item, sizeof item, "%.1f ns/message (%zu messages)",
                 t * 1e9 / (double)g_frames, g_frames);
      printf("| %s | %s | %.2f | %.2f | %.1f | %s |\n", g_names[k],
             len >= 1024 * 1024 ? "16 MiB" : "64 KiB", (double)len / t / 1e9,
             (double)len / tm / 1e9, t / tm, item);
      fprintf(stderr, "RESULT mode=micro op=%s size=%zu gbps=%.3f memcpy_gbps=%.3f x_memcpy=%.2f\n",
              g_names[k], len, (double)len / t / 1e9, (double)len / tm / 1e9, t / tm);
    }
    free(buf);
    free(aux);
  }
  return (int)(g_sink & 0);
}
