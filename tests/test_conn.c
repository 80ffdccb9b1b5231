/*
 * test_conn.c - layer 1: ws_conn as server and as client.
 *
 * Two tools carry most tests:
 * - scripts: raw bytes for one connection, run in every input mode (all at
 *   once, one byte at a time, cut at every offset, pulled through the read
 *   callback) and every output mode (whole writes, one byte per write,
 *   would-block in between). Every mode must give the same events and the
 *   same output bytes as the first.
 * - pairs: a server ws_conn and a client ws_conn joined by memory pipes, for
 *   the conformance run through every category.
 */
#include "../src/ws.c"
#include "t.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
/* POSIX sockets and threads for one test (test_blocking_sockets); a
 * Windows build (make cross, under wine) runs the rest. */
#if defined(__unix__) || defined(__APPLE__)
#define T_POSIX 1
#include <pthread.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>
#endif

/* ---------------------------------------------------------------------
 * Byte buffers and a counting allocator
 * ------------------------------------------------------------------- */

typedef struct buf {
  unsigned char *d;
  size_t len, cap, off; /* off: read position */
} buf;

static void buf_put(buf *b, const void *p, size_t n) {
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n) cap *= 2;
    b->d = (unsigned char *)realloc(b->d, cap);
    if (b->d == NULL) abort();
    b->cap = cap;
  }
  if (n) memcpy(b->d + b->len, p, n);
  b->len += n;
}

static void buf_puts(buf *b, const char *s) { buf_put(b, s, strlen(s)); }

static void buf_printf(buf *b, const char *fmt, ...) {
  char tmp[512];
  va_list ap;
  int n;
  va_start(ap, fmt);
  n = vsnprintf(tmp, sizeof tmp, fmt, ap);
  va_end(ap);
  buf_put(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

/* The buffer as a C string (NUL kept just past len). */
static const char *cstr(buf *b) {
  buf_put(b, "", 1);
  b->len--;
  return (const char *)b->d;
}

static void buf_free(buf *b) {
  free(b->d);
  memset(b, 0, sizeof *b);
}

static int buf_eq(const buf *a, const buf *b) {
  return a->len == b->len && (a->len == 0 || memcmp(a->d, b->d, a->len) == 0);
}

typedef struct counting_alloc {
  long live, calls, fail_at; /* fail_at: fail the n-th call (1-based), 0: never */
  size_t peak_size;
} counting_alloc;

static void *counting_realloc(void *ptr, size_t n, void *ctx) {
  counting_alloc *a = (counting_alloc *)ctx;
  void *q;
  a->calls++;
  if (n == 0) {
    if (ptr) a->live--;
    free(ptr);
    return NULL;
  }
  if (a->fail_at && a->calls == a->fail_at) return NULL;
  q = realloc(ptr, n);
  if (q && !ptr) a->live++;
  if (n > a->peak_size) a->peak_size = n;
  return q;
}

/* ---------------------------------------------------------------------
 * An endpoint: one ws_conn over memory, recording what happens
 * ------------------------------------------------------------------- */

typedef struct endpoint {
  ws_conn c;
  ws_config cfg;    /* the connection uses it (ws_conn_init keeps a pointer) */
  buf *rx;          /* bytes the read callback hands out */
  buf *tx;          /* bytes the write callback took */
  size_t read_max;  /* most bytes per read (0: all) */
  size_t write_max; /* most bytes per write (0: all) */
  int write_block;  /* 1: every other write call would block */
  int write_fail;   /* 1: writes fail */
  int write_stall;  /* 1: every write would block (a peer not reading) */
  int eof;          /* rx exhausted: report end of stream (else would-block) */
  unsigned block_toggle;
  buf log;          /* events, one per line */
  int closes, close_code, opened;
  char close_reason[128]; /* on_close's reason, NUL-terminated */
  int free_in;      /* CB_*: ws_conn_free() from inside that callback */
  int in_cb;        /* inside one of the other callbacks */
  int after_close;  /* callbacks run after on_close (must stay 0) */
  int refuse;              /* on_handshake returns this */
  const char *pick;        /* subprotocol to choose */
  ws_header extra[2];
  size_t n_extra;
  int echo;                /* echo messages back */
  int close_on_msg;        /* ws_close(1000) on the first message */
  unsigned rnd;            /* deterministic random source state */
  size_t pieces;           /* stream mode: pieces seen */
  unsigned long hash;      /* FNV-1a of streamed bytes */
  buf msg;                 /* stream mode: the reassembled message */
  const void *last_data;   /* where the last message was delivered from */
  int nmsgs;               /* on_message calls */
  int writevs;             /* writev calls */
  int free_on_close;
  /* Fault injection: at I/O call number fault_at (1-based, reads and
   * writes counted together), do `fault` instead. */
  long io_calls, fault_at;
  int fault; /* FAULT_* */
  long rnd_calls, rnd_fail_at; /* the random source fails at call N */
} endpoint;

enum { FAULT_NONE, FAULT_EAGAIN, FAULT_SHORT, FAULT_ERROR, FAULT_EOF, FAULT__N };

/* The callbacks, for endpoint.free_in. */
enum {
  CB_NONE, CB_READ, CB_WRITE, CB_WRITEV, CB_RANDOM, CB_HANDSHAKE, CB_HTTP,
  CB_OPEN, CB_MESSAGE, CB_PING, CB_PONG, CB__N
};

/* Every callback but on_close starts here: when it is the chosen one, it
 * frees the connection, which must then refuse more work. */
static void ep_enter(endpoint *e, ws_conn *c, int which) {
  if (e->closes) e->after_close++;
  e->in_cb++;
  if (e->free_in != which) return;
  e->free_in = CB_NONE;
  ws_conn_free(c);
  CHECK_INT(ws_conn_state(c), WS_STATE_CLOSED);
  CHECK_INT(e->closes, 0); /* on_close waits for the outermost call */
  CHECK_INT(ws_send(c, WS_OP_TEXT, "late", 4), WS_ECLOSED);
  ws_conn_free(c); /* twice: no harm */
}

/* The fault for this call, if it is the chosen one. */
static int ep_fault(endpoint *e) {
  e->io_calls++;
  return e->fault_at && e->io_calls == e->fault_at ? e->fault : FAULT_NONE;
}

static unsigned long fnv(const void *p, size_t n) {
  const unsigned char *s = (const unsigned char *)p;
  unsigned long h = 2166136261ul;
  size_t i;
  for (i = 0; i < n; i++) h = (h ^ s[i]) * 16777619ul;
  return h & 0xFFFFFFFFul;
}

static int ep_read_(ws_conn *c, void *b, size_t cap, size_t *n, void *user) {
  endpoint *e = (endpoint *)user;
  size_t avail = e->rx->len - e->rx->off;
  int f = ep_fault(e);
  (void)c;
  if (f == FAULT_EAGAIN) return WS_EAGAIN;
  if (f == FAULT_ERROR) return WS_EIO;
  if (f == FAULT_EOF) {
    *n = 0;
    return WS_OK;
  }
  if (f == FAULT_SHORT && avail > 1) avail = 1;
  if (avail == 0) {
    *n = 0;
    return e->eof ? WS_OK : WS_EAGAIN;
  }
  if (e->read_max && avail > e->read_max) avail = e->read_max;
  if (avail > cap) avail = cap;
  memcpy(b, e->rx->d + e->rx->off, avail);
  e->rx->off += avail;
  *n = avail;
  return WS_OK;
}

static int ep_write_(ws_conn *c, const void *b, size_t len, size_t *n,
                     void *user) {
  endpoint *e = (endpoint *)user;
  int f = ep_fault(e);
  (void)c;
  if (f == FAULT_EAGAIN) return WS_EAGAIN;
  if (f == FAULT_ERROR || f == FAULT_EOF) return WS_EIO;
  if (f == FAULT_SHORT && len > 1) len = 1;
  if (e->write_fail) return WS_EIO;
  if (e->write_stall) return WS_EAGAIN;
  if (e->write_block && (e->block_toggle++ & 1) == 0) return WS_EAGAIN;
  if (e->write_max && len > e->write_max) len = e->write_max;
  buf_put(e->tx, b, len);
  *n = len;
  return WS_OK;
}

static int ep_read(ws_conn *c, void *b, size_t cap, size_t *n, void *user) {
  endpoint *e = (endpoint *)user;
  int rc;
  ep_enter(e, c, CB_READ);
  rc = ep_read_(c, b, cap, n, user);
  e->in_cb--;
  return rc;
}

static int ep_write(ws_conn *c, const void *b, size_t len, size_t *n,
                    void *user) {
  endpoint *e = (endpoint *)user;
  int rc;
  ep_enter(e, c, CB_WRITE);
  rc = ep_write_(c, b, len, n, user);
  e->in_cb--;
  return rc;
}

static int ep_random(ws_conn *c, void *b, size_t n, void *user) {
  endpoint *e = (endpoint *)user;
  unsigned char *p = (unsigned char *)b;
  size_t i;
  ep_enter(e, c, CB_RANDOM);
  e->in_cb--;
  if (++e->rnd_calls == e->rnd_fail_at) return WS_EIO;
  for (i = 0; i < n; i++) {
    e->rnd = e->rnd * 1103515245u + 12345u;
    p[i] = (unsigned char)(e->rnd >> 16);
  }
  return WS_OK;
}

static int ep_handshake(ws_conn *c, const ws_request *req, ws_accept *acc,
                        void *user) {
  endpoint *e = (endpoint *)user;
  ep_enter(e, c, CB_HANDSHAKE);
  e->in_cb--;
  buf_printf(&e->log, "handshake %.*s protos=%u\n", (int)req->path_len,
             req->path, (unsigned)ws_request_protocol_count(req));
  if (e->refuse) return e->refuse;
  acc->protocol = e->pick;
  acc->headers = e->n_extra ? e->extra : NULL;
  acc->num_headers = e->n_extra;
  return 0;
}

static void ep_open(ws_conn *c, const char *proto, size_t plen, void *user) {
  endpoint *e = (endpoint *)user;
  ep_enter(e, c, CB_OPEN);
  e->in_cb--;
  e->opened++;
  buf_printf(&e->log, "open %.*s\n", (int)plen, proto ? proto : "");
}

static int ep_message(ws_conn *c, int op, const void *d, size_t n, int fin,
                      void *user) {
  endpoint *e = (endpoint *)user;
  ep_enter(e, c, CB_MESSAGE);
  e->in_cb--;
  if (ws_conn_user(c) != user) buf_puts(&e->log, "bad user pointer\n");
  e->last_data = d;
  e->nmsgs++;
  if (WS__P(c)->cfg->stream) {
    /* Pieces vary with input chunking; log the reassembled message. */
    buf_put(&e->msg, d, n);
    e->pieces++;
    if (!fin) return 0;
    d = e->msg.d;
    n = e->msg.len;
  }
  buf_printf(&e->log, "msg %d %lu %08lx\n", op, (unsigned long)n, fnv(d, n));
  if (e->echo) ws_send(c, op, d, n);
  if (e->close_on_msg) ws_close(c, 1000, "done", 4);
  e->msg.len = 0;
  return 0;
}

static void ep_ping(ws_conn *c, const void *d, size_t n, void *user) {
  endpoint *e = (endpoint *)user;
  ep_enter(e, c, CB_PING);
  e->in_cb--;
  buf_printf(&e->log, "ping %lu %.*s\n", (unsigned long)n, (int)n,
             (const char *)d);
}

static void ep_pong(ws_conn *c, const void *d, size_t n, void *user) {
  endpoint *e = (endpoint *)user;
  ep_enter(e, c, CB_PONG);
  e->in_cb--;
  buf_printf(&e->log, "pong %lu %.*s\n", (unsigned long)n, (int)n,
             (const char *)d);
}

static void ep_close(ws_conn *c, int code, const char *r, size_t n,
                     void *user) {
  endpoint *e = (endpoint *)user;
  if (e->closes || e->in_cb) e->after_close++; /* twice, or nested */
  e->closes++;
  e->close_code = code;
  n = n < sizeof e->close_reason ? n : sizeof e->close_reason - 1;
  memcpy(e->close_reason, r, n);
  e->close_reason[n] = '\0';
  buf_printf(&e->log, "close %d %.*s\n", code, (int)n, r);
  if (e->free_on_close) ws_conn_free(c);
}

static int ep_http(ws_conn *c, const ws_request *req, void *user) {
  endpoint *e = (endpoint *)user;
  static const ws_header ct = {"Content-Type", 12, "text/plain", 10};
  ep_enter(e, c, CB_HTTP);
  e->in_cb--;
  buf_printf(&e->log, "http %.*s\n", (int)req->path_len, req->path);
  if (req->path_len == 1 && req->path[0] == '/') {
    CHECK_INT(ws_http_respond(c, 200, &ct, 1, "hello", 5), WS_OK);
    CHECK_INT(ws_http_respond(c, 200, NULL, 0, "x", 1), WS_ESTATE); /* once */
    return 0;
  }
  return 404;
}

/* writev: the pieces joined, then the same transport as write (faults,
 * short writes and would-block included). */
static int ep_writev(ws_conn *c, const ws_iovec *iov, int n, size_t *w,
                     void *user) {
  endpoint *e = (endpoint *)user;
  size_t total = 0, off = 0;
  unsigned char *flat;
  int i, rc;
  ep_enter(e, c, CB_WRITEV);
  e->in_cb--;
  for (i = 0; i < n; i++) total += iov[i].len;
  flat = (unsigned char *)malloc(total ? total : 1);
  if (flat == NULL) abort();
  for (i = 0; i < n; i++) {
    memcpy(flat + off, iov[i].base, iov[i].len);
    off += iov[i].len;
  }
  e->writevs++;
  rc = ep_write(c, flat, total, w, user);
  free(flat);
  return rc;
}

static const ws_callbacks ep_callbacks = {
    ep_read, ep_write, ep_random, ep_handshake, ep_open, ep_message,
    ep_ping, ep_pong,  ep_http,   ep_close,     ep_writev};

static void ep_init(endpoint *e, const ws_config *cfg, buf *rx, buf *tx) {
  memset(e, 0, sizeof *e);
  e->rx = rx;
  e->tx = tx;
  e->rnd = 12345;
  e->cfg = *cfg;
  CHECK_INT(ws_conn_init(&e->c, &e->cfg, &ep_callbacks, e), WS_OK);
}

static void ep_free(endpoint *e) {
  ws_conn_free(&e->c);
  buf_free(&e->log);
  buf_free(&e->msg);
}

/* Flushes until the output is out or the writer makes no progress. */
static void ep_drain(endpoint *e) {
  int i;
  for (i = 0; i < 1000000 && ws_conn_want_write(&e->c); i++) {
    size_t before = ws_conn_queued(&e->c), tx = e->tx->len;
    ws_conn_on_writable(&e->c);
    if (ws_conn_state(&e->c) == WS_STATE_CLOSED) break;
    if (ws_conn_queued(&e->c) == before && e->tx->len == tx && !e->write_block)
      break;
  }
}

/* ---------------------------------------------------------------------
 * Building raw input
 * ------------------------------------------------------------------- */

static const char *REQ =
    "GET /chat?room=1 HTTP/1.1\r\n"
    "Host: server.example.com\r\n"
    "Upgrade: websocket\r\n"
    "Connection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    "Origin: http://example.com\r\n"
    "Sec-WebSocket-Protocol: chat, superchat\r\n"
    "Sec-WebSocket-Version: 13\r\n"
    "\r\n";

/* A frame as a client would send it (masked with a fixed key) or as a
 * server would (unmasked). */
static void add_frame_ex(buf *b, int b0, uint64_t len, const void *data,
                         size_t dlen, int masked) {
  static const uint8_t key[4] = {0x37, 0xfa, 0x21, 0x3d};
  unsigned char h[14];
  size_t hl = ws_frame_write(h, 1, 1, len, masked ? key : NULL);
  size_t at;
  h[0] = (unsigned char)b0; /* raw first byte: fin, rsv, opcode */
  buf_put(b, h, hl);
  at = b->len;
  buf_put(b, data, dlen);
  if (masked) ws_mask(b->d + at, dlen, key, 0);
}

static void add_frame(buf *b, int fin, int op, const void *d, size_t n,
                      int masked) {
  add_frame_ex(b, (fin ? 0x80 : 0) | op, n, d, n, masked);
}

static void cframe(buf *b, int fin, int op, const char *s) {
  add_frame(b, fin, op, s, strlen(s), 1);
}

static void add_close(buf *b, int code, const char *reason, int masked) {
  unsigned char p[125];
  size_t n = 0;
  if (code >= 0) {
    p[0] = (unsigned char)(code >> 8);
    p[1] = (unsigned char)code;
    n = 2;
    if (reason) {
      memcpy(p + 2, reason, strlen(reason));
      n += strlen(reason);
    }
  }
  add_frame(b, 1, WS_OP_CLOSE, p, n, masked);
}

/* The close code in the last close frame of a server's output (after its
 * HTTP response), -1 if none, 0 if it had no code. */
static int out_close_code(const buf *tx, int masked_expected) {
  const unsigned char *p = tx->d;
  size_t len = tx->len, off;
  int code = -1;
  off = 0;
  if (len >= 4 && (memcmp(p, "HTTP", 4) == 0 || memcmp(p, "GET ", 4) == 0)) {
    size_t i;
    for (i = 0; i + 3 < len; i++)
      if (memcmp(p + i, "\r\n\r\n", 4) == 0) break;
    off = i + 4;
  }
  while (off < len) {
    ws_frame f;
    size_t hl;
    if (ws_frame_parse(p + off, len - off, &f, &hl) != WS_OK) return -2;
    if (f.masked != masked_expected) return -3;
    if (f.opcode == WS_OP_CLOSE) {
      unsigned char d[125];
      memcpy(d, p + off + hl, (size_t)f.len);
      if (f.masked) ws_mask(d, (size_t)f.len, f.mask, 0);
      code = f.len >= 2 ? (d[0] << 8 | d[1]) : 0;
    }
    off += hl + (size_t)f.len;
  }
  return code;
}

/* ---------------------------------------------------------------------
 * Scripts: one server connection, every input and output mode
 * ------------------------------------------------------------------- */

enum {
  IN_ALL, IN_BYTES, IN_READ1, IN_READ7, IN_SPLIT,
  IN_INPLACE,       /* all at once through ws_conn_feed_inplace() */
  IN_INPLACE7,      /* 7 bytes per ws_conn_feed_inplace() */
  IN_SPLIT_INPLACE, /* two ws_conn_feed_inplace() calls, cut at `split` */
  IN__N
};

/* ws_conn_feed_inplace() on a scratch copy that is then scribbled over, so
 * a connection that kept a pointer into it would see garbage. */
static void feed_inplace(ws_conn *c, const unsigned char *d, size_t n) {
  unsigned char *m = (unsigned char *)malloc(n ? n : 1);
  if (m == NULL) abort();
  memcpy(m, d, n);
  ws_conn_feed_inplace(c, m, n);
  memset(m, 0xA5, n);
  free(m);
}
enum { OUT_ALL, OUT_BYTE, OUT_BLOCK, OUT__N };

typedef struct run_result {
  buf log, tx;
  int closes, state, err;
  size_t queued;
} run_result;

typedef void (*cfg_fn)(ws_config *cfg);

/* Runs `in` through a fresh server connection. split: the cut offset for
 * IN_SPLIT. eof: end of stream after the input. */
static void run_script(const buf *in, int inmode, int outmode, size_t split,
                       int eof, cfg_fn tweak, run_result *r) {
  ws_config cfg;
  endpoint e;
  buf rx = {0}, tx = {0};
  size_t i;
  ws_config_init(&cfg, WS_SERVER);
  if (tweak) tweak(&cfg);
  ep_init(&e, &cfg, &rx, &tx);
  e.pick = "chat";
  e.write_max = outmode == OUT_BYTE ? 1 : outmode == OUT_BLOCK ? 3 : 0;
  e.write_block = outmode == OUT_BLOCK;
  switch (inmode) {
    case IN_ALL:
      ws_conn_feed(&e.c, in->d, in->len);
      break;
    case IN_BYTES:
      for (i = 0; i < in->len; i++) {
        ws_conn_feed(&e.c, in->d + i, 1);
        if (outmode != OUT_ALL) ep_drain(&e);
      }
      break;
    case IN_SPLIT:
      ws_conn_feed(&e.c, in->d, split);
      ws_conn_feed(&e.c, in->d + split, in->len - split);
      break;
    case IN_INPLACE:
    case IN_INPLACE7:
      /* The head first, so the frames after it meet an open connection. */
      {
        size_t h;
        for (h = 0; h + 4 <= in->len && memcmp(in->d + h, "\r\n\r\n", 4); h++)
          ;
        h = h + 4 <= in->len ? h + 4 : in->len;
        feed_inplace(&e.c, in->d, h);
        i = h;
      }
      if (inmode == IN_INPLACE) {
        feed_inplace(&e.c, in->d + i, in->len - i);
        break;
      }
      for (; i < in->len; i += 7) {
        feed_inplace(&e.c, in->d + i, in->len - i < 7 ? in->len - i : 7);
        if (outmode != OUT_ALL) ep_drain(&e);
      }
      break;
    case IN_SPLIT_INPLACE:
      feed_inplace(&e.c, in->d, split);
      feed_inplace(&e.c, in->d + split, in->len - split);
      break;
    default:
      buf_put(&rx, in->d, in->len);
      e.read_max = inmode == IN_READ1 ? 1 : 7;
      for (i = 0; i < 4 * in->len + 10 && ws_conn_want_read(&e.c) &&
                  rx.off < rx.len;
           i++) {
        ws_conn_on_readable(&e.c);
        ep_drain(&e);
      }
      break;
  }
  ep_drain(&e);
  if (eof && ws_conn_state(&e.c) != WS_STATE_CLOSED) {
    e.eof = 1;
    rx.off = rx.len;
    ws_conn_on_readable(&e.c);
  }
  r->closes = e.closes;
  r->state = ws_conn_state(&e.c);
  r->err = ws_conn_error(&e.c);
  r->queued = ws_conn_queued(&e.c);
  r->log = e.log;
  memset(&e.log, 0, sizeof e.log);
  r->tx = tx;
  ep_free(&e);
  buf_free(&rx);
}

static void result_free(run_result *r) {
  buf_free(&r->log);
  buf_free(&r->tx);
}

/* Runs a script in every mode; checks all agree with the first, then
 * checks the expectations on it: `expect` lines must all appear in the log
 * in order, `close_code` is the code of the close frame the server sent
 * (-1: none). Returns nothing; records checks. */
static void script(const char *name, const buf *in, const char *expect,
                   int close_code, int eof, cfg_fn tweak) {
  run_result ref, r;
  int im, om;
  size_t cut;
  const char *at;
  run_script(in, IN_ALL, OUT_ALL, 0, eof, tweak, &ref);
  /* Expectations on the reference run. */
  at = (const char *)ref.log.d;
  buf_put(&ref.log, "", 1); /* NUL for strstr */
  ref.log.len--;
  at = (const char *)ref.log.d;
  {
    const char *e = expect;
    while (e && *e) {
      const char *nl = strchr(e, '\n');
      size_t n = nl ? (size_t)(nl - e) : strlen(e);
      char line[256];
      const char *hit;
      memcpy(line, e, n);
      line[n] = '\0';
      hit = at ? strstr(at, line) : NULL;
      if (!CHECK(hit != NULL))
        printf("    %s: expected \"%s\" in log:\n%s\n", name, line,
               ref.log.d ? (const char *)ref.log.d : "");
      else
        at = hit + n;
      e += n + (nl ? 1 : 0);
    }
  }
  if (!CHECK(ref.closes <= 1)) printf("    %s: %d closes\n", name, ref.closes);
  {
    int got = out_close_code(&ref.tx, 0);
    if (close_code != -9) {
      CHECK_INT(got, close_code);
      if (got != close_code) printf("    in script %s\n", name);
    }
  }
  /* Every other mode agrees. */
  for (im = 0; im < IN__N; im++) {
    for (om = 0; om < OUT__N; om++) {
      if (im == IN_SPLIT || im == IN_SPLIT_INPLACE) continue;
      if ((im == IN_BYTES || im == IN_READ1 || im == IN_INPLACE7) &&
          in->len > 300000)
        continue;
      if (im == IN_ALL && om == OUT_ALL) continue;
      run_script(in, im, om, 0, eof, tweak, &r);
      if (!CHECK(buf_eq(&r.log, &ref.log) && buf_eq(&r.tx, &ref.tx) &&
                 r.closes == ref.closes && r.err == ref.err))
        printf("    %s: mode in=%d out=%d differs:\n%.*s\n--- ref:\n%.*s\n", name,
               im, om, (int)r.log.len, (const char *)r.log.d, (int)ref.log.len,
               (const char *)ref.log.d);
      result_free(&r);
    }
  }
  if (in->len <= 4096) {
    for (cut = 1; cut < in->len; cut++) {
      run_script(in, IN_SPLIT, OUT_ALL, cut, eof, tweak, &r);
      if (!CHECK(buf_eq(&r.log, &ref.log) && buf_eq(&r.tx, &ref.tx) &&
                 r.err == ref.err))
        printf("    %s: cut at %lu differs\n", name, (unsigned long)cut);
      result_free(&r);
      run_script(in, IN_SPLIT_INPLACE, OUT_ALL, cut, eof, tweak, &r);
      if (!CHECK(buf_eq(&r.log, &ref.log) && buf_eq(&r.tx, &ref.tx) &&
                 r.err == ref.err))
        printf("    %s: in place, cut at %lu differs\n", name,
               (unsigned long)cut);
      result_free(&r);
    }
  }
  result_free(&ref);
}

/* ---------------------------------------------------------------------
 * Server scripts: the protocol rules
 * ------------------------------------------------------------------- */

static void test_server_basic(void) {
  buf in = {0};
  unsigned char big[70000];
  size_t i;
  for (i = 0; i < sizeof big; i++) big[i] = (unsigned char)(i * 7);
  buf_puts(&in, REQ);
  cframe(&in, 1, WS_OP_TEXT, "Hello");
  add_frame(&in, 1, WS_OP_BINARY, big, 0, 1);
  add_frame(&in, 1, WS_OP_BINARY, big, 125, 1);
  add_frame(&in, 1, WS_OP_BINARY, big, 126, 1);
  add_frame(&in, 1, WS_OP_BINARY, big, 127, 1);
  add_frame(&in, 1, WS_OP_BINARY, big, 65535, 1);
  add_frame(&in, 1, WS_OP_BINARY, big, 65536, 1);
  add_close(&in, 1000, "bye", 1);
  {
    char expect[1024];
    snprintf(expect, sizeof expect,
             "handshake /chat?room=1 protos=2\nopen chat\nmsg 1 5 %08lx\n"
             "msg 2 0 %08lx\nmsg 2 125 %08lx\nmsg 2 126 %08lx\n"
             "msg 2 127 %08lx\nmsg 2 65535 %08lx\nmsg 2 65536 %08lx\n"
             "close 1000 bye\n",
             fnv("Hello", 5), fnv(big, 0), fnv(big, 125), fnv(big, 126),
             fnv(big, 127), fnv(big, 65535), fnv(big, 65536));
    script("basic", &in, expect, 1000, 0, NULL);
  }
  buf_free(&in);
}

static void test_server_fragments(void) {
  buf in = {0};
  char expect[256];
  buf_puts(&in, REQ);
  cframe(&in, 0, WS_OP_TEXT, "Hel");
  cframe(&in, 1, WS_OP_PING, "p1");
  cframe(&in, 0, WS_OP_CONT, "");
  cframe(&in, 1, WS_OP_PONG, "p2");
  cframe(&in, 1, WS_OP_CONT, "lo");
  cframe(&in, 0, WS_OP_BINARY, "ab");
  cframe(&in, 1, WS_OP_CONT, "c");
  snprintf(expect, sizeof expect,
           "open chat\nping 2 p1\npong 2 p2\nmsg 1 5 %08lx\nmsg 2 3 %08lx\n",
           fnv("Hello", 5), fnv("abc", 3));
  script("fragments", &in, expect, -1, 0, NULL);
  buf_free(&in);
}

static void test_server_pong_reply(void) {
  /* The automatic pong carries the ping's payload, unmasked. */
  buf in = {0};
  run_result r;
  const unsigned char want[] = {0x8A, 0x05, 'H', 'e', 'l', 'l', 'o'};
  buf_puts(&in, REQ);
  cframe(&in, 1, WS_OP_PING, "Hello");
  run_script(&in, IN_ALL, OUT_ALL, 0, 0, NULL, &r);
  CHECK(r.tx.len >= sizeof want &&
        memcmp(r.tx.d + r.tx.len - sizeof want, want, sizeof want) == 0);
  result_free(&r);
  script("ping", &in, "ping 5 Hello\n", -1, 0, NULL);
  buf_free(&in);
}

typedef struct bad_case {
  const char *name;
  int b0;        /* first byte */
  const char *payload;
  int masked;
  int code;      /* expected close code */
} bad_case;

static void test_server_protocol_errors(void) {
  static const bad_case cases[] = {
      {"rsv1 text", 0x80 | 0x40 | 1, "x", 1, 1002},
      {"rsv2 binary", 0x80 | 0x20 | 2, "x", 1, 1002},
      {"rsv3 ping", 0x80 | 0x10 | 9, "x", 1, 1002},
      {"opcode 3", 0x83, "", 1, 1002},
      {"opcode 7", 0x87, "", 1, 1002},
      {"opcode 11", 0x8B, "", 1, 1002},
      {"opcode 15", 0x8F, "", 1, 1002},
      {"fragmented ping", 0x09, "x", 1, 1002},
      {"fragmented close", 0x08, "", 1, 1002},
      {"continuation without start", 0x80, "x", 1, 1002},
      {"unmasked client frame", 0x81, "hello", 0, 1002},
      {"invalid utf-8", 0x81, "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80", 1, 1007},
      {"close 1 byte", 0x88, "\x03", 1, 1002},
      {"close code 999", 0x88, "\x03\xe7", 1, 1002},
      {"close code 1005", 0x88, "\x03\xed", 1, 1002},
      {"close code 1006", 0x88, "\x03\xee", 1, 1002},
      {"close code 1015", 0x88, "\x03\xf7", 1, 1002},
      {"close code 2999", 0x88, "\x0b\xb7", 1, 1002},
      {"close code 5000", 0x88, "\x13\x88", 1, 1002},
      {"close reason utf-8", 0x88, "\x03\xe8\xff", 1, 1007},
  };
  size_t i;
  for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    buf in = {0};
    char expect[64];
    buf_puts(&in, REQ);
    cframe(&in, 1, WS_OP_TEXT, "before"); /* delivered before the error */
    add_frame_ex(&in, cases[i].b0, strlen(cases[i].payload), cases[i].payload,
                 strlen(cases[i].payload), cases[i].masked);
    cframe(&in, 1, WS_OP_TEXT, "after"); /* never delivered */
    snprintf(expect, sizeof expect, "msg 1 6 %08lx\nclose %d", fnv("before", 6),
             cases[i].code);
    script(cases[i].name, &in, expect, cases[i].code, 0, NULL);
    {
      run_result r;
      run_script(&in, IN_ALL, OUT_ALL, 0, 0, NULL, &r);
      CHECK(strstr(cstr(&r.log), "msg 1 5") == NULL);
      CHECK_INT(r.state, WS_STATE_CLOSED); /* server closes TCP first */
      CHECK_INT(r.closes, 1);
      result_free(&r);
    }
    buf_free(&in);
  }
}

static void test_server_fragment_rules(void) {
  buf in = {0};
  /* A new data frame inside a fragmented message. */
  buf_puts(&in, REQ);
  cframe(&in, 0, WS_OP_TEXT, "a");
  cframe(&in, 1, WS_OP_TEXT, "b");
  script("text inside fragmented", &in, "close 1002", 1002, 0, NULL);
  in.len = 0;
  /* A control frame longer than 125 bytes. */
  {
    char p[126];
    memset(p, 'x', sizeof p);
    buf_puts(&in, REQ);
    add_frame(&in, 1, WS_OP_PING, p, sizeof p, 1);
    script("ping 126", &in, "close 1002", 1002, 0, NULL);
  }
  in.len = 0;
  /* A 64-bit length with the top bit set: rejected on its third byte. */
  buf_puts(&in, REQ);
  buf_put(&in, "\x82\xff\x80\x00\x00\x00\x00\x00\x00\x00", 10);
  script("length top bit", &in, "close 1002", 1002, 0, NULL);
  in.len = 0;
  /* Non-minimal lengths. */
  buf_puts(&in, REQ);
  buf_put(&in, "\x82\xfe\x00\x05", 4);
  script("non-minimal 16", &in, "close 1002", 1002, 0, NULL);
  buf_free(&in);
}

static void test_server_utf8_fail_fast(void) {
  /* The invalid byte arrives in a non-final fragment: 1007 at once, before
   * the message could complete. */
  buf in = {0};
  buf_puts(&in, REQ);
  cframe(&in, 0, WS_OP_TEXT, "\xce\xba\xe1\xbd\xb9");
  cframe(&in, 0, WS_OP_CONT, "\xcf\x83\xce\xbc\xce\xb5\xf4\x90");
  script("utf8 fail fast", &in, "close 1007", 1007, 0, NULL);
  /* Truncated sequence at the end of the message. */
  in.len = 0;
  buf_puts(&in, REQ);
  cframe(&in, 0, WS_OP_TEXT, "ok");
  cframe(&in, 1, WS_OP_CONT, "\xe2\x82");
  script("utf8 truncated", &in, "close 1007", 1007, 0, NULL);
  /* Valid text split inside a code point across fragments. */
  in.len = 0;
  buf_puts(&in, REQ);
  cframe(&in, 0, WS_OP_TEXT, "\xe2");
  cframe(&in, 0, WS_OP_CONT, "\x82");
  cframe(&in, 1, WS_OP_CONT, "\xac");
  {
    char expect[64];
    snprintf(expect, sizeof expect, "msg 1 3 %08lx\n", fnv("\xe2\x82\xac", 3));
    script("utf8 across fragments", &in, expect, -1, 0, NULL);
  }
  buf_free(&in);
}

static void limits_small(ws_config *cfg) {
  cfg->max_message = 1000;
  cfg->max_frame = 600;
}

/* No limit short of 2^64: a frame's length is then bounded only by what
 * the build counts lengths in. */
static void limits_none(ws_config *cfg) {
  cfg->max_frame = UINT64_MAX;
  cfg->max_message = UINT64_MAX;
  cfg->stream = 1;
}

static void test_server_limits(void) {
  buf in = {0};
  char p[1001];
  memset(p, 'a', sizeof p);
  /* Frame over max_frame: 1009 from the header alone. */
  buf_puts(&in, REQ);
  add_frame_ex(&in, 0x82, 601, p, 0, 1);
  script("frame over limit", &in, "close 1009", 1009, 0, limits_small);
  /* Message over max_message across fragments. */
  in.len = 0;
  buf_puts(&in, REQ);
  add_frame(&in, 0, WS_OP_BINARY, p, 500, 1);
  add_frame(&in, 1, WS_OP_CONT, p, 501, 1);
  script("message over limit", &in, "close 1009", 1009, 0, limits_small);
  /* Exactly at the limit is fine. */
  in.len = 0;
  buf_puts(&in, REQ);
  add_frame(&in, 0, WS_OP_BINARY, p, 500, 1);
  add_frame(&in, 1, WS_OP_CONT, p, 500, 1);
  script("message at limit", &in, "msg 2 1000", -1, 0, limits_small);
  /* A frame announcing 2^62 bytes with default limits: refused at the
   * header, nothing allocated for it. */
  in.len = 0;
  buf_puts(&in, REQ);
  buf_put(&in, "\x82\xff\x40\x00\x00\x00\x00\x00\x00\x00\x01\x02\x03\x04", 14);
  script("2^62 frame", &in, "close 1009", 1009, 0, NULL);
  /* 2^32 + 3 bytes, followed by 3: a length cut to 32 bits (size_t on a
   * 32-bit machine, make cross) would take it as a 3-byte frame. */
  in.len = 0;
  buf_puts(&in, REQ);
  buf_put(&in, "\x82\xff\x00\x00\x00\x01\x00\x00\x00\x03\x01\x02\x03\x04"
               "abc", 17);
  script("2^32 + 3 frame", &in, "close 1009", 1009, 0, NULL);
  /* 2^32 bytes with no limits set. The small build counts lengths in
   * size_t: where that has 32 bits, the header is refused with 1009, as
   * one over max_frame is (make cross runs this file so on i686, as
   * i686-small).
   * Elsewhere the frame is taken and its first bytes wait for the rest. */
  in.len = 0;
  buf_puts(&in, REQ);
  buf_put(&in, "\x82\xff\x00\x00\x00\x01\x00\x00\x00\x00\x01\x02\x03\x04"
               "abc", 17);
#if WS_SMALL && SIZE_MAX < UINT64_MAX
  script("2^32 frame, no limits", &in, "close 1009", 1009, 0, limits_none);
#else
  script("2^32 frame, no limits", &in, "", -1, 0, limits_none);
#endif
  buf_free(&in);
}

static void test_server_close_handshake(void) {
  buf in = {0};
  /* Close without code: echoed without code. */
  buf_puts(&in, REQ);
  add_close(&in, -1, NULL, 1);
  cframe(&in, 1, WS_OP_TEXT, "ignored after close");
  script("close no code", &in, "open chat\nclose 1005 \n", 0, 0, NULL);
  /* Valid codes are echoed. */
  {
    static const int codes[] = {1000, 1001, 1002, 1003, 1007, 1008, 1009,
                                1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999};
    size_t i;
    for (i = 0; i < sizeof codes / sizeof codes[0]; i++) {
      char expect[64];
      in.len = 0;
      buf_puts(&in, REQ);
      add_close(&in, codes[i], "why", 1);
      snprintf(expect, sizeof expect, "close %d why\n", codes[i]);
      script("close code", &in, expect, codes[i], 0, NULL);
    }
  }
  /* EOF without a close frame: 1006, no close frame sent. */
  in.len = 0;
  buf_puts(&in, REQ);
  cframe(&in, 1, WS_OP_TEXT, "x");
  script("eof", &in, "close 1006", -1, 1, NULL);
  buf_free(&in);
}

static void test_server_handshake_errors(void) {
  static const struct {
    const char *req, *status;
  } cases[] = {
      {"POST / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
       "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
       "HTTP/1.1 400 "},
      {"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
       "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n",
       "HTTP/1.1 426 Upgrade Required\r\nSec-WebSocket-Version: 13\r\n"},
      {"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
       "Sec-WebSocket-Key: c2hvcnQ=\r\nSec-WebSocket-Version: 13\r\n\r\n",
       "HTTP/1.1 400 "},
      {"\x16\x03\x01\x02\x00\x01", "HTTP/1.1 400 "},
  };
  size_t i;
  for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    buf in = {0};
    run_result r;
    buf_puts(&in, cases[i].req);
    script("handshake error", &in, "close 1006", -1, 0, NULL);
    run_script(&in, IN_ALL, OUT_ALL, 0, 0, NULL, &r);
    CHECK(r.tx.len >= strlen(cases[i].status) &&
          memcmp(r.tx.d, cases[i].status, strlen(cases[i].status)) == 0);
    CHECK_INT(r.state, WS_STATE_CLOSED);
    result_free(&r);
    buf_free(&in);
  }
}

static void test_server_bare_lf(void) {
  /* Bare LF line endings: 400 as soon as the first one arrives, even far
   * into the head (fed a byte at a time). */
  buf in = {0};
  run_result r;
  buf_puts(&in, "GET /a/rather/long/path/to/get/past/the/prefix HTTP/1.1\nHost: a\n");
  run_script(&in, IN_BYTES, OUT_ALL, 0, 0, NULL, &r);
  CHECK(r.tx.len > 12 && memcmp(r.tx.d, "HTTP/1.1 400", 12) == 0);
  CHECK_INT(r.state, WS_STATE_CLOSED);
  result_free(&r);
  buf_free(&in);
}

static void hs_small(ws_config *cfg) { cfg->max_handshake = 512; }

static void test_server_oversized_handshake(void) {
  /* A head over max_handshake gets 431 as soon as the limit is crossed,
   * without waiting for (or buffering) the rest. */
  buf in = {0};
  run_result r;
  int i;
  buf_puts(&in, "GET / HTTP/1.1\r\nHost: a\r\n");
  for (i = 0; i < 100; i++) buf_puts(&in, "X-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
  run_script(&in, IN_ALL, OUT_ALL, 0, 0, hs_small, &r);
  CHECK(r.tx.len > 12 && memcmp(r.tx.d, "HTTP/1.1 431", 12) == 0);
  CHECK_INT(r.state, WS_STATE_CLOSED);
  result_free(&r);
  run_script(&in, IN_READ7, OUT_ALL, 0, 0, hs_small, &r);
  CHECK(r.tx.len > 12 && memcmp(r.tx.d, "HTTP/1.1 431", 12) == 0);
  result_free(&r);
  buf_free(&in);
}

/* ---------------------------------------------------------------------
 * Server: application decisions, buffers, allocation
 * ------------------------------------------------------------------- */

static void test_server_refuse_and_headers(void) {
  ws_config cfg;
  endpoint e;
  buf rx = {0}, tx = {0};
  ws_config_init(&cfg, WS_SERVER);
  ep_init(&e, &cfg, &rx, &tx);
  e.refuse = 403;
  ws_conn_feed(&e.c, REQ, strlen(REQ));
  CHECK(tx.len > 12 && memcmp(tx.d, "HTTP/1.1 403 Forbidden\r\n", 24) == 0);
  CHECK_INT(ws_conn_state(&e.c), WS_STATE_CLOSED);
  CHECK_INT(e.closes, 1);
  CHECK_INT(e.opened, 0);
  ep_free(&e);
  CHECK_INT(e.closes, 1); /* free after close: no second on_close */
  buf_free(&tx);

  ep_init(&e, &cfg, &rx, &tx);
  e.pick = "superchat";
  e.extra[0].name = "X-Server";
  e.extra[0].name_len = 8;
  e.extra[0].value = "ws";
  e.extra[0].value_len = 2;
  e.n_extra = 1;
  ws_conn_feed(&e.c, REQ, strlen(REQ));
  buf_put(&tx, "", 1);
  CHECK(strstr((const char *)tx.d, "Sec-WebSocket-Protocol: superchat\r\n") != NULL);
  CHECK(strstr((const char *)tx.d, "X-Server: ws\r\n") != NULL);
  CHECK(strstr((const char *)tx.d, "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n") != NULL);
  CHECK_INT(ws_conn_state(&e.c), WS_STATE_OPEN);
  ep_free(&e);
  CHECK_INT(e.closes, 1); /* freeing an open connection aborts it: 1006 */
  CHECK_INT(e.close_code, 1006);
  buf_free(&tx);

  /* Choosing a protocol that was not offered is refused (500). */
  ep_init(&e, &cfg, &rx, &tx);
  e.pick = "nope";
  ws_conn_feed(&e.c, REQ, strlen(REQ));
  CHECK(tx.len > 12 && memcmp(tx.d, "HTTP/1.1 500", 12) == 0);
  ep_free(&e);
  buf_free(&tx);

  /* A header value with CR/LF is refused (500), never sent. */
  ep_init(&e, &cfg, &rx, &tx);
  e.extra[0].name = "X-Bad";
  e.extra[0].name_len = 5;
  e.extra[0].value = "a\r\nSet-Cookie: x";
  e.extra[0].value_len = 16;
  e.n_extra = 1;
  ws_conn_feed(&e.c, REQ, strlen(REQ));
  CHECK(tx.len > 12 && memcmp(tx.d, "HTTP/1.1 500", 12) == 0);
  ep_free(&e);
  buf_free(&tx);
  buf_free(&rx);
}

static void test_server_plain_http(void) {
  /* A plain GET is the application's to answer; others get its status. */
  ws_config cfg;
  endpoint e;
  buf rx = {0}, tx = {0};
  const char *get = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
  const char *want =
      "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 5\r\n"
      "Content-Type: text/plain\r\n\r\nhello";
  ws_config_init(&cfg, WS_SERVER);
  ep_init(&e, &cfg, &rx, &tx);
  ws_conn_feed(&e.c, get, strlen(get));
  CHECK(tx.len == strlen(want) && memcmp(tx.d, want, tx.len) == 0);
  CHECK_INT(ws_conn_state(&e.c), WS_STATE_CLOSED);
  CHECK_INT(e.closes, 1);
  ep_free(&e);
  buf_free(&tx);
  ep_init(&e, &cfg, &rx, &tx);
  get = "GET /nope HTTP/1.1\r\nHost: a\r\n\r\n";
  ws_conn_feed(&e.c, get, strlen(get));
  CHECK(tx.len > 12 && memcmp(tx.d, "HTTP/1.1 404", 12) == 0);
  ep_free(&e);
  buf_free(&tx);
  /* Outside on_http, ws_http_respond is refused. */
  ep_init(&e, &cfg, &rx, &tx);
  CHECK_INT(ws_http_respond(&e.c, 200, NULL, 0, NULL, 0), WS_ESTATE);
  ep_free(&e);
}

#if !WS_SMALL
/* Records the sizes a connection asks its allocator for. */
typedef struct {
  size_t sizes[64];
  int n;
} size_log;

static void *size_log_realloc(void *ptr, size_t n, void *ctx) {
  size_log *l = (size_log *)ctx;
  if (n && l->n < 64) l->sizes[l->n++] = n;
  if (n == 0) {
    free(ptr);
    return NULL;
  }
  return realloc(ptr, n);
}
#endif

static void test_buffer_sizes(void) {
  /* Input and output grow through powers of two less 64 bytes: with an
   * allocator's header they fill a size class or whole pages, not one
   * page more (a 128 KiB buffer plus its header is 33 pages, or a 256
   * KiB chunk class). Not in the small build, which keeps plain doubling. */
#if !WS_SMALL
  ws_config cfg;
  endpoint e;
  buf rx = {0}, tx = {0}, in = {0};
  size_log l;
  static unsigned char big[300000];
  int i, grew = 0;
  memset(&l, 0, sizeof l);
  ws_config_init(&cfg, WS_SERVER);
  cfg.realloc = size_log_realloc;
  cfg.alloc_ctx = &l;
  ep_init(&e, &cfg, &rx, &tx);
  ws_conn_feed(&e.c, REQ, strlen(REQ));
  ep_drain(&e);
  CHECK_INT(ws_conn_state(&e.c), WS_STATE_OPEN);
  l.n = 0;
  /* input: a message in 1,000-byte fragments, fed one at a time */
  for (i = 0; i < 200; i++) {
    in.len = 0;
    add_frame(&in, 0, i ? WS_OP_CONT : WS_OP_BINARY, big, 1000, 1);
    ws_conn_feed(&e.c, in.d, in.len);
  }
  /* output: a peer that does not read, and a 300 KB message */
  e.write_stall = 1;
  CHECK_INT(ws_send(&e.c, WS_OP_BINARY, big, sizeof big), WS_OK);
  CHECK(l.n >= 9); /* input 2 KiB to 256 KiB, then output at once */
  for (i = 0; i < l.n; i++) {
    size_t t = l.sizes[i] + 64;
    CHECK((t & (t - 1)) == 0);
    if (l.sizes[i] > 128 * 1024) grew++;
  }
  CHECK(grew >= 2); /* input and output past 128 KiB */
  e.write_stall = 0;
  ep_free(&e);
  buf_free(&tx);
  buf_free(&in);
#endif
}

static void test_feed_inplace(void) {
  /* Whole frames are delivered from the caller's buffer, allocating
   * nothing; a frame cut by the end of the buffer is copied in and
   * finished from the next one. */
  ws_config cfg;
  endpoint e;
  buf rx = {0}, tx = {0}, in = {0};
  counting_alloc a = {0, 0, 0, 0};
  unsigned char big[3000];
  size_t i, n;
  ws_config_init(&cfg, WS_SERVER);
  cfg.realloc = counting_realloc;
  cfg.alloc_ctx = &a;
  ep_init(&e, &cfg, &rx, &tx);
  ws_conn_feed(&e.c, REQ, strlen(REQ));
  ep_drain(&e);
  CHECK_INT(ws_conn_state(&e.c), WS_STATE_OPEN);
  CHECK_INT(a.live, 0); /* nothing held once the 101 is out */
  memset(big, 'z', sizeof big);
  for (i = 0; i < 40; i++) {
    add_frame(&in, 1, i % 2 ? WS_OP_TEXT : WS_OP_BINARY, big, i * 70, 1);
    if (i == 20) cframe(&in, 1, WS_OP_PONG, "p");
  }
  a.calls = 0;
  ws_conn_feed_inplace(&e.c, in.d, in.len);
  CHECK_INT(e.nmsgs, 40);
  CHECK_INT(ws_conn_buffered(&e.c), 0);
  if (!WS_SMALL) { /* the small build copies, as ws_conn_feed() does */
    CHECK_INT(a.calls, 0);
    CHECK((const unsigned char *)e.last_data > in.d &&
          (const unsigned char *)e.last_data < in.d + in.len);
    /* The payload was unmasked where it lay. */
    CHECK(memcmp(in.d + in.len - 39 * 70, big, 39 * 70) == 0);
  }
  /* Cut inside a frame: the head of it is copied in, then finished. */
  in.len = 0;
  add_frame(&in, 1, WS_OP_BINARY, big, 2000, 1);
  add_frame(&in, 1, WS_OP_TEXT, "hi", 2, 1);
  n = 700;
  ws_conn_feed_inplace(&e.c, in.d, n);
  CHECK(ws_conn_buffered(&e.c) > 0);
  CHECK(a.live > 0);
  ws_conn_feed_inplace(&e.c, in.d + n, in.len - n);
  CHECK_INT(e.nmsgs, 42);
  CHECK_INT(ws_conn_buffered(&e.c), 0);
  CHECK_INT(a.live, 0);
  /* Bad UTF-8 in a whole frame: 1007, as on the copying path. */
  in.len = 0;
  add_frame(&in, 1, WS_OP_TEXT, "\xc3\x28", 2, 1);
  tx.len = 0;
  ws_conn_feed_inplace(&e.c, in.d, in.len);
  ep_drain(&e);
  CHECK_INT(out_close_code(&tx, 0), 1007);
  CHECK_INT(e.nmsgs, 42);
  ep_free(&e);
  buf_free(&rx);
  buf_free(&tx);
  buf_free(&in);
}

/* ---------------------------------------------------------------------
 * Frame rules: one table, both roles, both feeds
 * ------------------------------------------------------------------- */

/* One frame of a rules case, built for the side that receives it. */
typedef struct rule_frame {
  int b0;        /* FIN, RSV and opcode, as sent (0 and p NULL: no frame) */
  const char *p; /* payload */
  size_t n;      /* its length: 0 for strlen(p); more: padded with 'x' */
  int form;      /* length form: 0 the smallest, 16 or 64 forced, 63 the
                    64-bit form with its top bit set */
  int bad_mask;  /* masked the wrong way for the receiver */
} rule_frame;

typedef struct rule_case {
  const char *name;
  rule_frame f[4];
  int code;           /* close code the receiver sends (-1: none) */
  int err;            /* its error afterwards */
  const char *expect; /* log lines that must appear, in order */
} rule_case;

static void rule_frame_add(buf *b, const rule_frame *f, int role) {
  static const uint8_t key[4] = {0x37, 0xfa, 0x21, 0x3d};
  size_t n = f->n ? f->n : strlen(f->p), pl = strlen(f->p), hl = 2, at, i;
  int masked = (role == WS_SERVER) != (f->bad_mask != 0);
  unsigned char h[14];
  uint64_t len = n;
  h[0] = (unsigned char)f->b0;
  if (f->form == 0 && n < 126) {
    h[1] = (unsigned char)n;
  } else if (f->form == 16 || (f->form == 0 && n <= 0xFFFF)) {
    h[1] = 126;
    h[2] = (unsigned char)(n >> 8);
    h[3] = (unsigned char)n;
    hl = 4;
  } else {
    if (f->form == 63) len |= (uint64_t)1 << 63;
    h[1] = 127;
    for (i = 0; i < 8; i++) h[2 + i] = (unsigned char)(len >> (56 - 8 * i));
    hl = 10;
  }
  if (masked) {
    h[1] |= 0x80;
    memcpy(h + hl, key, 4);
    hl += 4;
  }
  buf_put(b, h, hl);
  at = b->len;
  for (i = 0; i < n; i++) buf_put(b, i < pl ? f->p + i : "x", 1);
  if (masked) ws_mask(b->d + at, n, key, 0);
}

enum { FEED_COPY, FEED_INPLACE, FEED_BYTES, FEED_INPLACE_CUT, FEED__N };

typedef struct rule_result {
  buf log;
  int rc, err, sent, state, closes, close_code;
} rule_result;

/* Opens a connection of `role` over memory (max_frame 600, max_message
 * 1000), feeds `in` as `how` says (FEED_INPLACE_CUT: two in-place calls cut
 * at `cut`) and records what came of it. */
static void rule_run(int role, const buf *in, int how, size_t cut,
                     rule_result *r) {
  ws_config cfg;
  endpoint e;
  buf rx = {0}, tx = {0};
  size_t i;
  ws_config_init(&cfg, role);
  limits_small(&cfg);
  ep_init(&e, &cfg, &rx, &tx);
  if (role == WS_SERVER) {
    ws_conn_feed(&e.c, REQ, strlen(REQ));
  } else {
    ws_client_opts o;
    char key[25], acc[29];
    memset(&o, 0, sizeof o);
    o.host = "h";
    CHECK_INT(ws_client_start(&e.c, &o), WS_OK);
    ws__b64_encode(WS__P(&e.c)->in->d, 16, key);
    ws_accept_key(key, 24, acc);
    buf_puts(&rx, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                  "Connection: Upgrade\r\nSec-WebSocket-Accept: ");
    buf_puts(&rx, acc);
    buf_puts(&rx, "\r\n\r\n");
    ws_conn_on_readable(&e.c);
  }
  ep_drain(&e);
  CHECK_INT(ws_conn_state(&e.c), WS_STATE_OPEN);
  e.log.len = 0;
  tx.len = 0;
  r->rc = WS_OK;
  switch (how) {
    case FEED_COPY:
      r->rc = ws_conn_feed(&e.c, in->d, in->len);
      break;
    case FEED_INPLACE:
    case FEED_INPLACE_CUT: {
      /* A scratch copy, scribbled over afterwards: nothing may be kept. */
      unsigned char *m = (unsigned char *)malloc(in->len);
      if (m == NULL) abort();
      memcpy(m, in->d, in->len);
      if (how == FEED_INPLACE_CUT) {
        r->rc = ws_conn_feed_inplace(&e.c, m, cut);
        if (r->rc == WS_OK)
          r->rc = ws_conn_feed_inplace(&e.c, m + cut, in->len - cut);
      } else {
        r->rc = ws_conn_feed_inplace(&e.c, m, in->len);
      }
      memset(m, 0xA5, in->len);
      free(m);
      break;
    }
    default:
      for (i = 0; i < in->len && r->rc == WS_OK; i++)
        r->rc = ws_conn_feed(&e.c, in->d + i, 1);
      break;
  }
  ep_drain(&e);
  r->sent = out_close_code(&tx, role == WS_CLIENT);
  r->err = ws_conn_error(&e.c);
  r->state = ws_conn_state(&e.c);
  r->closes = e.closes;
  r->close_code = e.close_code;
  r->log = e.log;
  memset(&e.log, 0, sizeof e.log);
  ep_free(&e);
  buf_free(&rx);
  buf_free(&tx);
}

/* Every line of `expect` appears in `log`, in order. */
static int log_has(buf *log, const char *expect) {
  const char *at = cstr(log);
  while (*expect) {
    const char *nl = strchr(expect, '\n');
    size_t n = nl ? (size_t)(nl - expect) : strlen(expect);
    char line[128];
    memcpy(line, expect, n);
    line[n] = '\0';
    if ((at = strstr(at, line)) == NULL) return 0;
    at += n;
    expect += n + (nl ? 1 : 0);
  }
  return 1;
}

static void test_frame_rules_both_feeds(void) {
  /* Each case follows a good text frame "ok" and is followed by a text
   * frame "after", which a refused case must never deliver. */
  static const rule_case cases[] = {
      {"rsv1", {{0xC1, "x", 0, 0, 0}}, 1002, WS_EPROTO, ""},
      {"rsv2", {{0xA2, "x", 0, 0, 0}}, 1002, WS_EPROTO, ""},
      {"rsv3 ping", {{0x99, "x", 0, 0, 0}}, 1002, WS_EPROTO, ""},
      {"rsv1 continuation", {{0x01, "a", 0, 0, 0}, {0xC0, "b", 0, 0, 0}},
       1002, WS_EPROTO, ""},
      {"opcode 3", {{0x83, "", 0, 0, 0}}, 1002, WS_EPROTO, ""},
      {"opcode 7", {{0x87, "", 0, 0, 0}}, 1002, WS_EPROTO, ""},
      {"opcode 11", {{0x8B, "", 0, 0, 0}}, 1002, WS_EPROTO, ""},
      {"opcode 15", {{0x8F, "", 0, 0, 0}}, 1002, WS_EPROTO, ""},
      {"fragmented ping", {{0x09, "p", 0, 0, 0}}, 1002, WS_EPROTO, ""},
      {"fragmented close", {{0x08, "", 0, 0, 0}}, 1002, WS_EPROTO, ""},
      {"ping of 126", {{0x89, "", 126, 0, 0}}, 1002, WS_EPROTO, ""},
      {"pong, 16-bit length", {{0x8A, "p", 0, 16, 0}}, 1002, WS_EPROTO, ""},
      {"continuation first", {{0x80, "x", 0, 0, 0}}, 1002, WS_EPROTO, ""},
      {"text inside a message", {{0x01, "a", 0, 0, 0}, {0x81, "b", 0, 0, 0}},
       1002, WS_EPROTO, ""},
      {"binary inside a message",
       {{0x02, "a", 0, 0, 0}, {0x89, "p", 0, 0, 0}, {0x02, "b", 0, 0, 0}},
       1002, WS_EPROTO, ""},
      {"masked the wrong way", {{0x81, "hello", 0, 0, 1}}, 1002, WS_EPROTO, ""},
      {"ping masked the wrong way", {{0x89, "p", 0, 0, 1}}, 1002, WS_EPROTO, ""},
      {"16-bit length under 126", {{0x82, "", 5, 16, 0}}, 1002, WS_EPROTO, ""},
      {"64-bit length under 65536", {{0x82, "", 200, 64, 0}}, 1002, WS_EPROTO,
       ""},
      {"64-bit length top bit", {{0x82, "", 3, 63, 0}}, 1002, WS_EPROTO, ""},
      {"bad utf-8", {{0x81, "\xce\xba\xed\xa0\x80", 0, 0, 0}}, 1007, WS_EUTF8,
       ""},
      {"bad utf-8 across fragments",
       {{0x01, "\xce", 0, 0, 0}, {0x80, "\x28", 0, 0, 0}}, 1007, WS_EUTF8, ""},
      {"bad utf-8 in a first fragment",
       {{0x01, "ab\xc0", 0, 0, 0}}, 1007, WS_EUTF8, ""},
      {"utf-8 cut at the end", {{0x01, "a", 0, 0, 0}, {0x80, "\xe2\x82", 0, 0, 0}},
       1007, WS_EUTF8, ""},
      {"frame over max_frame", {{0x82, "", 601, 0, 0}}, 1009, WS_ETOOBIG, ""},
      {"text over max_frame", {{0x81, "", 601, 0, 0}}, 1009, WS_ETOOBIG, ""},
      {"message over max_message",
       {{0x02, "", 500, 0, 0}, {0x00, "", 400, 0, 0}, {0x80, "", 101, 0, 0}},
       1009, WS_ETOOBIG, ""},
      {"close of 1 byte", {{0x88, "\x03", 0, 0, 0}}, 1002, WS_EPROTO, ""},
      {"close code 1005", {{0x88, "\x03\xed", 0, 0, 0}}, 1002, WS_EPROTO, ""},
      {"close reason utf-8", {{0x88, "\x03\xe8\xff", 0, 0, 0}}, 1007, WS_EUTF8,
       ""},
      /* Good input: every feed delivers the same events. */
      {"fragmented text, pings between",
       {{0x01, "Hel", 0, 0, 0}, {0x89, "p1", 0, 0, 0}, {0x00, "", 0, 0, 0},
        {0x80, "lo", 0, 0, 0}},
       -1, WS_OK, "msg 1 2 \nping 2 p1\nmsg 1 5 \nmsg 1 5 \n"},
      {"pong, then fragments",
       {{0x8A, "p2", 0, 0, 0}, {0x02, "ab", 0, 0, 0}, {0x80, "c", 0, 0, 0}},
       -1, WS_OK, "pong 2 p2\nmsg 2 3 \nmsg 1 5 \n"},
      {"utf-8 split across fragments",
       {{0x01, "\xe2", 0, 0, 0}, {0x00, "\x82", 0, 0, 0}, {0x80, "\xac", 0, 0, 0}},
       -1, WS_OK, "msg 1 3 \nmsg 1 5 \n"},
      {"lengths 125, 126 and 600",
       {{0x82, "", 125, 0, 0}, {0x82, "", 126, 0, 0}, {0x81, "", 600, 0, 0}},
       -1, WS_OK, "msg 2 125 \nmsg 2 126 \nmsg 1 600 \nmsg 1 5 \n"},
      {"message at max_message",
       {{0x02, "", 500, 0, 0}, {0x89, "", 125, 0, 0}, {0x80, "", 500, 0, 0}},
       -1, WS_OK, "ping 125 \nmsg 2 1000 \nmsg 1 5 \n"},
      {"close", {{0x88, "\x03\xe8" "bye", 0, 0, 0}}, 1000, WS_OK, ""},
  };
  static const int roles[] = {WS_SERVER, WS_CLIENT};
  size_t i, k;
  for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    for (k = 0; k < 2; k++) {
      const rule_case *rc = &cases[i];
      int role = roles[k], how, j;
      static const rule_frame ok = {0x81, "ok", 0, 0, 0};
      static const rule_frame after = {0x81, "after", 0, 0, 0};
      buf in = {0};
      rule_result ref, r;
      size_t cut;
      rule_frame_add(&in, &ok, role);
      for (j = 0; j < 4 && (rc->f[j].b0 || rc->f[j].p); j++)
        rule_frame_add(&in, &rc->f[j], role);
      rule_frame_add(&in, &after, role);
      rule_run(role, &in, FEED_COPY, 0, &ref);
      /* The expectations, on the copying path. */
      /* + runs every check (a failure in one still shows the others) */
      if (!CHECK(ref.sent == rc->code) + !CHECK(ref.err == rc->err) +
          !CHECK(log_has(&ref.log, "msg 1 2 \n")) +
          !CHECK(log_has(&ref.log, rc->expect)) +
          !CHECK((strstr(cstr(&ref.log), "msg 1 5 ") != NULL) ==
                 (rc->code == -1)))
        printf("    %s, %s: sent %d err %d, log:\n%s", rc->name,
               role == WS_SERVER ? "server" : "client", ref.sent, ref.err,
               cstr(&ref.log));
      if (rc->code != -1 && rc->err != WS_OK) {
        CHECK_INT(ref.closes, 1);
        CHECK_INT(ref.close_code, rc->code);
      }
      /* Every other feed agrees. */
      for (how = FEED_INPLACE; how < FEED__N; how++) {
        for (cut = 1; cut < (how == FEED_INPLACE_CUT ? in.len : 2); cut++) {
          rule_run(role, &in, how, cut, &r);
          if (!CHECK(buf_eq(&r.log, &ref.log) && r.sent == ref.sent &&
                     r.err == ref.err && r.state == ref.state &&
                     r.closes == ref.closes &&
                     r.close_code == ref.close_code &&
                     (how != FEED_INPLACE || r.rc == ref.rc)))
            printf("    %s, %s, feed %d cut %lu: sent %d err %d rc %d, "
                   "copying path: sent %d err %d rc %d; log:\n%s--- "
                   "copying path:\n%s",
                   rc->name, role == WS_SERVER ? "server" : "client", how,
                   (unsigned long)cut, r.sent, r.err, r.rc, ref.sent, ref.err,
                   ref.rc, cstr(&r.log), cstr(&ref.log));
          buf_free(&r.log);
        }
      }
      buf_free(&ref.log);
      buf_free(&in);
    }
  }
}

/* Checks that tx holds, from off, one unmasked frame of op with payload
 * `want`; returns the offset after it. */
static size_t expect_frame(const buf *tx, size_t off, int op,
                           const unsigned char *want, size_t n) {
  ws_frame f;
  size_t hl;
  if (!CHECK(ws_frame_parse(tx->d + off, tx->len - off, &f, &hl) == WS_OK))
    return tx->len;
  CHECK_INT(f.opcode, op);
  CHECK(f.fin && !f.masked && f.len == n);
  CHECK(tx->len - off - hl >= n && memcmp(tx->d + off + hl, want, n) == 0);
  return off + hl + (size_t)f.len;
}

static void test_send_direct(void) {
  /* A large send with a writev transport leaves from the caller's buffer:
   * nothing is copied or allocated when the transport takes it all; what
   * it does not take is queued and follows; queued output goes first. */
  ws_config cfg;
  endpoint e;
  buf rx = {0}, tx = {0};
  counting_alloc a = {0, 0, 0, 0};
  static unsigned char big[100000];
  size_t i, off;
  for (i = 0; i < sizeof big; i++) big[i] = (unsigned char)(i * 7 + 3);
  ws_config_init(&cfg, WS_SERVER);
  cfg.realloc = counting_realloc;
  cfg.alloc_ctx = &a;
  ep_init(&e, &cfg, &rx, &tx);
  ws_conn_feed(&e.c, REQ, strlen(REQ));
  ep_drain(&e);
  tx.len = 0;
  a.calls = 0;
  CHECK_INT(ws_send(&e.c, WS_OP_BINARY, big, sizeof big), WS_OK);
  CHECK_INT(a.calls, 0);
  CHECK_INT(e.writevs, 1);
  CHECK_INT(ws_conn_queued(&e.c), 0);
  expect_frame(&tx, 0, WS_OP_BINARY, big, sizeof big);
  /* Below WS_DIRECT_MIN: the queue, as before. */
  tx.len = 0;
  CHECK_INT(ws_send(&e.c, WS_OP_BINARY, big, WS_DIRECT_MIN - 1), WS_OK);
  CHECK_INT(e.writevs, 1);
  expect_frame(&tx, 0, WS_OP_BINARY, big, WS_DIRECT_MIN - 1);
  /* Short writes: the rest is queued (a copy of it) and flushed later;
   * a small message queued before goes out first. */
  tx.len = 0;
  e.write_block = 1; /* the next write would block */
  e.block_toggle = 0;
  CHECK_INT(ws_send(&e.c, WS_OP_TEXT, "first", 5), WS_OK);
  CHECK_INT(ws_conn_queued(&e.c), 7);
  e.write_max = 5000; /* writev takes 5000 bytes, the next write blocks */
  CHECK_INT(ws_send(&e.c, WS_OP_BINARY, big, sizeof big), WS_OK);
  CHECK_INT(e.writevs, 2);
  CHECK_INT(tx.len, 5000);
  e.write_block = 0;
  memset(big, 0, 10); /* the caller may reuse its buffer at once */
  e.write_max = 0;
  ep_drain(&e);
  CHECK_INT(ws_conn_queued(&e.c), 0);
  off = expect_frame(&tx, 0, WS_OP_TEXT, (const unsigned char *)"first", 5);
  for (i = 0; i < 10; i++) big[i] = (unsigned char)(i * 7 + 3);
  off = expect_frame(&tx, off, WS_OP_BINARY, big, sizeof big);
  CHECK_INT(off, tx.len);
  /* A transport error in the middle ends the connection (1006). */
  e.write_fail = 1;
  CHECK_INT(ws_send(&e.c, WS_OP_BINARY, big, sizeof big), WS_ECLOSED);
  CHECK_INT(e.close_code, 1006);
  ep_free(&e);
  CHECK_INT(a.live, 0);
  buf_free(&rx);
  buf_free(&tx);
}

static void test_batch_stack(void) {
  /* Replies made while input is processed are gathered on the stack: an
   * echo that the transport takes at once allocates nothing; what it does
   * not take moves to the heap, in order; replies that outgrow the stack
   * move to the heap on the way; with no memory for the move, 1006. */
  ws_config cfg;
  endpoint e;
  buf rx = {0}, tx = {0}, in = {0};
  counting_alloc a = {0, 0, 0, 0};
  unsigned char pl[100];
  size_t i, off;
  long n;
  for (i = 0; i < sizeof pl; i++) pl[i] = (unsigned char)(i * 5 + 1);
  ws_config_init(&cfg, WS_SERVER);
  cfg.realloc = counting_realloc;
  cfg.alloc_ctx = &a;
  ep_init(&e, &cfg, &rx, &tx);
  e.echo = 1;
  ws_conn_feed(&e.c, REQ, strlen(REQ));
  ep_drain(&e);
  CHECK_INT(a.live, 0);
  /* One echo, taken at once: no allocation. */
  tx.len = 0;
  add_frame(&in, 1, WS_OP_BINARY, pl, 32, 1);
  a.calls = 0;
  CHECK_INT(ws_conn_feed_inplace(&e.c, in.d, in.len), WS_OK);
  if (!WS_SMALL) CHECK_INT(a.calls, 0); /* small: the input is copied */
  CHECK_INT(expect_frame(&tx, 0, WS_OP_BINARY, pl, 32), tx.len);
  /* The transport blocks: the replies wait on the heap and follow.
   * (Input fed in place is unmasked where it lies: built anew each time.) */
  tx.len = in.len = 0;
  add_frame(&in, 1, WS_OP_TEXT, "abc", 3, 1);
  add_frame(&in, 1, WS_OP_BINARY, pl, 100, 1);
  e.write_block = 1;
  e.block_toggle = 0;
  CHECK_INT(ws_conn_feed_inplace(&e.c, in.d, in.len), WS_OK);
  CHECK_INT(tx.len, 0);
  CHECK_INT(ws_conn_queued(&e.c), 5 + 102);
  CHECK_INT(a.live, 1);
  e.write_block = 0;
  ep_drain(&e);
  off = expect_frame(&tx, 0, WS_OP_TEXT, (const unsigned char *)"abc", 3);
  CHECK_INT(expect_frame(&tx, off, WS_OP_BINARY, pl, 100), tx.len);
  CHECK_INT(a.live, 0);
  /* A short write, then a blocked one: the rest, from the right byte. */
  tx.len = in.len = 0;
  add_frame(&in, 1, WS_OP_TEXT, "abc", 3, 1);
  add_frame(&in, 1, WS_OP_BINARY, pl, 100, 1);
  e.write_max = 4;
  e.fault = FAULT_EAGAIN;
  e.fault_at = e.io_calls + 2;
  CHECK_INT(ws_conn_feed_inplace(&e.c, in.d, in.len), WS_OK);
  CHECK_INT(tx.len, 4);
  CHECK_INT(ws_conn_queued(&e.c), 5 + 102 - 4);
  e.write_max = 0;
  e.fault_at = 0;
  ep_drain(&e);
  off = expect_frame(&tx, 0, WS_OP_TEXT, (const unsigned char *)"abc", 3);
  CHECK_INT(expect_frame(&tx, off, WS_OP_BINARY, pl, 100), tx.len);
  /* More replies than the stack holds (40 x ~100 bytes), after one still
   * queued from a blocked write: all of them, in order. */
  tx.len = in.len = 0;
  e.write_block = 1;
  e.block_toggle = 0;
  CHECK_INT(ws_send(&e.c, WS_OP_TEXT, "zz", 2), WS_OK);
  for (i = 0; i < 40; i++) add_frame(&in, 1, WS_OP_BINARY, pl, 100 - i, 1);
  CHECK_INT(ws_conn_feed_inplace(&e.c, in.d, in.len), WS_OK);
  e.write_block = 0;
  ep_drain(&e);
  off = expect_frame(&tx, 0, WS_OP_TEXT, (const unsigned char *)"zz", 2);
  for (i = 0; i < 40; i++) off = expect_frame(&tx, off, WS_OP_BINARY, pl, 100 - i);
  CHECK_INT(off, tx.len);
  CHECK_INT(a.live, 0);
  /* The same through ws_conn_feed (input copied), the transport taking
   * everything: one write for all 40 replies. */
  tx.len = in.len = 0;
  for (i = 0; i < 40; i++) add_frame(&in, 1, WS_OP_BINARY, pl, 100 - i, 1);
  n = e.io_calls;
  CHECK_INT(ws_conn_feed(&e.c, in.d, in.len), WS_OK);
  CHECK_INT(e.io_calls - n, 1);
  for (off = 0, i = 0; i < 40; i++) off = expect_frame(&tx, off, WS_OP_BINARY, pl, 100 - i);
  CHECK_INT(off, tx.len);
  CHECK_INT(a.live, 0);
  /* Through ws_conn_on_readable(), one frame per read: the first reply is
   * written before the second read, 4 bytes of it, then the transport
   * blocks; the rest and the later replies gather on the stack buffer
   * (no write per read once it blocked) and move to the heap at the end,
   * in order. */
  tx.len = in.len = 0;
  for (i = 0; i < 5; i++) add_frame(&in, 1, WS_OP_BINARY, pl + i, 10, 1);
  buf_put(&rx, in.d, in.len);
  e.read_max = 16; /* one frame */
  e.write_max = 4;
  e.write_block = 1;
  e.block_toggle = 1; /* take 4 bytes, block, take 4 bytes, block */
  n = e.io_calls;
  CHECK_INT(ws_conn_on_readable(&e.c), WS_OK);
  CHECK_INT(e.io_calls - n, 6 + 4); /* 5 reads and a would-block; 4 writes */
  CHECK_INT(tx.len, 8);
  CHECK_INT(ws_conn_queued(&e.c), 5 * 12 - 8);
  CHECK_INT(a.live, 1); /* the queue, off the stack */
  e.read_max = e.write_max = 0;
  e.write_block = 0;
  ep_drain(&e);
  for (off = 0, i = 0; i < 5; i++) off = expect_frame(&tx, off, WS_OP_BINARY, pl + i, 10);
  CHECK_INT(off, tx.len);
  CHECK_INT(a.live, 0);
  /* No memory to keep what the transport left: the connection ends. */
  in.len = 0;
  add_frame(&in, 1, WS_OP_BINARY, pl, 50, 1);
  e.write_block = 1;
  e.block_toggle = 0;
  a.calls = 0;
  /* (The small build first takes and gives back the input's copy.) */
  a.fail_at = WS_SMALL ? 3 : 1;
  CHECK_INT(ws_conn_feed_inplace(&e.c, in.d, in.len), WS_ECLOSED);
  CHECK_INT(e.close_code, 1006);
  CHECK_INT(ws_conn_error(&e.c), WS_ENOMEM);
  ep_free(&e);
  CHECK_INT(a.live, 0);
  buf_free(&rx);
  buf_free(&tx);
  buf_free(&in);
}

static void test_fixed_buffers(void) {
  /* Fixed buffers: no allocation at all, messages up to
   * in_cap - WS_BUFFER_OVERHEAD - 256. */
  ws_config cfg;
  endpoint e;
  buf rx = {0}, tx = {0}, in = {0};
  counting_alloc a = {0, 0, 0, 0};
  static unsigned char ibuf[1024 + 256 + WS_BUFFER_OVERHEAD], obuf[2048];
  char p[1025];
  memset(p, 'q', sizeof p);
  ws_config_init(&cfg, WS_SERVER);
  cfg.realloc = counting_realloc;
  cfg.alloc_ctx = &a;
  ep_init(&e, &cfg, &rx, &tx);
  CHECK_INT(ws_conn_set_buffers(&e.c, ibuf, sizeof ibuf, obuf, sizeof obuf), WS_OK);
  e.echo = 1;
  buf_puts(&in, REQ);
  add_frame(&in, 1, WS_OP_BINARY, p, 1024, 1);
  add_frame(&in, 0, WS_OP_BINARY, p, 500, 1);
  add_frame(&in, 1, WS_OP_PING, p, 100, 1);
  add_frame(&in, 1, WS_OP_CONT, p, 524, 1);
  add_frame(&in, 1, WS_OP_BINARY, p, 1025, 1);
  buf_put(&rx, in.d, in.len);
  e.read_max = 100;
  while (rx.off < rx.len && ws_conn_want_read(&e.c)) {
    ws_conn_on_readable(&e.c);
    ep_drain(&e);
  }
  buf_put(&e.log, "", 1);
  CHECK(strstr(cstr(&e.log), "msg 2 1024") != NULL);
  CHECK(strstr(cstr(&e.log), "close 1009") != NULL);
  CHECK_INT(out_close_code(&tx, 0), 1009);
  CHECK_INT(a.calls, 0);
  ep_free(&e);
  CHECK_INT(a.calls, 0);
  /* An echo larger than the fixed out buffer is refused: it never fits. */
  buf_free(&tx);
  buf_free(&rx);
  buf_free(&in);
  {
    endpoint s;
    unsigned char big[3000];
    memset(big, 1, sizeof big);
    ws_config_init(&cfg, WS_SERVER);
    ep_init(&s, &cfg, &rx, &tx);
    CHECK_INT(ws_conn_set_buffers(&s.c, ibuf, sizeof ibuf, obuf, sizeof obuf), WS_OK);
    ws_conn_feed(&s.c, REQ, strlen(REQ));
    CHECK_INT(ws_send(&s.c, WS_OP_BINARY, big, sizeof big), WS_ETOOBIG);
    CHECK_INT(ws_send(&s.c, WS_OP_BINARY, big, 1000), WS_OK);
    ep_free(&s);
    buf_free(&tx);
  }
  CHECK_INT(ws_conn_set_buffers(&e.c, ibuf, 100, obuf, sizeof obuf), WS_EINVAL);
}

static void test_alloc_hook_and_failures(void) {
  /* Every allocation goes through the hook; all are released by
   * ws_conn_free; failing the k-th allocation never crashes or leaks and
   * ends in exactly one on_close. */
  buf in = {0};
  unsigned char big[100000];
  long k, total;
  memset(big, 'z', sizeof big);
  buf_puts(&in, REQ);
  add_frame(&in, 0, WS_OP_TEXT, big, 50000, 1);
  add_frame(&in, 1, WS_OP_CONT, big, 50000, 1);
  cframe(&in, 1, WS_OP_PING, "x");
  {
    ws_config cfg;
    endpoint e;
    buf rx = {0}, tx = {0};
    counting_alloc a = {0, 0, 0, 0};
    ws_config_init(&cfg, WS_SERVER);
    cfg.realloc = counting_realloc;
    cfg.alloc_ctx = &a;
    ep_init(&e, &cfg, &rx, &tx);
    e.echo = 1;
    ws_conn_feed(&e.c, in.d, in.len);
    CHECK(a.calls > 0);
    CHECK_INT(a.live, 0); /* idle: every buffer was given back */
    buf_put(&e.log, "", 1);
    CHECK(strstr(cstr(&e.log), "msg 1 100000") != NULL);
    ep_free(&e);
    CHECK_INT(a.live, 0);
    total = a.calls;
    buf_free(&tx);
  }
  for (k = 1; k <= total; k++) {
    ws_config cfg;
    endpoint e;
    buf rx = {0}, tx = {0};
    counting_alloc a = {0, 0, 0, 0};
    a.fail_at = k;
    ws_config_init(&cfg, WS_SERVER);
    cfg.realloc = counting_realloc;
    cfg.alloc_ctx = &a;
    ep_init(&e, &cfg, &rx, &tx);
    e.echo = 1;
    ws_conn_feed(&e.c, in.d, in.len);
    ep_drain(&e);
    ep_free(&e);
    CHECK_INT(e.closes, 1);
    CHECK_INT(a.live, 0);
    buf_free(&tx);
  }
  buf_free(&in);
}

static void test_idle_holds_no_buffer(void) {
  /* Pulled through the read callback (the room made for a read that then
   * would-blocks included), an idle open connection holds no memory. */
  ws_config cfg;
  endpoint e;
  buf rx = {0}, tx = {0};
  counting_alloc a = {0, 0, 0, 0};
  ws_config_init(&cfg, WS_SERVER);
  cfg.realloc = counting_realloc;
  cfg.alloc_ctx = &a;
  ep_init(&e, &cfg, &rx, &tx);
  e.echo = 1;
  buf_puts(&rx, REQ);
  cframe(&rx, 1, WS_OP_TEXT, "hello");
  ws_conn_on_readable(&e.c);
  CHECK_INT(ws_conn_state(&e.c), WS_STATE_OPEN);
  CHECK(strstr(cstr(&e.log), "msg 1 5") != NULL);
  CHECK(a.calls > 0);
  CHECK_INT(a.live, 0);
  ws_conn_on_readable(&e.c); /* nothing to read */
  CHECK_INT(a.live, 0);
  ep_free(&e);
  buf_free(&rx);
  buf_free(&tx);
}

/* One scripted server session pulled through the read callback, with a
 * fault injected at I/O call `at`. Returns the number of I/O calls made. */
static long fault_session(const buf *in, long at, int fault, buf *tx,
                          int *closes, int *state, buf *log) {
  ws_config cfg;
  endpoint e;
  buf rx = {0};
  long calls;
  int i;
  ws_config_init(&cfg, WS_SERVER);
  ep_init(&e, &cfg, &rx, tx);
  e.echo = 1;
  e.fault_at = at;
  e.fault = fault;
  e.read_max = 50;
  buf_put(&rx, in->d, in->len);
  for (i = 0; i < 10000 && ws_conn_state(&e.c) != WS_STATE_CLOSED; i++) {
    long before = e.io_calls;
    if (ws_conn_want_read(&e.c)) ws_conn_on_readable(&e.c);
    if (ws_conn_state(&e.c) != WS_STATE_CLOSED && ws_conn_want_write(&e.c))
      ws_conn_on_writable(&e.c);
    if (rx.off == rx.len && !ws_conn_want_write(&e.c) && e.io_calls == before)
      break;
  }
  *state = ws_conn_state(&e.c);
  calls = e.io_calls;
  ep_free(&e); /* runs on_close (1006) if the session had not ended */
  *closes = e.closes;
  *log = e.log;
  buf_free(&rx);
  return calls;
}

static void test_io_faults(void) {
  /* Would-block, short counts, errors and end of stream at every I/O step
   * of a session: always exactly one on_close; would-block and short
   * counts change nothing the peer sees; an error or end of stream leaves
   * the peer a prefix of what it would have seen. */
  buf in = {0}, ref_tx = {0}, ref_log;
  long total, at;
  int f, closes, state;
  unsigned char big[3000];
  memset(big, 'w', sizeof big);
  buf_puts(&in, REQ);
  cframe(&in, 1, WS_OP_TEXT, "one");
  add_frame(&in, 0, WS_OP_BINARY, big, 1000, 1);
  cframe(&in, 1, WS_OP_PING, "p");
  add_frame(&in, 1, WS_OP_CONT, big, 2000, 1);
  add_close(&in, 1000, "end", 1);
  total = fault_session(&in, 0, FAULT_NONE, &ref_tx, &closes, &state, &ref_log);
  CHECK_INT(closes, 1);
  CHECK_INT(state, WS_STATE_CLOSED);
  CHECK(total > 20);
  for (f = FAULT_EAGAIN; f < FAULT__N; f++) {
    for (at = 1; at <= total + 1; at++) {
      buf tx = {0}, log;
      fault_session(&in, at, f, &tx, &closes, &state, &log);
      if (!CHECK(closes == 1)) printf("    fault %d at %ld\n", f, at);
      if (f == FAULT_EAGAIN || f == FAULT_SHORT) {
        if (!CHECK(buf_eq(&tx, &ref_tx) && buf_eq(&log, &ref_log)))
          printf("    fault %d at %ld changed the session\n", f, at);
      } else {
        if (!CHECK(tx.len <= ref_tx.len &&
                   (tx.len == 0 || memcmp(tx.d, ref_tx.d, tx.len) == 0)))
          printf("    fault %d at %ld: output is not a prefix\n", f, at);
      }
      buf_free(&tx);
      buf_free(&log);
    }
  }
  buf_free(&in);
  buf_free(&ref_tx);
  buf_free(&ref_log);
}

static void test_backpressure(void) {
  ws_config cfg;
  endpoint e;
  buf rx = {0}, tx = {0}, in = {0};
  char p[650]; /* three fit in 2000 bytes, leaving no room for a pong */
  int i, rc;
  memset(p, 'b', sizeof p);
  ws_config_init(&cfg, WS_SERVER);
  cfg.max_queued = 2000;
  ep_init(&e, &cfg, &rx, &tx);
  ws_conn_feed(&e.c, REQ, strlen(REQ));
  e.write_block = 1;
  e.write_max = 0;
  /* Blocked writer: sends fill the queue to its limit, then WS_EFULL,
   * and nothing partial is queued. */
  e.block_toggle = 0;
  {
    size_t before;
    for (i = 0; i < 10; i++) {
      e.block_toggle = 0; /* keep the writer blocked */
      before = ws_conn_queued(&e.c);
      rc = ws_send(&e.c, WS_OP_BINARY, p, sizeof p);
      if (rc != WS_OK) break;
    }
    CHECK_INT(rc, WS_EFULL);
    CHECK_INT(ws_conn_queued(&e.c), before);
    CHECK(ws_conn_queued(&e.c) <= 2000);
    CHECK(ws_conn_want_write(&e.c));
    /* Over the read threshold: the connection pauses input. */
    CHECK_INT(ws_conn_want_read(&e.c), 0);
    cframe(&rx, 1, WS_OP_PING, "p");
    e.block_toggle = 0;
    ws_conn_on_readable(&e.c);
    CHECK_INT(rx.off, 0);
  }
  /* A ping flood while blocked: pongs stop at the limit; the server stops
   * reading while over it. */
  for (i = 0; i < 1000; i++) cframe(&in, 1, WS_OP_PING, "0123456789");
  e.block_toggle = 0;
  ws_conn_feed(&e.c, in.d, in.len);
  CHECK(ws_conn_queued(&e.c) <= 2000 + 14 + 10);
  CHECK_INT(ws_conn_state(&e.c), WS_STATE_OPEN);
  /* Draining empties the queue; sends work again. */
  e.write_block = 0;
  ws_conn_on_writable(&e.c);
  CHECK_INT(ws_conn_queued(&e.c), 0);
  CHECK(!ws_conn_want_write(&e.c));
  CHECK_INT(ws_send(&e.c, WS_OP_BINARY, p, sizeof p), WS_OK);
  CHECK_INT(ws_conn_want_read(&e.c), 1);
  ws_conn_on_readable(&e.c);
  CHECK_INT(rx.off, rx.len); /* the paused ping is read now */
  ep_free(&e);
  buf_free(&tx);
  buf_free(&rx);
  buf_free(&in);
}

/* Memory budget: a hook that counts, and refuses past a limit. */
typedef struct {
  long long held[4], total;
  long long limit; /* refuse what would pass it (0: never) */
  int code;        /* ... with this close code */
  int calls, refusals, mismatch;
} budget;

static int budget_charge(ws_conn *c, int kind, ptrdiff_t bytes, void *ctx) {
  budget *b = (budget *)ctx;
  b->calls++;
  /* Told before each change: ws_conn_memory() is the total so far. */
  if ((long long)ws_conn_memory(c) != b->total) b->mismatch++;
  if (bytes > 0 && b->limit && b->total + bytes > b->limit) {
    b->refusals++;
    return b->code;
  }
  b->held[kind] += bytes;
  b->total += bytes;
  return 0;
}

static void budget_server(endpoint *e, budget *b, buf *rx, buf *tx) {
  ws_config cfg;
  ws_config_init(&cfg, WS_SERVER);
  cfg.charge = budget_charge;
  cfg.alloc_ctx = b;
  ep_init(e, &cfg, rx, tx);
  ws_conn_feed(&e->c, REQ, strlen(REQ));
  CHECK_INT(ws_conn_state(&e->c), WS_STATE_OPEN);
}

static void test_budget_counts(void) {
  endpoint e;
  buf rx = {0}, tx = {0}, in = {0};
  budget b;
  static unsigned char big[100000];
  size_t i;
  memset(&b, 0, sizeof b);
  memset(big, 'x', sizeof big);
  budget_server(&e, &b, &rx, &tx);
  CHECK(b.calls > 0);         /* the handshake's buffers */
  CHECK_INT((int)b.total, 0); /* ... given back: an idle one holds none */
  /* A large message in small pieces: the input buffer grows, counted. */
  add_frame(&in, 1, WS_OP_BINARY, big, sizeof big, 1);
  for (i = 0; i < in.len - 1; i += 1000)
    ws_conn_feed(&e.c, in.d + i, WS__MIN((size_t)1000, in.len - 1 - i));
  CHECK(b.held[WS_MEM_INPUT] >= (long long)sizeof big);
  CHECK_INT((int)ws_conn_memory(&e.c), (int)b.total);
  ws_conn_feed(&e.c, in.d + in.len - 1, 1);
  CHECK_INT(e.nmsgs, 1);
  CHECK_INT((int)b.total, 0);
  /* Output that cannot leave: the queue, counted. */
  e.write_stall = 1;
  for (i = 0; i < 3; i++)
    CHECK_INT(ws_send(&e.c, WS_OP_BINARY, big, sizeof big), WS_OK);
  CHECK(b.held[WS_MEM_OUTPUT] >= 3 * (long long)sizeof big);
  CHECK_INT((int)ws_conn_memory(&e.c), (int)b.total);
  e.write_stall = 0;
  ep_drain(&e);
  CHECK_INT((int)b.total, 0);
  e.write_stall = 1;
  CHECK_INT(ws_send(&e.c, WS_OP_BINARY, big, sizeof big), WS_OK);
  in.len = 0;
  add_frame(&in, 1, WS_OP_BINARY, big, sizeof big, 1);
  ws_conn_feed(&e.c, in.d, 5000); /* and part of a message held */
  CHECK(b.held[WS_MEM_INPUT] > 0 && b.held[WS_MEM_OUTPUT] > 0);
  ep_free(&e); /* freed holding both: each given back, in turn */
  CHECK_INT((int)b.total, 0);
  CHECK_INT((int)(b.held[0] | b.held[1] | b.held[2] | b.held[3]), 0);
  CHECK_INT(b.mismatch, 0);
  CHECK_INT(b.refusals, 0);
  buf_free(&in);
  buf_free(&tx);
}

static void test_budget_refusals(void) {
  endpoint e;
  buf rx = {0}, tx = {0}, in = {0};
  budget b;
  static unsigned char big[20000];
  int rc;
  memset(big, 'y', sizeof big);
  /* Input: a message the budget will not hold fails the connection at
   * once with the hook's code, and the peer gets a close frame with it. */
  memset(&b, 0, sizeof b);
  b.limit = 8192;
  b.code = WS_CLOSE_TOO_BIG;
  budget_server(&e, &b, &rx, &tx);
  tx.len = 0;
  add_frame(&in, 1, WS_OP_BINARY, big, sizeof big, 1);
  ws_conn_feed(&e.c, in.d, in.len);
  CHECK_INT(ws_conn_state(&e.c), WS_STATE_CLOSED);
  CHECK_INT(e.closes, 1);
  CHECK_INT(e.close_code, WS_CLOSE_TOO_BIG);
  CHECK_INT(ws_conn_error(&e.c), WS_EBUDGET);
  CHECK_INT(out_close_code(&tx, 0), WS_CLOSE_TOO_BIG);
  CHECK_INT(e.nmsgs, 0);
  CHECK_INT(b.refusals, 1);
  ep_free(&e);
  CHECK_INT((int)b.total, 0);
  CHECK_INT(b.mismatch, 0);
  /* Output: a send the budget will not queue fails it with 1013. */
  memset(&b, 0, sizeof b);
  b.limit = 8192;
  b.code = WS_CLOSE_TRY_AGAIN;
  budget_server(&e, &b, &rx, &tx);
  e.write_stall = 1;
  CHECK_INT(ws_send(&e.c, WS_OP_BINARY, big, 4000), WS_OK);
  rc = ws_send(&e.c, WS_OP_BINARY, big, sizeof big);
  CHECK(rc == WS_EBUDGET || rc == WS_ECLOSED);
  CHECK_INT(ws_conn_state(&e.c), WS_STATE_CLOSED);
  CHECK_INT(e.close_code, WS_CLOSE_TRY_AGAIN);
  CHECK_INT(ws_conn_error(&e.c), WS_EBUDGET);
  CHECK_INT(ws_send(&e.c, WS_OP_TEXT, "x", 1), WS_ECLOSED);
  ep_free(&e);
  CHECK_INT((int)b.total, 0);
  CHECK_INT(b.mismatch, 0);
  buf_free(&in);
  buf_free(&tx);
}

/* Pongs: only the latest ping's is owed while the peer does not read. */
static void test_pong_coalescing(void) {
  ws_config cfg;
  endpoint e;
  buf rx = {0}, tx = {0}, in = {0}, want = {0};
  char s[16];
  int i;
  ws_config_init(&cfg, WS_SERVER);
  ep_init(&e, &cfg, &rx, &tx);
  ws_conn_feed(&e.c, REQ, strlen(REQ));
  tx.len = 0;
  /* A peer that reads gets a pong for each ping, in order. */
  cframe(&in, 1, WS_OP_PING, "r1");
  cframe(&in, 1, WS_OP_PING, "r2");
  ws_conn_feed(&e.c, in.d, in.len);
  in.len = 0;
  add_frame(&want, 1, WS_OP_PONG, "r1", 2, 0);
  add_frame(&want, 1, WS_OP_PONG, "r2", 2, 0);
  CHECK(buf_eq(&tx, &want));
  tx.len = want.len = 0;
  /* One that does not: once its output is refused, one pong waits. */
  e.write_stall = 1;
  cframe(&in, 1, WS_OP_PING, "first");
  ws_conn_feed(&e.c, in.d, in.len);
  in.len = 0;
  for (i = 0; i < 1000; i++) {
    sprintf(s, "p%04d", i);
    cframe(&in, 1, WS_OP_PING, s);
  }
  ws_conn_feed(&e.c, in.d, in.len);
  in.len = 0;
  CHECK_INT((int)ws_conn_queued(&e.c), 2 + 5); /* one pong */
  e.write_stall = 0;
  ep_drain(&e);
  add_frame(&want, 1, WS_OP_PONG, "p0999", 5, 0);
  CHECK(buf_eq(&tx, &want));
  /* A pong partly written stays whole, and the next one follows it. */
  tx.len = want.len = 0;
  e.write_max = 3;
  e.write_block = 1; /* 3 bytes go, then the writer blocks */
  e.block_toggle = 1;
  cframe(&in, 1, WS_OP_PING, "aaaa");
  ws_conn_feed(&e.c, in.d, in.len);
  in.len = 0;
  e.write_stall = 1;
  cframe(&in, 1, WS_OP_PING, "bbbb");
  cframe(&in, 1, WS_OP_PING, "cccc");
  ws_conn_feed(&e.c, in.d, in.len);
  in.len = 0;
  /* Data queued after a pong: the pong stays, the next ping gets its own. */
  CHECK_INT(ws_send(&e.c, WS_OP_TEXT, "x", 1), WS_OK);
  cframe(&in, 1, WS_OP_PING, "dddd");
  ws_conn_feed(&e.c, in.d, in.len);
  in.len = 0;
  e.write_stall = 0;
  e.write_block = 0;
  e.write_max = 0;
  ep_drain(&e);
  add_frame(&want, 1, WS_OP_PONG, "aaaa", 4, 0);
  add_frame(&want, 1, WS_OP_PONG, "cccc", 4, 0);
  add_frame(&want, 1, WS_OP_TEXT, "x", 1, 0);
  add_frame(&want, 1, WS_OP_PONG, "dddd", 4, 0);
  CHECK(buf_eq(&tx, &want));
  CHECK_INT(ws_conn_state(&e.c), WS_STATE_OPEN);
  ep_free(&e);
  buf_free(&in);
  buf_free(&want);
  buf_free(&tx);
}

/* Slow readers: output over the threshold for slow_reader_ms fails the
 * connection with 1008; output that drains below it stops the clock. */
static void test_slow_reader(void) {
  ws_config cfg;
  endpoint e;
  buf rx = {0}, tx = {0};
  static unsigned char d[3000];
  ws_config_init(&cfg, WS_SERVER);
  cfg.slow_reader_bytes = 1000;
  cfg.slow_reader_ms = 5000;
  ep_init(&e, &cfg, &rx, &tx);
  ws_conn_feed(&e.c, REQ, strlen(REQ));
  ws_conn_tick(&e.c, 1000);
  e.write_stall = 1;
  CHECK_INT(ws_send(&e.c, WS_OP_BINARY, d, 500), WS_OK);
  CHECK(ws_conn_next_deadline(&e.c) > 1000); /* under: no clock */
  CHECK_INT(ws_send(&e.c, WS_OP_BINARY, d, 1500), WS_OK);
  CHECK_INT((int)ws_conn_next_deadline(&e.c), 0); /* over: armed */
  ws_conn_tick(&e.c, 2000);
  CHECK_INT((int)ws_conn_next_deadline(&e.c), 7000);
  ws_conn_tick(&e.c, 6999);
  CHECK_INT(ws_conn_state(&e.c), WS_STATE_OPEN);
  /* Drained below the threshold (not to empty): the clock stops. */
  e.write_stall = 0;
  e.write_block = 1; /* one write of 1500 bytes, then it would block */
  e.block_toggle = 1;
  e.write_max = 1500;
  ws_conn_on_writable(&e.c);
  e.write_stall = 1;
  e.write_block = 0;
  e.write_max = 0;
  CHECK(ws_conn_queued(&e.c) > 0 && ws_conn_queued(&e.c) <= 1000);
  ws_conn_tick(&e.c, 20000);
  CHECK_INT(ws_conn_state(&e.c), WS_STATE_OPEN);
  /* Over again, and never drained: closed 5 s after the next tick. */
  CHECK_INT(ws_send(&e.c, WS_OP_BINARY, d, sizeof d), WS_OK);
  ws_conn_tick(&e.c, 21000);
  ws_conn_tick(&e.c, 25999);
  CHECK_INT(ws_conn_state(&e.c), WS_STATE_OPEN);
  ws_conn_tick(&e.c, 26000);
  CHECK_INT(ws_conn_state(&e.c), WS_STATE_CLOSED);
  CHECK_INT(e.close_code, WS_CLOSE_POLICY);
  CHECK_INT(ws_conn_error(&e.c), WS_ESLOW);
  ep_free(&e);
  buf_free(&tx);
}

static void test_empty_fragment_flood(void) {
  /* 200,000 empty fragments: bounded memory, one message at the end. */
  ws_config cfg;
  endpoint e;
  buf rx = {0}, tx = {0}, in = {0};
  counting_alloc a = {0, 0, 0, 0};
  int i;
  ws_config_init(&cfg, WS_SERVER);
  cfg.realloc = counting_realloc;
  cfg.alloc_ctx = &a;
  ep_init(&e, &cfg, &rx, &tx);
  ws_conn_feed(&e.c, REQ, strlen(REQ));
  cframe(&in, 0, WS_OP_TEXT, "a");
  for (i = 0; i < 200000; i++) cframe(&in, 0, WS_OP_CONT, "");
  cframe(&in, 1, WS_OP_CONT, "b");
  for (i = 0; (size_t)i < in.len; i += 4096)
    ws_conn_feed(&e.c, in.d + i, WS__MIN((size_t)4096, in.len - (size_t)i));
  buf_put(&e.log, "", 1);
  CHECK(strstr(cstr(&e.log), "msg 1 2 ") != NULL);
  CHECK(a.peak_size <= 64 * 1024);
  ep_free(&e);
  buf_free(&in);
  buf_free(&tx);
}

static void stream_cfg(ws_config *cfg) {
  cfg->stream = 1;
  cfg->max_message = 64u << 20;
}

static void test_stream_mode(void) {
  /* Streamed: a 1 MiB message arrives in pieces through a small buffer;
   * the reassembled bytes match. */
  buf in = {0};
  unsigned char *big = (unsigned char *)malloc(1 << 20);
  char expect[64];
  size_t i;
  for (i = 0; i < (1u << 20); i++) big[i] = (unsigned char)(i ^ (i >> 8));
  buf_puts(&in, REQ);
  add_frame(&in, 0, WS_OP_BINARY, big, 300000, 1);
  add_frame(&in, 1, WS_OP_CONT, big + 300000, (1 << 20) - 300000, 1);
  snprintf(expect, sizeof expect, "msg 2 1048576 %08lx\n", fnv(big, 1 << 20));
  script("stream", &in, expect, -1, 0, stream_cfg);
  {
    ws_config cfg;
    endpoint e;
    buf rx = {0}, tx = {0};
    counting_alloc a = {0, 0, 0, 0};
    ws_config_init(&cfg, WS_SERVER);
    stream_cfg(&cfg);
    cfg.realloc = counting_realloc;
    cfg.alloc_ctx = &a;
    ep_init(&e, &cfg, &rx, &tx);
    for (i = 0; i < in.len; i += 1000)
      ws_conn_feed(&e.c, in.d + i, WS__MIN((size_t)1000, in.len - i));
    CHECK(e.pieces > 100);          /* really streamed */
    CHECK(a.peak_size <= 16 * 1024); /* never held the message */
    ep_free(&e);
    buf_free(&tx);
  }
  free(big);
  buf_free(&in);
}

/* ---------------------------------------------------------------------
 * Timers
 * ------------------------------------------------------------------- */

static void test_timers(void) {
  ws_config cfg;
  endpoint e;
  buf rx = {0}, tx = {0}, in = {0};
  /* Handshake timeout. */
  ws_config_init(&cfg, WS_SERVER);
  ep_init(&e, &cfg, &rx, &tx);
  CHECK_INT(ws_conn_next_deadline(&e.c), 0); /* arm now */
  ws_conn_tick(&e.c, 1000);
  CHECK_INT(ws_conn_next_deadline(&e.c), 11000);
  ws_conn_feed(&e.c, "GET / HT", 8);
  ws_conn_tick(&e.c, 10999);
  CHECK_INT(ws_conn_state(&e.c), WS_STATE_CONNECTING);
  CHECK_INT(ws_conn_tick(&e.c, 11000), WS_ECLOSED);
  CHECK_INT(e.closes, 1);
  CHECK_INT(e.close_code, 1006);
  CHECK_INT(ws_conn_error(&e.c), WS_ETIMEDOUT);
  ep_free(&e);

  /* Keepalive: ping every 1000 ms; a pong in time keeps it open; none
   * within pong_timeout closes it. */
  ws_config_init(&cfg, WS_SERVER);
  cfg.ping_interval_ms = 1000;
  cfg.pong_timeout_ms = 500;
  ep_init(&e, &cfg, &rx, &tx);
  ws_conn_tick(&e.c, 0);
  ws_conn_feed(&e.c, REQ, strlen(REQ));
  CHECK_INT(ws_conn_next_deadline(&e.c), 0);
  ws_conn_tick(&e.c, 100);
  CHECK_INT(ws_conn_next_deadline(&e.c), 1100);
  tx.len = 0;
  ws_conn_tick(&e.c, 1100);
  CHECK(tx.len == 2 && tx.d[0] == 0x89 && tx.d[1] == 0); /* empty ping */
  CHECK_INT(ws_conn_next_deadline(&e.c), 1600);
  cframe(&in, 1, WS_OP_PONG, "");
  ws_conn_feed(&e.c, in.d, in.len);
  /* Answered: the next ping is one interval after the pong (armed at the
   * next tick). */
  CHECK_INT(ws_conn_next_deadline(&e.c), 0);
  ws_conn_tick(&e.c, 1300);
  CHECK_INT(ws_conn_next_deadline(&e.c), 2300);
  tx.len = 0;
  ws_conn_tick(&e.c, 2300);
  CHECK(tx.len == 2 && tx.d[0] == 0x89);
  CHECK_INT(ws_conn_next_deadline(&e.c), 2800);
  ws_conn_tick(&e.c, 2799);
  CHECK_INT(ws_conn_state(&e.c), WS_STATE_OPEN);
  ws_conn_tick(&e.c, 2800);
  CHECK_INT(ws_conn_state(&e.c), WS_STATE_CLOSED);
  CHECK_INT(e.close_code, 1006);
  ep_free(&e);
  buf_free(&tx);

  /* A refusal waiting for a writable socket keeps the handshake deadline:
   * it does not ask for a tick at once on every turn. */
  ws_config_init(&cfg, WS_SERVER);
  ep_init(&e, &cfg, &rx, &tx);
  e.refuse = 403;
  e.write_block = 1; /* the first write would block */
  ws_conn_tick(&e.c, 0);
  ws_conn_feed(&e.c, REQ, strlen(REQ));
  CHECK(ws_conn_want_write(&e.c));
  CHECK_INT(ws_conn_next_deadline(&e.c), 10000);
  CHECK_INT(ws_conn_on_writable(&e.c), WS_ECLOSED);
  CHECK(tx.len > 12 && memcmp(tx.d, "HTTP/1.1 403", 12) == 0);
  ep_free(&e);
  buf_free(&tx);

  /* One ping in flight: a pong timeout longer than the interval sends no
   * second ping while the first is unanswered. */
  ws_config_init(&cfg, WS_SERVER);
  cfg.ping_interval_ms = 1000;
  cfg.pong_timeout_ms = 5000;
  ep_init(&e, &cfg, &rx, &tx);
  ws_conn_tick(&e.c, 0);
  ws_conn_feed(&e.c, REQ, strlen(REQ));
  ws_conn_tick(&e.c, 100);
  tx.len = 0;
  ws_conn_tick(&e.c, 1100);
  CHECK(tx.len == 2 && tx.d[0] == 0x89);
  CHECK_INT(ws_conn_next_deadline(&e.c), 6100);
  tx.len = 0;
  ws_conn_tick(&e.c, 2100);
  ws_conn_tick(&e.c, 3100);
  CHECK_INT(tx.len, 0);
  CHECK_INT(ws_conn_state(&e.c), WS_STATE_OPEN);
  ws_conn_tick(&e.c, 6100);
  CHECK_INT(ws_conn_state(&e.c), WS_STATE_CLOSED);
  CHECK_INT(ws_conn_error(&e.c), WS_ETIMEDOUT);
  ep_free(&e);
  buf_free(&tx);

  /* Close timeout: the peer never answers our close. */
  ws_config_init(&cfg, WS_SERVER);
  ep_init(&e, &cfg, &rx, &tx);
  ws_conn_feed(&e.c, REQ, strlen(REQ));
  ws_conn_tick(&e.c, 0);
  CHECK_INT(ws_close(&e.c, 1001, "going", 5), WS_OK);
  CHECK_INT(ws_conn_state(&e.c), WS_STATE_CLOSING);
  CHECK_INT(ws_send(&e.c, WS_OP_TEXT, "x", 1), WS_ESTATE); /* no data after close */
  CHECK_INT(ws_conn_next_deadline(&e.c), 0);
  ws_conn_tick(&e.c, 50);
  CHECK_INT(ws_conn_next_deadline(&e.c), 5050);
  ws_conn_tick(&e.c, 5050);
  CHECK_INT(ws_conn_state(&e.c), WS_STATE_CLOSED);
  CHECK_INT(e.closes, 1);
  CHECK_INT(e.close_code, 1001); /* the code our close frame carried */
  ep_free(&e);
  buf_free(&tx);
  buf_free(&in);
}

/* ---------------------------------------------------------------------
 * Pairs: a server and a client over memory
 * ------------------------------------------------------------------- */

typedef struct pair {
  endpoint s, cl;
  buf s2c, c2s;
} pair;

static void pair_pump(pair *p) {
  int i;
  for (i = 0; i < 100000; i++) {
    size_t a = p->s2c.off, b = p->c2s.off, c = p->s2c.len, d = p->c2s.len;
    if (ws_conn_state(&p->s.c) != WS_STATE_CLOSED) {
      ws_conn_on_readable(&p->s.c);
      if (ws_conn_state(&p->s.c) != WS_STATE_CLOSED) ws_conn_on_writable(&p->s.c);
    }
    if (ws_conn_state(&p->cl.c) != WS_STATE_CLOSED) {
      ws_conn_on_readable(&p->cl.c);
      if (ws_conn_state(&p->cl.c) != WS_STATE_CLOSED) ws_conn_on_writable(&p->cl.c);
    }
    if (a == p->s2c.off && b == p->c2s.off && c == p->s2c.len && d == p->c2s.len)
      break;
  }
}

static void pair_init(pair *p, const char *protos, cfg_fn tweak) {
  ws_config cfg;
  ws_client_opts o;
  memset(p, 0, sizeof *p);
  ws_config_init(&cfg, WS_SERVER);
  if (tweak) tweak(&cfg);
  ep_init(&p->s, &cfg, &p->c2s, &p->s2c);
  ws_config_init(&cfg, WS_CLIENT);
  if (tweak) tweak(&cfg);
  cfg.role = WS_CLIENT;
  ep_init(&p->cl, &cfg, &p->s2c, &p->c2s);
  p->s.pick = "chat";
  memset(&o, 0, sizeof o);
  o.host = "127.0.0.1:9001";
  o.path = "/x";
  o.protocols = protos;
  CHECK_INT(ws_client_start(&p->cl.c, &o), WS_OK);
  pair_pump(p);
}

static void pair_free(pair *p) {
  ep_free(&p->s);
  ep_free(&p->cl);
  buf_free(&p->s2c);
  buf_free(&p->c2s);
}

/* Budget exhaustion at every allocation site: a hook that counts, refuses
 * the k-th positive charge, and checks the connection's own count. The
 * counting allocator comes first, so the same alloc_ctx serves both. */
typedef struct bsite {
  counting_alloc a;
  long long total;
  long npos, refuse_at; /* positive charges so far; the one to refuse */
  int code, refused, refused_open, mismatch, stuck;
  int started;    /* on_close is owed */
  int bad_output; /* the server's output is not a head and whole frames */
  int refuse_output; /* refuse the first positive WS_MEM_OUTPUT charge */
  unsigned kinds; /* 1 << kind of every positive charge */
} bsite;

static int bsite_charge(ws_conn *c, int kind, ptrdiff_t bytes, void *ctx) {
  bsite *b = (bsite *)ctx;
  if ((long long)ws_conn_memory(c) != b->total) b->mismatch++;
  if (bytes > 0) {
    b->kinds |= 1u << kind;
    if (++b->npos == b->refuse_at ||
        (b->refuse_output && kind == WS_MEM_OUTPUT && !b->refused)) {
      b->refused++;
      /* on_close gets the hook's code unless a close frame fixed it. */
      if (ws_conn_state(c) == WS_STATE_OPEN &&
          !(WS__P(c)->flags & (WS__F_PEER_CODE | WS__F_CLOSE_SENT)))
        b->refused_open = 1;
      return b->code;
    }
  }
  b->total += bytes;
  if (b->total < 0) b->mismatch++;
  return 0;
}

/* After every call: the counts agree, and a refusal has closed it. */
static void bsite_check(bsite *b, ws_conn *c) {
  if ((long long)ws_conn_memory(c) != b->total) b->mismatch++;
  if (b->refused && ws_conn_state(c) != WS_STATE_CLOSED) b->stuck++;
}

/* A server session over every site: the head in pieces (input) with the
 * 101 queued behind a stalled writer (output), a large fragmented message
 * in pieces (input growth) echoed into the queue, pings (pongs), sends
 * behind them (queue growth), then the peer's close (the close frame).
 * trickle: the writer takes 5 bytes every other call instead of none, so
 * frames leave in part (a refusal's close frame must not cut one). */
static void bsite_server(bsite *b, endpoint *e, int trickle) {
  static unsigned char big[30000];
  ws_config cfg;
  buf rx = {0}, tx = {0}, in = {0};
  size_t i, n = strlen(REQ);
  memset(big, 'q', sizeof big);
  ws_config_init(&cfg, WS_SERVER);
  cfg.realloc = counting_realloc;
  cfg.charge = bsite_charge;
  cfg.alloc_ctx = b;
  ep_init(e, &cfg, &rx, &tx);
  e->echo = 1;
  e->write_stall = !trickle;
  e->write_max = 5;
  e->write_block = trickle;
  b->started = 1; /* by the first feed */
  for (i = 0; i < n; i += 20) {
    ws_conn_feed(&e->c, REQ + i, WS__MIN((size_t)20, n - i));
    bsite_check(b, &e->c);
  }
  add_frame(&in, 0, WS_OP_TEXT, big, sizeof big, 1);
  add_frame(&in, 0, WS_OP_CONT, big, sizeof big, 1);
  cframe(&in, 1, WS_OP_PING, "a");
  add_frame(&in, 1, WS_OP_CONT, big, sizeof big, 1);
  cframe(&in, 1, WS_OP_PING, "b");
  for (i = 0; i < in.len; i += 1000) {
    ws_conn_feed(&e->c, in.d + i, WS__MIN((size_t)1000, in.len - i));
    bsite_check(b, &e->c);
  }
  for (i = 0; i < 3; i++) {
    ws_send(&e->c, WS_OP_BINARY, big, 20000);
    bsite_check(b, &e->c);
  }
  e->write_stall = 0;
  e->write_max = 0;
  e->write_block = 0;
  ep_drain(e);
  bsite_check(b, &e->c);
  e->write_stall = !trickle;
  e->write_max = 5;
  e->write_block = trickle;
  in.len = 0;
  add_close(&in, 1000, "bye", 1);
  ws_conn_feed(&e->c, in.d, in.len);
  bsite_check(b, &e->c);
  e->write_stall = 0;
  e->write_max = 0;
  e->write_block = 0;
  ep_drain(e);
  bsite_check(b, &e->c);
  ep_free(e);
  b->bad_output = out_close_code(&tx, 0) < -1;
  buf_free(&rx);
  buf_free(&tx);
  buf_free(&in);
}

/* A pair, the budget on one side (role): the client's handshake, and with
 * permessage-deflate the compressor, the decompressor and the inflated
 * message buffer. */
static bsite *bsite_cur;
static int bsite_role, bsite_deflate;

static void bsite_cfg(ws_config *cfg) {
  if (bsite_deflate) {
    cfg->deflate.enable = 1;
    cfg->deflate.window_bits = 12;
    cfg->deflate.peer_window_bits = 12;
    cfg->deflate.mem_level = 4;
  }
  if (cfg->role == bsite_role) {
    cfg->realloc = counting_realloc;
    cfg->charge = bsite_charge;
    cfg->alloc_ctx = bsite_cur;
  }
}

static void bsite_pair(bsite *b, pair *p) {
  static unsigned char data[100000];
  endpoint *me = bsite_role == WS_SERVER ? &p->s : &p->cl;
  ws_config cfg;
  ws_client_opts o;
  size_t i;
  for (i = 0; i < sizeof data; i++) data[i] = (unsigned char)"abcabd"[i % 6];
  bsite_cur = b;
  memset(p, 0, sizeof *p);
  ws_config_init(&cfg, WS_SERVER);
  bsite_cfg(&cfg);
  ep_init(&p->s, &cfg, &p->c2s, &p->s2c);
  ws_config_init(&cfg, WS_CLIENT);
  bsite_cfg(&cfg);
  ep_init(&p->cl, &cfg, &p->s2c, &p->c2s);
  p->s.echo = 1;
  memset(&o, 0, sizeof o);
  o.host = "127.0.0.1:9001";
  o.deflate = bsite_deflate;
  ws_client_start(&p->cl.c, &o);
  /* A client refused before it started is CLOSED with no on_close owed;
   * the server is started by the pump. */
  b->started = bsite_role == WS_SERVER ||
               (WS__P(&p->cl.c)->flags & WS__F_STARTED) != 0;
  bsite_check(b, &me->c);
  pair_pump(p);
  bsite_check(b, &me->c);
  if (ws_conn_state(&p->cl.c) == WS_STATE_OPEN) {
    ws_send(&p->cl.c, WS_OP_BINARY, data, sizeof data);
    bsite_check(b, &me->c);
    pair_pump(p);
    bsite_check(b, &me->c);
  }
  if (ws_conn_state(&p->cl.c) == WS_STATE_OPEN) {
    ws_send(&p->cl.c, WS_OP_TEXT, data, 1000);
    pair_pump(p);
    bsite_check(b, &me->c);
  }
  if (ws_conn_state(&p->cl.c) == WS_STATE_OPEN)
    ws_close(&p->cl.c, 1000, NULL, 0);
  bsite_check(b, &me->c);
  pair_pump(p);
  bsite_check(b, &me->c);
  ep_free(&p->s);
  ep_free(&p->cl);
  buf_free(&p->s2c);
  buf_free(&p->c2s);
}

static void test_budget_refusal_after_partial_write(void) {
  /* A batch's echo leaves in part (5 bytes), and moving the rest off the
   * stack buffer is refused: no close frame may cut into that frame. */
  bsite b;
  endpoint e;
  ws_config cfg;
  buf rx = {0}, tx = {0}, in = {0};
  ws_frame f;
  size_t hl, head;
  memset(&b, 0, sizeof b);
  ws_config_init(&cfg, WS_SERVER);
  cfg.charge = bsite_charge;
  cfg.alloc_ctx = &b;
  ep_init(&e, &cfg, &rx, &tx);
  e.echo = 1;
  ws_conn_feed(&e.c, REQ, strlen(REQ));
  CHECK_INT(ws_conn_state(&e.c), WS_STATE_OPEN);
  CHECK_INT((int)b.total, 0);
  head = tx.len;
  b.refuse_output = 1;
  b.code = WS_CLOSE_TRY_AGAIN;
  e.write_max = 5;
  e.write_block = 1;
  e.block_toggle = 1; /* write 5 bytes, then would-block, then write */
  cframe(&in, 1, WS_OP_TEXT, "an echo longer than five bytes");
  ws_conn_feed(&e.c, in.d, in.len);
  CHECK_INT(b.refused, 1);
  CHECK_INT(ws_conn_state(&e.c), WS_STATE_CLOSED);
  CHECK_INT(e.close_code, WS_CLOSE_TRY_AGAIN);
  /* What left is 5 bytes of the echo's frame and nothing after them. */
  CHECK_INT((int)(tx.len - head), 5);
  CHECK(ws_frame_parse(tx.d + head, tx.len - head, &f, &hl) == WS_OK &&
        f.opcode == WS_OP_TEXT && hl + f.len > 5);
  ep_free(&e);
  CHECK_INT((int)b.total, 0);
  CHECK_INT(b.mismatch, 0);
  buf_free(&rx);
  buf_free(&tx);
  buf_free(&in);
}

static void test_budget_every_site(void) {
  /* Refusing the 1st, 2nd, ... positive charge in turn, until a run sees
   * none: each refusal closes the connection at once (never stuck), with
   * the hook's code while OPEN, one on_close, and nothing leaked. */
  int session, nsessions = 4;
  long plain[2] = {0, 0}; /* charges of the pair sessions without deflate */
#if WS_ENABLE_ZLIB
  if (ws_deflate_available()) nsessions = 6;
#endif
  for (session = 0; session < nsessions; session++) {
    long k, sites = 0, while_open = 0;
    unsigned kinds = 0;
    for (k = 0; k < 100000; k++) {
      bsite b;
      endpoint se, *me;
      pair p;
      memset(&b, 0, sizeof b);
      b.refuse_at = k;
      b.code = k & 1 ? WS_CLOSE_TOO_BIG : WS_CLOSE_TRY_AGAIN;
      if (session <= 1) {
        bsite_server(&b, &se, session);
        me = &se;
      } else {
        bsite_role = session & 1 ? WS_SERVER : WS_CLIENT;
        bsite_deflate = session >= 4;
        bsite_pair(&b, &p);
        me = bsite_role == WS_SERVER ? &p.s : &p.cl;
      }
      if (!CHECK(b.total == 0 && b.a.live == 0 && b.mismatch == 0 &&
                 b.stuck == 0 && me->closes == b.started && !b.bad_output &&
                 me->after_close == 0 &&
                 ws_conn_state(&me->c) == WS_STATE_CLOSED))
        printf("    session %d refusing charge %ld: total %lld live %ld "
               "mismatch %d stuck %d closes %d bad output %d\n", session, k,
               b.total, b.a.live, b.mismatch, b.stuck, me->closes,
               b.bad_output);
      while_open += b.refused_open;
      if (b.refused_open && !CHECK(me->close_code == b.code))
        printf("    session %d refusing charge %ld: close code %d\n", session,
               k, me->close_code);
      if (k == 0) {
        /* The run without refusals: how many sites, and of which kinds. */
        CHECK_INT(b.refused, 0);
        sites = b.npos;
        kinds = b.kinds;
      } else if (!b.refused) {
        break;
      }
      if (b.refused) CHECK_INT(ws_conn_error(&me->c), WS_EBUDGET);
    }
    CHECK(k == sites + 1); /* every charge of the run was refused in turn */
    CHECK(sites >= (session <= 1 ? 10 : 3));
    CHECK(while_open > 0); /* the code check ran */
    CHECK(kinds & (1u << WS_MEM_INPUT));
    /* A pair's server writes straight through: nothing queues. */
    if (session <= 2 || session == 4) CHECK(kinds & (1u << WS_MEM_OUTPUT));
    if (session >= 2 && session <= 3) plain[session & 1] = sites;
    /* Deflate adds its own: streams, state, the inflated message. */
    if (session >= 4) {
      CHECK(kinds & (1u << WS_MEM_DEFLATE));
      CHECK(sites > plain[session & 1] + 2);
    }
    printf("    session %d: %ld charges, each refused in turn\n", session,
           sites);
  }
}

static void test_pair_handshake(void) {
  pair p;
  pair_init(&p, "superchat, chat", NULL);
  CHECK_INT(ws_conn_state(&p.s.c), WS_STATE_OPEN);
  CHECK_INT(ws_conn_state(&p.cl.c), WS_STATE_OPEN);
  buf_put(&p.cl.log, "", 1);
  CHECK(strstr(cstr(&p.cl.log), "open chat\n") != NULL);
  pair_free(&p);
  /* The server's application picks a protocol the client did not offer:
   * the server refuses with 500, and the client fails on that status. */
  pair_init(&p, NULL, NULL);
  CHECK_INT(ws_conn_state(&p.cl.c), WS_STATE_CLOSED);
  CHECK_INT(ws_conn_error(&p.cl.c), WS_EUPGRADE);
  CHECK_INT(ws_conn_http_status(&p.cl.c), 500);
  CHECK_INT(p.cl.closes, 1);
  CHECK_INT(p.cl.opened, 0);
  pair_free(&p);
}

/* Sizes across every length encoding boundary. */
static const size_t sizes[] = {0, 1, 125, 126, 127, 65535, 65536, 1u << 20};

static void test_pair_conformance(void) {
  size_t i;
  int mode;
  unsigned char *data = (unsigned char *)malloc(1u << 20);
  for (i = 0; i < (1u << 20); i++) data[i] = (unsigned char)(i * 31 + 7);
  for (mode = 0; mode < 3; mode++) {
    pair p;
    pair_init(&p, "chat", NULL);
    p.s.echo = 1;
    /* mode 1: one byte per read and write; mode 2: blocked every other. */
    if (mode == 1) p.s.read_max = p.cl.read_max = 1, p.s.write_max = p.cl.write_max = 1;
    if (mode == 2) p.s.write_block = p.cl.write_block = 1, p.s.write_max = 1000;
    for (i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
      char want[64];
      if (mode == 1 && sizes[i] > 70000) continue;
      p.cl.log.len = 0;
      CHECK_INT(ws_send(&p.cl.c, WS_OP_BINARY, data, sizes[i]), WS_OK);
      pair_pump(&p);
      snprintf(want, sizeof want, "msg 2 %lu %08lx\n", (unsigned long)sizes[i],
               fnv(data, sizes[i]));
      buf_put(&p.cl.log, "", 1);
      if (!CHECK(strcmp((const char *)p.cl.log.d, want) == 0))
        printf("    mode %d size %lu: %s\n", mode, (unsigned long)sizes[i],
               (const char *)p.cl.log.d);
    }
    /* Fragmented text with pings in between; automatic pongs. */
    p.cl.log.len = 0;
    CHECK_INT(ws_send_fragment(&p.cl.c, WS_OP_TEXT, "h\xc3", 2, 0), WS_OK);
    CHECK_INT(ws_ping(&p.cl.c, "mid", 3), WS_OK);
    CHECK_INT(ws_send(&p.cl.c, WS_OP_TEXT, "no", 2), WS_ESTATE);
    CHECK_INT(ws_send_fragment(&p.cl.c, WS_OP_BINARY, "x", 1, 0), WS_EINVAL);
    CHECK_INT(ws_send_fragment(&p.cl.c, WS_OP_CONT, "\xa9llo", 4, 1), WS_OK);
    pair_pump(&p);
    {
      char want[64];
      snprintf(want, sizeof want, "pong 3 mid\nmsg 1 6 %08lx\n",
               fnv("h\xc3\xa9llo", 6));
      buf_put(&p.cl.log, "", 1);
      if (!CHECK(strcmp((const char *)p.cl.log.d, want) == 0))
        printf("    got: %s\n", (const char *)p.cl.log.d);
    }
    /* Invalid UTF-8 is refused before anything is queued. */
    CHECK_INT(ws_send(&p.cl.c, WS_OP_TEXT, "\xff", 1), WS_EUTF8);
    CHECK_INT(ws_send_fragment(&p.cl.c, WS_OP_TEXT, "\xe2\x82", 2, 1), WS_EUTF8);
    CHECK_INT(ws_conn_queued(&p.cl.c), 0);
    /* Client-initiated close: the server echoes the code and closes first;
     * the client finishes on end of stream. */
    CHECK_INT(ws_close(&p.cl.c, 4001, "bye", 3), WS_OK);
    pair_pump(&p);
    CHECK_INT(ws_conn_state(&p.s.c), WS_STATE_CLOSED);
    CHECK_INT(p.s.close_code, 4001);
    CHECK_INT(ws_conn_state(&p.cl.c), WS_STATE_CLOSING); /* waits for TCP */
    p.cl.eof = 1;
    ws_conn_on_readable(&p.cl.c);
    CHECK_INT(ws_conn_state(&p.cl.c), WS_STATE_CLOSED);
    CHECK_INT(p.cl.close_code, 4001);
    CHECK_INT(p.cl.closes, 1);
    CHECK_INT(p.s.closes, 1);
    pair_free(&p);
  }
  free(data);
}

static void split_cfg(ws_config *cfg) { cfg->frame_size = 1000; }

static void test_pair_frame_split(void) {
  /* frame_size splits sends into frames of at most that size (one frame
   * at or under it, one empty frame for an empty message); the peer sees
   * one message. */
  static const size_t lens[] = {0, 1, 999, 1000, 1001, 2000, 4500};
  unsigned char data[4500];
  size_t k;
  memset(data, 'k', sizeof data);
  for (k = 0; k < sizeof lens / sizeof lens[0]; k++) {
    pair p;
    size_t frames = 0, off, len = lens[k];
    char want[32];
    pair_init(&p, "chat", split_cfg);
    off = p.s2c.len;
    CHECK_INT(ws_send(&p.s.c, WS_OP_BINARY, data, len), WS_OK);
    while (off < p.s2c.len) {
      ws_frame f;
      size_t hl;
      if (ws_frame_parse(p.s2c.d + off, p.s2c.len - off, &f, &hl) != WS_OK) break;
      CHECK(f.len <= 1000);
      CHECK_INT(f.opcode, frames == 0 ? WS_OP_BINARY : WS_OP_CONT);
      CHECK_INT(f.fin, off + hl + f.len == p.s2c.len);
      off += hl + (size_t)f.len;
      frames++;
    }
    CHECK_INT(frames, len ? (len + 999) / 1000 : 1);
    pair_pump(&p);
    buf_put(&p.cl.log, "", 1);
    snprintf(want, sizeof want, "msg 2 %lu ", (unsigned long)len);
    CHECK(strstr(cstr(&p.cl.log), want) != NULL);
    pair_free(&p);
  }
}

static void test_pair_server_close(void) {
  /* Server-initiated close; the client echoes; the server closes first. */
  pair p;
  pair_init(&p, "chat", NULL);
  CHECK_INT(ws_close(&p.s.c, 1001, "restart", 7), WS_OK);
  CHECK_INT(ws_close(&p.s.c, 1000, NULL, 0), WS_ESTATE);
  pair_pump(&p);
  CHECK_INT(ws_conn_state(&p.s.c), WS_STATE_CLOSED);
  CHECK_INT(p.s.close_code, 1001); /* the client echoed our code */
  CHECK_INT(p.cl.close_code, 0);   /* the client still waits for TCP close */
  p.cl.eof = 1;
  ws_conn_on_readable(&p.cl.c);
  CHECK_INT(p.cl.close_code, 1001);
  buf_put(&p.cl.log, "", 1);
  CHECK(strstr(cstr(&p.cl.log), "close 1001 restart") != NULL);
  /* Invalid close arguments. */
  pair_free(&p);
  pair_init(&p, "chat", NULL);
  CHECK_INT(ws_close(&p.s.c, 1005, NULL, 0), WS_EINVAL);
  CHECK_INT(ws_close(&p.s.c, 0, "x", 1), WS_EINVAL);
  CHECK_INT(ws_close(&p.s.c, 1000, "\xff", 1), WS_EINVAL);
  pair_free(&p);
}

static void test_client_rejects_masked_and_bad_response(void) {
  /* A masked frame from the server: the client fails with 1002. */
  pair p;
  buf f = {0};
  pair_init(&p, "chat", NULL);
  cframe(&f, 1, WS_OP_TEXT, "masked!");
  buf_put(&p.s2c, f.d, f.len);
  pair_pump(&p);
  CHECK_INT(p.cl.close_code, 1002);
  CHECK_INT(out_close_code(&p.c2s, 1), 1002);
  CHECK_INT(ws_conn_state(&p.cl.c), WS_STATE_CLOSED);
  buf_free(&f);
  pair_free(&p);
  /* Responses that are not a valid acceptance. */
  {
    /* A well-formed reply without 101 (a page from a server that never saw
     * Upgrade, a refusal) is WS_EUPGRADE with its status; a broken one is
     * WS_EHANDSHAKE. */
    static const char *bad[] = {
        "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        ("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
         "Connection: Upgrade\r\nSec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n"),
        "garbage\r\n\r\n",
        "HTTP/1.1 426 Upgrade Required\r\nSec-WebSocket-Version: 13\r\n\r\n",
        "HTTP/1.1 200 OK\r\nbad header\r\n\r\n",
    };
    static const int want_err[] = {WS_EUPGRADE, WS_EHANDSHAKE, WS_EHANDSHAKE,
                                   WS_EUPGRADE, WS_EHANDSHAKE};
    static const int want_status[] = {200, 101, 0, 426, 200};
    size_t i;
    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
      ws_config cfg;
      endpoint e;
      buf rx = {0}, tx = {0};
      ws_client_opts o;
      memset(&o, 0, sizeof o);
      o.host = "h";
      ws_config_init(&cfg, WS_CLIENT);
      ep_init(&e, &cfg, &rx, &tx);
      CHECK_INT(ws_client_start(&e.c, &o), WS_OK);
      buf_puts(&rx, bad[i]);
      ws_conn_on_readable(&e.c);
      CHECK_INT(ws_conn_state(&e.c), WS_STATE_CLOSED);
      CHECK_INT(ws_conn_error(&e.c), want_err[i]);
      CHECK_INT(ws_conn_http_status(&e.c), want_status[i]);
      CHECK_INT(e.closes, 1);
      ep_free(&e);
      buf_free(&rx);
      buf_free(&tx);
    }
  }
}

/* The client reads the response as it comes: an acceptance a byte at a
 * time opens the connection at its last byte, and a first line that
 * cannot be a status line fails at once, before any blank line. */
static void test_client_trickled_response(void) {
  static const char *bad_starts[] = {"HTTP/1.0 ", "http", "XTTP/1.1 101",
                                     "HTTP/1.1\r"};
  ws_config cfg;
  endpoint e;
  buf rx = {0}, tx = {0};
  ws_client_opts o;
  ws_request req;
  ws_header hdrs[8];
  char resp[256];
  size_t consumed, rlen, i;
  int status;
  memset(&o, 0, sizeof o);
  o.host = "h";
  ws_config_init(&cfg, WS_CLIENT);
  ep_init(&e, &cfg, &rx, &tx);
  CHECK_INT(ws_client_start(&e.c, &o), WS_OK);
  CHECK_INT(ws_request_parse(tx.d, tx.len, &req, hdrs, 8, &consumed, &status),
            WS_OK);
  CHECK_INT(ws_response_write(resp, sizeof resp, req.key, req.key_len, NULL,
                              NULL, 0, &rlen),
            WS_OK);
  for (i = 0; i < rlen; i++) {
    CHECK_INT(ws_conn_state(&e.c), WS_STATE_CONNECTING);
    buf_put(&rx, resp + i, 1);
    ws_conn_on_readable(&e.c);
  }
  CHECK_INT(ws_conn_state(&e.c), WS_STATE_OPEN);
  CHECK_INT(e.opened, 1);
  ep_free(&e);
  buf_free(&rx);
  buf_free(&tx);
  for (i = 0; i < sizeof bad_starts / sizeof bad_starts[0]; i++) {
    memset(&rx, 0, sizeof rx);
    memset(&tx, 0, sizeof tx);
    ep_init(&e, &cfg, &rx, &tx);
    CHECK_INT(ws_client_start(&e.c, &o), WS_OK);
    buf_puts(&rx, bad_starts[i]);
    ws_conn_on_readable(&e.c);
    CHECK_INT(ws_conn_state(&e.c), WS_STATE_CLOSED);
    CHECK_INT(ws_conn_error(&e.c), WS_EHANDSHAKE);
    ep_free(&e);
    buf_free(&rx);
    buf_free(&tx);
  }
}

static void test_client_protocol_errors(void) {
  /* The client side of every framing rule: the server's bad frame makes the
   * client send the RFC's close code (masked) and end. */
  static const bad_case cases[] = {
      {"rsv1", 0x80 | 0x40 | 1, "x", 0, 1002},
      {"rsv3 pong", 0x80 | 0x10 | 0xA, "", 0, 1002},
      {"opcode 4", 0x84, "", 0, 1002},
      {"opcode 12", 0x8C, "", 0, 1002},
      {"fragmented pong", 0x0A, "", 0, 1002},
      {"continuation without start", 0x80, "x", 0, 1002},
      {"masked server frame", 0x81, "x", 1, 1002},
      {"invalid utf-8", 0x81, "\xc0\xaf", 0, 1007},
      {"surrogate", 0x81, "\xed\xbf\xbf", 0, 1007},
      {"close 1 byte", 0x88, "\x03", 0, 1002},
      {"close code 1004", 0x88, "\x03\xec", 0, 1002},
      {"close reason utf-8", 0x88, "\x03\xe8\xc3", 0, 1007},
  };
  size_t i;
  for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    pair p;
    buf f = {0};
    pair_init(&p, "chat", NULL);
    add_frame(&f, 1, WS_OP_TEXT, "ok", 2, 0);
    add_frame_ex(&f, cases[i].b0, strlen(cases[i].payload), cases[i].payload,
                 strlen(cases[i].payload), cases[i].masked);
    buf_put(&p.s2c, f.d, f.len);
    pair_pump(&p);
    if (!CHECK(strstr(cstr(&p.cl.log), "msg 1 2") != NULL))
      printf("    %s\n", cases[i].name);
    CHECK_INT(p.cl.close_code, cases[i].code);
    CHECK_INT(out_close_code(&p.c2s, 1), cases[i].code);
    CHECK_INT(p.cl.closes, 1);
    CHECK_INT(ws_conn_state(&p.cl.c), WS_STATE_CLOSED);
    buf_free(&f);
    pair_free(&p);
  }
}

static void test_send_encoded(void) {
  /* One encoded frame queued as is; malformed ones refused. */
  pair p;
  unsigned char fr[16];
  size_t hl;
  pair_init(&p, "chat", NULL);
  hl = ws_frame_write(fr, 1, WS_OP_TEXT, 3, NULL);
  memcpy(fr + hl, "abc", 3);
  CHECK_INT(ws_send_encoded(&p.s.c, fr, hl + 3), WS_OK);
  CHECK_INT(ws_send_encoded(&p.s.c, fr, hl + 2), WS_EINVAL);  /* short */
  CHECK_INT(ws_send_encoded(&p.cl.c, fr, hl + 3), WS_EINVAL); /* client */
  fr[0] = 0x01;                                               /* fin = 0 */
  CHECK_INT(ws_send_encoded(&p.s.c, fr, hl + 3), WS_EINVAL);
  fr[0] = 0x88;                                               /* close */
  CHECK_INT(ws_send_encoded(&p.s.c, fr, hl + 3), WS_EINVAL);
  pair_pump(&p);
  CHECK(strstr(cstr(&p.cl.log), "msg 1 3") != NULL);
  pair_free(&p);
  /* With nothing queued it is written from the caller's bytes: nothing
   * allocated; a short write queues the rest (a copy: the caller may reuse
   * its buffer), and what was queued goes first next time. */
  {
    ws_config cfg;
    endpoint e;
    buf rx = {0}, tx = {0};
    counting_alloc a = {0, 0, 0, 0};
    static unsigned char big[3000];
    size_t i, off;
    for (i = 0; i < sizeof big; i++) big[i] = (unsigned char)(i * 11);
    ws_config_init(&cfg, WS_SERVER);
    cfg.realloc = counting_realloc;
    cfg.alloc_ctx = &a;
    ep_init(&e, &cfg, &rx, &tx);
    ws_conn_feed(&e.c, REQ, strlen(REQ));
    ep_drain(&e);
    tx.len = 0;
    hl = ws_frame_write(fr, 1, WS_OP_TEXT, 3, NULL);
    memcpy(fr + hl, "abc", 3);
    a.calls = 0;
    CHECK_INT(ws_send_encoded(&e.c, fr, hl + 3), WS_OK);
    if (!WS_SMALL) CHECK_INT(a.calls, 0); /* small: copied to the queue */
    CHECK_INT(tx.len, hl + 3);
    {
      unsigned char *enc = (unsigned char *)malloc(sizeof big + 14);
      size_t el = ws_frame_write(enc, 1, WS_OP_BINARY, sizeof big, NULL);
      memcpy(enc + el, big, sizeof big);
      e.write_max = 1000; /* one write of 1000, then would-block */
      e.write_block = 1;
      e.block_toggle = 1;
      CHECK_INT(ws_send_encoded(&e.c, enc, el + sizeof big), WS_OK);
      CHECK_INT(ws_conn_queued(&e.c), el + sizeof big - 1000);
      memset(enc, 0, el + sizeof big); /* the caller reuses its buffer */
      CHECK_INT(ws_send_encoded(&e.c, fr, hl + 3), WS_OK); /* queued */
      e.write_max = 0;
      e.write_block = 0;
      ep_drain(&e);
      off = expect_frame(&tx, 0, WS_OP_TEXT, (const unsigned char *)"abc", 3);
      off = expect_frame(&tx, off, WS_OP_BINARY, big, sizeof big);
      off = expect_frame(&tx, off, WS_OP_TEXT, (const unsigned char *)"abc", 3);
      CHECK_INT(off, tx.len);
      free(enc);
    }
    ep_free(&e);
    CHECK_INT(a.live, 0);
    buf_free(&rx);
    buf_free(&tx);
  }
}

/* Reassembles the unmasked frames of one message in tx from off on into
 * msg; returns the frames read, or -1 if they are not one message. */
static int tx_message(const buf *tx, size_t off, int op, buf *msg) {
  int n = 0;
  while (off < tx->len) {
    ws_frame f;
    size_t hl;
    if (ws_frame_parse(tx->d + off, tx->len - off, &f, &hl) != WS_OK ||
        f.masked || tx->len - off - hl < f.len ||
        f.opcode != (n == 0 ? op : WS_OP_CONT))
      return -1;
    buf_put(msg, tx->d + off + hl, (size_t)f.len);
    off += hl + (size_t)f.len;
    n++;
    if (f.fin) return off == tx->len ? n : -1;
  }
  return -1;
}

static void q10k(ws_config *cfg) { cfg->max_queued = 10000; }

static void test_send_over_queue_limit(void) {
  /* max_queued bounds one send too: a message that does not fit it with
   * its headers can never be queued whole, so it is refused with
   * WS_ETOOBIG whatever the queue and the transport, and the connection
   * carries on; WS_EFULL means it fits once the queue drains. A larger
   * message goes out with ws_send_fragment(). */
  ws_config cfg;
  endpoint e;
  buf rx = {0}, tx = {0}, msg = {0};
  static unsigned char big[50000], enc[20000 + WS_FRAME_HEADER_MAX];
  size_t i, off, maxq = 0, hl;
  int rc, efulls = 0, guard = 0;
  for (i = 0; i < sizeof big; i++) big[i] = (unsigned char)('a' + i % 26);
  ws_config_init(&cfg, WS_SERVER);
  cfg.max_queued = 10000;
  ep_init(&e, &cfg, &rx, &tx);
  ws_conn_feed(&e.c, REQ, strlen(REQ));
  ep_drain(&e);
  tx.len = 0;
  /* An empty queue and a transport that takes everything (through writev:
   * the direct path for 16 KiB and more): still refused, nothing written. */
  CHECK_INT(ws_send(&e.c, WS_OP_BINARY, big, 20000), WS_ETOOBIG);
  CHECK_INT(ws_send(&e.c, WS_OP_TEXT, big, 20000), WS_ETOOBIG);
  CHECK_INT(ws_send_fragment(&e.c, WS_OP_BINARY, big, 20000, 0), WS_ETOOBIG);
  hl = ws_frame_write(enc, 1, WS_OP_BINARY, 20000, NULL);
  memcpy(enc + hl, big, 20000);
  CHECK_INT(ws_send_encoded(&e.c, enc, hl + 20000), WS_ETOOBIG);
  CHECK_INT(tx.len, 0);
  CHECK_INT(ws_conn_queued(&e.c), 0);
  CHECK_INT(ws_conn_state(&e.c), WS_STATE_OPEN);
  CHECK_INT(ws_conn_error(&e.c), WS_OK);
  CHECK_INT(e.closes, 0);
  /* Exactly max_queued with the header (4 bytes here) fits; a byte more
   * does not. The refused fragment opened no message. */
  CHECK_INT(ws_send(&e.c, WS_OP_BINARY, big, 9997), WS_ETOOBIG);
  CHECK_INT(ws_send(&e.c, WS_OP_BINARY, big, 9996), WS_OK);
  CHECK_INT(expect_frame(&tx, 0, WS_OP_BINARY, big, 9996), tx.len);
  /* A transport that takes nothing: the queue fills to max_queued exactly;
   * then a send that would fit an empty queue is WS_EFULL, one that never
   * fits still WS_ETOOBIG. */
  tx.len = 0;
  e.write_block = 1;
  e.block_toggle = 0;
  CHECK_INT(ws_send(&e.c, WS_OP_BINARY, big, 9996), WS_OK);
  CHECK_INT(ws_conn_queued(&e.c), 10000);
  CHECK_INT(tx.len, 0);
  e.block_toggle = 0;
  CHECK_INT(ws_send(&e.c, WS_OP_BINARY, big, 1), WS_EFULL);
  e.block_toggle = 0;
  CHECK_INT(ws_send(&e.c, WS_OP_BINARY, big, 20000), WS_ETOOBIG);
  CHECK_INT(ws_conn_queued(&e.c), 10000);
  /* Partial takes: 3000 bytes leave, 7000 stay; 2996 + 4 fit beside them,
   * 2997 + 4 do not (WS_EFULL), 9997 + 4 never do. */
  e.write_max = 3000;
  e.block_toggle = 1; /* one write of 3000, then would-block */
  ws_conn_on_writable(&e.c);
  CHECK_INT(ws_conn_queued(&e.c), 7000);
  e.block_toggle = 0;
  CHECK_INT(ws_send(&e.c, WS_OP_BINARY, big, 2997), WS_EFULL);
  e.block_toggle = 0;
  CHECK_INT(ws_send(&e.c, WS_OP_BINARY, big, 9997), WS_ETOOBIG);
  e.block_toggle = 0;
  CHECK_INT(ws_send(&e.c, WS_OP_BINARY, big + 1, 2996), WS_OK);
  CHECK_INT(ws_conn_queued(&e.c), 10000);
  e.write_block = 0;
  e.write_max = 0;
  ep_drain(&e);
  off = expect_frame(&tx, 0, WS_OP_BINARY, big, 9996);
  CHECK_INT(expect_frame(&tx, off, WS_OP_BINARY, big + 1, 2996), tx.len);
  /* Fragments: 50000 bytes in pieces of max_queued - WS_FRAME_HEADER_MAX
   * through a transport that takes 3000 bytes, then would block; each
   * WS_EFULL waits for writability. The queue stays within max_queued and
   * the peer gets the message whole. */
  tx.len = 0;
  e.write_max = 3000;
  e.write_block = 1;
  for (off = 0; off < sizeof big && guard++ < 1000;) {
    size_t n = WS__MIN(sizeof big - off, 10000 - WS_FRAME_HEADER_MAX);
    rc = ws_send_fragment(&e.c, off ? WS_OP_CONT : WS_OP_BINARY, big + off,
                          n, off + n == sizeof big);
    if (ws_conn_queued(&e.c) > maxq) maxq = ws_conn_queued(&e.c);
    if (rc == WS_EFULL) {
      efulls++;
      ws_conn_on_writable(&e.c);
      continue;
    }
    if (!CHECK(rc == WS_OK)) break;
    off += n;
  }
  CHECK_INT(off, sizeof big);
  CHECK(efulls > 0);
  CHECK(maxq <= 10000);
  e.write_block = 0;
  e.write_max = 0;
  ep_drain(&e);
  CHECK_INT(tx_message(&tx, 0, WS_OP_BINARY, &msg), 6);
  CHECK(msg.len == sizeof big && memcmp(msg.d, big, sizeof big) == 0);
  CHECK_INT(e.closes, 0);
  ep_free(&e);
  /* With frame_size, every frame's header counts: 9960 bytes in 10 frames
   * of 4-byte headers make 10000 and fit; 9961 do not. */
  tx.len = 0;
  cfg.frame_size = 1000;
  ep_init(&e, &cfg, &rx, &tx);
  rx.off = 0;
  ws_conn_feed(&e.c, REQ, strlen(REQ));
  ep_drain(&e);
  tx.len = 0;
  CHECK_INT(ws_send(&e.c, WS_OP_BINARY, big, 9961), WS_ETOOBIG);
  CHECK_INT(ws_send(&e.c, WS_OP_BINARY, big, 9960), WS_OK);
  msg.len = 0;
  CHECK_INT(tx_message(&tx, 0, WS_OP_BINARY, &msg), 10);
  CHECK(msg.len == 9960 && memcmp(msg.d, big, 9960) == 0);
  ep_free(&e);
  buf_free(&rx);
  buf_free(&tx);
  buf_free(&msg);
  /* A client's frames carry 4 more bytes (the mask key): 9992 + 8 fit. */
  {
    pair p;
    pair_init(&p, "chat", q10k);
    CHECK_INT(ws_send(&p.cl.c, WS_OP_BINARY, big, 9993), WS_ETOOBIG);
    CHECK_INT(ws_send(&p.cl.c, WS_OP_BINARY, big, 9992), WS_OK);
    pair_pump(&p);
    CHECK(strstr(cstr(&p.s.log), "msg 2 9992 ") != NULL);
    CHECK_INT(ws_conn_state(&p.cl.c), WS_STATE_OPEN);
    pair_free(&p);
  }
}

/* A client session under allocation failure k: handshake, a 1 MiB send, an
 * echo of it, a close. */
static void test_client_alloc_failures(void) {
  long k, total = 0;
  unsigned char *big = (unsigned char *)malloc(1u << 20);
  memset(big, 'c', 1u << 20);
  for (k = 0; k == 0 || k <= total; k++) {
    pair p;
    counting_alloc a = {0, 0, 0, 0};
    ws_config cfg;
    ws_client_opts o;
    memset(&p, 0, sizeof p);
    a.fail_at = k;
    ws_config_init(&cfg, WS_SERVER);
    ep_init(&p.s, &cfg, &p.c2s, &p.s2c);
    p.s.echo = 1;
    ws_config_init(&cfg, WS_CLIENT);
    cfg.realloc = counting_realloc;
    cfg.alloc_ctx = &a;
    ep_init(&p.cl, &cfg, &p.s2c, &p.c2s);
    memset(&o, 0, sizeof o);
    o.host = "h";
    o.protocols = "x, y";
    if (ws_client_start(&p.cl.c, &o) == WS_OK) {
      pair_pump(&p);
      if (ws_conn_state(&p.cl.c) == WS_STATE_OPEN)
        ws_send(&p.cl.c, WS_OP_BINARY, big, 1u << 20);
      pair_pump(&p);
      if (ws_conn_state(&p.cl.c) == WS_STATE_OPEN) ws_close(&p.cl.c, 1000, NULL, 0);
      pair_pump(&p);
    }
    if (k == 0) {
      total = a.calls;
      CHECK(total > 3);
      CHECK(strstr(cstr(&p.cl.log), "msg 2 1048576") != NULL);
    }
    ep_free(&p.cl);
    CHECK(p.cl.closes <= 1);
    CHECK_INT(a.live, 0);
    ep_free(&p.s);
    buf_free(&p.s2c);
    buf_free(&p.c2s);
  }
  free(big);
}

static void test_regressions_from_fuzzing(void) {
  /* max_queued below a pong's size: input must still flow while nothing is
   * queued (it used to stall before the handshake). */
  {
    ws_config cfg;
    endpoint e;
    buf rx = {0}, tx = {0};
    ws_config_init(&cfg, WS_SERVER);
    cfg.max_queued = 0;
    ep_init(&e, &cfg, &rx, &tx);
    buf_puts(&rx, REQ);
    CHECK_INT(ws_conn_want_read(&e.c), 1);
    ws_conn_on_readable(&e.c);
    CHECK_INT(ws_conn_state(&e.c), WS_STATE_OPEN);
    ep_free(&e);
    buf_free(&rx);
    buf_free(&tx);
  }
  /* A multi-frame send failing half-way (the random source) after the
   * queue was moved down to make room: the rollback must leave exactly
   * what was queued before, so the peer still sees whole frames. */
  {
    ws_config cfg;
    endpoint e;
    buf rx = {0}, tx = {0};
    static unsigned char ibuf[1024], obuf[1024];
    unsigned char msg[800];
    static const char *RESP =
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Accept: ";
    ws_client_opts o;
    char key[25], acc[29];
    size_t before, off, frames = 0;
    memset(msg, 'm', sizeof msg);
    ws_config_init(&cfg, WS_CLIENT);
    cfg.frame_size = 100;
    ep_init(&e, &cfg, &rx, &tx);
    CHECK_INT(ws_conn_set_buffers(&e.c, ibuf, sizeof ibuf, obuf, sizeof obuf), WS_OK);
    memset(&o, 0, sizeof o);
    o.host = "h";
    CHECK_INT(ws_client_start(&e.c, &o), WS_OK);
    /* Answer with the accept for the nonce our random source made. */
    ws__b64_encode(WS__P(&e.c)->in->d, 16, key);
    ws_accept_key(key, 24, acc);
    buf_puts(&rx, RESP);
    buf_puts(&rx, acc);
    buf_puts(&rx, "\r\n\r\n");
    ws_conn_on_readable(&e.c);
    CHECK_INT(ws_conn_state(&e.c), WS_STATE_OPEN);
    tx.len = 0;
    /* 800 bytes in 8 frames of 100, of which 100 bytes leave. */
    e.write_max = 100;
    e.write_block = 1;
    e.block_toggle = 1; /* one write of 100 bytes, then would-block */
    CHECK_INT(ws_send(&e.c, WS_OP_BINARY, msg, 800), WS_OK);
    e.write_max = 0;
    e.block_toggle = 0;
    before = ws_conn_queued(&e.c);
    CHECK(before > 0 && WS__P(&e.c)->out->head > 0);
    /* 160 more bytes need the queue moved down; the 2nd mask key fails. */
    e.rnd_fail_at = e.rnd_calls + 2;
    CHECK_INT(ws_send(&e.c, WS_OP_BINARY, msg, 160), WS_ERANDOM);
    CHECK_INT(ws_conn_queued(&e.c), before);
    e.write_block = 0;
    ws_conn_on_writable(&e.c);
    for (off = 0; off < tx.len; frames++) {
      ws_frame f;
      size_t hl;
      if (!CHECK(ws_frame_parse(tx.d + off, tx.len - off, &f, &hl) == WS_OK)) break;
      CHECK(f.len == 100 && f.masked);
      off += hl + (size_t)f.len;
    }
    CHECK_INT(frames, 8);
    ep_free(&e);
    buf_free(&rx);
    buf_free(&tx);
  }
}

static int failing_random(ws_conn *c, void *b, size_t n, void *user) {
  (void)c, (void)b, (void)n, (void)user;
  return WS_EIO;
}

static void test_client_random(void) {
  /* Mask keys come from the random source, fresh per frame. */
  pair p;
  size_t off;
  uint8_t keys[3][4];
  int i;
  pair_init(&p, "chat", NULL);
  off = p.c2s.len;
  for (i = 0; i < 3; i++) CHECK_INT(ws_send(&p.cl.c, WS_OP_TEXT, "abc", 3), WS_OK);
  for (i = 0; i < 3; i++) {
    ws_frame f;
    size_t hl;
    CHECK_INT(ws_frame_parse(p.c2s.d + off, p.c2s.len - off, &f, &hl), WS_OK);
    CHECK_INT(f.masked, 1);
    memcpy(keys[i], f.mask, 4);
    off += hl + (size_t)f.len;
  }
  CHECK(memcmp(keys[0], keys[1], 4) != 0 && memcmp(keys[1], keys[2], 4) != 0);
  pair_free(&p);
  {
    ws_config cfg;
    ws_conn c;
    ws_callbacks cb;
    ws_client_opts o;
    memset(&cb, 0, sizeof cb);
    memset(&o, 0, sizeof o);
    cb.random = failing_random;
    o.host = "h";
    ws_config_init(&cfg, WS_CLIENT);
    ws_conn_init(&c, &cfg, &cb, NULL);
    CHECK_INT(ws_client_start(&c, &o), WS_ERANDOM);
    ws_conn_free(&c);
    /* The OS source, where there is one. */
    {
      endpoint e;
      buf rx = {0}, tx = {0};
      ws_callbacks cb2 = ep_callbacks;
      memset(&e, 0, sizeof e);
      e.rx = &rx;
      e.tx = &tx;
      cb2.random = NULL;
      ws_conn_init(&e.c, &cfg, &cb2, &e);
      CHECK_INT(ws_client_start(&e.c, &o),
                WS__HAVE_OS || WS__HAVE_NET ? WS_OK : WS_ERANDOM);
      CHECK(tx.len > 0 || !(WS__HAVE_OS || WS__HAVE_NET));
      ep_free(&e);
      buf_free(&tx);
    }
  }
}

static void test_write_error_and_free_in_close(void) {
  /* A transport error ends the connection with 1006, once; on_close may
   * free the connection's memory. */
  endpoint *e = (endpoint *)calloc(1, sizeof *e);
  ws_config cfg;
  buf rx = {0}, tx = {0};
  ws_config_init(&cfg, WS_SERVER);
  ep_init(e, &cfg, &rx, &tx);
  e->free_on_close = 1;
  ws_conn_feed(&e->c, REQ, strlen(REQ));
  e->write_fail = 1;
  CHECK_INT(ws_send(&e->c, WS_OP_TEXT, "x", 1), WS_ECLOSED);
  CHECK_INT(e->closes, 1);
  CHECK_INT(e->close_code, 1006);
  CHECK_INT(ws_conn_error(&e->c), WS_EIO);
  buf_free(&e->log);
  buf_free(&tx);
  free(e);
}

static void test_adopt_with_bytes(void) {
  /* A host server read the request and the first frame already: it feeds
   * them, and the connection proceeds from there. */
  buf in = {0};
  buf_puts(&in, REQ);
  cframe(&in, 1, WS_OP_TEXT, "first");
  {
    ws_config cfg;
    endpoint e;
    buf rx = {0}, tx = {0};
    ws_config_init(&cfg, WS_SERVER);
    ep_init(&e, &cfg, &rx, &tx);
    CHECK_INT(ws_conn_feed(&e.c, in.d, in.len), WS_OK);
    CHECK_INT(ws_conn_state(&e.c), WS_STATE_OPEN);
    buf_put(&e.log, "", 1);
    CHECK(strstr(cstr(&e.log), "msg 1 5") != NULL);
    ep_free(&e);
    buf_free(&tx);
  }
  buf_free(&in);
}

static void test_callback_may_close(void) {
  /* ws_close from inside on_message: later frames in the same read are
   * still processed until the peer's close, and on_close runs once. */
  pair p;
  pair_init(&p, "chat", NULL);
  p.s.close_on_msg = 1;
  ws_send(&p.cl.c, WS_OP_TEXT, "one", 3);
  pair_pump(&p);
  CHECK_INT(ws_conn_state(&p.s.c), WS_STATE_CLOSED);
  CHECK_INT(p.s.closes, 1);
  CHECK_INT(p.s.close_code, 1000);
  pair_free(&p);
}

static void test_cork(void) {
  /* Corked sends leave in one write. */
  pair p;
  size_t writes_before;
  pair_init(&p, "chat", NULL);
  writes_before = p.s2c.len;
  ws_conn_cork(&p.s.c, 1);
  ws_send(&p.s.c, WS_OP_TEXT, "a", 1);
  ws_send(&p.s.c, WS_OP_TEXT, "b", 1);
  CHECK_INT(p.s2c.len, writes_before);
  CHECK_INT(ws_conn_queued(&p.s.c), 6);
  p.s.write_max = 0;
  ws_conn_cork(&p.s.c, 0);
  CHECK_INT(p.s2c.len, writes_before + 6);
  pair_free(&p);
}

/* ---------------------------------------------------------------------
 * ws_conn_free() from inside the connection's own callbacks
 * ------------------------------------------------------------------- */

/* An endpoint on the heap, so that ASan sees any use of it after it is
 * released; its allocations counted. */
typedef struct fic {
  endpoint *e;
  ws_config cfg;
  counting_alloc a;
  buf rx, tx, in;
} fic;

/* CHECK_INT that says whether it held. */
static int check_eq(long long got, long long want, int line, const char *what) {
  if (t_check(got == want, __FILE__, line, what)) return 1;
  printf("    got %lld, want %lld\n", got, want);
  return 0;
}
#define CHECK_EQ(a, b) \
  check_eq((long long)(a), (long long)(b), __LINE__, #a " == " #b)

static void fic_init(fic *f, int role, int free_in) {
  memset(f, 0, sizeof *f);
  ws_config_init(&f->cfg, role);
  f->cfg.realloc = counting_realloc;
  f->cfg.alloc_ctx = &f->a;
  f->e = (endpoint *)malloc(sizeof *f->e);
  if (f->e == NULL) abort();
  ep_init(f->e, &f->cfg, &f->rx, &f->tx);
  f->e->free_in = free_in;
}

/* The outermost call returned rc: the free is done, on_close ran (once,
 * not nested, nothing after it) when the connection was started, with the
 * code the rule gives; then the memory is released, as a caller would. */
static void fic_check(fic *f, const char *name, int rc, int closes, int code) {
  endpoint *e = f->e;
  int ok = 1;
  ok &= CHECK_EQ(rc, WS_ECLOSED);
  ok &= CHECK_EQ(e->free_in, CB_NONE); /* the callback did run */
  ok &= CHECK_EQ(e->closes, closes);
  ok &= CHECK_EQ(e->after_close, 0);
  ok &= CHECK_EQ(e->in_cb, 0);
  if (closes) ok &= CHECK_EQ(e->close_code, code);
  ok &= CHECK_EQ(ws_conn_state(&e->c), WS_STATE_CLOSED);
  ok &= CHECK_EQ(f->a.live, 0); /* the buffers are back */
  if (!ok) printf("    in %s\n", name);
  buf_free(&e->log);
  buf_free(&e->msg);
  memset(e, 0xA5, sizeof *e);
  free(e);
  buf_free(&f->rx);
  buf_free(&f->tx);
  buf_free(&f->in);
}

static void test_free_in_callbacks(void) {
  fic f;
  unsigned char big[WS_DIRECT_MIN];
  ws_client_opts o;
  memset(big, 'b', sizeof big);
  /* The handshake decision, and the plain-HTTP answer. */
  fic_init(&f, WS_SERVER, CB_HANDSHAKE);
  fic_check(&f, "on_handshake", ws_conn_feed(&f.e->c, REQ, strlen(REQ)), 1,
            1006);
  fic_init(&f, WS_SERVER, CB_HTTP);
  buf_puts(&f.in, "GET /page HTTP/1.1\r\nHost: a\r\n\r\n");
  fic_check(&f, "on_http", ws_conn_feed(&f.e->c, f.in.d, f.in.len), 1, 1006);
  /* on_open, with frames after the request that are never looked at. */
  fic_init(&f, WS_SERVER, CB_OPEN);
  buf_puts(&f.in, REQ);
  cframe(&f.in, 1, WS_OP_TEXT, "never");
  fic_check(&f, "on_open", ws_conn_feed(&f.e->c, f.in.d, f.in.len), 1, 1006);
  /* on_message on each input path, after a ping whose pong sits in the
   * batch's stack buffer, with a message after it that is dropped. */
  {
    int path;
    for (path = 0; path < 3; path++) {
      int rc;
      fic_init(&f, WS_SERVER, CB_NONE);
      CHECK_INT(ws_conn_feed(&f.e->c, REQ, strlen(REQ)), WS_OK);
      f.e->free_in = CB_MESSAGE;
      f.e->echo = 1;
      cframe(&f.in, 1, WS_OP_PING, "p");
      cframe(&f.in, 1, WS_OP_TEXT, "one");
      cframe(&f.in, 1, WS_OP_TEXT, "two");
      if (path == 0) {
        rc = ws_conn_feed(&f.e->c, f.in.d, f.in.len);
      } else if (path == 1) {
        rc = ws_conn_feed_inplace(&f.e->c, f.in.d, f.in.len); /* zero-copy */
      } else {
        buf_put(&f.rx, f.in.d, f.in.len);
        f.e->read_max = 7;
        rc = ws_conn_on_readable(&f.e->c);
      }
      CHECK_INT(f.e->nmsgs, 1);
      fic_check(&f, path == 0 ? "on_message, copied"
                    : path == 1 ? "on_message, in place"
                                : "on_message, read",
                rc, 1, 1006);
    }
  }
  /* on_ping (in place and copied), on_pong. */
  {
    int k;
    for (k = 0; k < 3; k++) {
      fic_init(&f, WS_SERVER, CB_NONE);
      CHECK_INT(ws_conn_feed(&f.e->c, REQ, strlen(REQ)), WS_OK);
      f.e->free_in = k < 2 ? CB_PING : CB_PONG;
      cframe(&f.in, 1, k < 2 ? WS_OP_PING : WS_OP_PONG, "x");
      cframe(&f.in, 1, WS_OP_TEXT, "after");
      fic_check(&f, k == 0 ? "on_ping, in place" : k == 1 ? "on_ping" : "on_pong",
                k == 1 ? ws_conn_feed(&f.e->c, f.in.d, f.in.len)
                       : ws_conn_feed_inplace(&f.e->c, f.in.d, f.in.len),
                1, 1006);
    }
  }
  /* The read callback. */
  fic_init(&f, WS_SERVER, CB_READ);
  buf_puts(&f.rx, REQ);
  fic_check(&f, "read", ws_conn_on_readable(&f.e->c), 1, 1006);
  /* The write callback: the 101 in a feed; a reply written between two
   * reads of ws_conn_on_readable(); a send; a close. */
  fic_init(&f, WS_SERVER, CB_WRITE);
  fic_check(&f, "write, feed", ws_conn_feed(&f.e->c, REQ, strlen(REQ)), 1,
            1006);
  fic_init(&f, WS_SERVER, CB_NONE);
  CHECK_INT(ws_conn_feed(&f.e->c, REQ, strlen(REQ)), WS_OK);
  cframe(&f.in, 1, WS_OP_PING, "1");
  cframe(&f.in, 1, WS_OP_PING, "2");
  buf_put(&f.rx, f.in.d, f.in.len);
  f.e->read_max = 7; /* one frame per read */
  f.e->free_in = CB_WRITE;
  {
    int rc = ws_conn_on_readable(&f.e->c);
    CHECK_INT(f.rx.off, 7); /* the pong went before the next read; none */
    fic_check(&f, "write, on_readable", rc, 1, 1006);
  }
  fic_init(&f, WS_SERVER, CB_NONE);
  CHECK_INT(ws_conn_feed(&f.e->c, REQ, strlen(REQ)), WS_OK);
  f.e->free_in = CB_WRITE;
  fic_check(&f, "write, ws_send", ws_send(&f.e->c, WS_OP_TEXT, "x", 1), 1,
            1006);
  fic_init(&f, WS_SERVER, CB_NONE);
  CHECK_INT(ws_conn_feed(&f.e->c, REQ, strlen(REQ)), WS_OK);
  f.e->free_in = CB_WRITE;
  fic_check(&f, "write, ws_close", ws_close(&f.e->c, 4000, "x", 1), 1, 4000);
  /* writev: a large send from the caller's buffer. */
  fic_init(&f, WS_SERVER, CB_NONE);
  CHECK_INT(ws_conn_feed(&f.e->c, REQ, strlen(REQ)), WS_OK);
  /* (The small build copies every send: it leaves through write.) */
  f.e->free_in = WS_SMALL ? CB_WRITE : CB_WRITEV;
  fic_check(&f, "writev", ws_send(&f.e->c, WS_OP_BINARY, big, sizeof big), 1,
            1006);
  /* The random source: a client's mask key in a send, and its nonce in
   * ws_client_start(), before the connection is started (no on_close). */
  memset(&o, 0, sizeof o);
  o.host = "h";
  fic_init(&f, WS_CLIENT, CB_NONE);
  CHECK_INT(ws_client_start(&f.e->c, &o), WS_OK);
  {
    buf resp = {0};
    buf_puts(&resp, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                    "Connection: Upgrade\r\nSec-WebSocket-Accept: ");
    {
      char key[25], acc[29];
      ws__b64_encode(f.e->c.ws__p.in->d, 16, key);
      key[24] = '\0';
      ws_accept_key(key, 24, acc);
      buf_put(&resp, acc, 28);
    }
    buf_puts(&resp, "\r\n\r\n");
    CHECK_INT(ws_conn_feed(&f.e->c, resp.d, resp.len), WS_OK);
    buf_free(&resp);
  }
  CHECK_INT(ws_conn_state(&f.e->c), WS_STATE_OPEN);
  f.e->free_in = CB_RANDOM;
  fic_check(&f, "random, ws_send", ws_send(&f.e->c, WS_OP_TEXT, "x", 1), 1,
            1006);
  fic_init(&f, WS_CLIENT, CB_RANDOM);
  fic_check(&f, "random, ws_client_start", ws_client_start(&f.e->c, &o), 0, 0);
}

/* ---------------------------------------------------------------------
 * Blocking sockets: replies leave before the next read
 * ------------------------------------------------------------------- */

#define B_ROUNDS 200

#ifdef T_POSIX
/* One side of a connection over a blocking socket. */
typedef struct bside {
  ws_conn c;
  ws_config cfg;
  int fd, msgs, pings, pongs, closes, close_code, gave_up;
  long reads, writes;
} bside;

static int b_read(ws_conn *c, void *b, size_t cap, size_t *n, void *user) {
  bside *s = (bside *)user;
  ssize_t r;
  (void)c;
  do r = read(s->fd, b, cap); while (r < 0 && errno == EINTR);
  s->reads++;
  if (r < 0) {
    /* SO_RCVTIMEO expired: the peer waits for us too. A deadlock. */
    s->gave_up = errno == EAGAIN || errno == EWOULDBLOCK;
    return WS_EIO;
  }
  *n = (size_t)r;
  return WS_OK;
}

static int b_write(ws_conn *c, const void *b, size_t len, size_t *n,
                   void *user) {
  bside *s = (bside *)user;
  ssize_t r;
  (void)c;
  do r = write(s->fd, b, len); while (r < 0 && errno == EINTR);
  s->writes++;
  if (r < 0) return WS_EIO;
  *n = (size_t)r;
  return WS_OK;
}

static void b_open(ws_conn *c, const char *proto, size_t plen, void *user) {
  bside *s = (bside *)user;
  (void)proto, (void)plen;
  if (s->cfg.role == WS_CLIENT) ws_send(c, WS_OP_TEXT, "0", 1);
}

/* The client sends its next message from on_message; the server echoes,
 * and pings now and then (the client's pong is automatic). */
static int b_message(ws_conn *c, int op, const void *d, size_t n, int fin,
                     void *user) {
  bside *s = (bside *)user;
  char next[16];
  (void)fin;
  s->msgs++;
  if (s->cfg.role == WS_SERVER) {
    ws_send(c, op, d, n);
    if (s->msgs % 10 == 5 && ws_ping(c, "p", 1) == WS_OK) s->pings++;
  } else if (s->msgs < B_ROUNDS) {
    snprintf(next, sizeof next, "%d", s->msgs);
    ws_send(c, WS_OP_TEXT, next, strlen(next));
  } else {
    ws_close(c, 1000, "done", 4);
  }
  return 0;
}

static void b_pong(ws_conn *c, const void *d, size_t n, void *user) {
  (void)c, (void)d, (void)n;
  ((bside *)user)->pongs++;
}

static void b_close(ws_conn *c, int code, const char *r, size_t n,
                    void *user) {
  bside *s = (bside *)user;
  (void)c, (void)r, (void)n;
  s->closes++;
  s->close_code = code;
}

static const ws_callbacks b_callbacks = {b_read,  b_write,   NULL, NULL,
                                         b_open,  b_message, NULL, b_pong,
                                         NULL,    b_close,   NULL};

/* The server: one ws_conn_on_readable() call runs the whole session, as
 * a blocking read never says WS_EAGAIN; then it closes TCP first. */
static void *b_server(void *arg) {
  bside *s = (bside *)arg;
  while (ws_conn_on_readable(&s->c) == WS_OK) {
  }
  close(s->fd);
  return NULL;
}

#endif /* T_POSIX */

static void test_blocking_sockets(void) {
#ifdef T_POSIX
  bside s, cl;
  int sv[2];
  pthread_t th;
  struct timeval tv = {2, 0}; /* a deadlock fails the test in 2 s */
  ws_client_opts o;
#endif
  /* In memory first: three pings, one per read; each pong is written
   * before the next read, not all at the end (4 reads, 3 writes). */
  {
    ws_config cfg;
    endpoint e;
    buf rx = {0}, tx = {0};
    long before;
    ws_config_init(&cfg, WS_SERVER);
    ep_init(&e, &cfg, &rx, &tx);
    CHECK_INT(ws_conn_feed(&e.c, REQ, strlen(REQ)), WS_OK);
    tx.len = 0;
    cframe(&rx, 1, WS_OP_PING, "1");
    cframe(&rx, 1, WS_OP_PING, "2");
    cframe(&rx, 1, WS_OP_PING, "3");
    e.read_max = 7; /* one frame per read */
    before = e.io_calls;
    CHECK_INT(ws_conn_on_readable(&e.c), WS_OK);
    CHECK_INT(e.io_calls - before, 4 + 3);
    CHECK_INT(tx.len, 3 * 3);
    ep_free(&e);
    buf_free(&rx);
    buf_free(&tx);
  }
#ifdef T_POSIX
  /* Over a blocking socket pair, a client and a server in two threads. */
  memset(&s, 0, sizeof s);
  memset(&cl, 0, sizeof cl);
  if (!CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0)) return;
  setsockopt(sv[0], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(sv[1], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  s.fd = sv[0];
  cl.fd = sv[1];
  ws_config_init(&s.cfg, WS_SERVER);
  ws_config_init(&cl.cfg, WS_CLIENT);
  CHECK_INT(ws_conn_init(&s.c, &s.cfg, &b_callbacks, &s), WS_OK);
  CHECK_INT(ws_conn_init(&cl.c, &cl.cfg, &b_callbacks, &cl), WS_OK);
  if (!CHECK(pthread_create(&th, NULL, b_server, &s) == 0)) return;
  memset(&o, 0, sizeof o);
  o.host = "localhost";
  CHECK_INT(ws_client_start(&cl.c, &o), WS_OK);
  while (ws_conn_on_readable(&cl.c) == WS_OK) {
  }
  pthread_join(th, NULL);
  close(cl.fd);
  CHECK_INT(cl.gave_up, 0);
  CHECK_INT(s.gave_up, 0);
  CHECK_INT(cl.msgs, B_ROUNDS);
  CHECK_INT(s.msgs, B_ROUNDS);
  CHECK_INT(s.pongs, s.pings);
  CHECK(s.pings > 0);
  CHECK_INT(cl.closes, 1);
  CHECK_INT(cl.close_code, 1000);
  CHECK_INT(ws_conn_error(&cl.c), WS_OK); /* the server's close, then EOF */
  CHECK_INT(s.closes, 1);
  CHECK_INT(s.close_code, 1000);
  CHECK(s.writes <= s.reads); /* at most one write per read */
  ws_conn_free(&s.c);
  ws_conn_free(&cl.c);
#endif
}

/* ---------------------------------------------------------------------
 * End of stream in push mode: ws_conn_feed(c, NULL, 0)
 * ------------------------------------------------------------------- */

/* Ends e's input the way `how` says: 0 the read callback, 1 ws_conn_feed,
 * 2 ws_conn_feed_inplace. */
static int end_input(endpoint *e, int how) {
  if (how == 1) return ws_conn_feed(&e->c, NULL, 0);
  if (how == 2) return ws_conn_feed_inplace(&e->c, NULL, 0);
  e->eof = 1;
  e->rx->off = e->rx->len;
  return ws_conn_on_readable(&e->c);
}

static void test_feed_eof(void) {
  int how;
  for (how = 0; how < 3; how++) {
    pair p;
    ws_config cfg;
    endpoint e;
    buf rx = {0}, tx = {0}, in = {0};
    size_t txlen;
    /* A client whose closing handshake is complete: CLOSED at once, with
     * the close frame's code, its own close or the server's. */
    pair_init(&p, "chat", NULL);
    CHECK_INT(ws_close(&p.cl.c, 1000, "bye", 3), WS_OK);
    pair_pump(&p);
    CHECK_INT(ws_conn_state(&p.cl.c), WS_STATE_CLOSING);
    CHECK_INT(end_input(&p.cl, how), WS_ECLOSED);
    CHECK_INT(ws_conn_state(&p.cl.c), WS_STATE_CLOSED);
    CHECK_INT(p.cl.closes, 1);
    CHECK_INT(p.cl.close_code, 1000);
    CHECK(strcmp(p.cl.close_reason, "") == 0); /* the echo has no reason */
    CHECK_INT(ws_conn_error(&p.cl.c), WS_OK);
    CHECK_INT(end_input(&p.cl, how), WS_ECLOSED); /* again: nothing */
    CHECK_INT(p.cl.closes, 1);
    pair_free(&p);
    pair_init(&p, "chat", NULL);
    CHECK_INT(ws_close(&p.s.c, 4001, "restart", 7), WS_OK);
    pair_pump(&p);
    CHECK_INT(ws_conn_state(&p.cl.c), WS_STATE_CLOSING);
    CHECK_INT(end_input(&p.cl, how), WS_ECLOSED);
    CHECK_INT(p.cl.close_code, 4001);
    CHECK(strcmp(p.cl.close_reason, "restart") == 0);
    pair_free(&p);
    /* A client in the middle of a message: 1006. */
    pair_init(&p, "chat", NULL);
    CHECK_INT(ws_send_fragment(&p.s.c, WS_OP_TEXT, "part", 4, 0), WS_OK);
    ws_conn_on_readable(&p.cl.c);
    CHECK_INT(ws_conn_buffered(&p.cl.c) > 0, 1);
    CHECK_INT(end_input(&p.cl, how), WS_ECLOSED);
    CHECK_INT(p.cl.close_code, 1006);
    CHECK_INT(ws_conn_error(&p.cl.c), WS_EEOF);
    CHECK(strcmp(p.cl.close_reason, ws_strerror(WS_EEOF)) == 0);
    pair_free(&p);
    /* A server in the middle of a frame: 1006, and nothing more written. */
    ws_config_init(&cfg, WS_SERVER);
    ep_init(&e, &cfg, &rx, &tx);
    CHECK_INT(ws_conn_feed(&e.c, REQ, strlen(REQ)), WS_OK);
    cframe(&in, 1, WS_OP_TEXT, "half a frame");
    CHECK_INT(ws_conn_feed(&e.c, in.d, 6), WS_OK);
    txlen = tx.len;
    CHECK_INT(end_input(&e, how), WS_ECLOSED);
    CHECK_INT(e.closes, 1);
    CHECK_INT(e.close_code, 1006);
    CHECK_INT(ws_conn_error(&e.c), WS_EEOF);
    CHECK_INT(tx.len, txlen);
    ep_free(&e);
    /* A server whose peer left before sending anything. */
    ep_init(&e, &cfg, &rx, &tx);
    CHECK_INT(end_input(&e, how), WS_ECLOSED);
    CHECK_INT(e.closes, 1);
    CHECK_INT(e.close_code, 1006);
    ep_free(&e);
    buf_free(&rx);
    buf_free(&tx);
    buf_free(&in);
  }
  /* Zero bytes that are not NULL: nothing happens. */
  {
    pair p;
    char none[1];
    pair_init(&p, "chat", NULL);
    p.s.log.len = 0;
    CHECK_INT(ws_conn_feed(&p.s.c, "", 0), WS_OK);
    CHECK_INT(ws_conn_feed_inplace(&p.s.c, none, 0), WS_OK);
    CHECK_INT(ws_conn_feed(&p.cl.c, "", 0), WS_OK);
    CHECK_INT(ws_conn_state(&p.s.c), WS_STATE_OPEN);
    CHECK_INT(ws_conn_state(&p.cl.c), WS_STATE_OPEN);
    CHECK_INT(p.s.log.len, 0);
    CHECK_INT(ws_conn_queued(&p.s.c), 0);
    pair_free(&p);
  }
  /* A client not yet started has no stream to end. */
  {
    ws_config cfg;
    ws_conn c;
    ws_config_init(&cfg, WS_CLIENT);
    CHECK_INT(ws_conn_init(&c, &cfg, NULL, NULL), WS_OK);
    CHECK_INT(ws_conn_feed(&c, NULL, 0), WS_ESTATE);
    CHECK_INT(ws_conn_feed(&c, NULL, 1), WS_EINVAL);
    ws_conn_free(&c);
  }
}

/* ---------------------------------------------------------------------
 * Close codes: one rule, whatever ends the connection
 * ------------------------------------------------------------------- */

enum { BEFORE_NOTHING, BEFORE_OURS, BEFORE_PEERS, BEFORE__N };
enum {
  END_ABORT, END_FREE, END_EOF, END_FEED_EOF, END_TIMEOUT, END_WRITE_ERROR,
  END_PROTOCOL, END__N
};

static void test_close_codes(void) {
  static const char *const before_names[] = {"nothing sent", "our close",
                                             "the peer's close"};
  static const char *const end_names[] = {
      "ws_conn_abort", "ws_conn_free", "end of stream (read)",
      "end of stream (feed)", "close timeout", "write error",
      "protocol error"};
  static const int end_err[] = {WS_EAPP, WS_ECLOSED, WS_EEOF, WS_EEOF,
                                WS_ETIMEDOUT, WS_EIO, WS_EPROTO};
  int side, before, end;
  for (side = 0; side < 2; side++) {
    for (before = 0; before < BEFORE__N; before++) {
      for (end = 0; end < END__N; end++) {
        pair p;
        endpoint *e, *peer;
        int code, err, ok = 1;
        const char *reason;
        /* Not a way to end: no timer runs in OPEN, input after the peer's
         * close is ignored, and a server reads nothing more after it. */
        if ((before == BEFORE_NOTHING && end == END_TIMEOUT) ||
            (before == BEFORE_PEERS && end == END_PROTOCOL) ||
            (side == 0 && before == BEFORE_PEERS && end == END_EOF))
          continue;
        pair_init(&p, "chat", NULL);
        e = side ? &p.cl : &p.s;
        peer = side ? &p.s : &p.cl;
        /* What e writes stays queued: a write error can meet it, and a
         * server's echo of a close does not end the handshake yet. */
        ws_conn_cork(&e->c, 1);
        if (before == BEFORE_OURS)
          CHECK_INT(ws_close(&e->c, 4002, "ours", 4), WS_OK);
        if (before == BEFORE_PEERS) {
          CHECK_INT(ws_close(&peer->c, 4001, "theirs", 6), WS_OK);
          CHECK_INT(ws_conn_on_readable(&e->c), WS_OK);
          CHECK_INT(ws_conn_state(&e->c), WS_STATE_CLOSING);
        }
        if (before == BEFORE_NOTHING && end == END_WRITE_ERROR)
          CHECK_INT(ws_send(&e->c, WS_OP_TEXT, "x", 1), WS_OK);
        ws_conn_tick(&e->c, 100); /* arms the close timer */
        switch (end) {
          case END_ABORT:
            CHECK_INT(ws_conn_abort(&e->c, WS_EAPP), WS_ECLOSED);
            break;
          case END_FREE: ws_conn_free(&e->c); break;
          case END_EOF: CHECK_INT(end_input(e, 0), WS_ECLOSED); break;
          case END_FEED_EOF: CHECK_INT(end_input(e, 1), WS_ECLOSED); break;
          case END_TIMEOUT:
            CHECK_INT(ws_conn_tick(&e->c, 100 + 5000), WS_ECLOSED);
            break;
          case END_WRITE_ERROR:
            e->write_fail = 1;
            CHECK_INT(ws_conn_cork(&e->c, 0), WS_ECLOSED);
            break;
          default: { /* a frame masked the wrong way for e's role */
            buf bad = {0};
            add_frame(&bad, 1, WS_OP_TEXT, "bad", 3, side);
            buf_put(e->rx, bad.d, bad.len);
            buf_free(&bad);
            ws_conn_on_readable(&e->c);
            CHECK_INT(ws_conn_state(&e->c), WS_STATE_CLOSING);
            CHECK_INT(ws_conn_cork(&e->c, 0), WS_ECLOSED); /* sent: done */
            break;
          }
        }
        code = before == BEFORE_PEERS  ? 4001
               : before == BEFORE_OURS ? 4002
               : end == END_PROTOCOL   ? 1002
                                       : 1006;
        err = end_err[end];
        reason = before == BEFORE_PEERS ? "theirs" : ws_strerror(err);
        ok &= CHECK_EQ(e->closes, 1);
        ok &= CHECK_EQ(e->close_code, code);
        ok &= CHECK(strcmp(e->close_reason, reason) == 0);
        if (before != BEFORE_PEERS) ok &= CHECK_EQ(ws_conn_error(&e->c), err);
        if (!ok)
          printf("    %s, %s then %s: got %d \"%s\"\n", side ? "client" : "server",
                 before_names[before], end_names[end], e->close_code,
                 e->close_reason);
        pair_free(&p);
      }
    }
  }
  /* The opening handshake times out: nothing was sent, 1006. */
  for (side = 0; side < 2; side++) {
    pair p;
    endpoint *e;
    ws_config cfg;
    ws_client_opts o;
    memset(&p, 0, sizeof p);
    ws_config_init(&cfg, WS_CLIENT);
    ep_init(&p.cl, &cfg, &p.s2c, &p.c2s);
    ws_config_init(&cfg, WS_SERVER);
    ep_init(&p.s, &cfg, &p.c2s, &p.s2c);
    e = side ? &p.cl : &p.s;
    memset(&o, 0, sizeof o);
    o.host = "h";
    if (side) CHECK_INT(ws_client_start(&e->c, &o), WS_OK);
    CHECK_INT(ws_conn_tick(&e->c, 0), WS_OK);
    CHECK_INT(ws_conn_tick(&e->c, WS_HANDSHAKE_TIMEOUT_MS), WS_ECLOSED);
    CHECK_INT(e->closes, 1);
    CHECK_INT(e->close_code, 1006);
    CHECK(strcmp(e->close_reason, ws_strerror(WS_ETIMEDOUT)) == 0);
    pair_free(&p);
  }
  /* A close frame without a code counts as such: 1005. */
  {
    pair p;
    pair_init(&p, "chat", NULL);
    CHECK_INT(ws_close(&p.s.c, 0, NULL, 0), WS_OK);
    CHECK_INT(ws_conn_abort(&p.s.c, WS_EAPP), WS_ECLOSED);
    CHECK_INT(p.s.close_code, 1005);
    pair_free(&p);
  }
}

/* ---------------------------------------------------------------------
 * Started: what on_close is owed to
 * ------------------------------------------------------------------- */

static void test_started(void) {
  ws_config cfg;
  endpoint e;
  buf rx = {0}, tx = {0};
  counting_alloc a = {0, 0, 0, 0};
  int how;
  char none[1];
  ws_client_opts o;
  /* A server nothing has driven yet: nothing to abort, nothing owed. */
  ws_config_init(&cfg, WS_SERVER);
  cfg.realloc = counting_realloc;
  cfg.alloc_ctx = &a;
  ep_init(&e, &cfg, &rx, &tx);
  CHECK_INT(ws_conn_abort(&e.c, WS_EAPP), WS_ESTATE);
  CHECK_INT(ws_conn_state(&e.c), WS_STATE_CONNECTING);
  ep_free(&e);
  CHECK_INT(e.closes, 0);
  CHECK_INT(a.live, 0);
  /* Each call that drives it starts it: then on_close is owed. */
  for (how = 0; how < 5; how++) {
    ep_init(&e, &cfg, &rx, &tx);
    switch (how) {
      case 0: CHECK_INT(ws_conn_on_readable(&e.c), WS_OK); break;
      case 1: CHECK_INT(ws_conn_on_writable(&e.c), WS_OK); break;
      case 2: CHECK_INT(ws_conn_feed(&e.c, "", 0), WS_OK); break;
      case 3: CHECK_INT(ws_conn_feed_inplace(&e.c, none, 0), WS_OK); break;
      default: CHECK_INT(ws_conn_tick(&e.c, 0), WS_OK); break;
    }
    CHECK_INT(e.closes, 0);
    CHECK_INT(ws_conn_abort(&e.c, WS_EAPP), WS_ECLOSED);
    CHECK_INT(e.closes, 1);
    CHECK_INT(e.close_code, 1006);
    ep_free(&e);
    CHECK_INT(e.closes, 1);
  }
  ep_init(&e, &cfg, &rx, &tx);
  CHECK_INT(ws_conn_tick(&e.c, 0), WS_OK);
  ep_free(&e); /* started: freeing it ends it */
  CHECK_INT(e.closes, 1);
  /* A client starts at ws_client_start(), not before. */
  ws_config_init(&cfg, WS_CLIENT);
  ep_init(&e, &cfg, &rx, &tx);
  CHECK_INT(ws_conn_tick(&e.c, 0), WS_OK);
  CHECK_INT(ws_conn_on_readable(&e.c), WS_OK);
  CHECK_INT(ws_conn_abort(&e.c, WS_EAPP), WS_ESTATE);
  memset(&o, 0, sizeof o);
  o.host = "h";
  CHECK_INT(ws_client_start(&e.c, &o), WS_OK);
  CHECK_INT(ws_conn_abort(&e.c, WS_EAPP), WS_ECLOSED);
  CHECK_INT(e.closes, 1);
  ep_free(&e);
  buf_free(&rx);
  buf_free(&tx);
}

/* ---------------------------------------------------------------------
 * permessage-deflate (RFC 7692)
 * ------------------------------------------------------------------- */

/* A request like REQ offering `ext` (NULL: no extension header). */
static void pmd_req(buf *b, const char *ext) {
  buf_puts(b,
           "GET /chat?room=1 HTTP/1.1\r\n"
           "Host: server.example.com\r\n"
           "Upgrade: websocket\r\n"
           "Connection: Upgrade\r\n"
           "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
           "Sec-WebSocket-Protocol: chat\r\n"
           "Sec-WebSocket-Version: 13\r\n");
  if (ext) {
    buf_puts(b, "Sec-WebSocket-Extensions: ");
    buf_puts(b, ext);
    buf_puts(b, "\r\n");
  }
  buf_puts(b, "\r\n");
}

/* The value of the Sec-WebSocket-Extensions header in an HTTP head at the
 * start of tx ("" when none), into out. */
static void pmd_header(const buf *tx, char *out, size_t cap) {
  const char *h = "Sec-WebSocket-Extensions: ";
  size_t i, n = strlen(h);
  out[0] = '\0';
  for (i = 0; i + n < tx->len; i++) {
    if (memcmp(tx->d + i, "\r\n\r\n", 4) == 0) return;
    if (memcmp(tx->d + i, h, n) == 0) {
      size_t j = i + n, k = 0;
      while (j < tx->len && tx->d[j] != '\r' && k + 1 < cap) out[k++] = (char)tx->d[j++];
      out[k] = '\0';
      return;
    }
  }
}

static int pmd_policy_bits;  /* the server policy's peer_window_bits */
static int pmd_policy_nct;   /* 1: no_context_takeover, 2: peer_, 3: both */

static void pmd_on(ws_config *cfg) {
  cfg->deflate.enable = 1;
  /* 15 unless a case says (the default, 13, has a case of its own). */
  cfg->deflate.window_bits = 15;
  cfg->deflate.peer_window_bits = (uint8_t)(pmd_policy_bits ? pmd_policy_bits : 15);
  if (pmd_policy_bits < 0) { /* the defaults */
    cfg->deflate.window_bits = WS_DEFLATE_WINDOW_BITS;
    cfg->deflate.peer_window_bits = WS_DEFLATE_PEER_WINDOW_BITS;
  }
  cfg->deflate.no_context_takeover = pmd_policy_nct & 1;
  cfg->deflate.peer_no_context_takeover = (pmd_policy_nct & 2) != 0;
}

/* Server: the response to an offer under the policy pmd_on() makes. */
static void pmd_answer(const char *offer, int enable, char *out, size_t cap,
                       int *agreed) {
  ws_config cfg;
  endpoint e;
  buf rx = {0}, tx = {0}, in = {0};
  ws_config_init(&cfg, WS_SERVER);
  if (enable) pmd_on(&cfg);
  ep_init(&e, &cfg, &rx, &tx);
  pmd_req(&in, offer);
  ws_conn_feed(&e.c, in.d, in.len);
  CHECK_INT(ws_conn_state(&e.c), WS_STATE_OPEN);
  pmd_header(&tx, out, cap);
  *agreed = ws_conn_deflate(&e.c);
  ep_free(&e);
  buf_free(&tx);
  buf_free(&in);
}

static void test_deflate_negotiation_server(void) {
  static const struct {
    const char *offer, *answer;
    int bits, nct;
  } cases[] = {
      {"permessage-deflate", "permessage-deflate", 0, 0},
      {"PerMessage-Deflate", "permessage-deflate", 0, 0},
      /* The bare client_max_window_bits lets the server ask for less. */
      {"permessage-deflate; client_max_window_bits",
       "permessage-deflate; client_max_window_bits=10", 10, 0},
      {"permessage-deflate; client_max_window_bits", "permessage-deflate", 0, 0},
      {"permessage-deflate; client_max_window_bits=12",
       "permessage-deflate; client_max_window_bits=12", 0, 0},
      {"permessage-deflate; client_max_window_bits=\"12\"",
       "permessage-deflate; client_max_window_bits=12", 0, 0},
      {"permessage-deflate; client_max_window_bits=12",
       "permessage-deflate; client_max_window_bits=9", 9, 0},
      /* Without the parameter the client may use 15: nothing to ask. */
      {"permessage-deflate", "permessage-deflate", 10, 0},
      /* The defaults: 13 bits each way, asked for where allowed. */
      {"permessage-deflate; client_max_window_bits",
       "permessage-deflate; server_max_window_bits=13; "
       "client_max_window_bits=13", -1, 0},
      {"permessage-deflate", "permessage-deflate; server_max_window_bits=13",
       -1, 0},
      {"permessage-deflate; server_max_window_bits=10",
       "permessage-deflate; server_max_window_bits=10", 0, 0},
      {"permessage-deflate;server_max_window_bits=8",
       "permessage-deflate; server_max_window_bits=8", 0, 0},
      {"permessage-deflate; server_no_context_takeover",
       "permessage-deflate; server_no_context_takeover", 0, 0},
      {"permessage-deflate; client_no_context_takeover",
       "permessage-deflate; client_no_context_takeover", 0, 0},
      {"permessage-deflate; server_no_context_takeover; "
       "client_no_context_takeover; server_max_window_bits=9; "
       "client_max_window_bits=11",
       "permessage-deflate; server_no_context_takeover; "
       "client_no_context_takeover; server_max_window_bits=9; "
       "client_max_window_bits=11", 0, 0},
      /* The policy imposes no context takeover, either side. */
      {"permessage-deflate", "permessage-deflate; server_no_context_takeover",
       0, 1},
      {"permessage-deflate", "permessage-deflate; client_no_context_takeover",
       0, 2},
      /* Offers in order: bad ones are declined, the next is taken. */
      {"permessage-deflate; x=1, permessage-deflate; server_no_context_takeover",
       "permessage-deflate; server_no_context_takeover", 0, 0},
      {"x-webkit-deflate-frame, permessage-deflate",
       "permessage-deflate", 0, 0},
      {"permessage-deflate; server_no_context_takeover; "
       "server_no_context_takeover, permessage-deflate",
       "permessage-deflate", 0, 0},
      /* Each of these is declined, and nothing else is offered. */
      {"permessage-deflate; server_no_context_takeover; server_no_context_takeover", "", 0, 0},
      {"permessage-deflate; client_max_window_bits; client_max_window_bits=10", "", 0, 0},
      {"permessage-deflate; server_max_window_bits", "", 0, 0},
      {"permessage-deflate; server_max_window_bits=7", "", 0, 0},
      {"permessage-deflate; server_max_window_bits=16", "", 0, 0},
      {"permessage-deflate; server_max_window_bits=010", "", 0, 0},
      {"permessage-deflate; client_max_window_bits=1x", "", 0, 0},
      {"permessage-deflate; client_no_context_takeover=1", "", 0, 0},
      {"permessage-deflate; unknown", "", 0, 0},
      {"permessage-deflate; =1", "", 0, 0},
      {"permessage-deflate; server_max_window_bits=\"10", "", 0, 0},
      {"x-foo", "", 0, 0},
      {"", "", 0, 0},
  };
  size_t i;
  char got[256];
  int agreed;
  for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    pmd_policy_bits = cases[i].bits;
    pmd_policy_nct = cases[i].nct;
    pmd_answer(cases[i].offer, 1, got, sizeof got, &agreed);
    if (!ws_deflate_available()) {
      CHECK_INT(got[0], 0); /* no backend: every offer is declined */
      continue;
    }
    if (!CHECK(strcmp(got, cases[i].answer) == 0))
      printf("    offer \"%s\": got \"%s\", want \"%s\"\n", cases[i].offer,
             got, cases[i].answer);
    CHECK_INT(agreed, cases[i].answer[0] != '\0');
  }
  /* Two headers: the first one's only offer is bad, the second's taken. */
  if (ws_deflate_available()) {
    ws_config cfg;
    endpoint e;
    buf rx = {0}, tx = {0}, in = {0};
    ws_config_init(&cfg, WS_SERVER);
    pmd_policy_bits = pmd_policy_nct = 0;
    pmd_on(&cfg);
    ep_init(&e, &cfg, &rx, &tx);
    buf_puts(&in, "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n"
                  "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                  "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                  "Sec-WebSocket-Extensions: permessage-deflate; a\r\n"
                  "Sec-WebSocket-Extensions: permessage-deflate; "
                  "client_no_context_takeover\r\n\r\n");
    ws_conn_feed(&e.c, in.d, in.len);
    pmd_header(&tx, got, sizeof got);
    CHECK(strcmp(got, "permessage-deflate; client_no_context_takeover") == 0);
    ep_free(&e);
    buf_free(&tx);
    buf_free(&in);
  }
  /* The policy off: declined. */
  pmd_answer("permessage-deflate", 0, got, sizeof got, &agreed);
  CHECK_INT(got[0], 0);
  CHECK_INT(agreed, 0);
  /* Fixed buffers never negotiate (zlib would allocate). */
  {
    ws_config cfg;
    endpoint e;
    buf rx = {0}, tx = {0}, in = {0};
    static unsigned char ib[4096], ob[4096];
    ws_config_init(&cfg, WS_SERVER);
    pmd_on(&cfg);
    ep_init(&e, &cfg, &rx, &tx);
    CHECK_INT(ws_conn_set_buffers(&e.c, ib, sizeof ib, ob, sizeof ob), WS_OK);
    pmd_req(&in, "permessage-deflate");
    ws_conn_feed(&e.c, in.d, in.len);
    pmd_header(&tx, got, sizeof got);
    CHECK_INT(got[0], 0);
    CHECK_INT(ws_conn_deflate(&e.c), 0);
    ep_free(&e);
    buf_free(&tx);
    buf_free(&in);
  }
  pmd_policy_bits = pmd_policy_nct = 0;
}

/* A client offering deflate (cfg tweak nct/bits), answered with a 101 that
 * carries `ext` (NULL: none). Returns the client's state after it; *offer
 * gets the offer it sent, *code the close code it sent (-1: none). */
static int pmd_client(const char *ext, int nct, int bits, int peer_bits,
                      char *offer, size_t cap, int *code, int *agreed,
                      int *opened, int *closed_with) {
  ws_config cfg;
  endpoint e;
  buf rx = {0}, tx = {0}, resp = {0};
  ws_client_opts o;
  char key[64], acc[29];
  const char *k;
  size_t kl;
  int state;
  ws_config_init(&cfg, WS_CLIENT);
  cfg.deflate.no_context_takeover = nct & 1;
  cfg.deflate.peer_no_context_takeover = (nct & 2) != 0;
  /* 0: 15 (nothing asked); -1: the defaults */
  if (bits >= 0) cfg.deflate.window_bits = (uint8_t)(bits ? bits : 15);
  if (peer_bits >= 0) cfg.deflate.peer_window_bits = (uint8_t)(peer_bits ? peer_bits : 15);
  ep_init(&e, &cfg, &rx, &tx);
  memset(&o, 0, sizeof o);
  o.host = "h";
  o.deflate = 1;
  CHECK_INT(ws_client_start(&e.c, &o), WS_OK);
  pmd_header(&tx, offer, cap);
  buf_put(&tx, "", 1);
  k = strstr((const char *)tx.d, "Sec-WebSocket-Key: ");
  CHECK(k != NULL);
  k += 19;
  kl = (size_t)(strchr(k, '\r') - k);
  memcpy(key, k, kl);
  ws_accept_key(key, kl, acc);
  buf_printf(&resp,
             "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
             "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n", acc);
  if (ext) buf_printf(&resp, "Sec-WebSocket-Extensions: %s\r\n", ext);
  buf_puts(&resp, "\r\n");
  tx.len = 0;
  ws_conn_feed(&e.c, resp.d, resp.len);
  ep_drain(&e);
  *code = out_close_code(&tx, 1);
  *agreed = ws_conn_deflate(&e.c);
  *opened = e.opened;
  state = ws_conn_state(&e.c);
  *closed_with = e.closes ? e.close_code : 0;
  if (state == WS_STATE_CLOSED) CHECK_INT(ws_conn_error(&e.c), WS_EHANDSHAKE);
  ep_free(&e);
  buf_free(&tx);
  buf_free(&resp);
  return state;
}

static void test_deflate_negotiation_client(void) {
  static const struct {
    const char *ext;
    int nct, bits, peer_bits, ok, agreed;
  } cases[] = {
      {NULL, 0, 0, 0, 1, 0}, /* declined */
      {"permessage-deflate", 0, 0, 0, 1, 1},
      {"permessage-deflate; client_max_window_bits=10", 0, 0, 0, 1, 1},
      {"permessage-deflate; server_max_window_bits=8", 0, 0, 0, 1, 1},
      {"permessage-deflate; server_no_context_takeover; "
       "client_no_context_takeover", 0, 0, 0, 1, 1},
      {"permessage-deflate; server_no_context_takeover", 2, 0, 0, 1, 1},
      {"permessage-deflate; server_max_window_bits=10", 0, 0, 10, 1, 1},
      {"permessage-deflate; server_max_window_bits=9", 0, 0, 10, 1, 1},
      {"permessage-deflate; client_max_window_bits=11", 0, 12, 0, 1, 1},
      /* Invalid: 1010. */
      {"permessage-deflate; x", 0, 0, 0, 0, 0},
      {"permessage-deflate, permessage-deflate", 0, 0, 0, 0, 0},
      {"x-other", 0, 0, 0, 0, 0},
      {"permessage-deflate; client_max_window_bits", 0, 0, 0, 0, 0},
      {"permessage-deflate; server_max_window_bits=16", 0, 0, 0, 0, 0},
      {"permessage-deflate; server_max_window_bits", 0, 0, 0, 0, 0},
      {"permessage-deflate; server_no_context_takeover; "
       "server_no_context_takeover", 0, 0, 0, 0, 0},
      {"permessage-deflate;", 0, 0, 0, 0, 0},
      /* What we asked for, refused; or more than we allowed. */
      {"permessage-deflate", 2, 0, 0, 0, 0},
      {"permessage-deflate", 0, 0, 10, 0, 0},
      {"permessage-deflate; server_max_window_bits=11", 0, 0, 10, 0, 0},
      {"permessage-deflate; client_max_window_bits=13", 0, 12, 0, 0, 0},
  };
  size_t i;
  char offer[256];
  int code, agreed, opened, closed_with, state;
  if (!ws_deflate_available()) {
    /* No backend: no offer, and a response choosing it is refused. */
    state = pmd_client("permessage-deflate", 0, 0, 0, offer, sizeof offer,
                       &code, &agreed, &opened, &closed_with);
    CHECK_INT(offer[0], 0);
    CHECK_INT(state, WS_STATE_CLOSED);
    return;
  }
  for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    state = pmd_client(cases[i].ext, cases[i].nct, cases[i].bits,
                       cases[i].peer_bits, offer, sizeof offer, &code,
                       &agreed, &opened, &closed_with);
    if (cases[i].ok) {
      if (!CHECK(state == WS_STATE_OPEN))
        printf("    response \"%s\"\n", cases[i].ext);
      CHECK_INT(opened, 1);
      CHECK_INT(agreed, cases[i].agreed);
      CHECK_INT(code, -1);
    } else {
      if (!CHECK(state == WS_STATE_CLOSED))
        printf("    response \"%s\"\n", cases[i].ext);
      CHECK_INT(opened, 0);
      CHECK_INT(code, 1010);
      CHECK_INT(closed_with, 1010);
    }
  }
  /* The offers sent. */
  pmd_client(NULL, 0, 0, 0, offer, sizeof offer, &code, &agreed, &opened,
             &closed_with);
  CHECK(strcmp(offer, "permessage-deflate; client_max_window_bits") == 0);
  pmd_client(NULL, 3, 10, 12, offer, sizeof offer, &code, &agreed, &opened,
             &closed_with);
  CHECK(strcmp(offer, "permessage-deflate; server_no_context_takeover; "
                      "client_no_context_takeover; server_max_window_bits=12; "
                      "client_max_window_bits=10") == 0);
  /* The client's defaults: its own window 13, nothing asked of the
   * server, which may still state its window. */
  pmd_client("permessage-deflate; server_max_window_bits=13", 0, -1, -1, offer,
             sizeof offer, &code, &agreed, &opened, &closed_with);
  CHECK(strcmp(offer, "permessage-deflate; client_max_window_bits=13") == 0);
  CHECK_INT(agreed, 1);
  pmd_client("permessage-deflate", 0, -1, -1, offer, sizeof offer, &code,
             &agreed, &opened, &closed_with);
  CHECK_INT(agreed, 1);
}

#if WS_ENABLE_ZLIB
/* The test's own compressor: a peer's raw DEFLATE with a sync flush, the
 * 00 00 ff ff tail removed (RFC 7692 7.2.1). zs NULL: a fresh one. */
static void pmd_deflate(z_stream *zs, buf *out, const void *d, size_t n) {
  z_stream own;
  unsigned char tmp[65536];
  size_t start = out->len;
  if (zs == NULL) {
    memset(&own, 0, sizeof own);
    deflateInit2(&own, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY);
    zs = &own;
  }
  zs->next_in = (Bytef *)(uintptr_t)d;
  zs->avail_in = (uInt)n;
  do {
    zs->next_out = tmp;
    zs->avail_out = sizeof tmp;
    deflate(zs, Z_SYNC_FLUSH);
    buf_put(out, tmp, sizeof tmp - zs->avail_out);
  } while (zs->avail_out == 0);
  if (out->len == start) buf_put(out, "\0\0\0\xff\xff", 5); /* as we send "" */
  CHECK(out->len - start >= 4 &&
        memcmp(out->d + out->len - 4, "\0\0\xff\xff", 4) == 0);
  out->len -= 4;
  if (zs == &own) deflateEnd(&own);
}

/* A compressed message as a client sends it: RSV1 on the first of
 * `frames` frames. */
static void pmd_frames(buf *b, z_stream *zs, int op, const void *d, size_t n,
                       int frames) {
  buf c = {0};
  size_t per, off = 0;
  int i;
  pmd_deflate(zs, &c, d, n);
  per = c.len / (size_t)frames;
  for (i = 0; i < frames; i++) {
    size_t k = i + 1 == frames ? c.len - off : per;
    add_frame_ex(b, (i + 1 == frames ? 0x80 : 0) | (i == 0 ? 0x40 | op : 0),
                 k, c.d + off, k, 1);
    off += k;
  }
  buf_free(&c);
}

static void pmd_on_small(ws_config *cfg) {
  pmd_on(cfg);
  cfg->max_message = 1u << 20;
}

static void pmd_on_unlimited(ws_config *cfg) {
  pmd_on(cfg);
  cfg->max_frame = UINT64_MAX;
  cfg->max_message = UINT64_MAX;
}

static void pmd_on_stream(ws_config *cfg) {
  pmd_on(cfg);
  cfg->stream = 1;
}

static void test_deflate_frames(void) {
  static const char hello[] = "Hello, hello, hello, hello!";
  unsigned char *big = (unsigned char *)malloc(200000);
  char expect[1024];
  buf in = {0};
  z_stream zs;
  size_t i;
  for (i = 0; i < 200000; i++) big[i] = (unsigned char)("{\"user\":\"ann\",\"text\":\"hi there\"}"[i % 33] + (i / 4096) % 3);
  pmd_policy_bits = pmd_policy_nct = 0;
  /* One stream across messages (context takeover), a fragmented message,
   * uncompressed messages in between, an empty one, a ping inside. */
  memset(&zs, 0, sizeof zs);
  deflateInit2(&zs, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY);
  pmd_req(&in, "permessage-deflate");
  pmd_frames(&in, &zs, WS_OP_TEXT, hello, strlen(hello), 1);
  cframe(&in, 1, WS_OP_TEXT, "plain");
  {
    buf c = {0};
    pmd_deflate(&zs, &c, big, 100000);
    add_frame_ex(&in, 0x40 | WS_OP_BINARY, 100, c.d, 100, 1);
    cframe(&in, 1, WS_OP_PING, "p");
    add_frame_ex(&in, WS_OP_CONT, c.len - 200, c.d + 100, c.len - 200, 1);
    add_frame_ex(&in, 0x80, 100, c.d + c.len - 100, 100, 1);
    buf_free(&c);
  }
  pmd_frames(&in, &zs, WS_OP_TEXT, hello, strlen(hello), 1); /* refers back */
  pmd_frames(&in, &zs, WS_OP_BINARY, "", 0, 1);
  pmd_frames(&in, &zs, WS_OP_TEXT, big, 5000, 3);
  add_close(&in, 1000, "bye", 1);
  snprintf(expect, sizeof expect,
           "msg 1 27 %08lx\nmsg 1 5 %08lx\nping 1 p\nmsg 2 100000 %08lx\n"
           "msg 1 27 %08lx\nmsg 2 0 %08lx\nmsg 1 5000 %08lx\nclose 1000 bye\n",
           fnv(hello, 27), fnv("plain", 5), fnv(big, 100000), fnv(hello, 27),
           fnv("", 0), fnv(big, 5000));
  script("deflate", &in, expect, 1000, 0, pmd_on);
  script("deflate stream", &in, expect, 1000, 0, pmd_on_stream);
  script("deflate, no limits", &in, expect, 1000, 0, pmd_on_unlimited);
  deflateEnd(&zs);
  /* RSV1 where it may not be: a continuation, a control frame, a
   * connection without the extension; RSV2 always. */
  {
    static const struct { const char *offer; int b0a, b0b, code; } bad[] = {
        {"permessage-deflate", 0x40 | WS_OP_TEXT, 0x80 | 0x40, 1002},
        {"permessage-deflate", 0x80 | 0x40 | WS_OP_PING, -1, 1002},
        {"permessage-deflate", 0x80 | 0x40 | WS_OP_PONG, -1, 1002},
        {NULL, 0x80 | 0x40 | WS_OP_TEXT, -1, 1002},
        {"permessage-deflate", 0x80 | 0x20 | WS_OP_TEXT, -1, 1002},
        {"permessage-deflate", 0x80 | 0x60 | WS_OP_TEXT, -1, 1002},
    };
    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
      buf c = {0};
      in.len = 0;
      pmd_req(&in, bad[i].offer);
      pmd_deflate(NULL, &c, "abc", 3);
      add_frame_ex(&in, bad[i].b0a, c.len, c.d, c.len, 1);
      if (bad[i].b0b >= 0) add_frame_ex(&in, bad[i].b0b, c.len, c.d, c.len, 1);
      script("deflate rsv", &in, "", bad[i].code, 0, pmd_on);
      buf_free(&c);
    }
  }
  /* A corrupt stream: 1007. So is bad UTF-8 inside compressed text. */
  in.len = 0;
  pmd_req(&in, "permessage-deflate");
  add_frame_ex(&in, 0x80 | 0x40 | WS_OP_BINARY, 3, "\xff\xff\xff", 3, 1);
  script("deflate corrupt", &in, "", 1007, 0, pmd_on);
  in.len = 0;
  pmd_req(&in, "permessage-deflate");
  pmd_frames(&in, NULL, WS_OP_TEXT, "ok\xc3\x28", 4, 1);
  script("deflate utf8", &in, "", 1007, 0, pmd_on);
  /* A bomb: 64 MiB of zeros in about 64 KB fails with 1009 once
   * max_message (1 MiB) is passed, holding no more than the limit. */
  {
    unsigned char *zeros = (unsigned char *)calloc(1, 64u << 20);
    ws_config cfg;
    endpoint e;
    buf rx = {0}, tx = {0};
    counting_alloc a = {0, 0, 0, 0};
    int stream;
    in.len = 0;
    pmd_req(&in, "permessage-deflate");
    pmd_frames(&in, NULL, WS_OP_BINARY, zeros, 64u << 20, 1);
    CHECK(in.len < 100000);
    for (stream = 0; stream < 2; stream++) {
      memset(&a, 0, sizeof a);
      tx.len = 0;
      ws_config_init(&cfg, WS_SERVER);
      pmd_on_small(&cfg);
      cfg.stream = stream;
      cfg.realloc = counting_realloc;
      cfg.alloc_ctx = &a;
      ep_init(&e, &cfg, &rx, &tx);
      ws_conn_feed(&e.c, in.d, in.len);
      ep_drain(&e);
      CHECK_INT(out_close_code(&tx, 0), 1009);
      CHECK_INT(ws_conn_error(&e.c), WS_ETOOBIG);
      CHECK(a.peak_size <= (1u << 20) + 1);
      if (stream) CHECK(e.msg.len <= (1u << 20)); /* pieces up to the limit */
      CHECK_INT(e.nmsgs > 0, stream);
      ep_free(&e);
      CHECK_INT(a.live, 0);
    }
    /* max_frame bounds the inflated bytes of one frame the same way. */
    memset(&a, 0, sizeof a);
    tx.len = 0;
    ws_config_init(&cfg, WS_SERVER);
    pmd_on(&cfg);
    cfg.max_frame = 100000;
    ep_init(&e, &cfg, &rx, &tx);
    in.len = 0;
    pmd_req(&in, "permessage-deflate");
    pmd_frames(&in, NULL, WS_OP_BINARY, zeros, 100000, 1);
    pmd_frames(&in, NULL, WS_OP_BINARY, zeros, 100001, 1);
    ws_conn_feed(&e.c, in.d, in.len);
    CHECK_INT(e.nmsgs, 1);
    CHECK_INT(out_close_code(&tx, 0), 1009);
    ep_free(&e);
    buf_free(&tx);
    free(zeros);
  }
  /* Streaming delivers inflated pieces, not one. */
  {
    ws_config cfg;
    endpoint e;
    buf rx = {0}, tx = {0};
    ws_config_init(&cfg, WS_SERVER);
    pmd_on_stream(&cfg);
    ep_init(&e, &cfg, &rx, &tx);
    in.len = 0;
    pmd_req(&in, "permessage-deflate");
    pmd_frames(&in, NULL, WS_OP_BINARY, big, 200000, 1);
    CHECK(in.len < 60000);
    ws_conn_feed(&e.c, in.d, in.len);
    CHECK(e.pieces > 10);
    buf_put(&e.log, "", 1);
    snprintf(expect, sizeof expect, "msg 2 200000 %08lx", fnv(big, 200000));
    CHECK(strstr(cstr(&e.log), expect) != NULL);
    ep_free(&e);
    buf_free(&tx);
  }
  buf_free(&in);
  free(big);
}

/* Frames of a server's output after its head: how many data frames had
 * RSV1, and how many had none. */
static void pmd_wire(const buf *tx, int masked, int *rsv1, int *plain) {
  size_t off = 0, i;
  *rsv1 = *plain = 0;
  for (i = 0; i + 3 < tx->len; i++)
    if (memcmp(tx->d + i, "\r\n\r\n", 4) == 0) {
      off = i + 4;
      break;
    }
  while (off < tx->len) {
    ws_frame f;
    size_t hl;
    if (ws_frame_parse(tx->d + off, tx->len - off, &f, &hl) != WS_OK ||
        f.masked != masked)
      break;
    if (f.opcode == WS_OP_TEXT || f.opcode == WS_OP_BINARY) {
      if (f.rsv == 4) (*rsv1)++;
      else (*plain)++;
    }
    off += hl + (size_t)f.len;
  }
}

static int pmd_pair_bits, pmd_pair_nct, pmd_pair_split, pmd_pair_stream;
static counting_alloc pmd_srv_alloc, pmd_cli_alloc;

static void pmd_pair_cfg(ws_config *cfg) {
  counting_alloc *a = cfg->role == WS_SERVER ? &pmd_srv_alloc : &pmd_cli_alloc;
  cfg->deflate.enable = 1;
  cfg->deflate.window_bits = (uint8_t)pmd_pair_bits;
  cfg->deflate.peer_window_bits = (uint8_t)pmd_pair_bits;
  cfg->deflate.no_context_takeover = pmd_pair_nct & 1;
  cfg->deflate.peer_no_context_takeover = (pmd_pair_nct & 2) != 0;
  cfg->deflate.mem_level = 4;
  cfg->frame_size = (size_t)pmd_pair_split;
  cfg->stream = pmd_pair_stream;
  cfg->realloc = counting_realloc;
  cfg->alloc_ctx = a;
}

/* A deflate pair: both ends with pmd_pair_cfg(), the client offering. */
static void pmd_pair_init(pair *p) {
  ws_config cfg;
  ws_client_opts o;
  memset(p, 0, sizeof *p);
  ws_config_init(&cfg, WS_SERVER);
  pmd_pair_cfg(&cfg);
  ep_init(&p->s, &cfg, &p->c2s, &p->s2c);
  ws_config_init(&cfg, WS_CLIENT);
  pmd_pair_cfg(&cfg);
  ep_init(&p->cl, &cfg, &p->s2c, &p->c2s);
  memset(&o, 0, sizeof o);
  o.host = "127.0.0.1:9001";
  o.deflate = 1;
  if (ws_client_start(&p->cl.c, &o) == WS_OK) pair_pump(p);
}

static void test_deflate_pair(void) {
  static const size_t lens[] = {0, 10, 63, 64, 200, 4000, 70000, 1u << 20};
  unsigned char *data = (unsigned char *)malloc(1u << 20);
  size_t i;
  int bits, nct, split, stream;
  for (i = 0; i < (1u << 20); i++)
    data[i] = (unsigned char)("{\"from\":\"ann\",\"msg\":\"see you at eight\",\"t\":12345}\n"[i % 50] ^ ((i >> 12) & 1));
  for (bits = 8; bits <= 15; bits += (bits < 10 ? 1 : 5))
    for (nct = 0; nct < 4; nct++)
      for (split = 0; split <= 1000; split += 1000)
        for (stream = 0; stream < 2; stream++) {
          pair p;
          char expect[64];
          int rsv1, plain;
          size_t wire = 0, sent = 0;
          pmd_pair_bits = bits, pmd_pair_nct = nct;
          pmd_pair_split = split, pmd_pair_stream = stream;
          memset(&pmd_srv_alloc, 0, sizeof pmd_srv_alloc);
          memset(&pmd_cli_alloc, 0, sizeof pmd_cli_alloc);
          pmd_pair_init(&p);
          p.s.echo = 1;
          CHECK_INT(ws_conn_deflate(&p.s.c), 1);
          CHECK_INT(ws_conn_deflate(&p.cl.c), 1);
          for (i = 0; i < sizeof lens / sizeof lens[0]; i++) {
            size_t before = p.c2s.len;
            CHECK_INT(ws_send(&p.cl.c, i & 1 ? WS_OP_BINARY : WS_OP_TEXT,
                              data, lens[i]), WS_OK);
            wire += p.c2s.len - before;
            sent += lens[i];
            pair_pump(&p);
            snprintf(expect, sizeof expect, "msg %d %lu %08lx",
                     i & 1 ? 2 : 1, (unsigned long)lens[i], fnv(data, lens[i]));
            buf_put(&p.cl.log, "", 1);
            p.cl.log.len--;
            if (!CHECK(strstr(cstr(&p.cl.log), expect) != NULL))
              printf("    bits %d nct %d split %d stream %d len %lu\n", bits,
                     nct, split, stream, (unsigned long)lens[i]);
          }
          /* Both ways compressed (but an 8-bit window, where this side
           * sends plain), under the threshold plain. */
          pmd_wire(&p.s2c, 0, &rsv1, &plain);
          CHECK_INT(rsv1, bits == 8 ? 0 : 5);
          CHECK_INT(plain, bits == 8 ? 8 : 3);
          if (bits > 8) CHECK(wire < sent / 4);
          /* Idle: without context takeover (asked for by either side,
           * for either direction: each asks for both here), no zlib state
           * at all, nor any memory. */
          CHECK_INT(WS__P(&p.s.c)->z == NULL, nct != 0 || bits == 8);
          CHECK_INT(WS__P(&p.cl.c)->z == NULL, nct != 0 || bits == 8);
          if (nct != 0) {
            CHECK_INT(pmd_srv_alloc.live, 0);
            CHECK_INT(pmd_cli_alloc.live, 0);
          }
          ws_close(&p.cl.c, 1000, NULL, 0);
          pair_pump(&p);
          CHECK_INT(p.s.close_code, 1000);
          pair_free(&p);
          CHECK_INT(pmd_srv_alloc.live, 0);
          CHECK_INT(pmd_cli_alloc.live, 0);
        }
  free(data);
}

static void test_deflate_alloc_failures(void) {
  /* Failing the k-th allocation anywhere (zlib's included) on either side
   * ends the connection cleanly: one on_close at most, nothing leaked. */
  unsigned char *data = (unsigned char *)malloc(100000);
  long k, total = 0;
  int side;
  for (k = 0; k < 100000; k++) data[k] = (unsigned char)"abcabd"[k % 6];
  for (side = 0; side < 2; side++)
    for (k = 0; k == 0 || k <= total; k++) {
      pair p;
      counting_alloc *a = side ? &pmd_cli_alloc : &pmd_srv_alloc;
      pmd_pair_bits = 12, pmd_pair_nct = 0, pmd_pair_split = 0;
      pmd_pair_stream = 0;
      memset(&pmd_srv_alloc, 0, sizeof pmd_srv_alloc);
      memset(&pmd_cli_alloc, 0, sizeof pmd_cli_alloc);
      a->fail_at = k;
      pmd_pair_init(&p);
      p.s.echo = 1;
      if (ws_conn_state(&p.cl.c) == WS_STATE_OPEN) {
        ws_send(&p.cl.c, WS_OP_BINARY, data, 100000);
        pair_pump(&p);
        ws_send(&p.cl.c, WS_OP_TEXT, data, 1000);
        pair_pump(&p);
      }
      if (k == 0) {
        total = a->calls;
        buf_put(&p.cl.log, "", 1);
        CHECK(strstr(cstr(&p.cl.log), "msg 1 1000") != NULL);
        CHECK(total > 6);
      }
      if (ws_conn_state(&p.cl.c) == WS_STATE_OPEN) ws_close(&p.cl.c, 1000, NULL, 0);
      pair_pump(&p);
      ep_free(&p.s);
      ep_free(&p.cl);
      CHECK(p.s.closes <= 1 && p.cl.closes <= 1);
      CHECK_INT(pmd_srv_alloc.live, 0);
      CHECK_INT(pmd_cli_alloc.live, 0);
      buf_free(&p.s2c);
      buf_free(&p.c2s);
    }
  free(data);
}
#endif /* WS_ENABLE_ZLIB */

int main(void) {
  /* Built again with -DNDEBUG (test_conn_ndebug), where WS_ASSERT is gone:
   * that build runs the lifecycle tests only, which misuse the library in
   * ways the asserts would have stopped (ws_conn_free() in callbacks). */
#ifdef NDEBUG
  const int lifecycle_only = 1;
#else
  const int lifecycle_only = 0;
#endif
  if (lifecycle_only) goto lifecycle;
  RUN(test_server_basic);
  RUN(test_buffer_sizes);
  RUN(test_server_fragments);
  RUN(test_server_pong_reply);
  RUN(test_server_protocol_errors);
  RUN(test_server_fragment_rules);
  RUN(test_server_utf8_fail_fast);
  RUN(test_server_limits);
  RUN(test_server_close_handshake);
  RUN(test_server_handshake_errors);
  RUN(test_server_oversized_handshake);
  RUN(test_server_bare_lf);
  RUN(test_server_refuse_and_headers);
  RUN(test_server_plain_http);
  RUN(test_fixed_buffers);
  RUN(test_feed_inplace);
  RUN(test_frame_rules_both_feeds);
  RUN(test_batch_stack);
  if (!WS_SMALL) RUN(test_send_direct); /* the small build never writes direct */
  RUN(test_alloc_hook_and_failures);
  RUN(test_idle_holds_no_buffer);
  RUN(test_io_faults);
  RUN(test_client_alloc_failures);
  RUN(test_backpressure);
  RUN(test_budget_counts);
  RUN(test_budget_refusals);
  RUN(test_budget_every_site);
  RUN(test_budget_refusal_after_partial_write);
  RUN(test_pong_coalescing);
  RUN(test_slow_reader);
  RUN(test_empty_fragment_flood);
  RUN(test_stream_mode);
  RUN(test_timers);
  RUN(test_pair_handshake);
  RUN(test_pair_conformance);
  RUN(test_pair_frame_split);
  RUN(test_pair_server_close);
  RUN(test_client_rejects_masked_and_bad_response);
  RUN(test_client_protocol_errors);
  RUN(test_client_trickled_response);
  RUN(test_client_random);
  RUN(test_regressions_from_fuzzing);
  RUN(test_adopt_with_bytes);
  RUN(test_cork);
  RUN(test_send_encoded);
  RUN(test_send_over_queue_limit);
  RUN(test_deflate_negotiation_server);
  RUN(test_deflate_negotiation_client);
#if WS_ENABLE_ZLIB
  RUN(test_deflate_frames);
  RUN(test_deflate_pair);
  RUN(test_deflate_alloc_failures);
#endif
lifecycle:
  RUN(test_write_error_and_free_in_close);
  RUN(test_callback_may_close);
  RUN(test_blocking_sockets);
  RUN(test_feed_eof);
  RUN(test_close_codes);
  RUN(test_free_in_callbacks);
  RUN(test_started);
  return t_done("test_conn");
}
