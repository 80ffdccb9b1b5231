/* config.h - part 0: feature macros, includes, the version check, compile-time defaults (-D overrides them).
 * Uses ws.h only; every part starts from it. */
#ifndef WS__CONFIG_H
#define WS__CONFIG_H

#if !defined(_POSIX_C_SOURCE) && !defined(_GNU_SOURCE)
#if defined(__linux__)
#define _GNU_SOURCE 1 /* POSIX 2008 and accept4() */
#else
#define _POSIX_C_SOURCE 200809L
#endif
#endif
#if defined(_WIN32) && !defined(_CRT_RAND_S)
#define _CRT_RAND_S 1 /* rand_s(): the default random source on Windows */
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

/* 1: the small forms, for firmware: masking and UTF-8 checking a byte at a
 * time (no word-at-a-time or SIMD paths), ws_strerror() giving the error's
 * name, not a sentence, WS_MAX_HEADERS 20 (below), ws_conn_feed_inplace()
 * copying as ws_conn_feed() does, every send copied into the output queue
 * (no zero-copy writes, conn.c's WS__DIRECT), frame and message lengths
 * counted in size_t (private.h's ws__flen; with a 32-bit size_t, a frame
 * or message over SIZE_MAX is refused with 1009, as one over max_frame
 * is). The checks are the same ones otherwise. Default: 1 when compiling
 * for size (-Os, -Oz define __OPTIMIZE_SIZE__) without an OS (WS_NO_OS,
 * or a target that is not Unix-like or Windows), else 0: a hosted -Os
 * build (some distributions build every package so) keeps the hosted
 * behaviour. */
#ifndef WS_SMALL
#if defined(__OPTIMIZE_SIZE__) &&                                          \
    (defined(WS_NO_OS) ||                                                  \
     !(defined(__unix__) || defined(__APPLE__) || defined(_WIN32)))
#define WS_SMALL 1
#else
#define WS_SMALL 0
#endif
#endif

/* 1: connections never allocate. Every connection is given its buffers
 * with ws_conn_set_buffers() before its first I/O, and the code that grows,
 * frees and budgets buffers (cfg.realloc, cfg.charge) is left out: some
 * 650 B of a Cortex-M4 client. A connection without buffers fails as one
 * whose allocator refused (WS_ENOMEM). Needs WS_NO_LOOP (the loop's
 * connections grow their buffers) and no permessage-deflate (zlib
 * allocates). Default 0. */
#ifndef WS_FIXED_BUFFERS
#define WS_FIXED_BUFFERS 0
#endif

/* Compile-time defaults; ws_config_init() copies them into each config. */
#ifndef WS_MAX_HANDSHAKE
#define WS_MAX_HANDSHAKE 8192
#endif
#ifndef WS_MAX_HEADERS
/* Also the size of a stack array of ws_header in the handshake: keep it
 * small. 20 in the small build (16 B each on a 32-bit target), which keeps
 * every function's stack frame under 512 B; a browser's upgrade request
 * has 10 to 15 header lines. */
#if WS_SMALL
#define WS_MAX_HEADERS 20
#else
#define WS_MAX_HEADERS 32
#endif
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
/* Slow readers: output over this many bytes that has not drained below it
 * for this long fails the connection (ws_config). */
#ifndef WS_SLOW_READER_BYTES
#define WS_SLOW_READER_BYTES (64u * 1024)
#endif
#ifndef WS_SLOW_READER_MS
#define WS_SLOW_READER_MS 10000
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

/* TLS (tls.c): 1 to build the mbedTLS transport (link -lmbedtls
 * -lmbedx509 -lmbedcrypto). The Makefile sets it when mbedTLS is found. */
#ifndef WS_ENABLE_MBEDTLS
#define WS_ENABLE_MBEDTLS 0
#endif

/* permessage-deflate (deflate.c): 1 to build its zlib backend (link -lz).
 * The Makefile sets it when zlib's header is found. Without it the library
 * declines every offer and never offers. */
#ifndef WS_ENABLE_ZLIB
#define WS_ENABLE_ZLIB 0
#endif
#if WS_ENABLE_ZLIB
#include <zlib.h>
#endif
/* Bytes of stack a streamed compressed message (cfg.stream) is inflated
 * into, piece by piece: the largest piece on_message gets from one. */
#ifndef WS_INFLATE_CHUNK
#define WS_INFLATE_CHUNK 4096
#endif

#if WS_FIXED_BUFFERS && (!defined(WS_NO_LOOP) || WS_ENABLE_ZLIB)
#error "WS_FIXED_BUFFERS needs WS_NO_LOOP and no WS_ENABLE_ZLIB: the loop and zlib allocate"
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

/* The loop's sockets and threads: POSIX, or Winsock with mingw-w64's
 * winpthreads (loop_win.c). */
#if WS__HAVE_OS || (!defined(WS_NO_OS) && defined(_WIN32))
#define WS__HAVE_NET 1
#else
#define WS__HAVE_NET 0
#endif

#if WS__HAVE_OS
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#if defined(__linux__)
#include <sys/random.h>
#endif
#endif

#if !defined(WS_NO_MALLOC) || (WS__HAVE_NET && !WS__HAVE_OS)
#include <stdlib.h>
#endif

/* API misuse checks (see ws.h, Conventions). Hosted builds use assert(),
 * whose message says what was misused. Under WS_NO_OS assert() would link
 * the C library's fprintf (some 4 KB of newlib) for text no firmware has a
 * console to show, so a failed check traps instead (gcc and clang: one
 * undefined instruction, a HardFault on a Cortex-M) and the strings are not
 * kept; other compilers, or NDEBUG, compile the checks out. */
#ifndef WS_ASSERT
#if defined(WS_NO_OS)
#if !defined(NDEBUG) && (defined(__GNUC__) || defined(__clang__))
#define WS_ASSERT(x) ((x) ? (void)0 : __builtin_trap())
#else
#define WS_ASSERT(x) ((void)0)
#endif
#else
#include <assert.h>
#define WS_ASSERT(x) assert(x)
#endif
#endif

#endif /* WS__CONFIG_H */
