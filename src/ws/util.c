/* util.c - part 1: small helpers: byte order, ASCII case, HTTP tokens and comma lists, a bounded writer.
 * Uses config.h and private.h. */
#include "private.h"

static uint16_t ws__get16(const unsigned char *p) {
  return (uint16_t)((p[0] << 8) | p[1]);
}

static uint32_t ws__get32(const unsigned char *p) {
  return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) |
         ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}

static void ws__put32(unsigned char *p, uint32_t v) {
  p[0] = (unsigned char)(v >> 24);
  p[1] = (unsigned char)(v >> 16);
  p[2] = (unsigned char)(v >> 8);
  p[3] = (unsigned char)v;
}

/* memchr(), except under WS_NO_OS: there the core asks the C library for
 * memcpy, memmove, memset, memcmp and strlen only (make size checks it). */
#ifdef WS_NO_OS
static const void *ws__memchr(const void *s, int ch, size_t n) {
  const unsigned char *p = (const unsigned char *)s;
  for (; n; n--, p++)
    if (*p == (unsigned char)ch) return p;
  return NULL;
}
#else
#define ws__memchr memchr
#endif

static int ws__lower(int ch) {
  return (ch >= 'A' && ch <= 'Z') ? ch + ('a' - 'A') : ch;
}

/* Case-insensitive comparison of a counted string with a C string. */
static int ws__ieq(const char *s, size_t n, const char *lit) {
  size_t i;
  for (i = 0; i < n; i++) {
    if (lit[i] == '\0' || ws__lower((unsigned char)s[i]) !=
                              ws__lower((unsigned char)lit[i]))
      return 0;
  }
  return lit[n] == '\0';
}

/* RFC 9110 tchar: letters, digits and !#$%&'*+-.^_`|~ (a bit per ASCII
 * character). */
static const unsigned char ws__tchar_map[16] = {
    0x00, 0x00, 0x00, 0x00, 0xFA, 0x6C, 0xFF, 0x03,
    0xFE, 0xFF, 0xFF, 0xC7, 0xFF, 0xFF, 0xFF, 0x57};
#define WS__TCHAR(ch) ((ch) < 128 && (ws__tchar_map[(ch) >> 3] >> ((ch) & 7)) & 1)

static int ws__is_token(const char *s, size_t n) {
  size_t i;
  if (n == 0) return 0;
  for (i = 0; i < n; i++) {
    unsigned ch = (unsigned char)s[i];
    if (!WS__TCHAR(ch)) return 0;
  }
  return 1;
}

/* A header value the application supplies: no CR, LF or NUL. */
static int ws__safe_value(const char *s, size_t n) {
  size_t i;
  for (i = 0; i < n; i++)
    if (s[i] == '\r' || s[i] == '\n' || s[i] == '\0') return 0;
  return 1;
}

/* Iterates the elements of an HTTP comma list, trimming spaces and tabs and
 * skipping empty elements. Returns 1 with *tok and *tok_len set, 0 at the end. */
static int ws__list_next(const char **pos, const char *end, const char **tok,
                         size_t *tok_len) {
  const char *p = *pos;
  while (p < end) {
    const char *s, *e;
    while (p < end && (*p == ' ' || *p == '\t' || *p == ',')) p++;
    s = p;
    while (p < end && *p != ',') p++;
    e = p;
    while (e > s && (e[-1] == ' ' || e[-1] == '\t')) e--;
    if (e > s) {
      *tok = s;
      *tok_len = (size_t)(e - s);
      *pos = p;
      return 1;
    }
  }
  *pos = end;
  return 0;
}

static int ws__list_has(const char *v, size_t n, const char *lit) {
  const char *pos = v, *tok;
  size_t len;
  while (ws__list_next(&pos, v + n, &tok, &len))
    if (ws__ieq(tok, len, lit)) return 1;
  return 0;
}


static void ws__wr(ws__wbuf *w, const char *s, size_t n) {
  if (w->over || w->cap - w->len < n) {
    w->over = 1;
    return;
  }
  memcpy(w->p + w->len, s, n);
  w->len += n;
}

static void ws__wrs(ws__wbuf *w, const char *s) { ws__wr(w, s, strlen(s)); }

#ifndef WS_NO_SERVER
static void ws__wr_uint(ws__wbuf *w, size_t v) {
  char tmp[21];
  size_t i = sizeof tmp;
  do {
    tmp[--i] = (char)('0' + v % 10);
    v /= 10;
  } while (v && i > 0);
  ws__wr(w, tmp + i, sizeof tmp - i);
}
#endif
