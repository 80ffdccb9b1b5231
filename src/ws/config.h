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

#ifndef WS_ASSERT
#include <assert.h>
#define WS_ASSERT(x) assert(x)
#endif

#endif /* WS__CONFIG_H */
