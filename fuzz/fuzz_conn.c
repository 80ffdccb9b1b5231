/*
 * fuzz_conn.c - whole connections (layer 1), server and client.
 *
 * Input layout (CONF_LEN bytes of configuration, then the byte stream the
 * peer sends):
 *   c[0]  bit0 role (0 server, 1 client), bit1 stream mode, bit2 fixed
 *         buffers (else the counting realloc hook), bit3 raw handshake (the
 *         stream carries the handshake too; else a valid one is prepended),
 *         bit4 pull through the read callback (else ws_conn_feed or
 *         ws_conn_feed_inplace, chosen per chunk), bit5
 *         ticks with a fake clock, bit6 on_close frees the connection's
 *         memory, bit7 subprotocols (offered and chosen)
 *   c[1]  max_frame (low nibble) and max_message (high nibble) from a table
 *   c[2]  max_queued (low nibble), max_handshake (bits 4..6), bit7 cork the
 *         connection around feeds
 *   c[3]  frame_size (bits 0..2), fixed in_cap (bits 3..5), out_cap (6..7)
 *   c[4]  allocation to fail (bits 0..4, 0: none), random call to fail
 *         (bits 5..7, 0: none)
 *   c[5]  write behaviour: bits 0..1 mode (accept all / accept up to k bytes
 *         / would-block every other call / error after k bytes), k from the
 *         rest
 *   c[6]  chunking: bits 0..2 largest chunk, bits 3..7 seed
 *   c[7]  timers: handshake, close, ping interval, pong (2 bits each)
 *   c[8]  end: bits 0..1 nothing / end of stream (pull mode: the read
 *         callback; push mode: a NULL ws_conn_feed or ws_conn_feed_inplace)
 *         / read error (pull mode);
 *         bit2 ws_close() before ws_conn_free(); bits 3..7 max_headers
 *   c[9..16] script: actions callbacks take, used in turn
 *   c[17] extras: bits 0..1 a large binary frame (none, 70000, 200000,
 *         1 MiB + 100 bytes of payload) appended to the stream; bit2 the
 *         client sends a long extra header; bit3 the server echoes through
 *         ws_send_encoded(); bit4 on_http answers with a body (else
 *         refuses); bit5 budget exhaustion: a charge hook (ws_config.charge)
 *         that refuses, bit6 how (0: the k-th positive charge, 1: the first
 *         one that would take the running total past a limit), bit7 the
 *         close code it refuses with (1009 or 1013)
 *   In budget mode the input's last two bytes (little endian v, not part
 *   of the stream) give k = 1 + v % 512 or the limit v * 8 bytes.
 *
 * Invariants (abort() on violation):
 * - on_close runs at most once, exactly once by ws_conn_free() if the
 *   connection was started (a server: by a call that drives it), never
 *   nested in another callback; no callback runs after it, also when a
 *   callback calls ws_conn_free(); on_open at most once, before any
 *   message;
 * - ws_conn_queued() <= max_queued + 256 after every call and in every
 *   write (plus the size of the client's own extra header when it sends
 *   one: the application chose that);
 * - the state never goes backwards;
 * - bytes allocated through the hook stay under
 *   2 * (max_message + max_handshake + max_queued) + 64 KiB, and are all
 *   freed by ws_conn_free(); with fixed buffers the hook is never called;
 * - budget mode: ws_conn_memory() equals the hook's running total inside
 *   the hook (before the change) and after every call; the total never
 *   goes below 0 and is 0 after ws_conn_free(); after a refusal the
 *   connection is CLOSED when the call returns (never stuck), and a
 *   refusal while OPEN gives on_close the hook's code (unless a close
 *   frame had already fixed the code);
 * - delivered messages respect the limits and are valid UTF-8 when text;
 * - what the write callback received is an HTTP head followed by valid
 *   frames (server: unmasked, client: masked), RSV 0, minimal lengths,
 *   valid fragmentation and UTF-8, valid close payloads, and nothing after
 *   a close frame.
 */
#include "../src/ws.c"
#include "fuzz_common.h"

#define CONF_LEN 18
#define MAX_ALLOCS 32

typedef struct alloc_ent {
  void *p;
  size_t n;
} alloc_ent;

typedef struct fz {
  ws_conn *c;
  int role, stream, fixed, raw_hs, pull, ticks, free_in_close, protos, cork;
  uint64_t max_frame, max_message;
  size_t max_queued, max_handshake, in_cap;
  /* allocation hook */
  alloc_ent ents[MAX_ALLOCS];
  size_t live, bound;
  unsigned ncalls, fail_at;
  int hook_called, alloc_failed; /* alloc_failed: the last call failed */
  /* budget hook (c[17] bit5) */
  int budget, bmode, bcode, brefused, brefused_open;
  unsigned bk, bpos;
  long long btotal, blimit;
  /* write callback */
  int wmode;
  size_t wk, wtotal;
  unsigned wcalls;
  uint8_t *cap;
  size_t cap_len, cap_cap;
  /* read callback */
  const uint8_t *stream_p;
  size_t stream_n, rpos, ravail;
  int end_mode, eof_sent;
  /* random callback */
  unsigned rnd_calls, rnd_fail;
  uint32_t rnd_ctr;
  uint8_t nonce[16];
  int have_nonce;
  /* callbacks */
  int depth, opened, closes, freed;
  int last_state;
  uint8_t script[8];
  unsigned act;
  /* stream-mode message being received */
  int rx_op;
  uint8_t *rx;
  size_t rx_len, rx_cap;
  /* fragmented send the script opened */
  int tx_frag;
  int encoded, http_body;
  size_t slack; /* 256, plus the client's own long header when it sends one */
} fz;

static unsigned next_act(fz *f) { return f->script[f->act++ % 8]; }

/* ------------------------------------------------------------------------
 * Allocation hook: counts live bytes per block, can fail the k-th call.
 * ---------------------------------------------------------------------- */

static void *hook(void *ptr, size_t size, void *ctx) {
  fz *f = (fz *)ctx;
  size_t i, slot = MAX_ALLOCS;
  void *q;
  f->hook_called = 1;
  FZ_CHECK(!f->fixed);
  for (i = 0; i < MAX_ALLOCS; i++)
    if (ptr != NULL && f->ents[i].p == ptr) slot = i;
  FZ_CHECK(ptr == NULL || slot < MAX_ALLOCS); /* a block we handed out */
  if (size == 0) {
    if (ptr) {
      f->live -= f->ents[slot].n;
      f->ents[slot].p = NULL;
      f->ents[slot].n = 0;
      free(ptr);
    }
    return NULL;
  }
  f->ncalls++;
  f->alloc_failed = 0;
  if (f->fail_at && f->ncalls == f->fail_at) {
    f->alloc_failed = 1;
    return NULL;
  }
  if (slot == MAX_ALLOCS) {
    for (i = 0; i < MAX_ALLOCS && slot == MAX_ALLOCS; i++)
      if (f->ents[i].p == NULL) slot = i;
    FZ_CHECK(slot < MAX_ALLOCS);
  }
  q = realloc(ptr, size);
  if (q == NULL) {
    f->alloc_failed = 1;
    return NULL;
  }
  f->live -= f->ents[slot].n;
  f->live += size;
  f->ents[slot].p = q;
  f->ents[slot].n = size;
  if (f->live > f->bound) {
    fprintf(stderr, "live %zu > bound %zu (request %zu)\n", f->live, f->bound,
            size);
    FZ_CHECK(f->live <= f->bound);
  }
  return q;
}

/* ------------------------------------------------------------------------
 * Budget hook: a running total, refusing the k-th positive charge or past
 * a limit.
 * ---------------------------------------------------------------------- */

static int charge(ws_conn *c, int kind, ptrdiff_t bytes, void *ctx) {
  fz *f = (fz *)ctx;
  long long expect = f->btotal;
  FZ_CHECK(f->budget && !f->fixed);
  FZ_CHECK(kind == WS_MEM_INPUT || kind == WS_MEM_OUTPUT);
  FZ_CHECK(bytes != 0);
  /* Told before the change: the connection's count is the total so far;
   * but for the give-back of a charge whose allocation then failed, which
   * the connection never held (ws.h says so). */
  if (bytes < 0 && f->alloc_failed) expect += bytes;
  f->alloc_failed = 0;
  FZ_CHECK((long long)ws_conn_memory(c) == expect);
  if (bytes > 0) {
    f->bpos++;
    if (f->bmode == 0 ? f->bpos == f->bk : f->btotal + bytes > f->blimit) {
      f->brefused = 1;
      if (ws_conn_state(c) == WS_STATE_OPEN &&
          !(WS__P(c)->flags & (WS__F_PEER_CODE | WS__F_CLOSE_SENT)))
        f->brefused_open = 1;
      return f->bcode;
    }
  }
  FZ_CHECK(f->btotal + bytes >= 0);
  f->btotal += bytes;
  return 0;
}

/* ------------------------------------------------------------------------
 * Transport callbacks.
 * ---------------------------------------------------------------------- */

static void enter(fz *f) {
  FZ_CHECK(f->closes == 0); /* no callback after on_close */
  f->depth++;
}

static void leave(fz *f) { f->depth--; }

/* The transport under write and writev: takes what the mode says. */
static int fz_take(fz *f, const void *buf, size_t len, size_t *n) {
  size_t take = len;
  int rc = WS_OK;
  f->wcalls++;
  switch (f->wmode) {
    case 1: /* a short write, then would-block: output stays queued */
      if (f->wcalls & 1) take = WS__MIN(len, f->wk + 1);
      else take = 0, rc = WS_EAGAIN;
      break;
    case 2:
      if (f->wcalls & 1) take = 0, rc = WS_EAGAIN;
      break;
    case 3:
      if (f->wtotal >= f->wk) {
        take = 0;
        rc = WS_EIO;
      } else {
        take = WS__MIN(len, f->wk - f->wtotal);
      }
      break;
    default:
      break;
  }
  if (take) {
    if (f->cap_len + take > f->cap_cap) {
      size_t nc = (f->cap_len + take) * 2;
      uint8_t *q = (uint8_t *)realloc(f->cap, nc);
      FZ_CHECK(q != NULL);
      f->cap = q;
      f->cap_cap = nc;
    }
    memcpy(f->cap + f->cap_len, buf, take);
    f->cap_len += take;
    f->wtotal += take;
  }
  *n = take;
  return rc;
}

static int cb_write(ws_conn *c, const void *buf, size_t len, size_t *n,
                    void *user) {
  fz *f = (fz *)user;
  int rc;
  enter(f);
  FZ_CHECK(len > 0);
  /* The whole queue is offered; but a refusal with nothing queued writes
   * its close frame (4 bytes) straight to the transport. */
  FZ_CHECK(ws_conn_queued(c) == len ||
           (f->brefused && ws_conn_queued(c) == 0 && len == 4 &&
            ((const uint8_t *)buf)[0] == 0x88));
  FZ_CHECK(len <= f->max_queued + f->slack);
  rc = fz_take(f, buf, len, n);
  leave(f);
  return rc;
}

/* writev: the queue first (all of it), then one frame, joined. */
static int cb_writev(ws_conn *c, const ws_iovec *iov, int cnt, size_t *n,
                     void *user) {
  fz *f = (fz *)user;
  size_t total = 0, off = 0, q = ws_conn_queued(c);
  uint8_t *flat;
  int i, rc;
  enter(f);
  FZ_CHECK(cnt >= 2 && cnt <= 3);
  FZ_CHECK(q == 0 ? cnt == 2 : iov[0].len == q);
  for (i = 0; i < cnt; i++) total += iov[i].len;
  FZ_CHECK(total >= WS_DIRECT_MIN);
  flat = (uint8_t *)malloc(total);
  FZ_CHECK(flat != NULL);
  for (i = 0; i < cnt; i++) {
    memcpy(flat + off, iov[i].base, iov[i].len);
    off += iov[i].len;
  }
  rc = fz_take(f, flat, total, n);
  free(flat);
  leave(f);
  return rc;
}

static int cb_read(ws_conn *c, void *buf, size_t cap, size_t *n, void *user) {
  fz *f = (fz *)user;
  int rc = WS_OK;
  (void)c;
  enter(f);
  FZ_CHECK(cap > 0);
  *n = 0;
  if (f->rpos < f->ravail) {
    *n = WS__MIN(cap, f->ravail - f->rpos);
    memcpy(buf, f->stream_p + f->rpos, *n);
    f->rpos += *n;
  } else if (f->rpos == f->stream_n && f->end_mode == 1) {
    f->eof_sent = 1; /* end of stream */
  } else if (f->rpos == f->stream_n && f->end_mode == 2) {
    f->eof_sent = 1;
    rc = WS_EIO;
  } else {
    rc = WS_EAGAIN;
  }
  leave(f);
  return rc;
}

static int cb_random(ws_conn *c, void *buf, size_t n, void *user) {
  fz *f = (fz *)user;
  uint8_t *p = (uint8_t *)buf;
  size_t i;
  (void)c;
  enter(f);
  FZ_CHECK(n == 4 || n == 16);
  f->rnd_calls++;
  if (f->rnd_fail && f->rnd_calls == f->rnd_fail) {
    leave(f);
    return WS_EIO;
  }
  for (i = 0; i < n; i++) p[i] = (uint8_t)(f->rnd_ctr++ * 37 + 11);
  if (n == 16 && !f->have_nonce) {
    memcpy(f->nonce, p, 16);
    f->have_nonce = 1;
  }
  leave(f);
  return WS_OK;
}

/* ------------------------------------------------------------------------
 * Event callbacks: check what arrives, and act from the script.
 * ---------------------------------------------------------------------- */

static const ws_header good_hdr = {"X-Fuzz", 6, "1", 1};
static const ws_header bad_hdr = {"X-Fuzz", 6, "a\r\nb", 4};

static int cb_handshake(ws_conn *c, const ws_request *req, ws_accept *acc,
                        void *user) {
  fz *f = (fz *)user;
  unsigned a = next_act(f);
  size_t i, cnt;
  enter(f);
  FZ_CHECK(!f->opened);
  FZ_CHECK(ws_conn_state(c) == WS_STATE_CONNECTING);
  FZ_CHECK(req->key != NULL && req->key_len == 24);
  cnt = ws_request_protocol_count(req);
  for (i = 0; i < cnt && i < 64; i++) {
    const char *t;
    size_t tl;
    FZ_CHECK(ws_request_protocol(req, i, &t, &tl) == WS_OK);
    if (f->protos && tl == 4 && memcmp(t, "chat", 4) == 0)
      acc->protocol = "chat";
  }
  leave(f);
  switch (a & 15) {
    case 11: /* give up on the connection from inside the callback */
      FZ_CHECK(ws_conn_abort(c, WS_EAPP) == WS_OK);
      return 0;
    case 12: acc->protocol = "nope"; return 0;      /* not offered: 500 */
    case 13: acc->headers = &good_hdr; acc->num_headers = 1; return 0;
    case 14: acc->headers = &bad_hdr; acc->num_headers = 1; return 0;
    case 15: return (a & 16) ? 403 : 99;             /* refuse */
    default: return 0;
  }
}

static int cb_http(ws_conn *c, const ws_request *req, void *user) {
  fz *f = (fz *)user;
  unsigned a = next_act(f);
  int ret = 0;
  enter(f);
  FZ_CHECK(!f->opened && f->role == WS_SERVER);
  FZ_CHECK(req->method != NULL && req->upgrade == 0);
  FZ_CHECK(req->path != NULL || req->path_len == 0);
  if (f->http_body) {
    static const ws_header hh[2] = {{"Content-Type", 12, "text/plain", 10},
                                    {"X-Bad", 5, "a\nb", 3}};
    int rc = ws_http_respond(c, 200 + (int)(a & 3) * 100, hh, (a >> 2) & 1 ? 2 : 1,
                             req->path, WS__MIN(req->path_len, (size_t)64));
    if ((a >> 2) & 1) FZ_CHECK(rc == WS_EINVAL);
    if (rc == WS_OK)
      FZ_CHECK(ws_http_respond(c, 200, NULL, 0, NULL, 0) == WS_ESTATE);
  } else if ((a & 7) == 7) {
    FZ_CHECK(ws_conn_abort(c, 0) == WS_OK);
  } else {
    ret = (a & 1) ? 404 : 0; /* 0 without an answer: refused too */
  }
  leave(f);
  return ret;
}

static void cb_open(ws_conn *c, const char *proto, size_t plen, void *user) {
  fz *f = (fz *)user;
  unsigned a = next_act(f);
  enter(f);
  FZ_CHECK(!f->opened);
  f->opened = 1;
  FZ_CHECK(ws_conn_state(c) == WS_STATE_OPEN);
  if (proto) FZ_CHECK(plen == 4 && memcmp(proto, "chat", 4) == 0 && f->protos);
  else FZ_CHECK(plen == 0);
  switch (a & 7) {
    case 1: ws_send(c, WS_OP_TEXT, "hello", 5); break;
    case 2:
      if (ws_send_fragment(c, WS_OP_TEXT, "fr\xC3", 3, 0) == WS_OK)
        f->tx_frag = 1;
      break;
    case 3: ws_ping(c, "p", 1); break;
    case 4: ws_close(c, 1000, "bye", 3); break;
    case 5: ws_conn_cork(c, 1); break;
    case 7:
      if (a & 8) FZ_CHECK(ws_conn_abort(c, WS_EAPP) == WS_OK);
      break;
    case 6: {
      static uint8_t blob[32 * 3000];
      ws_send(c, WS_OP_BINARY, blob, (a >> 3) * 3000);
      break;
    }
    default: break;
  }
  leave(f);
}

static void check_rx_text_final(fz *f) {
  size_t bad;
  if (f->rx_op == WS_OP_TEXT) FZ_CHECK(ref_utf8(f->rx, f->rx_len, 1, &bad));
}

static int cb_message(ws_conn *c, int op, const void *data, size_t len,
                      int fin, void *user) {
  fz *f = (fz *)user;
  unsigned a = next_act(f);
  const uint8_t *d = (const uint8_t *)data;
  size_t bad;
  int ret = 0, rc;
  enter(f);
  FZ_CHECK(f->opened);
  FZ_CHECK(op == WS_OP_TEXT || op == WS_OP_BINARY);
  FZ_CHECK(fin == 0 || fin == 1);
  FZ_CHECK(data != NULL || len == 0);
  if (!f->stream) {
    FZ_CHECK(fin == 1);
    FZ_CHECK(len <= f->max_message);
    if (f->fixed) FZ_CHECK(len + 256 <= f->in_cap);
    if (op == WS_OP_TEXT) FZ_CHECK(ref_utf8(d, len, 1, &bad));
    else {
      size_t i;
      unsigned sum = 0;
      for (i = 0; i < len; i++) sum += d[i]; /* every byte readable */
      (void)sum;
    }
  } else {
    FZ_CHECK(len > 0 || fin);
    if (f->rx_op) FZ_CHECK(op == f->rx_op);
    f->rx_op = op;
    if (f->rx_len + len > f->rx_cap) {
      size_t nc = (f->rx_len + len) * 2 + 16;
      uint8_t *q = (uint8_t *)realloc(f->rx, nc);
      FZ_CHECK(q != NULL);
      f->rx = q;
      f->rx_cap = nc;
    }
    if (len) memcpy(f->rx + f->rx_len, d, len);
    f->rx_len += len;
    FZ_CHECK(f->rx_len <= f->max_message);
    if (op == WS_OP_TEXT && f->rx_len <= 4096)
      FZ_CHECK(ref_utf8(f->rx, f->rx_len, 0, &bad));
    if (fin) {
      check_rx_text_final(f);
      f->rx_op = 0;
      f->rx_len = 0;
    }
  }
  /* Act: echo, or something else the script says. */
  switch (a & 15) {
    case 6: /* echo as two fragments (whole messages only) */
      if (!f->stream && !f->tx_frag) {
        size_t h = len / 2;
        /* Cut on a character boundary for text. */
        while (op == WS_OP_TEXT && h > 0 && h < len && (d[h] & 0xC0) == 0x80)
          h--;
        if (ws_send_fragment(c, op, d, h, 0) == WS_OK)
          ws_send_fragment(c, WS_OP_CONT, d + h, len - h, 1);
        break;
      }
      /* fall through */
    case 0: case 1: case 2: case 3: case 4: case 5:
      if (f->stream) {
        ws_send_fragment(c, op, d, len, fin);
      } else if (f->encoded) {
        uint8_t *fr = (uint8_t *)malloc(len + WS_FRAME_HEADER_MAX);
        size_t hl;
        FZ_CHECK(fr != NULL);
        hl = ws_frame_write(fr, 1, op, len, NULL);
        FZ_CHECK(hl >= 2);
        if (len) memcpy(fr + hl, d, len);
        rc = ws_send_encoded(c, fr, hl + len);
        if (f->role == WS_CLIENT) FZ_CHECK(rc == WS_EINVAL);
        /* A truncated or padded frame is refused. */
        FZ_CHECK(ws_send_encoded(c, fr, hl + len - 1) == WS_EINVAL ||
                 f->role == WS_CLIENT);
        free(fr);
      } else {
        ws_send(c, op, d, len);
      }
      break;
    case 7: ws_ping(c, d, WS__MIN(len, (size_t)125)); break;
    case 8: ws_pong(c, d, WS__MIN(len, (size_t)125)); break;
    case 9:
      ws_close(c, 1000 + (int)(a >> 4), (const char *)d,
               WS__MIN(len, (size_t)100));
      break;
    case 10: ws_conn_cork(c, 1); break;
    case 11: ws_conn_cork(c, 0); break;
    case 12: ret = (a & 16) ? -1 : 0; break;
    case 13: {
      uint8_t *big = (uint8_t *)calloc(1, len * 3 + 1);
      FZ_CHECK(big != NULL);
      ws_send(c, WS_OP_BINARY, big, len * 3);
      free(big);
      break;
    }
    case 14:
      if (f->tx_frag && ws_send_fragment(c, WS_OP_CONT, "\xA9", 1, 1) == WS_OK)
        f->tx_frag = 0;
      break;
    default:
      if (a & 16) {
        /* Inside a callback: on_close comes when the outer call returns,
         * and so does a free (c stays valid until then). */
        if (a & 32) {
          ws_conn_free(c);
        } else {
          rc = ws_conn_abort(c, WS_EAPP);
          FZ_CHECK(rc == WS_OK);
        }
        FZ_CHECK(ws_conn_state(c) == WS_STATE_CLOSED);
      }
      break;
  }
  leave(f);
  return ret;
}

static void cb_ping(ws_conn *c, const void *data, size_t len, void *user) {
  fz *f = (fz *)user;
  unsigned a = next_act(f);
  enter(f);
  FZ_CHECK(f->opened && len <= 125 && (data != NULL || len == 0));
  if (len) FZ_CHECK(((const uint8_t *)data)[len - 1] || 1);
  if ((a & 3) == 0) ws_ping(c, data, len);
  if ((a & 3) == 1) ws_close(c, 1001, NULL, 0);
  if ((a & 7) == 2) ws_conn_abort(c, 0);
  leave(f);
}

static void cb_pong(ws_conn *c, const void *data, size_t len, void *user) {
  fz *f = (fz *)user;
  (void)c;
  enter(f);
  FZ_CHECK(f->opened && len <= 125 && (data != NULL || len == 0));
  if (len) FZ_CHECK(((const uint8_t *)data)[0] || 1);
  leave(f);
}

static void cb_close(ws_conn *c, int code, const char *reason, size_t len,
                     void *user) {
  fz *f = (fz *)user;
  size_t bad;
  FZ_CHECK(f->closes == 0);
  FZ_CHECK(f->depth == 0); /* never nested in another callback */
  FZ_CHECK(c == f->c);
  f->closes++;
  FZ_CHECK(code >= 1000 && code <= 4999);
  FZ_CHECK(reason != NULL || len == 0);
  if (len) FZ_CHECK(ref_utf8((const uint8_t *)reason, len, 1, &bad));
  if (f->brefused_open) FZ_CHECK(code == f->bcode);
  if (f->free_in_close) {
    ws_conn_free(c);
    free(c); /* the library must not touch c any more */
    f->c = NULL;
    f->freed = 1;
  }
}

/* ------------------------------------------------------------------------
 * Checking the bytes the connection wrote.
 * ---------------------------------------------------------------------- */

static size_t find_head(const uint8_t *p, size_t n) {
  size_t i;
  for (i = 0; i + 4 <= n; i++)
    if (memcmp(p + i, "\r\n\r\n", 4) == 0) return i + 4;
  return 0;
}

static void check_output(fz *f) {
  const uint8_t *p = f->cap;
  size_t n = f->cap_len, head, pos;
  int in_msg = 0, msg_op = 0, closed = 0;
  uint8_t *msg = NULL;
  size_t msg_len = 0, msg_cap = 0;
  if (n == 0) return;
  head = find_head(p, n);
  if (f->role == WS_SERVER) {
    static const char ok[] = "HTTP/1.1 101 ";
    FZ_CHECK(memcmp(p, "HTTP/1.1 ", WS__MIN(n, (size_t)9)) == 0);
    if (memcmp(p, ok, WS__MIN(n, (size_t)13)) != 0) {
      /* A plain HTTP response (an error, or on_http's answer): the head,
       * Content-Length bytes of body, and nothing after. */
      size_t i, clen = 0;
      static const char cl[] = "\r\nContent-Length: ";
      FZ_CHECK(!f->opened);
      if (head == 0) return;
      for (i = 0; i + sizeof cl - 1 < head; i++)
        if (memcmp(p + i, cl, sizeof cl - 1) == 0) {
          size_t j = i + sizeof cl - 1;
          while (j < head && p[j] >= '0' && p[j] <= '9')
            clen = clen * 10 + (size_t)(p[j++] - '0');
          break;
        }
      FZ_CHECK(n <= head + clen);
      return;
    }
    if (n < 13) return; /* a 101 cut short by the transport */
    FZ_CHECK(f->opened || head == 0);
  } else {
    FZ_CHECK(memcmp(p, "GET ", WS__MIN(n, (size_t)4)) == 0);
    if (!f->opened) FZ_CHECK(head == 0 || head == n);
  }
  if (head == 0) return;
  pos = head;
  while (pos < n) {
    const uint8_t *h = p + pos;
    size_t avail = n - pos, hl = 2, i;
    uint64_t len;
    unsigned op, fin, masked;
    uint8_t key[4] = {0, 0, 0, 0};
    FZ_CHECK(!closed); /* nothing after a close frame */
    if (avail < 2) break;
    fin = h[0] >> 7;
    op = h[0] & 15;
    FZ_CHECK((h[0] & 0x70) == 0);
    FZ_CHECK(op <= 2 || (op >= 8 && op <= 10));
    masked = h[1] >> 7;
    FZ_CHECK(masked == (f->role == WS_CLIENT));
    len = h[1] & 0x7F;
    if (len == 126) {
      if (avail < 4) break;
      len = ((uint64_t)h[2] << 8) | h[3];
      FZ_CHECK(len >= 126);
      hl = 4;
    } else if (len == 127) {
      if (avail < 10) break;
      len = 0;
      for (i = 0; i < 8; i++) len = (len << 8) | h[2 + i];
      FZ_CHECK(len > 0xFFFF && !(len >> 63));
      hl = 10;
    }
    if (masked) {
      if (avail < hl + 4) break;
      memcpy(key, h + hl, 4);
      hl += 4;
    }
    if (op >= 8) FZ_CHECK(fin && len <= 125);
    if (avail - hl < len) break; /* a partial last frame */
    {
      uint8_t *pl = (uint8_t *)malloc((size_t)len + 1);
      FZ_CHECK(pl != NULL);
      if (len) memcpy(pl, h + hl, (size_t)len);
      for (i = 0; i < len; i++) pl[i] ^= key[i & 3];
      if (op == WS_OP_CLOSE) {
        uint16_t code;
        FZ_CHECK(ref_close_parse(pl, (size_t)len, &code) == WS_OK);
        closed = 1;
      } else if (op < 8) {
        FZ_CHECK((op == 0) == in_msg); /* fragmentation order */
        if (op) msg_op = (int)op, msg_len = 0;
        if (msg_op == WS_OP_TEXT) {
          if (msg_len + len > msg_cap) {
            msg_cap = (msg_len + (size_t)len) * 2 + 16;
            msg = (uint8_t *)realloc(msg, msg_cap);
            FZ_CHECK(msg != NULL);
          }
          if (len) memcpy(msg + msg_len, pl, (size_t)len);
          msg_len += (size_t)len;
          if (fin) {
            size_t bad;
            FZ_CHECK(ref_utf8(msg, msg_len, 1, &bad));
          }
        }
        in_msg = !fin;
      }
      free(pl);
    }
    pos += hl + (size_t)len;
  }
  free(msg);
}

/* ------------------------------------------------------------------------
 * Driver.
 * ---------------------------------------------------------------------- */

static const uint64_t sizes[16] = {0,     1,     2,      16,    125,  126,
                                   200,   1000,  4096,   65535, 65536, 70000,
                                   1u << 20, 300, 10,    100000};
static const size_t queued_tab[16] = {0,    1,     14,    100,  256,  1000,
                                      4096, 65536, 70000, 1u << 20, 200,
                                      16,   131,   2000,  30000, 500};
static const size_t hs_tab[8] = {64, 100, 200, 300, 512, 1024, 4096, 8192};
static const size_t fs_tab[8] = {0, 1, 2, 7, 100, 125, 126, 1000};
static const size_t incap_tab[8] = {512, 513, 600, 1024, 4096, 20000,
                                    65536 + 512, 300000};
static const size_t outcap_tab[4] = {512, 1024, 4096, 70000};
static const size_t chunk_tab[8] = {1, 2, 3, 7, 16, 64, 512, 65536};
static const uint32_t hs_to[4] = {0, 50, 1000, 10000};
static const uint32_t cl_to[4] = {0, 20, 300, 5000};
static const uint32_t ping_iv[4] = {0, 10, 100, 1000};
static const uint32_t pong_to[4] = {0, 30, 500, 10000};

static const char client_req[] =
    "GET /chat HTTP/1.1\r\n"
    "Host: server.example.com\r\n"
    "Upgrade: websocket\r\n"
    "Connection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    "Origin: http://example.com\r\n"
    "Sec-WebSocket-Version: 13\r\n";

/* After every call that returned: the limits and the state order. */
static void check_live(fz *f) {
  int st;
  if (f->c == NULL) return;
  FZ_CHECK(ws_conn_queued(f->c) <= f->max_queued + f->slack);
  st = ws_conn_state(f->c);
  FZ_CHECK(st >= f->last_state);
  f->last_state = st;
  if (f->budget) {
    FZ_CHECK((long long)ws_conn_memory(f->c) == f->btotal);
    /* A refusal fails the connection at once: nothing waits on it. */
    if (f->brefused) FZ_CHECK(st == WS_STATE_CLOSED);
  }
  /* Liveness: a healthy connection with nothing queued wants input (else
   * a pull-mode host never reads again: a hang). */
  if ((st == WS_STATE_CONNECTING || st == WS_STATE_OPEN) &&
      ws_conn_error(f->c) == WS_OK && ws_conn_queued(f->c) == 0
#ifdef FZ_ALLOW_KNOWN_BUGS /* fuzz past the reported want_read stall */
      && f->max_queued >= WS_FRAME_HEADER_MAX + WS_CONTROL_MAX
#endif
  )
    FZ_CHECK(ws_conn_want_read(f->c));
}

static uint32_t lcg(uint32_t *s) {
  *s = *s * 1103515245u + 12345u;
  return *s >> 16;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static fz F;
  fz *f = &F;
  ws_config cfg;
  ws_callbacks cb;
  ws_client_opts opts;
  uint8_t conf[CONF_LEN];
  uint8_t *stream = NULL, *inb = NULL, *outb = NULL;
  size_t stream_n = 0, pos = 0, maxchunk, iter = 0, stalls = 0, i;
  uint32_t seed;
  uint64_t now = 1000;
  int started = 0, driven = 0, rc;
  static const size_t bigs[4] = {0, 70000, 200000, (1u << 20) + 100};
  size_t big;
  static char long_value[1200];
  ws_header extra;

  memset(conf, 0, sizeof conf);
  memcpy(conf, data, WS__MIN(size, (size_t)CONF_LEN));
  data += WS__MIN(size, (size_t)CONF_LEN);
  size -= WS__MIN(size, (size_t)CONF_LEN);

  memset(f, 0, sizeof *f);
  f->budget = (conf[17] >> 5) & 1;
  if (f->budget) {
    unsigned v = 0;
    if (size >= 2) {
      v = (unsigned)data[size - 2] | (unsigned)data[size - 1] << 8;
      size -= 2;
    }
    f->bmode = (conf[17] >> 6) & 1;
    f->bcode = (conf[17] >> 7) ? WS_CLOSE_TRY_AGAIN : WS_CLOSE_TOO_BIG;
    f->bk = 1 + v % 512;
    f->blimit = (long long)v * 8;
  }
  f->role = conf[0] & 1;
  f->stream = (conf[0] >> 1) & 1;
  f->fixed = (conf[0] >> 2) & 1;
  f->raw_hs = (conf[0] >> 3) & 1;
  f->pull = (conf[0] >> 4) & 1;
  f->ticks = (conf[0] >> 5) & 1;
  f->free_in_close = (conf[0] >> 6) & 1;
  f->protos = (conf[0] >> 7) & 1;
  f->max_frame = sizes[conf[1] & 15];
  f->max_message = sizes[conf[1] >> 4];
  f->max_queued = queued_tab[conf[2] & 15];
  f->max_handshake = hs_tab[(conf[2] >> 4) & 7];
  f->cork = conf[2] >> 7;
  f->in_cap = incap_tab[(conf[3] >> 3) & 7];
  f->fail_at = conf[4] & 31;
  f->rnd_fail = conf[4] >> 5;
  f->wmode = conf[5] & 3;
  f->wk = (size_t)(conf[5] >> 2) * (f->wmode == 3 ? 37 : 1);
  maxchunk = chunk_tab[conf[6] & 7];
  seed = conf[6] >> 3;
  f->end_mode = conf[8] & 3;
  memcpy(f->script, conf + 9, 8);
  f->encoded = (conf[17] >> 3) & 1;
  f->slack = 256 + ((conf[17] & 4) ? 1240 : 0);
  f->http_body = (conf[17] >> 4) & 1;
  f->bound = (size_t)(2 * (f->max_message + f->max_handshake + f->max_queued) +
                      65536);

  ws_config_init(&cfg, f->role);
  cfg.max_frame = f->max_frame;
  cfg.max_message = f->max_message;
  cfg.max_queued = f->max_queued;
  cfg.max_handshake = f->max_handshake;
  cfg.max_headers = conf[8] >> 3;
  cfg.frame_size = fs_tab[conf[3] & 7];
  cfg.stream = f->stream;
  cfg.handshake_timeout_ms = hs_to[conf[7] & 3];
  cfg.close_timeout_ms = cl_to[(conf[7] >> 2) & 3];
  cfg.ping_interval_ms = ping_iv[(conf[7] >> 4) & 3];
  cfg.pong_timeout_ms = pong_to[conf[7] >> 6];
  cfg.realloc = hook;
  cfg.alloc_ctx = f;
  if (f->budget) cfg.charge = charge;

  memset(&cb, 0, sizeof cb);
  cb.read = cb_read;
  cb.write = cb_write;
  cb.writev = cb_writev;
  cb.random = cb_random;
  cb.on_handshake = cb_handshake;
  cb.on_http = cb_http;
  cb.on_open = cb_open;
  cb.on_message = cb_message;
  cb.on_ping = cb_ping;
  cb.on_pong = cb_pong;
  cb.on_close = cb_close;

  f->c = (ws_conn *)malloc(sizeof *f->c);
  FZ_CHECK(f->c != NULL);
  FZ_CHECK(ws_conn_init(f->c, &cfg, &cb, f) == WS_OK);
  if (f->fixed) {
    /* The tables give usable bytes; the buffers also hold the header,
     * at an odd address half of the time (any alignment must do). */
    size_t skew = conf[3] & 1;
    inb = (uint8_t *)malloc(f->in_cap + WS_BUFFER_OVERHEAD + 1);
    outb = (uint8_t *)malloc(outcap_tab[conf[3] >> 6] + WS_BUFFER_OVERHEAD + 1);
    FZ_CHECK(inb && outb);
    FZ_CHECK(ws_conn_set_buffers(f->c, inb + skew, f->in_cap + WS_BUFFER_OVERHEAD,
                                 outb + skew,
                                 outcap_tab[conf[3] >> 6] + WS_BUFFER_OVERHEAD) ==
             WS_OK);
  }
  f->last_state = ws_conn_state(f->c);

  /* The handshake the peer sends first, then the fuzzed bytes. */
  big = bigs[conf[17] & 3];
  stream = (uint8_t *)malloc(size + 512 + big + WS_FRAME_HEADER_MAX);
  FZ_CHECK(stream != NULL);
  if (f->role == WS_SERVER) {
    started = 1;
    if (!f->raw_hs) {
      memcpy(stream, client_req, sizeof client_req - 1);
      stream_n = sizeof client_req - 1;
      if (f->protos) {
        static const char pl[] = "Sec-WebSocket-Protocol: superchat, chat\r\n";
        memcpy(stream + stream_n, pl, sizeof pl - 1);
        stream_n += sizeof pl - 1;
      }
      memcpy(stream + stream_n, "\r\n", 2);
      stream_n += 2;
    }
  } else {
    memset(&opts, 0, sizeof opts);
    opts.host = "server.example.com";
    opts.path = "/chat";
    opts.origin = "http://example.com";
    opts.protocols = f->protos ? "chat, superchat" : NULL;
    if (conf[17] & 4) {
      memset(long_value, 'v', sizeof long_value - 1);
      extra.name = "X-Long";
      extra.name_len = 6;
      extra.value = long_value;
      extra.value_len = sizeof long_value - 1;
      opts.headers = &extra;
      opts.num_headers = 1;
    }
    rc = ws_client_start(f->c, &opts);
    if (f->c == NULL) {
      started = 1; /* it closed and on_close freed it */
    } else {
      started = ws_conn_state(f->c) != WS_STATE_INIT;
      if (rc == WS_EBUDGET) {
        /* Refused before it started: CLOSED, and no on_close owed. */
        FZ_CHECK(f->brefused && started && f->closes == 0);
        started = 0;
      }
      FZ_CHECK(started == (rc == WS_OK || rc == WS_ECLOSED || f->closes > 0));
      check_live(f);
    }
    if (started && !f->raw_hs) {
      char key[25], accept[29];
      int k;
      FZ_CHECK(f->have_nonce);
      ws__b64_encode(f->nonce, 16, key);
      key[24] = '\0';
      FZ_CHECK(ws_accept_key(key, 24, accept) == WS_OK);
      k = sprintf((char *)stream,
                  "HTTP/1.1 101 Switching Protocols\r\n"
                  "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                  "Sec-WebSocket-Accept: %s\r\n%s\r\n",
                  accept, f->protos ? "Sec-WebSocket-Protocol: chat\r\n" : "");
      stream_n = (size_t)k;
    }
  }
  if (size) memcpy(stream + stream_n, data, size);
  stream_n += size;
  if (big) {
    /* A large binary frame of zeros, masked when the peer is a client. */
    static const uint8_t key[4] = {0x37, 0xfa, 0x21, 0x3d};
    int masked = f->role == WS_SERVER;
    size_t hl = ws_frame_write(stream + stream_n, 1, WS_OP_BINARY, big,
                               masked ? key : NULL);
    memset(stream + stream_n + hl, 0, big);
    if (masked) ws_mask(stream + stream_n + hl, big, key, 0);
    stream_n += hl + big;
  }
  f->stream_p = stream;
  f->stream_n = stream_n;

  /* Feed it in chunks, ticking and flushing in between. */
  while (started && f->c != NULL && f->closes == 0 && iter++ < 4 * stream_n + 64) {
    size_t chunk = 1 + lcg(&seed) % maxchunk;
    int progressed = 0;
    if (pos >= stream_n && !(f->pull && f->end_mode && !f->eof_sent)) break;
    /* Large streams (the appended big frame) go in at most ~4096 steps. */
    if (chunk < (stream_n - pos) / 4096) chunk = (stream_n - pos) / 4096;
    chunk = WS__MIN(chunk, stream_n - pos);
    if (f->cork && (lcg(&seed) & 3) == 0) {
      ws_conn_cork(f->c, 1);
      check_live(f);
    }
    if (f->pull) {
      size_t before = f->rpos;
      f->ravail = WS__MIN(stream_n, f->rpos + chunk);
      ws_conn_on_readable(f->c);
      driven = 1;
      pos = f->rpos;
      progressed = f->rpos > before || f->eof_sent;
    } else if (chunk) {
      uint8_t *copy = (uint8_t *)malloc(chunk);
      FZ_CHECK(copy != NULL);
      memcpy(copy, stream + pos, chunk);
      /* Copying or in place, at random; the bytes are scribbled over
       * afterwards, so nothing may point into them. */
      if (lcg(&seed) & 1)
        ws_conn_feed_inplace(f->c, copy, chunk);
      else
        ws_conn_feed(f->c, copy, chunk);
      driven = 1;
      memset(copy, 0xA5, chunk);
      free(copy);
      pos += chunk;
      progressed = 1;
    }
    check_live(f);
    if (f->c && f->cork && (lcg(&seed) & 1)) {
      ws_conn_cork(f->c, 0);
      check_live(f);
    }
    if (f->c && (ws_conn_want_write(f->c) || !progressed)) {
      ws_conn_on_writable(f->c);
      driven = 1;
      check_live(f);
    }
    if (f->c && f->ticks) {
      uint64_t dl = ws_conn_next_deadline(f->c);
      now += lcg(&seed) % 64;
      if (dl <= now || (lcg(&seed) & 7) == 0) {
        ws_conn_tick(f->c, now);
        driven = 1;
        check_live(f);
      }
    }
    if (f->pull && f->eof_sent) break;
    /* Nothing moves (e.g. a peer that never reads our output): stop. */
    stalls = progressed ? 0 : stalls + 1;
    if (stalls > 64) break;
  }

  /* Push mode: the peer's end of the stream, as a NULL feed. */
  if (!f->pull && f->end_mode == 1 && started && f->c != NULL &&
      f->closes == 0) {
    rc = (lcg(&seed) & 1) ? ws_conn_feed_inplace(f->c, NULL, 0)
                          : ws_conn_feed(f->c, NULL, 0);
    driven = 1;
    FZ_CHECK(rc == WS_ECLOSED);
    FZ_CHECK(f->closes == 1);
    check_live(f);
  }

  /* Drain, let the timers run out, maybe close, then free. */
  for (i = 0; i < 32 && f->c != NULL && f->closes == 0; i++) {
    if (f->cork) ws_conn_cork(f->c, 0);
    if (f->c && ws_conn_want_write(f->c)) {
      ws_conn_on_writable(f->c);
      driven = 1;
    }
    check_live(f);
    if (f->c && f->ticks) {
      now += 1000;
      ws_conn_tick(f->c, now);
      driven = 1;
      check_live(f);
    }
    if (i == 3 && f->c && (conf[8] & 4)) {
      ws_close(f->c, 1000, "done", 4);
      check_live(f);
    }
  }
  if (f->c) {
    ws_conn_free(f->c);
    if (f->c) {
      FZ_CHECK(ws_conn_state(f->c) == WS_STATE_CLOSED);
      free(f->c);
      f->c = NULL;
    }
  }
  /* on_close is owed once the connection is started: a client by
   * ws_client_start(), a server by the first call that drives it. */
  FZ_CHECK(f->closes == ((f->role == WS_CLIENT ? started : driven) ? 1 : 0));
  FZ_CHECK(f->live == 0);
  FZ_CHECK(f->btotal == 0);
  for (i = 0; i < MAX_ALLOCS; i++) FZ_CHECK(f->ents[i].p == NULL);
  if (f->fixed) FZ_CHECK(!f->hook_called);
  if (f->rx_op && f->closes) {
    /* A streamed message that never finished: its text so far was valid. */
    size_t bad;
    if (f->rx_op == WS_OP_TEXT && f->rx_len <= 4096)
      FZ_CHECK(ref_utf8(f->rx, f->rx_len, 0, &bad));
  }
#ifdef FZ_DEBUG
  fwrite(f->cap, 1, f->cap_len, stderr);
  fprintf(stderr, "\n--- opened %d closes %d wrote %zu iter %zu wcalls %u rpos %zu/%zu\n", f->opened, f->closes, f->cap_len, iter, f->wcalls, f->rpos, f->stream_n);
#endif
  check_output(f);

  free(f->cap);
  free(f->rx);
  free(stream);
  free(inb);
  free(outb);
  return 0;
}
