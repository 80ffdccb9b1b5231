/*
 * fuzz_common.h - helpers shared by the fuzz targets: an input reader and
 * small, obviously-correct reference implementations (UTF-8 per RFC 3629,
 * close codes per RFC 6455 section 7.4) to compare the library against.
 *
 * Each target includes src/ws.c first (to build as one translation unit),
 * then this file. Everything here is `static inline` so that targets using
 * only part of it compile warning-free.
 */
#ifndef WS_FUZZ_COMMON_H
#define WS_FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* libFuzzer's entry point; the replay and AFL drivers call it too. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A violated invariant: abort so libFuzzer (and the replay driver) report
 * it with a stack trace. The message goes first for the logs. */
#include <stdio.h>
#define FZ_CHECK(cond)                                                   \
  do {                                                                   \
    if (!(cond)) {                                                       \
      fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, \
              #cond);                                                    \
      abort();                                                           \
    }                                                                    \
  } while (0)

/* Consumes the input from the front. Reads past the end give zeros. */
typedef struct fz_in {
  const uint8_t *p;
  size_t n;
} fz_in;

static inline unsigned fz_u8(fz_in *in) {
  unsigned v = 0;
  if (in->n > 0) {
    v = in->p[0];
    in->p++;
    in->n--;
  }
  return v;
}

static inline unsigned fz_u16(fz_in *in) {
  unsigned hi = fz_u8(in);
  return (hi << 8) | fz_u8(in);
}

/* 1 if p lies in [base, base + n] (a zero-length span may sit at the end). */
static inline int fz_inside(const void *p, size_t len, const void *base,
                            size_t n) {
  const uint8_t *q = (const uint8_t *)p, *b = (const uint8_t *)base;
  if (q == NULL) return len == 0;
  return q >= b && q <= b + n && len <= (size_t)(b + n - q);
}

/* ------------------------------------------------------------------------
 * Reference UTF-8 (RFC 3629). A byte string is a prefix of valid UTF-8
 * exactly when every sequence in it is a prefix of the encoding of some
 * scalar value. For a sequence of n bytes of which m are present, the
 * present bits fix the high bits of the code point; the value lies in
 * [lo, hi] (missing bits all 0 / all 1). It is possible iff that interval
 * meets the scalars encoded with n bytes: [0x80,0x7FF], [0x800,0xFFFF]
 * minus the surrogates, [0x10000,0x10FFFF].
 * ---------------------------------------------------------------------- */

/* Length a lead byte announces (1..4), 0 when it is not a lead byte. */
static inline int ref_utf8_len(unsigned b) {
  if (b < 0x80) return 1;
  if ((b & 0xE0) == 0xC0) return 2;
  if ((b & 0xF0) == 0xE0) return 3;
  if ((b & 0xF8) == 0xF0) return 4;
  return 0;
}

static inline int ref_range_meets(uint32_t lo, uint32_t hi, uint32_t a,
                                  uint32_t b) {
  return lo <= b && a <= hi;
}

/* 1 if the first m bytes of p (m >= 1, of a sequence of length n = its lead's
 * announced length, m <= n) can begin the encoding of a scalar value. */
static inline int ref_utf8_prefix_ok(const uint8_t *p, int m) {
  int n = ref_utf8_len(p[0]), k;
  uint32_t lo, hi;
  if (n == 0) return 0;
  if (n == 1) return 1;
  lo = hi = (uint32_t)(p[0] & (0x7F >> n));
  for (k = 1; k < n; k++) {
    unsigned b;
    if (k < m) {
      if ((p[k] & 0xC0) != 0x80) return 0;
      b = p[k] & 0x3F;
      lo = (lo << 6) | b;
      hi = (hi << 6) | b;
    } else {
      lo = lo << 6;
      hi = (hi << 6) | 0x3F;
    }
  }
  if (n == 2) return ref_range_meets(lo, hi, 0x80, 0x7FF);
  if (n == 3)
    return ref_range_meets(lo, hi, 0x800, 0xD7FF) ||
           ref_range_meets(lo, hi, 0xE000, 0xFFFF);
  return ref_range_meets(lo, hi, 0x10000, 0x10FFFF);
}

/* Checks buf[0..len). Returns 1 if valid (complete when final, else a valid
 * prefix), 0 if not, with *bad the offset of the first byte after which the
 * bytes can no longer be a prefix of valid UTF-8 (len when final and the
 * input ends inside a sequence). */
static inline int ref_utf8(const uint8_t *buf, size_t len, int final,
                           size_t *bad) {
  size_t i = 0;
  while (i < len) {
    int n = ref_utf8_len(buf[i]), m;
    if (n == 0) {
      *bad = i;
      return 0;
    }
    for (m = 1; m <= n; m++) {
      if (i + (size_t)m > len) {
        if (final) {
          *bad = len;
          return 0;
        }
        return 1;
      }
      if (!ref_utf8_prefix_ok(buf + i, m)) {
        *bad = i + (size_t)m - 1;
        return 0;
      }
    }
    i += (size_t)n;
  }
  return 1;
}

/* RFC 6455 section 7.4: codes an endpoint may put in a close frame. */
static inline int ref_close_code_ok(uint32_t c) {
  if (c >= 1000 && c <= 1003) return 1;
  if (c >= 1007 && c <= 1014) return 1; /* 1007-1011 + IANA 1012-1014 */
  if (c >= 3000 && c <= 4999) return 1;
  return 0;
}

/* Expected ws_close_parse() result for a payload. */
static inline int ref_close_parse(const uint8_t *p, size_t len,
                                  uint16_t *code) {
  size_t bad;
  if (len == 0) {
    *code = 1005;
    return WS_OK;
  }
  if (len == 1 || len > 125) return WS_EPROTO;
  *code = (uint16_t)((p[0] << 8) | p[1]);
  if (!ref_close_code_ok(*code)) return WS_EPROTO;
  if (!ref_utf8(p + 2, len - 2, 1, &bad)) return WS_EUTF8;
  return WS_OK;
}

/* Strict base64 decode of exactly 24 characters into 16 bytes (the
 * Sec-WebSocket-Key form). Returns 1 on success. */
static inline int ref_b64_16(const char *s, size_t n, uint8_t out[16]) {
  static const char a[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  uint32_t acc = 0;
  size_t i, o = 0;
  int bits = 0;
  if (n != 24 || s[22] != '=' || s[23] != '=') return 0;
  for (i = 0; i < 22; i++) {
    const char *q = s[i] ? strchr(a, s[i]) : NULL;
    if (q == NULL) return 0;
    acc = (acc << 6) | (uint32_t)(q - a);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[o++] = (uint8_t)(acc >> bits);
      acc &= (1u << bits) - 1;
    }
  }
  return o == 16 && acc == 0;
}

#endif /* WS_FUZZ_COMMON_H */
