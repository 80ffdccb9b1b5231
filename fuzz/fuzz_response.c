/*
 * fuzz_response.c - the client side of the opening handshake:
 * ws_response_parse() with a fixed nonce (the RFC 6455 section 1.3 sample,
 * so the accept value is "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") and an offered
 * subprotocol list taken from the input.
 *
 * Input: [L][max_headers][L bytes: protocols (NULL when L has its top bit
 * set, then L = 0)][response...]
 *
 * Checks: result and status, pointers inside the input, on WS_OK the
 * accept value, the absence of extensions, that a chosen subprotocol was
 * offered, that the head alone parses the same, and that prefixes of a
 * valid or incomplete response are WS_EAGAIN.
 */
#include "../src/ws.c"
#include "fuzz_common.h"

static const uint8_t nonce[16] = {'t', 'h', 'e', ' ', 's', 'a', 'm', 'p',
                                  'l', 'e', ' ', 'n', 'o', 'n', 'c', 'e'};

static size_t prefix_step(size_t n) { return n <= 512 ? 1 : n / 256 + 1; }

/* Is tok one of the elements of the comma list? (Reference: split on
 * commas, trim spaces and tabs.) */
static int offered(const char *list, size_t n, const char *tok, size_t tl) {
  size_t i = 0;
  if (list == NULL) return 0;
  while (i <= n) {
    size_t s = i, e;
    while (i < n && list[i] != ',') i++;
    e = i;
    while (s < e && (list[s] == ' ' || list[s] == '\t')) s++;
    while (e > s && (list[e - 1] == ' ' || list[e - 1] == '\t')) e--;
    if (e - s == tl && tl > 0 && memcmp(list + s, tok, tl) == 0) return 1;
    i++;
  }
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fz_in in = {data, size};
  unsigned l = fz_u8(&in);
  size_t max = fz_u8(&in), plen, consumed = 0, i, n;
  char *protos = NULL;
  ws_header *h = (ws_header *)malloc(max ? max * sizeof *h : 1);
  const uint8_t *d;
  ws_response resp;
  int rc;
  FZ_CHECK(h != NULL);
  plen = (l & 0x80) ? 0 : WS__MIN((size_t)(l & 0x3F), in.n);
  if (!(l & 0x80)) {
    protos = (char *)malloc(plen ? plen : 1);
    FZ_CHECK(protos != NULL);
    if (plen) memcpy(protos, in.p, plen);
    in.p += plen;
    in.n -= plen;
  }
  d = in.p;
  n = in.n;
  rc = ws_response_parse(d, n, nonce, protos, plen, &resp, h, max, &consumed);
  FZ_CHECK(rc == WS_OK || rc == WS_EAGAIN || rc == WS_EHANDSHAKE);
  FZ_CHECK(resp.num_headers <= max);
  for (i = 0; i < resp.num_headers; i++) {
    FZ_CHECK(fz_inside(resp.headers[i].name, resp.headers[i].name_len, d, n));
    FZ_CHECK(fz_inside(resp.headers[i].value, resp.headers[i].value_len, d, n));
  }
  FZ_CHECK(fz_inside(resp.protocol, resp.protocol_len, d, n));
  if (resp.status) FZ_CHECK(resp.status >= 100 && resp.status <= 599);

  if (rc == WS_EAGAIN) {
    FZ_CHECK(resp.status == 0);
    for (i = 0; i < n; i += prefix_step(n)) {
      ws_response r2;
      size_t c2;
      FZ_CHECK(ws_response_parse(d, i, nonce, protos, plen, &r2, h, max,
                                 &c2) == WS_EAGAIN);
    }
  } else if (rc == WS_OK) {
    const ws_header *acc = NULL;
    ws_response r2;
    size_t c2 = 0;
    FZ_CHECK(resp.status == 101);
    FZ_CHECK(consumed >= 4 && consumed <= n &&
             memcmp(d + consumed - 4, "\r\n\r\n", 4) == 0);
    FZ_CHECK(memcmp(d, "HTTP/1.1 101", 12) == 0);
    for (i = 0; i < resp.num_headers; i++) {
      const ws_header *x = &resp.headers[i];
      FZ_CHECK(fz_inside(x->name, x->name_len, d, consumed));
      if (x->name_len == 20 && ws__ieq(x->name, 20, "sec-websocket-accept")) {
        FZ_CHECK(acc == NULL);
        acc = x;
      }
      if (ws__ieq(x->name, x->name_len, "sec-websocket-extensions"))
        FZ_CHECK(x->value_len == 0);
    }
    FZ_CHECK(acc != NULL && acc->value_len == 28 &&
             memcmp(acc->value, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", 28) == 0);
    if (resp.protocol) {
      FZ_CHECK(fz_inside(resp.protocol, resp.protocol_len, d, consumed));
      FZ_CHECK(offered(protos, plen, resp.protocol, resp.protocol_len));
      FZ_CHECK(ws__is_token(resp.protocol, resp.protocol_len));
    }
    FZ_CHECK(ws_response_parse(d, consumed, nonce, protos, plen, &r2, h, max,
                               &c2) == WS_OK &&
             c2 == consumed);
    /* max_headers is exact: the count found suffices, one less fails. */
    FZ_CHECK(ws_response_parse(d, n, nonce, protos, plen, &r2, h,
                               resp.num_headers, &c2) == WS_OK);
    if (resp.num_headers > 0)
      FZ_CHECK(ws_response_parse(d, n, nonce, protos, plen, &r2, h,
                                 resp.num_headers - 1, &c2) == WS_EHANDSHAKE);
    for (i = 0; i < consumed; i += prefix_step(consumed)) {
      size_t c3;
      FZ_CHECK(ws_response_parse(d, i, nonce, protos, plen, &r2, h, max,
                                 &c3) == WS_EAGAIN);
    }
  }
  free(protos);
  free(h);
  return 0;
}
