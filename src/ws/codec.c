/* codec.c - part 3, layer 0: error names, frame headers, masking, close payloads. Pure functions.
 * Uses parts 0-2. No state, no allocation, no I/O. */
#include "private.h"

/* see ws.h */
const char *ws_version(void) { return "0.1.0"; }

/* see ws.h */
const char *ws_strerror(int err) {
#if WS_SMALL
  return ws_errname(err); /* the sentences cost 700 bytes of flash */
#else
  switch (err) {
#define WS__ERR_STR(name, val, text) \
  case (val):                        \
    return text;
    WS_ERRNO_MAP(WS__ERR_STR)
#undef WS__ERR_STR
  }
  return "unknown error";
#endif
}

/* The names one after another, and their values in the same order: a
 * table of pointers would be four bytes a name. */
#define WS__ERR_NAME(name, val, text) #name "\0"
static const char ws__errnames[] = WS_ERRNO_MAP(WS__ERR_NAME) "UNKNOWN";
#undef WS__ERR_NAME
#define WS__ERR_VAL(name, val, text) val,
static const signed char ws__errvals[] = {WS_ERRNO_MAP(WS__ERR_VAL)};
#undef WS__ERR_VAL

/* see ws.h */
const char *ws_errname(int err) {
  const char *s = ws__errnames;
  size_t i;
  for (i = 0; i < sizeof ws__errvals && ws__errvals[i] != err; i++)
    s += strlen(s) + 1;
  return s;
}

/* A frame header's length classes (RFC 6455 5.2): a payload length is
 * written in the 7 bits of the second byte, or as 126 and 16 bits, or as
 * 127 and 64 bits, always in the smallest that holds it. Returns the size
 * of the header up to the mask key. Every reader and writer of headers
 * (ws__frame_parse, ws__put_head, the core's queue sizing) asks here. */
static inline size_t ws__head_size(uint64_t len) {
  return len < 126 ? 2 : len <= 0xFFFF ? 4 : 10;
}

/* Writes a frame header up to the mask key (FIN, 0 or 1; the opcode; the
 * length in its class); returns its size. No checks: ws_frame_write()
 * makes them. The length is a ws__flen, as the connection counts it
 * (size_t in the small build): ws_frame_write() writes longer ones. */
static inline size_t ws__put_head(unsigned char *p, int fin, int opcode,
                                  ws__flen len) {
  size_t n = ws__head_size(len);
  p[0] = (unsigned char)((unsigned)fin << 7 | (unsigned)opcode);
  if (n == 2) {
    p[1] = (unsigned char)len;
  } else if (n == 4) {
    p[1] = 126;
    p[2] = (unsigned char)(len >> 8);
    p[3] = (unsigned char)len;
  } else {
    p[1] = 127;
    ws__put32(p + 2, (uint32_t)((uint64_t)len >> 32));
    ws__put32(p + 6, (uint32_t)len);
  }
  return n;
}

/* ws_frame_parse() without the argument checks, for the core's own calls. */
static int ws__frame_parse(const unsigned char *p, size_t len, ws_frame *f,
                           size_t *hdr_len) {
  unsigned op, l7;
  size_t need;
  uint64_t n;
  if (len < 1) return WS_EAGAIN;
  op = p[0] & 0x0F;
  if ((op >= 3 && op <= 7) || op >= 11) return WS_EPROTO;
  if (op >= 8 && !(p[0] & 0x80)) return WS_EPROTO; /* fragmented control */
  if (len < 2) return WS_EAGAIN;
  l7 = p[1] & 0x7F;
  if (op >= 8 && l7 > WS_CONTROL_MAX) return WS_EPROTO;
  need = 2 + (l7 == 126 ? 2 : l7 == 127 ? 8 : 0);
  if (len < need) {
    /* The top bit of a 64-bit length is visible in its first byte. */
    if (l7 == 127 && len > 2 && (p[2] & 0x80)) return WS_EPROTO;
    return WS_EAGAIN;
  }
  if (l7 >= 126) {
    n = l7 == 126 ? ws__get16(p + 2)
                  : ((uint64_t)ws__get32(p + 2) << 32) | ws__get32(p + 6);
    if (n >> 63) return WS_EPROTO;
    if (ws__head_size(n) != need) return WS_EPROTO; /* not minimal */
  } else {
    n = l7;
  }
  if (p[1] & 0x80) need += 4;
  if (len < need) return WS_EAGAIN;
  f->fin = (uint8_t)(p[0] >> 7);
  f->rsv = (uint8_t)((p[0] >> 4) & 7);
  f->opcode = (uint8_t)op;
  f->masked = (uint8_t)(p[1] >> 7);
  f->len = n;
  if (f->masked)
    memcpy(f->mask, p + need - 4, 4);
  else
    memset(f->mask, 0, 4);
  *hdr_len = need;
  return WS_OK;
}

/* see ws.h */
int ws_frame_parse(const void *buf, size_t len, ws_frame *f, size_t *hdr_len) {
  if (f == NULL || hdr_len == NULL || (buf == NULL && len > 0))
    return WS_EINVAL;
  return ws__frame_parse((const unsigned char *)buf, len, f, hdr_len);
}

/* see ws.h */
size_t ws_frame_write(void *out, int fin, int opcode, uint64_t len,
                      const uint8_t *mask) {
  unsigned char *p = (unsigned char *)out;
  size_t n;
  if (opcode < 0 || opcode > 15 || (len >> 63)) return 0;
  if (opcode >= 8 && (!fin || len > WS_CONTROL_MAX)) return 0;
#if WS_SMALL && SIZE_MAX < UINT64_MAX
  if (len > SIZE_MAX) { /* longer than ws__put_head() takes (a size_t) */
    p[0] = (unsigned char)((unsigned)(fin != 0) << 7 | (unsigned)opcode);
    p[1] = 127;
    ws__put32(p + 2, (uint32_t)(len >> 32));
    ws__put32(p + 6, (uint32_t)len);
    n = 10;
  } else
#endif
  n = ws__put_head(p, fin != 0, opcode, (ws__flen)len);
  if (mask) {
    p[1] |= 0x80;
    memcpy(p + n, mask, 4);
    n += 4;
  }
  return n;
}

/* see ws.h */
void ws_mask(void *buf, size_t len, const uint8_t key[4], uint64_t offset) {
  unsigned char *p = (unsigned char *)buf;
  unsigned k = (unsigned)(offset & 3);
  unsigned char kk[12], *rot = kk + k;
  uint64_t w8;
  size_t i;
  if (WS_SMALL || len < 8) {
    for (i = 0; i < len; i++) p[i] ^= key[(k + i) & 3];
    return;
  }
  /* Whole 8-byte words with the key rotated to where the payload stands
   * (the key three times over, read from offset k), at any alignment:
   * memcpy keeps the loads and stores alias- and alignment-safe, and
   * compilers turn them into plain (unaligned) moves. */
  memcpy(kk, key, 4);
  memcpy(kk + 4, key, 4);
  memcpy(kk + 8, key, 4);
  memcpy(&w8, rot, 8);
  while (len >= 32) {
    uint64_t a, b, c, d;
    memcpy(&a, p, 8);
    memcpy(&b, p + 8, 8);
    memcpy(&c, p + 16, 8);
    memcpy(&d, p + 24, 8);
    a ^= w8, b ^= w8, c ^= w8, d ^= w8;
    memcpy(p, &a, 8);
    memcpy(p + 8, &b, 8);
    memcpy(p + 16, &c, 8);
    memcpy(p + 24, &d, 8);
    p += 32;
    len -= 32;
  }
  while (len >= 8) {
    uint64_t a;
    memcpy(&a, p, 8);
    a ^= w8;
    memcpy(p, &a, 8);
    p += 8;
    len -= 8;
  }
  for (i = 0; i < len; i++) p[i] ^= rot[i];
}

/* see ws.h */
int ws_close_code_valid(unsigned code) {
  return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
         (code >= 3000 && code <= 4999);
}

/* see ws.h */
int ws_close_parse(const void *buf, size_t len, uint16_t *code,
                   const char **reason, size_t *reason_len) {
  const unsigned char *p = (const unsigned char *)buf;
  uint32_t st = WS_UTF8_INIT;
  uint16_t c;
  if (code == NULL || reason == NULL || reason_len == NULL ||
      (buf == NULL && len > 0))
    return WS_EINVAL;
  *reason = (const char *)p;
  *reason_len = 0;
  if (len == 0) {
    *code = WS_CLOSE_NO_STATUS;
    return WS_OK;
  }
  if (len == 1 || len > WS_CONTROL_MAX) return WS_EPROTO;
  c = ws__get16(p);
  if (!ws_close_code_valid(c)) return WS_EPROTO;
  *code = c;
  if (ws_utf8_check(&st, p + 2, len - 2, 1, NULL) != WS_OK) return WS_EUTF8;
  *reason = (const char *)p + 2;
  *reason_len = len - 2;
  return WS_OK;
}
