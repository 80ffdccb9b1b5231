/* private.h - types and macros the core's parts (util.c to conn.c) share.
 * Uses config.h. The TLS and loop parts never include it: they use ws.h and config.h only. */
#ifndef WS__PRIVATE_H
#define WS__PRIVATE_H

#include "config.h"

#define WS__MIN(a, b) ((a) < (b) ? (a) : (b))
#define WS__MAX(a, b) ((a) > (b) ? (a) : (b))
#define WS__NONE UINT64_MAX

/* The connection's frame and message lengths (the payload still to come,
 * the message so far, the limit checks on them). Frames may carry 64-bit
 * lengths, and hosted builds count them so. The small build counts in
 * size_t, which on a 32-bit target saves the 64-bit arithmetic (108 B of
 * the full core on a Cortex-M4, 114 B of its firmware client link); a
 * frame or message that would not fit in it is refused as too big
 * (ws__frame_head). */
#if WS_SMALL
typedef size_t ws__flen;
#else
typedef uint64_t ws__flen;
#endif

/* A small helper on the per-frame path, shared by callers that must not pay
 * a call for sharing it: GCC and Clang are told to inline it (Clang would
 * otherwise inline ws_mask() into it and keep it out of line); other
 * compilers get the C99 hint. */
#if defined(__GNUC__)
#define WS__INLINE static inline __attribute__((always_inline))
#else
#define WS__INLINE static inline
#endif

/* A small writer that appends to a bounded buffer and remembers overflow. */
typedef struct ws__wbuf {
  char *p;
  size_t cap, len;
  int over;
} ws__wbuf;

typedef struct ws__sha1 {
  uint32_t h[5];
  uint64_t bytes;
  unsigned char block[64];
  size_t fill;
} ws__sha1;

#endif /* WS__PRIVATE_H */
