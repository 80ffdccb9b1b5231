/*
 * ws_redis.c - the Redis Pub/Sub bridge (ws_redis.h). hiredis's async
 * contexts run on the ws loop: each one's socket is a ws_watch, its
 * adapter hooks (addRead, delRead, addWrite, delWrite, cleanup) set that
 * watch's interest, one ws_timer drives the reconnect backoff, the connect
 * timeout and the health check, and ws_loop_on_topic() says which channels
 * to subscribe. Only the public API of ws.h and of hiredis is used.
 */
#if !defined(_POSIX_C_SOURCE) && !defined(_DEFAULT_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif
#include "ws_redis.h"

#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define WS_REDIS__MAGIC "WSB1"
#define WS_REDIS__HDR 13 /* magic 4 + origin 8 + op 1 */
#define WS_REDIS__PUB 0  /* link[]: the publishing connection */
#define WS_REDIS__SUB 1  /* link[]: the subscribing connection */
#define WS_REDIS__SCRATCH_KEEP 65536 /* a bigger scratch is freed after use */
#define WS_REDIS__READS 64 /* reads of 16 KiB per readiness, at most */

enum { WS_REDIS__DOWN, WS_REDIS__CONNECTING, WS_REDIS__UP };

typedef struct ws_redis__link {
  ws_redis *b;
  redisAsyncContext *ac; /* NULL: none, or detached while hiredis frees it */
  ws_watch w;            /* on ac's fd, interest set by the hooks */
  int ready;             /* answered (PING, or the health SUBSCRIBE) */
  int gone;              /* cleanup ran: hiredis is freeing the context */
} ws_redis__link;

struct ws_redis {
  ws_loop *loop;
  ws_redis_config cfg;   /* copy; url and prefix point to ours below */
  char *url, *prefix, *host, *user, *pass;
  size_t prefix_len;
  int port;
  unsigned char origin[8];
  char *health;          /* prefix + "\0health:" + origin in hex */
  size_t health_len;
  ws_redis__link link[2];
  ws_timer timer;        /* backoff, connect timeout or health check */
  int state, closing;
  unsigned backoff;      /* the d of the next reconnect delay */
  uint64_t rng;
  unsigned long probe;   /* the health probe in flight */
  int probe_out, probe_pub, probe_sub;
  size_t inflight;       /* bytes of PUBLISH commands not yet answered */
  char *scratch;         /* one PUBLISH command, formatted */
  size_t scratch_cap;
  char *chan;            /* a channel name being built (topic hook) */
  size_t chan_cap;
  char *topic;           /* the topic of a message from the broker: apart
                            from chan, as delivering it may close a
                            connection and so run the topic hook */
  size_t topic_cap;
  ws_redis_stats st;
};

static void ws_redis__fail(ws_redis *b);
static void ws_redis__tick(ws_loop *l, ws_timer *t, void *user);

/* Small helpers ------------------------------------------------------------ */

static uint64_t ws_redis__mix(uint64_t x) { /* splitmix64's finaliser */
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

static uint64_t ws_redis__rand(ws_redis *b) {
  b->rng = ws_redis__mix(b->rng);
  return b->rng;
}

/* Random bytes for the origin; without /dev/urandom, time, pid and an
 * address mixed: unique enough to tell the nodes of a cluster apart. */
static void ws_redis__origin(ws_redis *b) {
  uint64_t x;
  size_t got = 0;
  int fd = open("/dev/urandom", O_RDONLY);
  if (fd >= 0) {
    ssize_t n = read(fd, b->origin, sizeof b->origin);
    if (n > 0) got = (size_t)n;
    close(fd);
  }
  if (got < sizeof b->origin) {
    x = ws_redis__mix((uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32) ^
                      (uint64_t)(uintptr_t)b ^ (uint64_t)clock());
    memcpy(b->origin, &x, sizeof x);
  }
  memcpy(&x, b->origin, sizeof x);
  b->rng = x ^ 0x5DEECE66Dull;
}

static int ws_redis__grow(char **buf, size_t *cap, size_t need) {
  char *p;
  if (need <= *cap) return WS_OK;
  p = (char *)realloc(*buf, need);
  if (p == NULL) return WS_ENOMEM;
  *buf = p;
  *cap = need;
  return WS_OK;
}

/* A copy of s[0..n) with %XX decoded; NULL on ENOMEM or a bad escape. */
static char *ws_redis__undup(const char *s, size_t n) {
  char *d = (char *)malloc(n + 1), *o = d;
  size_t i;
  if (d == NULL) return NULL;
  for (i = 0; i < n; i++) {
    if (s[i] == '%') {
      unsigned v = 0, k;
      if (i + 2 >= n) {
        free(d);
        return NULL;
      }
      for (k = 1; k <= 2; k++) {
        char c = s[i + k];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
        else { free(d); return NULL; }
      }
      if (v == 0) { free(d); return NULL; }
      *o++ = (char)v;
      i += 2;
    } else {
      *o++ = s[i];
    }
  }
  *o = '\0';
  return d;
}

/* Splits "redis://[[user]:password@]host[:port][/db]". */
static int ws_redis__parse_url(ws_redis *b, const char *url) {
  const char *p = url, *at, *end, *h, *he, *q;
  if (strncmp(p, "redis://", 8) != 0) return WS_EINVAL;
  p += 8;
  end = p + strcspn(p, "/?#");
  at = NULL;
  for (q = p; q < end; q++)
    if (*q == '@') at = q;
  if (at) {
    const char *colon = (const char *)memchr(p, ':', (size_t)(at - p));
    if (colon == NULL) return WS_EINVAL; /* a user needs ":password" */
    if (colon > p && (b->user = ws_redis__undup(p, (size_t)(colon - p))) == NULL)
      return WS_EINVAL;
    if ((b->pass = ws_redis__undup(colon + 1, (size_t)(at - colon - 1))) == NULL)
      return WS_EINVAL;
    p = at + 1;
  }
  if (*p == '[') {
    h = p + 1;
    he = (const char *)memchr(h, ']', (size_t)(end - h));
    if (he == NULL) return WS_EINVAL;
    q = he + 1;
  } else {
    h = p;
    for (he = p; he < end && *he != ':'; he++) {}
    q = he;
  }
  if (he == h) return WS_EINVAL;
  b->port = 6379;
  if (q < end) {
    long v = 0;
    if (*q != ':' || q + 1 == end) return WS_EINVAL;
    for (q++; q < end; q++) {
      if (*q < '0' || *q > '9' || (v = v * 10 + (*q - '0')) > 65535)
        return WS_EINVAL;
    }
    if (v == 0) return WS_EINVAL;
    b->port = (int)v;
  }
  if (*end == '/') { /* db: digits, or nothing */
    for (q = end + 1; *q; q++)
      if (*q < '0' || *q > '9') return WS_EINVAL;
  } else if (*end != '\0') {
    return WS_EINVAL;
  }
  b->host = (char *)malloc((size_t)(he - h) + 1);
  if (b->host == NULL) return WS_ENOMEM;
  memcpy(b->host, h, (size_t)(he - h));
  b->host[he - h] = '\0';
  return WS_OK;
}

/* Writes "$<n>\r\n" at out; the bytes written. */
static size_t ws_redis__bulk_hdr(char *out, size_t n) {
  char tmp[24];
  size_t k = 0, i = 0;
  do tmp[k++] = (char)('0' + n % 10); while ((n /= 10) > 0);
  out[i++] = '$';
  while (k > 0) out[i++] = tmp[--k];
  out[i++] = '\r';
  out[i++] = '\n';
  return i;
}

static size_t ws_redis__digits(size_t n) {
  size_t d = 1;
  while (n >= 10) n /= 10, d++;
  return d;
}

/* The event-library hooks: hiredis asks, the watch's interest follows ---- */

static void ws_redis__want(void *priv, unsigned set, unsigned clear) {
  ws_redis__link *k = (ws_redis__link *)priv;
  unsigned ev = (ws_watch_events(&k->w) | set) & ~clear;
  /* A failure here leaves the interest as it was: the connect timeout or
   * the health check then ends the link, so nothing hangs for ever. */
  if (ws_watch_fd(&k->w) >= 0) (void)ws_watch_set(k->b->loop, &k->w, ev);
}

static void ws_redis__add_read(void *p) { ws_redis__want(p, WS_WATCH_READ, 0); }
static void ws_redis__del_read(void *p) { ws_redis__want(p, 0, WS_WATCH_READ); }
static void ws_redis__add_write(void *p) { ws_redis__want(p, WS_WATCH_WRITE, 0); }
static void ws_redis__del_write(void *p) { ws_redis__want(p, 0, WS_WATCH_WRITE); }

/* hiredis is freeing the context (its fd closes right after): the watch
 * goes first, as ws_watch_stop() requires. */
static void ws_redis__cleanup(void *p) {
  ws_redis__link *k = (ws_redis__link *)p;
  ws_watch_stop(k->b->loop, &k->w);
  k->gone = 1;
}

static void ws_redis__io(ws_loop *l, ws_watch *w, unsigned ready, void *user) {
  ws_redis__link *k = (ws_redis__link *)user;
  redisAsyncContext *ac = k->ac;
  (void)l, (void)w;
  if (ac == NULL) return;
  /* Either call may free the context (cleanup sets gone; the disconnect
   * callback, which comes after it, detaches it and fails the link): k
   * lives in the bridge, which outlives its contexts, so it can tell. */
  k->gone = 0;
  if (ready & WS_WATCH_READ) {
    /* hiredis reads 16 KiB per call: a big message would take hundreds of
     * loop turns (and could outlast the health check), so read on while
     * the socket has more, up to WS_REDIS__READS calls (1 MiB) a turn. */
    int i = 0;
    char c;
    do redisAsyncHandleRead(ac);
    while (++i < WS_REDIS__READS && !k->gone && k->ac == ac &&
           recv(ac->c.fd, &c, 1, MSG_PEEK) > 0);
  }
  if (!k->gone && k->ac == ac && (ready & WS_WATCH_WRITE))
    redisAsyncHandleWrite(ac);
  if (k->gone && k->ac == ac) { /* freed without a callback saying so */
    k->ac = NULL;
    ws_redis__fail(k->b);
  }
}

/* hiredis's connect and disconnect callbacks: both come from inside its
 * free path, so the context is only detached here, never freed. */
static void ws_redis__on_connect(const redisAsyncContext *ac, int status) {
  ws_redis__link *k = (ws_redis__link *)ac->data;
  if (status == REDIS_OK || k == NULL || k->ac != ac) return;
  k->ac = NULL;
  ws_redis__fail(k->b);
}

static void ws_redis__on_disconnect(const redisAsyncContext *ac, int status) {
  ws_redis__link *k = (ws_redis__link *)ac->data;
  (void)status;
  if (k == NULL || k->ac != ac) return; /* one we ended ourselves */
  k->ac = NULL;
  ws_redis__fail(k->b);
}

/* Links: open, prove, end ------------------------------------------------- */

/* Ends both connections. A context in one of its own callbacks is freed by
 * hiredis when the callback returns; pending PUBLISH callbacks run with no
 * reply (the queue count goes back to 0). */
static void ws_redis__end_links(ws_redis *b) {
  int i;
  for (i = 0; i < 2; i++) {
    redisAsyncContext *ac = b->link[i].ac;
    b->link[i].ready = 0;
    if (ac == NULL) continue;
    b->link[i].ac = NULL; /* detached: its callbacks now do nothing */
    redisAsyncFree(ac);
  }
}

/* The link is lost, or an attempt failed: end both connections and retry
 * after a random delay in [1, d] (full jitter), d doubling up to the cap. */
static void ws_redis__fail(ws_redis *b) {
  int was_up = b->state == WS_REDIS__UP;
  uint64_t delay;
  if (b->closing || b->state == WS_REDIS__DOWN) return;
  b->state = WS_REDIS__DOWN;
  ws_redis__end_links(b);
  b->st.failures++;
  b->st.connected = 0;
  b->st.topics = 0;
  b->probe_out = 0;
  if (was_up) b->backoff = b->cfg.backoff_min_ms;
  delay = ws_redis__rand(b) % b->backoff + 1;
  b->backoff = b->backoff > b->cfg.backoff_max_ms / 2 ? b->cfg.backoff_max_ms
                                                      : b->backoff * 2;
  ws_timer_start(b->loop, &b->timer, delay, 0, ws_redis__tick, b);
  if (was_up && b->cfg.on_state) b->cfg.on_state(b, 0, b->cfg.user);
}

static void ws_redis__check_up(ws_redis *b) {
  if (b->state != WS_REDIS__CONNECTING || !b->link[WS_REDIS__PUB].ready ||
      !b->link[WS_REDIS__SUB].ready)
    return;
  b->state = WS_REDIS__UP;
  b->st.connected = 1;
  b->st.connects++;
  if (b->cfg.ping_ms)
    ws_timer_start(b->loop, &b->timer, b->cfg.ping_ms, 0, ws_redis__tick, b);
  else
    ws_timer_stop(b->loop, &b->timer);
  if (b->cfg.on_state) b->cfg.on_state(b, 1, b->cfg.user);
}

/* AUTH's reply, on either connection: refused means the attempt failed. */
static void ws_redis__on_auth(redisAsyncContext *ac, void *reply, void *priv) {
  redisReply *r = (redisReply *)reply;
  ws_redis__link *k = (ws_redis__link *)priv;
  if (r && r->type == REDIS_REPLY_ERROR && k->ac == ac) ws_redis__fail(k->b);
}

/* The publishing connection's first PING answered: it is up. */
static void ws_redis__on_pong(redisAsyncContext *ac, void *reply, void *priv) {
  redisReply *r = (redisReply *)reply;
  ws_redis__link *k = (ws_redis__link *)priv;
  if (r == NULL || k->ac != ac) return;
  if (r->type == REDIS_REPLY_ERROR) {
    ws_redis__fail(k->b);
    return;
  }
  k->ready = 1;
  ws_redis__check_up(k->b);
}

/* A PUBLISH answered (or dropped: reply NULL); priv is its size. */
static void ws_redis__on_published(redisAsyncContext *ac, void *reply,
                                   void *priv) {
  ws_redis__link *k = (ws_redis__link *)ac->data;
  size_t n = (size_t)(uintptr_t)priv;
  (void)reply;
  k->b->inflight = k->b->inflight >= n ? k->b->inflight - n : 0;
}

/* The health probe's PUBLISH answered. */
static void ws_redis__on_probe(redisAsyncContext *ac, void *reply,
                               void *priv) {
  redisReply *r = (redisReply *)reply;
  ws_redis__link *k = (ws_redis__link *)ac->data;
  unsigned long seq = (unsigned long)(uintptr_t)priv;
  if (r == NULL || k->ac != ac || r->type == REDIS_REPLY_ERROR) return;
  if (seq == k->b->probe) k->b->probe_pub = 1;
}

static int ws_redis__command(ws_redis__link *k, redisCallbackFn *fn,
                             void *priv, int argc, const char **argv,
                             const size_t *lens) {
  return redisAsyncCommandArgv(k->ac, fn, priv, argc, argv, lens) == REDIS_OK
             ? WS_OK : WS_EIO;
}

static int ws_redis__auth(ws_redis__link *k) {
  ws_redis *b = k->b;
  const char *argv[3];
  size_t lens[3];
  int n = 0;
  if (b->pass == NULL) return WS_OK;
  argv[n] = "AUTH", lens[n++] = 4;
  if (b->user) argv[n] = b->user, lens[n] = strlen(b->user), n++;
  argv[n] = b->pass, lens[n] = strlen(b->pass), n++;
  return ws_redis__command(k, ws_redis__on_auth, k, n, argv, lens);
}

static void ws_redis__on_sub(redisAsyncContext *ac, void *reply, void *priv);

/* One connection: hiredis's non-blocking connect, the hooks on a watch of
 * its fd, and its first commands queued (written once it connects). */
static int ws_redis__link_open(ws_redis *b, int which) {
  ws_redis__link *k = &b->link[which];
  redisAsyncContext *ac = redisAsyncConnect(b->host, b->port);
  const char *argv[2];
  size_t lens[2];
  if (ac == NULL) return WS_ENOMEM;
  if (ac->err) { /* refused at once, or the name did not resolve */
    redisAsyncFree(ac);
    return WS_EIO;
  }
  ac->data = k;
  ac->ev.data = k;
  ac->ev.addRead = ws_redis__add_read;
  ac->ev.delRead = ws_redis__del_read;
  ac->ev.addWrite = ws_redis__add_write;
  ac->ev.delWrite = ws_redis__del_write;
  ac->ev.cleanup = ws_redis__cleanup;
  (void)redisAsyncSetConnectCallback(ac, ws_redis__on_connect);
  (void)redisAsyncSetDisconnectCallback(ac, ws_redis__on_disconnect);
  k->ready = 0;
  if (ws_watch_start(b->loop, &k->w, ac->c.fd, 0, ws_redis__io, k) != WS_OK) {
    redisAsyncFree(ac);
    return WS_EIO;
  }
  k->ac = ac;
  if (ws_redis__auth(k) != WS_OK) return WS_EIO;
  if (which == WS_REDIS__PUB) {
    argv[0] = "PING", lens[0] = 4;
    return ws_redis__command(k, ws_redis__on_pong, k, 1, argv, lens);
  }
  /* The subscribing connection is proved by its health channel, and stays
   * subscribed to it: so UNSUBSCRIBE is always allowed (hiredis refuses it
   * on a connection that is not subscribed). */
  argv[0] = "SUBSCRIBE", lens[0] = 9;
  argv[1] = b->health, lens[1] = b->health_len;
  return ws_redis__command(k, ws_redis__on_sub, b, 2, argv, lens);
}

static void ws_redis__topic(ws_loop *l, const char *topic, int active,
                            void *user);

static void ws_redis__connect(ws_redis *b) {
  b->state = WS_REDIS__CONNECTING;
  b->probe_out = 0;
  if (ws_redis__link_open(b, WS_REDIS__PUB) != WS_OK ||
      ws_redis__link_open(b, WS_REDIS__SUB) != WS_OK) {
    ws_redis__fail(b);
    return;
  }
  /* Set again, the hook is called with 1 for every live topic: that
   * subscribes them all on the new connection, behind the health channel. */
  ws_loop_on_topic(b->loop, ws_redis__topic, b);
  ws_timer_start(b->loop, &b->timer, b->cfg.ping_ms ? b->cfg.ping_ms : 10000,
                 0, ws_redis__tick, b);
}

/* The one timer: retry when down, give up a slow attempt, check health.
 * The probe is a PUBLISH to the health channel, not a PING on each
 * connection: on the subscribed one, hiredis 0.14 routes PING's array
 * reply ("pong", "") by channel name, so the PING's callback would never
 * run and its record would stay queued until the context is freed. */
static void ws_redis__tick(ws_loop *l, ws_timer *t, void *user) {
  ws_redis *b = (ws_redis *)user;
  char payload[24];
  const char *argv[3];
  size_t lens[3];
  (void)l, (void)t;
  if (b->state == WS_REDIS__DOWN) {
    ws_redis__connect(b);
    return;
  }
  if (b->state == WS_REDIS__CONNECTING ||
      (b->probe_out && !(b->probe_pub && b->probe_sub))) {
    ws_redis__fail(b);
    return;
  }
  b->probe++;
  b->probe_out = 1;
  b->probe_pub = b->probe_sub = 0;
  argv[0] = "PUBLISH", lens[0] = 7;
  argv[1] = b->health, lens[1] = b->health_len;
  argv[2] = payload,
  lens[2] = (size_t)sprintf(payload, "%lu", b->probe);
  if (ws_redis__command(&b->link[WS_REDIS__PUB], ws_redis__on_probe,
                        (void *)(uintptr_t)b->probe, 3, argv, lens) != WS_OK) {
    ws_redis__fail(b);
    return;
  }
  ws_timer_start(b->loop, &b->timer, b->cfg.ping_ms, 0, ws_redis__tick, b);
}

/* Topics: the loop says which channels to hold ----------------------------- */

static int ws_redis__channel(ws_redis *b, const char *topic, size_t n) {
  if (ws_redis__grow(&b->chan, &b->chan_cap, b->prefix_len + n + 1) != WS_OK)
    return WS_ENOMEM;
  memcpy(b->chan, b->prefix, b->prefix_len);
  memcpy(b->chan + b->prefix_len, topic, n);
  b->chan[b->prefix_len + n] = '\0';
  return WS_OK;
}

static void ws_redis__topic(ws_loop *l, const char *topic, int active,
                            void *user) {
  ws_redis *b = (ws_redis *)user;
  ws_redis__link *k = &b->link[WS_REDIS__SUB];
  const char *argv[2];
  size_t lens[2], n = strlen(topic);
  (void)l;
  /* Without a connection there is nothing to do: the next one subscribes
   * every live topic when it is made. */
  if (k->ac == NULL || ws_redis__channel(b, topic, n) != WS_OK) return;
  argv[0] = active ? "SUBSCRIBE" : "UNSUBSCRIBE";
  lens[0] = active ? 9 : 11;
  argv[1] = b->chan, lens[1] = b->prefix_len + n;
  /* A refusal means the connection is failing; its end resubscribes. */
  (void)ws_redis__command(k, active ? ws_redis__on_sub : NULL, b, 2, argv,
                          lens);
}

/* Messages from the broker ---------------------------------------------------- */

static void ws_redis__deliver(ws_redis *b, const char *ch, size_t chlen,
                              const char *p, size_t n) {
  const unsigned char *u = (const unsigned char *)p;
  int op;
  uint32_t st = WS_UTF8_INIT;
  if (chlen == b->health_len && memcmp(ch, b->health, chlen) == 0) {
    char want[24];
    size_t wl = (size_t)sprintf(want, "%lu", b->probe);
    if (b->probe_out && n == wl && memcmp(p, want, n) == 0) b->probe_sub = 1;
    return;
  }
  /* Only our own channels come here; a topic is a C string. */
  if (chlen < b->prefix_len || memcmp(ch, b->prefix, b->prefix_len) != 0 ||
      memchr(ch, '\0', chlen) != NULL ||
      ws_redis__grow(&b->topic, &b->topic_cap, chlen - b->prefix_len + 1) !=
          WS_OK) {
    b->st.junk++;
    return;
  }
  memcpy(b->topic, ch + b->prefix_len, chlen - b->prefix_len);
  b->topic[chlen - b->prefix_len] = '\0';
  if (n >= WS_REDIS__HDR && memcmp(p, WS_REDIS__MAGIC, 4) == 0 &&
      (u[12] == WS_OP_TEXT || u[12] == WS_OP_BINARY)) {
    if (memcmp(p + 4, b->origin, 8) == 0) return; /* ours: delivered */
    op = u[12];
    p += WS_REDIS__HDR;
    n -= WS_REDIS__HDR;
  } else if (b->cfg.accept_foreign) {
    op = ws_utf8_check(&st, p, n, 1, NULL) == WS_OK ? WS_OP_TEXT : WS_OP_BINARY;
  } else {
    b->st.junk++;
    return;
  }
  st = WS_UTF8_INIT;
  if (n > b->cfg.max_message ||
      (op == WS_OP_TEXT && ws_utf8_check(&st, p, n, 1, NULL) != WS_OK)) {
    b->st.junk++;
    return;
  }
  b->st.received++;
  if (b->cfg.on_message &&
      !b->cfg.on_message(b, b->topic, op, p, n, b->cfg.user))
    return;
  if (ws_loop_publish(b->loop, b->topic, op, p, n, NULL) == WS_EUTF8)
    b->st.junk++;
}

/* Every reply of the subscribing connection's channels: messages, and the
 * broker's confirmations of SUBSCRIBE and UNSUBSCRIBE. */
static void ws_redis__on_sub(redisAsyncContext *ac, void *reply, void *priv) {
  redisReply *r = (redisReply *)reply, *kind, *ch, *arg;
  ws_redis *b = (ws_redis *)priv;
  ws_redis__link *k = &b->link[WS_REDIS__SUB];
  if (r == NULL || k->ac != ac || r->type != REDIS_REPLY_ARRAY ||
      r->elements < 3)
    return;
  kind = r->element[0], ch = r->element[1], arg = r->element[2];
  if (kind->type != REDIS_REPLY_STRING || ch->type != REDIS_REPLY_STRING)
    return;
  if (strcmp(kind->str, "message") == 0 && arg->type == REDIS_REPLY_STRING) {
    ws_redis__deliver(b, ch->str, (size_t)ch->len, arg->str, (size_t)arg->len);
  } else if (arg->type == REDIS_REPLY_INTEGER &&
             (strcmp(kind->str, "subscribe") == 0 ||
              strcmp(kind->str, "unsubscribe") == 0)) {
    /* The broker's count includes the health channel. */
    b->st.topics = arg->integer > 1 ? (size_t)arg->integer - 1 : 0;
    if (!k->ready && (size_t)ch->len == b->health_len &&
        memcmp(ch->str, b->health, b->health_len) == 0) {
      k->ready = 1;
      ws_redis__check_up(b);
    }
  }
}

/* The API ----------------------------------------------------------------- */

/* see ws_redis.h */
void ws_redis_config_init(ws_redis_config *cfg) {
  memset(cfg, 0, sizeof *cfg);
  cfg->prefix = "ws:";
  cfg->max_queue = 1u << 20;
  cfg->max_message = 1u << 20;
  cfg->backoff_min_ms = 250;
  cfg->backoff_max_ms = 10000;
  cfg->ping_ms = 5000;
}

static void ws_redis__free(ws_redis *b) {
  free(b->url);
  free(b->prefix);
  free(b->host);
  free(b->user);
  free(b->pass);
  free(b->health);
  free(b->scratch);
  free(b->chan);
  free(b->topic);
  free(b);
}

/* see ws_redis.h */
int ws_redis_open(ws_redis **out, ws_loop *l, const ws_redis_config *cfg) {
  ws_redis *b;
  struct sigaction sa;
  size_t i;
  int rc;
  if (out) *out = NULL;
  if (out == NULL || l == NULL || cfg == NULL || cfg->url == NULL)
    return WS_EINVAL;
  b = (ws_redis *)calloc(1, sizeof *b);
  if (b == NULL) return WS_ENOMEM;
  b->loop = l;
  b->cfg = *cfg;
  rc = ws_redis__parse_url(b, cfg->url);
  if (rc != WS_OK) {
    ws_redis__free(b);
    return rc;
  }
  if (b->cfg.max_queue == 0) b->cfg.max_queue = 1u << 20;
  if (b->cfg.max_message == 0) b->cfg.max_message = 1u << 20;
  if (b->cfg.backoff_min_ms == 0) b->cfg.backoff_min_ms = 250;
  if (b->cfg.backoff_max_ms == 0) b->cfg.backoff_max_ms = 10000;
  if (b->cfg.backoff_max_ms < b->cfg.backoff_min_ms)
    b->cfg.backoff_max_ms = b->cfg.backoff_min_ms;
  b->prefix_len = cfg->prefix ? strlen(cfg->prefix) : 0;
  b->url = (char *)malloc(strlen(cfg->url) + 1);
  b->prefix = (char *)malloc(b->prefix_len + 1);
  b->health_len = b->prefix_len + 8 + 16;
  b->health = (char *)malloc(b->health_len);
  if (b->url == NULL || b->prefix == NULL || b->health == NULL) {
    ws_redis__free(b);
    return WS_ENOMEM;
  }
  strcpy(b->url, cfg->url);
  if (b->prefix_len) memcpy(b->prefix, cfg->prefix, b->prefix_len);
  b->prefix[b->prefix_len] = '\0';
  b->cfg.url = b->url;
  b->cfg.prefix = b->prefix;
  ws_redis__origin(b);
  memcpy(b->health, b->prefix, b->prefix_len);
  memcpy(b->health + b->prefix_len, "\0health:", 8);
  for (i = 0; i < 8; i++) {
    static const char hex[] = "0123456789abcdef";
    b->health[b->prefix_len + 8 + 2 * i] = hex[b->origin[i] >> 4];
    b->health[b->prefix_len + 8 + 2 * i + 1] = hex[b->origin[i] & 15];
  }
  /* A given origin (bridges of one process), after the health channel took
   * the random one: each bridge keeps a health channel of its own. */
  if (cfg->origin) memcpy(b->origin, &cfg->origin, sizeof b->origin);
  for (i = 0; i < 2; i++) b->link[i].b = b;
  b->backoff = b->cfg.backoff_min_ms;
  /* hiredis writes with write(2): a broker gone away must not end the
   * process through SIGPIPE's default action. */
  if (sigaction(SIGPIPE, NULL, &sa) == 0 && !(sa.sa_flags & SA_SIGINFO) &&
      sa.sa_handler == SIG_DFL) {
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_IGN;
    sigemptyset(&sa.sa_mask);
    (void)sigaction(SIGPIPE, &sa, NULL);
  }
  b->state = WS_REDIS__DOWN;
  ws_redis__connect(b); /* a failure here schedules the retry */
  if (b->link[WS_REDIS__SUB].ac == NULL)
    ws_loop_on_topic(l, ws_redis__topic, b); /* ours from now on */
  *out = b;
  return WS_OK;
}

/* Queues one PUBLISH (written at once when `now`), or counts why not:
 * WS_OK, WS_ECLOSED (link down), WS_EFULL (over max_queue), WS_ENOMEM. */
static int ws_redis__send(ws_redis *b, const char *topic, int op,
                          const void *data, size_t len, int now) {
  ws_redis__link *k = &b->link[WS_REDIS__PUB];
  size_t tl, cl, pl, need, o;
  int rc = WS_OK;
  if (b->state != WS_REDIS__UP || k->ac == NULL) {
    b->st.lost_down++;
    return WS_ECLOSED;
  }
  /* *3 $7 PUBLISH $<channel> $<envelope + message>, formatted here, so its
   * exact size is what the queue counts. */
  tl = strlen(topic);
  cl = b->prefix_len + tl;
  pl = WS_REDIS__HDR + len;
  need = 4 + 13 + (1 + ws_redis__digits(cl) + 2 + cl + 2) +
         (1 + ws_redis__digits(pl) + 2 + pl + 2);
  if (need > b->cfg.max_queue || b->inflight > b->cfg.max_queue - need) {
    b->st.lost_full++;
    return WS_EFULL;
  }
  if (ws_redis__grow(&b->scratch, &b->scratch_cap, need) != WS_OK) {
    b->st.lost_full++;
    return WS_ENOMEM;
  }
  memcpy(b->scratch, "*3\r\n$7\r\nPUBLISH\r\n", 17);
  o = 17;
  o += ws_redis__bulk_hdr(b->scratch + o, cl);
  memcpy(b->scratch + o, b->prefix, b->prefix_len);
  memcpy(b->scratch + o + b->prefix_len, topic, tl);
  o += cl;
  memcpy(b->scratch + o, "\r\n", 2), o += 2;
  o += ws_redis__bulk_hdr(b->scratch + o, pl);
  memcpy(b->scratch + o, WS_REDIS__MAGIC, 4);
  memcpy(b->scratch + o + 4, b->origin, 8);
  b->scratch[o + 12] = (char)op;
  if (len) memcpy(b->scratch + o + WS_REDIS__HDR, data, len);
  o += pl;
  memcpy(b->scratch + o, "\r\n", 2), o += 2;
  if (redisAsyncFormattedCommand(k->ac, ws_redis__on_published,
                                 (void *)(uintptr_t)o, b->scratch, o) ==
      REDIS_OK) {
    b->inflight += o;
    b->st.sent++;
    /* Written now rather than at the next turn: the other nodes start on
     * it while this loop serves its own subscribers. What would block
     * stays queued; an error shows at the watch. */
    if (now) redisAsyncHandleWrite(k->ac);
  } else {
    b->st.lost_down++;
    rc = WS_ECLOSED;
  }
  if (b->scratch_cap > WS_REDIS__SCRATCH_KEEP) { /* a big one: not kept */
    free(b->scratch);
    b->scratch = NULL;
    b->scratch_cap = 0;
  }
  return rc;
}

/* Checks a message as ws_loop_publish() would. */
static int ws_redis__check(const ws_redis *b, const char *topic, int op,
                           const void *data, size_t len) {
  uint32_t u = WS_UTF8_INIT;
  if (b == NULL || topic == NULL || (data == NULL && len > 0) ||
      (op != WS_OP_TEXT && op != WS_OP_BINARY))
    return WS_EINVAL;
  if (op == WS_OP_TEXT && ws_utf8_check(&u, data, len, 1, NULL) != WS_OK)
    return WS_EUTF8;
  return WS_OK;
}

/* see ws_redis.h */
int ws_redis_publish(ws_redis *b, const char *topic, int op, const void *data,
                     size_t len, size_t *sent) {
  int rc, brc;
  if (sent) *sent = 0;
  if ((rc = ws_redis__check(b, topic, op, data, len)) != WS_OK) return rc;
  brc = ws_redis__send(b, topic, op, data, len, 1); /* the broker first */
  rc = ws_loop_publish(b->loop, topic, op, data, len, sent);
  return rc == WS_OK && brc == WS_ENOMEM ? WS_ENOMEM : rc;
}

/* see ws_redis.h */
int ws_redis_send(ws_redis *b, const char *topic, int op, const void *data,
                  size_t len) {
  int rc = ws_redis__check(b, topic, op, data, len);
  return rc != WS_OK ? rc : ws_redis__send(b, topic, op, data, len, 0);
}

/* see ws_redis.h */
void ws_redis_stats_get(const ws_redis *b, ws_redis_stats *st) {
  if (st == NULL) return;
  if (b == NULL) {
    memset(st, 0, sizeof *st);
    return;
  }
  *st = b->st;
}

/* see ws_redis.h */
void ws_redis_close(ws_redis *b) {
  if (b == NULL) return;
  ws_loop_on_topic(b->loop, NULL, NULL);
  ws_timer_stop(b->loop, &b->timer);
  b->closing = 1;
  ws_redis__end_links(b);
  ws_redis__free(b);
}
