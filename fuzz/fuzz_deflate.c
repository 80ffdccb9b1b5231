/*
 * fuzz_deflate.c - permessage-deflate: the extension negotiation of both
 * roles and the inflate path of a connection that agreed on it. Built with
 * -DWS_ENABLE_ZLIB=1 -lz (fuzz.mk).
 *
 * Input: [mode][L][L bytes: a Sec-WebSocket-Extensions value][frames...]
 *   mode bit 0   role: 0 server (the value is the request's offer), 1 client
 *                (it offered, the value is the server's response)
 *   mode bit 1   cfg.stream
 *   mode bit 2   the policy's no_context_takeover; bit 3 its peer_...
 *   mode bits 4-6  window bits of the policy: 8 + (bits & 7)
 *   mode bit 7   frame payloads are compressed by the harness (zlib, one
 *                stream, sync flush, tail removed) rather than taken raw
 *   frames: [b0: fin, rsv, opcode as on the wire][len: 1 byte][payload]...
 *           fed in pieces of (b0 & 0x0f) + 1 bytes when the opcode is 0xF
 *
 * Checks: the handshake ends OPEN, or a client fails with 1010 (a close
 * frame carrying 1010 written, on_close 1010); when deflate is agreed, the
 * server's response header holds exactly one permessage-deflate element
 * that a client accepts; no message is delivered larger than max_message,
 * nor any piece from a frame past max_frame; on_close runs at most once;
 * every allocation is given back by ws_conn_free().
 */
#include "../src/ws.c"
#include "fuzz_common.h"

typedef struct fz_alloc {
  long live;
} fz_alloc;

static void *fz_realloc(void *ptr, size_t n, void *ctx) {
  fz_alloc *a = (fz_alloc *)ctx;
  if (n == 0) {
    if (ptr) a->live--;
    free(ptr);
    return NULL;
  }
  if (!ptr) {
    ptr = malloc(n);
    if (ptr) a->live++;
    return ptr;
  }
  return realloc(ptr, n);
}

typedef struct fz_end {
  unsigned char out[1 << 16];
  size_t out_len;
  uint64_t msg, max_message;
  int closes, close_code;
} fz_end;

static int fz_write(ws_conn *c, const void *b, size_t len, size_t *n,
                    void *user) {
  fz_end *e = (fz_end *)user;
  size_t k = WS__MIN(len, sizeof e->out - e->out_len);
  (void)c;
  memcpy(e->out + e->out_len, b, k);
  e->out_len += k;
  *n = len; /* the rest is dropped: only the head and a close are read */
  return WS_OK;
}

static int fz_message(ws_conn *c, int op, const void *d, size_t n, int fin,
                      void *user) {
  fz_end *e = (fz_end *)user;
  (void)c, (void)op, (void)d;
  e->msg += n;
  FZ_CHECK(e->msg <= e->max_message);
  if (fin) e->msg = 0;
  return 0;
}

static void fz_close(ws_conn *c, int code, const char *r, size_t n,
                     void *user) {
  fz_end *e = (fz_end *)user;
  (void)c, (void)r, (void)n;
  e->closes++;
  e->close_code = code;
}

static const ws_callbacks fz_cb = {NULL, fz_write, NULL, NULL, NULL,
                                   fz_message, NULL, NULL, NULL, fz_close,
                                   NULL};

/* The header value in a head (NULL when none). */
static const char *fz_ext(const unsigned char *h, size_t n, size_t *vl) {
  static const char name[] = "Sec-WebSocket-Extensions: ";
  size_t i, k = sizeof name - 1;
  for (i = 0; i + k < n; i++) {
    if (memcmp(h + i, "\r\n\r\n", 4) == 0) return NULL;
    if (memcmp(h + i, name, k) == 0) {
      const char *v = (const char *)h + i + k;
      const char *e = (const char *)memchr(v, '\r', n - i - k);
      if (e == NULL) return NULL;
      *vl = (size_t)(e - v);
      return v;
    }
  }
  return NULL;
}

static int fz_rnd(ws_conn *c, void *b, size_t n, void *user) {
  (void)c, (void)user;
  memset(b, 0x5a, n);
  return WS_OK;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fz_in in = {data, size};
  unsigned mode = fz_u8(&in), i;
  size_t elen = fz_u8(&in); /* (WS__MIN would read twice) */
  char ext[256];
  static fz_end e;
  ws_config cfg;
  ws_callbacks cb = fz_cb;
  fz_alloc a = {0};
  ws_conn c;
  int client = mode & 1;
  z_stream zs;
  unsigned char head[1024];
  size_t hl;
  memset(&e, 0, sizeof e);
  if (elen > in.n) elen = in.n;
  /* A header value: no control character (the head would be refused). */
  for (i = 0; i < elen; i++) {
    unsigned char ch = in.p[i];
    ext[i] = (char)((ch < 0x20 && ch != '\t') || ch == 0x7F ? ' ' : ch);
  }
  ext[elen] = '\0';
  in.p += elen;
  in.n -= elen;
  ws_config_init(&cfg, client ? WS_CLIENT : WS_SERVER);
  cfg.realloc = fz_realloc;
  cfg.alloc_ctx = &a;
  cfg.stream = (mode >> 1) & 1;
  cfg.max_frame = 20000;
  cfg.max_message = 50000;
  cfg.deflate.enable = 1;
  cfg.deflate.no_context_takeover = (mode >> 2) & 1;
  cfg.deflate.peer_no_context_takeover = (mode >> 3) & 1;
  cfg.deflate.window_bits = (uint8_t)(8 + ((mode >> 4) & 7));
  cfg.deflate.peer_window_bits = cfg.deflate.window_bits;
  cfg.deflate.threshold = 0;
  e.max_message = cfg.max_message;
  cb.random = fz_rnd;
  FZ_CHECK(ws_conn_init(&c, &cfg, &cb, &e) == WS_OK);
  if (client) {
    ws_client_opts o;
    char key[25], acc[29];
    uint8_t nonce[16];
    memset(&o, 0, sizeof o);
    o.host = "h";
    o.deflate = 1;
    FZ_CHECK(ws_client_start(&c, &o) == WS_OK);
    memset(nonce, 0x5a, 16);
    ws__b64_encode(nonce, 16, key);
    ws_accept_key(key, 24, acc);
    hl = (size_t)snprintf((char *)head, sizeof head,
                          "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                          "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n"
                          "%s%s%s\r\n",
                          acc, elen ? "Sec-WebSocket-Extensions: " : "", ext,
                          elen ? "\r\n" : "");
  } else {
    hl = (size_t)snprintf((char *)head, sizeof head,
                          "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n"
                          "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                          "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                          "Sec-WebSocket-Extensions: %s\r\n\r\n", ext);
  }
  e.out_len = 0;
  ws_conn_feed(&c, head, hl);
  if (client && ws_conn_state(&c) != WS_STATE_OPEN) {
    /* Refused: 1010, and on_close with it. */
    FZ_CHECK(e.out_len == 8 && e.out[0] == 0x88 && e.out[1] == 0x82 &&
             (e.out[6] ^ e.out[2]) == 0x03 && (e.out[7] ^ e.out[3]) == 0xF2);
    FZ_CHECK(e.closes == 1 && e.close_code == 1010);
  } else {
    FZ_CHECK(ws_conn_state(&c) == WS_STATE_OPEN);
  }
  if (!client && ws_conn_deflate(&c)) {
    /* What the server agreed to is what a client accepts. */
    size_t vl = 0;
    const char *v = fz_ext(e.out, e.out_len, &vl);
    ws_response r;
    ws_header h;
    uint16_t agreed, offer;
    char text[WS__PMD_TEXT_MAX];
    ws_deflate_config any = cfg.deflate;
    size_t tl;
    FZ_CHECK(v != NULL);
    any.no_context_takeover = any.peer_no_context_takeover = 0;
    any.window_bits = 15;
    any.peer_window_bits = 15;
    offer = ws__pmd_offer(&any, text, &tl);
    memset(&r, 0, sizeof r);
    h.name = "Sec-WebSocket-Extensions";
    h.name_len = 24;
    h.value = v;
    h.value_len = vl;
    r.headers = &h;
    r.num_headers = 1;
    FZ_CHECK(ws__pmd_check(&r, offer, &agreed) == WS_OK && agreed != 0);
  }
  /* Frames, in the peer's role. */
  memset(&zs, 0, sizeof zs);
  if (mode & 0x80) FZ_CHECK(deflateInit2(&zs, 6, Z_DEFLATED, -9, 2, Z_DEFAULT_STRATEGY) == Z_OK);
  while (in.n >= 2 && ws_conn_state(&c) != WS_STATE_CLOSED) {
    unsigned b0 = fz_u8(&in);
    size_t n = fz_u8(&in), fl;
    unsigned char pl[1024 + 64], fr[1200];
    size_t pn;
    static const uint8_t key[4] = {1, 2, 3, 4};
    if (n > in.n) n = in.n;
    pn = n;
    memcpy(pl, in.p, n);
    in.p += n;
    in.n -= n;
    if ((b0 & 0x0F) == 0x0F) { /* raw bytes, fed in pieces */
      size_t k, step = (b0 >> 4) + 1;
      for (k = 0; k < n && ws_conn_state(&c) != WS_STATE_CLOSED; k += step)
        ws_conn_feed(&c, pl + k, WS__MIN(step, n - k));
      continue;
    }
    if ((mode & 0x80) && (b0 & 0x40)) { /* compressed by us: valid */
      zs.next_in = pl;
      zs.avail_in = (uInt)n;
      zs.next_out = fr;
      zs.avail_out = sizeof fr;
      deflate(&zs, Z_SYNC_FLUSH);
      pn = sizeof fr - zs.avail_out;
      if (pn >= 4) pn -= 4;
      memcpy(pl, fr, WS__MIN(pn, sizeof pl));
      pn = WS__MIN(pn, sizeof pl);
    }
    fl = ws_frame_write(fr, 1, b0 & 0x0F, pn, client ? NULL : key);
    if (fl == 0) continue;
    fr[0] = (unsigned char)b0;
    memcpy(fr + fl, pl, pn);
    if (!client) ws_mask(fr + fl, pn, key, 0);
    ws_conn_feed(&c, fr, fl + pn);
  }
  if (mode & 0x80) deflateEnd(&zs);
  FZ_CHECK(e.closes <= 1);
  ws_conn_free(&c);
  FZ_CHECK(e.closes <= 1);
  FZ_CHECK(a.live == 0);
  return 0;
}
