/* sha1_base64_utf8.c - part 2: SHA-1 (FIPS 180-4), Base64 (RFC 4648), the incremental UTF-8 check (RFC 3629).
 * Uses parts 0-1. All static: tests reach them by including ws.c. */
#include "private.h"

#define WS__ROL(x, n) (((x) << (n)) | ((x) >> (32 - (n))))

/* The schedule lives in 16 words (w[i & 15]), computed as the rounds go. */
static void ws__sha1_block(uint32_t h[5], const unsigned char *p) {
  uint32_t w[16], a, b, c, d, e, t;
  int i;
  for (i = 0; i < 16; i++) w[i] = ws__get32(p + 4 * i);
  a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
  for (i = 0; i < 80; i++) {
    uint32_t f, k;
    if (i >= 16) {
      t = w[(i + 13) & 15] ^ w[(i + 8) & 15] ^ w[(i + 2) & 15] ^ w[i & 15];
      w[i & 15] = WS__ROL(t, 1);
    }
    if (i < 20) {
      f = d ^ (b & (c ^ d));
      k = 0x5A827999u;
    } else if (i < 40) {
      f = b ^ c ^ d;
      k = 0x6ED9EBA1u;
    } else if (i < 60) {
      f = (b & c) | (d & (b | c));
      k = 0x8F1BBCDCu;
    } else {
      f = b ^ c ^ d;
      k = 0xCA62C1D6u;
    }
    t = WS__ROL(a, 5) + f + e + k + w[i & 15];
    e = d;
    d = c;
    c = WS__ROL(b, 30);
    b = a;
    a = t;
  }
  h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e;
}

static void ws__sha1_init(ws__sha1 *s) {
  s->h[0] = 0x67452301u;
  s->h[1] = 0xEFCDAB89u;
  s->h[2] = 0x98BADCFEu;
  s->h[3] = 0x10325476u;
  s->h[4] = 0xC3D2E1F0u;
  s->bytes = 0;
  s->fill = 0;
}

static void ws__sha1_update(ws__sha1 *s, const void *data, size_t n) {
  const unsigned char *p = (const unsigned char *)data;
  s->bytes += n;
  while (n > 0) {
    size_t take = WS__MIN(n, 64 - s->fill);
    memcpy(s->block + s->fill, p, take);
    s->fill += take;
    p += take;
    n -= take;
    if (s->fill == 64) {
      ws__sha1_block(s->h, s->block);
      s->fill = 0;
    }
  }
}

static void ws__sha1_final(ws__sha1 *s, unsigned char out[20]) {
  int i;
  s->block[s->fill++] = 0x80; /* fill < 64: update leaves no full block */
  if (s->fill > 56) {
    memset(s->block + s->fill, 0, 64 - s->fill);
    ws__sha1_block(s->h, s->block);
    s->fill = 0;
  }
  memset(s->block + s->fill, 0, 56 - s->fill);
  /* The message length in bits, 64-bit big-endian, as two 32-bit halves
   * (no 64-bit shift by a variable: a library call on some 32-bit CPUs). */
  ws__put32(s->block + 56, (uint32_t)(s->bytes >> 29));
  ws__put32(s->block + 60, (uint32_t)(s->bytes << 3));
  ws__sha1_block(s->h, s->block);
  for (i = 0; i < 5; i++) ws__put32(out + 4 * i, s->h[i]);
}

static const char ws__b64[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Encodes n bytes; writes 4 * ceil(n / 3) characters (no NUL). */
static size_t ws__b64_encode(const unsigned char *in, size_t n, char *out) {
  size_t i;
  for (i = 0; i < n; i += 3, out += 4) {
    uint32_t v = (uint32_t)in[i] << 16;
    if (i + 1 < n) v |= (uint32_t)in[i + 1] << 8;
    if (i + 2 < n) v |= in[i + 2];
    out[0] = ws__b64[v >> 18];
    out[1] = ws__b64[(v >> 12) & 63];
    out[2] = ws__b64[(v >> 6) & 63];
    out[3] = ws__b64[v & 63];
  }
  /* A last group of 1 or 2 bytes: its zero bits written as '=' instead */
  if (n % 3 != 0) {
    out[-1] = '=';
    if (n % 3 == 1) out[-2] = '=';
  }
  return (n + 2) / 3 * 4;
}

/*
 * UTF-8: a shift-based DFA. Each byte maps to one of 12 classes, each class
 * to a 64-bit row holding, at bit offset s for every state s, the state that
 * follows. One step is `row[class[b]] >> state` (the shift count taken mod
 * 64): two loads that do not depend on the state and one shift that does,
 * no branch. The states, multiples of 6:
 *    0  between characters (WS_UTF8_INIT)   24  after ED: 80..9F, then 1 more
 *    6  1 more byte 80..BF due              30  3 more 80..BF due
 *   12  2 more 80..BF due                   36  after F0: 90..BF, then 2 more
 *   18  after E0: A0..BF, then 1 more       42  after F4: 80..8F, then 2 more
 *   48  invalid; stays so
 * The range allowed for the first continuation byte rejects overlongs,
 * surrogates and values over U+10FFFF at the first byte that proves them
 * (RFC 3629 section 4); a byte that can begin nothing fails at once.
 */
enum { WS__U8_OK = 0, WS__U8_C1 = 6, WS__U8_C2 = 12, WS__U8_E0 = 18,
       WS__U8_ED = 24, WS__U8_C3 = 30, WS__U8_F0 = 36, WS__U8_F4 = 42,
       WS__U8_BAD = 48 };

#define WS__U8_ROW(ok, c1, c2, e0, ed, c3, f0, f4)                         \
  ((uint64_t)(ok) | (uint64_t)(c1) << 6 | (uint64_t)(c2) << 12 |          \
   (uint64_t)(e0) << 18 | (uint64_t)(ed) << 24 | (uint64_t)(c3) << 30 |   \
   (uint64_t)(f0) << 36 | (uint64_t)(f4) << 42 | (uint64_t)WS__U8_BAD << 48)
#define WS__U8_LEAD(next)                                                  \
  WS__U8_ROW(next, WS__U8_BAD, WS__U8_BAD, WS__U8_BAD, WS__U8_BAD,          \
             WS__U8_BAD, WS__U8_BAD, WS__U8_BAD)

/* The rows, one per class, as a list (X(row) each): the table below, and
 * the small build's 32-bit form of it, are made from the same list. */
#define WS__U8_ROWS(X)                                                      \
  X(WS__U8_LEAD(WS__U8_OK))                     /* 0: 00..7F */             \
  X(WS__U8_ROW(WS__U8_BAD, WS__U8_OK, WS__U8_C1, WS__U8_BAD, WS__U8_C1,      \
               WS__U8_C2, WS__U8_BAD, WS__U8_C2)) /* 1: 80..8F */           \
  X(WS__U8_ROW(WS__U8_BAD, WS__U8_OK, WS__U8_C1, WS__U8_BAD, WS__U8_C1,      \
               WS__U8_C2, WS__U8_C2, WS__U8_BAD)) /* 2: 90..9F */           \
  X(WS__U8_ROW(WS__U8_BAD, WS__U8_OK, WS__U8_C1, WS__U8_C1, WS__U8_BAD,      \
               WS__U8_C2, WS__U8_C2, WS__U8_BAD)) /* 3: A0..BF */           \
  X(WS__U8_LEAD(WS__U8_C1))                     /* 4: C2..DF */             \
  X(WS__U8_LEAD(WS__U8_E0))                     /* 5: E0 */                 \
  X(WS__U8_LEAD(WS__U8_C2))                     /* 6: E1..EC, EE, EF */     \
  X(WS__U8_LEAD(WS__U8_ED))                     /* 7: ED */                 \
  X(WS__U8_LEAD(WS__U8_F0))                     /* 8: F0 */                 \
  X(WS__U8_LEAD(WS__U8_C3))                     /* 9: F1..F3 */             \
  X(WS__U8_LEAD(WS__U8_F4))                     /* 10: F4 */                \
  X(WS__U8_LEAD(WS__U8_BAD))                    /* 11: C0, C1, F5..FF */

#if !WS_SMALL
#define WS__U8_R64(r) r,
static const uint64_t ws__u8_row[12] = {WS__U8_ROWS(WS__U8_R64)};
#endif

#if !WS_SMALL && !defined(WS_NO_SIMD) && defined(__SSE2__)
#include <emmintrin.h>
#define WS__U8_SIMD 1
typedef __m128i ws__v16;
/* Unaligned loads through memcpy, which compilers turn into one movdqu. */
static inline __m128i ws__v_load(const unsigned char *p) {
  __m128i v;
  memcpy(&v, p, sizeof v);
  return v;
}
#define WS__V_LOAD(p) ws__v_load(p)
#define WS__V_OR(a, b) _mm_or_si128(a, b)
#define WS__V_MAX(a, b) _mm_max_epu8(a, b)
#define WS__V_MIN(a, b) _mm_min_epu8(a, b)
#define WS__V_XOR(a, b) _mm_xor_si128(a, b)
/* 1 if any byte has its top bit set. */
#define WS__V_ANY(a) (_mm_movemask_epi8(a) != 0)
/* 0xFF where a >= b (unsigned), else 0. */
#define WS__V_GE(a, b) _mm_cmpeq_epi8(_mm_max_epu8(a, b), a)

/*
 * Bytes with the top bit set where the 16 bytes v, with p1, p2 and p3 the
 * bytes one, two and three places before each, break UTF-8 (C0, C1 and
 * F5..FF aside: the caller checks those over a block).
 * - A continuation byte 80..BF must stand exactly where a lead one place
 *   back (C0..FF), two places back (E0..FF) or three (F0..FF) asks for one.
 * - Four leads narrow their first continuation byte: E0 to A0..BF, F0 to
 *   90..BF, ED to 80..9F, F4 to 80..8F. With s = (p1 & F0) + v (mod 256),
 *   each bound is where s crosses 80: below it is too small after E0 and
 *   F0, and 80 or more is too large after ED and F4. Where v is not a
 *   continuation byte this test means nothing, but the first rule fails.
 */
static inline __m128i ws__u8_vec(__m128i v, __m128i p1, __m128i p2,
                                 __m128i p3) {
#define WS__C8(x) _mm_set1_epi8((char)(x))
  __m128i need = _mm_or_si128(
      _mm_or_si128(_mm_subs_epu8(p1, WS__C8(0xBF)),
                   _mm_subs_epu8(p2, WS__C8(0xDF))),
      _mm_subs_epu8(p3, WS__C8(0xEF)));
  __m128i cont = _mm_cmplt_epi8(v, WS__C8(0xC0)); /* signed: 80..BF */
  __m128i err = _mm_cmpeq_epi8(cont, _mm_cmpeq_epi8(need, _mm_setzero_si128()));
  __m128i lo = _mm_cmpeq_epi8(_mm_and_si128(p1, WS__C8(0xEF)), WS__C8(0xE0));
  __m128i hi = _mm_or_si128(_mm_cmpeq_epi8(p1, WS__C8(0xED)),
                            _mm_cmpeq_epi8(p1, WS__C8(0xF4)));
  __m128i s = _mm_add_epi8(_mm_and_si128(p1, WS__C8(0xF0)), v);
  return _mm_or_si128(err, _mm_and_si128(_mm_or_si128(lo, hi),
                                         _mm_xor_si128(s, lo)));
#undef WS__C8
}
#define WS__V_CHECK(q) ws__u8_vec(WS__V_LOAD(q), WS__V_LOAD((q) - 1),       \
                                  WS__V_LOAD((q) - 2), WS__V_LOAD((q) - 3))
#define WS__V_SPLAT(x) _mm_set1_epi8((char)(x))
/* 0xFF in bytes 13..15 where a sequence starting there runs past byte 15. */
#define WS__V_TAIL(v)                                                       \
  WS__V_GE(v, _mm_setr_epi8(-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, \
                            -1, (char)0xF0, (char)0xE0, (char)0xC0))
#define WS__V_ZERO() _mm_setzero_si128()

#elif !WS_SMALL && !defined(WS_NO_SIMD) && defined(__ARM_NEON) && defined(__aarch64__)
#include <arm_neon.h>
#define WS__U8_SIMD 1
typedef uint8x16_t ws__v16;
#define WS__V_LOAD(p) vld1q_u8(p)
#define WS__V_OR(a, b) vorrq_u8(a, b)
#define WS__V_ANY(a) (vmaxvq_u8(a) >= 0x80)
#define WS__V_MAX(a, b) vmaxq_u8(a, b)
#define WS__V_MIN(a, b) vminq_u8(a, b)
#define WS__V_XOR(a, b) veorq_u8(a, b)
#define WS__V_GE(a, b) vcgeq_u8(a, b)

/* The same rules as the SSE2 version above, with NEON's unsigned compares
 * (the four range rules one by one). */
static inline uint8x16_t ws__u8_vec(uint8x16_t v, uint8x16_t p1,
                                    uint8x16_t p2, uint8x16_t p3) {
  uint8x16_t need = vorrq_u8(vorrq_u8(vqsubq_u8(p1, vdupq_n_u8(0xBF)),
                                      vqsubq_u8(p2, vdupq_n_u8(0xDF))),
                             vqsubq_u8(p3, vdupq_n_u8(0xEF)));
  uint8x16_t cont = vcltq_u8(veorq_u8(v, vdupq_n_u8(0x80)), vdupq_n_u8(0x40));
  uint8x16_t err = vceqq_u8(cont, vceqq_u8(need, vdupq_n_u8(0)));
  err = vorrq_u8(err, vandq_u8(vceqq_u8(p1, vdupq_n_u8(0xE0)),
                               vcltq_u8(v, vdupq_n_u8(0xA0))));
  err = vorrq_u8(err, vandq_u8(vceqq_u8(p1, vdupq_n_u8(0xED)),
                               vcgtq_u8(v, vdupq_n_u8(0x9F))));
  err = vorrq_u8(err, vandq_u8(vceqq_u8(p1, vdupq_n_u8(0xF0)),
                               vcltq_u8(v, vdupq_n_u8(0x90))));
  err = vorrq_u8(err, vandq_u8(vceqq_u8(p1, vdupq_n_u8(0xF4)),
                               vcgtq_u8(v, vdupq_n_u8(0x8F))));
  return err;
}
#define WS__V_CHECK(q) ws__u8_vec(vld1q_u8(q), vld1q_u8((q) - 1),          \
                                  vld1q_u8((q) - 2), vld1q_u8((q) - 3))
#define WS__V_SPLAT(x) vdupq_n_u8(x)
static const uint8_t ws__u8_tail[16] = {255, 255, 255, 255, 255, 255,
                                        255, 255, 255, 255, 255, 255,
                                        255, 0xF0, 0xE0, 0xC0};
#define WS__V_TAIL(v) vcgeq_u8(v, vld1q_u8(ws__u8_tail))
#define WS__V_ZERO() vdupq_n_u8(0)
#endif

/* The class of each byte: a table of 256 with SIMD, where speed matters
 * more than size; else two to a byte for 80..FF (the low nibble for the
 * even byte), as small builds (Cortex-M) want. */
#ifdef WS__U8_SIMD
static const unsigned char ws__u8_class[256] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0,                                 /* 00..7F */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,         /* 80 */
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,         /* 90 */
    3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3,         /* A0 */
    3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3,         /* B0 */
    11, 11, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,       /* C0 */
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,         /* D0 */
    5, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 7, 6, 6,         /* E0 */
    8, 9, 9, 9, 10, 11, 11, 11, 11, 11, 11, 11, 11, 11, 11, 11 /* F0 */
};
#define WS__U8_CLASS(b) ws__u8_class[b]
#elif !WS_SMALL
#define WS__U8_2(lo, hi) (unsigned char)((lo) | (hi) << 4)
#define WS__U8_4(c) WS__U8_2(c, c), WS__U8_2(c, c)
#define WS__U8_8(c) WS__U8_4(c), WS__U8_4(c)
#define WS__U8_16(c) WS__U8_8(c), WS__U8_8(c)
static const unsigned char ws__u8_class[64] = {
    WS__U8_16(1), WS__U8_16(2), WS__U8_16(3), WS__U8_16(3), /* 80..BF */
    WS__U8_2(11, 11), WS__U8_2(4, 4), WS__U8_4(4), WS__U8_8(4),
    WS__U8_16(4),                                           /* C0..DF */
    WS__U8_2(5, 6), WS__U8_4(6), WS__U8_4(6), WS__U8_2(6, 6),
    WS__U8_2(6, 7), WS__U8_2(6, 6),                         /* E0..EF */
    WS__U8_2(8, 9), WS__U8_2(9, 9), WS__U8_2(10, 11), WS__U8_8(11),
    WS__U8_2(11, 11)                                        /* F0..FF */
};
/* (0 for 00..7F, without a branch) */
#define WS__U8_CLASS(b)                                                     \
  ((ws__u8_class[((b) >> 1) & 63] >> ((b) & 1) * 4) & (0u - ((b) >> 7)) & 15u)
#endif

#if !WS_SMALL
static uint64_t ws__u8_step(uint64_t st, unsigned b) {
  return ws__u8_row[WS__U8_CLASS(b)] >> (st & 63);
}
#endif

#ifdef WS__U8_SIMD
/*
 * Checks p[i..len) 64 bytes at a time while 64 remain; i >= 3 and p[i-3..i)
 * end a valid prefix at a character boundary. Returns the end of the checked
 * part: len is reached only through whole 64-byte blocks, and the first
 * block with an error is where it stops (the caller then finds the exact
 * byte). A block of ASCII, with no sequence running into it, is skipped
 * after one test.
 */
static size_t ws__u8_simd(const unsigned char *p, size_t i, size_t len) {
  ws__v16 tail = WS__V_ZERO();
  while (len - i >= 64) {
    const unsigned char *q = p + i;
    ws__v16 a = WS__V_LOAD(q), b = WS__V_LOAD(q + 16);
    ws__v16 c = WS__V_LOAD(q + 32), d = WS__V_LOAD(q + 48), err, hi, lo;
    const ws__v16 c0 = WS__V_SPLAT(0xC0);
    if (!WS__V_ANY(WS__V_OR(tail, WS__V_OR(WS__V_OR(a, b), WS__V_OR(c, d))))) {
      i += 64;
      continue;
    }
    /* F5..FF: the largest byte; C0, C1: the smallest byte ^ C0 is 0 or 1.
     * Then each 16 bytes, loaded again with the 3 bytes before them. */
    hi = WS__V_MAX(WS__V_MAX(a, b), WS__V_MAX(c, d));
    lo = WS__V_MIN(WS__V_MIN(WS__V_XOR(a, c0), WS__V_XOR(b, c0)),
                   WS__V_MIN(WS__V_XOR(c, c0), WS__V_XOR(d, c0)));
    err = WS__V_OR(WS__V_GE(hi, WS__V_SPLAT(0xF5)),
                   WS__V_GE(WS__V_SPLAT(1), lo));
    tail = WS__V_TAIL(d);
    err = WS__V_OR(err, WS__V_CHECK(q));
    err = WS__V_OR(err, WS__V_CHECK(q + 16));
    err = WS__V_OR(err, WS__V_CHECK(q + 32));
    err = WS__V_OR(err, WS__V_CHECK(q + 48));
    if (WS__V_ANY(err)) break;
    i += 64;
  }
  return i;
}
#endif

/* see ws.h */
int ws_utf8_check(uint32_t *state, const void *buf, size_t len, int final,
                  size_t *bad_at) {
  const unsigned char *p = (const unsigned char *)buf;
  uint64_t st;
  size_t i = 0;
  if (state == NULL || (buf == NULL && len > 0)) return WS_EINVAL;
  st = *state;
#ifdef WS__U8_SIMD
  /* Long input: finish a sequence carried in, and reach byte 3 (the vector
   * loop looks three bytes back); then the vector loop, which stops at a
   * block boundary: back up to the start of the character that may cross
   * it. */
  if (len >= 64 + 3 + 6) {
    while (st != WS__U8_OK || i < 3) {
      st = ws__u8_step(st, p[i]) & 63;
      if (st == WS__U8_BAD) goto bad;
      i++;
    }
    if (len - i >= 64) {
      size_t from = i, k;
      i = ws__u8_simd(p, i, len);
      if (i > from) {
        for (k = 0; k < 3 && (p[i - 1] & 0xC0) == 0x80; k++) i--;
        if (p[i - 1] >= 0xC0) i--;
      }
    }
  }
#endif
#if WS_SMALL
  /* A byte at a time, without tables: the state is the code point so far
   * (above bit 3), a flag for "the next byte is the first continuation of
   * a 3- or 4-byte sequence" (bit 2) and the continuation bytes due (bits
   * 0-1); 0 between characters, WS__U8_BAD (due 0, not 0) after an error.
   * The first continuation byte gives the bits that rule out overlongs,
   * surrogates and values over U+10FFFF: the same byte fails as in the
   * tables of the fast build. */
  {
    uint32_t s = (uint32_t)st, due, cp;
    if (s == WS__U8_BAD && len > 0) goto bad;
    for (; i < len; i++) {
      unsigned b = p[i];
      due = s & 3;
      if (due == 0) {
        if (b < 0x80) continue;
        if (b < 0xC2 || b > 0xF4) goto bad;
        due = b < 0xE0 ? 1 : b < 0xF0 ? 2 : 3;
        s = (b & (0x3Fu >> due)) << 3 | (due > 1) << 2 | due;
        continue;
      }
      if ((b & 0xC0) != 0x80) goto bad;
      cp = (s >> 3) << 6 | (b & 0x3F);
      if ((s & 4) && (due == 2 ? cp < 0x20 || cp >> 5 == 0x1B /* D800 */
                               : cp < 0x10 || cp > 0x10F))
        goto bad;
      s = --due ? cp << 3 | due : 0;
    }
    st = s;
  }
#else
  while (i < len) {
    size_t n, k;
    uint64_t s;
    if (st == WS__U8_OK) {
      /* ASCII runs, eight bytes at a time. */
      while (len - i >= 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        if (w & UINT64_C(0x8080808080808080)) break;
        i += 8;
      }
      while (i < len && p[i] < 0x80) i++;
      if (i == len) break;
    }
    /* Four bytes through the DFA without a branch (long enough for most
     * characters, short enough to get back to the ASCII loop soon); if that
     * fails, again one at a time to find the byte. */
    n = WS__MIN(len - i, 4);
    s = st;
    for (k = 0; k < n; k++) s = ws__u8_step(s, p[i + k]);
    if ((s & 63) == WS__U8_BAD) {
      for (;; i++) {
        st = ws__u8_step(st, p[i]) & 63;
        if (st == WS__U8_BAD) goto bad;
      }
    }
    st = s & 63;
    i += n;
  }
#endif
  *state = (uint32_t)st;
  if (final && st != WS__U8_OK) {
    if (bad_at) *bad_at = len;
    return WS_EUTF8;
  }
  return WS_OK;
bad:
  *state = WS__U8_BAD;
  if (bad_at) *bad_at = i;
  return WS_EUTF8;
}
