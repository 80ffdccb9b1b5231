/*
 * fuzz_utf8.c - differential: ws_utf8_check() against the reference
 * validator in fuzz_common.h, on the whole input (final and not) and on the
 * input cut into chunks the input chooses, carrying the state. Verdicts and
 * the first bad byte's position must agree.
 *
 * Input: [k][k chunk sizes][data...], k = first byte % 16.
 */
#include "../src/ws.c"
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fz_in in = {data, size};
  size_t cuts[16], ncut = fz_u8(&in) % 16, i, ref_bad = 0, bad = 0;
  const uint8_t *d;
  size_t n;
  int ref_ok, rc;
  uint32_t st;
  for (i = 0; i < ncut; i++) cuts[i] = fz_u8(&in);
  d = in.p;
  n = in.n;

  /* Whole input, final. */
  ref_ok = ref_utf8(d, n, 1, &ref_bad);
  st = WS_UTF8_INIT;
  rc = ws_utf8_check(&st, d, n, 1, &bad);
  FZ_CHECK(rc == WS_OK || rc == WS_EUTF8);
  FZ_CHECK((rc == WS_OK) == ref_ok);
  if (!ref_ok) FZ_CHECK(bad == ref_bad);
  if (ref_ok) FZ_CHECK(st == WS_UTF8_INIT);
  /* Same verdict without the position out-parameter. */
  st = WS_UTF8_INIT;
  FZ_CHECK(ws_utf8_check(&st, d, n, 1, NULL) == rc);

  /* Whole input, not final: a truncated tail is fine. */
  {
    size_t rb = 0, b2 = 0;
    int rok = ref_utf8(d, n, 0, &rb);
    st = WS_UTF8_INIT;
    rc = ws_utf8_check(&st, d, n, 0, &b2);
    FZ_CHECK((rc == WS_OK) == rok);
    if (!rok) FZ_CHECK(b2 == rb);
    /* A non-final OK whose state is 0 ends on a character boundary: then
     * the final check must agree. */
    if (rok && st == WS_UTF8_INIT) FZ_CHECK(ref_ok);
    if (rok && st != WS_UTF8_INIT) FZ_CHECK(!ref_ok && ref_bad == n);
  }

  /* Chunks; the last chunk (the rest, possibly empty) is final. */
  {
    size_t off = 0, c = 0;
    int failed = 0;
    st = WS_UTF8_INIT;
    for (;;) {
      int last = (c == ncut);
      size_t len = last ? n - off : WS__MIN(cuts[c], n - off);
      /* A copy of exactly the chunk, so ASan sees reads past its end. */
      uint8_t *chunk = (uint8_t *)malloc(len ? len : 1);
      size_t b = (size_t)-1;
      FZ_CHECK(chunk != NULL);
      if (len) memcpy(chunk, d + off, len);
      rc = ws_utf8_check(&st, chunk, len, last, &b);
      free(chunk);
      if (rc != WS_OK) {
        FZ_CHECK(rc == WS_EUTF8);
        FZ_CHECK(b <= len);
        FZ_CHECK(!ref_ok);
        FZ_CHECK(off + b == ref_bad);
        failed = 1;
        break;
      }
      off += len;
      if (last) break;
      c++;
    }
    if (!failed) FZ_CHECK(ref_ok && off == n);
  }
  return 0;
}
