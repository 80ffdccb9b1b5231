/*
 * fuzz_request.c - the server side of the opening handshake.
 *
 * Input: [max_headers][request bytes...]. The header array is allocated
 * with exactly max_headers entries (0..255), so ASan sees a write past it.
 *
 * Checks:
 * - the result is WS_OK, WS_EAGAIN or WS_EHANDSHAKE with a sane status;
 * - every pointer in the ws_request (and every subprotocol from
 *   ws_request_protocol_count() / ws_request_protocol()) lies inside the
 *   input; on WS_OK inside the head;
 * - on WS_OK: the head ends in CRLF CRLF, re-parsing just the head gives
 *   the same answer, every shorter prefix is WS_EAGAIN, ws_accept_key()
 *   works on the key, and the 101 that ws_response_write() makes for it
 *   (with an offered subprotocol when one is a token) passes
 *   ws_response_parse() with the nonce the key encodes;
 * - on WS_EAGAIN: every shorter prefix is WS_EAGAIN too (monotonicity);
 * - the error response for the status parses back with that status.
 */
#include "../src/ws.c"
#include "fuzz_common.h"

static int parse(const uint8_t *d, size_t n, ws_header *h, size_t max,
                 ws_request *req, size_t *consumed, int *status) {
  return ws_request_parse(d, n, req, h, max, consumed, status);
}

/* Prefix lengths to re-check: all of them for short inputs, else a sample
 * (with the ends), to keep each run linear-ish. */
static size_t prefix_step(size_t n) { return n <= 512 ? 1 : n / 256 + 1; }

static void check_req_ptrs(const ws_request *req, const uint8_t *d, size_t n,
                           const ws_header *h, size_t max) {
  size_t i, cnt;
  FZ_CHECK(req->num_headers <= max);
  FZ_CHECK(fz_inside(req->method, req->method_len, d, n));
  FZ_CHECK(fz_inside(req->path, req->path_len, d, n));
  FZ_CHECK(fz_inside(req->host, req->host_len, d, n));
  FZ_CHECK(fz_inside(req->origin, req->origin_len, d, n));
  FZ_CHECK(fz_inside(req->key, req->key_len, d, n));
  if (req->num_headers) FZ_CHECK(req->headers == h);
  for (i = 0; i < req->num_headers; i++) {
    FZ_CHECK(fz_inside(req->headers[i].name, req->headers[i].name_len, d, n));
    FZ_CHECK(req->headers[i].name_len > 0);
    FZ_CHECK(fz_inside(req->headers[i].value, req->headers[i].value_len, d, n));
  }
  cnt = ws_request_protocol_count(req);
  for (i = 0; i < cnt && i < 4096; i++) {
    const char *name = NULL;
    size_t len = 0;
    FZ_CHECK(ws_request_protocol(req, i, &name, &len) == WS_OK);
    FZ_CHECK(len > 0 && fz_inside(name, len, d, n));
    FZ_CHECK(name[0] != ' ' && name[0] != ',' && name[len - 1] != ' ');
  }
  {
    const char *name;
    size_t len;
    FZ_CHECK(ws_request_protocol(req, cnt, &name, &len) == WS_EINVAL);
  }
  {
    const ws_header *hh = ws_request_header(req, "host");
    if (hh) FZ_CHECK(hh >= req->headers && hh < req->headers + req->num_headers);
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fz_in in = {data, size};
  size_t max = fz_u8(&in), consumed = 0, i;
  ws_header *h = (ws_header *)malloc(max ? max * sizeof *h : 1);
  const uint8_t *d = in.p;
  size_t n = in.n;
  ws_request req;
  int rc, status = 0;
  FZ_CHECK(h != NULL);
  rc = parse(d, n, h, max, &req, &consumed, &status);
  FZ_CHECK(rc == WS_OK || rc == WS_EAGAIN || rc == WS_EHANDSHAKE);

  if (rc == WS_EAGAIN) {
    for (i = 0; i < n; i += prefix_step(n)) {
      ws_request r2;
      size_t c2;
      int s2;
      FZ_CHECK(parse(d, i, h, max, &r2, &c2, &s2) == WS_EAGAIN);
    }
    free(h);
    return 0;
  }
  if (rc == WS_EHANDSHAKE) {
    FZ_CHECK(status == 400 || status == 426 || status == 431);
    check_req_ptrs(&req, d, n, h, max);
    {
      char out[256];
      size_t olen;
      uint8_t nonce[16] = {0};
      ws_response resp;
      ws_header rh[4];
      size_t rc2;
      FZ_CHECK(ws_http_error_write(out, sizeof out, status, &olen) == WS_OK);
      FZ_CHECK(ws_response_parse(out, olen, nonce, NULL, 0, &resp, rh, 4,
                                 &rc2) == WS_EHANDSHAKE);
      FZ_CHECK(resp.status == status && rc2 == olen);
    }
    free(h);
    return 0;
  }

  /* WS_OK */
  FZ_CHECK(status == 101);
  FZ_CHECK(consumed >= 4 && consumed <= n);
  FZ_CHECK(memcmp(d + consumed - 4, "\r\n\r\n", 4) == 0);
  check_req_ptrs(&req, d, consumed, h, max);
  FZ_CHECK(req.upgrade == 1 && req.minor_version >= 1);
  FZ_CHECK(req.method_len == 3 && memcmp(req.method, "GET", 3) == 0);
  FZ_CHECK(req.host != NULL && req.key != NULL);
  {
    ws_request r2;
    size_t c2 = 0;
    int s2 = 0;
    FZ_CHECK(parse(d, consumed, h, max, &r2, &c2, &s2) == WS_OK);
    FZ_CHECK(c2 == consumed && s2 == 101 && r2.key == req.key);
  }
  for (i = 0; i < consumed; i += prefix_step(consumed)) {
    ws_request r2;
    size_t c2;
    int s2;
    FZ_CHECK(parse(d, i, h, max, &r2, &c2, &s2) == WS_EAGAIN);
  }
  /* max_headers is exact: the count that was found suffices, one less is
   * 431. */
  {
    ws_request r2;
    size_t c2 = 0;
    int s2 = 0;
    FZ_CHECK(parse(d, n, h, req.num_headers, &r2, &c2, &s2) == WS_OK);
    FZ_CHECK(r2.num_headers == req.num_headers && c2 == consumed);
    if (req.num_headers > 0) {
      FZ_CHECK(parse(d, n, h, req.num_headers - 1, &r2, &c2, &s2) ==
               WS_EHANDSHAKE);
      FZ_CHECK(s2 == 431);
    }
  }
  {
    char accept[29], out[512];
    uint8_t nonce[16];
    size_t olen = 0, cnt = ws_request_protocol_count(&req), k;
    const char *proto = NULL;
    char pbuf[64];
    ws_response resp;
    ws_header rh[8];
    size_t rcons = 0;
    FZ_CHECK(ws_accept_key(req.key, req.key_len, accept) == WS_OK);
    FZ_CHECK(strlen(accept) == WS_ACCEPT_LEN);
    FZ_CHECK(ref_b64_16(req.key, req.key_len, nonce));
    /* Choose the first offered subprotocol that is a token and short. */
    for (k = 0; k < cnt && k < 64 && proto == NULL; k++) {
      const char *t;
      size_t tl;
      FZ_CHECK(ws_request_protocol(&req, k, &t, &tl) == WS_OK);
      if (tl < sizeof pbuf && ws__is_token(t, tl)) {
        memcpy(pbuf, t, tl);
        pbuf[tl] = '\0';
        proto = pbuf;
      }
    }
    FZ_CHECK(ws_response_write(out, sizeof out, req.key, req.key_len, proto,
                               NULL, 0, &olen) == WS_OK);
    FZ_CHECK(ws_response_parse(out, olen, nonce, proto,
                               proto ? strlen(proto) : 0, &resp, rh, 8,
                               &rcons) == WS_OK);
    FZ_CHECK(rcons == olen && resp.status == 101);
    if (proto)
      FZ_CHECK(resp.protocol_len == strlen(proto) &&
               memcmp(resp.protocol, proto, resp.protocol_len) == 0);
    else
      FZ_CHECK(resp.protocol == NULL);
    /* Too small a buffer is WS_ENOSPC, never an overflow. */
    {
      char *small = (char *)malloc(olen - 1);
      size_t l2;
      FZ_CHECK(small != NULL);
      FZ_CHECK(ws_response_write(small, olen - 1, req.key, req.key_len, proto,
                                 NULL, 0, &l2) == WS_ENOSPC);
      free(small);
    }
  }
  free(h);
  return 0;
}
