/* deflate.c - part 5, layer 0: permessage-deflate (RFC 7692): the codec interface, its zlib backend (WS_ENABLE_ZLIB), the negotiation.
 * Uses parts 0-4. The connection (conn.c) drives the streams and the negotiation from here. */
#include "private.h"

/* see ws.h */
int ws_deflate_available(void) { return WS_ENABLE_ZLIB ? 1 : 0; }

/* The codec interface: a raw DEFLATE stream (no zlib header) with a window
 * of 2^bits bytes, compressing or decompressing; made by ws__zs_new(), run
 * by ws__zs_run(), started afresh by ws__zs_reset(), ended by
 * ws__zs_free(). Its memory comes from the config's allocator. One
 * backend is compiled in: zlib's, or none (ws__zs_new() then fails and the
 * negotiation never agrees). */
typedef struct ws__zs {
#if WS_ENABLE_ZLIB
  z_stream s;
#endif
  const ws_config *cfg;
  int inflate;
  size_t cost;          /* ws__zs_cost(): what the budget counts for it */
} ws__zs;

/* What a stream takes, by zlib's documented figures: deflate's window and
 * hash tables, (1 << (bits + 2)) + (1 << (mem_level + 9)), inflate's
 * window, 1 << bits, each with its state of a few kilobytes. */
static size_t ws__zs_cost(int inflate, int bits, int mem_level) {
  if (inflate) return sizeof(ws__zs) + 7168 + ((size_t)1 << bits);
  return sizeof(ws__zs) + 5888 + ((size_t)1 << (bits + 2)) +
         ((size_t)1 << (mem_level + 9));
}

/* ws__zs_run(): a final DEFLATE block ended the stream (inflate). */
#define WS__ZS_END 1

static void *ws__cfg_realloc(const ws_config *cfg, void *ptr, size_t n) {
  if (cfg->realloc) return cfg->realloc(ptr, n, cfg->alloc_ctx);
#ifndef WS_NO_MALLOC
  if (n == 0) {
    free(ptr);
    return NULL;
  }
  return realloc(ptr, n);
#else
  (void)ptr;
  return NULL;
#endif
}

/* Whether a connection with this config may use compression: a backend,
 * and an allocator for it. */
static int ws__zs_usable(const ws_config *cfg) {
#ifdef WS_NO_MALLOC
  if (cfg->realloc == NULL) return 0;
#endif
  (void)cfg;
  return WS_ENABLE_ZLIB;
}

#if WS_ENABLE_ZLIB
static voidpf ws__zalloc(voidpf opaque, uInt items, uInt size) {
  size_t n = (size_t)items * size;
  if (size && n / size != items) return Z_NULL;
  return ws__cfg_realloc((const ws_config *)opaque, NULL, n ? n : 1);
}

static void ws__zfree(voidpf opaque, voidpf ptr) {
  if (ptr) ws__cfg_realloc((const ws_config *)opaque, ptr, 0);
}
#endif

/* A new stream, or NULL (no memory, no backend). */
static ws__zs *ws__zs_new(const ws_config *cfg, int inflate, int bits,
                          int mem_level) {
#if WS_ENABLE_ZLIB
  ws__zs *z = (ws__zs *)ws__cfg_realloc(cfg, NULL, sizeof *z);
  int rc;
  if (z == NULL) return NULL;
  memset(z, 0, sizeof *z);
  z->cfg = cfg;
  z->inflate = inflate;
  z->cost = ws__zs_cost(inflate, bits, mem_level);
  z->s.zalloc = ws__zalloc;
  z->s.zfree = ws__zfree;
  z->s.opaque = (voidpf)cfg;
  if (inflate)
    rc = inflateInit2(&z->s, -bits);
  else
    rc = deflateInit2(&z->s, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -bits,
                      mem_level, Z_DEFAULT_STRATEGY);
  if (rc != Z_OK) {
    ws__cfg_realloc(cfg, z, 0);
    return NULL;
  }
  return z;
#else
  (void)cfg, (void)inflate, (void)bits, (void)mem_level;
  return NULL;
#endif
}

static void ws__zs_free(ws__zs *z) {
  if (z == NULL) return;
#if WS_ENABLE_ZLIB
  if (z->inflate)
    inflateEnd(&z->s);
  else
    deflateEnd(&z->s);
#endif
  ws__cfg_realloc(z->cfg, z, 0);
}

static void ws__zs_reset(ws__zs *z) {
#if WS_ENABLE_ZLIB
  if (z->inflate)
    inflateReset(&z->s);
  else
    deflateReset(&z->s);
#else
  (void)z;
#endif
}

/* Runs the stream over in[0..n) into out[0..cap): *used bytes of input
 * taken, *made bytes written. Compressing, sync (1) ends the output on a
 * byte boundary with the empty stored block 00 00 ff ff once all input is
 * taken. Returns WS_OK (stopped for want of input or of room: call again
 * with more room while *made == cap), WS__ZS_END (inflate: the final block
 * ended; the rest of the input is not taken), WS_EDATA (corrupt input) or
 * WS_ENOMEM. */
static int ws__zs_run(ws__zs *z, const unsigned char *in, size_t n,
                      size_t *used, unsigned char *out, size_t cap,
                      size_t *made, int sync) {
#if WS_ENABLE_ZLIB
  size_t in0 = n, cap0 = cap;
  int rc = Z_OK;
  /* zlib counts in uInt: go in steps it can hold. */
  while (cap > 0) {
    uInt ni = (uInt)WS__MIN(n, (size_t)1 << 30);
    uInt no = (uInt)WS__MIN(cap, (size_t)1 << 30);
    z->s.next_in = (Bytef *)(uintptr_t)in;
    z->s.avail_in = ni;
    z->s.next_out = out;
    z->s.avail_out = no;
    if (z->inflate)
      rc = inflate(&z->s, Z_SYNC_FLUSH);
    else
      rc = deflate(&z->s, sync && ni == n ? Z_SYNC_FLUSH : Z_NO_FLUSH);
    in += ni - z->s.avail_in;
    n -= ni - z->s.avail_in;
    out += no - z->s.avail_out;
    cap -= no - z->s.avail_out;
    if (rc == Z_BUF_ERROR) { /* no progress possible: not an error */
      rc = Z_OK;
      break;
    }
    /* Done when all input is taken and the output has room left (zlib
     * then holds nothing more to write). */
    if (rc != Z_OK || (n == 0 && z->s.avail_out > 0)) break;
  }
  *used = in0 - n;
  *made = cap0 - cap;
  if (rc == Z_STREAM_END) return WS__ZS_END;
  if (rc == Z_MEM_ERROR) return WS_ENOMEM;
  if (rc != Z_OK) return WS_EDATA;
  return WS_OK;
#else
  (void)z, (void)in, (void)n, (void)out, (void)cap, (void)sync;
  *used = *made = 0;
  return WS_EDATA;
#endif
}

/* Compresses in[0..len) as one whole message (sync flush) into a new buffer
 * from cfg's allocator, at `off` bytes from its start (room for a frame
 * header), without the 00 00 ff ff tail: *buf, and *clen payload bytes.
 * Nothing new since the last flush (an empty message) gives the empty
 * stored block less its tail, 00 (RFC 7692 7.2.3.6). WS_OK, WS_ENOMEM, or
 * WS_EIO (zlib did not end as a sync flush does; never seen). */
static int ws__deflate_buf(ws__zs *z, const ws_config *cfg,
                           const unsigned char *in, size_t len, size_t off,
                           unsigned char **buf, size_t *clen) {
  /* Room for incompressible input (stored blocks add 5 bytes per block)
   * and the flush; grown if ever short. */
  size_t cap = off + len + (len >> 10) + 64, n = 0, used, made;
  unsigned char *b, *nb;
  int rc;
  *buf = NULL;
  if (cap < len ||
      (b = (unsigned char *)ws__cfg_realloc(cfg, NULL, cap)) == NULL)
    return WS_ENOMEM;
  for (;;) {
    rc = ws__zs_run(z, in, len, &used, b + off + n, cap - off - n, &made, 1);
    in += used;
    len -= used;
    n += made;
    if (rc != WS_OK || off + n < cap) break;
    if (cap * 2 < cap ||
        (nb = (unsigned char *)ws__cfg_realloc(cfg, b, cap * 2)) == NULL) {
      rc = WS_ENOMEM;
      break;
    }
    b = nb;
    cap *= 2;
  }
  if (rc == WS_OK && n == 0) {
    b[off] = 0;
    n = 1;
  } else if (rc == WS_OK && n >= 4 &&
             memcmp(b + off + n - 4, "\0\0\xff\xff", 4) == 0) {
    n -= 4;
  } else if (rc == WS_OK) {
    rc = WS_EIO;
  }
  if (rc != WS_OK) {
    ws__cfg_realloc(cfg, b, 0);
    return rc;
  }
  *buf = b;
  *clen = n;
  return WS_OK;
}

/* see ws.h */
int ws_deflate_encode(const ws_config *cfg, int op, const void *data,
                      size_t len, int window_bits, void **frame,
                      size_t *frame_len) {
  ws__zs *z;
  unsigned char *b, hdr[WS_FRAME_HEADER_MAX];
  size_t n, hl;
  int rc, mem;
  if (frame) *frame = NULL;
  if (cfg == NULL || frame == NULL || frame_len == NULL ||
      (op != WS_OP_TEXT && op != WS_OP_BINARY) || (data == NULL && len > 0) ||
      window_bits < 9 || window_bits > 15 || !ws__zs_usable(cfg))
    return WS_EINVAL;
  mem = cfg->deflate.mem_level >= 1 && cfg->deflate.mem_level <= 9
            ? cfg->deflate.mem_level
            : 8;
  if ((z = ws__zs_new(cfg, 0, window_bits, mem)) == NULL) return WS_ENOMEM;
  rc = ws__deflate_buf(z, cfg, (const unsigned char *)data, len,
                       WS_FRAME_HEADER_MAX, &b, &n);
  ws__zs_free(z);
  if (rc != WS_OK) return rc;
  /* The header just before the payload, RSV1 set: one frame. */
  hl = ws_frame_write(hdr, 1, op, n, NULL);
  hdr[0] |= 0x40;
  memcpy(b + WS_FRAME_HEADER_MAX - hl, hdr, hl);
  memmove(b, b + WS_FRAME_HEADER_MAX - hl, hl + n);
  *frame = b;
  *frame_len = hl + n;
  return WS_OK;
}

/* see ws.h */
void ws_deflate_free(const ws_config *cfg, void *frame) {
  if (cfg && frame) ws__cfg_realloc(cfg, frame, 0);
}

/* Negotiation ----------------------------------------------------------- */

/* What a connection agreed (ws_conn.pmd), or, on a client until the
 * response, what it offered. Windows are 4-bit fields. */
enum {
  WS__PMD_ON = 1u << 0,       /* agreed */
  WS__PMD_TX_RESET = 1u << 1, /* our compressor keeps no context (offer:
                                 we offered client_no_context_takeover) */
  WS__PMD_RX_RESET = 1u << 2, /* the peer's keeps none (offer: we asked
                                 for server_no_context_takeover) */
  WS__PMD_OFFER = 1u << 3     /* client: an offer awaits the response */
};
#define WS__PMD_TX_BITS(m) (((m) >> 4) & 15u)  /* our window (offer: ours) */
#define WS__PMD_RX_BITS(m) (((m) >> 8) & 15u)  /* the peer's (offer: asked,
                                                  0: not asked) */
#define WS__PMD_MAKE(flags, tx, rx) \
  ((uint16_t)((flags) | ((unsigned)(tx) << 4) | ((unsigned)(rx) << 8)))

/* One offer's or response's parameters: windows 0 when absent, 1 for a bare
 * client_max_window_bits. */
typedef struct ws__pmd_params {
  uint8_t snct, cnct, smwb, cmwb;
} ws__pmd_params;

static const char *ws__ows(const char *p, const char *end) {
  while (p < end && (*p == ' ' || *p == '\t')) p++;
  return p;
}

static const char *ws__token_end(const char *p, const char *end) {
  while (p < end && WS__TCHAR((unsigned char)*p)) p++;
  return p;
}

/* Reads the next element of a Sec-WebSocket-Extensions list from *pos:
 * 1 with its name and its parameters' span [*ps, *pe) (each "; name" with
 * an optional "=token" or "=quoted-string"), 0 at the end, -1 when the
 * syntax is broken (nothing after it can be trusted). */
static int ws__ext_next(const char **pos, const char *end, const char **name,
                        size_t *nlen, const char **ps, const char **pe) {
  const char *p = *pos, *q;
  while (p < end && (*p == ',' || *p == ' ' || *p == '\t')) p++;
  if (p == end) return 0;
  q = ws__token_end(p, end);
  if (q == p) return -1;
  *name = p;
  *nlen = (size_t)(q - p);
  p = *ps = q;
  for (;;) {
    p = ws__ows(p, end);
    if (p == end || *p == ',') break;
    if (*p != ';') return -1;
    p = ws__ows(p + 1, end);
    q = ws__token_end(p, end);
    if (q == p) return -1;
    p = ws__ows(q, end);
    if (p < end && *p == '=') {
      p = ws__ows(p + 1, end);
      if (p < end && *p == '"') {
        for (p++; p < end && *p != '"'; p++)
          if (*p == '\\' && ++p == end) return -1;
        if (p == end) return -1;
        p++;
      } else {
        q = ws__token_end(p, end);
        if (q == p) return -1;
        p = q;
      }
    }
  }
  *pe = p;
  *pos = p;
  return 1;
}

/* A window size: "8".."15" (unquoted first), else 0. */
static uint8_t ws__wbits(const char *v, size_t n) {
  char d[3];
  size_t i, k = 0;
  if (n >= 2 && v[0] == '"' && v[n - 1] == '"') v++, n -= 2;
  for (i = 0; i < n; i++) {
    if (v[i] == '\\' && i + 1 < n) i++;
    if (k == 2) return 0;
    d[k++] = v[i];
  }
  if (k == 1 && d[0] >= '8' && d[0] <= '9') return (uint8_t)(d[0] - '0');
  if (k == 2 && d[0] == '1' && d[1] >= '0' && d[1] <= '5')
    return (uint8_t)(10 + d[1] - '0');
  return 0;
}

/* The parameters of a permessage-deflate element, well-formed per
 * ws__ext_next(): WS_OK, or WS_EINVAL for an unknown, repeated or
 * ill-valued one. `response`: client_max_window_bits needs a value. */
static int ws__pmd_parse(const char *p, const char *end, ws__pmd_params *o,
                         int response) {
  memset(o, 0, sizeof *o);
  for (;;) {
    const char *name, *v = NULL, *q;
    size_t nl, vl = 0;
    p = ws__ows(p, end);
    if (p == end) return WS_OK;
    p = ws__ows(p + 1, end); /* ';' */
    name = p;
    p = ws__token_end(p, end);
    nl = (size_t)(p - name);
    p = ws__ows(p, end);
    if (p < end && *p == '=') {
      p = v = ws__ows(p + 1, end);
      if (*p == '"') {
        for (p++; *p != '"'; p++)
          if (*p == '\\') p++;
        p++;
      } else {
        p = ws__token_end(p, end);
      }
      vl = (size_t)(p - v);
    }
    q = name;
    if (nl == 26 && ws__ieq(q, nl, "server_no_context_takeover")) {
      if (o->snct || v) return WS_EINVAL;
      o->snct = 1;
    } else if (nl == 26 && ws__ieq(q, nl, "client_no_context_takeover")) {
      if (o->cnct || v) return WS_EINVAL;
      o->cnct = 1;
    } else if (nl == 22 && ws__ieq(q, nl, "server_max_window_bits")) {
      if (o->smwb || !v || (o->smwb = ws__wbits(v, vl)) == 0)
        return WS_EINVAL;
    } else if (nl == 22 && ws__ieq(q, nl, "client_max_window_bits")) {
      if (o->cmwb) return WS_EINVAL;
      if (v == NULL) {
        if (response) return WS_EINVAL;
        o->cmwb = 1;
      } else if ((o->cmwb = ws__wbits(v, vl)) == 0) {
        return WS_EINVAL;
      }
    } else {
      return WS_EINVAL;
    }
  }
}

static void ws__wr_bits(ws__wbuf *w, const char *name, unsigned bits) {
  ws__wrs(w, "; ");
  ws__wrs(w, name);
  ws__wrs(w, bits >= 10 ? "=1" : "=");
  ws__wr(w, &"0123456789"[bits % 10], 1);
}

/* The longest extension header value this side writes. */
#define WS__PMD_TEXT_MAX 128

#ifndef WS_NO_SERVER
/* Server: the first acceptable permessage-deflate offer among the
 * request's Sec-WebSocket-Extensions headers, taken in order, under the
 * policy d. Returns the agreement (ws_conn.pmd; 0: none) and writes the
 * response's header value into out (WS__PMD_TEXT_MAX bytes). */
static uint16_t ws__pmd_accept(const ws_request *req,
                               const ws_deflate_config *d, char *out,
                               size_t *out_len) {
  size_t i;
  for (i = 0; i < req->num_headers; i++) {
    const ws_header *h = &req->headers[i];
    const char *pos = h->value, *end = h->value + h->value_len;
    const char *name, *ps, *pe;
    size_t nl;
    int rc;
    if (!ws__ieq(h->name, h->name_len, "sec-websocket-extensions")) continue;
    while ((rc = ws__ext_next(&pos, end, &name, &nl, &ps, &pe)) == 1) {
      ws__pmd_params o;
      ws__wbuf w;
      unsigned tx, rx, flags = WS__PMD_ON;
      if (!ws__ieq(name, nl, "permessage-deflate") ||
          ws__pmd_parse(ps, pe, &o, 0) != WS_OK)
        continue; /* declined: the next offer */
      /* Our window: the policy's, or smaller when asked. 8 is agreed
       * (and then nothing is compressed: zlib has no 8-bit raw window). */
      tx = d->window_bits >= 8 && d->window_bits <= 15 ? d->window_bits : 15;
      if (o.smwb && o.smwb < tx) tx = o.smwb;
      /* The client's: ask for the policy's when it allows us to. */
      rx = 15;
      if (o.cmwb) {
        if (o.cmwb > 1) rx = o.cmwb;
        if (d->peer_window_bits >= 8 && d->peer_window_bits < rx)
          rx = d->peer_window_bits;
      }
      if (o.snct || d->no_context_takeover) flags |= WS__PMD_TX_RESET;
      if (o.cnct || d->peer_no_context_takeover) flags |= WS__PMD_RX_RESET;
      w.p = out, w.cap = WS__PMD_TEXT_MAX, w.len = 0, w.over = 0;
      ws__wrs(&w, "permessage-deflate");
      if (flags & WS__PMD_TX_RESET) ws__wrs(&w, "; server_no_context_takeover");
      if (flags & WS__PMD_RX_RESET) ws__wrs(&w, "; client_no_context_takeover");
      if (o.smwb || tx < 15) {
        /* Unasked, a smaller window is news the client may use. */
        ws__wr_bits(&w, "server_max_window_bits", tx);
      }
      if (o.cmwb && rx < 15) ws__wr_bits(&w, "client_max_window_bits", rx);
      *out_len = w.len;
      return WS__PMD_MAKE(flags, tx, rx);
    }
    if (rc < 0) continue; /* a broken header: its other offers are lost */
  }
  return 0;
}
#endif

#ifndef WS_NO_CLIENT
/* Client: the offer for the settings d (into out, WS__PMD_TEXT_MAX bytes),
 * and what it offered (ws_conn.pmd until the response). */
static uint16_t ws__pmd_offer(const ws_deflate_config *d, char *out,
                              size_t *out_len) {
  ws__wbuf w;
  unsigned tx = d->window_bits >= 8 && d->window_bits <= 15 ? d->window_bits
                                                              : 15;
  unsigned rx = d->peer_window_bits >= 8 && d->peer_window_bits < 15
                    ? d->peer_window_bits
                    : 0;
  unsigned flags = WS__PMD_OFFER;
  w.p = out, w.cap = WS__PMD_TEXT_MAX, w.len = 0, w.over = 0;
  ws__wrs(&w, "permessage-deflate");
  if (d->peer_no_context_takeover) {
    ws__wrs(&w, "; server_no_context_takeover");
    flags |= WS__PMD_RX_RESET;
  }
  if (d->no_context_takeover) {
    ws__wrs(&w, "; client_no_context_takeover");
    flags |= WS__PMD_TX_RESET;
  }
  if (rx) ws__wr_bits(&w, "server_max_window_bits", rx);
  if (tx < 15)
    ws__wr_bits(&w, "client_max_window_bits", tx);
  else
    ws__wrs(&w, "; client_max_window_bits");
  *out_len = w.len;
  return WS__PMD_MAKE(flags, tx, rx);
}

/* Client: checks the response's extensions against the offer (ws_conn.pmd
 * while connecting). WS_OK with *agreed (0: the server declined), or
 * WS_EHANDSHAKE for a response the offer does not allow. */
static int ws__pmd_check(const ws_response *resp, uint16_t offer,
                         uint16_t *agreed) {
  size_t i, count = 0;
  ws__pmd_params r;
  unsigned tx = WS__PMD_TX_BITS(offer), rx = WS__PMD_RX_BITS(offer);
  unsigned flags = WS__PMD_ON;
  *agreed = 0;
  memset(&r, 0, sizeof r);
  for (i = 0; i < resp->num_headers; i++) {
    const ws_header *h = &resp->headers[i];
    const char *pos = h->value, *end = h->value + h->value_len;
    const char *name, *ps, *pe;
    size_t nl;
    int rc;
    if (!ws__ieq(h->name, h->name_len, "sec-websocket-extensions")) continue;
    while ((rc = ws__ext_next(&pos, end, &name, &nl, &ps, &pe)) == 1) {
      if (++count > 1 || !ws__ieq(name, nl, "permessage-deflate") ||
          ws__pmd_parse(ps, pe, &r, 1) != WS_OK)
        return WS_EHANDSHAKE;
    }
    if (rc < 0) return WS_EHANDSHAKE;
  }
  if (count == 0) return WS_OK; /* declined */
  /* What we asked for must be granted; what is granted must fit what we
   * allowed. */
  if (((offer & WS__PMD_RX_RESET) && !r.snct) || (rx && !r.smwb) ||
      (rx && r.smwb > rx) || (r.cmwb && r.cmwb > tx))
    return WS_EHANDSHAKE;
  if (r.cmwb) tx = r.cmwb;
  rx = r.smwb ? r.smwb : 15;
  if (r.snct) flags |= WS__PMD_RX_RESET;
  if (r.cnct || (offer & WS__PMD_TX_RESET)) flags |= WS__PMD_TX_RESET;
  *agreed = WS__PMD_MAKE(flags, tx, rx);
  return WS_OK;
}
#endif
