/*
 * fuzz_frame.c - the frame codec.
 *
 * 1. ws_frame_parse() on the input: every prefix of a header it accepts is
 *    WS_EAGAIN; an incomplete header's prefixes are WS_EAGAIN too; a valid
 *    header obeys RFC 6455 section 5.2 and ws_frame_write() of its fields
 *    reproduces it byte for byte (lengths are minimal, so the form is
 *    canonical; RSV bits, which ws_frame_write() never sets, excepted).
 * 2. ws_mask() on the payload, at an offset and alignment the input picks:
 *    it matches byte-wise XOR, masking in two pieces equals one call, and
 *    masking twice restores the payload.
 * 3. ws_close_parse() on the payload (bounds of what it hands back).
 * 4. The other way round: fields taken from the input's first bytes are
 *    written with ws_frame_write() and must parse back to themselves.
 */
#include "../src/ws.c"
#include "fuzz_common.h"

static void check_write_parse(const uint8_t *d, size_t n) {
  fz_in in = {d, n};
  uint8_t out[WS_FRAME_HEADER_MAX + 1], key[4];
  unsigned b0 = fz_u8(&in), i;
  int fin = b0 & 1, opcode = (int)(b0 >> 1) & 0x1F; /* 0..31: some invalid */
  uint64_t len = 0;
  int masked = (b0 >> 6) & 1;
  size_t hl, hl2;
  ws_frame f;
  int rc;
  /* Length: small, 16-bit, or 64-bit forms, chosen by the top bit. */
  if (b0 & 0x80) {
    for (i = 0; i < 8; i++) len = (len << 8) | fz_u8(&in);
  } else {
    len = fz_u16(&in);
    if (len & 0x8000) len &= 0x7F;
  }
  for (i = 0; i < 4; i++) key[i] = (uint8_t)fz_u8(&in);
  out[WS_FRAME_HEADER_MAX] = 0xA5;
  hl = ws_frame_write(out, fin, opcode, len, masked ? key : NULL);
  FZ_CHECK(out[WS_FRAME_HEADER_MAX] == 0xA5);
  if (opcode > 15 || (len >> 63) || (opcode >= 8 && (!fin || len > 125))) {
    FZ_CHECK(hl == 0);
    return;
  }
  FZ_CHECK(hl >= 2 && hl <= WS_FRAME_HEADER_MAX);
  rc = ws_frame_parse(out, hl, &f, &hl2);
  if ((opcode >= 3 && opcode <= 7) || opcode >= 11) {
    FZ_CHECK(rc == WS_EPROTO); /* reserved opcodes are written, not read */
    return;
  }
  FZ_CHECK(rc == WS_OK);
  FZ_CHECK(hl2 == hl);
  FZ_CHECK(f.fin == fin && f.opcode == opcode && f.len == len && f.rsv == 0);
  FZ_CHECK(f.masked == masked);
  if (masked) FZ_CHECK(memcmp(f.mask, key, 4) == 0);
  FZ_CHECK(hl == (size_t)(2 + (len < 126 ? 0 : len <= 0xFFFF ? 2 : 8) +
                          (masked ? 4 : 0)));
}

static void check_mask(const uint8_t *payload, size_t n, const uint8_t key[4],
                       unsigned align, uint64_t offset, size_t split) {
  uint8_t *raw = (uint8_t *)malloc(n + 8), *a, *b = (uint8_t *)malloc(n + 1);
  size_t i;
  FZ_CHECK(raw != NULL && b != NULL);
  a = raw + (align & 7);
  if (n) memcpy(a, payload, n);
  ws_mask(a, n, key, offset);
  for (i = 0; i < n; i++)
    FZ_CHECK(a[i] == (uint8_t)(payload[i] ^ key[(offset + i) & 3]));
  /* In two pieces. */
  if (n) memcpy(b, payload, n);
  split = n ? split % (n + 1) : 0;
  ws_mask(b, split, key, offset);
  ws_mask(b + split, n - split, key, offset + split);
  FZ_CHECK(n == 0 || memcmp(a, b, n) == 0);
  /* Twice restores. */
  ws_mask(a, n, key, offset);
  FZ_CHECK(n == 0 || memcmp(a, payload, n) == 0);
  free(raw);
  free(b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  ws_frame f;
  size_t hl = 0, i;
  int rc;

  check_write_parse(data, size);

  memset(&f, 0xCC, sizeof f);
  rc = ws_frame_parse(data, size, &f, &hl);
  FZ_CHECK(rc == WS_OK || rc == WS_EAGAIN || rc == WS_EPROTO);
  if (rc == WS_EAGAIN) {
    FZ_CHECK(size < WS_FRAME_HEADER_MAX);
    for (i = 0; i < size; i++) {
      ws_frame g;
      size_t h2;
      FZ_CHECK(ws_frame_parse(data, i, &g, &h2) == WS_EAGAIN);
    }
    return 0;
  }
  if (rc == WS_EPROTO) {
    /* Prefixes may still look incomplete, or already be invalid. Once
     * invalid, every longer prefix stays invalid. */
    int seen = 0;
    for (i = 0; i <= size && i <= WS_FRAME_HEADER_MAX; i++) {
      ws_frame g;
      size_t h2;
      int r = ws_frame_parse(data, i, &g, &h2);
      FZ_CHECK(r == WS_EAGAIN || r == WS_EPROTO);
      if (seen) FZ_CHECK(r == WS_EPROTO);
      if (r == WS_EPROTO) seen = 1;
    }
    return 0;
  }

  /* WS_OK: a valid header. */
  FZ_CHECK(hl >= 2 && hl <= WS_FRAME_HEADER_MAX && hl <= size);
  FZ_CHECK(f.fin <= 1 && f.rsv <= 7 && f.masked <= 1);
  FZ_CHECK(f.opcode <= 2 || (f.opcode >= 8 && f.opcode <= 10));
  FZ_CHECK(f.opcode < 8 || (f.fin && f.len <= 125));
  FZ_CHECK((f.len >> 63) == 0);
  FZ_CHECK(f.fin == (data[0] >> 7) && f.rsv == ((data[0] >> 4) & 7) &&
           f.opcode == (data[0] & 15) && f.masked == (data[1] >> 7));
  if (!f.masked) FZ_CHECK(f.mask[0] == 0 && f.mask[3] == 0);
  for (i = 0; i < hl; i++) {
    ws_frame g;
    size_t h2;
    FZ_CHECK(ws_frame_parse(data, i, &g, &h2) == WS_EAGAIN);
  }
  {
    ws_frame g;
    size_t h2 = 0;
    FZ_CHECK(ws_frame_parse(data, hl, &g, &h2) == WS_OK && h2 == hl &&
             memcmp(&g, &f, sizeof f) == 0);
  }
  /* Round trip. */
  {
    uint8_t out[WS_FRAME_HEADER_MAX];
    size_t w = ws_frame_write(out, f.fin, f.opcode, f.len,
                              f.masked ? f.mask : NULL);
    FZ_CHECK(w == hl);
    FZ_CHECK(out[0] == (data[0] & 0x8F));
    FZ_CHECK(memcmp(out + 1, data + 1, hl - 1) == 0);
  }
  /* Payload: mask and close checks on what is present. */
  {
    const uint8_t *pl = data + hl;
    size_t avail = size - hl, n = (size_t)WS__MIN(f.len, (uint64_t)avail);
    static const uint8_t zero[4] = {0, 0, 0, 0};
    const uint8_t *key = f.masked ? f.mask : zero;
    unsigned align = data[0] ^ data[1];
    uint64_t off = (uint64_t)data[1] * 2654435761u;
    check_mask(pl, n, key, align, off, (size_t)data[hl - 1]);
    if (f.opcode == WS_OP_CLOSE && n == f.len) {
      uint8_t *copy = (uint8_t *)malloc(n ? n : 1);
      uint16_t code, ref_code;
      const char *reason;
      size_t rl;
      FZ_CHECK(copy != NULL);
      if (n) memcpy(copy, pl, n);
      ws_mask(copy, n, key, 0);
      rc = ws_close_parse(copy, n, &code, &reason, &rl);
      FZ_CHECK(rc == ref_close_parse(copy, n, &ref_code));
      if (rc == WS_OK) FZ_CHECK(fz_inside(reason, rl, copy, n));
      free(copy);
    }
    /* The rest, as a close payload of its own. */
    {
      uint16_t code;
      const char *reason;
      size_t rl;
      rc = ws_close_parse(pl, avail, &code, &reason, &rl);
      FZ_CHECK(rc == WS_OK || rc == WS_EPROTO || rc == WS_EUTF8);
      if (rc == WS_OK) FZ_CHECK(fz_inside(reason, rl, pl, avail));
    }
  }
  return 0;
}
