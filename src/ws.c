/*
 * ws.c - an embeddable WebSocket (RFC 6455) library. See ws.h.
 *
 * Sections, each using only what comes before it:
 *   0. configuration and includes
 *   1. utilities
 *   2. SHA-1, Base64, UTF-8
 *   3. layer 0: frame codec, close payloads, handshake
 *   4. layer 1: the connection
 *   5. TLS over mbedTLS (WS_ENABLE_MBEDTLS)
 *   6. layer 2: the event loop
 */

/* ======================================================================
 * 0. Configuration and includes
 * ==================================================================== */

#if !defined(_POSIX_C_SOURCE) && !defined(_GNU_SOURCE)
#if defined(__linux__)
#define _GNU_SOURCE 1 /* POSIX 2008 and accept4() */
#else
#define _POSIX_C_SOURCE 200809L
#endif
#endif
#if defined(__APPLE__) && !defined(_DARWIN_C_SOURCE)
#define _DARWIN_C_SOURCE 1
#endif

#include "ws.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if WS_VERSION_MAJOR != 0 || WS_VERSION_MINOR != 1 || WS_VERSION_PATCH != 0
#error "ws.c and ws.h are from different versions"
#endif

/* Compile-time defaults; ws_config_init() copies them into each config. */
#ifndef WS_MAX_HANDSHAKE
#define WS_MAX_HANDSHAKE 8192
#endif
#ifndef WS_MAX_HEADERS
#define WS_MAX_HEADERS 32 /* also the size of a stack array: keep it small */
#endif
#ifndef WS_MAX_FRAME
#define WS_MAX_FRAME (16u * 1024 * 1024)
#endif
#ifndef WS_MAX_MESSAGE
#define WS_MAX_MESSAGE (16u * 1024 * 1024)
#endif
#ifndef WS_MAX_QUEUED
#define WS_MAX_QUEUED (16u * 1024 * 1024 + 1024)
#endif
#ifndef WS_HANDSHAKE_TIMEOUT_MS
#define WS_HANDSHAKE_TIMEOUT_MS 10000
#endif
#ifndef WS_CLOSE_TIMEOUT_MS
#define WS_CLOSE_TIMEOUT_MS 5000
#endif
#ifndef WS_PONG_TIMEOUT_MS
#define WS_PONG_TIMEOUT_MS 10000
#endif
/* Read size the input buffer makes room for, and the size past which an
 * empty buffer is given back to the allocator. 0 gives back every empty
 * buffer: an idle connection then holds no buffer at all, which is what a
 * server with many mostly-quiet connections wants; raise it to trade
 * memory for fewer allocator calls on busy ones. */
#ifndef WS_READ_CHUNK
#define WS_READ_CHUNK 4096
#endif
/* Bytes of stack that input processing lends the output queue, when the
 * connection has none, so that replies made while it runs need no
 * allocation when they all leave at its end (see ws__end_batch); 0: none. */
#ifndef WS_BATCH_STACK
#ifdef WS_NO_MALLOC
#define WS_BATCH_STACK 0
#else
#define WS_BATCH_STACK 2048
#endif
#endif

#ifndef WS_KEEP_BUFFER
#define WS_KEEP_BUFFER 0
#endif
/* Queued bytes past which a batch of replies is flushed early. */
#ifndef WS_BATCH_FLUSH
#define WS_BATCH_FLUSH (64u * 1024)
#endif

/* TLS (section 5): 1 to build the mbedTLS transport (link -lmbedtls
 * -lmbedx509 -lmbedcrypto). The Makefile sets it when mbedTLS is found. */
#ifndef WS_ENABLE_MBEDTLS
#define WS_ENABLE_MBEDTLS 0
#endif

#if WS_MAX_HEADERS > 255 || WS_MAX_HEADERS < 8
#error "WS_MAX_HEADERS must be 8..255"
#endif

/* The OS random source exists on hosted Unix-like systems. Firmware builds
 * (no __unix__, or WS_NO_OS) pass their own through ws_callbacks.random. */
#if !defined(WS_NO_OS) && (defined(__unix__) || defined(__APPLE__))
#define WS__HAVE_OS 1
#else
#define WS__HAVE_OS 0
#endif

#if WS__HAVE_OS
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#if defined(__linux__)
#include <sys/random.h>
#endif
#endif

#ifndef WS_NO_MALLOC
#include <stdlib.h>
#endif

#ifndef WS_ASSERT
#include <assert.h>
#define WS_ASSERT(x) assert(x)
#endif

/* ======================================================================
 * 1. Utilities
 * ==================================================================== */

#define WS__MIN(a, b) ((a) < (b) ? (a) : (b))
#define WS__MAX(a, b) ((a) > (b) ? (a) : (b))
#define WS__NONE UINT64_MAX

static uint16_t ws__get16(const unsigned char *p) {
  return (uint16_t)((p[0] << 8) | p[1]);
}

static uint32_t ws__get32(const unsigned char *p) {
  return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) |
         ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}

static void ws__put32(unsigned char *p, uint32_t v) {
  p[0] = (unsigned char)(v >> 24);
  p[1] = (unsigned char)(v >> 16);
  p[2] = (unsigned char)(v >> 8);
  p[3] = (unsigned char)v;
}

static int ws__lower(int ch) {
  return (ch >= 'A' && ch <= 'Z') ? ch + ('a' - 'A') : ch;
}

/* Case-insensitive comparison of a counted string with a C string. */
static int ws__ieq(const char *s, size_t n, const char *lit) {
  size_t i;
  for (i = 0; i < n; i++) {
    if (lit[i] == '\0' || ws__lower((unsigned char)s[i]) !=
                              ws__lower((unsigned char)lit[i]))
      return 0;
  }
  return lit[n] == '\0';
}

/* RFC 9110 tchar: letters, digits and !#$%&'*+-.^_`|~ (a bit per ASCII
 * character). */
static const unsigned char ws__tchar_map[16] = {
    0x00, 0x00, 0x00, 0x00, 0xFA, 0x6C, 0xFF, 0x03,
    0xFE, 0xFF, 0xFF, 0xC7, 0xFF, 0xFF, 0xFF, 0x57};
#define WS__TCHAR(ch) ((ch) < 128 && (ws__tchar_map[(ch) >> 3] >> ((ch) & 7)) & 1)

static int ws__is_token(const char *s, size_t n) {
  size_t i;
  if (n == 0) return 0;
  for (i = 0; i < n; i++) {
    unsigned ch = (unsigned char)s[i];
    if (!WS__TCHAR(ch)) return 0;
  }
  return 1;
}

/* A header value the application supplies: no CR, LF or NUL. */
static int ws__safe_value(const char *s, size_t n) {
  size_t i;
  for (i = 0; i < n; i++)
    if (s[i] == '\r' || s[i] == '\n' || s[i] == '\0') return 0;
  return 1;
}

/* Iterates the elements of an HTTP comma list, trimming spaces and tabs and
 * skipping empty elements. Returns 1 with *tok and *tok_len set, 0 at the end. */
static int ws__list_next(const char **pos, const char *end, const char **tok,
                         size_t *tok_len) {
  const char *p = *pos;
  while (p < end) {
    const char *s, *e;
    while (p < end && (*p == ' ' || *p == '\t' || *p == ',')) p++;
    s = p;
    while (p < end && *p != ',') p++;
    e = p;
    while (e > s && (e[-1] == ' ' || e[-1] == '\t')) e--;
    if (e > s) {
      *tok = s;
      *tok_len = (size_t)(e - s);
      *pos = p;
      return 1;
    }
  }
  *pos = end;
  return 0;
}

static int ws__list_has(const char *v, size_t n, const char *lit) {
  const char *pos = v, *tok;
  size_t len;
  while (ws__list_next(&pos, v + n, &tok, &len))
    if (ws__ieq(tok, len, lit)) return 1;
  return 0;
}

/* A small writer that appends to a bounded buffer and remembers overflow. */
typedef struct ws__wbuf {
  char *p;
  size_t cap, len;
  int over;
} ws__wbuf;

static void ws__wr(ws__wbuf *w, const char *s, size_t n) {
  if (w->over || w->cap - w->len < n) {
    w->over = 1;
    return;
  }
  memcpy(w->p + w->len, s, n);
  w->len += n;
}

static void ws__wrs(ws__wbuf *w, const char *s) { ws__wr(w, s, strlen(s)); }

#ifndef WS_NO_SERVER
static void ws__wr_uint(ws__wbuf *w, uint64_t v) {
  char tmp[21];
  size_t i = sizeof tmp;
  do {
    tmp[--i] = (char)('0' + v % 10);
    v /= 10;
  } while (v && i > 0);
  ws__wr(w, tmp + i, sizeof tmp - i);
}
#endif

/* ======================================================================
 * 2. SHA-1 (FIPS 180-4), Base64 (RFC 4648), UTF-8 (RFC 3629)
 * ==================================================================== */

typedef struct ws__sha1 {
  uint32_t h[5];
  uint64_t bytes;
  unsigned char block[64];
  size_t fill;
} ws__sha1;

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
  uint64_t bits = s->bytes * 8;
  int i;
  s->block[s->fill++] = 0x80; /* fill < 64: update leaves no full block */
  if (s->fill > 56) {
    memset(s->block + s->fill, 0, 64 - s->fill);
    ws__sha1_block(s->h, s->block);
    s->fill = 0;
  }
  memset(s->block + s->fill, 0, 56 - s->fill);
  for (i = 0; i < 8; i++) s->block[56 + i] = (unsigned char)(bits >> (56 - 8 * i));
  ws__sha1_block(s->h, s->block);
  for (i = 0; i < 5; i++) ws__put32(out + 4 * i, s->h[i]);
}

static const char ws__b64[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Encodes n bytes; writes 4 * ceil(n / 3) characters (no NUL). */
static size_t ws__b64_encode(const unsigned char *in, size_t n, char *out) {
  size_t i, o = 0;
  for (i = 0; i + 2 < n; i += 3) {
    uint32_t v = ((uint32_t)in[i] << 16) | ((uint32_t)in[i + 1] << 8) | in[i + 2];
    out[o++] = ws__b64[(v >> 18) & 63];
    out[o++] = ws__b64[(v >> 12) & 63];
    out[o++] = ws__b64[(v >> 6) & 63];
    out[o++] = ws__b64[v & 63];
  }
  if (i < n) {
    uint32_t v = (uint32_t)in[i] << 16;
    if (i + 1 < n) v |= (uint32_t)in[i + 1] << 8;
    out[o++] = ws__b64[(v >> 18) & 63];
    out[o++] = ws__b64[(v >> 12) & 63];
    out[o++] = (i + 1 < n) ? ws__b64[(v >> 6) & 63] : '=';
    out[o++] = '=';
  }
  return o;
}

#ifndef WS_NO_SERVER
static int ws__b64_val(int ch) {
  if (ch >= 'A' && ch <= 'Z') return ch - 'A';
  if (ch >= 'a' && ch <= 'z') return ch - 'a' + 26;
  if (ch >= '0' && ch <= '9') return ch - '0' + 52;
  if (ch == '+') return 62;
  if (ch == '/') return 63;
  return -1;
}

/* Strict decoding: length a multiple of 4, padding only at the end, and
 * unused bits zero (so each byte string has exactly one encoding). Returns
 * the decoded length, or -1 when invalid or longer than cap. */
static long ws__b64_decode(const char *in, size_t n, unsigned char *out,
                           size_t cap) {
  size_t i, o = 0, pad = 0;
  if (n % 4 != 0) return -1;
  if (n >= 1 && in[n - 1] == '=') pad++;
  if (n >= 2 && in[n - 2] == '=') pad++;
  for (i = 0; i < n; i += 4) {
    int v[4], k;
    uint32_t w;
    for (k = 0; k < 4; k++) {
      int last = (i + 4 == n);
      if (last && k >= 4 - (int)pad) {
        v[k] = 0;
        continue;
      }
      v[k] = ws__b64_val((unsigned char)in[i + k]);
      if (v[k] < 0) return -1;
    }
    w = ((uint32_t)v[0] << 18) | ((uint32_t)v[1] << 12) |
        ((uint32_t)v[2] << 6) | (uint32_t)v[3];
    if (i + 4 == n && pad == 2 && (w & 0xFFFF)) return -1;
    if (i + 4 == n && pad == 1 && (w & 0xFF)) return -1;
    for (k = 0; k < 3 - (i + 4 == n ? (int)pad : 0); k++) {
      if (o >= cap) return -1;
      out[o++] = (unsigned char)(w >> (16 - 8 * k));
    }
  }
  return (long)o;
}
#endif

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

static const uint64_t ws__u8_row[12] = {
    WS__U8_LEAD(WS__U8_OK), /* 0: 00..7F */
    WS__U8_ROW(WS__U8_BAD, WS__U8_OK, WS__U8_C1, WS__U8_BAD, WS__U8_C1,
               WS__U8_C2, WS__U8_BAD, WS__U8_C2), /* 1: 80..8F */
    WS__U8_ROW(WS__U8_BAD, WS__U8_OK, WS__U8_C1, WS__U8_BAD, WS__U8_C1,
               WS__U8_C2, WS__U8_C2, WS__U8_BAD), /* 2: 90..9F */
    WS__U8_ROW(WS__U8_BAD, WS__U8_OK, WS__U8_C1, WS__U8_C1, WS__U8_BAD,
               WS__U8_C2, WS__U8_C2, WS__U8_BAD), /* 3: A0..BF */
    WS__U8_LEAD(WS__U8_C1),                       /* 4: C2..DF */
    WS__U8_LEAD(WS__U8_E0),                       /* 5: E0 */
    WS__U8_LEAD(WS__U8_C2),                       /* 6: E1..EC, EE, EF */
    WS__U8_LEAD(WS__U8_ED),                       /* 7: ED */
    WS__U8_LEAD(WS__U8_F0),                       /* 8: F0 */
    WS__U8_LEAD(WS__U8_C3),                       /* 9: F1..F3 */
    WS__U8_LEAD(WS__U8_F4),                       /* 10: F4 */
    WS__U8_LEAD(WS__U8_BAD)                       /* 11: C0, C1, F5..FF */
};

#if !defined(WS_NO_SIMD) && defined(__SSE2__)
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

#elif !defined(WS_NO_SIMD) && defined(__ARM_NEON) && defined(__aarch64__)
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
#else
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

static uint64_t ws__u8_step(uint64_t st, unsigned b) {
  return ws__u8_row[WS__U8_CLASS(b)] >> (st & 63);
}

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

/* ======================================================================
 * 3. Layer 0: frame codec, close payloads, handshake
 * ==================================================================== */

/* see ws.h */
const char *ws_version(void) { return "0.1.0"; }

/* see ws.h */
const char *ws_strerror(int err) {
  switch (err) {
#define WS__ERR_STR(name, val, text) \
  case (val):                        \
    return text;
    WS_ERRNO_MAP(WS__ERR_STR)
#undef WS__ERR_STR
  }
  return "unknown error";
}

/* see ws.h */
const char *ws_errname(int err) {
  switch (err) {
#define WS__ERR_NAME(name, val, text) \
  case (val):                         \
    return #name;
    WS_ERRNO_MAP(WS__ERR_NAME)
#undef WS__ERR_NAME
  }
  return "UNKNOWN";
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
  if (l7 == 126) {
    n = ws__get16(p + 2);
    if (n < 126) return WS_EPROTO; /* not minimal */
  } else if (l7 == 127) {
    n = ((uint64_t)ws__get32(p + 2) << 32) | ws__get32(p + 6);
    if (n >> 63) return WS_EPROTO;
    if (n <= 0xFFFF) return WS_EPROTO; /* not minimal */
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
  p[0] = (unsigned char)((fin ? 0x80 : 0) | opcode);
  if (len < 126) {
    p[1] = (unsigned char)len;
    n = 2;
  } else if (len <= 0xFFFF) {
    p[1] = 126;
    p[2] = (unsigned char)(len >> 8);
    p[3] = (unsigned char)len;
    n = 4;
  } else {
    int i;
    p[1] = 127;
    for (i = 0; i < 8; i++) p[2 + i] = (unsigned char)(len >> (56 - 8 * i));
    n = 10;
  }
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
  if (len < 8) {
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

static const char ws__guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/* see ws.h */
int ws_accept_key(const char *key, size_t key_len, char out[29]) {
  ws__sha1 s;
  unsigned char md[20];
  if (key == NULL || out == NULL || key_len > 64) return WS_EINVAL;
  ws__sha1_init(&s);
  ws__sha1_update(&s, key, key_len);
  ws__sha1_update(&s, ws__guid, sizeof ws__guid - 1);
  ws__sha1_final(&s, md);
  ws__b64_encode(md, 20, out);
  out[WS_ACCEPT_LEN] = '\0';
  return WS_OK;
}

/* Finds the blank line that ends an HTTP head. Returns the head length
 * (through "\r\n\r\n"), or 0 if buf does not hold it yet. */
static size_t ws__head_end(const char *p, size_t len, size_t from) {
  size_t i = from >= 3 ? from - 3 : 0;
  for (; i + 3 < len; i++) {
    const char *q = (const char *)memchr(p + i, '\r', len - 3 - i);
    if (q == NULL) return 0;
    i = (size_t)(q - p);
    if (q[1] == '\n' && q[2] == '\r' && q[3] == '\n') return i + 4;
  }
  return 0;
}

/* Lines end in CRLF. A bare LF is refused at once: a peer that only sends
 * LF would otherwise stall the handshake waiting for CRLF CRLF, and a
 * lenient reading could split headers differently from a proxy's. */
static int ws__bare_lf_from(const unsigned char *p, size_t n, size_t from) {
  const unsigned char *q = p + from, *end = p + n;
  if (from >= n) return 0;
  while ((q = (const unsigned char *)memchr(q, '\n', (size_t)(end - q))) !=
         NULL) {
    if (q == p || q[-1] != '\r') return 1;
    q++;
  }
  return 0;
}

static int ws__bare_lf(const char *p, size_t n) {
  return ws__bare_lf_from((const unsigned char *)p, n, 0);
}

/* Parses header lines from p (just after the start line) to the blank line.
 * Returns 0, 400 (syntax) or 431 (too many). */
static int ws__parse_headers(const char *p, const char *end, ws_header *h,
                             size_t max, size_t *count) {
  size_t n = 0;
  for (;;) {
    const char *eol, *colon, *v, *ve;
    if (end - p < 2) return 400;
    if (p[0] == '\r' && p[1] == '\n') break;
    eol = (const char *)memchr(p, '\r', (size_t)(end - p));
    if (eol == NULL || eol + 1 >= end || eol[1] != '\n') return 400;
    colon = (const char *)memchr(p, ':', (size_t)(eol - p));
    if (colon == NULL || !ws__is_token(p, (size_t)(colon - p))) return 400;
    v = colon + 1;
    while (v < eol && (*v == ' ' || *v == '\t')) v++;
    ve = eol;
    while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t')) ve--;
    {
      const char *q;
      for (q = v; q < ve; q++) {
        unsigned char ch = (unsigned char)*q;
        if ((ch < 0x20 && ch != '\t') || ch == 0x7F) return 400;
      }
    }
    if (n == max) return 431;
    h[n].name = p;
    h[n].name_len = (size_t)(colon - p);
    h[n].value = v;
    h[n].value_len = (size_t)(ve - v);
    n++;
    p = eol + 2;
  }
  *count = n;
  return 0;
}

/* The single header of that name: 1 and *out if exactly one, 0 if none,
 * -1 if repeated. */
static int ws__one_header(const ws_header *h, size_t n, const char *name,
                          const ws_header **out) {
  size_t i, len = strlen(name);
  int found = 0;
  for (i = 0; i < n; i++) {
    if (h[i].name_len == len && ws__ieq(h[i].name, len, name)) {
      if (found) return -1;
      *out = &h[i];
      found = 1;
    }
  }
  return found;
}

/* Does any header of that name hold the token in its comma list? */
static int ws__headers_have_token(const ws_header *h, size_t n,
                                  const char *name, const char *tok) {
  size_t i, len = strlen(name);
  for (i = 0; i < n; i++)
    if (h[i].name_len == len && ws__ieq(h[i].name, len, name) &&
        ws__list_has(h[i].value, h[i].value_len, tok))
      return 1;
  return 0;
}

#ifndef WS_NO_SERVER
/* see ws.h */
int ws_request_parse(const void *buf, size_t len, ws_request *req,
                     ws_header *headers, size_t max_headers, size_t *consumed,
                     int *status) {
  const char *p = (const char *)buf, *end, *sp1, *sp2, *eol;
  const ws_header *h;
  size_t head, i;
  int rc, st;
  unsigned char key[18];
  if (req == NULL || consumed == NULL || status == NULL ||
      (buf == NULL && len > 0) || (headers == NULL && max_headers > 0))
    return WS_EINVAL;
  memset(req, 0, sizeof *req);
  *status = 400;
  /* Fail fast on bytes that cannot start a request line. */
  for (i = 0; i < len && p[i] != ' '; i++)
    if (!WS__TCHAR((unsigned char)p[i])) return WS_EHANDSHAKE;
  head = ws__head_end(p, len, 0);
  if (ws__bare_lf(p, head ? head : len)) return WS_EHANDSHAKE;
  if (head == 0) return WS_EAGAIN;
  end = p + head;
  /* Request line: method SP target SP HTTP/1.x CRLF */
  eol = (const char *)memchr(p, '\r', head);
  sp1 = (const char *)memchr(p, ' ', (size_t)(eol - p));
  if (sp1 == NULL || sp1 == p) return WS_EHANDSHAKE;
  sp2 = (const char *)memchr(sp1 + 1, ' ', (size_t)(eol - sp1 - 1));
  if (sp2 == NULL || sp2 == sp1 + 1) return WS_EHANDSHAKE;
  for (i = 0; sp1 + 1 + i < sp2; i++) {
    unsigned char ch = (unsigned char)sp1[1 + i];
    if (ch <= 0x20 || ch == 0x7F) return WS_EHANDSHAKE;
  }
  if (eol - sp2 != 9 || memcmp(sp2 + 1, "HTTP/1.", 7) != 0 || sp2[8] < '0' ||
      sp2[8] > '9')
    return WS_EHANDSHAKE;
  st = ws__parse_headers(eol + 2, end, headers, max_headers, &req->num_headers);
  if (st != 0) {
    req->num_headers = 0;
    *status = st;
    return WS_EHANDSHAKE;
  }
  req->method = p;
  req->method_len = (size_t)(sp1 - p);
  req->path = sp1 + 1;
  req->path_len = (size_t)(sp2 - sp1 - 1);
  req->minor_version = sp2[8] - '0';
  req->headers = headers;
  *consumed = head;
  if ((rc = ws__one_header(headers, req->num_headers, "host", &h)) == 1) {
    req->host = h->value;
    req->host_len = h->value_len;
  }
  if (rc != 1) return WS_EHANDSHAKE; /* RFC 9112: exactly one Host */
  if (ws__one_header(headers, req->num_headers, "origin", &h) == 1) {
    req->origin = h->value;
    req->origin_len = h->value_len;
  }
  req->upgrade = ws__headers_have_token(headers, req->num_headers, "upgrade",
                                        "websocket");
  if (!req->upgrade) return WS_EHANDSHAKE;
  if (req->method_len != 3 || memcmp(req->method, "GET", 3) != 0 ||
      req->minor_version < 1)
    return WS_EHANDSHAKE;
  if (!ws__headers_have_token(headers, req->num_headers, "connection",
                              "upgrade"))
    return WS_EHANDSHAKE;
  rc = ws__one_header(headers, req->num_headers, "sec-websocket-version", &h);
  if (rc == 0) return WS_EHANDSHAKE;
  if (rc < 0 || h->value_len != 2 || memcmp(h->value, "13", 2) != 0) {
    *status = 426;
    return WS_EHANDSHAKE;
  }
  if (ws__one_header(headers, req->num_headers, "sec-websocket-key", &h) != 1)
    return WS_EHANDSHAKE;
  if (ws__b64_decode(h->value, h->value_len, key, sizeof key) != 16)
    return WS_EHANDSHAKE;
  req->key = h->value;
  req->key_len = h->value_len;
  *status = 101;
  return WS_OK;
}

/* see ws.h */
const ws_header *ws_request_header(const ws_request *req, const char *name) {
  size_t i;
  if (req == NULL || name == NULL) return NULL;
  for (i = 0; i < req->num_headers; i++)
    if (ws__ieq(req->headers[i].name, req->headers[i].name_len, name))
      return &req->headers[i];
  return NULL;
}

/* Walks the offered subprotocols; returns how many, and the i-th in *tok. */
static size_t ws__protocols(const ws_request *req, size_t want,
                            const char **tok, size_t *tok_len) {
  size_t i, count = 0;
  for (i = 0; i < req->num_headers; i++) {
    const ws_header *h = &req->headers[i];
    const char *pos = h->value, *t;
    size_t n;
    if (!ws__ieq(h->name, h->name_len, "sec-websocket-protocol")) continue;
    while (ws__list_next(&pos, h->value + h->value_len, &t, &n)) {
      if (count == want && tok) {
        *tok = t;
        *tok_len = n;
      }
      count++;
    }
  }
  return count;
}

/* see ws.h */
size_t ws_request_protocol_count(const ws_request *req) {
  if (req == NULL) return 0;
  return ws__protocols(req, (size_t)-1, NULL, NULL);
}

/* see ws.h */
int ws_request_protocol(const ws_request *req, size_t i, const char **name,
                        size_t *name_len) {
  if (req == NULL || name == NULL || name_len == NULL) return WS_EINVAL;
  if (ws__protocols(req, i, name, name_len) <= i) return WS_EINVAL;
  return WS_OK;
}
#endif /* WS_NO_SERVER */

static int ws__wr_extra(ws__wbuf *w, const ws_header *extra, size_t n) {
  size_t i;
  if (n > 0 && extra == NULL) return WS_EINVAL;
  for (i = 0; i < n; i++) {
    const ws_header *h = &extra[i];
    if (h->name == NULL || !ws__is_token(h->name, h->name_len) ||
        (h->value == NULL && h->value_len > 0) ||
        !ws__safe_value(h->value, h->value_len))
      return WS_EINVAL;
    ws__wr(w, h->name, h->name_len);
    ws__wrs(w, ": ");
    if (h->value_len) ws__wr(w, h->value, h->value_len);
    ws__wrs(w, "\r\n");
  }
  return WS_OK;
}

#ifndef WS_NO_SERVER
/* see ws.h */
int ws_response_write(void *out, size_t cap, const char *key, size_t key_len,
                      const char *protocol, const ws_header *extra,
                      size_t n_extra, size_t *out_len) {
  ws__wbuf w;
  char accept[29];
  if (out == NULL || out_len == NULL || key == NULL) return WS_EINVAL;
  if (ws_accept_key(key, key_len, accept) != WS_OK) return WS_EINVAL;
  if (protocol && !ws__is_token(protocol, strlen(protocol))) return WS_EINVAL;
  w.p = (char *)out, w.cap = cap, w.len = 0, w.over = 0;
  ws__wrs(&w,
          "HTTP/1.1 101 Switching Protocols\r\n"
          "Upgrade: websocket\r\n"
          "Connection: Upgrade\r\n"
          "Sec-WebSocket-Accept: ");
  ws__wr(&w, accept, WS_ACCEPT_LEN);
  ws__wrs(&w, "\r\n");
  if (protocol) {
    ws__wrs(&w, "Sec-WebSocket-Protocol: ");
    ws__wrs(&w, protocol);
    ws__wrs(&w, "\r\n");
  }
  if (ws__wr_extra(&w, extra, n_extra) != WS_OK) return WS_EINVAL;
  ws__wrs(&w, "\r\n");
  if (w.over) return WS_ENOSPC;
  *out_len = w.len;
  return WS_OK;
}

static const char *ws__reason_phrase(int status) {
  switch (status) {
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 426: return "Upgrade Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    default: return "Error";
  }
}

/* see ws.h */
int ws_http_error_write(void *out, size_t cap, int status, size_t *out_len) {
  ws__wbuf w;
  if (out == NULL || out_len == NULL || status < 400 || status > 599)
    return WS_EINVAL;
  w.p = (char *)out, w.cap = cap, w.len = 0, w.over = 0;
  ws__wrs(&w, "HTTP/1.1 ");
  ws__wr_uint(&w, (unsigned)status);
  ws__wrs(&w, " ");
  ws__wrs(&w, ws__reason_phrase(status));
  ws__wrs(&w, "\r\n");
  if (status == 426) ws__wrs(&w, "Sec-WebSocket-Version: 13\r\n");
  ws__wrs(&w, "Connection: close\r\nContent-Length: 0\r\n\r\n");
  if (w.over) return WS_ENOSPC;
  *out_len = w.len;
  return WS_OK;
}
#endif /* WS_NO_SERVER */

#ifndef WS_NO_CLIENT
/* A request-target or Host value: printable, no spaces. */
static int ws__safe_word(const char *s) {
  for (; *s; s++)
    if ((unsigned char)*s <= 0x20 || *s == 0x7F) return 0;
  return 1;
}

/* see ws.h */
int ws_client_request_write(void *out, size_t cap, const ws_client_opts *o,
                            const uint8_t nonce[16], size_t *out_len) {
  ws__wbuf w;
  char key[24];
  const char *path;
  if (out == NULL || o == NULL || nonce == NULL || out_len == NULL ||
      o->host == NULL || o->host[0] == '\0' || !ws__safe_word(o->host))
    return WS_EINVAL;
  path = (o->path && o->path[0]) ? o->path : "/";
  if (!ws__safe_word(path) ||
      (o->origin && !ws__safe_value(o->origin, strlen(o->origin))))
    return WS_EINVAL;
  if (o->protocols) {
    const char *pos = o->protocols, *t;
    size_t n, len = strlen(o->protocols);
    if (!ws__safe_value(o->protocols, len)) return WS_EINVAL;
    while (ws__list_next(&pos, o->protocols + len, &t, &n))
      if (!ws__is_token(t, n)) return WS_EINVAL;
  }
  ws__b64_encode(nonce, 16, key);
  w.p = (char *)out, w.cap = cap, w.len = 0, w.over = 0;
  ws__wrs(&w, "GET ");
  ws__wrs(&w, path);
  ws__wrs(&w, " HTTP/1.1\r\nHost: ");
  ws__wrs(&w, o->host);
  ws__wrs(&w,
          "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
          "Sec-WebSocket-Key: ");
  ws__wr(&w, key, sizeof key);
  ws__wrs(&w, "\r\nSec-WebSocket-Version: 13\r\n");
  if (o->origin) {
    ws__wrs(&w, "Origin: ");
    ws__wrs(&w, o->origin);
    ws__wrs(&w, "\r\n");
  }
  if (o->protocols && o->protocols[0]) {
    ws__wrs(&w, "Sec-WebSocket-Protocol: ");
    ws__wrs(&w, o->protocols);
    ws__wrs(&w, "\r\n");
  }
  if (ws__wr_extra(&w, o->headers, o->num_headers) != WS_OK) return WS_EINVAL;
  ws__wrs(&w, "\r\n");
  if (w.over) return WS_ENOSPC;
  *out_len = w.len;
  return WS_OK;
}

/* see ws.h */
int ws_response_parse(const void *buf, size_t len, const uint8_t nonce[16],
                      const char *protocols, size_t protocols_len,
                      ws_response *resp, ws_header *headers,
                      size_t max_headers, size_t *consumed) {
  const char *p = (const char *)buf, *eol;
  const ws_header *h;
  size_t head, i;
  int rc;
  char key[24], accept[29];
  if (resp == NULL || consumed == NULL || nonce == NULL ||
      (buf == NULL && len > 0) || (headers == NULL && max_headers > 0) ||
      (protocols == NULL && protocols_len > 0))
    return WS_EINVAL;
  memset(resp, 0, sizeof *resp);
  /* Fail fast when the bytes cannot be an HTTP/1.1 status line. */
  for (i = 0; i < len && i < 9; i++)
    if (p[i] != "HTTP/1.1 "[i]) return WS_EHANDSHAKE;
  head = ws__head_end(p, len, 0);
  if (ws__bare_lf(p, head ? head : len)) return WS_EHANDSHAKE;
  if (head == 0) return WS_EAGAIN;
  eol = (const char *)memchr(p, '\r', head);
  if (eol - p < 12 || p[9] < '1' || p[9] > '5' || p[10] < '0' ||
      p[10] > '9' || p[11] < '0' || p[11] > '9' ||
      (eol - p > 12 && p[12] != ' '))
    return WS_EHANDSHAKE;
  resp->status = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
  if (ws__parse_headers(eol + 2, p + head, headers, max_headers,
                        &resp->num_headers) != 0)
    return WS_EHANDSHAKE;
  resp->headers = headers;
  *consumed = head;
  if (resp->status != 101) return WS_EHANDSHAKE;
  if (!ws__headers_have_token(headers, resp->num_headers, "upgrade",
                              "websocket") ||
      !ws__headers_have_token(headers, resp->num_headers, "connection",
                              "upgrade"))
    return WS_EHANDSHAKE;
  ws__b64_encode(nonce, 16, key);
  ws_accept_key(key, sizeof key, accept);
  if (ws__one_header(headers, resp->num_headers, "sec-websocket-accept", &h) !=
          1 ||
      h->value_len != WS_ACCEPT_LEN ||
      memcmp(h->value, accept, WS_ACCEPT_LEN) != 0)
    return WS_EHANDSHAKE;
  /* We offer no extensions, so the server may not pick any. */
  for (i = 0; i < resp->num_headers; i++)
    if (ws__ieq(headers[i].name, headers[i].name_len,
                "sec-websocket-extensions") &&
        headers[i].value_len > 0)
      return WS_EHANDSHAKE;
  rc = ws__one_header(headers, resp->num_headers, "sec-websocket-protocol", &h);
  if (rc < 0) return WS_EHANDSHAKE;
  if (rc == 1) {
    const char *pos = protocols, *t;
    size_t n;
    int offered = 0;
    if (!ws__is_token(h->value, h->value_len)) return WS_EHANDSHAKE;
    while (protocols && ws__list_next(&pos, protocols + protocols_len, &t, &n))
      if (n == h->value_len && memcmp(t, h->value, n) == 0) offered = 1;
    if (!offered) return WS_EHANDSHAKE;
    resp->protocol = h->value;
    resp->protocol_len = h->value_len;
  }
  return WS_OK;
}
#endif /* WS_NO_CLIENT */

/* ======================================================================
 * 4. Layer 1: the connection
 * ==================================================================== */

/* Bytes an input buffer keeps free beyond a whole message: room for the
 * next frame header and a control frame that may interleave. */
#define WS__IN_RESERVE 256

/* Connection flags. */
enum {
  WS__F_STARTED = 1u << 0,     /* on_close is owed */
  WS__F_NOTIFIED = 1u << 1,    /* on_close has run */
  WS__F_CLOSED = 1u << 2,      /* reached CLOSED; on_close pending */
  WS__F_CLOSE_SENT = 1u << 3,
  WS__F_CLOSE_RCVD = 1u << 4,
  WS__F_FAILING = 1u << 5,     /* flush what is queued, then CLOSED */
  WS__F_FIXED = 1u << 6,       /* caller's buffers: never allocate */
  WS__F_CORK = 1u << 7,        /* caller holds output */
  WS__F_BATCH = 1u << 8,       /* processing input: flush once at the end */
  WS__F_ARM_HS = 1u << 9,      /* timers to arm at the next tick */
  WS__F_ARM_CLOSE = 1u << 10,
  WS__F_ARM_PING = 1u << 11,
  WS__F_PEER_CODE = 1u << 12,  /* close_code came from the peer */
  WS__F_EOF = 1u << 13,        /* the transport reported end of stream */
  WS__F_IN_HTTP = 1u << 14,    /* inside on_http */
  WS__F_PONG_WAIT = 1u << 15,  /* open: t is the pong deadline, not a ping's */
  WS__F_STACK_OUT = 1u << 16   /* the queue is the batch's stack buffer */
};

#define WS__P(c) (&(c)->ws__p)
#define WS__MAX_HDRS(p) WS__MIN((p)->cfg->max_headers, (size_t)WS_MAX_HEADERS)

/* The buffers carry their own bookkeeping, so an idle connection, which
 * holds no buffer, pays for none of it: two NULL pointers. */
struct ws__ibuf {
  size_t cap;          /* bytes at d */
  size_t mstart, mlen; /* the message being assembled */
  size_t rpos, rlen;   /* parsed up to rpos; bytes up to rlen */
  /* The frame being read: payload still to come (while connecting: where
   * the search for the end of the head resumes), the message so far. */
  uint64_t frame_left, msg_total;
  uint32_t utf8;       /* UTF-8 state of the text message being read */
  uint16_t proto_len;  /* client, connecting: bytes of offered protocols */
  uint8_t key[4];      /* the frame's mask key */
  uint8_t op;          /* the frame's opcode (0x0F: continuation; 0: none) */
  uint8_t fin, msg_op; /* the frame's FIN; the message's opcode (0: none) */
  uint8_t off;         /* mask key position */
  unsigned char d[];
};
struct ws__obuf {
  size_t cap, head, len; /* bytes at d; sent up to head; queued up to len */
  unsigned char d[];
};
/* The buffers start 8-byte aligned for their counters. */
typedef char ws__buffer_overhead_ok[sizeof(struct ws__ibuf) + 7 <=
                                            WS_BUFFER_OVERHEAD &&
                                        sizeof(struct ws__obuf) + 7 <=
                                            WS_BUFFER_OVERHEAD
                                    ? 1
                                    : -1];

/* Output bytes not yet written. */
#define WS__QUEUED(p) ((p)->out ? (p)->out->len - (p)->out->head : (size_t)0)

static const ws_callbacks ws__no_callbacks;

static void *ws__realloc(struct ws__conn_priv *p, void *ptr, size_t n) {
  if (p->cfg->realloc) return p->cfg->realloc(ptr, n, p->cfg->alloc_ctx);
#ifndef WS_NO_MALLOC
  if (n == 0) {
    free(ptr);
    return NULL;
  }
  return realloc(ptr, n);
#else
  return NULL;
#endif
}

#ifndef WS_NO_CLIENT
#if WS__HAVE_OS
static int ws__os_random(void *buf, size_t n) {
  unsigned char *p = (unsigned char *)buf;
#if defined(__linux__)
  while (n > 0) {
    ssize_t r = getrandom(p, n, 0);
    if (r < 0) {
      if (errno == EINTR) continue;
      break; /* ENOSYS on old kernels: fall through to /dev/urandom */
    }
    p += r;
    n -= (size_t)r;
  }
  if (n == 0) return WS_OK;
#elif defined(__APPLE__) || defined(__OpenBSD__) || defined(__FreeBSD__) || \
    defined(__NetBSD__) || defined(__DragonFly__)
  arc4random_buf(p, n);
  return WS_OK;
#endif
  {
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return WS_ERANDOM;
    while (n > 0) {
      ssize_t r = read(fd, p, n);
      if (r <= 0) {
        if (r < 0 && errno == EINTR) continue;
        close(fd);
        return WS_ERANDOM;
      }
      p += r;
      n -= (size_t)r;
    }
    close(fd);
    return WS_OK;
  }
}
#endif

static int ws__random(ws_conn *c, void *buf, size_t n) {
  struct ws__conn_priv *p = WS__P(c);
  if (p->cb->random) {
    int rc;
    p->depth++;
    rc = p->cb->random(c, buf, n, p->user);
    p->depth--;
    return rc == WS_OK ? WS_OK : WS_ERANDOM;
  }
#if WS__HAVE_OS
  return ws__os_random(buf, n);
#else
  (void)buf, (void)n;
  return WS_ERANDOM;
#endif
}
#endif /* WS_NO_CLIENT */

/* see ws.h */
void ws_config_init(ws_config *cfg, int role) {
  WS_ASSERT(cfg != NULL);
  memset(cfg, 0, sizeof *cfg);
  cfg->role = role;
  cfg->max_handshake = WS_MAX_HANDSHAKE;
  cfg->max_headers = WS_MAX_HEADERS;
  cfg->max_frame = WS_MAX_FRAME;
  cfg->max_message = WS_MAX_MESSAGE;
  cfg->max_queued = WS_MAX_QUEUED;
  cfg->frame_size = 0;
  cfg->stream = 0;
  cfg->handshake_timeout_ms = WS_HANDSHAKE_TIMEOUT_MS;
  cfg->close_timeout_ms = WS_CLOSE_TIMEOUT_MS;
  cfg->ping_interval_ms = 0;
  cfg->pong_timeout_ms = WS_PONG_TIMEOUT_MS;
}

/* see ws.h */
int ws_conn_init(ws_conn *c, const ws_config *cfg, const ws_callbacks *cb,
                 void *user) {
  struct ws__conn_priv *p;
  if (c == NULL || cfg == NULL ||
#ifdef WS_NO_SERVER
      cfg->role == WS_SERVER ||
#endif
#ifdef WS_NO_CLIENT
      cfg->role == WS_CLIENT ||
#endif
      (cfg->role != WS_SERVER && cfg->role != WS_CLIENT) ||
      cfg->max_handshake < 64 || cfg->max_handshake > 65535)
    return WS_EINVAL;
  p = WS__P(c);
  memset(p, 0, sizeof *p);
  p->cfg = cfg;
  p->cb = cb ? cb : &ws__no_callbacks;
  p->user = user;
  p->t = WS__NONE;
  p->role = (uint8_t)cfg->role;
  p->state = WS_STATE_INIT;
  if (p->role == WS_SERVER) {
    p->state = WS_STATE_CONNECTING;
    p->flags |= WS__F_STARTED | WS__F_ARM_HS;
  }
  return WS_OK;
}

/* see ws.h */
int ws_conn_set_buffers(ws_conn *c, void *in, size_t in_cap, void *out,
                        size_t out_cap) {
  struct ws__conn_priv *p;
  if (c == NULL || in == NULL || out == NULL ||
      in_cap < 2 * WS__IN_RESERVE + WS_BUFFER_OVERHEAD ||
      out_cap < 2 * WS__IN_RESERVE + WS_BUFFER_OVERHEAD)
    return WS_EINVAL;
  p = WS__P(c);
  if (p->in || p->out || p->state > WS_STATE_CONNECTING) return WS_ESTATE;
  /* Each buffer starts with its bookkeeping, aligned for it. */
  {
    size_t ia = (size_t)(-(uintptr_t)in & 7);
    size_t oa = (size_t)(-(uintptr_t)out & 7);
    p->in = (struct ws__ibuf *)(void *)((unsigned char *)in + ia);
    p->out = (struct ws__obuf *)(void *)((unsigned char *)out + oa);
    memset(p->in, 0, sizeof *p->in);
    memset(p->out, 0, sizeof *p->out);
    /* The same capacity whatever the alignment: ia + the header never
     * exceed WS_BUFFER_OVERHEAD. */
    p->in->cap = in_cap - WS_BUFFER_OVERHEAD;
    p->out->cap = out_cap - WS_BUFFER_OVERHEAD;
  }
  p->flags |= WS__F_FIXED;
  return WS_OK;
}

/* Moves to CLOSED. code/err say why; on_close runs when the outermost API
 * call returns (never inside another callback). */
static void ws__set_closed(struct ws__conn_priv *p, int code, int err) {
  if (p->flags & WS__F_CLOSED) return;
  p->flags |= WS__F_CLOSED;
  p->state = WS_STATE_CLOSED;
  if (!(p->flags & WS__F_PEER_CODE)) p->close_code = (uint16_t)code;
  if (err != WS_OK && p->err == WS_OK) p->err = err;
}

/* Runs owed on_close at the end of a public call. Returns rc, or
 * WS_ECLOSED when the connection is now closed (and c may be gone). */
static int ws__done(ws_conn *c, int rc) {
  struct ws__conn_priv *p = WS__P(c);
  const char *reason;
  size_t len;
  if (!(p->flags & WS__F_CLOSED)) return rc;
  if (p->depth) return rc == WS_OK ? WS_ECLOSED : rc;
  if ((p->flags & WS__F_NOTIFIED) || !(p->flags & WS__F_STARTED))
    return WS_ECLOSED;
  p->flags |= WS__F_NOTIFIED;
  if (p->flags & WS__F_PEER_CODE) {
    reason = p->in ? (const char *)p->in->d : "";
    len = p->in ? p->close_len : 0;
  } else {
    reason = ws_strerror(p->err);
    len = strlen(reason);
  }
  if (p->cb->on_close) p->cb->on_close(c, p->close_code, reason, len, p->user);
  return WS_ECLOSED; /* c must not be touched after on_close */
}

/* Output queue --------------------------------------------------------- */

static int ws__out_room(struct ws__conn_priv *p, size_t n);

#if WS_BATCH_STACK
/* Takes the queue off a lent stack buffer: its live bytes move to a heap
 * buffer with room for `more` after them (no bytes and no room: no buffer).
 * Without memory the stack buffer stays the queue. */
static int ws__out_unstack(struct ws__conn_priv *p, size_t more) {
  struct ws__obuf *o = p->out;
  size_t n = o->len - o->head;
  p->out = NULL;
  p->flags &= ~(uint32_t)WS__F_STACK_OUT;
  if (n + more == 0) return WS_OK;
  if (ws__out_room(p, n + more) != WS_OK) {
    p->out = o;
    p->flags |= WS__F_STACK_OUT;
    return WS_ENOMEM;
  }
  memcpy(p->out->d, o->d + o->head, n);
  p->out->len = n;
  return WS_OK;
}
#endif

/* Makes room for n more bytes at the end of the output queue, allocating
 * it when there is none. */
static int ws__out_room(struct ws__conn_priv *p, size_t n) {
  struct ws__obuf *o = p->out, *q;
  size_t need, cap;
  if (o) {
    if (o->cap - o->len >= n) return WS_OK;
    if (o->head > 0) {
      memmove(o->d, o->d + o->head, o->len - o->head);
      o->len -= o->head;
      o->head = 0;
      if (o->cap - o->len >= n) return WS_OK;
    }
    if (p->flags & WS__F_FIXED) return WS_EFULL;
  }
  need = (o ? o->len : 0) + n;
  if (need < n) return WS_ENOMEM;
#if WS_BATCH_STACK
  if (p->flags & WS__F_STACK_OUT) return ws__out_unstack(p, n); /* outgrown */
#endif
  /* The first buffer, counters included, is 1 KiB: small enough for the
   * allocators' per-thread caches (glibc's takes up to 1032 bytes), since
   * it comes and goes with each burst of output. */
  cap = o ? o->cap : 1024 - sizeof *o;
  while (cap < need) cap = cap * 2 < cap ? need : cap * 2;
  if (cap + sizeof *o < cap) return WS_ENOMEM;
  q = (struct ws__obuf *)ws__realloc(p, o, sizeof *o + cap);
  if (q == NULL) return WS_ENOMEM;
  if (o == NULL) q->head = q->len = 0;
  q->cap = cap;
  p->out = q;
  return WS_OK;
}

static void ws__fail(ws_conn *c, int err, int code);

/* Writes queued output through the write callback. */
static int ws__flush(ws_conn *c) {
  struct ws__conn_priv *p = WS__P(c);
  struct ws__obuf *o = p->out;
  if (p->flags & WS__F_CLOSED) return WS_OK;
  while (o && o->head < o->len && !(p->flags & (WS__F_CORK | WS__F_BATCH))) {
    size_t n = 0;
    int rc = WS_EIO;
    if (p->cb->write) {
      p->depth++;
      rc = p->cb->write(c, o->d + o->head, o->len - o->head, &n, p->user);
      p->depth--;
    }
    if (rc == WS_EAGAIN || (rc == WS_OK && n == 0)) break;
    if (rc != WS_OK || n > o->len - o->head) {
      p->err = p->err ? p->err : WS_EIO;
      ws__set_closed(p, WS_CLOSE_ABNORMAL, WS_EIO);
      return WS_EIO;
    }
    o->head += n;
  }
  if (o && o->head == o->len) {
    o->head = o->len = 0;
    if (!(p->flags & (WS__F_FIXED | WS__F_STACK_OUT)) &&
        o->cap > WS_KEEP_BUFFER) {
      ws__realloc(p, o, 0);
      p->out = NULL;
    }
  }
  /* Everything is out: a failing connection, or a server whose closing
   * handshake is complete, is done (the server closes TCP first). */
  if (WS__QUEUED(p) == 0 &&
      ((p->flags & WS__F_FAILING) ||
       (p->role == WS_SERVER &&
        (p->flags & (WS__F_CLOSE_SENT | WS__F_CLOSE_RCVD)) ==
            (WS__F_CLOSE_SENT | WS__F_CLOSE_RCVD))))
    ws__set_closed(p, p->close_code, WS_OK);
  return WS_OK;
}

/* Flushes unless a batch holds output; a batch that grows large is flushed
 * anyway so one read cannot pile up unbounded replies. */
static int ws__maybe_flush(ws_conn *c) {
  struct ws__conn_priv *p = WS__P(c);
  size_t q = WS__QUEUED(p);
  /* Held output that stays held: nothing for ws__flush to do. */
  if (q > 0 && !(p->flags & WS__F_CLOSED) &&
      ((p->flags & WS__F_CORK) ||
       ((p->flags & WS__F_BATCH) && q < WS_BATCH_FLUSH)))
    return WS_OK;
  if ((p->flags & WS__F_BATCH) && q >= WS_BATCH_FLUSH) {
    int rc;
    p->flags &= ~(uint32_t)WS__F_BATCH;
    rc = ws__flush(c);
    p->flags |= WS__F_BATCH;
    return rc;
  }
  return ws__flush(c);
}

/* Appends one frame to a queue known to have room for it. The payload may
 * be NULL when len is 0. */
static int ws__put_frame(ws_conn *c, int fin, int op, const void *data,
                         size_t len) {
  struct ws__conn_priv *p = WS__P(c);
  unsigned char *o = p->out->d + p->out->len;
  size_t hl;
#ifndef WS_NO_CLIENT
  if (p->role == WS_CLIENT) {
    uint8_t key[4];
    int rc;
    if ((rc = ws__random(c, key, 4)) != WS_OK) return rc;
    hl = ws_frame_write(o, fin, op, len, key);
    if (len) memcpy(o + hl, data, len);
    ws_mask(o + hl, len, key, 0);
  } else
#endif
  if (len < 126) { /* the usual small frame: its two bytes here */
    o[0] = (unsigned char)((fin ? 0x80 : 0) | op);
    o[1] = (unsigned char)len;
    hl = 2;
    if (len) memcpy(o + 2, data, len);
  } else {
    hl = ws_frame_write(o, fin, op, len, NULL);
    memcpy(o + hl, data, len);
  }
  p->out->len += hl + len;
  return WS_OK;
}

/* Appends one frame. The payload may be NULL when len is 0. */
static int ws__queue_frame(ws_conn *c, int fin, int op, const void *data,
                           size_t len) {
  int rc;
  if ((rc = ws__out_room(WS__P(c), WS_FRAME_HEADER_MAX + len)) != WS_OK)
    return rc;
  return ws__put_frame(c, fin, op, data, len);
}

static size_t ws__hdr_size(size_t len, int role) {
  return (len < 126 ? 2 : len <= 0xFFFF ? 4 : 10) + (role == WS_CLIENT ? 4 : 0);
}

/* Queues a close frame (code 0: none) and marks it sent. A close frame is
 * small and is queued past max_queued: it must not be lost. */
static int ws__queue_close(ws_conn *c, int code, const char *reason,
                           size_t rlen) {
  struct ws__conn_priv *p = WS__P(c);
  unsigned char body[WS_CONTROL_MAX];
  size_t n = 0;
  int rc;
  if (code) {
    body[0] = (unsigned char)(code >> 8);
    body[1] = (unsigned char)code;
    n = 2;
    if (rlen) memcpy(body + 2, reason, rlen);
    n += rlen;
  }
  p->flags |= WS__F_CLOSE_SENT | WS__F_ARM_CLOSE;
  rc = ws__queue_frame(c, 1, WS_OP_CLOSE, body, n);
  return rc;
}

/* Fails the connection: a close frame with `code` when one may still be
 * sent (code 0: drop the transport at once, 1006), then CLOSED once the
 * output is flushed. Only the first error sticks. */
static void ws__fail(ws_conn *c, int err, int code) {
  struct ws__conn_priv *p = WS__P(c);
  if (p->flags & (WS__F_FAILING | WS__F_CLOSED)) return;
  if (p->err == WS_OK) p->err = err;
  p->flags |= WS__F_FAILING;
  if (code && (p->state == WS_STATE_OPEN || p->state == WS_STATE_CLOSING) &&
      !(p->flags & WS__F_CLOSE_SENT)) {
    p->state = WS_STATE_CLOSING;
    p->close_code = (uint16_t)code;
    if (ws__queue_close(c, code, NULL, 0) != WS_OK)
      ws__set_closed(p, code, err);
    return;
  }
  if (!code || !(p->flags & WS__F_CLOSE_SENT)) {
    ws__set_closed(p, code ? code : WS_CLOSE_ABNORMAL, err);
    return;
  }
  /* A close frame was already sent: finish once it is flushed, reporting
   * why this side gave up. */
  if (!(p->flags & WS__F_PEER_CODE)) p->close_code = (uint16_t)code;
}

/* Input --------------------------------------------------------------- */

/* Makes room for at least `want` bytes at in + rlen, moving live bytes to
 * the front and growing the buffer when allowed. Returns the room (0 when a
 * fixed buffer is full), or a negative error. */
static long ws__in_room(struct ws__conn_priv *p, size_t want) {
  struct ws__ibuf *b = p->in, *q;
  size_t need, cap;
  if (b) {
    if (b->cap - b->rlen >= want)
      return (long)WS__MIN(b->cap - b->rlen, (size_t)0x7FFFFFFF);
    /* Squeeze out what was consumed: the bytes before the message, and the
     * frame headers between its fragments. The peer's close reason, kept at
     * the front for on_close, stays where it is. */
    if (p->state >= WS_STATE_OPEN && !(p->flags & WS__F_CLOSE_RCVD) &&
        (b->mstart > 0 || b->rpos > b->mstart + b->mlen)) {
      if (b->mstart > 0) memmove(b->d, b->d + b->mstart, b->mlen);
      memmove(b->d + b->mlen, b->d + b->rpos, b->rlen - b->rpos);
      b->rlen = b->mlen + (b->rlen - b->rpos);
      b->rpos = b->mlen;
      b->mstart = 0;
      if (b->cap - b->rlen >= want)
        return (long)WS__MIN(b->cap - b->rlen, (size_t)0x7FFFFFFF);
    }
    if (p->flags & WS__F_FIXED)
      return (long)WS__MIN(b->cap - b->rlen, (size_t)0x7FFFFFFF);
  }
  need = (b ? b->rlen : 0) + want;
  cap = b ? b->cap : 1024;
  while (cap < need) cap *= 2;
  q = (struct ws__ibuf *)ws__realloc(p, b, sizeof *b + cap);
  if (q == NULL) return WS_ENOMEM;
  if (b == NULL) memset(q, 0, sizeof *q);
  q->cap = cap;
  p->in = q;
  return (long)WS__MIN(q->cap - q->rlen, (size_t)0x7FFFFFFF);
}

/* Client: the nonce and the offered subprotocols sit at the front of the
 * input buffer until the response has been checked. */
#define WS__CLI_BASE(p) ((size_t)16 + (p)->in->proto_len)

/* How many bytes the next read should have room for. */
static size_t ws__read_want(const struct ws__conn_priv *p) {
  if (p->state == WS_STATE_CONNECTING) {
    size_t base = p->role == WS_CLIENT ? WS__CLI_BASE(p) : 0;
    size_t rlen = p->in ? p->in->rlen : 0, cap = p->in ? p->in->cap : 0;
    size_t used = rlen - base;
    /* Small steps: a head is usually a few hundred bytes, and a client
     * that trickles one should not pin max_handshake bytes. */
    if (used > p->cfg->max_handshake || cap > rlen) return 1;
    return WS__MIN(p->cfg->max_handshake + 1 - used, (size_t)1024);
  }
  if (p->in && p->in->frame_left > WS_READ_CHUNK && !p->cfg->stream)
    return (size_t)WS__MIN(p->in->frame_left, (uint64_t)(1u << 20));
  return WS_READ_CHUNK;
}

static int ws__call_message(ws_conn *c, int op, const void *d, size_t n,
                            int fin) {
  struct ws__conn_priv *p = WS__P(c);
  int rc = 0;
  if (p->cb->on_message) {
    p->depth++;
    rc = p->cb->on_message(c, op, d, n, fin, p->user);
    p->depth--;
  }
  if (rc < 0) {
    ws__fail(c, WS_EAPP, WS_CLOSE_INTERNAL);
    return WS_EAPP;
  }
  return WS_OK;
}

/* A whole control frame sits at in + rpos. */
static int ws__control(ws_conn *c, const ws_frame *f, unsigned char *d) {
  struct ws__conn_priv *p = WS__P(c);
  size_t n = (size_t)f->len;
  if (f->masked) ws_mask(d, n, f->mask, 0);
  if (f->opcode == WS_OP_PING) {
    if (p->cb->on_ping) {
      p->depth++;
      p->cb->on_ping(c, d, n, p->user);
      p->depth--;
    }
    /* Answer unless closing; a peer that pings faster than it reads gets
     * no more pongs once the queue is full (a later ping is answered). */
    if (!(p->flags & (WS__F_CLOSE_SENT | WS__F_FAILING | WS__F_CLOSED)) &&
        WS__QUEUED(p) + n + 14 <= p->cfg->max_queued) {
      int rc = ws__queue_frame(c, 1, WS_OP_PONG, d, n);
      if (rc == WS_ENOMEM) {
        ws__fail(c, rc, WS_CLOSE_INTERNAL);
        return rc;
      }
    }
    return WS_OK;
  }
  if (f->opcode == WS_OP_PONG) {
    if ((p->flags & WS__F_PONG_WAIT) && p->state == WS_STATE_OPEN) {
      /* Answered: the next ping one interval from now. */
      p->flags &= ~(uint32_t)WS__F_PONG_WAIT;
      p->flags |= WS__F_ARM_PING;
    }
    if (p->cb->on_pong) {
      p->depth++;
      p->cb->on_pong(c, d, n, p->user);
      p->depth--;
    }
    return WS_OK;
  }
  /* Close */
  {
    uint16_t code;
    const char *reason;
    size_t rlen;
    int rc = ws_close_parse(d, n, &code, &reason, &rlen);
    if (rc != WS_OK) {
      ws__fail(c, rc, rc == WS_EUTF8 ? WS_CLOSE_INVALID_DATA : WS_CLOSE_PROTOCOL);
      return rc;
    }
    /* Keep the reason at the front of the buffer for on_close. */
    memmove(p->in->d, reason, rlen);
    p->close_len = (uint8_t)rlen;
    p->close_code = code;
    p->flags |= WS__F_CLOSE_RCVD | WS__F_PEER_CODE | WS__F_ARM_CLOSE;
    p->state = WS_STATE_CLOSING;
    p->in->rpos = p->in->rlen = p->in->mstart = rlen;
    p->in->mlen = 0;
    if (!(p->flags & WS__F_CLOSE_SENT)) {
      /* Echo the peer's code (none if it sent none). */
      rc = ws__queue_close(c, code == WS_CLOSE_NO_STATUS ? 0 : code, NULL, 0);
      if (rc != WS_OK) ws__set_closed(p, code, rc);
    }
    return WS_OK;
  }
}

/* Nothing pending in the input buffer: rewind it, and give it back when
 * it is over WS_KEEP_BUFFER (so an idle connection holds none). */
static void ws__in_idle(struct ws__conn_priv *p) {
  struct ws__ibuf *b = p->in;
  if (b == NULL || b->rpos != b->rlen || b->mlen != 0 || b->op != 0 ||
      b->msg_op != 0 || p->state < WS_STATE_OPEN ||
      (p->flags & (WS__F_CLOSE_RCVD | WS__F_CLOSED)))
    return;
  b->rpos = b->rlen = b->mstart = 0;
  if (!(p->flags & WS__F_FIXED) && b->cap > WS_KEEP_BUFFER) {
    ws__realloc(p, b, 0);
    p->in = NULL;
  }
}

/* A data frame of len bytes, after total bytes of its message of which
 * mlen are held, is over a limit: max_frame, max_message, or (fixed
 * buffers, not streaming) what the input buffer can hold. */
static int ws__too_big(const struct ws__conn_priv *p, uint64_t len,
                       uint64_t total, size_t mlen) {
  return len > p->cfg->max_frame || len > p->cfg->max_message - total ||
         (!p->cfg->stream && (p->flags & WS__F_FIXED) &&
          mlen + len + WS__IN_RESERVE > p->in->cap);
}

/* Processes frames in in[rpos..rlen). */
static int ws__frames(ws_conn *c) {
  struct ws__conn_priv *p = WS__P(c);
  while (!(p->flags & (WS__F_CLOSE_RCVD | WS__F_FAILING | WS__F_CLOSED))) {
    if (p->in->op == 0) {
      /* Between frames: parse a header. */
      ws_frame f;
      size_t hl;
      int rc = ws__frame_parse(p->in->d + p->in->rpos, p->in->rlen - p->in->rpos, &f, &hl);
      if (rc == WS_EAGAIN) break;
      if (rc != WS_OK || f.rsv != 0 ||
          f.masked != (p->role == WS_SERVER ? 1 : 0)) {
        ws__fail(c, WS_EPROTO, WS_CLOSE_PROTOCOL);
        return WS_EPROTO;
      }
      if (f.opcode >= 8) {
        if (p->in->rlen - p->in->rpos < hl + f.len) break; /* whole frame first */
        rc = ws__control(c, &f, p->in->d + p->in->rpos + hl);
        if (rc != WS_OK) return rc;
        if (!(p->flags & WS__F_CLOSE_RCVD)) {
          p->in->rpos += hl + (size_t)f.len;
          if (p->in->msg_op == 0) p->in->mstart = p->in->rpos;
        }
        continue;
      }
      if ((f.opcode == WS_OP_CONT) != (p->in->msg_op != 0)) {
        ws__fail(c, WS_EPROTO, WS_CLOSE_PROTOCOL);
        return WS_EPROTO;
      }
      if (f.opcode != WS_OP_CONT) p->in->msg_total = 0;
      if (ws__too_big(p, f.len, p->in->msg_total, p->in->mlen)) {
        ws__fail(c, WS_ETOOBIG, WS_CLOSE_TOO_BIG);
        return WS_ETOOBIG;
      }
      p->in->rpos += hl;
      if (f.opcode != WS_OP_CONT) {
        p->in->msg_op = f.opcode;
        p->in->mstart = p->in->rpos;
        p->in->mlen = 0;
        p->in->utf8 = WS_UTF8_INIT;
      }
      p->in->op = f.opcode == WS_OP_CONT ? 0x0F : f.opcode; /* 0: none */
      p->in->fin = f.fin;
      memcpy(p->in->key, f.mask, 4);
      p->in->frame_left = f.len;
      p->in->off = 0;
    }
    /* Inside a data frame: take what payload is here. */
    {
      size_t avail = (size_t)WS__MIN(p->in->frame_left, (uint64_t)(p->in->rlen - p->in->rpos));
      int last = (avail == p->in->frame_left);
      int done = last && p->in->fin;
      unsigned char *d = p->in->d + p->in->rpos;
      if (avail == 0 && !last) break;
      if (p->role == WS_SERVER) ws_mask(d, avail, p->in->key, p->in->off);
      if (p->in->msg_op == WS_OP_TEXT) {
        size_t bad;
        if (ws_utf8_check(&p->in->utf8, d, avail, done, &bad) != WS_OK) {
          ws__fail(c, WS_EUTF8, WS_CLOSE_INVALID_DATA);
          return WS_EUTF8;
        }
      }
      p->in->frame_left -= avail;
      p->in->off = (uint8_t)((p->in->off + avail) & 3);
      p->in->msg_total += avail;
      p->in->rpos += avail;
      if (p->cfg->stream) {
        /* Deliver the piece now; nothing is kept. An empty piece is only
         * worth a call when it ends the message. */
        int op = p->in->msg_op;
        if (last) p->in->op = 0;
        if (done) p->in->msg_op = 0;
        p->in->mstart = p->in->rpos;
        if (avail > 0 || done) {
          int rc = ws__call_message(c, op, d, avail, done);
          if (rc != WS_OK) return rc;
        }
        continue;
      }
      if (p->in->mstart + p->in->mlen != (size_t)(d - p->in->d))
        memmove(p->in->d + p->in->mstart + p->in->mlen, d, avail);
      p->in->mlen += avail;
      if (last) p->in->op = 0;
      if (done) {
        int op = p->in->msg_op, rc;
        p->in->msg_op = 0;
        rc = ws__call_message(c, op, p->in->d + p->in->mstart, p->in->mlen, 1);
        p->in->mstart = p->in->rpos;
        p->in->mlen = 0;
        if (rc != WS_OK) return rc;
      }
    }
  }
  ws__in_idle(p);
  return WS_OK;
}

static void ws__open(ws_conn *c, const char *proto, size_t plen) {
  struct ws__conn_priv *p = WS__P(c);
  p->state = WS_STATE_OPEN;
  p->flags &= ~(uint32_t)WS__F_ARM_HS;
  p->t = WS__NONE;
  if (p->cfg->ping_interval_ms) p->flags |= WS__F_ARM_PING;
  if (p->cb->on_open) {
    p->depth++;
    p->cb->on_open(c, proto, plen, p->user);
    p->depth--;
  }
}

#ifndef WS_NO_SERVER
/* Refuses an upgrade with an HTTP error and ends the connection. */
static int ws__refuse(ws_conn *c, int status, int err) {
  struct ws__conn_priv *p = WS__P(c);
  size_t n;
  p->err = err;
  p->close_code = WS_CLOSE_ABNORMAL;
  p->flags |= WS__F_FAILING;
  if (ws__out_room(p, 160) != WS_OK ||
      ws_http_error_write(p->out->d + p->out->len, p->out->cap - p->out->len, status, &n) !=
          WS_OK) {
    ws__set_closed(p, WS_CLOSE_ABNORMAL, err);
    return err;
  }
  p->out->len += n;
  return err;
}

/* see ws.h */
int ws_http_respond(ws_conn *c, int status, const ws_header *headers,
                    size_t num_headers, const void *body, size_t len) {
  struct ws__conn_priv *p;
  ws__wbuf w;
  size_t i, need = 128 + len;
  int rc;
  WS_ASSERT(c != NULL);
  p = WS__P(c);
  if (!(p->flags & WS__F_IN_HTTP) || (p->flags & WS__F_FAILING))
    return WS_ESTATE;
  if (status < 100 || status > 599 || (body == NULL && len > 0) ||
      (headers == NULL && num_headers > 0))
    return WS_EINVAL;
  for (i = 0; i < num_headers; i++) need += headers[i].name_len + headers[i].value_len + 4;
  if ((rc = ws__out_room(p, need)) != WS_OK) return rc;
  w.p = (char *)p->out->d + p->out->len, w.cap = p->out->cap - p->out->len, w.len = 0, w.over = 0;
  ws__wrs(&w, "HTTP/1.1 ");
  ws__wr_uint(&w, (unsigned)status);
  ws__wrs(&w, " ");
  ws__wrs(&w, status == 200 ? "OK" : ws__reason_phrase(status));
  ws__wrs(&w, "\r\nConnection: close\r\nContent-Length: ");
  ws__wr_uint(&w, len);
  ws__wrs(&w, "\r\n");
  if (ws__wr_extra(&w, headers, num_headers) != WS_OK) return WS_EINVAL;
  ws__wrs(&w, "\r\n");
  if (len) ws__wr(&w, (const char *)body, len);
  if (w.over) return WS_ENOSPC;
  p->out->len += w.len;
  /* The exchange ends once the response is out. */
  p->flags |= WS__F_FAILING;
  p->close_code = WS_CLOSE_ABNORMAL;
  return WS_OK;
}

/* Server: look for a complete request and answer it. */
static int ws__server_handshake(ws_conn *c) {
  struct ws__conn_priv *p = WS__P(c);
  ws_header hdrs[WS_MAX_HEADERS];
  ws_request req;
  ws_accept acc;
  size_t head, consumed, n, extra = 0, i;
  int status, rc;
  size_t from = (size_t)p->in->frame_left;
  head = ws__head_end((const char *)p->in->d, p->in->rlen, from);
  if (ws__bare_lf_from(p->in->d, head ? head : p->in->rlen, from))
    return ws__refuse(c, 400, WS_EHANDSHAKE);
  p->in->frame_left = p->in->rlen; /* resume the searches here next time */
  if (head == 0 || head > p->cfg->max_handshake) {
    if (p->in->rlen > p->cfg->max_handshake) return ws__refuse(c, 431, WS_EHANDSHAKE);
    /* A bad first line fails at once, without waiting for the rest; only
     * its first bytes are looked at, so a trickled head costs O(n). */
    rc = ws_request_parse(p->in->d, WS__MIN(p->in->rlen, (size_t)16), &req, hdrs, 0,
                          &consumed, &status);
    if (rc == WS_EHANDSHAKE) return ws__refuse(c, status, WS_EHANDSHAKE);
    return WS_OK;
  }
  rc = ws_request_parse(p->in->d, head, &req, hdrs, WS__MAX_HDRS(p), &consumed,
                        &status);
  if (rc != WS_OK && req.method && !req.upgrade && p->cb->on_http) {
    /* A well-formed plain HTTP request: the application may answer it. */
    size_t before = WS__QUEUED(p);
    p->depth++;
    p->flags |= WS__F_IN_HTTP;
    status = p->cb->on_http(c, &req, p->user);
    p->flags &= ~(uint32_t)WS__F_IN_HTTP;
    p->depth--;
    if (p->flags & WS__F_CLOSED) return WS_ECLOSED;
    if (status == 0 && WS__QUEUED(p) > before) return WS_OK; /* answered */
    return ws__refuse(c, status >= 400 && status <= 599 ? status : 404,
                      WS_EHANDSHAKE);
  }
  if (rc != WS_OK) return ws__refuse(c, status, WS_EHANDSHAKE);
  memset(&acc, 0, sizeof acc);
  status = 0;
  if (p->cb->on_handshake) {
    p->depth++;
    status = p->cb->on_handshake(c, &req, &acc, p->user);
    p->depth--;
    if (p->flags & WS__F_CLOSED) return WS_ECLOSED;
  }
  if (status != 0)
    return ws__refuse(c, (status >= 400 && status <= 599) ? status : 500,
                      WS_EREFUSED);
  if (acc.protocol) {
    size_t k, cnt = ws_request_protocol_count(&req), plen = strlen(acc.protocol);
    int offered = 0;
    for (k = 0; k < cnt; k++) {
      const char *t;
      size_t tl;
      ws_request_protocol(&req, k, &t, &tl);
      if (tl == plen && memcmp(t, acc.protocol, tl) == 0) offered = 1;
    }
    if (!offered) return ws__refuse(c, 500, WS_EINVAL);
  }
  for (i = 0; i < acc.num_headers && acc.headers; i++)
    extra += acc.headers[i].name_len + acc.headers[i].value_len + 4;
  if (acc.protocol) extra += strlen(acc.protocol) + 32;
  if ((rc = ws__out_room(p, 160 + extra)) != WS_OK)
    return ws__refuse(c, 500, rc);
  rc = ws_response_write(p->out->d + p->out->len, p->out->cap - p->out->len, req.key,
                         req.key_len, acc.protocol, acc.headers,
                         acc.num_headers, &n);
  if (rc != WS_OK) return ws__refuse(c, 500, rc);
  p->out->len += n;
  p->in->rpos = p->in->mstart = consumed;
  p->in->frame_left = 0;
  ws__open(c, acc.protocol, acc.protocol ? strlen(acc.protocol) : 0);
  return WS_OK;
}
#endif /* WS_NO_SERVER */

#ifndef WS_NO_CLIENT

/* Client: look for the server's response and check it. */
static int ws__client_handshake(ws_conn *c) {
  struct ws__conn_priv *p = WS__P(c);
  ws_header hdrs[WS_MAX_HEADERS];
  ws_response resp;
  size_t base = WS__CLI_BASE(p), head, consumed;
  uint8_t nonce[16];
  int rc;
  memcpy(nonce, p->in->d, 16);
  head = ws__head_end((const char *)p->in->d + base, p->in->rlen - base,
                      (size_t)p->in->frame_left);
  if (ws__bare_lf_from(p->in->d + base, head ? head : p->in->rlen - base,
                       (size_t)p->in->frame_left)) {
    ws__set_closed(p, WS_CLOSE_ABNORMAL, WS_EHANDSHAKE);
    return WS_EHANDSHAKE;
  }
  p->in->frame_left = p->in->rlen - base; /* resume the searches here next time */
  if (head == 0 || head > p->cfg->max_handshake) {
    if (p->in->rlen - base > p->cfg->max_handshake) {
      ws__set_closed(p, WS_CLOSE_ABNORMAL, WS_EHANDSHAKE);
      return WS_EHANDSHAKE;
    }
    rc = ws_response_parse(p->in->d + base, WS__MIN(p->in->rlen - base, (size_t)16),
                           nonce, NULL, 0, &resp, hdrs, 0, &consumed);
    if (rc == WS_EHANDSHAKE) {
      ws__set_closed(p, WS_CLOSE_ABNORMAL, WS_EHANDSHAKE);
      return WS_EHANDSHAKE;
    }
    return WS_OK;
  }
  rc = ws_response_parse(p->in->d + base, head, nonce,
                         (const char *)p->in->d + 16, p->in->proto_len,
                         &resp, hdrs, WS__MAX_HDRS(p), &consumed);
  if (rc != WS_OK) {
    ws__set_closed(p, WS_CLOSE_ABNORMAL, WS_EHANDSHAKE);
    return WS_EHANDSHAKE;
  }
  /* From here the union holds frame state. */
  p->in->proto_len = 0;
  p->in->rpos = p->in->mstart = base + consumed;
  p->in->frame_left = 0;
  ws__open(c, resp.protocol, resp.protocol_len);
  return WS_OK;
}
#endif /* WS_NO_CLIENT */

/* Processes whatever input is buffered. */
static int ws__process(ws_conn *c) {
  struct ws__conn_priv *p = WS__P(c);
  int rc = WS_OK;
  if (p->flags & (WS__F_FAILING | WS__F_CLOSED)) return p->err;
  if (p->state == WS_STATE_CONNECTING) {
#if !defined(WS_NO_SERVER) && !defined(WS_NO_CLIENT)
    rc = p->role == WS_SERVER ? ws__server_handshake(c)
                              : ws__client_handshake(c);
#elif !defined(WS_NO_SERVER)
    rc = ws__server_handshake(c);
#else
    rc = ws__client_handshake(c);
#endif
    if (rc != WS_OK || p->state != WS_STATE_OPEN) return rc;
  }
  if (p->state >= WS_STATE_OPEN && !(p->flags & WS__F_CLOSE_RCVD)) {
    if (p->flags & WS__F_CLOSED) return rc;
    rc = ws__frames(c);
  } else if (p->flags & WS__F_CLOSE_RCVD) {
    p->in->rlen = p->in->rpos; /* after the peer's close, input is ignored */
  }
  return rc;
}

/* End of stream from the transport. */
static void ws__eof(ws_conn *c) {
  struct ws__conn_priv *p = WS__P(c);
  p->flags |= WS__F_EOF;
  if (p->flags & WS__F_CLOSE_RCVD)
    ws__set_closed(p, p->close_code, WS_OK);
  else
    ws__set_closed(p, WS_CLOSE_ABNORMAL, WS_EEOF);
}

/* see ws.h */
int ws_conn_want_read(const ws_conn *c) {
  const struct ws__conn_priv *p = WS__P(c);
  size_t q;
  if (p->state == WS_STATE_INIT || (p->flags & (WS__F_CLOSED | WS__F_FAILING)))
    return 0;
  if (p->role == WS_SERVER && (p->flags & WS__F_CLOSE_RCVD)) return 0;
  /* Stop reading once half the output limit is queued (and always before
   * a pong could no longer fit): a peer that sends faster than it reads is
   * paused, and what it already sent still has room for its replies. */
  q = WS__QUEUED(p);
  if (q == 0) return 1; /* nothing queued: never stall */
  return q <= p->cfg->max_queued / 2 &&
         q + WS_FRAME_HEADER_MAX + WS_CONTROL_MAX <= p->cfg->max_queued;
}

/* The sticky error or WS_OK, at the end of a public call. */
static int ws__result(ws_conn *c, int rc) {
  struct ws__conn_priv *p = WS__P(c);
  if (rc == WS_OK && p->err != WS_OK && !(p->flags & WS__F_CLOSED))
    rc = p->err;
  return ws__done(c, rc);
}

#if WS_BATCH_STACK
/* Lends the output queue a stack buffer for one call that processes input,
 * when the connection has no queue. */
#define WS__STACK_OUT(p)                                                  \
  union {                                                                 \
    size_t align;                                                         \
    unsigned char b[WS_BATCH_STACK];                                      \
  } ws__sb;                                                               \
  if ((p)->out == NULL && !((p)->flags & WS__F_FIXED)) {                  \
    (p)->out = (struct ws__obuf *)(void *)ws__sb.b;                       \
    (p)->out->cap = sizeof ws__sb - sizeof *(p)->out;                     \
    (p)->out->head = (p)->out->len = 0;                                   \
    (p)->flags |= WS__F_STACK_OUT;                                        \
  }
#else
#define WS__STACK_OUT(p)
#endif

/* Batch: replies queued while input is processed leave in one flush. What
 * the transport does not take moves from a lent stack buffer to the heap
 * before the call returns (or on_close runs). */
static int ws__end_batch(ws_conn *c, int rc) {
  struct ws__conn_priv *p = WS__P(c);
  int frc;
  p->flags &= ~(uint32_t)WS__F_BATCH;
  frc = ws__flush(c);
#if WS_BATCH_STACK
  if ((p->flags & WS__F_STACK_OUT) &&
      ((p->flags & WS__F_CLOSED) || ws__out_unstack(p, 0) != WS_OK)) {
    p->out = NULL; /* closed, or no memory: what is left is dropped */
    p->flags &= ~(uint32_t)WS__F_STACK_OUT;
    if (!(p->flags & WS__F_CLOSED))
      ws__set_closed(p, WS_CLOSE_ABNORMAL, WS_ENOMEM);
  }
#endif
  return ws__result(c, rc != WS_OK ? rc : frc);
}

/* A fixed input buffer is full and nothing in it can be consumed: the
 * request head or the message is larger than the buffer. */
static void ws__input_full(ws_conn *c) {
#ifndef WS_NO_SERVER
  struct ws__conn_priv *p = WS__P(c);
  if (p->state == WS_STATE_CONNECTING && p->role == WS_SERVER) {
    ws__refuse(c, 431, WS_EHANDSHAKE);
    return;
  }
#endif
  ws__fail(c, WS_ETOOBIG, WS_CLOSE_TOO_BIG);
}

/* see ws.h */
int ws_conn_on_readable(ws_conn *c) {
  struct ws__conn_priv *p;
  int rc = WS_OK;
  WS_ASSERT(c != NULL);
  p = WS__P(c);
  WS_ASSERT(p->depth == 0);
  if (p->flags & WS__F_CLOSED) return ws__done(c, WS_ECLOSED);
  p->flags |= WS__F_BATCH;
  WS__STACK_OUT(p)
  while (ws_conn_want_read(c)) {
    size_t n = 0;
    long room = ws__in_room(p, ws__read_want(p));
    if (room < 0) {
      ws__fail(c, (int)room, WS_CLOSE_INTERNAL);
      break;
    }
    if (room == 0) { /* a fixed buffer that cannot take more */
      ws__input_full(c);
      break;
    }
    rc = WS_EIO;
    if (p->cb->read) {
      p->depth++;
      rc = p->cb->read(c, p->in->d + p->in->rlen, (size_t)room, &n, p->user);
      p->depth--;
    }
    if (rc == WS_EAGAIN) {
      rc = WS_OK;
      ws__in_idle(p); /* the room made for this read was not needed */
      break;
    }
    if (rc != WS_OK || n > (size_t)room) {
      ws__set_closed(p, WS_CLOSE_ABNORMAL, WS_EIO);
      rc = WS_EIO;
      break;
    }
    if (n == 0) {
      ws__eof(c);
      break;
    }
    p->in->rlen += n;
    rc = ws__process(c);
    if (rc != WS_OK) break;
  }
  return ws__end_batch(c, rc);
}

/* Copies bytes in and processes them: the body of ws_conn_feed(). */
static int ws__feed(ws_conn *c, const unsigned char *d, size_t len) {
  struct ws__conn_priv *p = WS__P(c);
  int rc = WS_OK;
  while (len > 0 && !(p->flags & (WS__F_CLOSED | WS__F_FAILING))) {
    size_t take;
    long room;
    if (p->flags & WS__F_CLOSE_RCVD) break; /* the rest is ignored */
    room = ws__in_room(p, WS__MIN(len, WS__MAX(ws__read_want(p), (size_t)WS_READ_CHUNK)));
    if (room < 0) {
      ws__fail(c, (int)room, WS_CLOSE_INTERNAL);
      break;
    }
    if (room == 0) {
      ws__input_full(c);
      break;
    }
    take = WS__MIN(len, (size_t)room);
    memcpy(p->in->d + p->in->rlen, d, take);
    p->in->rlen += take;
    d += take;
    len -= take;
    rc = ws__process(c);
    if (rc != WS_OK) break;
  }
  return rc;
}

/* The checks both feeds start with; WS_OK, and a batch begun, when the
 * bytes may be processed. */
static int ws__feed_begin(ws_conn *c, const void *data, size_t len) {
  struct ws__conn_priv *p;
  WS_ASSERT(c != NULL);
  p = WS__P(c);
  WS_ASSERT(p->depth == 0);
  if (data == NULL && len > 0) return WS_EINVAL;
  if (p->flags & WS__F_CLOSED) return ws__done(c, WS_ECLOSED);
  if (p->state == WS_STATE_INIT) return WS_ESTATE;
  p->flags |= WS__F_BATCH;
  return WS_OK;
}

/* see ws.h */
int ws_conn_feed(ws_conn *c, const void *data, size_t len) {
  int rc = ws__feed_begin(c, data, len);
  if (rc != WS_OK) return rc;
  WS__STACK_OUT(WS__P(c))
  return ws__end_batch(c, ws__feed(c, (const unsigned char *)data, len));
}

/* No input held: no bytes, no frame or message in progress. */
static int ws__in_empty(const struct ws__conn_priv *p) {
  const struct ws__ibuf *b = p->in;
  return b == NULL || (b->rpos == b->rlen && b->mlen == 0 && b->op == 0 &&
                       b->msg_op == 0);
}

/* see ws.h */
size_t ws_conn_buffered(const ws_conn *c) {
  const struct ws__conn_priv *p = WS__P(c);
  if (ws__in_empty(p)) return 0;
  return p->in->rlen - p->in->rpos + p->in->mlen + (p->in->op != 0 || p->in->msg_op != 0);
}

/* see ws.h */
int ws_conn_feed_inplace(ws_conn *c, void *data, size_t len) {
  struct ws__conn_priv *p;
  unsigned char *d = (unsigned char *)data;
  size_t pos = 0;
  int rc = ws__feed_begin(c, data, len);
  if (rc != WS_OK) return rc;
  p = WS__P(c);
  WS__STACK_OUT(p)
  /* Whole frames, while nothing is held, are handled where they lie. The
   * first thing that is not a whole data frame with FIN or a whole ping or
   * pong (a fragment, a close, anything to refuse, a frame still arriving)
   * goes, with the rest, through the copying path, which decides. */
  while (pos < len && p->state == WS_STATE_OPEN &&
         !(p->flags & (WS__F_CLOSE_RCVD | WS__F_FAILING | WS__F_CLOSED)) &&
         ws__in_empty(p)) {
    ws_frame f;
    size_t hl;
    unsigned char *pl;
    if (ws__frame_parse(d + pos, len - pos, &f, &hl) != WS_OK || f.rsv != 0 ||
        f.masked != (p->role == WS_SERVER ? 1 : 0) ||
        f.len > (uint64_t)(len - pos - hl) || f.opcode == WS_OP_CLOSE)
      break;
    pl = d + pos + hl;
    if (f.opcode >= 8) {
      if ((rc = ws__control(c, &f, pl)) != WS_OK) break;
      pos += hl + (size_t)f.len;
      continue;
    }
    if (f.opcode == WS_OP_CONT || !f.fin || ws__too_big(p, f.len, 0, 0))
      break;
    if (f.masked) ws_mask(pl, (size_t)f.len, f.mask, 0);
    if (f.opcode == WS_OP_TEXT) {
      uint32_t st = WS_UTF8_INIT;
      if (ws_utf8_check(&st, pl, (size_t)f.len, 1, NULL) != WS_OK) {
        ws__fail(c, WS_EUTF8, WS_CLOSE_INVALID_DATA);
        rc = WS_EUTF8;
        break;
      }
    }
    pos += hl + (size_t)f.len;
    if ((rc = ws__call_message(c, f.opcode, pl, (size_t)f.len, 1)) != WS_OK)
      break;
  }
  if (rc == WS_OK && pos < len) rc = ws__feed(c, d + pos, len - pos);
  return ws__end_batch(c, rc);
}

/* see ws.h */
int ws_conn_on_writable(ws_conn *c) {
  WS_ASSERT(c != NULL);
  WS_ASSERT(WS__P(c)->depth == 0);
  if (WS__P(c)->flags & WS__F_CLOSED) return ws__done(c, WS_ECLOSED);
  return ws__result(c, ws__flush(c));
}

/* see ws.h */
int ws_conn_tick(ws_conn *c, uint64_t now) {
  struct ws__conn_priv *p;
  WS_ASSERT(c != NULL);
  p = WS__P(c);
  WS_ASSERT(p->depth == 0);
  if (p->flags & WS__F_CLOSED) return ws__done(c, WS_ECLOSED);
  /* One timer at a time: the state says which (the handshake while
   * connecting, the close once closing, a ping or the pong it waits for
   * while open). A timer armed later in a call wins. */
  if (p->flags & WS__F_ARM_HS)
    p->t = p->cfg->handshake_timeout_ms ? now + p->cfg->handshake_timeout_ms
                                        : WS__NONE;
  if ((p->flags & WS__F_ARM_PING) && p->state == WS_STATE_OPEN)
    p->t = p->cfg->ping_interval_ms ? now + p->cfg->ping_interval_ms : WS__NONE;
  if (p->flags & WS__F_ARM_CLOSE)
    p->t = p->cfg->close_timeout_ms ? now + p->cfg->close_timeout_ms
                                    : WS__NONE;
  p->flags &= ~(uint32_t)(WS__F_ARM_HS | WS__F_ARM_CLOSE | WS__F_ARM_PING);
  if (now < p->t) return ws__result(c, WS_OK);
  if (p->state == WS_STATE_CONNECTING) {
    ws__set_closed(p, WS_CLOSE_ABNORMAL, WS_ETIMEDOUT);
  } else if (p->state == WS_STATE_CLOSING || (p->flags & WS__F_FAILING)) {
    if (p->flags & WS__F_CLOSE_RCVD)
      ws__set_closed(p, p->close_code, WS_OK);
    else
      ws__set_closed(p, WS_CLOSE_ABNORMAL, WS_ETIMEDOUT);
  } else if (p->state == WS_STATE_OPEN) {
    if (p->flags & WS__F_PONG_WAIT) {
      ws__set_closed(p, WS_CLOSE_ABNORMAL, WS_ETIMEDOUT);
    } else {
      /* A ping, then its pong awaited (the next ping follows the pong);
       * with the queue full, the ping waits one more interval. */
      p->t = now + p->cfg->ping_interval_ms;
      if (WS__QUEUED(p) + 14 <= p->cfg->max_queued &&
          ws__queue_frame(c, 1, WS_OP_PING, NULL, 0) == WS_OK) {
        if (p->cfg->pong_timeout_ms) {
          p->t = now + p->cfg->pong_timeout_ms;
          p->flags |= WS__F_PONG_WAIT;
        }
        return ws__result(c, ws__flush(c));
      }
    }
  } else {
    p->t = WS__NONE;
  }
  return ws__result(c, WS_OK);
}

/* see ws.h */
uint64_t ws_conn_next_deadline(const ws_conn *c) {
  const struct ws__conn_priv *p = WS__P(c);
  if (p->flags & WS__F_CLOSED) return WS__NONE;
  if (p->flags & (WS__F_ARM_HS | WS__F_ARM_CLOSE | WS__F_ARM_PING)) return 0;
  return p->t;
}

/* see ws.h */
int ws_conn_want_write(const ws_conn *c) {
  const struct ws__conn_priv *p = WS__P(c);
  return WS__QUEUED(p) > 0 && !(p->flags & WS__F_CLOSED);
}

/* see ws.h */
size_t ws_conn_queued(const ws_conn *c) {
  return WS__QUEUED(WS__P(c));
}

/* see ws.h */
int ws_conn_state(const ws_conn *c) { return WS__P(c)->state; }

/* see ws.h */
int ws_conn_error(const ws_conn *c) { return WS__P(c)->err; }

/* see ws.h */
void *ws_conn_user(const ws_conn *c) { return WS__P(c)->user; }

/* see ws.h */
void ws_conn_set_user(ws_conn *c, void *user) { WS__P(c)->user = user; }

/* see ws.h */
int ws_conn_cork(ws_conn *c, int on) {
  struct ws__conn_priv *p = WS__P(c);
  if (on) {
    p->flags |= WS__F_CORK;
    return WS_OK;
  }
  p->flags &= ~(uint32_t)WS__F_CORK;
  if (p->depth) return ws__flush(c);
  return ws__result(c, ws__flush(c));
}

#ifndef WS_NO_CLIENT
/* see ws.h */
int ws_client_start(ws_conn *c, const ws_client_opts *o) {
  struct ws__conn_priv *p;
  size_t n, plen;
  uint8_t nonce[16];
  long room;
  int rc;
  WS_ASSERT(c != NULL);
  p = WS__P(c);
  if (p->role != WS_CLIENT || p->state != WS_STATE_INIT) return WS_ESTATE;
  if (o == NULL) return WS_EINVAL;
  plen = o->protocols ? strlen(o->protocols) : 0;
  if (plen > p->cfg->max_handshake / 2) return WS_EINVAL;
  if ((rc = ws__random(c, nonce, 16)) != WS_OK) return rc;
  if ((rc = ws__out_room(p, 256 + plen + strlen(o->host ? o->host : "") +
                                strlen(o->path ? o->path : "") +
                                strlen(o->origin ? o->origin : ""))) != WS_OK)
    return rc;
  rc = ws_client_request_write(p->out->d + p->out->len, p->out->cap - p->out->len, o,
                               nonce, &n);
  if (rc == WS_ENOSPC) {
    size_t i, extra = 0;
    for (i = 0; i < o->num_headers && o->headers; i++)
      extra += o->headers[i].name_len + o->headers[i].value_len + 4;
    if ((rc = ws__out_room(p, p->out->cap - p->out->len + extra)) != WS_OK)
      return rc;
    rc = ws_client_request_write(p->out->d + p->out->len, p->out->cap - p->out->len, o,
                                 nonce, &n);
  }
  if (rc != WS_OK) return rc;
  /* The nonce and the offered subprotocols stay at the front of the input
   * buffer until the response has been checked against them. */
  room = ws__in_room(p, 16 + plen + WS_READ_CHUNK);
  if (room < 0) return (int)room;
  if ((size_t)room < 16 + plen + 1) return WS_EFULL;
  memcpy(p->in->d, nonce, 16);
  if (plen) memcpy(p->in->d + 16, o->protocols, plen);
  p->in->proto_len = (uint16_t)plen;
  p->in->rpos = p->in->rlen = p->in->mstart = 16 + plen;
  p->out->len += n;
  p->state = WS_STATE_CONNECTING;
  p->flags |= WS__F_STARTED | WS__F_ARM_HS;
  return ws__result(c, ws__flush(c));
}
#endif /* WS_NO_CLIENT */

#ifndef WS_NO_SERVER
/* Writes what is queued, then hdr and d, in one call of the transport
 * (writev; write when d alone is to go: nothing queued, no header), and
 * queues only what it leaves.
 * A frame that left in part and cannot be queued breaks the stream: the
 * connection ends. */
static int ws__send_now(ws_conn *c, const unsigned char *hdr, size_t hl,
                        const unsigned char *d, size_t len) {
  struct ws__conn_priv *p = WS__P(c);
  size_t q = WS__QUEUED(p), w = 0, skip;
  ws_iovec iov[3];
  int n = 0, rc;
  if (q) {
    iov[n].base = p->out->d + p->out->head;
    iov[n++].len = q;
  }
  if (hl) {
    iov[n].base = hdr;
    iov[n++].len = hl;
  }
  iov[n].base = d;
  iov[n++].len = len;
  p->depth++;
  if (n == 1)
    rc = p->cb->write(c, d, len, &w, p->user);
  else
    rc = p->cb->writev(c, iov, n, &w, p->user);
  p->depth--;
  if (rc == WS_EAGAIN) rc = WS_OK, w = 0;
  if (rc != WS_OK || w > q + hl + len) {
    ws__set_closed(p, WS_CLOSE_ABNORMAL, WS_EIO);
    return WS_EIO;
  }
  if (q) {
    size_t t = WS__MIN(w, q);
    p->out->head += t;
    w -= t;
  }
  /* w bytes of header + payload are out: queue the rest. */
  skip = w;
  if (skip < hl + len) {
    rc = ws__out_room(p, hl + len - skip);
    if (rc != WS_OK) {
      if (skip == 0) return rc;
      ws__set_closed(p, WS_CLOSE_ABNORMAL, rc);
      return rc;
    }
    if (skip < hl) {
      memcpy(p->out->d + p->out->len, hdr + skip, hl - skip);
      p->out->len += hl - skip;
      skip = hl;
    }
    memcpy(p->out->d + p->out->len, d + (skip - hl), len - (skip - hl));
    p->out->len += len - (skip - hl);
  }
  return WS_OK;
}
#endif

/* Queues data frames for one send: the whole of it, or nothing. */

static int ws__send_data(ws_conn *c, int op, const void *data, size_t len,
                         int fin) {
  struct ws__conn_priv *p = WS__P(c);
  const unsigned char *d = (const unsigned char *)data;
  size_t fs = p->cfg->frame_size && len > p->cfg->frame_size
                  ? p->cfg->frame_size
                  : (len ? len : 1);
  size_t frames = fs >= len ? 1 : (len + fs - 1) / fs; /* no division: one */
  size_t total = len + frames * ws__hdr_size(WS__MIN(fs, len), p->role);
  size_t olen, i;
  int rc;
  if (total < len || WS__QUEUED(p) + total > p->cfg->max_queued)
    return WS_EFULL;
#ifndef WS_NO_SERVER
  /* A server's large single-frame send leaves from the caller's buffer
   * (after what is queued), without a copy of what the transport takes. */
  if (len >= WS_DIRECT_MIN && frames == 1 && p->cb->writev &&
      p->role == WS_SERVER &&
      !(p->flags & (WS__F_CORK | WS__F_CLOSED | WS__F_FIXED))) {
    unsigned char hdr[WS_FRAME_HEADER_MAX];
    size_t hl = ws_frame_write(hdr, fin, op, len, NULL);
    return ws__send_now(c, hdr, hl, d, len);
  }
#endif
  /* Room up front for all of it (total bounds every frame's header), so the
   * frames below neither move the queue nor fail half-way for want of
   * space, and the buffer stays within what max_queued allows. */
  if ((rc = ws__out_room(p, total)) != WS_OK) return rc;
  olen = p->out->len; /* after ws__out_room(), which may move the queue down */
  for (i = 0; i < frames; i++) {
    size_t n = WS__MIN(fs, len - i * fs);
    if (!len) n = 0;
    rc = ws__put_frame(c, fin && i + 1 == frames, i == 0 ? op : WS_OP_CONT,
                       d + i * fs, n);
    if (rc != WS_OK) {
      p->out->len = olen; /* all or nothing */
      return rc;
    }
  }
  return WS_OK;
}

static int ws__can_send(const struct ws__conn_priv *p) {
  if (p->state != WS_STATE_OPEN ||
      (p->flags & (WS__F_CLOSE_SENT | WS__F_FAILING | WS__F_CLOSED)))
    return p->state == WS_STATE_CLOSED ? WS_ECLOSED : WS_ESTATE;
  return WS_OK;
}

static int ws__send_end(ws_conn *c, int rc) {
  /* A refused send returns its reason; one that broke the transport (a
   * direct write) ends the connection like a failed flush. */
  if (rc != WS_OK && !(WS__P(c)->flags & WS__F_CLOSED)) return rc;
  if (rc == WS_OK) rc = ws__maybe_flush(c);
  if (WS__P(c)->depth) return rc;
  return ws__result(c, rc);
}

/* see ws.h */
int ws_send(ws_conn *c, int op, const void *data, size_t len) {
  struct ws__conn_priv *p;
  int rc;
  WS_ASSERT(c != NULL);
  p = WS__P(c);
  if ((op != WS_OP_TEXT && op != WS_OP_BINARY) || (data == NULL && len > 0))
    return WS_EINVAL;
  if ((rc = ws__can_send(p)) != WS_OK) return rc;
  if (p->send_op) return WS_ESTATE; /* a fragmented send is open */
  if (op == WS_OP_TEXT) {
    uint32_t st = WS_UTF8_INIT;
    if (ws_utf8_check(&st, data, len, 1, NULL) != WS_OK) return WS_EUTF8;
  }
  return ws__send_end(c, ws__send_data(c, op, data, len, 1));
}

/* see ws.h */
int ws_send_fragment(ws_conn *c, int op, const void *data, size_t len,
                     int fin) {
  struct ws__conn_priv *p;
  uint32_t st;
  int rc, frame_op, msg_op;
  WS_ASSERT(c != NULL);
  p = WS__P(c);
  if (data == NULL && len > 0) return WS_EINVAL;
  if ((rc = ws__can_send(p)) != WS_OK) return rc;
  msg_op = p->send_op; /* the open fragmented send's opcode, or 0 */
  if (msg_op == 0) {
    if (op != WS_OP_TEXT && op != WS_OP_BINARY) return WS_EINVAL;
    msg_op = op;
    frame_op = op;
    st = WS_UTF8_INIT;
  } else {
    if (op != WS_OP_CONT && op != msg_op) return WS_EINVAL;
    frame_op = WS_OP_CONT;
    st = p->utf8_out;
  }
  if (msg_op == WS_OP_TEXT && ws_utf8_check(&st, data, len, fin, NULL) != WS_OK)
    return WS_EUTF8;
  rc = ws__send_data(c, frame_op, data, len, fin);
  if (rc == WS_OK) {
    p->utf8_out = st;
    p->send_op = (uint8_t)(fin ? 0 : msg_op);
  }
  return ws__send_end(c, rc);
}

/* see ws.h */
int ws_send_encoded(ws_conn *c, const void *frame, size_t len) {
  struct ws__conn_priv *p;
  ws_frame f;
  size_t hl;
  int rc;
  WS_ASSERT(c != NULL);
  p = WS__P(c);
  if (frame == NULL || p->role != WS_SERVER) return WS_EINVAL;
  if (ws_frame_parse(frame, len, &f, &hl) != WS_OK || f.masked || f.rsv ||
      hl + f.len != len || f.opcode == WS_OP_CLOSE || f.opcode == WS_OP_CONT ||
      !f.fin)
    return WS_EINVAL;
  if ((rc = ws__can_send(p)) != WS_OK) return rc;
  if (p->send_op && f.opcode < 8) return WS_ESTATE;
  if (WS__QUEUED(p) + len > p->cfg->max_queued) return WS_EFULL;
  /* Nothing queued and nothing holding output (a publish to many): write
   * from the caller's bytes and queue only what the transport leaves. */
#ifndef WS_NO_SERVER
  if (WS__QUEUED(p) == 0 && p->cb->write && !p->depth &&
      !(p->flags & (WS__F_CORK | WS__F_BATCH | WS__F_FIXED)))
    return ws__send_end(c, ws__send_now(c, NULL, 0, frame, len));
#endif
  if ((rc = ws__out_room(p, len)) != WS_OK) return rc;
  memcpy(p->out->d + p->out->len, frame, len);
  p->out->len += len;
  return ws__send_end(c, WS_OK);
}

static int ws__send_control(ws_conn *c, int op, const void *data, size_t len) {
  struct ws__conn_priv *p;
  int rc;
  WS_ASSERT(c != NULL);
  p = WS__P(c);
  if (len > WS_CONTROL_MAX || (data == NULL && len > 0)) return WS_EINVAL;
  if ((rc = ws__can_send(p)) != WS_OK) return rc;
  if (WS__QUEUED(p) + len + WS_FRAME_HEADER_MAX > p->cfg->max_queued)
    return WS_EFULL;
  return ws__send_end(c, ws__queue_frame(c, 1, op, data, len));
}

/* see ws.h */
int ws_ping(ws_conn *c, const void *data, size_t len) {
  return ws__send_control(c, WS_OP_PING, data, len);
}

/* see ws.h */
int ws_pong(ws_conn *c, const void *data, size_t len) {
  return ws__send_control(c, WS_OP_PONG, data, len);
}

/* see ws.h */
int ws_close(ws_conn *c, int code, const char *reason, size_t reason_len) {
  struct ws__conn_priv *p;
  uint32_t st = WS_UTF8_INIT;
  int rc;
  WS_ASSERT(c != NULL);
  p = WS__P(c);
  if ((code != 0 && !ws_close_code_valid((unsigned)code)) ||
      (code == 0 && reason_len > 0) || reason_len > WS_CONTROL_MAX - 2 ||
      (reason == NULL && reason_len > 0) ||
      ws_utf8_check(&st, reason, reason_len, 1, NULL) != WS_OK)
    return WS_EINVAL;
  if ((rc = ws__can_send(p)) != WS_OK) return rc;
  p->state = WS_STATE_CLOSING;
  rc = ws__queue_close(c, code, reason, reason_len);
  if (rc != WS_OK) {
    ws__set_closed(p, WS_CLOSE_ABNORMAL, rc);
    if (p->depth) return rc;
    return ws__done(c, rc);
  }
  return ws__send_end(c, WS_OK);
}

/* see ws.h */
int ws_conn_abort(ws_conn *c, int err) {
  struct ws__conn_priv *p;
  WS_ASSERT(c != NULL);
  p = WS__P(c);
  if (!(p->flags & WS__F_STARTED)) return WS_ESTATE;
  ws__set_closed(p, WS_CLOSE_ABNORMAL, err < 0 ? err : WS_EIO);
  if (p->depth) return WS_OK; /* on_close runs when the outer call returns */
  return ws__done(c, WS_OK);
}

/* see ws.h */
void ws_conn_free(ws_conn *c) {
  struct ws__conn_priv *p;
  int notify;
  const ws_callbacks *cb;
  void *user;
  if (c == NULL) return;
  p = WS__P(c);
  WS_ASSERT(p->depth == 0);
  notify = (p->flags & WS__F_STARTED) && !(p->flags & WS__F_NOTIFIED);
  p->flags |= WS__F_NOTIFIED | WS__F_CLOSED;
  p->state = WS_STATE_CLOSED;
  if (!(p->flags & WS__F_FIXED)) {
    if (p->in) ws__realloc(p, p->in, 0);
    if (p->out) ws__realloc(p, p->out, 0);
  }
  p->in = NULL;
  p->out = NULL;
  cb = p->cb;
  user = p->user;
  if (notify && cb->on_close) {
    const char *r = "aborted";
    cb->on_close(c, WS_CLOSE_ABNORMAL, r, strlen(r), user);
  }
}

/* ======================================================================
 * 5. TLS over mbedTLS
 *
 * A read/write pair under layer 1: a connection whose read and write
 * callbacks call ws_tls_read() and ws_tls_write() sees plaintext and never
 * knows TLS is there. Non-blocking: mbedTLS's WANT_READ / WANT_WRITE come
 * back as WS_EAGAIN, and ws_tls_wants() tells the caller which readiness
 * the TLS handshake waits for, so it is driven by the same events as
 * everything else (and covered by the connection's handshake timeout,
 * which runs from the start). The WebSocket handshake keeps the core's own
 * SHA-1. Uses no core internals; private names start with ws__tls.
 *
 * Under a session is a transport of the caller's (ws_tls_new_io(): send
 * and recv callbacks of the shape of ws_callbacks.write/read), so this
 * part builds without an OS: firmware runs wss:// over lwIP raw or a UART.
 * A socket (ws_tls_new()) is one such transport, in hosted builds. Memory
 * comes from mbedtls_calloc/mbedtls_free (mbedTLS's own allocator, which
 * firmware configures anyway), text from mbedtls_snprintf.
 * ==================================================================== */
#if WS_ENABLE_MBEDTLS

#include <mbedtls/version.h>
#include <mbedtls/platform.h>
#include <mbedtls/ssl.h>
#include <mbedtls/entropy.h>
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/x509_crt.h>
#include <mbedtls/pk.h>
#include <mbedtls/error.h>
#include <mbedtls/net_sockets.h> /* the MBEDTLS_ERR_NET_* codes only */
#if MBEDTLS_VERSION_NUMBER >= 0x03000000 && defined(MBEDTLS_PSA_CRYPTO_C)
#include <psa/crypto.h>
#endif
#include <limits.h>
#if WS__HAVE_OS
#include <errno.h>
#include <sys/socket.h>
#include <sys/types.h>
#endif

/* Largest plaintext handed to one mbedtls_ssl_write(): one record. */
#define WS__TLS_CHUNK 16384

struct ws_tls_config {
  mbedtls_ssl_config conf;       /* ours (helper-made configs) */
  mbedtls_ssl_config *use;       /* what sessions use: &conf or the app's */
  mbedtls_entropy_context entropy;
  mbedtls_ctr_drbg_context drbg;
  mbedtls_x509_crt ca, cert;
  mbedtls_pk_context key;
  int (*entropy_cb)(void *buf, size_t n, void *user);
  void *entropy_user;
  int own, role, insecure;
};

struct ws_tls {
  mbedtls_ssl_context ssl;
  ws_tls_config *cfg;
  ws_tls_io io;         /* the transport (a copy) */
  void *user;           /* its context */
  int fd;               /* ws_tls_new(): the socket; else -1 */
  size_t wpend;         /* plaintext bytes of a write that would-blocked */
  unsigned char want;   /* WS_TLS_WANT_* the last blocked step waits for */
  unsigned char hs_done, io_failed, peer_closed, closed;
  unsigned char ip[16]; /* the host, when an IP literal (IP SAN check) */
  unsigned char ip_len;
  char err[200];
};

static void ws__tls_errtext(int r, char *buf, size_t cap) {
#if defined(MBEDTLS_ERROR_C)
  mbedtls_strerror(r, buf, cap);
#else
  mbedtls_snprintf(buf, cap, "mbedTLS error -0x%04x", (unsigned)-r);
#endif
}

static void ws__tls_seterr(char *err, size_t cap, const char *what, int r) {
  char m[128];
  if (err == NULL || cap == 0) return;
  if (r == 0) {
    mbedtls_snprintf(err, cap, "%s", what);
    return;
  }
  ws__tls_errtext(r, m, sizeof m);
  mbedtls_snprintf(err, cap, "%s: %s", what, m);
}

/* The transport under a session (the BIO): the caller's callbacks, their
 * codes turned into mbedTLS's. A callback that takes or gives nothing with
 * WS_OK on a write is treated as WS_EAGAIN (mbedTLS reads a 0 from send as
 * success); a count past the buffer is a broken transport. */
static int ws__tls_bio_send(void *ctx, const unsigned char *buf, size_t len) {
  ws_tls *t = (ws_tls *)ctx;
  size_t n = 0;
  int rc;
  if (len > INT_MAX) len = INT_MAX;
  rc = t->io.send(t, buf, len, &n, t->user);
  if (rc == WS_OK && n > 0 && n <= len) return (int)n;
  if (rc == WS_EAGAIN || (rc == WS_OK && n == 0)) return MBEDTLS_ERR_SSL_WANT_WRITE;
  t->io_failed = 1;
  return rc == WS_EEOF ? MBEDTLS_ERR_NET_CONN_RESET : MBEDTLS_ERR_NET_SEND_FAILED;
}

static int ws__tls_bio_recv(void *ctx, unsigned char *buf, size_t len) {
  ws_tls *t = (ws_tls *)ctx;
  size_t n = 0;
  int rc;
  if (len > INT_MAX) len = INT_MAX;
  rc = t->io.recv(t, buf, len, &n, t->user);
  if (rc == WS_OK && n <= len) return (int)n; /* 0: end of stream */
  if (rc == WS_EAGAIN) return MBEDTLS_ERR_SSL_WANT_READ;
  t->io_failed = 1;
  return rc == WS_EEOF ? MBEDTLS_ERR_NET_CONN_RESET : MBEDTLS_ERR_NET_RECV_FAILED;
}

/* An IP literal, without the OS's inet_pton: dotted quad (no leading
 * zeros) or RFC 4291 text (one "::", an IPv4 tail). Returns 4, 16, or 0
 * when s is not one (a host name). */
static int ws__tls_ip4(const char *s, unsigned char o[4]) {
  int k;
  for (k = 0; k < 4; k++) {
    unsigned v = 0;
    int d = 0;
    for (; *s >= '0' && *s <= '9'; s++, d++) {
      if (d > 0 && v == 0) return 0; /* leading zero */
      v = v * 10 + (unsigned)(*s - '0');
      if (v > 255) return 0;
    }
    if (d == 0) return 0;
    o[k] = (unsigned char)v;
    if (k < 3 && *s++ != '.') return 0;
  }
  return *s == '\0' ? 4 : 0;
}

static int ws__tls_hex(char ch) {
  if (ch >= '0' && ch <= '9') return ch - '0';
  if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
  if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
  return -1;
}

static int ws__tls_ip(const char *s, unsigned char o[16]) {
  unsigned char w[16];
  int n = 0, gap = -1;
  if (ws__tls_ip4(s, o) == 4) return 4;
  if (s[0] == ':') { /* a leading "::" */
    if (s[1] != ':') return 0;
    gap = 0;
    s += 2;
  }
  while (*s != '\0') {
    const char *q = s;
    unsigned v = 0;
    int h;
    while (q - s < 5 && (h = ws__tls_hex(*q)) >= 0) v = v * 16 + (unsigned)h, q++;
    if (q == s || q - s > 4) return 0;
    if (*q == '.') { /* the last 32 bits as a dotted quad */
      if (n > 12 || ws__tls_ip4(s, w + n) != 4) return 0;
      n += 4;
      break;
    }
    if (n == 16) return 0;
    w[n++] = (unsigned char)(v >> 8);
    w[n++] = (unsigned char)v;
    if (*q == '\0') break;
    if (*q++ != ':') return 0;
    if (*q == ':') {
      if (gap >= 0) return 0;
      gap = n;
      q++;
    } else if (*q == '\0') {
      return 0; /* a trailing single ':' */
    }
    s = q;
  }
  if (gap < 0) {
    if (n != 16) return 0;
    memcpy(o, w, 16);
  } else {
    if (n > 14) return 0;
    memset(o, 0, 16);
    memcpy(o, w, (size_t)gap);
    memcpy(o + 16 - (n - gap), w + gap, (size_t)(n - gap));
  }
  return 16;
}

/* mbedTLS 2.x matches host names against DNS names only: for a URL with
 * an IP literal, an iPAddress entry of the subjectAltName equal to it
 * clears the name mismatch (the chain is still checked). */
static int ws__tls_verify_ip(void *ctx, mbedtls_x509_crt *crt, int depth,
                             uint32_t *flags) {
  ws_tls *t = (ws_tls *)ctx;
  const mbedtls_x509_sequence *s;
  if (depth != 0 || !(*flags & MBEDTLS_X509_BADCERT_CN_MISMATCH)) return 0;
  for (s = &crt->subject_alt_names; s != NULL; s = s->next) {
    if (s->buf.tag == (MBEDTLS_ASN1_CONTEXT_SPECIFIC | 7) &&
        s->buf.len == t->ip_len && s->buf.p != NULL &&
        memcmp(s->buf.p, t->ip, t->ip_len) == 0) {
      *flags &= ~(uint32_t)MBEDTLS_X509_BADCERT_CN_MISMATCH;
      break;
    }
  }
  return 0;
}

/* Loads PEM (or DER) from memory; PEM must be NUL-terminated for mbedTLS,
 * so a copy gets the NUL. */
static int ws__tls_parse(int what, ws_tls_config *tc, const void *data,
                         size_t len, const char *pwd) {
  unsigned char *copy;
  int r;
  copy = (unsigned char *)mbedtls_calloc(1, len + 1);
  if (copy == NULL) return MBEDTLS_ERR_SSL_ALLOC_FAILED;
  memcpy(copy, data, len);
  copy[len] = 0;
  if (len > 0 && copy[len - 1] != 0 && memchr(copy, '-', len) != NULL) len++;
  if (what == 0)
    r = mbedtls_x509_crt_parse(&tc->ca, copy, len);
  else if (what == 1)
    r = mbedtls_x509_crt_parse(&tc->cert, copy, len);
  else
#if MBEDTLS_VERSION_NUMBER >= 0x03000000
    r = mbedtls_pk_parse_key(&tc->key, copy, len, (const unsigned char *)pwd,
                             pwd ? strlen(pwd) : 0, mbedtls_ctr_drbg_random,
                             &tc->drbg);
#else
    r = mbedtls_pk_parse_key(&tc->key, copy, len, (const unsigned char *)pwd,
                             pwd ? strlen(pwd) : 0);
#endif
  mbedtls_free(copy);
  return r;
}

/* A file, where mbedTLS can read files (MBEDTLS_FS_IO); else the file
 * options fail and the *_pem ones remain. */
static int ws__tls_parse_file(int what, ws_tls_config *tc, const char *file,
                              const char *pwd) {
#if defined(MBEDTLS_FS_IO)
  if (what == 0) return mbedtls_x509_crt_parse_file(&tc->ca, file);
  if (what == 1) return mbedtls_x509_crt_parse_file(&tc->cert, file);
#if MBEDTLS_VERSION_NUMBER >= 0x03000000
  return mbedtls_pk_parse_keyfile(&tc->key, file, pwd, mbedtls_ctr_drbg_random,
                                  &tc->drbg);
#else
  return mbedtls_pk_parse_keyfile(&tc->key, file, pwd);
#endif
#else
  (void)what, (void)tc, (void)file, (void)pwd;
  return MBEDTLS_ERR_X509_FEATURE_UNAVAILABLE;
#endif
}

static int ws__tls_psa_init(void) {
#if MBEDTLS_VERSION_NUMBER >= 0x03000000 && defined(MBEDTLS_PSA_CRYPTO_C)
  return psa_crypto_init() == PSA_SUCCESS ? 0 : -1;
#else
  return 0;
#endif
}

/* The caller's entropy source, as an mbedTLS strong source. */
static int ws__tls_entropy(void *ctx, unsigned char *out, size_t len,
                           size_t *olen) {
  ws_tls_config *tc = (ws_tls_config *)ctx;
  *olen = 0;
  if (tc->entropy_cb(out, len, tc->entropy_user) != WS_OK)
    return MBEDTLS_ERR_ENTROPY_SOURCE_FAILED;
  *olen = len;
  return 0;
}

/* see ws.h */
void ws_tls_options_init(ws_tls_options *o, int role) {
  memset(o, 0, sizeof *o);
  o->role = role;
}

/* see ws.h */
int ws_tls_config_new(ws_tls_config **out, const ws_tls_options *o,
                      char *err, size_t errcap) {
#if WS__HAVE_OS && defined(MBEDTLS_FS_IO)
  static const char *bundles[] = {"/etc/ssl/certs/ca-certificates.crt",
                                  "/etc/pki/tls/certs/ca-bundle.crt",
                                  "/etc/ssl/cert.pem", NULL};
  int i;
#endif
  static const char pers[] = "ws_tls";
  ws_tls_config *tc;
  int r;
  if (err && errcap) err[0] = '\0';
  if (out == NULL || o == NULL || (o->role != WS_SERVER && o->role != WS_CLIENT)) {
    ws__tls_seterr(err, errcap, "bad arguments", 0);
    return WS_EINVAL;
  }
  *out = NULL;
  if (ws__tls_psa_init() != 0) {
    ws__tls_seterr(err, errcap, "psa_crypto_init failed", 0);
    return WS_EIO;
  }
  tc = (ws_tls_config *)mbedtls_calloc(1, sizeof *tc);
  if (tc == NULL) return WS_ENOMEM;
  tc->own = 1;
  tc->role = o->role;
  tc->insecure = o->role == WS_CLIENT && o->insecure_skip_verify;
  tc->use = &tc->conf;
  mbedtls_ssl_config_init(&tc->conf);
  mbedtls_entropy_init(&tc->entropy);
  mbedtls_ctr_drbg_init(&tc->drbg);
  mbedtls_x509_crt_init(&tc->ca);
  mbedtls_x509_crt_init(&tc->cert);
  mbedtls_pk_init(&tc->key);
  if (o->entropy != NULL) {
    tc->entropy_cb = o->entropy;
    tc->entropy_user = o->entropy_user;
    r = mbedtls_entropy_add_source(&tc->entropy, ws__tls_entropy, tc, 32,
                                   MBEDTLS_ENTROPY_SOURCE_STRONG);
    if (r != 0) {
      ws__tls_seterr(err, errcap, "entropy source", r);
      goto fail;
    }
  }
  r = mbedtls_ctr_drbg_seed(&tc->drbg, mbedtls_entropy_func, &tc->entropy,
                            (const unsigned char *)pers, sizeof pers - 1);
  if (r != 0) {
    ws__tls_seterr(err, errcap, o->entropy ? "random generator"
                       : "random generator (no entropy: set ws_tls_options.entropy)", r);
    goto fail;
  }
  r = mbedtls_ssl_config_defaults(&tc->conf,
                                  o->role == WS_SERVER ? MBEDTLS_SSL_IS_SERVER
                                                       : MBEDTLS_SSL_IS_CLIENT,
                                  MBEDTLS_SSL_TRANSPORT_STREAM,
                                  MBEDTLS_SSL_PRESET_DEFAULT);
  if (r != 0) {
    ws__tls_seterr(err, errcap, "TLS defaults", r);
    goto fail;
  }
  mbedtls_ssl_conf_rng(&tc->conf, mbedtls_ctr_drbg_random, &tc->drbg);
#if MBEDTLS_VERSION_NUMBER >= 0x03000000
  mbedtls_ssl_conf_min_tls_version(&tc->conf, MBEDTLS_SSL_VERSION_TLS1_2);
#else
  mbedtls_ssl_conf_min_version(&tc->conf, MBEDTLS_SSL_MAJOR_VERSION_3,
                               MBEDTLS_SSL_MINOR_VERSION_3);
#if defined(MBEDTLS_ECP_C)
  /* 2.x prefers its largest curves (P-521 first), which doubles the cost
   * of a handshake for no gain: the fast, common ones first (3.x does
   * this by default). */
  {
    static const mbedtls_ecp_group_id ws__tls_curves[] = {
#if defined(MBEDTLS_ECP_DP_CURVE25519_ENABLED)
        MBEDTLS_ECP_DP_CURVE25519,
#endif
#if defined(MBEDTLS_ECP_DP_SECP256R1_ENABLED)
        MBEDTLS_ECP_DP_SECP256R1,
#endif
#if defined(MBEDTLS_ECP_DP_SECP384R1_ENABLED)
        MBEDTLS_ECP_DP_SECP384R1,
#endif
#if defined(MBEDTLS_ECP_DP_SECP521R1_ENABLED)
        MBEDTLS_ECP_DP_SECP521R1,
#endif
        MBEDTLS_ECP_DP_NONE};
    mbedtls_ssl_conf_curves(&tc->conf, ws__tls_curves);
  }
#endif
#endif
  if (o->role == WS_SERVER) {
    if (o->cert_file)
      r = ws__tls_parse_file(1, tc, o->cert_file, NULL);
    else if (o->cert_pem)
      r = ws__tls_parse(1, tc, o->cert_pem, o->cert_pem_len, NULL);
    else
      r = MBEDTLS_ERR_X509_BAD_INPUT_DATA;
    if (r != 0) {
      ws__tls_seterr(err, errcap, "server certificate", r);
      goto fail;
    }
    if (o->key_file)
      r = ws__tls_parse_file(2, tc, o->key_file, o->key_password);
    else if (o->key_pem)
      r = ws__tls_parse(2, tc, o->key_pem, o->key_pem_len, o->key_password);
    else
      r = MBEDTLS_ERR_PK_BAD_INPUT_DATA;
    if (r != 0) {
      ws__tls_seterr(err, errcap, "server private key", r);
      goto fail;
    }
    r = mbedtls_ssl_conf_own_cert(&tc->conf, &tc->cert, &tc->key);
    if (r != 0) {
      ws__tls_seterr(err, errcap, "server certificate and key", r);
      goto fail;
    }
    mbedtls_ssl_conf_authmode(&tc->conf, MBEDTLS_SSL_VERIFY_NONE);
  } else {
    r = 0;
    if (o->ca_file) {
      r = ws__tls_parse_file(0, tc, o->ca_file, NULL);
    } else if (o->ca_pem) {
      r = ws__tls_parse(0, tc, o->ca_pem, o->ca_pem_len, NULL);
    } else if (!tc->insecure) {
      r = MBEDTLS_ERR_X509_FILE_IO_ERROR;
#if WS__HAVE_OS && defined(MBEDTLS_FS_IO)
      for (i = 0; bundles[i] && r < 0; i++)
        r = mbedtls_x509_crt_parse_file(&tc->ca, bundles[i]);
      /* A bundle with a few certificates mbedTLS cannot read still loads
       * the rest (r > 0 counts the failures). */
      if (r > 0 && tc->ca.version != 0) r = 0;
#endif
    }
    if (r != 0) {
      ws__tls_seterr(err, errcap, o->ca_file || o->ca_pem
                                      ? "CA certificates"
                                      : "no system CA bundle found", r);
      goto fail;
    }
    if (tc->insecure) {
      /* insecure_skip_verify: the caller turned authentication OFF. */
      mbedtls_ssl_conf_authmode(&tc->conf, MBEDTLS_SSL_VERIFY_NONE);
    } else {
      mbedtls_ssl_conf_authmode(&tc->conf, MBEDTLS_SSL_VERIFY_REQUIRED);
      mbedtls_ssl_conf_ca_chain(&tc->conf, &tc->ca, NULL);
    }
  }
  *out = tc;
  return WS_OK;
fail:
  ws_tls_config_free(tc);
  return WS_EINVAL;
}

/* see ws.h */
int ws_tls_config_wrap(ws_tls_config **out, int role, void *mbedtls_conf) {
  ws_tls_config *tc;
  if (out == NULL || mbedtls_conf == NULL ||
      (role != WS_SERVER && role != WS_CLIENT))
    return WS_EINVAL;
  *out = NULL;
  if (ws__tls_psa_init() != 0) return WS_EIO;
  tc = (ws_tls_config *)mbedtls_calloc(1, sizeof *tc);
  if (tc == NULL) return WS_ENOMEM;
  tc->role = role;
  tc->use = (mbedtls_ssl_config *)mbedtls_conf;
  *out = tc;
  return WS_OK;
}

/* see ws.h */
void *ws_tls_config_mbedtls(ws_tls_config *tc) { return tc ? tc->use : NULL; }

/* see ws.h */
void ws_tls_config_free(ws_tls_config *tc) {
  if (tc == NULL) return;
  if (tc->own) {
    mbedtls_ssl_config_free(&tc->conf);
    mbedtls_x509_crt_free(&tc->ca);
    mbedtls_x509_crt_free(&tc->cert);
    mbedtls_pk_free(&tc->key);
    mbedtls_ctr_drbg_free(&tc->drbg);
    mbedtls_entropy_free(&tc->entropy);
  }
  mbedtls_free(tc);
}

/* see ws.h */
int ws_tls_new_io(ws_tls **out, ws_tls_config *tc, const ws_tls_io *io,
                  void *user, const char *host) {
  ws_tls *t;
  int r;
  if (out == NULL) return WS_EINVAL;
  *out = NULL;
  if (tc == NULL || io == NULL || io->send == NULL || io->recv == NULL)
    return WS_EINVAL;
  t = (ws_tls *)mbedtls_calloc(1, sizeof *t);
  if (t == NULL) return WS_ENOMEM;
  t->cfg = tc;
  t->io = *io;
  t->user = user;
  t->fd = -1;
  t->want = tc->role == WS_CLIENT ? WS_TLS_WANT_WRITE : WS_TLS_WANT_READ;
  mbedtls_ssl_init(&t->ssl);
  r = mbedtls_ssl_setup(&t->ssl, tc->use);
  if (r == 0 && tc->role == WS_CLIENT && host != NULL) {
    /* SNI and the name checked against the certificate: the URL's host. */
    r = mbedtls_ssl_set_hostname(&t->ssl, host);
    t->ip_len = (unsigned char)ws__tls_ip(host, t->ip);
    if (t->ip_len && !tc->insecure)
      mbedtls_ssl_set_verify(&t->ssl, ws__tls_verify_ip, t);
  }
  if (r != 0) {
    mbedtls_ssl_free(&t->ssl);
    mbedtls_free(t);
    return r == MBEDTLS_ERR_SSL_ALLOC_FAILED ? WS_ENOMEM : WS_EINVAL;
  }
  mbedtls_ssl_set_bio(&t->ssl, t, ws__tls_bio_send, ws__tls_bio_recv, NULL);
  *out = t;
  return WS_OK;
}

#if WS__HAVE_OS
/* A non-blocking socket as the transport (the session's fd). */
static int ws__tls_sock_send(ws_tls *t, const void *buf, size_t len,
                             size_t *n, void *user) {
  int flags = 0;
#ifdef MSG_NOSIGNAL
  flags = MSG_NOSIGNAL;
#endif
  (void)user;
  for (;;) {
    ssize_t r = send(t->fd, buf, len, flags);
    if (r >= 0) {
      *n = (size_t)r;
      return WS_OK;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return WS_EAGAIN;
    return errno == EPIPE || errno == ECONNRESET ? WS_EEOF : WS_EIO;
  }
}

static int ws__tls_sock_recv(ws_tls *t, void *buf, size_t cap, size_t *n,
                             void *user) {
  (void)user;
  for (;;) {
    ssize_t r = recv(t->fd, buf, cap, 0);
    if (r >= 0) {
      *n = (size_t)r; /* 0: end of stream */
      return WS_OK;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return WS_EAGAIN;
    return errno == ECONNRESET ? WS_EEOF : WS_EIO;
  }
}

/* see ws.h */
int ws_tls_new(ws_tls **out, ws_tls_config *tc, int fd, const char *host) {
  static const ws_tls_io sock = {ws__tls_sock_send, ws__tls_sock_recv};
  int rc;
  if (out == NULL) return WS_EINVAL;
  *out = NULL;
  if (fd < 0) return WS_EINVAL;
  rc = ws_tls_new_io(out, tc, &sock, NULL, host);
  if (rc == WS_OK) (*out)->fd = fd;
  return rc;
}
#endif /* WS__HAVE_OS */

static int ws__tls_fail(ws_tls *t, int r, const char *what) {
  if (t->err[0] == '\0') {
    if (r == MBEDTLS_ERR_X509_CERT_VERIFY_FAILED) {
      char info[160], *s;
      uint32_t fl = mbedtls_ssl_get_verify_result(&t->ssl);
      info[0] = '\0';
      mbedtls_x509_crt_verify_info(info, sizeof info, "", fl);
      for (s = info; *s; s++) /* one line: "a; b" */
        if (*s == '\n') *s = s[1] ? ';' : '\0';
      mbedtls_snprintf(t->err, sizeof t->err,
                       "TLS certificate verification failed: %s", info);
    } else if (r == MBEDTLS_ERR_SSL_CONN_EOF) {
      mbedtls_snprintf(t->err, sizeof t->err, "%s: connection closed by peer", what);
    } else {
      ws__tls_seterr(t->err, sizeof t->err, what, r);
    }
  }
  return WS_EIO;
}

static int ws__tls_handshake(ws_tls *t) {
  int r = mbedtls_ssl_handshake(&t->ssl);
#ifdef MBEDTLS_ERR_SSL_RECEIVED_NEW_SESSION_TICKET
  while (r == MBEDTLS_ERR_SSL_RECEIVED_NEW_SESSION_TICKET)
    r = mbedtls_ssl_handshake(&t->ssl); /* as in ws_tls_read */
#endif
  if (r == 0) {
    t->hs_done = 1;
    t->want = 0;
    return WS_OK;
  }
  if (r == MBEDTLS_ERR_SSL_WANT_READ) {
    t->want = WS_TLS_WANT_READ;
    return WS_EAGAIN;
  }
  if (r == MBEDTLS_ERR_SSL_WANT_WRITE) {
    t->want = WS_TLS_WANT_WRITE;
    return WS_EAGAIN;
  }
  return ws__tls_fail(t, r, "TLS handshake failed");
}

/* see ws.h */
int ws_tls_read(ws_tls *t, void *buf, size_t cap, size_t *n) {
  int r;
  *n = 0;
  if (t->peer_closed) return WS_OK;
  if (!t->hs_done && (r = ws__tls_handshake(t)) != WS_OK) return r;
  if (cap > INT_MAX) cap = INT_MAX;
  for (;;) {
    r = mbedtls_ssl_read(&t->ssl, (unsigned char *)buf, cap);
    if (r > 0) {
      *n = (size_t)r;
      if (t->want == WS_TLS_WANT_WRITE) t->want = 0;
      return WS_OK;
    }
    if (r == 0 || r == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY ||
        r == MBEDTLS_ERR_SSL_CONN_EOF) {
      t->peer_closed = 1; /* end of stream */
      return WS_OK;
    }
    if (r == MBEDTLS_ERR_SSL_WANT_READ) return WS_EAGAIN;
    if (r == MBEDTLS_ERR_SSL_WANT_WRITE) {
      t->want = WS_TLS_WANT_WRITE;
      return WS_EAGAIN;
    }
#ifdef MBEDTLS_ERR_SSL_RECEIVED_NEW_SESSION_TICKET
    /* TLS 1.3 (mbedTLS 3.6): a ticket was processed; call again. */
    if (r == MBEDTLS_ERR_SSL_RECEIVED_NEW_SESSION_TICKET) continue;
#endif
    return ws__tls_fail(t, r, "TLS read failed");
  }
}

/* see ws.h */
int ws_tls_write(ws_tls *t, const void *buf, size_t len, size_t *n) {
  int r;
  size_t chunk;
  *n = 0;
  if (!t->hs_done && (r = ws__tls_handshake(t)) != WS_OK) return r;
  /* After WANT_WRITE, mbedTLS must be called again with the same bytes:
   * the caller's queue still starts with them, perhaps with more after. */
  chunk = t->wpend ? t->wpend : WS__MIN(len, (size_t)WS__TLS_CHUNK);
  if (chunk > len) chunk = len;
  if (chunk == 0) return WS_OK;
  for (;;) {
    r = mbedtls_ssl_write(&t->ssl, (const unsigned char *)buf, chunk);
    if (r >= 0) {
      *n = (size_t)r;
      t->wpend = 0;
      if (t->want == WS_TLS_WANT_READ) t->want = 0;
      return WS_OK;
    }
    if (r == MBEDTLS_ERR_SSL_WANT_WRITE || r == MBEDTLS_ERR_SSL_WANT_READ) {
      t->wpend = chunk;
      if (r == MBEDTLS_ERR_SSL_WANT_READ) t->want = WS_TLS_WANT_READ;
      return WS_EAGAIN;
    }
#ifdef MBEDTLS_ERR_SSL_RECEIVED_NEW_SESSION_TICKET
    if (r == MBEDTLS_ERR_SSL_RECEIVED_NEW_SESSION_TICKET) continue;
#endif
    return ws__tls_fail(t, r, "TLS write failed");
  }
}

/* see ws.h */
unsigned ws_tls_wants(const ws_tls *t) {
  if (t == NULL) return 0;
  return t->hs_done ? t->want : (unsigned)(WS_TLS_HANDSHAKING | t->want);
}

/* see ws.h */
int ws_tls_close(ws_tls *t) {
  if (t == NULL) return WS_EINVAL;
  if (!t->closed && t->hs_done && !t->io_failed)
    (void)mbedtls_ssl_close_notify(&t->ssl); /* best effort, non-blocking */
  t->closed = 1;
  return t->io_failed ? WS_EIO : WS_OK;
}

/* see ws.h */
const char *ws_tls_error(const ws_tls *t) { return t ? t->err : ""; }

/* see ws.h */
void ws_tls_free(ws_tls *t) {
  if (t == NULL) return;
  mbedtls_ssl_free(&t->ssl);
  mbedtls_free(t);
}

/* see ws.h */
int ws_tls_available(void) { return 1; }

#elif WS__HAVE_OS && !defined(WS_NO_LOOP)

/* Built without mbedTLS: the same names, refusing politely, so a program
 * can offer TLS options and say why they do not work. */
/* see ws.h */
int ws_tls_available(void) { return 0; }
/* see ws.h */
void ws_tls_options_init(ws_tls_options *o, int role) {
  memset(o, 0, sizeof *o);
  o->role = role;
}
/* see ws.h */
int ws_tls_config_new(ws_tls_config **out, const ws_tls_options *o,
                      char *err, size_t errcap) {
  static const char m[] = "built without TLS (needs mbedTLS and WS_ENABLE_MBEDTLS=1)";
  (void)o;
  if (out) *out = NULL;
  if (err && errcap) {
    size_t k = WS__MIN(errcap - 1, sizeof m - 1);
    memcpy(err, m, k);
    err[k] = '\0';
  }
  return WS_EINVAL;
}
/* see ws.h */
int ws_tls_config_wrap(ws_tls_config **out, int role, void *mbedtls_conf) {
  (void)role, (void)mbedtls_conf;
  if (out) *out = NULL;
  return WS_EINVAL;
}
/* see ws.h */
void *ws_tls_config_mbedtls(ws_tls_config *tc) { (void)tc; return NULL; }
/* see ws.h */
void ws_tls_config_free(ws_tls_config *tc) { (void)tc; }
/* see ws.h */
const char *ws_tls_error(const ws_tls *t) { (void)t; return ""; }

#endif /* WS_ENABLE_MBEDTLS */

/* ======================================================================
 * 6. Layer 2: the event loop
 *
 * Built on the public API only: `make check-layers` compiles this section
 * alone against ws.h. Names private to the loop start with ws__loop_,
 * ws__io, ws__be_, ws__tn, ws__topic, ws__sub.
 * ==================================================================== */
#if !defined(WS_NO_LOOP) && WS__HAVE_OS

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#if !defined(WS_LOOP_POLL) && !defined(WS_LOOP_EPOLL) && !defined(WS_LOOP_KQUEUE)
#if defined(__linux__)
#define WS_LOOP_EPOLL 1
#elif defined(__APPLE__) || defined(__FreeBSD__) || defined(__OpenBSD__) || \
    defined(__NetBSD__) || defined(__DragonFly__)
#define WS_LOOP_KQUEUE 1
#else
#define WS_LOOP_POLL 1
#endif
#endif

#if defined(WS_LOOP_EPOLL)
#include <sys/epoll.h>
#elif defined(WS_LOOP_KQUEUE)
#include <sys/event.h>
#else
#include <poll.h>
#endif

#define WS__LOOP_IN 1u
#define WS__LOOP_OUT 2u

/* io kinds */
enum { WS__IO_CONN = 1, WS__IO_LISTENER = 2, WS__IO_WAKE = 3, WS__IO_LINGER = 4 };
/* timer-node kinds */
enum { WS__TN_CONN = 1, WS__TN_TIMER = 2, WS__TN_LINGER = 3 };
/* connection flags */
enum {
  WS__LC_CONNECTING = 1, /* non-blocking connect() in progress */
  WS__LC_DEAD = 2,       /* on_close ran; released at the end of the turn */
  WS__LC_PEND = 4,       /* on the pending-update list */
  WS__LC_OWNED = 8,      /* memory from the loop's allocator */
  WS__LC_WAITED = 16,    /* output had to wait for the socket */
  WS__LC_DRAINED = 32    /* a read came back short: the socket is empty */
};

#define WS__LP(l) (&(l)->ws__lp)
#define WS__LC(c) ((ws_loop_conn *)(c))
#define WS__TN_NONE UINT32_MAX

/* The loop's one receive buffer, shared by its plain sockets. */
#ifndef WS__LOOP_RBUF
#define WS__LOOP_RBUF (256u * 1024)
#endif
#define WS__LOOP_NEVER UINT64_MAX

typedef struct ws__listener {
  struct ws__io io;
  struct ws__listener *next;
  ws_tls_config *tls; /* NULL: plain */
} ws__listener;

/* A finished connection's socket, half-closed, read to its end before it is
 * closed: closing with unread input makes the kernel send a reset, which
 * can destroy the close frame just sent before the peer reads it. */
typedef struct ws__linger {
  struct ws__io io;
  struct ws__tnode tn;
  struct ws__linger *next, *prev;
} ws__linger;

typedef struct ws__post_item {
  void (*fn)(ws_loop *l, void *arg);
  void *arg;
  struct ws__post_item *next;
} ws__post_item;

typedef struct ws__post_q {
  pthread_mutex_t mu;
  ws__post_item *head, *tail;
} ws__post_q;

struct ws__sub;
typedef struct ws__topic {
  struct ws__topic *hnext;
  struct ws__sub *head;
  size_t count, len;
  char name[1];
} ws__topic;

typedef struct ws__sub {
  ws__topic *t;
  ws_loop_conn *lc;
  struct ws__sub *tnext, *tprev, *cnext;
} ws__sub;

static uint64_t ws__loop_clock(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void *ws__loop_alloc(ws_loop *l, void *p, size_t n) {
  const ws_config *cfg = &WS__LP(l)->cfg.server;
  if (cfg->realloc) return cfg->realloc(p, n, cfg->alloc_ctx);
  if (n == 0) {
    free(p);
    return NULL;
  }
  return realloc(p, n);
}

/* An id for the calling thread, for the debug check only. pthread_t is
 * opaque, but it is an integer or a pointer on the systems this loop runs
 * on; pthread_equal would need the value stored as pthread_t in ws.h. */
static unsigned long ws__loop_self(void) {
  pthread_t t = pthread_self();
  unsigned long id = 0;
  memcpy(&id, &t, sizeof t < sizeof id ? sizeof t : sizeof id);
  return id;
}

#ifndef NDEBUG
#define WS__LOOP_THREAD(l) WS_ASSERT(WS__LP(l)->owner == ws__loop_self())
#else
#define WS__LOOP_THREAD(l) ((void)0)
#endif

static int ws__io_nonblock(int fd) {
  int fl = fcntl(fd, F_GETFL, 0);
  if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) return -1;
  fl = fcntl(fd, F_GETFD, 0);
  if (fl >= 0) (void)fcntl(fd, F_SETFD, fl | FD_CLOEXEC);
#ifdef SO_NOSIGPIPE
  {
    int one = 1;
    (void)setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &one, sizeof one);
  }
#endif
  return 0;
}

/* Backends --------------------------------------------------------------
 * One contract: create, set interest (0 removes), wait (fills ready[]),
 * destroy, name. Errors and hang-ups are reported as readable+writable so
 * the one read/write path finds them. */

#if defined(WS_LOOP_EPOLL)

static int ws__be_create(struct ws__loop_priv *p) {
  p->bfd = epoll_create1(EPOLL_CLOEXEC);
  if (p->bfd < 0) return WS_EIO;
  p->bev = malloc(sizeof(struct epoll_event) * (size_t)p->cfg.max_events);
  return p->bev ? WS_OK : WS_ENOMEM;
}

static int ws__be_set(struct ws__loop_priv *p, struct ws__io *io, unsigned ev) {
  struct epoll_event e;
  int op;
  if (ev == io->events) return WS_OK;
  memset(&e, 0, sizeof e); /* old kernels want a non-NULL event for DEL */
  e.events = (ev & WS__LOOP_IN ? EPOLLIN : 0u) | (ev & WS__LOOP_OUT ? EPOLLOUT : 0u);
  e.data.ptr = io;
  op = io->events == 0 ? EPOLL_CTL_ADD : ev == 0 ? EPOLL_CTL_DEL : EPOLL_CTL_MOD;
  if (epoll_ctl(p->bfd, op, io->fd, &e) < 0 && ev != 0) return WS_EIO;
  io->events = (unsigned char)ev;
  return WS_OK;
}

static int ws__be_wait(struct ws__loop_priv *p, int timeout) {
  struct epoll_event *ev = (struct epoll_event *)p->bev;
  int n = epoll_wait(p->bfd, ev, p->cfg.max_events, timeout), i;
  if (n < 0) return errno == EINTR ? 0 : WS_EIO;
  for (i = 0; i < n; i++) {
    unsigned e = 0;
    if (ev[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) e |= WS__LOOP_IN;
    if (ev[i].events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) e |= WS__LOOP_OUT;
    p->ready[i].io = (struct ws__io *)ev[i].data.ptr;
    p->ready[i].ev = e;
  }
  p->nready = n;
  return WS_OK;
}

static const char *ws__be_name(void) { return "epoll"; }
#define WS__BE_FD 1 /* a backend with an fd and an event array */

#elif defined(WS_LOOP_KQUEUE)

static int ws__be_create(struct ws__loop_priv *p) {
  p->bfd = kqueue();
  if (p->bfd < 0) return WS_EIO;
  (void)fcntl(p->bfd, F_SETFD, FD_CLOEXEC);
  p->bev = malloc(sizeof(struct kevent) * (size_t)p->cfg.max_events);
  return p->bev ? WS_OK : WS_ENOMEM;
}

static int ws__be_set(struct ws__loop_priv *p, struct ws__io *io, unsigned ev) {
  struct kevent ch[2];
  int n = 0;
  unsigned old = io->events;
  if ((ev & WS__LOOP_IN) != (old & WS__LOOP_IN)) {
    EV_SET(&ch[n], io->fd, EVFILT_READ, (ev & WS__LOOP_IN) ? EV_ADD : EV_DELETE,
           0, 0, io);
    n++;
  }
  if ((ev & WS__LOOP_OUT) != (old & WS__LOOP_OUT)) {
    EV_SET(&ch[n], io->fd, EVFILT_WRITE,
           (ev & WS__LOOP_OUT) ? EV_ADD : EV_DELETE, 0, 0, io);
    n++;
  }
  if (n && kevent(p->bfd, ch, n, NULL, 0, NULL) < 0 && ev != 0) return WS_EIO;
  io->events = (unsigned char)ev;
  return WS_OK;
}

static int ws__be_wait(struct ws__loop_priv *p, int timeout) {
  struct kevent *ev = (struct kevent *)p->bev;
  struct timespec ts, *tp = NULL;
  int n, i;
  if (timeout >= 0) {
    ts.tv_sec = timeout / 1000;
    ts.tv_nsec = (long)(timeout % 1000) * 1000000L;
    tp = &ts;
  }
  n = kevent(p->bfd, NULL, 0, ev, p->cfg.max_events, tp);
  if (n < 0) return errno == EINTR ? 0 : WS_EIO;
  for (i = 0; i < n; i++) {
    unsigned e = ev[i].filter == EVFILT_WRITE ? WS__LOOP_OUT : WS__LOOP_IN;
    if (ev[i].flags & (EV_EOF | EV_ERROR)) e = WS__LOOP_IN | WS__LOOP_OUT;
    p->ready[i].io = (struct ws__io *)ev[i].udata;
    p->ready[i].ev = e;
  }
  p->nready = n;
  return WS_OK;
}

static const char *ws__be_name(void) { return "kqueue"; }
#define WS__BE_FD 1

#else /* poll */

static int ws__be_create(struct ws__loop_priv *p) {
  p->bfd = -1;
  return WS_OK;
}

static int ws__be_set(struct ws__loop_priv *p, struct ws__io *io, unsigned ev) {
  struct pollfd *pf;
  if (ev == io->events) return WS_OK;
  if (io->events == 0) { /* add */
    if (p->pcount == p->pcap) {
      size_t cap = p->pcap ? p->pcap * 2 : 64;
      void *a = realloc(p->pfd, cap * sizeof(struct pollfd));
      void *b;
      if (a == NULL) return WS_ENOMEM;
      p->pfd = a;
      b = realloc(p->pio, cap * sizeof(struct ws__io *));
      if (b == NULL) return WS_ENOMEM;
      p->pio = (struct ws__io **)b;
      p->pcap = cap;
    }
    io->pidx = (int)p->pcount++;
    p->pio[io->pidx] = io;
  } else if (ev == 0) { /* remove: the last entry takes its place */
    size_t last = --p->pcount;
    pf = (struct pollfd *)p->pfd;
    if ((size_t)io->pidx != last) {
      pf[io->pidx] = pf[last];
      p->pio[io->pidx] = p->pio[last];
      p->pio[io->pidx]->pidx = io->pidx;
    }
    io->pidx = -1;
    io->events = 0;
    return WS_OK;
  }
  pf = (struct pollfd *)p->pfd + io->pidx;
  pf->fd = io->fd;
  pf->events = (short)((ev & WS__LOOP_IN ? POLLIN : 0) | (ev & WS__LOOP_OUT ? POLLOUT : 0));
  pf->revents = 0;
  io->events = (unsigned char)ev;
  return WS_OK;
}

static int ws__be_wait(struct ws__loop_priv *p, int timeout) {
  struct pollfd *pf = (struct pollfd *)p->pfd;
  int n = poll(pf, (nfds_t)p->pcount, timeout), k = 0;
  size_t i;
  if (n < 0) return errno == EINTR ? 0 : WS_EIO;
  for (i = 0; i < p->pcount && k < n && k < p->cfg.max_events; i++) {
    unsigned e = 0;
    if (!pf[i].revents) continue;
    if (pf[i].revents & (POLLIN | POLLERR | POLLHUP | POLLNVAL)) e |= WS__LOOP_IN;
    if (pf[i].revents & (POLLOUT | POLLERR | POLLHUP | POLLNVAL)) e |= WS__LOOP_OUT;
    p->ready[k].io = p->pio[i];
    p->ready[k].ev = e;
    k++;
  }
  p->nready = k;
  return WS_OK;
}

static void ws__be_destroy(struct ws__loop_priv *p) {
  free(p->pfd);
  free(p->pio);
  p->pfd = NULL;
  p->pio = NULL;
  p->pcount = p->pcap = 0;
}

static const char *ws__be_name(void) { return "poll"; }

#endif

#ifdef WS__BE_FD
static void ws__be_destroy(struct ws__loop_priv *p) {
  if (p->bfd >= 0) close(p->bfd);
  free(p->bev);
  p->bfd = -1;
  p->bev = NULL;
}
#endif

/* see ws.h */
const char *ws_loop_backend(void) { return ws__be_name(); }

/* see ws.h */
int ws_loop_backend_fd(const ws_loop *l) { return WS__LP(l)->bfd; }

/* Timer heap (a binary min-heap of nodes, each knowing its index) ------- */

static void ws__tn_swap(struct ws__loop_priv *p, size_t a, size_t b) {
  struct ws__tnode *t = p->heap[a];
  p->heap[a] = p->heap[b];
  p->heap[b] = t;
  p->heap[a]->idx = (uint32_t)a;
  p->heap[b]->idx = (uint32_t)b;
}

static void ws__tn_up(struct ws__loop_priv *p, size_t i) {
  while (i > 0 && p->heap[(i - 1) / 2]->when > p->heap[i]->when) {
    ws__tn_swap(p, i, (i - 1) / 2);
    i = (i - 1) / 2;
  }
}

static void ws__tn_down(struct ws__loop_priv *p, size_t i) {
  for (;;) {
    size_t m = i, a = 2 * i + 1, b = a + 1;
    if (a < p->hcount && p->heap[a]->when < p->heap[m]->when) m = a;
    if (b < p->hcount && p->heap[b]->when < p->heap[m]->when) m = b;
    if (m == i) return;
    ws__tn_swap(p, i, m);
    i = m;
  }
}

static void ws__tn_remove(struct ws__loop_priv *p, struct ws__tnode *t) {
  size_t i = t->idx, last;
  if (i == WS__TN_NONE) return;
  last = --p->hcount;
  if (i != last) {
    p->heap[i] = p->heap[last];
    p->heap[i]->idx = (uint32_t)i;
    ws__tn_down(p, i);
    ws__tn_up(p, i);
  }
  t->idx = WS__TN_NONE;
}

/* Sets a node's time (NEVER removes it). */
static int ws__tn_set(ws_loop *l, struct ws__tnode *t, uint64_t when) {
  struct ws__loop_priv *p = WS__LP(l);
  if (when == WS__LOOP_NEVER) {
    ws__tn_remove(p, t);
    return WS_OK;
  }
  if (t->idx == WS__TN_NONE) {
    if (p->hcount == p->hcap) {
      size_t cap = p->hcap ? p->hcap * 2 : 64;
      void *h = ws__loop_alloc(l, p->heap, cap * sizeof *p->heap);
      if (h == NULL) return WS_ENOMEM;
      p->heap = (struct ws__tnode **)h;
      p->hcap = cap;
    }
    t->when = when;
    t->idx = (uint32_t)p->hcount;
    p->heap[p->hcount++] = t;
    ws__tn_up(p, t->idx);
  } else if (when != t->when) {
    uint64_t old = t->when;
    t->when = when;
    if (when < old)
      ws__tn_up(p, t->idx);
    else
      ws__tn_down(p, t->idx);
  }
  return WS_OK;
}

/* see ws.h */
void ws_timer_start(ws_loop *l, ws_timer *t, uint64_t after_ms,
                    uint64_t repeat_ms,
                    void (*cb)(ws_loop *l, ws_timer *t, void *user),
                    void *user) {
  struct ws__timer_priv *tp = &t->ws__t;
  WS__LOOP_THREAD(l);
  if (tp->tn.kind != WS__TN_TIMER) {
    tp->tn.kind = WS__TN_TIMER;
    tp->tn.idx = WS__TN_NONE;
  }
  tp->repeat = repeat_ms;
  tp->cb = cb;
  tp->user = user;
  (void)ws__tn_set(l, &tp->tn, WS__LP(l)->now + after_ms);
}

/* see ws.h */
void ws_timer_stop(ws_loop *l, ws_timer *t) {
  WS__LOOP_THREAD(l);
  if (t->ws__t.tn.kind == WS__TN_TIMER) ws__tn_remove(WS__LP(l), &t->ws__t.tn);
}

/* Connections ------------------------------------------------------------ */

static int ws__loop_read(ws_conn *c, void *buf, size_t cap, size_t *n,
                         void *user) {
  ws_loop_conn *lc = WS__LC(c);
  (void)user;
#if WS_ENABLE_MBEDTLS
  if (lc->ws__l.tls) {
    int rc = ws_tls_read((ws_tls *)lc->ws__l.tls, buf, cap, n);
    if (rc == WS_OK && *n > 0) lc->ws__l.last_rx = (uint32_t)lc->ws__l.loop->ws__lp.now;
    return rc;
  }
#endif
  /* A read that came back short emptied the socket: the next one would
   * only say EAGAIN, so it is skipped (readiness is level-triggered: bytes
   * that arrive meanwhile bring another event). */
  if (lc->ws__l.io.flags & WS__LC_DRAINED) {
    lc->ws__l.io.flags &= (unsigned char)~WS__LC_DRAINED;
    return WS_EAGAIN;
  }
  for (;;) {
    ssize_t r = recv(lc->ws__l.io.fd, buf, cap, 0);
    if (r >= 0) {
      *n = (size_t)r;
      if (r > 0) {
        lc->ws__l.last_rx = (uint32_t)lc->ws__l.loop->ws__lp.now;
        if ((size_t)r < cap) lc->ws__l.io.flags |= WS__LC_DRAINED;
      }
      return WS_OK;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return WS_EAGAIN;
    return WS_EIO;
  }
}

/* Puts a connection on the list whose interest and timers are brought up
 * to date at the end of the current step: sends made from anywhere (another
 * connection's callback, a timer, a post) change what it waits for. */
static void ws__loop_touch(ws_loop_conn *lc) {
  struct ws__loop_conn_priv *q = &lc->ws__l;
  if (q->io.flags & (WS__LC_PEND | WS__LC_DEAD)) return;
  q->io.flags |= WS__LC_PEND;
  q->pend = q->loop->ws__lp.pend;
  q->loop->ws__lp.pend = lc;
}

/* Sends pieces on a plain socket in one call; a short count or
 * would-block marks the connection as having waited (for on_drain). */
static int ws__loop_sendv(ws_loop_conn *lc, const ws_iovec *iov, int cnt,
                          size_t *n) {
  struct iovec v[3];
  struct msghdr m;
  size_t total = 0;
  int i, flags = 0;
#ifdef MSG_NOSIGNAL
  flags = MSG_NOSIGNAL;
#endif
  for (i = 0; i < cnt; i++) {
    v[i].iov_base = (void *)(uintptr_t)iov[i].base;
    v[i].iov_len = iov[i].len;
    total += iov[i].len;
  }
  memset(&m, 0, sizeof m);
  m.msg_iov = v;
  m.msg_iovlen = cnt;
  for (;;) {
    /* One piece: send(), which spares the kernel the message header. */
    ssize_t r = cnt == 1 ? send(lc->ws__l.io.fd, v[0].iov_base, total, flags)
                         : sendmsg(lc->ws__l.io.fd, &m, flags);
    if (r >= 0) {
      *n = (size_t)r;
      if ((size_t)r < total) lc->ws__l.io.flags |= WS__LC_WAITED;
      return WS_OK;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      lc->ws__l.io.flags |= WS__LC_WAITED;
      return WS_EAGAIN;
    }
    return WS_EIO;
  }
}

static int ws__loop_write(ws_conn *c, const void *buf, size_t len, size_t *n,
                          void *user) {
  ws_loop_conn *lc = WS__LC(c);
  ws_iovec one;
  (void)user;
  ws__loop_touch(lc);
  if (lc->ws__l.io.flags & WS__LC_CONNECTING) return WS_EAGAIN;
#if WS_ENABLE_MBEDTLS
  if (lc->ws__l.tls) {
    int rc = ws_tls_write((ws_tls *)lc->ws__l.tls, buf, len, n);
    if (rc == WS_EAGAIN || (rc == WS_OK && *n < len))
      lc->ws__l.io.flags |= WS__LC_WAITED;
    return rc;
  }
#endif
  one.base = buf;
  one.len = len;
  return ws__loop_sendv(lc, &one, 1, n);
}

/* The pieces of one send (layer 1 passes at most 3): one sendmsg on a
 * plain socket; through TLS, one piece after another (a record each). */
static int ws__loop_writev(ws_conn *c, const ws_iovec *iov, int cnt,
                           size_t *n, void *user) {
  ws_loop_conn *lc = WS__LC(c);
  int i;
  if (cnt <= 3 && !lc->ws__l.tls) {
    ws__loop_touch(lc);
    if (lc->ws__l.io.flags & WS__LC_CONNECTING) return WS_EAGAIN;
    return ws__loop_sendv(lc, iov, cnt, n);
  }
  *n = 0;
  for (i = 0; i < cnt; i++) {
    size_t k = 0;
    int rc = ws__loop_write(c, iov[i].base, iov[i].len, &k, user);
    if (rc != WS_OK && rc != WS_EAGAIN) return rc;
    *n += k;
    if (rc == WS_EAGAIN || k < iov[i].len) return *n ? WS_OK : WS_EAGAIN;
  }
  return WS_OK;
}

static void ws__sub_drop_all(ws_loop_conn *lc);

static void ws__linger_end(ws_loop *l, ws__linger *g) {
  struct ws__loop_priv *p = WS__LP(l);
  (void)ws__be_set(p, &g->io, 0);
  close(g->io.fd);
  ws__tn_remove(p, &g->tn);
  if (g->prev)
    g->prev->next = g->next;
  else
    p->lingering = g->next;
  if (g->next) g->next->prev = g->prev;
  p->nlinger--;
  ws__loop_alloc(l, g, 0);
}

/* Hands a finished connection's socket over to lingering: FIN now, then
 * read and drop until the peer's FIN or the linger time. A socket that
 * failed, or the end of a loop, closes at once. */
static void ws__loop_linger(ws_loop *l, int fd, int err) {
  struct ws__loop_priv *p = WS__LP(l);
  ws__linger *g = NULL;
  if (fd < 0) return;
  if (err != WS_EIO && p->cfg.linger_ms && !p->freeing &&
      shutdown(fd, SHUT_WR) == 0)
    g = (ws__linger *)ws__loop_alloc(l, NULL, sizeof *g);
  if (g == NULL) {
    close(fd);
    return;
  }
  memset(g, 0, sizeof *g);
  g->io.fd = fd;
  g->io.pidx = -1;
  g->io.kind = WS__IO_LINGER;
  g->tn.kind = WS__TN_LINGER;
  g->tn.idx = WS__TN_NONE;
  g->next = (ws__linger *)p->lingering;
  if (g->next) g->next->prev = g;
  p->lingering = g;
  p->nlinger++;
  if (ws__be_set(p, &g->io, WS__LOOP_IN) != WS_OK ||
      ws__tn_set(l, &g->tn, p->now + p->cfg.linger_ms) != WS_OK)
    ws__linger_end(l, g);
}

static void ws__linger_read(ws_loop *l, ws__linger *g) {
  char sink[4096];
  for (;;) {
    ssize_t r = recv(g->io.fd, sink, sizeof sink, 0);
    if (r > 0) continue;
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    ws__linger_end(l, g); /* end of stream or an error */
    return;
  }
}

/* on_close of every loop connection: the application's, then the loop's
 * part. The memory stays until the end of the turn, so code still holding
 * the pointer in this turn finds it marked dead rather than freed. */
static void ws__loop_on_close(ws_conn *c, int code, const char *reason,
                              size_t len, void *user) {
  ws_loop_conn *lc = WS__LC(c);
  struct ws__loop_conn_priv *q = &lc->ws__l;
  ws_loop *l = q->loop;
  struct ws__loop_priv *p = WS__LP(l);
  int err = ws_conn_error(c);
  /* A plain connection whose closing handshake completed has nothing more
   * coming: it closes at once. The others linger (see ws__loop_linger). */
  int linger = err != WS_OK || q->tls != NULL;
  if (p->cb.conn.on_close) p->cb.conn.on_close(c, code, reason, len, user);
  q->io.flags |= WS__LC_DEAD;
  (void)ws__be_set(p, &q->io, 0);
#if WS_ENABLE_MBEDTLS
  if (q->tls) { /* close_notify; a TLS failure on a sound socket lingers */
    err = ws_tls_close((ws_tls *)q->tls);
    ws_tls_free((ws_tls *)q->tls);
    q->tls = NULL;
  }
#endif
  if (linger)
    ws__loop_linger(l, q->io.fd, err);
  else if (q->io.fd >= 0)
    close(q->io.fd);
  q->io.fd = -1;
  ws__tn_remove(p, &q->tn);
  ws__sub_drop_all(lc);
  /* From the live list to the dead list. */
  if (q->prev)
    q->prev->ws__l.next = q->next;
  else
    p->conns = q->next;
  if (q->next) q->next->ws__l.prev = q->prev;
  q->next = p->dead;
  q->prev = NULL;
  p->dead = lc;
  p->nconns--;
  if (p->paused) { /* a file descriptor is free again: accept again */
    ws__listener *ls;
    p->paused = 0;
    for (ls = (ws__listener *)p->listeners; ls; ls = ls->next)
      if (ls->io.fd >= 0) (void)ws__be_set(p, &ls->io, WS__LOOP_IN);
  }
}

static void ws__loop_release_dead(ws_loop *l) {
  struct ws__loop_priv *p = WS__LP(l);
  while (p->dead) {
    ws_loop_conn *lc = p->dead;
    p->dead = lc->ws__l.next;
    ws_conn_free(&lc->conn);
    if (lc->ws__l.io.flags & WS__LC_OWNED)
      ws__loop_alloc(l, lc, 0);
    else if (p->cb.free_conn)
      p->cb.free_conn(l, lc, p->user);
  }
}

/* A new connection record around fd, registered, not yet started. */
static ws_loop_conn *ws__loop_new_conn(ws_loop *l, int fd, const ws_config *cfg,
                                       void *user) {
  struct ws__loop_priv *p = WS__LP(l);
  ws_loop_conn *lc;
  int owned = 0;
  if (p->cfg.max_conns && p->nconns >= p->cfg.max_conns) return NULL;
  if (p->cb.alloc_conn) {
    lc = p->cb.alloc_conn(l, p->user);
  } else {
    lc = (ws_loop_conn *)ws__loop_alloc(l, NULL, sizeof *lc);
    owned = 1;
  }
  if (lc == NULL) return NULL;
  memset(&lc->ws__l, 0, sizeof lc->ws__l);
  /* The config and callbacks are the loop's: shared, not copied. */
  if (ws_conn_init(&lc->conn, cfg, &p->ccb, user) != WS_OK) {
    if (owned)
      ws__loop_alloc(l, lc, 0);
    else if (p->cb.free_conn)
      p->cb.free_conn(l, lc, p->user);
    return NULL;
  }
  lc->ws__l.io.flags = (unsigned char)(owned ? WS__LC_OWNED : 0);
  lc->ws__l.loop = l;
  lc->ws__l.io.fd = fd;
  lc->ws__l.io.pidx = -1;
  lc->ws__l.io.kind = WS__IO_CONN;
  lc->ws__l.tn.kind = WS__TN_CONN;
  lc->ws__l.tn.idx = WS__TN_NONE;
  lc->ws__l.last_rx = (uint32_t)p->now;
  lc->ws__l.next = p->conns;
  if (p->conns) p->conns->ws__l.prev = lc;
  p->conns = lc;
  p->nconns++;
  return lc;
}

/* Undoes ws__loop_new_conn for a connection that never started. */
static void ws__loop_discard(ws_loop *l, ws_loop_conn *lc) {
  struct ws__loop_priv *p = WS__LP(l);
  struct ws__loop_conn_priv *q = &lc->ws__l;
  (void)ws__be_set(p, &q->io, 0);
#if WS_ENABLE_MBEDTLS
  ws_tls_free((ws_tls *)q->tls);
  q->tls = NULL;
#endif
  if (q->prev)
    q->prev->ws__l.next = q->next;
  else
    p->conns = q->next;
  if (q->next) q->next->ws__l.prev = q->prev;
  p->nconns--;
  ws_conn_free(&lc->conn);
  if (q->io.flags & WS__LC_OWNED)
    ws__loop_alloc(l, lc, 0);
  else if (p->cb.free_conn)
    p->cb.free_conn(l, lc, p->user);
}

/* Brings a connection's interest and timer up to date, running its timers
 * when due. */
static void ws__loop_update(ws_loop *l, ws_loop_conn *lc) {
  struct ws__loop_priv *p = WS__LP(l);
  struct ws__loop_conn_priv *q = &lc->ws__l;
  ws_conn *c = &lc->conn;
  uint64_t when;
  unsigned ev;
  int i;
  for (i = 0; i < 3; i++) {
    if (q->io.flags & WS__LC_DEAD) return;
    when = ws_conn_next_deadline(c);
    if (when > p->now) break;
    if (ws_conn_tick(c, p->now) == WS_ECLOSED) return;
  }
  if (q->io.flags & WS__LC_DEAD) return;
  if (p->cfg.idle_timeout_ms && ws_conn_state(c) == WS_STATE_OPEN) {
    /* ms since the last input (32 bits, wrapping: differences only) */
    uint32_t quiet = (uint32_t)p->now - q->last_rx;
    uint64_t idle = p->now;
    if (quiet < p->cfg.idle_timeout_ms) idle += p->cfg.idle_timeout_ms - quiet;
    if (quiet >= p->cfg.idle_timeout_ms) {
      if (ws_close(c, WS_CLOSE_GOING_AWAY, "idle", 4) == WS_ECLOSED ||
          (q->io.flags & WS__LC_DEAD))
        return;
      when = ws_conn_next_deadline(c);
      if (when <= p->now) when = p->now;
    } else if (idle < when) {
      when = idle;
    }
  }
  if (q->io.flags & WS__LC_CONNECTING)
    ev = WS__LOOP_OUT;
  else
    ev = (ws_conn_want_read(c) ? WS__LOOP_IN : 0u) |
         (ws_conn_want_write(c) ? WS__LOOP_OUT : 0u);
#if WS_ENABLE_MBEDTLS
  if (q->tls && !(q->io.flags & WS__LC_CONNECTING)) {
    unsigned w = ws_tls_wants((const ws_tls *)q->tls);
    if (w & WS_TLS_HANDSHAKING) ev = 0; /* the TLS handshake decides */
    if (w & WS_TLS_WANT_READ) ev |= WS__LOOP_IN;
    if (w & WS_TLS_WANT_WRITE) ev |= WS__LOOP_OUT;
  }
#endif
  if (ev != q->io.events && ws__be_set(p, &q->io, ev) != WS_OK) {
    ws_conn_abort(c, WS_EIO);
    return;
  }
  if (ws__tn_set(l, &q->tn, when) != WS_OK) ws_conn_abort(c, WS_ENOMEM);
}

static void ws__loop_flush_pending(ws_loop *l) {
  struct ws__loop_priv *p = WS__LP(l);
  while (p->pend) {
    ws_loop_conn *lc = p->pend;
    p->pend = lc->ws__l.pend;
    lc->ws__l.io.flags &= (unsigned char)~WS__LC_PEND;
    ws__loop_update(l, lc);
  }
}

/* Input on a connection. A plain socket whose connection holds no input is
 * read into the loop's one receive buffer and processed there, in place:
 * no per-connection buffer is allocated for whole frames. Anything else
 * (TLS, a handshake, a frame or message still arriving, end of stream, an
 * error) goes through the connection's own read. */
static int ws__loop_readable(ws_loop *l, ws_loop_conn *lc) {
  struct ws__loop_priv *p = WS__LP(l);
  struct ws__loop_conn_priv *q = &lc->ws__l;
  ws_conn *c = &lc->conn;
  int i, rc = WS_OK;
  for (i = 0; i < 16; i++) {
    ssize_t r;
    if (q->tls || p->rbusy || ws_conn_state(c) != WS_STATE_OPEN ||
        ws_conn_buffered(c) != 0 || !ws_conn_want_read(c))
      return ws_conn_on_readable(c);
    if (p->rbuf == NULL &&
        (p->rbuf = (unsigned char *)ws__loop_alloc(l, NULL, WS__LOOP_RBUF)) == NULL)
      return ws_conn_on_readable(c);
    r = recv(q->io.fd, p->rbuf, WS__LOOP_RBUF, 0);
    if (r <= 0) {
      if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return rc;
      if (r < 0 && errno == EINTR) continue;
      return ws_conn_on_readable(c); /* its own read meets the end or error */
    }
    q->last_rx = (uint32_t)p->now;
    p->rbusy = 1;
    rc = ws_conn_feed_inplace(c, p->rbuf, (size_t)r);
    p->rbusy = 0;
    if (rc == WS_ECLOSED || (q->io.flags & WS__LC_DEAD)) return WS_ECLOSED;
    if ((size_t)r < WS__LOOP_RBUF) break; /* the socket is empty */
  }
  return rc;
}

/* Readiness on a connection. */
static void ws__loop_conn_event(ws_loop *l, ws_loop_conn *lc, unsigned ev) {
  struct ws__loop_priv *p = WS__LP(l);
  struct ws__loop_conn_priv *q = &lc->ws__l;
  ws_conn *c = &lc->conn;
  if (q->io.flags & WS__LC_CONNECTING) {
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(q->io.fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) err = errno;
    if (err == EINPROGRESS || err == EALREADY || err == EINTR) return;
    q->io.flags &= (unsigned char)~WS__LC_CONNECTING;
    if (err != 0) {
      ws_conn_abort(c, WS_EIO);
      return;
    }
    ev = WS__LOOP_OUT;
  }
  q->io.flags &= (unsigned char)~WS__LC_DRAINED; /* a new event: read */
  if (ev & WS__LOOP_IN) {
    if (ws__loop_readable(l, lc) == WS_ECLOSED || (q->io.flags & WS__LC_DEAD)) return;
  }
  if (ev & WS__LOOP_OUT) {
    size_t before = ws_conn_queued(c);
    if (ws_conn_on_writable(c) == WS_ECLOSED || (q->io.flags & WS__LC_DEAD)) return;
    if (before > 0 && ws_conn_queued(c) == 0 && (q->io.flags & WS__LC_WAITED)) {
      q->io.flags &= (unsigned char)~WS__LC_WAITED;
      if (p->cb.on_drain && ws_conn_state(c) == WS_STATE_OPEN)
        p->cb.on_drain(c, ws_conn_user(c));
      if (q->io.flags & WS__LC_DEAD) return;
    }
    /* Input paused for backpressure may go on now. */
    if (ws_conn_want_read(c) && !(ev & WS__LOOP_IN)) {
      q->io.flags &= (unsigned char)~WS__LC_DRAINED;
      if (ws_conn_on_readable(c) == WS_ECLOSED || (q->io.flags & WS__LC_DEAD))
        return;
    }
  }
  ws__loop_touch(lc);
}

/* Starts a server connection on fd with `data` already read. */
static int ws__loop_start_server(ws_loop *l, int fd, const void *data,
                                 size_t len, void *user, ws_conn **out) {
  struct ws__loop_priv *p = WS__LP(l);
  ws_loop_conn *lc;
  int rc;
  lc = ws__loop_new_conn(l, fd, &p->cfg.server, user);
  if (out) *out = NULL;
  if (lc == NULL) return WS_ENOMEM;
  if (ws__be_set(p, &lc->ws__l.io, WS__LOOP_IN) != WS_OK) {
    lc->ws__l.io.fd = -1; /* the caller still owns fd */
    ws__loop_discard(l, lc);
    return WS_EIO;
  }
  if (len > 0) {
    rc = ws_conn_feed(&lc->conn, data, len);
    if (rc == WS_ECLOSED || (lc->ws__l.io.flags & WS__LC_DEAD)) return WS_ECLOSED;
  }
  ws__loop_touch(lc);
  if (out) *out = &lc->conn;
  return WS_OK;
}

static void ws__loop_accept(ws_loop *l, ws__listener *ls) {
  struct ws__loop_priv *p = WS__LP(l);
  int i;
  for (i = 0; i < 64 && !p->shutting; i++) {
#if defined(__linux__) && defined(_GNU_SOURCE) && defined(SOCK_NONBLOCK)
    /* Non-blocking and close-on-exec at once; TCP_NODELAY comes from the
     * listener (Linux copies it to accepted sockets). */
    int fd = accept4(ls->io.fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
#define WS__ACCEPT4 1
#else
    int fd = accept(ls->io.fd, NULL, NULL), one = 1;
#endif
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
          errno == ENOMEM) {
        /* Out of descriptors: stop accepting until a connection ends,
         * instead of spinning on a listener that stays readable. */
        ws__listener *it;
        p->paused = 1;
        for (it = (ws__listener *)p->listeners; it; it = it->next)
          if (it->io.fd >= 0) (void)ws__be_set(p, &it->io, 0);
      }
      return;
    }
#ifndef WS__ACCEPT4
    if (ws__io_nonblock(fd) < 0) {
      close(fd);
      continue;
    }
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
#endif
    {
      ws_conn *c = NULL;
      if (ws__loop_start_server(l, fd, NULL, 0, p->user, &c) == WS_ENOMEM) {
        close(fd); /* refused: max_conns, or no memory */
        continue;
      }
#if WS_ENABLE_MBEDTLS
      if (c && ls->tls) { /* nothing was read yet: TLS goes under it now */
        ws_tls *t = NULL;
        if (ws_tls_new(&t, ls->tls, fd, NULL) != WS_OK)
          ws_conn_abort(c, WS_ENOMEM);
        else
          WS__LC(c)->ws__l.tls = t;
      }
#else
      (void)c;
#endif
    }
  }
}

/* Listeners ---------------------------------------------------------------- */

static int ws__loop_add_listener(ws_loop *l, int fd, ws_tls_config *tls) {
  struct ws__loop_priv *p = WS__LP(l);
  ws__listener *ls;
  if (ws__io_nonblock(fd) < 0) return WS_EIO;
  ls = (ws__listener *)ws__loop_alloc(l, NULL, sizeof *ls);
  if (ls == NULL) return WS_ENOMEM;
  memset(ls, 0, sizeof *ls);
  ls->io.fd = fd;
  ls->io.pidx = -1;
  ls->io.kind = WS__IO_LISTENER;
  ls->tls = tls;
  if (ws__be_set(p, &ls->io, WS__LOOP_IN) != WS_OK) {
    ws__loop_alloc(l, ls, 0);
    return WS_EIO;
  }
  ls->next = (ws__listener *)p->listeners;
  p->listeners = ls;
  return WS_OK;
}

/* A numeric IPv4 or IPv6 host and a port as a socket address; 0, or -1
 * when host is not a numeric address. */
static int ws__loop_numeric(const char *host, unsigned port,
                            struct sockaddr_storage *ss, socklen_t *alen) {
  struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
  struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
  memset(ss, 0, sizeof *ss);
  if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
    a4->sin_family = AF_INET;
    a4->sin_port = htons((uint16_t)port);
    *alen = sizeof *a4;
  } else if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
    a6->sin6_family = AF_INET6;
    a6->sin6_port = htons((uint16_t)port);
    *alen = sizeof *a6;
  } else {
    return -1;
  }
  return 0;
}

/* see ws.h */
int ws_loop_listen_fd(ws_loop *l, int fd) {
  WS__LOOP_THREAD(l);
  if (fd < 0) return WS_EINVAL;
  return ws__loop_add_listener(l, fd, NULL);
}

static int ws__loop_listen(ws_loop *l, const char *host, unsigned port,
                           ws_tls_config *tls, unsigned *bound_port) {
  struct sockaddr_storage ss;
  struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
  struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
  socklen_t alen;
  int fd, one = 1, rc;
  WS__LOOP_THREAD(l);
  if (port > 65535) return WS_EINVAL;
  if (host == NULL) host = "::";
  if (ws__loop_numeric(host, port, &ss, &alen) != 0) return WS_EINVAL;
  fd = socket(ss.ss_family, SOCK_STREAM, 0);
  if (fd < 0) return WS_EIO;
  (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (ss.ss_family == AF_INET6) {
    int v6only = strcmp(host, "::") != 0;
    (void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof v6only);
  }
  if (bind(fd, (struct sockaddr *)&ss, alen) < 0 ||
      listen(fd, WS__LP(l)->cfg.backlog) < 0) {
    int e = errno;
    close(fd);
    errno = e;
    return WS_EIO;
  }
  if (bound_port) {
    alen = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &alen) == 0)
      *bound_port = ntohs(ss.ss_family == AF_INET ? a4->sin_port : a6->sin6_port);
  }
  rc = ws__loop_add_listener(l, fd, tls);
  if (rc != WS_OK) close(fd);
  return rc;
}

/* see ws.h */
int ws_loop_listen(ws_loop *l, const char *host, unsigned port,
                   unsigned *bound_port) {
  return ws__loop_listen(l, host, port, NULL, bound_port);
}

/* see ws.h */
int ws_loop_listen_tls(ws_loop *l, const char *host, unsigned port,
                       ws_tls_config *tls, unsigned *bound_port) {
#if WS_ENABLE_MBEDTLS
  if (tls == NULL) return WS_EINVAL;
  return ws__loop_listen(l, host, port, tls, bound_port);
#else
  (void)l, (void)host, (void)port, (void)tls, (void)bound_port;
  return WS_EINVAL;
#endif
}

/* Connecting --------------------------------------------------------------- */

/* Splits "ws[s]://host[:port][/path]" into its parts (host without
 * brackets); *tls is 1 for wss://. */
static int ws__loop_parse_url(const char *url, char *host, size_t hcap,
                              unsigned *port, const char **path, int *tls) {
  const char *h, *e, *colon = NULL;
  size_t n;
  if (strncmp(url, "ws://", 5) == 0) {
    *tls = 0;
    h = url + 5;
  } else if (strncmp(url, "wss://", 6) == 0) {
    *tls = 1;
    h = url + 6;
  } else {
    return WS_EINVAL;
  }
  if (*h == '[') {
    e = strchr(h, ']');
    if (e == NULL) return WS_EINVAL;
    n = (size_t)(e - h - 1);
    if (n == 0 || n >= hcap) return WS_EINVAL;
    memcpy(host, h + 1, n);
    e++;
    if (*e == ':') colon = e;
  } else {
    e = h;
    while (*e && *e != ':' && *e != '/' && *e != '?') e++;
    n = (size_t)(e - h);
    if (n == 0 || n >= hcap) return WS_EINVAL;
    memcpy(host, h, n);
    if (*e == ':') colon = e;
  }
  host[n] = '\0';
  *port = *tls ? 443 : 80;
  if (colon) {
    unsigned long v = 0;
    e = colon + 1;
    if (*e < '0' || *e > '9') return WS_EINVAL;
    while (*e >= '0' && *e <= '9') {
      v = v * 10 + (unsigned long)(*e - '0');
      if (v > 65535) return WS_EINVAL;
      e++;
    }
    if (v == 0) return WS_EINVAL;
    *port = (unsigned)v;
  }
  if (*e != '\0' && *e != '/' && *e != '?') return WS_EINVAL;
  *path = *e ? e : "/";
  return WS_OK;
}

/* see ws.h */
int ws_loop_connect(ws_loop *l, const char *url, const ws_client_opts *o,
                    void *user, ws_conn **out) {
  struct ws__loop_priv *p = WS__LP(l);
  char host[256], hosthdr[300], pathbuf[2048];
  const char *path;
  unsigned port;
  struct sockaddr_storage ss;
  socklen_t alen = 0;
  ws_client_opts opts;
  ws_loop_conn *lc;
  int fd, one = 1, rc, tls = 0;
  unsigned defport;
  ws_tls_config *tc = NULL;
  WS__LOOP_THREAD(l);
  if (out) *out = NULL;
  if (url == NULL) return WS_EINVAL;
  if (ws__loop_parse_url(url, host, sizeof host, &port, &path, &tls) != WS_OK)
    return WS_EINVAL;
  defport = tls ? 443 : 80;
  if (tls) {
#if WS_ENABLE_MBEDTLS
    tc = p->cfg.tls_client;
    if (tc == NULL) { /* verification on, the system's CAs */
      if (p->tls_default == NULL) {
        ws_tls_options to;
        ws_tls_config *d = NULL;
        ws_tls_options_init(&to, WS_CLIENT);
        if (ws_tls_config_new(&d, &to, NULL, 0) != WS_OK) return WS_EINVAL;
        p->tls_default = d;
      }
      tc = (ws_tls_config *)p->tls_default;
    }
#else
    return WS_EINVAL;
#endif
  }
  if (strlen(path) >= sizeof pathbuf) return WS_EINVAL;
  memcpy(pathbuf, path, strlen(path) + 1);
  if (ws__loop_numeric(host, port, &ss, &alen) != 0) {
    /* A name: getaddrinfo() may block; numeric hosts never do. */
    struct addrinfo hints, *res = NULL;
    char service[8];
    memset(&hints, 0, sizeof hints);
    hints.ai_socktype = SOCK_STREAM;
    snprintf(service, sizeof service, "%u", port);
    if (getaddrinfo(host, service, &hints, &res) != 0 || res == NULL)
      return WS_EIO;
    memcpy(&ss, res->ai_addr, res->ai_addrlen);
    alen = (socklen_t)res->ai_addrlen;
    freeaddrinfo(res);
  }
  if (ss.ss_family == AF_INET6)
    snprintf(hosthdr, sizeof hosthdr, port == defport ? "[%s]" : "[%s]:%u", host, port);
  else
    snprintf(hosthdr, sizeof hosthdr, port == defport ? "%s" : "%s:%u", host, port);
  fd = socket(ss.ss_family, SOCK_STREAM, 0);
  if (fd < 0) return WS_EIO;
  if (ws__io_nonblock(fd) < 0) {
    close(fd);
    return WS_EIO;
  }
  (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (connect(fd, (struct sockaddr *)&ss, alen) < 0 && errno != EINPROGRESS &&
      errno != EINTR) {
    close(fd);
    return WS_EIO;
  }
  lc = ws__loop_new_conn(l, fd, &p->cfg.client, user);
  if (lc == NULL) {
    close(fd);
    return WS_ENOMEM;
  }
  lc->ws__l.io.flags |= WS__LC_CONNECTING;
#if WS_ENABLE_MBEDTLS
  if (tc) {
    ws_tls *t = NULL;
    if ((rc = ws_tls_new(&t, tc, fd, host)) != WS_OK) {
      ws__loop_discard(l, lc);
      close(fd);
      return rc;
    }
    lc->ws__l.tls = t;
  }
#else
  (void)tc;
#endif
  if (o)
    opts = *o;
  else
    memset(&opts, 0, sizeof opts);
  if (opts.host == NULL) opts.host = hosthdr;
  if (opts.path == NULL) opts.path = pathbuf;
  rc = ws_client_start(&lc->conn, &opts); /* queued until connected */
  if (rc != WS_OK || ws__be_set(p, &lc->ws__l.io, WS__LOOP_OUT) != WS_OK) {
    ws__loop_discard(l, lc);
    close(fd);
    return rc != WS_OK ? rc : WS_EIO;
  }
  ws__loop_touch(lc);
  if (out) *out = &lc->conn;
  return WS_OK;
}

/* see ws.h */
int ws_loop_adopt(ws_loop *l, int fd, const void *data, size_t len,
                  void *user, ws_conn **out) {
  int one = 1;
  WS__LOOP_THREAD(l);
  if (fd < 0 || (data == NULL && len > 0)) return WS_EINVAL;
  if (ws__io_nonblock(fd) < 0) return WS_EINVAL;
  (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return ws__loop_start_server(l, fd, data, len, user, out);
}

/* Topics ------------------------------------------------------------------- */

static size_t ws__topic_hash(const char *s, size_t n) {
  size_t h = 2166136261u, i;
  for (i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 16777619u;
  return h;
}

static ws__topic **ws__topic_slot(struct ws__loop_priv *p, const char *name,
                                  size_t n) {
  ws__topic **t;
  if (p->tcap == 0) return NULL;
  t = (ws__topic **)&p->topics[ws__topic_hash(name, n) & (p->tcap - 1)];
  while (*t && ((*t)->len != n || memcmp((*t)->name, name, n) != 0))
    t = &(*t)->hnext;
  return t;
}

static ws__topic *ws__topic_get(ws_loop *l, const char *name, int create) {
  struct ws__loop_priv *p = WS__LP(l);
  size_t n = strlen(name);
  ws__topic **slot = ws__topic_slot(p, name, n), *t;
  if (slot && *slot) return *slot;
  if (!create) return NULL;
  if (p->ntopics + 1 > p->tcap) { /* grow and rehash */
    size_t cap = p->tcap ? p->tcap * 2 : 16, i;
    void **nt = (void **)ws__loop_alloc(l, NULL, cap * sizeof *nt);
    if (nt == NULL) return NULL;
    memset(nt, 0, cap * sizeof *nt);
    for (i = 0; i < p->tcap; i++) {
      ws__topic *it = (ws__topic *)p->topics[i], *next;
      for (; it; it = next) {
        size_t b = ws__topic_hash(it->name, it->len) & (cap - 1);
        next = it->hnext;
        it->hnext = (ws__topic *)nt[b];
        nt[b] = it;
      }
    }
    ws__loop_alloc(l, p->topics, 0);
    p->topics = nt;
    p->tcap = cap;
    slot = ws__topic_slot(p, name, n);
  }
  t = (ws__topic *)ws__loop_alloc(l, NULL, sizeof *t + n);
  if (t == NULL) return NULL;
  memset(t, 0, sizeof *t);
  memcpy(t->name, name, n + 1);
  t->len = n;
  *slot = t;
  p->ntopics++;
  return t;
}

static void ws__topic_drop_if_empty(ws_loop *l, ws__topic *t) {
  struct ws__loop_priv *p = WS__LP(l);
  ws__topic **slot;
  if (t->count) return;
  slot = ws__topic_slot(p, t->name, t->len);
  if (slot && *slot == t) *slot = t->hnext;
  p->ntopics--;
  ws__loop_alloc(l, t, 0);
}

static void ws__sub_unlink(ws_loop *l, ws__sub *s) {
  ws__topic *t = s->t;
  if (s->tprev)
    s->tprev->tnext = s->tnext;
  else
    t->head = s->tnext;
  if (s->tnext) s->tnext->tprev = s->tprev;
  t->count--;
  ws__topic_drop_if_empty(l, t);
  ws__loop_alloc(l, s, 0);
}

static void ws__sub_drop_all(ws_loop_conn *lc) {
  ws__sub *s = (ws__sub *)lc->ws__l.subs;
  while (s) {
    ws__sub *next = s->cnext;
    ws__sub_unlink(lc->ws__l.loop, s);
    s = next;
  }
  lc->ws__l.subs = NULL;
}

/* see ws.h */
int ws_loop_subscribe(ws_conn *c, const char *topic) {
  ws_loop_conn *lc = WS__LC(c);
  ws_loop *l = lc->ws__l.loop;
  ws__topic *t;
  ws__sub *s;
  if (topic == NULL || l == NULL || (lc->ws__l.io.flags & WS__LC_DEAD))
    return WS_EINVAL;
  WS__LOOP_THREAD(l);
  for (s = (ws__sub *)lc->ws__l.subs; s; s = s->cnext)
    if (strcmp(s->t->name, topic) == 0) return WS_OK;
  t = ws__topic_get(l, topic, 1);
  if (t == NULL) return WS_ENOMEM;
  s = (ws__sub *)ws__loop_alloc(l, NULL, sizeof *s);
  if (s == NULL) {
    ws__topic_drop_if_empty(l, t);
    return WS_ENOMEM;
  }
  s->t = t;
  s->lc = lc;
  s->tprev = NULL;
  s->tnext = t->head;
  if (t->head) t->head->tprev = s;
  t->head = s;
  t->count++;
  s->cnext = (ws__sub *)lc->ws__l.subs;
  lc->ws__l.subs = s;
  return WS_OK;
}

/* see ws.h */
int ws_loop_unsubscribe(ws_conn *c, const char *topic) {
  ws_loop_conn *lc = WS__LC(c);
  ws__sub **sp;
  if (topic == NULL || lc->ws__l.loop == NULL) return WS_EINVAL;
  WS__LOOP_THREAD(lc->ws__l.loop);
  for (sp = (ws__sub **)&lc->ws__l.subs; *sp; sp = &(*sp)->cnext) {
    if (strcmp((*sp)->t->name, topic) == 0) {
      ws__sub *s = *sp;
      *sp = s->cnext;
      ws__sub_unlink(lc->ws__l.loop, s);
      return WS_OK;
    }
  }
  return WS_EINVAL;
}

/* see ws.h */
size_t ws_loop_topic_size(ws_loop *l, const char *topic) {
  ws__topic *t;
  WS__LOOP_THREAD(l);
  t = topic ? ws__topic_get(l, topic, 0) : NULL;
  return t ? t->count : 0;
}

/* see ws.h */
int ws_loop_publish(ws_loop *l, const char *topic, int op, const void *data,
                    size_t len, size_t *sent) {
  ws__topic *t;
  ws__sub *s, *next;
  unsigned char small[4096], *frame;
  size_t hl, n = 0;
  WS__LOOP_THREAD(l);
  if (sent) *sent = 0;
  if (topic == NULL || (op != WS_OP_TEXT && op != WS_OP_BINARY) ||
      (data == NULL && len > 0))
    return WS_EINVAL;
  if (op == WS_OP_TEXT) {
    uint32_t st = WS_UTF8_INIT;
    if (ws_utf8_check(&st, data, len, 1, NULL) != WS_OK) return WS_EUTF8;
  }
  t = ws__topic_get(l, topic, 0);
  if (t == NULL) return WS_OK;
  /* Encode once; the same bytes go to every subscriber. */
  if (len + WS_FRAME_HEADER_MAX <= sizeof small) {
    frame = small;
  } else {
    frame = (unsigned char *)ws__loop_alloc(l, NULL, len + WS_FRAME_HEADER_MAX);
    if (frame == NULL) return WS_ENOMEM;
  }
  hl = ws_frame_write(frame, 1, op, len, NULL);
  if (len) memcpy(frame + hl, data, len);
  for (s = t->head; s; s = next) {
    /* A send may end its connection (a write error), and its
     * subscriptions go with it, this node included: step on first. Other
     * connections' nodes are untouched. */
    int rc;
    next = s->tnext;
    rc = ws_send_encoded(&s->lc->conn, frame, hl + len);
    if (rc == WS_EINVAL) /* a client connection masks each frame itself */
      rc = ws_send(&s->lc->conn, op, data, len);
    if (rc == WS_OK) n++;
  }
  if (frame != small) ws__loop_alloc(l, frame, 0);
  if (sent) *sent = n;
  return WS_OK;
}

/* Posting from other threads ---------------------------------------------- */

/* see ws.h */
int ws_loop_post(ws_loop *l, void (*fn)(ws_loop *l, void *arg), void *arg) {
  struct ws__loop_priv *p = WS__LP(l);
  ws__post_q *q = (ws__post_q *)p->post;
  ws__post_item *it;
  int was_empty;
  if (fn == NULL || q == NULL) return WS_EINVAL;
  it = (ws__post_item *)malloc(sizeof *it);
  if (it == NULL) return WS_ENOMEM;
  it->fn = fn;
  it->arg = arg;
  it->next = NULL;
  pthread_mutex_lock(&q->mu);
  was_empty = q->head == NULL;
  if (q->tail)
    q->tail->next = it;
  else
    q->head = it;
  q->tail = it;
  pthread_mutex_unlock(&q->mu);
  if (was_empty) {
    char b = 1;
    ssize_t r;
    do r = write(p->wake_w, &b, 1);
    while (r < 0 && errno == EINTR);
    /* EAGAIN: the pipe is full, so a wake-up is pending anyway. */
    if (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK) return WS_EIO;
  }
  return WS_OK;
}

static void ws__loop_run_posts(ws_loop *l) {
  struct ws__loop_priv *p = WS__LP(l);
  ws__post_q *q = (ws__post_q *)p->post;
  ws__post_item *it;
  char drain[64];
  while (read(p->wake.fd, drain, sizeof drain) > 0) {
  }
  pthread_mutex_lock(&q->mu);
  it = q->head;
  q->head = q->tail = NULL;
  pthread_mutex_unlock(&q->mu);
  while (it) {
    ws__post_item *next = it->next;
    it->fn(l, it->arg);
    free(it);
    it = next;
  }
}

/* The loop ------------------------------------------------------------------ */

/* see ws.h */
void ws_loop_config_init(ws_loop_config *cfg) {
  memset(cfg, 0, sizeof *cfg);
  ws_config_init(&cfg->server, WS_SERVER);
  ws_config_init(&cfg->client, WS_CLIENT);
  cfg->server.ping_interval_ms = cfg->client.ping_interval_ms = 30000;
  cfg->server.pong_timeout_ms = cfg->client.pong_timeout_ms = 10000;
  cfg->backlog = 511;
  cfg->max_events = 256;
  cfg->linger_ms = 2000;
}

/* see ws.h */
int ws_loop_init(ws_loop *l, const ws_loop_config *cfg,
                 const ws_loop_callbacks *cb, void *user) {
  struct ws__loop_priv *p;
  ws__post_q *q;
  int fds[2], rc;
  if (l == NULL || cfg == NULL || cfg->max_events <= 0) return WS_EINVAL;
  p = WS__LP(l);
  memset(p, 0, sizeof *p);
  p->cfg = *cfg;
  p->cfg.server.role = WS_SERVER;
  p->cfg.client.role = WS_CLIENT;
  if (cb) p->cb = *cb;
  p->ccb = p->cb.conn;
  p->ccb.read = ws__loop_read;
  p->ccb.write = ws__loop_write;
  p->ccb.writev = ws__loop_writev;
  p->ccb.on_close = ws__loop_on_close;
  p->user = user;
  p->bfd = -1;
  p->wake.fd = p->wake_w = -1;
  p->owner = ws__loop_self();
  p->now = ws__loop_clock();
  p->ready = malloc(sizeof *p->ready * (size_t)cfg->max_events);
  q = (ws__post_q *)malloc(sizeof *q);
  if (p->ready == NULL || q == NULL) {
    free(p->ready);
    free(q);
    return WS_ENOMEM;
  }
  memset(q, 0, sizeof *q);
  pthread_mutex_init(&q->mu, NULL);
  p->post = q;
  if ((rc = ws__be_create(p)) != WS_OK) {
    ws_loop_free(l);
    return rc;
  }
  if (pipe(fds) < 0) {
    ws_loop_free(l);
    return WS_EIO;
  }
  p->wake.fd = fds[0];
  p->wake_w = fds[1];
  p->wake.pidx = -1;
  p->wake.kind = WS__IO_WAKE;
  if (ws__io_nonblock(fds[0]) < 0 || ws__io_nonblock(fds[1]) < 0 ||
      ws__be_set(p, &p->wake, WS__LOOP_IN) != WS_OK) {
    ws_loop_free(l);
    return WS_EIO;
  }
  return WS_OK;
}

/* Runs due timers: connection deadlines and application timers. */
static void ws__loop_timers(ws_loop *l) {
  struct ws__loop_priv *p = WS__LP(l);
  int guard = 0;
  while (p->hcount > 0 && p->heap[0]->when <= p->now && guard++ < 100000) {
    struct ws__tnode *t = p->heap[0];
    if (t->kind == WS__TN_CONN) {
      ws_loop_conn *lc =
          (ws_loop_conn *)((char *)t - offsetof(ws_loop_conn, ws__l.tn));
      ws__tn_remove(p, t);
      ws__loop_update(l, lc); /* ticks, then files the next deadline */
    } else if (t->kind == WS__TN_LINGER) {
      ws__linger_end(l, (ws__linger *)((char *)t - offsetof(ws__linger, tn)));
    } else {
      ws_timer *tm = (ws_timer *)((char *)t - offsetof(ws_timer, ws__t.tn));
      ws__tn_remove(p, t);
      if (tm->ws__t.repeat) (void)ws__tn_set(l, t, p->now + tm->ws__t.repeat);
      tm->ws__t.cb(l, tm, tm->ws__t.user);
    }
  }
}

/* see ws.h */
int ws_loop_run_once(ws_loop *l, int timeout_ms) {
  struct ws__loop_priv *p = WS__LP(l);
  int i, rc, wait = timeout_ms;
  p->owner = ws__loop_self(); /* the thread that runs the loop owns it */
  p->now = ws__loop_clock();
  ws__loop_timers(l);
  ws__loop_flush_pending(l);
  ws__loop_release_dead(l);
  if (p->hcount > 0) {
    uint64_t due = p->heap[0]->when;
    int until = due <= p->now ? 0 : due - p->now > 0x7FFFFFFF ? 0x7FFFFFFF
                                                              : (int)(due - p->now);
    if (wait < 0 || until < wait) wait = until;
  }
  if (p->stop) wait = 0;
  /* A wait cut short by a signal reports nothing: the last turn's events,
   * whose connections may be gone, must not be handled again. */
  p->nready = 0;
  rc = ws__be_wait(p, wait);
  if (rc != WS_OK) return rc;
  p->now = ws__loop_clock();
  for (i = 0; i < p->nready; i++) {
    struct ws__io *io = p->ready[i].io;
    unsigned ev = p->ready[i].ev;
    if (io->fd < 0) continue; /* closed earlier in this turn */
    if (io->kind == WS__IO_CONN) {
      ws_loop_conn *lc =
          (ws_loop_conn *)((char *)io - offsetof(ws_loop_conn, ws__l.io));
      if (!(lc->ws__l.io.flags & WS__LC_DEAD)) ws__loop_conn_event(l, lc, ev);
    } else if (io->kind == WS__IO_LISTENER) {
      ws__loop_accept(l, (ws__listener *)io);
    } else if (io->kind == WS__IO_WAKE) {
      ws__loop_run_posts(l);
    } else if (io->kind == WS__IO_LINGER) {
      ws__linger_read(l, (ws__linger *)io);
    }
    ws__loop_flush_pending(l);
  }
  ws__loop_timers(l);
  ws__loop_flush_pending(l);
  ws__loop_release_dead(l);
  return WS_OK;
}

/* see ws.h */
int ws_loop_run(ws_loop *l) {
  struct ws__loop_priv *p = WS__LP(l);
  p->stop = 0;
  while (!p->stop && !(p->shutting && p->nconns == 0 && p->nlinger == 0)) {
    int rc = ws_loop_run_once(l, -1);
    if (rc != WS_OK) return rc;
  }
  p->stop = 0;
  return WS_OK;
}

/* see ws.h */
void ws_loop_stop(ws_loop *l) { WS__LP(l)->stop = 1; }

static void ws__loop_close_listeners(struct ws__loop_priv *p) {
  ws__listener *ls;
  for (ls = (ws__listener *)p->listeners; ls; ls = ls->next) {
    if (ls->io.fd < 0) continue;
    (void)ws__be_set(p, &ls->io, 0);
    close(ls->io.fd);
    ls->io.fd = -1;
  }
}

/* see ws.h */
void ws_loop_shutdown(ws_loop *l) {
  struct ws__loop_priv *p = WS__LP(l);
  ws_loop_conn *lc, *next;
  WS__LOOP_THREAD(l);
  p->shutting = 1;
  ws__loop_close_listeners(p);
  for (lc = p->conns; lc; lc = next) {
    next = lc->ws__l.next; /* this one may move to the dead list */
    if (ws_conn_state(&lc->conn) == WS_STATE_OPEN)
      ws_close(&lc->conn, WS_CLOSE_GOING_AWAY, "shutdown", 8);
    else if (ws_conn_state(&lc->conn) < WS_STATE_OPEN)
      ws_conn_abort(&lc->conn, WS_ECLOSED);
    if (!(lc->ws__l.io.flags & WS__LC_DEAD)) ws__loop_touch(lc);
  }
  ws__loop_flush_pending(l);
}

/* see ws.h */
void ws_loop_free(ws_loop *l) {
  struct ws__loop_priv *p = WS__LP(l);
  ws__post_q *q = (ws__post_q *)p->post;
  size_t i;
  p->freeing = 1;
  while (p->conns) ws_conn_abort(&p->conns->conn, WS_ECLOSED);
  ws__loop_release_dead(l);
  while (p->lingering) ws__linger_end(l, (ws__linger *)p->lingering);
  ws__loop_close_listeners(p);
  while (p->listeners) {
    ws__listener *ls = (ws__listener *)p->listeners;
    p->listeners = ls->next;
    ws__loop_alloc(l, ls, 0);
  }
  if (p->wake.fd >= 0) close(p->wake.fd);
  if (p->wake_w >= 0) close(p->wake_w);
  p->wake.fd = p->wake_w = -1;
#if WS_ENABLE_MBEDTLS
  ws_tls_config_free((ws_tls_config *)p->tls_default);
  p->tls_default = NULL;
#endif
  ws__be_destroy(p);
  if (q) {
    ws__post_item *it = q->head;
    while (it) {
      ws__post_item *next = it->next;
      free(it);
      it = next;
    }
    pthread_mutex_destroy(&q->mu);
    free(q);
    p->post = NULL;
  }
  for (i = 0; i < p->tcap; i++) { /* topics left by no one: none expected */
    ws__topic *t = (ws__topic *)p->topics[i];
    while (t) {
      ws__topic *next = t->hnext;
      ws__loop_alloc(l, t, 0);
      t = next;
    }
  }
  ws__loop_alloc(l, p->topics, 0);
  ws__loop_alloc(l, p->heap, 0);
  ws__loop_alloc(l, p->rbuf, 0);
  p->rbuf = NULL;
  free(p->ready);
  p->topics = NULL;
  p->heap = NULL;
  p->ready = NULL;
  p->tcap = p->hcap = p->hcount = 0;
}

/* see ws.h */
int ws_loop_timeout(const ws_loop *l) {
  const struct ws__loop_priv *p = WS__LP(l);
  uint64_t now = ws__loop_clock(), due;
  if (p->pend) return 0;
  if (p->hcount == 0) return -1;
  due = p->heap[0]->when;
  if (due <= now) return 0;
  return due - now > 0x7FFFFFFF ? 0x7FFFFFFF : (int)(due - now);
}

/* see ws.h */
size_t ws_loop_conn_count(const ws_loop *l) { return WS__LP(l)->nconns; }

/* see ws.h */
uint64_t ws_loop_now(const ws_loop *l) { return WS__LP(l)->now; }

/* see ws.h */
int ws_loop_conn_fd(const ws_conn *c) { return WS__LC(c)->ws__l.io.fd; }

/* see ws.h */
ws_loop *ws_loop_of(const ws_conn *c) { return WS__LC(c)->ws__l.loop; }

/* see ws.h */
ws_tls *ws_loop_conn_tls(const ws_conn *c) {
  return (ws_tls *)WS__LC(c)->ws__l.tls;
}

#endif /* !WS_NO_LOOP */
