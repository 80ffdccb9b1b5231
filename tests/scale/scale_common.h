/*
 * scale_common.h - what the scale server and its load generator agree on:
 * the broadcast payload and the clock. libc only.
 *
 * A broadcast payload of SIZE bytes (SIZE >= SCALE_HDR): the sequence
 * number (8 bytes, little endian), the publisher's CLOCK_MONOTONIC time in
 * ns (8 bytes, little endian), then byte i (i >= SCALE_HDR) is
 * scale_byte(seq, i). CLOCK_MONOTONIC is one clock for every process of
 * the machine, so a receiver's now - TS is the delivery latency.
 */
#ifndef SCALE_COMMON_H
#define SCALE_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define SCALE_HDR 16

static inline uint64_t scale_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline unsigned char scale_byte(uint64_t seq, size_t i) {
  return (unsigned char)((seq * 131u + i * 7u + (i >> 8)) & 0xFFu);
}

static inline void scale_put64(unsigned char *p, uint64_t v) {
  int i;
  for (i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static inline uint64_t scale_get64(const unsigned char *p) {
  uint64_t v = 0;
  int i;
  for (i = 7; i >= 0; i--) v = v << 8 | p[i];
  return v;
}

static inline void scale_payload(unsigned char *p, size_t size, uint64_t seq,
                                 uint64_t ts) {
  size_t i;
  scale_put64(p, seq);
  scale_put64(p + 8, ts);
  for (i = SCALE_HDR; i < size; i++) p[i] = scale_byte(seq, i);
}

#endif
