/*
 * t.h - the test harness: checks count passes and failures, print only
 * failures (with file and line), and the run ends with the line
 * "N passed, M failed". Include it after "../src/ws.c".
 */
#ifndef T_H
#define T_H

#include <stdio.h>
#include <string.h>

static unsigned long t_passed, t_failed;

static int t_check(int ok, const char *file, int line, const char *what) {
  if (ok) {
    t_passed++;
  } else {
    t_failed++;
    if (t_failed <= 50) printf("not ok - %s:%d: %s\n", file, line, what);
  }
  return ok;
}

/* CHECK(cond): one assertion. */
#define CHECK(cond) t_check(!!(cond), __FILE__, __LINE__, #cond)

/* CHECK_INT(a, b): integer equality, printing both values on failure. */
#define CHECK_INT(a, b)                                                    \
  do {                                                                     \
    long long t_a_ = (long long)(a), t_b_ = (long long)(b);                \
    if (!t_check(t_a_ == t_b_, __FILE__, __LINE__, #a " == " #b))          \
      printf("    got %lld, want %lld\n", t_a_, t_b_);                     \
  } while (0)

/* CHECK_MEM(p, q, n): byte equality. */
#define CHECK_MEM(p, q, n) \
  t_check(memcmp((p), (q), (n)) == 0, __FILE__, __LINE__, "memcmp(" #p ", " #q ")")

/* Runs one test function and names it when it added failures. */
#define RUN(fn)                                                            \
  do {                                                                     \
    unsigned long t_before_ = t_failed;                                    \
    fn();                                                                  \
    printf("%s %s\n", t_failed == t_before_ ? "ok" : "not ok", #fn);       \
  } while (0)

/* Prints the summary line; the process exit status. */
static int t_done(const char *suite) {
  printf("%s: %lu passed, %lu failed\n", suite, t_passed, t_failed);
  return t_failed ? 1 : 0;
}

#endif
