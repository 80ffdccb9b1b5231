/* handshake.c - part 4, layer 0: the accept key and the HTTP upgrade, parsed and written for both roles.
 * Uses parts 0-3. Pure functions, like the codec. */
#include "private.h"

static const char ws__guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/* see ws.h */
int ws_accept_key(const char *key, size_t key_len, char out[29]) {
  ws__sha1 s;
  unsigned char md[20];
  if (key == NULL || out == NULL || key_len > 64) return WS_EINVAL;
  ws__sha1_init(&s);
  ws__sha1_update(&s, key, key_len);
  ws__sha1_update(&s, ws__guid, sizeof ws__guid - 1);
  ws__sha1_final(&s, md);
  ws__b64_encode(md, 20, out);
  out[WS_ACCEPT_LEN] = '\0';
  return WS_OK;
}

/* Finds the blank line that ends an HTTP head. Returns the head length
 * (through "\r\n\r\n"), or 0 if buf does not hold it yet. */
static size_t ws__head_end(const char *p, size_t len, size_t from) {
  size_t i = from >= 3 ? from - 3 : 0;
  for (; i + 3 < len; i++) {
    const char *q = (const char *)ws__memchr(p + i, '\r', len - 3 - i);
    if (q == NULL) return 0;
    i = (size_t)(q - p);
    if (q[1] == '\n' && q[2] == '\r' && q[3] == '\n') return i + 4;
  }
  return 0;
}

/* Lines end in CRLF. A bare LF is refused at once: a peer that only sends
 * LF would otherwise stall the handshake waiting for CRLF CRLF, and a
 * lenient reading could split headers differently from a proxy's. */
static int ws__bare_lf_from(const unsigned char *p, size_t n, size_t from) {
  const unsigned char *q = p + from, *end = p + n;
  if (from >= n) return 0;
  while ((q = (const unsigned char *)ws__memchr(q, '\n', (size_t)(end - q))) !=
         NULL) {
    if (q == p || q[-1] != '\r') return 1;
    q++;
  }
  return 0;
}

static int ws__bare_lf(const char *p, size_t n) {
  return ws__bare_lf_from((const unsigned char *)p, n, 0);
}

/* Parses header lines from p (just after the start line) to the blank line,
 * in one pass over each: name (a token), colon, spaces, value (no control
 * characters but tab), CRLF. [p, end) is a head ws__head_end() found: it
 * ends in CRLF CRLF, so each scan stops at a CR at the latest.
 * Returns 0, 400 (syntax) or 431 (too many). */
static int ws__parse_headers(const char *p, const char *end, ws_header *h,
                             size_t max, size_t *count) {
  size_t n = 0;
  for (;;) {
    const unsigned char *q = (const unsigned char *)p, *colon, *v, *ve;
    if (end - p < 2) return 400;
    if (p[0] == '\r' && p[1] == '\n') break;
    while (WS__TCHAR(*q)) q++;
    if (q == (const unsigned char *)p || *q != ':') return 400;
    colon = q;
    for (v = q + 1; *v == ' ' || *v == '\t'; v++) {
    }
    for (q = v; (*q >= 0x20 && *q != 0x7F) || *q == '\t'; q++) {
    }
    if (*q != '\r' || q[1] != '\n') return 400;
    for (ve = q; ve > v && (ve[-1] == ' ' || ve[-1] == '\t'); ve--) {
    }
    if (n == max) return 431;
    h[n].name = p;
    h[n].name_len = (size_t)((const char *)colon - p);
    h[n].value = (const char *)v;
    h[n].value_len = (size_t)(ve - v);
    n++;
    p = (const char *)q + 2;
  }
  *count = n;
  return 0;
}

/* Headers of that name, matched without regard to case. Without tok: 1
 * and *out (the first) if exactly one, 0 if none, -1 if repeated. With
 * tok: 1 if any of them holds the token in its comma list, else 0. */
static int ws__header(const ws_header *h, size_t n, const char *name,
                      const char *tok, const ws_header **out) {
  int found = 0;
  for (; n > 0; n--, h++) {
    if (!ws__ieq(h->name, h->name_len, name)) continue;
    if (tok) {
      if (ws__list_has(h->value, h->value_len, tok)) return 1;
    } else {
      if (found) return -1;
      *out = h;
      found = 1;
    }
  }
  return found;
}

/* Both parsers' first steps: the head's length in *head and the end of its
 * first line in *eol; WS_EAGAIN while the blank line has not come. */
static int ws__head(const char *p, size_t len, size_t *head, const char **eol) {
  size_t n = ws__head_end(p, len, 0);
  if (ws__bare_lf(p, n ? n : len)) return WS_EHANDSHAKE;
  if (n == 0) return WS_EAGAIN;
  *head = n;
  *eol = (const char *)ws__memchr(p, '\r', n);
  /* A bare CR ends no line: the byte after it is not to be skipped. */
  if ((*eol)[1] != '\n') return WS_EHANDSHAKE;
  return WS_OK;
}

#ifndef WS_NO_SERVER
/* A Sec-WebSocket-Key: the Base64 of 16 bytes, in its one strict form.
 * That is 22 characters of the alphabet and "==", the 22nd carrying 2 bits
 * of the last byte and 4 unused ones that must be zero ('A', 'Q', 'g' or
 * 'w'): checked so, without decoding. */
static int ws__key_ok(const char *k, size_t n) {
  size_t i;
  if (n != 24 || k[22] != '=' || k[23] != '=' ||
      ws__memchr("AQgw", k[21], 4) == NULL)
    return 0;
  for (i = 0; i < 21; i++)
    if (ws__memchr(ws__b64, k[i], 64) == NULL) return 0;
  return 1;
}

/* ws_request_parse() without its argument checks: the connection's
 * arguments are its own. */
static int ws__request_parse(const char *p, size_t len, ws_request *req,
                             ws_header *headers, size_t max_headers,
                             size_t *consumed, int *status) {
  const char *sp2, *eol;
  const ws_header *h;
  size_t head, i, n;
  int rc, st;
  memset(req, 0, sizeof *req);
  *status = 400;
  /* Fail fast on bytes that cannot start a request line. The method ends
   * at the first space: so a CR before one fails here. */
  for (i = 0; i < len && p[i] != ' '; i++)
    if (!WS__TCHAR((unsigned char)p[i])) return WS_EHANDSHAKE;
  if ((rc = ws__head(p, len, &head, &eol)) != WS_OK) return rc;
  /* Request line: method SP target SP HTTP/1.x CRLF; the target is
   * printable, without spaces, up to the second space. */
  if (i == 0) return WS_EHANDSHAKE;
  for (sp2 = p + i + 1; (unsigned char)*sp2 > 0x20 && *sp2 != 0x7F; sp2++) {
  }
  if (*sp2 != ' ' || sp2 == p + i + 1 || eol - sp2 != 9 ||
      memcmp(sp2 + 1, "HTTP/1.", 7) != 0 || sp2[8] < '0' || sp2[8] > '9')
    return WS_EHANDSHAKE;
  st = ws__parse_headers(eol + 2, p + head, headers, max_headers,
                         &req->num_headers);
  if (st != 0) {
    req->num_headers = 0;
    *status = st;
    return WS_EHANDSHAKE;
  }
  n = req->num_headers;
  req->method = p;
  req->method_len = i;
  req->path = p + i + 1;
  req->path_len = (size_t)(sp2 - p) - i - 1;
  req->minor_version = sp2[8] - '0';
  req->headers = headers;
  *consumed = head;
  if (ws__header(headers, n, "host", NULL, &h) != 1)
    return WS_EHANDSHAKE; /* RFC 9112: exactly one Host */
  req->host = h->value;
  req->host_len = h->value_len;
  if (ws__header(headers, n, "origin", NULL, &h) == 1) {
    req->origin = h->value;
    req->origin_len = h->value_len;
  }
  req->upgrade = ws__header(headers, n, "upgrade", "websocket", NULL);
  if (!req->upgrade || i != 3 || memcmp(p, "GET", 3) != 0 ||
      req->minor_version < 1 ||
      !ws__header(headers, n, "connection", "upgrade", NULL))
    return WS_EHANDSHAKE;
  rc = ws__header(headers, n, "sec-websocket-version", NULL, &h);
  if (rc == 0) return WS_EHANDSHAKE;
  if (rc < 0 || h->value_len != 2 || memcmp(h->value, "13", 2) != 0) {
    *status = 426;
    return WS_EHANDSHAKE;
  }
  if (ws__header(headers, n, "sec-websocket-key", NULL, &h) != 1 ||
      !ws__key_ok(h->value, h->value_len))
    return WS_EHANDSHAKE;
  req->key = h->value;
  req->key_len = h->value_len;
  *status = 101;
  return WS_OK;
}

/* see ws.h */
int ws_request_parse(const void *buf, size_t len, ws_request *req,
                     ws_header *headers, size_t max_headers, size_t *consumed,
                     int *status) {
  if (req == NULL || consumed == NULL || status == NULL ||
      (buf == NULL && len > 0) || (headers == NULL && max_headers > 0))
    return WS_EINVAL;
  return ws__request_parse((const char *)buf, len, req, headers, max_headers,
                           consumed, status);
}

/* see ws.h */
const ws_header *ws_request_header(const ws_request *req, const char *name) {
  const ws_header *h;
  if (req == NULL || name == NULL ||
      ws__header(req->headers, req->num_headers, name, NULL, &h) == 0)
    return NULL;
  return h;
}

/* Walks the offered subprotocols; returns how many, and the i-th in *tok. */
static size_t ws__protocols(const ws_request *req, size_t want,
                            const char **tok, size_t *tok_len) {
  size_t i, count = 0;
  for (i = 0; i < req->num_headers; i++) {
    const ws_header *h = &req->headers[i];
    const char *pos = h->value, *t;
    size_t n;
    if (!ws__ieq(h->name, h->name_len, "sec-websocket-protocol")) continue;
    while (ws__list_next(&pos, h->value + h->value_len, &t, &n)) {
      if (count == want && tok) {
        *tok = t;
        *tok_len = n;
      }
      count++;
    }
  }
  return count;
}

/* see ws.h */
size_t ws_request_protocol_count(const ws_request *req) {
  if (req == NULL) return 0;
  return ws__protocols(req, (size_t)-1, NULL, NULL);
}

/* see ws.h */
int ws_request_protocol(const ws_request *req, size_t i, const char **name,
                        size_t *name_len) {
  if (req == NULL || name == NULL || name_len == NULL) return WS_EINVAL;
  if (ws__protocols(req, i, name, name_len) <= i) return WS_EINVAL;
  return WS_OK;
}
#endif /* WS_NO_SERVER */

/* A header line from C strings: name (with its ": "), value, CRLF. */
static void ws__wr_line(ws__wbuf *w, const char *name, const char *value) {
  ws__wrs(w, name);
  ws__wrs(w, value);
  ws__wrs(w, "\r\n");
}

static int ws__wr_extra(ws__wbuf *w, const ws_header *extra, size_t n) {
  size_t i;
  if (n > 0 && extra == NULL) return WS_EINVAL;
  for (i = 0; i < n; i++) {
    const ws_header *h = &extra[i];
    if (h->name == NULL || !ws__is_token(h->name, h->name_len) ||
        (h->value == NULL && h->value_len > 0) ||
        !ws__safe_value(h->value, h->value_len))
      return WS_EINVAL;
    ws__wr(w, h->name, h->name_len);
    ws__wrs(w, ": ");
    if (h->value_len) ws__wr(w, h->value, h->value_len);
    ws__wrs(w, "\r\n");
  }
  return WS_OK;
}

#ifndef WS_NO_SERVER
/* see ws.h */
int ws_response_write(void *out, size_t cap, const char *key, size_t key_len,
                      const char *protocol, const ws_header *extra,
                      size_t n_extra, size_t *out_len) {
  ws__wbuf w;
  char accept[29];
  if (out == NULL || out_len == NULL || key == NULL) return WS_EINVAL;
  if (ws_accept_key(key, key_len, accept) != WS_OK) return WS_EINVAL;
  if (protocol && !ws__is_token(protocol, strlen(protocol))) return WS_EINVAL;
  w.p = (char *)out, w.cap = cap, w.len = 0, w.over = 0;
  ws__wr_line(&w,
              "HTTP/1.1 101 Switching Protocols\r\n"
              "Upgrade: websocket\r\n"
              "Connection: Upgrade\r\n"
              "Sec-WebSocket-Accept: ",
              accept);
  if (protocol) ws__wr_line(&w, "Sec-WebSocket-Protocol: ", protocol);
  if (ws__wr_extra(&w, extra, n_extra) != WS_OK) return WS_EINVAL;
  ws__wrs(&w, "\r\n");
  if (w.over) return WS_ENOSPC;
  *out_len = w.len;
  return WS_OK;
}

/* Each phrase after one byte, its status less 399; a 0 byte ends them.
 * One string and a loop: a switch over the same cases is twice the code. */
static const char ws__phrases[] =
    "\001Bad Request\0\002Unauthorized\0\004Forbidden\0\005Not Found\0"
    "\006Method Not Allowed\0\011Request Timeout\0\033Upgrade Required\0"
    "\036Too Many Requests\0\040Request Header Fields Too Large\0"
    "\145Internal Server Error\0\146Not Implemented\0"
    "\150Service Unavailable\0\0Error";

static const char *ws__reason_phrase(int status) {
  const char *s = ws__phrases;
  while (*s && (unsigned char)*s != status - 399) s += strlen(s) + 1;
  return s + 1; /* the phrase, or at the end "Error" */
}

/* The head of every answer but the 101 (ws_http_error_write(),
 * ws_http_respond()) up to its own headers: the status line, the line mid
 * ("" for none), "Connection: close" and the Content-Length. */
static void ws__http_head(ws__wbuf *w, int status, const char *mid,
                          size_t len) {
  ws__wrs(w, "HTTP/1.1 ");
  ws__wr_uint(w, (unsigned)status);
  ws__wr_line(w, " ", status == 200 ? "OK" : ws__reason_phrase(status));
  ws__wrs(w, mid);
  ws__wrs(w, "Connection: close\r\nContent-Length: ");
  ws__wr_uint(w, len);
  ws__wrs(w, "\r\n");
}

/* see ws.h */
int ws_http_error_write(void *out, size_t cap, int status, size_t *out_len) {
  ws__wbuf w;
  if (out == NULL || out_len == NULL || status < 400 || status > 599)
    return WS_EINVAL;
  w.p = (char *)out, w.cap = cap, w.len = 0, w.over = 0;
  ws__http_head(&w, status,
                status == 426 ? "Sec-WebSocket-Version: 13\r\n" : "", 0);
  ws__wrs(&w, "\r\n");
  if (w.over) return WS_ENOSPC;
  *out_len = w.len;
  return WS_OK;
}
#endif /* WS_NO_SERVER */

#ifndef WS_NO_CLIENT
/* A request-target or Host value: printable, no spaces. */
static int ws__safe_word(const char *s) {
  for (; *s; s++)
    if ((unsigned char)*s <= 0x20 || *s == 0x7F) return 0;
  return 1;
}

/* see ws.h */
int ws_client_request_write(void *out, size_t cap, const ws_client_opts *o,
                            const uint8_t nonce[16], size_t *out_len) {
  ws__wbuf w;
  char key[25];
  const char *path;
  if (out == NULL || o == NULL || nonce == NULL || out_len == NULL ||
      o->host == NULL || o->host[0] == '\0' || !ws__safe_word(o->host))
    return WS_EINVAL;
  path = (o->path && o->path[0]) ? o->path : "/";
  if (!ws__safe_word(path) ||
      (o->origin && !ws__safe_value(o->origin, strlen(o->origin))))
    return WS_EINVAL;
  if (o->protocols) {
    /* Each element a token: so no CR, LF or NUL anywhere (the list's
     * separators, commas, spaces and tabs, are all it may hold besides). */
    const char *pos = o->protocols, *t;
    size_t n, len = strlen(o->protocols);
    while (ws__list_next(&pos, o->protocols + len, &t, &n))
      if (!ws__is_token(t, n)) return WS_EINVAL;
  }
  ws__b64_encode(nonce, 16, key);
  key[24] = '\0';
  w.p = (char *)out, w.cap = cap, w.len = 0, w.over = 0;
  ws__wrs(&w, "GET ");
  ws__wrs(&w, path);
  ws__wr_line(&w, " HTTP/1.1\r\nHost: ", o->host);
  ws__wr_line(&w,
              "Upgrade: websocket\r\nConnection: Upgrade\r\n"
              "Sec-WebSocket-Key: ",
              key);
  ws__wrs(&w, "Sec-WebSocket-Version: 13\r\n");
  if (o->origin) ws__wr_line(&w, "Origin: ", o->origin);
  if (o->protocols && o->protocols[0])
    ws__wr_line(&w, "Sec-WebSocket-Protocol: ", o->protocols);
  if (ws__wr_extra(&w, o->headers, o->num_headers) != WS_OK) return WS_EINVAL;
  ws__wrs(&w, "\r\n");
  if (w.over) return WS_ENOSPC;
  *out_len = w.len;
  return WS_OK;
}

/* ws_response_parse() without its argument checks (the connection's
 * arguments are its own); with ext_ok, the extensions chosen are left to
 * the caller (a connection that offered one checks them). */
static int ws__response_parse(const void *buf, size_t len,
                              const uint8_t nonce[16], const char *protocols,
                              size_t protocols_len, ws_response *resp,
                              ws_header *headers, size_t max_headers,
                              size_t *consumed, int ext_ok) {
  const char *p = (const char *)buf, *eol;
  const ws_header *h;
  size_t head, i, nh;
  int rc;
  char key[24], accept[29];
  memset(resp, 0, sizeof *resp);
  /* Fail fast when the bytes cannot be an HTTP/1.1 status line. */
  for (i = 0; i < len && i < 9; i++)
    if (p[i] != "HTTP/1.1 "[i]) return WS_EHANDSHAKE;
  if ((rc = ws__head(p, len, &head, &eol)) != WS_OK) return rc;
  /* Status line: HTTP/1.1 SP 3 digits (100..599) [SP reason] CRLF; the
   * status is counted in rc, WS_OK (0) here. */
  if (eol - p < 12 || p[9] < '1' || p[9] > '5' ||
      (eol - p > 12 && p[12] != ' '))
    return WS_EHANDSHAKE;
  for (i = 9; i < 12; i++) {
    if (p[i] < '0' || p[i] > '9') return WS_EHANDSHAKE;
    rc = rc * 10 + (p[i] - '0');
  }
  resp->status = rc;
  if (ws__parse_headers(eol + 2, p + head, headers, max_headers,
                        &resp->num_headers) != 0)
    return WS_EHANDSHAKE;
  nh = resp->num_headers;
  resp->headers = headers;
  *consumed = head;
  if (resp->status != 101 ||
      !ws__header(headers, nh, "upgrade", "websocket", NULL) ||
      !ws__header(headers, nh, "connection", "upgrade", NULL))
    return WS_EHANDSHAKE;
  ws__b64_encode(nonce, 16, key);
  ws_accept_key(key, sizeof key, accept);
  if (ws__header(headers, nh, "sec-websocket-accept", NULL, &h) != 1 ||
      h->value_len != WS_ACCEPT_LEN ||
      memcmp(h->value, accept, WS_ACCEPT_LEN) != 0)
    return WS_EHANDSHAKE;
  /* Without an offer, the server may not pick any extension. */
  for (i = 0; i < nh && !ext_ok; i++)
    if (ws__ieq(headers[i].name, headers[i].name_len,
                "sec-websocket-extensions") &&
        headers[i].value_len > 0)
      return WS_EHANDSHAKE;
  rc = ws__header(headers, nh, "sec-websocket-protocol", NULL, &h);
  if (rc < 0) return WS_EHANDSHAKE;
  if (rc == 1) {
    const char *pos = protocols, *t;
    size_t n;
    int offered = 0;
    if (!ws__is_token(h->value, h->value_len)) return WS_EHANDSHAKE;
    while (protocols && ws__list_next(&pos, protocols + protocols_len, &t, &n))
      if (n == h->value_len && memcmp(t, h->value, n) == 0) offered = 1;
    if (!offered) return WS_EHANDSHAKE;
    resp->protocol = h->value;
    resp->protocol_len = h->value_len;
  }
  return WS_OK;
}

/* see ws.h */
int ws_response_parse(const void *buf, size_t len, const uint8_t nonce[16],
                      const char *protocols, size_t protocols_len,
                      ws_response *resp, ws_header *headers,
                      size_t max_headers, size_t *consumed) {
  if (resp == NULL || consumed == NULL || nonce == NULL ||
      (buf == NULL && len > 0) || (headers == NULL && max_headers > 0) ||
      (protocols == NULL && protocols_len > 0))
    return WS_EINVAL;
  return ws__response_parse(buf, len, nonce, protocols, protocols_len, resp,
                            headers, max_headers, consumed, 0);
}
#endif /* WS_NO_CLIENT */
