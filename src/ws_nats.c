/* SPDX-License-Identifier: MIT. Copyright (c) 2026 the ws authors; terms in LICENSE. */
/*
 * ws_nats.c - the NATS bridge (include/ws_nats.h says what it promises).
 * It speaks the NATS client text protocol over one non-blocking TCP socket
 * that the loop watches, and uses ws.h's public API only: ws_watch for the
 * socket, ws_timer for backoff and pings, ws_loop_on_topic() to learn
 * which topics to subscribe, ws_loop_publish() to deliver. libc only.
 */
#if !defined(_WIN32) && !defined(_DEFAULT_SOURCE)
#define _DEFAULT_SOURCE 1 /* getaddrinfo, strncasecmp, fcntl flags */
#endif
#include "ws_nats.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#define WS_NATS__PORT 4222u
#define WS_NATS__LINE_MAX (64u * 1024) /* longest line taken from the server */
#define WS_NATS__SUBJECT_MAX 4000u      /* the server's control line is 4096 */
#define WS_NATS__CTL_SLACK (64u * 1024) /* SUB/UNSUB/PING/PONG past max_queue */
#define WS_NATS__READ 65536u            /* bytes asked of one read */
#define WS_NATS__ENV 13u                /* "WSB1" + origin + op */
#define WS_NATS__NO_PING_TIMEOUT 10000u /* handshake bound when ping_ms is 0 */

enum { WS_NATS__DOWN, WS_NATS__CONNECTING, WS_NATS__INFO, WS_NATS__SENT,
       WS_NATS__UP };

/* One live topic: its subject and the sid it is subscribed with. */
typedef struct ws_nats__topic {
  struct ws_nats__topic *next; /* hash chain */
  unsigned long sid;
  size_t slen;                 /* 0: subject too long, the topic stays local */
  char *subject;
  char name[];                 /* the topic, NUL-terminated */
} ws_nats__topic;

struct ws_nats {
  ws_loop *loop;
  ws_nats_config cfg;          /* url and prefix point into strs */
  char *strs;                  /* copies of url and prefix, parsed parts */
  const char *host, *user, *pass, *token;
  char port[8];
  struct sockaddr_storage addr; /* numeric host, resolved at open */
  socklen_t addrlen;           /* 0: a name, resolved at each attempt */
  unsigned attempt;            /* picks the address of a name in turn */
  unsigned char origin[8];
  uint64_t rng;
  int state, fd;
  ws_watch watch;
  ws_timer retry, ping;
  unsigned backoff;            /* the current d of the full jitter */
  unsigned pongs_due;          /* our PINGs not yet answered */
  size_t max_payload;          /* from INFO */
  unsigned char *out;          /* to the server: [ooff, olen) */
  size_t ocap, olen, ooff;
  unsigned char *in;           /* from the server: [ioff, ilen) */
  size_t icap, ilen, ioff;
  size_t skip;                 /* bytes of a refused MSG still to drop */
  char *scratch;               /* a subject or topic, WS_NATS__LINE_MAX + 1 */
  ws_nats__topic **tab;        /* live topics, chained hash */
  size_t tcap, ntopics;
  unsigned long next_sid;
  ws_nats_stats st;
  char last_err[128];
};

/* Names -------------------------------------------------------------------- */

static int ws_nats__keep(unsigned char c) {
  return c > 0x20 && c < 0x7F && c != '.' && c != '*' && c != '>' && c != '%';
}

/* Writes prefix + the topic's token into dst (cap bytes, NUL-terminated).
 * Returns the subject's length, or 0 when it would pass
 * WS_NATS__SUBJECT_MAX. */
static size_t ws_nats__subject(const char *prefix, const char *topic,
                               char *dst, size_t cap) {
  static const char hex[] = "0123456789ABCDEF";
  size_t n = strlen(prefix), i;
  if (cap > WS_NATS__SUBJECT_MAX + 1) cap = WS_NATS__SUBJECT_MAX + 1;
  if (n + 2 > cap) return 0;
  memcpy(dst, prefix, n);
  if (*topic == '\0') {
    dst[n++] = '%';
  } else {
    for (i = 0; topic[i]; i++) {
      unsigned char c = (unsigned char)topic[i];
      if (ws_nats__keep(c)) {
        if (n + 2 > cap) return 0;
        dst[n++] = (char)c;
      } else {
        if (n + 4 > cap) return 0;
        dst[n++] = '%';
        dst[n++] = hex[c >> 4];
        dst[n++] = hex[c & 15];
      }
    }
  }
  dst[n] = '\0';
  return n;
}

static int ws_nats__hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* The topic of a subject (s, n bytes) into dst (n + 1 bytes at least):
 * 0, or -1 when the subject is not one ws_nats__subject() makes. */
static int ws_nats__topic_of(const char *prefix, const char *s, size_t n,
                             char *dst) {
  size_t pl = strlen(prefix), i, o = 0;
  if (n <= pl || memcmp(s, prefix, pl) != 0) return -1;
  s += pl;
  n -= pl;
  if (n == 1 && s[0] == '%') {
    dst[0] = '\0';
    return 0;
  }
  for (i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '%') {
      int hi, lo;
      if (i + 2 >= n) return -1;
      hi = ws_nats__hexval(s[i + 1]);
      lo = ws_nats__hexval(s[i + 2]);
      /* Only the escapes ws_nats__subject() writes: one byte, one form. */
      if (hi < 0 || lo < 0 || (hi == 0 && lo == 0) ||
          ws_nats__keep((unsigned char)(hi << 4 | lo)))
        return -1;
      dst[o++] = (char)(hi << 4 | lo);
      i += 2;
    } else if (ws_nats__keep(c)) {
      dst[o++] = (char)c;
    } else {
      return -1;
    }
  }
  dst[o] = '\0';
  return 0;
}

/* A prefix is "" or tokens each followed by '.'. */
static int ws_nats__prefix_ok(const char *p) {
  size_t tok = 0;
  for (; *p; p++) {
    unsigned char c = (unsigned char)*p;
    if (c == '.') {
      if (tok == 0) return 0;
      tok = 0;
    } else if (c <= 0x20 || c == 0x7F || c == '*' || c == '>') {
      return 0;
    } else {
      tok++;
    }
  }
  return tok == 0;
}

/* Topics ------------------------------------------------------------------- */

static size_t ws_nats__hash(const char *s) {
  size_t h = 2166136261u;
  for (; *s; s++) h = (h ^ (unsigned char)*s) * 16777619u;
  return h;
}

static ws_nats__topic **ws_nats__slot(ws_nats *b, const char *name) {
  ws_nats__topic **tp = &b->tab[ws_nats__hash(name) & (b->tcap - 1)];
  while (*tp && strcmp((*tp)->name, name) != 0) tp = &(*tp)->next;
  return tp;
}

static int ws_nats__grow_tab(ws_nats *b) {
  size_t cap = b->tcap * 2, i;
  ws_nats__topic **tab = (ws_nats__topic **)calloc(cap, sizeof *tab);
  if (tab == NULL) return -1;
  for (i = 0; i < b->tcap; i++) {
    ws_nats__topic *t = b->tab[i], *next;
    for (; t; t = next) {
      size_t k = ws_nats__hash(t->name) & (cap - 1);
      next = t->next;
      t->next = tab[k];
      tab[k] = t;
    }
  }
  free(b->tab);
  b->tab = tab;
  b->tcap = cap;
  return 0;
}

/* Output ------------------------------------------------------------------- */

static void ws_nats__want(ws_nats *b) {
  unsigned ev = WS_WATCH_READ;
  if (b->fd < 0 || b->state == WS_NATS__CONNECTING) return;
  if (b->olen > b->ooff) ev |= WS_WATCH_WRITE;
  ws_watch_set(b->loop, &b->watch, ev);
}

/* Room for n more bytes within limit bytes waiting: a pointer to write
 * them to, or NULL. */
static unsigned char *ws_nats__room(ws_nats *b, size_t n, size_t limit) {
  size_t pending = b->olen - b->ooff;
  if (n > limit || pending > limit - n) return NULL;
  if (b->ocap - b->olen < n) {
    if (b->ooff) {
      memmove(b->out, b->out + b->ooff, pending);
      b->olen = pending;
      b->ooff = 0;
    }
    if (b->ocap - b->olen < n) {
      size_t cap = b->ocap ? b->ocap : 4096;
      unsigned char *p;
      while (cap - b->olen < n) cap *= 2;
      /* Never more than the limit: doubling would pass it by up to 2x. */
      if (limit != (size_t)-1 && cap > limit && b->olen + n <= limit)
        cap = limit;
      p = (unsigned char *)realloc(b->out, cap);
      if (p == NULL) return NULL;
      b->out = p;
      b->ocap = cap;
    }
  }
  return b->out + b->olen;
}

static void ws_nats__down(ws_nats *b);

/* Queues a protocol line (no payload). force: past any limit (the SUBs of
 * a new link). Ends the link when it does not fit. */
static int ws_nats__ctl(ws_nats *b, const char *line, size_t n, int force) {
  unsigned char *p = ws_nats__room(
      b, n, force ? (size_t)-1 : b->cfg.max_queue + WS_NATS__CTL_SLACK);
  if (p == NULL) {
    ws_nats__down(b);
    return -1;
  }
  memcpy(p, line, n);
  b->olen += n;
  ws_nats__want(b);
  return 0;
}

static int ws_nats__sub(ws_nats *b, const ws_nats__topic *t, int force) {
  char head[48];
  int hn;
  if (t->slen == 0) return 0;
  hn = snprintf(head, sizeof head, " %lu\r\n", t->sid);
  /* Build "SUB subject sid\r\n" in scratch: the subject is kept apart. */
  memcpy(b->scratch, "SUB ", 4);
  memcpy(b->scratch + 4, t->subject, t->slen);
  memcpy(b->scratch + 4 + t->slen, head, (size_t)hn);
  return ws_nats__ctl(b, b->scratch, 4 + t->slen + (size_t)hn, force);
}

/* Writes what the socket takes; 0, or -1 when the link failed. */
static int ws_nats__flush(ws_nats *b) {
  while (b->olen > b->ooff) {
    ssize_t n;
#ifdef MSG_NOSIGNAL
    n = send(b->fd, b->out + b->ooff, b->olen - b->ooff, MSG_NOSIGNAL);
#else
    n = send(b->fd, b->out + b->ooff, b->olen - b->ooff, 0);
#endif
    if (n > 0) {
      b->ooff += (size_t)n;
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      break;
    } else {
      return -1;
    }
  }
  if (b->olen == b->ooff) b->olen = b->ooff = 0;
  ws_nats__want(b);
  return 0;
}

/* Link --------------------------------------------------------------------- */

static uint64_t ws_nats__rand(ws_nats *b) {
  /* xorshift64*: jitter only, seeded from the origin. */
  b->rng ^= b->rng >> 12;
  b->rng ^= b->rng << 25;
  b->rng ^= b->rng >> 27;
  return b->rng * 2685821657736338717ull;
}

static void ws_nats__connect(ws_nats *b);

static void ws_nats__retry_cb(ws_loop *l, ws_timer *t, void *user) {
  (void)l, (void)t;
  ws_nats__connect((ws_nats *)user);
}

static void ws_nats__schedule(ws_nats *b) {
  uint64_t d = b->backoff ? b->backoff : 1;
  ws_timer_start(b->loop, &b->retry, ws_nats__rand(b) % d, 0,
                 ws_nats__retry_cb, b);
  if (b->backoff < b->cfg.backoff_max_ms) {
    b->backoff = b->backoff > b->cfg.backoff_max_ms / 2
                     ? b->cfg.backoff_max_ms
                     : b->backoff * 2;
    if (b->backoff == 0) b->backoff = 1;
  }
}

/* Ends the link (or the attempt) and schedules the next one. */
static void ws_nats__down(ws_nats *b) {
  int was_up = b->state == WS_NATS__UP;
  if (b->state == WS_NATS__DOWN) return;
  ws_watch_stop(b->loop, &b->watch);
  if (b->fd >= 0) close(b->fd);
  b->fd = -1;
  ws_timer_stop(b->loop, &b->ping);
  b->state = WS_NATS__DOWN;
  b->olen = b->ooff = b->ilen = b->ioff = b->skip = 0;
  b->pongs_due = 0;
  b->st.failures++;
  ws_nats__schedule(b);
  if (was_up && b->cfg.on_state) b->cfg.on_state(b, 0, b->cfg.user);
}

static void ws_nats__ping_cb(ws_loop *l, ws_timer *t, void *user) {
  ws_nats *b = (ws_nats *)user;
  (void)l, (void)t;
  if (b->state != WS_NATS__UP || b->pongs_due > 0) {
    /* Not up in time, or the last PING is unanswered: a dead or stopped
     * server, whose socket may still accept our bytes. */
    ws_nats__down(b);
    return;
  }
  if (ws_nats__ctl(b, "PING\r\n", 6, 0) == 0) b->pongs_due++;
}

static void ws_nats__io(ws_loop *l, ws_watch *w, unsigned ready, void *user);

static void ws_nats__connect(ws_nats *b) {
  struct sockaddr_storage ss;
  socklen_t sl = b->addrlen;
  int fd, one = 1, rc;
  uint64_t hs;
  if (b->addrlen) {
    memcpy(&ss, &b->addr, sizeof ss);
  } else {
    struct addrinfo hints, *res = NULL, *ai;
    unsigned n = 0, k;
    memset(&hints, 0, sizeof hints);
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_family = AF_UNSPEC;
    if (getaddrinfo(b->host, b->port, &hints, &res) != 0 || res == NULL) {
      b->state = WS_NATS__CONNECTING; /* so that down() counts it */
      ws_nats__down(b);
      return;
    }
    for (ai = res; ai; ai = ai->ai_next) n++;
    for (ai = res, k = b->attempt++ % n; k; k--) ai = ai->ai_next;
    memcpy(&ss, ai->ai_addr, ai->ai_addrlen);
    sl = (socklen_t)ai->ai_addrlen;
    freeaddrinfo(res);
  }
  b->state = WS_NATS__CONNECTING;
  fd = socket(ss.ss_family, SOCK_STREAM, 0);
  if (fd < 0) {
    ws_nats__down(b);
    return;
  }
  b->fd = fd;
  fcntl(fd, F_SETFD, FD_CLOEXEC);
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
#ifdef SO_NOSIGPIPE
  setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &one, sizeof one);
#endif
  rc = connect(fd, (struct sockaddr *)&ss, sl);
  if (rc != 0 && errno != EINPROGRESS) {
    ws_nats__down(b);
    return;
  }
  if (rc == 0) b->state = WS_NATS__INFO;
  if (ws_watch_start(b->loop, &b->watch, fd,
                     rc == 0 ? WS_WATCH_READ : WS_WATCH_WRITE, ws_nats__io,
                     b) != WS_OK) {
    ws_nats__down(b);
    return;
  }
  /* The link must be up within 2 * ping_ms: a server that accepts but
   * never speaks (stopped) holds no attempt for longer. */
  hs = b->cfg.ping_ms ? 2ull * b->cfg.ping_ms : WS_NATS__NO_PING_TIMEOUT;
  ws_timer_start(b->loop, &b->ping, hs, 0, ws_nats__ping_cb, b);
}

/* Appends s as a JSON string body (no quotes). */
static size_t ws_nats__json(char *dst, const char *s) {
  size_t n = 0;
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\') {
      dst[n++] = '\\';
      dst[n++] = (char)c;
    } else if (c < 0x20) {
      n += (size_t)sprintf(dst + n, "\\u%04x", c);
    } else {
      dst[n++] = (char)c;
    }
  }
  return n;
}

/* The first INFO: send CONNECT, every live topic's SUB, then a PING whose
 * PONG says the server has taken them all. */
static void ws_nats__hello(ws_nats *b, const char *info, size_t n) {
  static const char head[] =
      "CONNECT {\"verbose\":false,\"pedantic\":false,\"echo\":false,"
      "\"protocol\":1,\"lang\":\"c\",\"version\":\"ws\",\"name\":\"ws_nats\","
      "\"tls_required\":false";
  char *line;
  size_t k = 0, i;
  const char *p;
  int rc;
  (void)n;
  p = strstr(info, "\"max_payload\":");
  if (p) {
    size_t v = 0;
    for (p += 14; *p == ' '; p++) {
    }
    for (; *p >= '0' && *p <= '9' && v < ((size_t)-1) / 16; p++)
      v = v * 10 + (size_t)(*p - '0');
    if (v > 0) b->max_payload = v;
  }
  /* CONNECT with the credentials, each up to 6x longer when escaped. */
  line = (char *)malloc(sizeof head + 64 +
                        6 * (strlen(b->user) + strlen(b->pass) +
                             strlen(b->token)));
  if (line == NULL) {
    ws_nats__down(b);
    return;
  }
  memcpy(line, head, sizeof head - 1);
  k = sizeof head - 1;
  if (*b->token) {
    memcpy(line + k, ",\"auth_token\":\"", 15);
    k += 15;
    k += ws_nats__json(line + k, b->token);
    line[k++] = '"';
  } else if (*b->user) {
    memcpy(line + k, ",\"user\":\"", 9);
    k += 9;
    k += ws_nats__json(line + k, b->user);
    memcpy(line + k, "\",\"pass\":\"", 10);
    k += 10;
    k += ws_nats__json(line + k, b->pass);
    line[k++] = '"';
  }
  memcpy(line + k, "}\r\n", 3);
  k += 3;
  b->state = WS_NATS__SENT;
  rc = ws_nats__ctl(b, line, k, 1);
  free(line);
  if (rc != 0) return;
  for (i = 0; i < b->tcap; i++) {
    ws_nats__topic *t;
    for (t = b->tab[i]; t; t = t->next)
      if (ws_nats__sub(b, t, 1) != 0) return;
  }
  if (ws_nats__ctl(b, "PING\r\n", 6, 1) == 0) b->pongs_due = 1;
}

static void ws_nats__up(ws_nats *b) {
  b->state = WS_NATS__UP;
  b->st.connects++;
  b->backoff = b->cfg.backoff_min_ms;
  ws_timer_stop(b->loop, &b->ping);
  if (b->cfg.ping_ms)
    ws_timer_start(b->loop, &b->ping, b->cfg.ping_ms, b->cfg.ping_ms,
                   ws_nats__ping_cb, b);
  if (b->cfg.on_state) b->cfg.on_state(b, 1, b->cfg.user);
}

/* Input -------------------------------------------------------------------- */

/* One message from the server, whole. */
static void ws_nats__deliver(ws_nats *b, const char *subject, size_t slen,
                             const unsigned char *p, size_t n) {
  const unsigned char *data = p;
  size_t len = n;
  int op;
  uint32_t u = WS_UTF8_INIT;
  ws_nats__topic *t;
  if (ws_nats__topic_of(b->cfg.prefix, subject, slen, b->scratch) != 0) {
    b->st.junk++;
    return;
  }
  t = *ws_nats__slot(b, b->scratch);
  if (t == NULL) return; /* sent before our UNSUB reached the server */
  if (n >= WS_NATS__ENV && memcmp(p, "WSB1", 4) == 0 &&
      (p[12] == WS_OP_TEXT || p[12] == WS_OP_BINARY)) {
    if (memcmp(p + 4, b->origin, 8) == 0) return; /* delivered locally */
    op = p[12];
    data = p + WS_NATS__ENV;
    len = n - WS_NATS__ENV;
  } else if (b->cfg.accept_foreign) {
    op = ws_utf8_check(&u, p, n, 1, NULL) == WS_OK ? WS_OP_TEXT : WS_OP_BINARY;
  } else {
    b->st.junk++;
    return;
  }
  if (op == WS_OP_TEXT && data != p &&
      ws_utf8_check(&u, data, len, 1, NULL) != WS_OK) {
    b->st.junk++;
    return;
  }
  b->st.received++;
  if (b->cfg.on_message &&
      !b->cfg.on_message(b, t->name, op, data, len, b->cfg.user))
    return;
  if (ws_loop_publish(b->loop, t->name, op, data, len, NULL) == WS_EUTF8)
    b->st.junk++;
}

/* Splits a line into at most 5 space/tab separated fields. */
static int ws_nats__fields(char *s, char **f, size_t *fl) {
  int k = 0;
  while (*s) {
    while (*s == ' ' || *s == '\t') s++;
    if (!*s) break;
    if (k == 5) return -1;
    f[k] = s;
    while (*s && *s != ' ' && *s != '\t') s++;
    fl[k] = (size_t)(s - f[k]);
    k++;
  }
  return k;
}

static int ws_nats__size(const char *s, size_t n, size_t *v) {
  size_t i, x = 0;
  if (n == 0 || n > 19) return -1;
  for (i = 0; i < n; i++) {
    if (s[i] < '0' || s[i] > '9' || x > ((size_t)-1 - 9) / 10) return -1;
    x = x * 10 + (size_t)(s[i] - '0');
  }
  *v = x;
  return 0;
}

/* Handles what [ioff, ilen) holds whole. 0: needs more bytes; -1: the link
 * failed (it is down). */
static int ws_nats__parse(ws_nats *b) {
  while (b->state != WS_NATS__DOWN) {
    unsigned char *s = b->in + b->ioff, *nl;
    size_t avail = b->ilen - b->ioff, ll;
    char *line;
    if (b->skip) {
      size_t k = b->skip < avail ? b->skip : avail;
      b->skip -= k;
      b->ioff += k;
      if (b->skip) return 0;
      continue;
    }
    if (avail == 0) return 0;
    nl = (unsigned char *)memchr(s, '\n', avail);
    if (nl == NULL) {
      if (avail > WS_NATS__LINE_MAX) goto fail;
      return 0;
    }
    ll = (size_t)(nl - s);
    if (ll > WS_NATS__LINE_MAX) goto fail;
    if (ll && s[ll - 1] == '\r') ll--;
    if (ll >= 4 && strncasecmp((char *)s, "MSG ", 4) == 0) {
      char *f[5];
      size_t fl[5], plen, i;
      int k;
      memcpy(b->scratch, s + 4, ll - 4);
      b->scratch[ll - 4] = '\0';
      k = ws_nats__fields(b->scratch, f, fl);
      /* MSG <subject> <sid> [reply-to] <#bytes> */
      if ((k != 3 && k != 4) || ws_nats__size(f[k - 1], fl[k - 1], &plen))
        goto fail;
      if (plen > b->cfg.max_message) {
        /* Dropped as it arrives, never buffered whole. */
        b->st.junk++;
        b->ioff += (size_t)(nl - s) + 1;
        b->skip = plen + 2;
        continue;
      }
      i = (size_t)(nl - s) + 1;
      if (avail < i + plen + 2) {
        /* The payload is still coming: make room for all of it. */
        size_t need = i + plen + 2;
        if (b->ioff) {
          memmove(b->in, s, avail);
          b->ilen = avail;
          b->ioff = 0;
        }
        if (b->icap < need) {
          unsigned char *p = (unsigned char *)realloc(b->in, need);
          if (p == NULL) goto fail;
          b->in = p;
          b->icap = need;
        }
        return 0;
      }
      if (s[i + plen] != '\r' || s[i + plen + 1] != '\n') goto fail;
      b->ioff += i + plen + 2;
      /* scratch holds the subject (f[0]); it is also where the topic is
       * decoded, so copy the subject to the line's place first. */
      memcpy(s, f[0], fl[0]);
      ws_nats__deliver(b, (const char *)s, fl[0], s + i, plen);
      continue;
    }
    line = (char *)s;
    b->ioff += (size_t)(nl - s) + 1;
    if (ll == 4 && strncasecmp(line, "PING", 4) == 0) {
      if (ws_nats__ctl(b, "PONG\r\n", 6, 0) != 0) return -1;
    } else if (ll == 4 && strncasecmp(line, "PONG", 4) == 0) {
      if (b->pongs_due) b->pongs_due--;
      if (b->state == WS_NATS__SENT && b->pongs_due == 0) ws_nats__up(b);
    } else if (ll == 3 && strncasecmp(line, "+OK", 3) == 0) {
      /* verbose is off; a server may still acknowledge */
    } else if (ll >= 4 && strncasecmp(line, "-ERR", 4) == 0) {
      size_t o = 0, j;
      b->st.errors++;
      for (j = 4; j < ll && o + 1 < sizeof b->last_err; j++)
        if (!(j == 4 && line[j] == ' ') && line[j] != '\'')
          b->last_err[o++] = line[j];
      b->last_err[o] = '\0';
    } else if (ll >= 5 && strncasecmp(line, "INFO ", 5) == 0) {
      memcpy(b->scratch, line, ll);
      b->scratch[ll] = '\0';
      if (b->state == WS_NATS__INFO) {
        ws_nats__hello(b, b->scratch, ll);
      } else {
        const char *p = strstr(b->scratch, "\"max_payload\":");
        size_t v = 0;
        if (p) {
          for (p += 14; *p == ' '; p++) {
          }
          if (ws_nats__size(p, strspn(p, "0123456789"), &v) == 0 && v)
            b->max_payload = v;
        }
      }
    } else if (ll == 0) {
      /* an empty line: harmless */
    } else {
      goto fail; /* a protocol we do not speak: start over */
    }
  }
  return -1;
fail:
  ws_nats__down(b);
  return -1;
}

static void ws_nats__read(ws_nats *b) {
  ssize_t n;
  if (b->ioff == b->ilen) b->ioff = b->ilen = 0;
  if (b->icap - b->ilen < WS_NATS__READ) {
    if (b->ioff) {
      memmove(b->in, b->in + b->ioff, b->ilen - b->ioff);
      b->ilen -= b->ioff;
      b->ioff = 0;
    }
    if (b->icap - b->ilen < WS_NATS__READ) {
      unsigned char *p = (unsigned char *)realloc(b->in, b->ilen + WS_NATS__READ);
      if (p == NULL) {
        ws_nats__down(b);
        return;
      }
      b->in = p;
      b->icap = b->ilen + WS_NATS__READ;
    }
  }
  n = recv(b->fd, b->in + b->ilen, b->icap - b->ilen, 0);
  if (n > 0) {
    b->ilen += (size_t)n;
    ws_nats__parse(b);
    /* A large buffer grown for one payload goes back to the usual size. */
    if (b->state != WS_NATS__DOWN && b->ioff == b->ilen &&
        b->icap > 4 * WS_NATS__READ) {
      free(b->in);
      b->in = NULL;
      b->icap = b->ilen = b->ioff = 0;
    }
  } else if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK &&
                        errno != EINTR)) {
    ws_nats__down(b);
  }
}

static void ws_nats__io(ws_loop *l, ws_watch *w, unsigned ready, void *user) {
  ws_nats *b = (ws_nats *)user;
  (void)l, (void)w;
  if (b->state == WS_NATS__CONNECTING) {
    int err = 0;
    socklen_t el = sizeof err;
    if (getsockopt(b->fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0 || err) {
      ws_nats__down(b);
      return;
    }
    b->state = WS_NATS__INFO;
    ws_watch_set(b->loop, &b->watch, WS_WATCH_READ);
    return;
  }
  if (ready & WS_WATCH_READ) {
    ws_nats__read(b);
    if (b->state == WS_NATS__DOWN) return;
  }
  if (b->olen > b->ooff && ws_nats__flush(b) != 0) ws_nats__down(b);
}

/* Topic hook --------------------------------------------------------------- */

static void ws_nats__on_topic(ws_loop *l, const char *topic, int active,
                              void *user) {
  ws_nats *b = (ws_nats *)user;
  ws_nats__topic **tp, *t;
  int linked = b->state == WS_NATS__SENT || b->state == WS_NATS__UP;
  (void)l;
  tp = ws_nats__slot(b, topic);
  if (active) {
    size_t nl, sl;
    if (*tp) return;
    sl = ws_nats__subject(b->cfg.prefix, topic, b->scratch,
                          WS_NATS__LINE_MAX + 1);
    nl = strlen(topic);
    t = (ws_nats__topic *)malloc(sizeof *t + nl + 1 + sl + 1);
    if (t == NULL) return; /* stays local; a later first subscriber retries */
    memcpy(t->name, topic, nl + 1);
    t->subject = t->name + nl + 1;
    memcpy(t->subject, b->scratch, sl);
    t->subject[sl] = '\0';
    t->slen = sl;
    t->sid = ++b->next_sid;
    t->next = NULL;
    *tp = t;
    b->ntopics++;
    if (b->ntopics > b->tcap) ws_nats__grow_tab(b);
    if (linked) ws_nats__sub(b, t, 0);
  } else {
    char line[48];
    int n;
    t = *tp;
    if (t == NULL) return;
    *tp = t->next;
    b->ntopics--;
    n = snprintf(line, sizeof line, "UNSUB %lu\r\n", t->sid);
    if (linked && t->slen) ws_nats__ctl(b, line, (size_t)n, 0);
    free(t);
  }
}

/* Public ------------------------------------------------------------------- */

/* see ws_nats.h */
void ws_nats_config_init(ws_nats_config *cfg) {
  memset(cfg, 0, sizeof *cfg);
  cfg->prefix = "ws.";
  cfg->max_queue = 1u << 20;
  cfg->max_message = 1u << 20;
  cfg->backoff_min_ms = 250;
  cfg->backoff_max_ms = 10000;
  cfg->ping_ms = 5000;
}

/* Splits url (a copy, modified) into b's parts: 0, or -1 when malformed. */
static int ws_nats__url(ws_nats *b, char *u) {
  char *at, *hp, *end, *colon;
  unsigned long port = WS_NATS__PORT;
  static const char none[] = "";
  b->user = b->pass = b->token = none;
  if (strncmp(u, "nats://", 7) != 0) return -1;
  u += 7;
  end = u + strcspn(u, "/?#");
  if (*end && strcmp(end, "/") != 0) return -1;
  *end = '\0';
  at = strrchr(u, '@');
  hp = u;
  if (at) {
    *at = '\0';
    hp = at + 1;
    colon = strchr(u, ':');
    if (colon) {
      *colon = '\0';
      b->user = u;
      b->pass = colon + 1;
    } else {
      b->token = u;
    }
  }
  if (*hp == '[') {
    char *rb = strchr(hp, ']');
    if (rb == NULL) return -1;
    *rb = '\0';
    b->host = hp + 1;
    colon = rb[1] == ':' ? rb + 1 : NULL;
    if (rb[1] && !colon) return -1;
  } else {
    b->host = hp;
    colon = strchr(hp, ':');
    if (colon) *colon = '\0';
  }
  if (colon) {
    char *e;
    if (colon[1] < '0' || colon[1] > '9') return -1;
    port = strtoul(colon + 1, &e, 10);
    if (*e || port == 0 || port > 65535) return -1;
  }
  if (*b->host == '\0' || strpbrk(b->host, " \t\r\n")) return -1;
  snprintf(b->port, sizeof b->port, "%lu", port);
  {
    struct sockaddr_in *a4 = (struct sockaddr_in *)&b->addr;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&b->addr;
    memset(&b->addr, 0, sizeof b->addr);
    if (inet_pton(AF_INET, b->host, &a4->sin_addr) == 1) {
      a4->sin_family = AF_INET;
      a4->sin_port = htons((unsigned short)port);
      b->addrlen = sizeof *a4;
    } else if (inet_pton(AF_INET6, b->host, &a6->sin6_addr) == 1) {
      a6->sin6_family = AF_INET6;
      a6->sin6_port = htons((unsigned short)port);
      b->addrlen = sizeof *a6;
    }
  }
  return 0;
}

static void ws_nats__origin(ws_nats *b) {
  int fd = open("/dev/urandom", O_RDONLY);
  size_t got = 0;
  uint64_t x;
  if (fd >= 0) {
    while (got < sizeof b->origin) {
      ssize_t n = read(fd, b->origin + got, sizeof b->origin - got);
      if (n <= 0) break;
      got += (size_t)n;
    }
    close(fd);
  }
  x = (uint64_t)time(NULL) * 1000003u ^ (uint64_t)getpid() << 32 ^
      (uint64_t)(uintptr_t)b ^ (uint64_t)clock();
  if (got < sizeof b->origin) memcpy(b->origin, &x, sizeof b->origin);
  memcpy(&b->rng, b->origin, sizeof b->rng);
  b->rng ^= x;
  if (b->rng == 0) b->rng = 0x9E3779B97F4A7C15ull;
}

/* see ws_nats.h */
int ws_nats_open(ws_nats **out, ws_loop *loop, const ws_nats_config *cfg) {
  ws_nats *b;
  size_t ul, pl;
  if (out) *out = NULL;
  if (out == NULL || loop == NULL || cfg == NULL || cfg->url == NULL ||
      cfg->prefix == NULL || !ws_nats__prefix_ok(cfg->prefix) ||
      cfg->max_queue == 0 || cfg->backoff_min_ms == 0 ||
      cfg->backoff_max_ms < cfg->backoff_min_ms)
    return WS_EINVAL;
  b = (ws_nats *)calloc(1, sizeof *b);
  if (b == NULL) return WS_ENOMEM;
  ul = strlen(cfg->url);
  pl = strlen(cfg->prefix);
  b->strs = (char *)malloc(2 * (ul + 1) + pl + 1);
  b->scratch = (char *)malloc(WS_NATS__LINE_MAX + 1);
  b->tcap = 16;
  b->tab = (ws_nats__topic **)calloc(b->tcap, sizeof *b->tab);
  if (b->strs == NULL || b->scratch == NULL || b->tab == NULL) {
    free(b->strs);
    free(b->scratch);
    free(b->tab);
    free(b);
    return WS_ENOMEM;
  }
  b->cfg = *cfg;
  memcpy(b->strs, cfg->url, ul + 1);            /* kept whole */
  memcpy(b->strs + ul + 1, cfg->url, ul + 1);   /* split by ws_nats__url */
  memcpy(b->strs + 2 * (ul + 1), cfg->prefix, pl + 1);
  b->cfg.url = b->strs;
  b->cfg.prefix = b->strs + 2 * (ul + 1);
  if (ws_nats__url(b, b->strs + ul + 1) != 0) {
    free(b->strs);
    free(b->scratch);
    free(b->tab);
    free(b);
    return WS_EINVAL;
  }
  if (b->cfg.max_message == 0) b->cfg.max_message = 1u << 20;
  b->loop = loop;
  b->fd = -1;
  b->state = WS_NATS__DOWN;
  b->max_payload = 1u << 20;
  b->backoff = b->cfg.backoff_min_ms;
  ws_nats__origin(b);
  if (cfg->origin) memcpy(b->origin, &cfg->origin, sizeof b->origin);
  ws_loop_on_topic(loop, ws_nats__on_topic, b); /* live topics come in now */
  ws_nats__connect(b);
  *out = b;
  return WS_OK;
}

/* Queues one publish to the server, or counts why not. */
static int ws_nats__send(ws_nats *b, const char *topic, int op,
                         const void *data, size_t len) {
  size_t sl, total;
  char head[32];
  int hn;
  unsigned char *p;
  if (b->state != WS_NATS__UP) {
    b->st.lost_down++;
    return WS_ECLOSED;
  }
  sl = ws_nats__subject(b->cfg.prefix, topic, b->scratch, WS_NATS__LINE_MAX + 1);
  if (sl == 0 || b->max_payload < WS_NATS__ENV ||
      len > b->max_payload - WS_NATS__ENV) {
    b->st.lost_big++;
    return WS_ETOOBIG;
  }
  hn = snprintf(head, sizeof head, " %lu\r\n",
                (unsigned long)(len + WS_NATS__ENV));
  total = 4 + sl + (size_t)hn + WS_NATS__ENV + len + 2;
  p = ws_nats__room(b, total, b->cfg.max_queue);
  if (p == NULL) {
    b->st.lost_full++;
    return WS_EFULL;
  }
  memcpy(p, "PUB ", 4);
  p += 4;
  memcpy(p, b->scratch, sl);
  p += sl;
  memcpy(p, head, (size_t)hn);
  p += hn;
  memcpy(p, "WSB1", 4);
  memcpy(p + 4, b->origin, 8);
  p[12] = (unsigned char)op;
  p += WS_NATS__ENV;
  if (len) memcpy(p, data, len);
  memcpy(p + len, "\r\n", 2);
  b->olen += total;
  b->st.sent++;
  ws_nats__want(b);
  return WS_OK;
}

/* see ws_nats.h */
int ws_nats_publish(ws_nats *b, const char *topic, int op, const void *data,
                    size_t len, size_t *sent) {
  int rc;
  uint32_t u = 0;
  if (sent) *sent = 0;
  if (b == NULL || topic == NULL || (data == NULL && len > 0) ||
      (op != WS_OP_TEXT && op != WS_OP_BINARY))
    return WS_EINVAL;
  if (op == WS_OP_TEXT && ws_utf8_check(&u, data, len, 1, NULL) != WS_OK)
    return WS_EUTF8;
  /* The server first, written now: the other nodes start on it while this
   * loop serves its own subscribers (a write that would block waits in the
   * queue; an error shows at the watch). */
  if (ws_nats__send(b, topic, op, data, len) == WS_OK && ws_nats__flush(b) != 0)
    ws_watch_set(b->loop, &b->watch, WS_WATCH_READ | WS_WATCH_WRITE);
  rc = ws_loop_publish(b->loop, topic, op, data, len, sent);
  return rc;
}

/* see ws_nats.h */
int ws_nats_send(ws_nats *b, const char *topic, int op, const void *data,
                 size_t len) {
  uint32_t u = 0;
  if (b == NULL || topic == NULL || (data == NULL && len > 0) ||
      (op != WS_OP_TEXT && op != WS_OP_BINARY))
    return WS_EINVAL;
  if (op == WS_OP_TEXT && ws_utf8_check(&u, data, len, 1, NULL) != WS_OK)
    return WS_EUTF8;
  return ws_nats__send(b, topic, op, data, len);
}

/* see ws_nats.h */
void ws_nats_stats_get(const ws_nats *b, ws_nats_stats *st) {
  *st = b->st;
  st->connected = b->state == WS_NATS__UP;
  st->topics = b->ntopics;
  st->queued = b->olen - b->ooff;
}

/* see ws_nats.h */
const char *ws_nats_last_error(const ws_nats *b) { return b->last_err; }

/* see ws_nats.h */
void ws_nats_close(ws_nats *b) {
  size_t i;
  if (b == NULL) return;
  ws_loop_on_topic(b->loop, NULL, NULL);
  ws_timer_stop(b->loop, &b->retry);
  ws_timer_stop(b->loop, &b->ping);
  ws_watch_stop(b->loop, &b->watch);
  if (b->fd >= 0) close(b->fd);
  for (i = 0; i < b->tcap; i++) {
    ws_nats__topic *t = b->tab[i], *next;
    for (; t; t = next) {
      next = t->next;
      free(t);
    }
  }
  free(b->tab);
  free(b->out);
  free(b->in);
  free(b->scratch);
  free(b->strs);
  free(b);
}
