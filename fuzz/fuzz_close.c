/*
 * fuzz_close.c - ws_close_parse() and ws_close_code_valid() against the
 * reference rule: codes 1000-1003, 1007-1014, 3000-4999; a UTF-8 reason;
 * payload lengths 0 or 2..125.
 *
 * Input: [4 bytes: a code for ws_close_code_valid][close payload...]
 */
#include "../src/ws.c"
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fz_in in = {data, size};
  uint32_t any = (uint32_t)fz_u16(&in) << 16;
  uint16_t code = 0, ref_code = 0;
  const char *reason = NULL;
  size_t reason_len = 12345;
  uint8_t *buf;
  int rc, ref;

  any |= fz_u16(&in);
  FZ_CHECK(ws_close_code_valid(any) == ref_close_code_ok(any));
  FZ_CHECK(ws_close_code_valid(any & 0xFFFF) == ref_close_code_ok(any & 0xFFFF));

  /* An exact-size copy so ASan catches reads past the payload. */
  buf = (uint8_t *)malloc(in.n ? in.n : 1);
  FZ_CHECK(buf != NULL);
  if (in.n) memcpy(buf, in.p, in.n);
  rc = ws_close_parse(buf, in.n, &code, &reason, &reason_len);
  ref = ref_close_parse(buf, in.n, &ref_code);
  FZ_CHECK(rc == ref);
  if (rc == WS_OK) {
    FZ_CHECK(code == ref_code);
    if (in.n == 0) {
      FZ_CHECK(reason_len == 0);
    } else {
      FZ_CHECK(reason == (const char *)buf + 2);
      FZ_CHECK(reason_len == in.n - 2);
      FZ_CHECK(ws_close_code_valid(code));
    }
  }
  /* A payload at most 125 long with a code always parses the code. */
  FZ_CHECK(ws_close_parse(NULL, 0, &code, &reason, &reason_len) == WS_OK &&
           code == 1005);
  FZ_CHECK(ws_close_parse(buf, in.n, NULL, &reason, &reason_len) == WS_EINVAL);
  free(buf);
  return 0;
}
