/*
 * deflate_mem.c - permessage-deflate's cost per setting (make bench-deflate;
 * docs/deflate.md quotes its table).
 *
 *   build/bench/deflate_mem [--messages N]
 *
 * For each setting (context takeover or not, window bits, memLevel) a server
 * and a client ws_conn over memory agree on permessage-deflate; the server
 * sends a JSON chat corpus (N messages of about 200 bytes, then N/10 of
 * about 4 KB) and the client sends back every tenth message, so both
 * directions compress. It prints, per setting: the compression ratio on the
 * wire (payload bytes / frame bytes, headers included) for each message
 * size, the server's heap (through its cfg.realloc) while the connection is
 * idle after that traffic, and its peak, and the CPU time per ~200 B
 * message (the server's compression and the client's inflation, both in
 * this process, and ws's framing; the first row sends uncompressed for the
 * baseline). The second line is zlib's defaults (window 15, memLevel 8,
 * context takeover), the reference for the ratio.
 * A second table puts the same settings on the event loop: a server loop
 * and a client loop (one thread, turns in alternation) over loopback,
 * 400 clients each sending one chat message and getting its echo, then
 * idle. It prints the server loop's heap per idle connection: the
 * ws_loop_conn, and whatever zlib state the setting keeps.
 * Uses the public API only; deterministic (a fixed PRNG).
 */
#define _POSIX_C_SOURCE 200809L
#include "ws.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double cpu_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

typedef struct counter {
  long live_bytes, peak_bytes;
} counter;

/* An allocator that counts live bytes (a size header per block). */
static void *count_realloc(void *ptr, size_t n, void *ctx) {
  counter *c = (counter *)ctx;
  size_t *h = ptr ? (size_t *)ptr - 2 : NULL, old = h ? h[0] : 0;
  if (n == 0) {
    if (h) c->live_bytes -= (long)old;
    free(h);
    return NULL;
  }
  h = (size_t *)realloc(h, n + 2 * sizeof(size_t));
  if (h == NULL) return NULL;
  c->live_bytes += (long)n - (long)old;
  if (c->live_bytes > c->peak_bytes) c->peak_bytes = c->live_bytes;
  h[0] = n;
  return h + 2;
}

typedef struct pipe_ {
  unsigned char *d;
  size_t len, off, cap;
} pipe_;

typedef struct end {
  ws_conn c;
  ws_config cfg;
  pipe_ *in, *out;
  counter mem;
  unsigned long msgs;
} end;

static int rd(ws_conn *c, void *b, size_t cap, size_t *n, void *user) {
  end *e = (end *)user;
  size_t k = e->in->len - e->in->off;
  (void)c;
  if (k == 0) return WS_EAGAIN;
  if (k > cap) k = cap;
  memcpy(b, e->in->d + e->in->off, k);
  e->in->off += k;
  *n = k;
  if (e->in->off == e->in->len) e->in->off = e->in->len = 0;
  return WS_OK;
}

static int wr(ws_conn *c, const void *b, size_t len, size_t *n, void *user) {
  end *e = (end *)user;
  pipe_ *p = e->out;
  (void)c;
  if (p->len + len > p->cap) {
    p->cap = (p->len + len) * 2;
    p->d = (unsigned char *)realloc(p->d, p->cap);
    if (p->d == NULL) abort();
  }
  memcpy(p->d + p->len, b, len);
  p->len += len;
  *n = len;
  return WS_OK;
}

static int on_msg(ws_conn *c, int op, const void *d, size_t n, int fin,
                  void *user) {
  end *e = (end *)user;
  (void)c, (void)op, (void)d, (void)n, (void)fin;
  e->msgs++;
  return 0;
}

static const ws_callbacks cbs = {rd, wr, NULL, NULL, NULL, on_msg,
                                 NULL, NULL, NULL, NULL, NULL};

static unsigned long rng = 42;
static unsigned rnd(unsigned n) {
  rng = rng * 6364136223846793005ul + 1442695040888963407ul;
  return (unsigned)((rng >> 33) % n);
}

/* One chat message of about 200 bytes into out; returns its length. */
static size_t chat(char *out, size_t cap, unsigned long i) {
  static const char *const users[] = {"alice", "bob", "carol", "dave", "erin",
                                      "frank", "grace", "heidi", "ivan", "judy"};
  static const char *const words[] = {
      "hello", "anyone", "seen", "the", "new", "build", "it", "works", "on",
      "my", "machine", "lunch", "at", "noon", "meeting", "moved", "to",
      "three", "thanks", "great", "idea", "deploy", "tonight", "coffee",
      "broken", "fixed", "review", "please", "ship", "it", "lol", "ok"};
  char text[160];
  size_t t = 0;
  unsigned k, nw = 6 + rnd(12);
  for (k = 0; k < nw && t + 12 < sizeof text; k++) {
    const char *w = words[rnd(sizeof words / sizeof *words)];
    t += (size_t)snprintf(text + t, sizeof text - t, "%s%s", k ? " " : "", w);
  }
  return (size_t)snprintf(out, cap,
                          "{\"type\":\"message\",\"room\":\"general\",\"id\":%lu,"
                          "\"user\":{\"id\":%u,\"name\":\"%s\"},\"text\":\"%s\","
                          "\"ts\":%lu}",
                          1000000 + i, 100 + rnd(900), users[rnd(10)], text,
                          1700000000ul + i * 7);
}

static void pump(end *s, end *c) {
  int i;
  for (i = 0; i < 1000 && (s->in->len || c->in->len); i++) {
    ws_conn_on_readable(&s->c);
    ws_conn_on_readable(&c->c);
  }
}

/* The loop table ----------------------------------------------------- */

#define LOOP_CONNS 400

static unsigned long g_echoed, g_opened;

static int echo_msg(ws_conn *c, int op, const void *d, size_t n, int fin,
                    void *user) {
  (void)fin, (void)user;
  ws_send(c, op, d, n);
  return 0;
}

static int client_msg(ws_conn *c, int op, const void *d, size_t n, int fin,
                      void *user) {
  (void)c, (void)op, (void)d, (void)n, (void)fin, (void)user;
  g_echoed++;
  return 0;
}

static void client_open(ws_conn *c, const char *p, size_t n, void *user) {
  char buf[512];
  size_t len = chat(buf, sizeof buf, g_opened++);
  (void)p, (void)n, (void)user;
  ws_send(c, WS_OP_TEXT, buf, len);
}

/* Heap of the server loop per idle connection for one setting (bits 0:
 * no deflate), or -1. */
static long loop_idle(int bits, int nct) {
  ws_loop srv, cli;
  ws_loop_config sc, cc;
  ws_loop_callbacks sb, cb;
  counter mem = {0, 0};
  unsigned port = 0;
  long base;
  char url[64];
  int i;
  ws_client_opts o;
  ws_loop_config_init(&sc);
  ws_loop_config_init(&cc);
  sc.server.realloc = count_realloc;
  sc.server.alloc_ctx = &mem;
  sc.server.ping_interval_ms = 0;
  sc.idle_timeout_ms = 0;
  sc.server.deflate.enable = bits != 0;
  sc.server.deflate.no_context_takeover = nct;
  sc.server.deflate.peer_no_context_takeover = nct;
  if (bits) {
    sc.server.deflate.window_bits = (uint8_t)bits;
    sc.server.deflate.peer_window_bits = (uint8_t)bits;
  }
  sc.server.deflate.threshold = 0;
  cc.client.deflate.threshold = 0;
  cc.client.ping_interval_ms = 0;
  memset(&sb, 0, sizeof sb);
  memset(&cb, 0, sizeof cb);
  sb.conn.on_message = echo_msg;
  cb.conn.on_open = client_open;
  cb.conn.on_message = client_msg;
  if (ws_loop_init(&srv, &sc, &sb, NULL) != WS_OK ||
      ws_loop_init(&cli, &cc, &cb, NULL) != WS_OK ||
      ws_loop_listen(&srv, "127.0.0.1", 0, &port) != WS_OK)
    return -1;
  /* What the loop holds by itself (its receive buffer, tables) first. */
  for (i = 0; i < 5; i++) ws_loop_run_once(&srv, 0);
  base = mem.live_bytes;
  g_echoed = g_opened = 0;
  memset(&o, 0, sizeof o);
  o.deflate = bits != 0;
  snprintf(url, sizeof url, "ws://127.0.0.1:%u/", port);
  for (i = 0; i < LOOP_CONNS; i++)
    if (ws_loop_connect(&cli, url, &o, NULL, NULL) != WS_OK) return -1;
  for (i = 0; i < 200000 && g_echoed < LOOP_CONNS; i++) {
    ws_loop_run_once(&srv, 0);
    ws_loop_run_once(&cli, 0);
  }
  for (i = 0; i < 50; i++) { /* quiet: every buffer given back */
    ws_loop_run_once(&srv, 0);
    ws_loop_run_once(&cli, 0);
  }
  if (g_echoed < LOOP_CONNS) return -1;
  base = (mem.live_bytes - base) / LOOP_CONNS;
  ws_loop_free(&cli);
  ws_loop_free(&srv);
  return base;
}

typedef struct setting {
  const char *name;
  int nct, bits, mem;
} setting;

int main(int argc, char **argv) {
  static const setting settings[] = {
      {"no compression (baseline)", 0, 0, 0},
      {"zlib defaults (reference)", 0, 15, 8},
      {"context takeover, 15 bits, memLevel 4", 0, 15, 4},
      {"context takeover, 14 bits, memLevel 4", 0, 14, 4},
      {"context takeover, 13 bits, memLevel 3 (ws's default)", 0, 13, 3},
      {"context takeover, 12 bits, memLevel 3", 0, 12, 3},
      {"context takeover, 11 bits, memLevel 3", 0, 11, 3},
      {"context takeover, 10 bits, memLevel 2", 0, 10, 2},
      {"context takeover, 9 bits, memLevel 1", 0, 9, 1},
      {"no context takeover, 15 bits, memLevel 8", 1, 15, 8},
      {"no context takeover, 13 bits, memLevel 3", 1, 13, 3},
  };
  unsigned long n = 2000, i;
  size_t k;
  static char buf[8192];
  if (argc == 3 && strcmp(argv[1], "--messages") == 0) n = strtoul(argv[2], NULL, 10);
  if (!ws_deflate_available()) {
    printf("deflate_mem: this build has no zlib\n");
    return 1;
  }
  printf("| setting | ratio, ~200 B JSON | ratio, ~4 KB JSON | idle heap per connection | peak heap | CPU per ~200 B message |\n");
  printf("| --- | --- | --- | --- | --- | --- |\n");
  for (k = 0; k < sizeof settings / sizeof *settings; k++) {
    const setting *st = &settings[k];
    pipe_ s2c = {0}, c2s = {0};
    end s, c;
    ws_client_opts o;
    unsigned long pay[2] = {0, 0}, wire[2] = {0, 0};
    double t0, us = 0;
    int size;
    memset(&s, 0, sizeof s);
    memset(&c, 0, sizeof c);
    rng = 42;
    ws_config_init(&s.cfg, WS_SERVER);
    ws_config_init(&c.cfg, WS_CLIENT);
    s.cfg.deflate.enable = st->bits != 0;
    s.cfg.deflate.window_bits = (uint8_t)st->bits;
    s.cfg.deflate.peer_window_bits = (uint8_t)st->bits;
    s.cfg.deflate.mem_level = (uint8_t)st->mem;
    s.cfg.deflate.no_context_takeover = st->nct;
    s.cfg.deflate.peer_no_context_takeover = st->nct;
    s.cfg.realloc = count_realloc;
    s.cfg.alloc_ctx = &s.mem;
    c.cfg.deflate.window_bits = (uint8_t)st->bits;
    c.cfg.deflate.peer_window_bits = (uint8_t)st->bits;
    c.cfg.deflate.mem_level = (uint8_t)st->mem;
    s.in = &c2s, s.out = &s2c, c.in = &s2c, c.out = &c2s;
    ws_conn_init(&s.c, &s.cfg, &cbs, &s);
    ws_conn_init(&c.c, &c.cfg, &cbs, &c);
    memset(&o, 0, sizeof o);
    o.host = "bench";
    o.deflate = 1;
    ws_client_start(&c.c, &o);
    pump(&s, &c);
    if (st->bits && !ws_conn_deflate(&s.c)) {
      printf("deflate_mem: not agreed for %s\n", st->name);
      return 1;
    }
    s2c.len = s2c.off = 0;
    for (size = 0; size < 2; size++) {
      for (i = 0; i < (size ? n / 10 : n); i++) {
        size_t len = 0, before = s2c.len;
        if (size == 0) {
          len = chat(buf, sizeof buf, i);
        } else {
          while (len < 4000) len += chat(buf + len, sizeof buf - len, i * 20 + len);
        }
        t0 = cpu_us();
        ws_send(&s.c, WS_OP_TEXT, buf, len);
        pay[size] += len;
        wire[size] += s2c.len - before;
        if (i % 10 == 0) ws_send(&c.c, WS_OP_TEXT, buf, len);
        pump(&s, &c);
        if (size == 0) us += cpu_us() - t0;
      }
    }
    printf("| %s | %.2f | %.2f | %ld B | %ld B | %.1f us |\n", st->name,
           (double)pay[0] / (double)wire[0], (double)pay[1] / (double)wire[1],
           s.mem.live_bytes, s.mem.peak_bytes, us / (double)n);
    ws_conn_free(&s.c);
    ws_conn_free(&c.c);
    free(s2c.d);
    free(c2s.d);
  }
  {
    static const struct { const char *name; int bits, nct; } ls[] = {
        {"no deflate", 0, 0},
        {"deflate, context takeover, 13 bits (defaults)", 13, 0},
        {"deflate, context takeover, 15 bits, memLevel 3", 15, 0},
        {"deflate, no context takeover either way", 13, 1},
    };
    printf("\n| on the loop, %d idle connections | server heap per connection |\n", LOOP_CONNS);
    printf("| --- | --- |\n");
    for (k = 0; k < sizeof ls / sizeof *ls; k++) {
      long per = loop_idle(ls[k].bits, ls[k].nct);
      if (per < 0) {
        printf("deflate_mem: the loop run failed for %s\n", ls[k].name);
        return 1;
      }
      printf("| %s | %ld B |\n", ls[k].name, per);
    }
  }
  return 0;
}
