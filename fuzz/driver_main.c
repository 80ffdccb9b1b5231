/*
 * driver_main.c - a main() for the fuzz targets without libFuzzer.
 *
 * - With file arguments (the replay build, plain gcc + ASan/UBSan): runs
 *   LLVMFuzzerTestOneInput() on each file in turn; a directory argument is
 *   not accepted (the make rule passes files).
 * - Without arguments (the AFL++ build): reads one input from stdin, in
 *   AFL++'s persistent mode when afl-clang-fast provides it.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Reads a whole stream into a buffer of exactly its size, so ASan sees a
 * read one byte past the input. */
static uint8_t *slurp(FILE *fp, size_t *len) {
  size_t cap = 4096, n = 0;
  uint8_t *buf = (uint8_t *)malloc(cap), *exact;
  if (buf == NULL) return NULL;
  for (;;) {
    size_t r;
    if (n == cap) {
      uint8_t *q = (uint8_t *)realloc(buf, cap * 2);
      if (q == NULL) {
        free(buf);
        return NULL;
      }
      buf = q;
      cap *= 2;
    }
    r = fread(buf + n, 1, cap - n, fp);
    if (r == 0) break;
    n += r;
  }
  exact = (uint8_t *)malloc(n ? n : 1);
  if (exact != NULL && n) memcpy(exact, buf, n);
  free(buf);
  *len = n;
  return exact;
}

#ifdef __AFL_FUZZ_TESTCASE_LEN
/* afl-clang-fast's persistent-mode macros use read() and a GNU statement
 * expression; the rest of this file stays plain C99. */
#include <unistd.h>
#ifdef __clang__
#pragma clang diagnostic ignored "-Wgnu-statement-expression"
#endif
__AFL_FUZZ_INIT() /* expands to declarations ending in ';' */
#endif

int main(int argc, char **argv) {
  int i;
  if (argc > 1) {
    for (i = 1; i < argc; i++) {
      size_t n = 0;
      uint8_t *d;
      FILE *fp = fopen(argv[i], "rb");
      if (fp == NULL) {
        perror(argv[i]);
        return 2;
      }
      d = slurp(fp, &n);
      fclose(fp);
      if (d == NULL) {
        fprintf(stderr, "%s: out of memory\n", argv[i]);
        return 2;
      }
      LLVMFuzzerTestOneInput(d, n);
      free(d);
    }
    printf("replayed %d input(s)\n", argc - 1);
    return 0;
  }
#ifdef __AFL_FUZZ_TESTCASE_LEN
  {
    const unsigned char *buf;
    __AFL_INIT();
    buf = __AFL_FUZZ_TESTCASE_BUF;
    while (__AFL_LOOP(10000)) {
      size_t n = (size_t)__AFL_FUZZ_TESTCASE_LEN;
      uint8_t *d = (uint8_t *)malloc(n ? n : 1);
      if (d == NULL) return 2;
      if (n) memcpy(d, buf, n);
      LLVMFuzzerTestOneInput(d, n);
      free(d);
    }
  }
#else
  {
    size_t n = 0;
    uint8_t *d = slurp(stdin, &n);
    if (d == NULL) return 2;
    LLVMFuzzerTestOneInput(d, n);
    free(d);
  }
#endif
  return 0;
}
