/* conn.c - part 6, layer 1: ws_conn, one connection's state machine over the caller's callbacks.
 * Uses parts 0-5: buffers, output queue, input, timers, the closing handshake. */
#include "private.h"

/* Bytes an input buffer keeps free beyond a whole message: room for the
 * next frame header and a control frame that may interleave. */
#define WS__IN_RESERVE 256

/* Connection flags. */
enum {
  WS__F_STARTED = 1u << 0,     /* on_close is owed (see ws.h: "started") */
  WS__F_NOTIFIED = 1u << 1,    /* on_close has run */
  /* 0 without a batch stack buffer (WS_BATCH_STACK 0, as under
   * WS_NO_MALLOC), so that its tests compile out. */
  WS__F_UNSTACK = WS_BATCH_STACK ? 1u << 2 : 0, /* the queue is moving off
                                * the stack buffer: its bytes are nowhere in
                                * p->out */
  WS__F_CLOSE_SENT = 1u << 3,
  WS__F_CLOSE_RCVD = 1u << 4,
  WS__F_FAILING = 1u << 5,     /* flush what is queued, then CLOSED */
  WS__F_FIXED = 1u << 6,       /* caller's buffers: never allocate */
  WS__F_CORK = 1u << 7,        /* caller holds output */
  WS__F_INPUT = 1u << 8,       /* a call processes input: its batch is open */
  WS__F_ARM_HS = 1u << 9,      /* timers to arm at the next tick */
  WS__F_ARM_CLOSE = 1u << 10,
  WS__F_ARM_PING = 1u << 11,
  WS__F_PEER_CODE = 1u << 12,  /* close_code came from the peer */
  WS__F_EOF = 1u << 13,        /* the transport reported end of stream */
  WS__F_IN_HTTP = 1u << 14,    /* inside on_http */
  WS__F_PONG_WAIT = 1u << 15,  /* open: t is the pong deadline, not a ping's */
  WS__F_STACK_OUT = WS_BATCH_STACK ? 1u << 16 : 0, /* the queue is the
                                * batch's stack buffer (0: as UNSTACK) */
  WS__F_FREE = 1u << 17,       /* ws_conn_free() was called in a callback */
  WS__F_HOLD = 1u << 18,       /* output waits for the batch's end (lifted
                                * for the batch's early writes) */
  WS__F_ARM_SLOW = 1u << 19,   /* output went over slow_reader_bytes: its
                                * deadline is set at the next tick */
  WS__F_BLOCKED = 1u << 20     /* the transport refused output that is still
                                * queued (the peer is not reading) */
};
/* The caller's buffers: always so under WS_FIXED_BUFFERS (then the paths
 * that grow or free buffers compile out). */
#define WS__FIXED(p) (WS_FIXED_BUFFERS || ((p)->flags & WS__F_FIXED))

/* CLOSED has one mark, the state, set by ws__set_closed() alone and never
 * left; ws__done() then runs the on_close owed (WS__F_NOTIFIED). */
#define WS__CLOSED(p) ((p)->state == WS_STATE_CLOSED)

/* The one timer, p->t (WS__NONE: none), is what ws_conn_tick() makes of
 * the state: while CONNECTING the handshake timeout; while CLOSING (or
 * failing) the close timeout; while OPEN the next ping, or, with
 * WS__F_PONG_WAIT, the deadline for the pong of the ping in flight. An
 * event that starts one sets a WS__F_ARM_* flag; the next tick sets t. */

#define WS__P(c) (&(c)->ws__p)

/* Whether the connection is a server's: a constant in a build with one
 * role (ws_conn_init() refuses the other), so that the other role's paths
 * compile out. */
#if defined(WS_NO_SERVER)
#define WS__SERVER(p) ((void)(p), 0)
#elif defined(WS_NO_CLIENT)
#define WS__SERVER(p) ((void)(p), 1)
#else
#define WS__SERVER(p) ((p)->role == WS_SERVER)
#endif
#define WS__MAX_HDRS(p) WS__MIN((p)->cfg->max_headers, (size_t)WS_MAX_HEADERS)

/* The buffers carry their own bookkeeping, so an idle connection, which
 * holds no buffer, pays for none of it: two NULL pointers.
 * Growing buffers (input and output) are a power of two less WS__SLOP
 * bytes, counters included (hd: their size): with an allocator's headers
 * they fill a power of two, which is a size class of the allocator's or a
 * whole number of pages, not one page more. The small build (firmware:
 * fixed buffers) keeps the shorter code. */
#define WS__SLOP 64
#if WS_SMALL
#define WS__BUF_FIRST(hd) (1024 - (hd))
#define WS__BUF_NEXT(cap, hd) ((cap) * 2)
#else
#define WS__BUF_FIRST(hd) (1024 - WS__SLOP - (hd))
#define WS__BUF_NEXT(cap, hd) ((cap) * 2 + WS__SLOP + (hd))
#endif

struct ws__ibuf {
  /* The small fields first, as in ws__conn_priv. */
  uint8_t op;          /* the frame's opcode (WS__OP_CONT_FRAME; 0: none) */
  uint8_t fin, msg_op; /* the frame's FIN; the message's opcode (0: none) */
  uint8_t off;         /* mask key position */
  uint8_t key[4];      /* the frame's mask key */
  uint8_t zmsg;        /* the message is compressed (RSV1 on its first frame) */
  uint16_t proto_len;  /* client, connecting: bytes of offered protocols */
  uint32_t utf8;       /* UTF-8 state of the text message being read */
  size_t cap;          /* bytes at d */
  size_t mstart, mlen; /* the message being assembled */
  size_t rpos, rlen;   /* parsed up to rpos; bytes up to rlen */
  /* The frame being read: payload still to come (while connecting: where
   * the search for the end of the head resumes, see WS__HEAD_SCAN), the
   * message so far. */
  ws__flen frame_left, msg_total;
  unsigned char d[];
};
struct ws__obuf {
  uint64_t stall;        /* slow reader: the deadline to drain by, or 0 */
  size_t cap, head, len; /* bytes at d; sent up to head; queued up to len */
  /* The last pong queued, d[pong_at..pong_end); pong_end 0: none known. */
  size_t pong_at, pong_end;
  unsigned char d[];
};
/* The buffers start 8-byte aligned for their counters. */
typedef char ws__buffer_overhead_ok[sizeof(struct ws__ibuf) + 7 <=
                                            WS_BUFFER_OVERHEAD &&
                                        sizeof(struct ws__obuf) + 7 <=
                                            WS_BUFFER_OVERHEAD
                                    ? 1
                                    : -1];

/* ws__ibuf.op inside a continuation frame: its opcode, WS_OP_CONT, is 0,
 * which there means "between frames". */
#define WS__OP_CONT_FRAME 0x0F

/* ws__ibuf.frame_left while connecting: no frame is read yet; it holds
 * where the search for the end of the HTTP head resumes (0 once open). */
#define WS__HEAD_SCAN(b) ((b)->frame_left)

/* Compression state (ws_conn.z), allocated while something of it lives: a
 * compressor or decompressor kept for context takeover, or a message
 * being inflated. An idle connection without context takeover holds none. */
struct ws__zconn {
  ws__zs *tx, *rx;        /* our compressor, our decompressor (NULL: none) */
  unsigned char *m;       /* the inflated message so far (not streaming) */
  size_t mlen, mcap;
  uint64_t fout, mout;    /* inflated bytes of the frame, of the message */
  int ended;              /* the message's final DEFLATE block came */
};

/* What deflate agreed; a constant 0 in builds without it, so that its
 * paths compile out (firmware). */
#define WS__PMD(p) (WS_ENABLE_ZLIB ? (unsigned)(p)->pmd : 0u)

/* Output bytes not yet written. A function, not a macro: used in some
 * twenty places, it is one call each at -Os (and inlined at -O2). */
static size_t ws__queued(const struct ws__conn_priv *p) {
  return p->out ? p->out->len - p->out->head : 0;
}
#define WS__QUEUED(p) ws__queued(p)

static const ws_callbacks ws__no_callbacks;

static void *ws__realloc(struct ws__conn_priv *p, void *ptr, size_t n) {
  if (p->cfg->realloc) return p->cfg->realloc(ptr, n, p->cfg->alloc_ctx);
#ifndef WS_NO_MALLOC
  if (n == 0) {
    free(ptr);
    return NULL;
  }
  return realloc(ptr, n);
#else
  return NULL;
#endif
}

static void ws__refused(struct ws__conn_priv *p, int code);

/* The budget hook (ws.h: "Memory budget"), asked before the connection
 * takes n more bytes of a kind. A refusal has failed the connection when
 * this returns 0. */
static int ws__take(struct ws__conn_priv *p, int kind, size_t n) {
  int code;
  if (p->cfg->charge == NULL || n == 0) return 1;
  code = p->cfg->charge((ws_conn *)(void *)p, kind, (ptrdiff_t)n,
                        p->cfg->alloc_ctx);
  if (code == 0) return 1;
  ws__refused(p, code);
  return 0;
}

/* ... and told before it gives n bytes back. */
static void ws__give(struct ws__conn_priv *p, int kind, size_t n) {
  if (p->cfg->charge && n)
    (void)p->cfg->charge((ws_conn *)(void *)p, kind, -(ptrdiff_t)n,
                         p->cfg->alloc_ctx);
}

/* ws__realloc() of a block of `old` bytes to n, counted as kind. NULL when
 * the budget refused (the connection has failed) or the allocator did. */
static void *ws__mem(struct ws__conn_priv *p, int kind, void *ptr, size_t old,
                     size_t n) {
  void *q;
  if (WS_FIXED_BUFFERS) return NULL; /* nothing allocates (config.h) */
  if (n > old && !ws__take(p, kind, n - old)) return NULL;
  if (n < old) ws__give(p, kind, old - n);
  q = ws__realloc(p, ptr, n);
  if (q == NULL && n > old) ws__give(p, kind, n - old);
  return q;
}

/* The error for a failed ws__mem(): the budget's, or the allocator's. */
#define WS__NOMEM(p) ((p)->err == WS_EBUDGET ? WS_EBUDGET : WS_ENOMEM)

/* A compression stream, counted by its cost (NULL: refused, or no
 * memory). */
static ws__zs *ws__zs_make(struct ws__conn_priv *p, int inflate, int bits,
                           int mem_level) {
  size_t cost = ws__zs_cost(inflate, bits, mem_level);
  ws__zs *s;
  if (!ws__take(p, WS_MEM_DEFLATE, cost)) return NULL;
  if ((s = ws__zs_new(p->cfg, inflate, bits, mem_level)) == NULL)
    ws__give(p, WS_MEM_DEFLATE, cost);
  return s;
}

static void ws__zs_drop(struct ws__conn_priv *p, ws__zs *s) {
  if (s == NULL) return;
  ws__give(p, WS_MEM_DEFLATE, s->cost);
  ws__zs_free(s);
}

/* The compression state, allocated on first use (NULL: no memory). */
static struct ws__zconn *ws__z_get(struct ws__conn_priv *p) {
  struct ws__zconn *z = (struct ws__zconn *)p->z;
  if (z == NULL) {
    z = (struct ws__zconn *)ws__mem(p, WS_MEM_DEFLATE, NULL, 0, sizeof *z);
    if (z == NULL) return NULL;
    memset(z, 0, sizeof *z);
    p->z = z;
  }
  return z;
}

/* Gives the compression state back when nothing of it lives. */
static void ws__z_drop(struct ws__conn_priv *p) {
  struct ws__zconn *z = (struct ws__zconn *)p->z;
  if (z && !z->tx && !z->rx && !z->m) {
    ws__mem(p, WS_MEM_DEFLATE, z, sizeof *z, 0);
    p->z = NULL;
  }
}

/* Frees all of it (the connection ends). */
static void ws__z_release(struct ws__conn_priv *p) {
  struct ws__zconn *z = (struct ws__zconn *)p->z;
  if (!WS_ENABLE_ZLIB || z == NULL) return;
  /* One at a time, each gone before the next is counted: the budget hook
   * may read ws_conn_memory(). */
  ws__zs_drop(p, z->tx);
  z->tx = NULL;
  ws__zs_drop(p, z->rx);
  z->rx = NULL;
  if (z->m) ws__mem(p, WS_MEM_INPUT, z->m, z->mcap, 0);
  z->m = NULL;
  z->mcap = z->mlen = 0;
  ws__mem(p, WS_MEM_DEFLATE, z, sizeof *z, 0);
  p->z = NULL;
}

#ifndef WS_NO_CLIENT
#if WS__HAVE_OS
static int ws__os_random(void *buf, size_t n) {
  unsigned char *p = (unsigned char *)buf;
#if defined(__linux__)
  while (n > 0) {
    ssize_t r = getrandom(p, n, 0);
    if (r < 0) {
      if (errno == EINTR) continue;
      break; /* ENOSYS on old kernels: fall through to /dev/urandom */
    }
    p += r;
    n -= (size_t)r;
  }
  if (n == 0) return WS_OK;
#elif defined(__APPLE__) || defined(__OpenBSD__) || defined(__FreeBSD__) || \
    defined(__NetBSD__) || defined(__DragonFly__)
  arc4random_buf(p, n);
  return WS_OK;
#endif
  {
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return WS_ERANDOM;
    while (n > 0) {
      ssize_t r = read(fd, p, n);
      if (r <= 0) {
        if (r < 0 && errno == EINTR) continue;
        close(fd);
        return WS_ERANDOM;
      }
      p += r;
      n -= (size_t)r;
    }
    close(fd);
    return WS_OK;
  }
}
#elif WS__HAVE_NET /* Windows: rand_s(), RtlGenRandom underneath */
static int ws__os_random(void *buf, size_t n) {
  unsigned char *p = (unsigned char *)buf;
  while (n > 0) {
    unsigned v;
    size_t k = n < sizeof v ? n : sizeof v;
    if (rand_s(&v) != 0) return WS_ERANDOM;
    memcpy(p, &v, k);
    p += k;
    n -= k;
  }
  return WS_OK;
}
#endif

static int ws__random(ws_conn *c, void *buf, size_t n) {
  struct ws__conn_priv *p = WS__P(c);
  if (p->cb->random) {
    int rc;
    p->depth++;
    rc = p->cb->random(c, buf, n, p->user);
    p->depth--;
    return rc == WS_OK ? WS_OK : WS_ERANDOM;
  }
#if WS__HAVE_OS || WS__HAVE_NET
  return ws__os_random(buf, n);
#else
  (void)buf, (void)n;
  return WS_ERANDOM;
#endif
}
#endif /* WS_NO_CLIENT */

/* see ws.h */
void ws_config_init(ws_config *cfg, int role) {
  WS_ASSERT(cfg != NULL && "ws_config_init() called with a NULL config");
  memset(cfg, 0, sizeof *cfg);
  cfg->role = role;
  cfg->max_handshake = WS_MAX_HANDSHAKE;
  cfg->max_headers = WS_MAX_HEADERS;
  cfg->max_frame = WS_MAX_FRAME;
  cfg->max_message = WS_MAX_MESSAGE;
  cfg->max_queued = WS_MAX_QUEUED;
  cfg->frame_size = 0;
  cfg->stream = 0;
  cfg->handshake_timeout_ms = WS_HANDSHAKE_TIMEOUT_MS;
  cfg->close_timeout_ms = WS_CLOSE_TIMEOUT_MS;
  cfg->ping_interval_ms = 0;
  cfg->pong_timeout_ms = WS_PONG_TIMEOUT_MS;
  cfg->slow_reader_bytes = WS_SLOW_READER_BYTES;
  cfg->slow_reader_ms = WS_SLOW_READER_MS;
  cfg->deflate.window_bits = WS_DEFLATE_WINDOW_BITS;
  /* A client does not ask the server for a smaller window by default: a
   * server that ignores the request (libwebsockets 4.1 does) would leave
   * it no choice but to fail the connection. */
  cfg->deflate.peer_window_bits =
      role == WS_CLIENT ? 15 : WS_DEFLATE_PEER_WINDOW_BITS;
  cfg->deflate.mem_level = WS_DEFLATE_MEM_LEVEL;
  cfg->deflate.threshold = WS_DEFLATE_THRESHOLD;
}

/* see ws.h */
int ws_conn_init(ws_conn *c, const ws_config *cfg, const ws_callbacks *cb,
                 void *user) {
  struct ws__conn_priv *p;
  if (c == NULL || cfg == NULL ||
#ifdef WS_NO_SERVER
      cfg->role == WS_SERVER ||
#endif
#ifdef WS_NO_CLIENT
      cfg->role == WS_CLIENT ||
#endif
      (cfg->role != WS_SERVER && cfg->role != WS_CLIENT) ||
      cfg->max_handshake < 64 || cfg->max_handshake > 65535)
    return WS_EINVAL;
  p = WS__P(c);
  memset(p, 0, sizeof *p);
  p->cfg = cfg;
  p->cb = cb ? cb : &ws__no_callbacks;
  p->user = user;
  p->t = WS__NONE; /* no timer until the first tick arms one */
  p->role = (uint8_t)cfg->role;
  p->state = WS_STATE_INIT;
  if (WS__SERVER(p)) {
    p->state = WS_STATE_CONNECTING;
    p->flags |= WS__F_ARM_HS; /* started later, by ws__start() */
  }
  return WS_OK;
}

/* A server connection starts at the first call that drives it (see ws.h);
 * a client at ws_client_start(). From then on on_close is owed. */
static void ws__start(struct ws__conn_priv *p) {
  if (p->state != WS_STATE_INIT) p->flags |= WS__F_STARTED;
}

/* see ws.h */
int ws_conn_set_buffers(ws_conn *c, void *in, size_t in_cap, void *out,
                        size_t out_cap) {
  struct ws__conn_priv *p;
  if (c == NULL || in == NULL || out == NULL ||
      in_cap < 2 * WS__IN_RESERVE + WS_BUFFER_OVERHEAD ||
      out_cap < 2 * WS__IN_RESERVE + WS_BUFFER_OVERHEAD)
    return WS_EINVAL;
  p = WS__P(c);
  if (p->in || p->out || p->state > WS_STATE_CONNECTING) return WS_ESTATE;
  /* Each buffer starts with its bookkeeping, aligned for it. */
  {
    size_t ia = (size_t)(-(uintptr_t)in & 7);
    size_t oa = (size_t)(-(uintptr_t)out & 7);
    p->in = (struct ws__ibuf *)(void *)((unsigned char *)in + ia);
    p->out = (struct ws__obuf *)(void *)((unsigned char *)out + oa);
    memset(p->in, 0, sizeof *p->in);
    memset(p->out, 0, sizeof *p->out);
    /* The same capacity whatever the alignment: ia + the header never
     * exceed WS_BUFFER_OVERHEAD. */
    p->in->cap = in_cap - WS_BUFFER_OVERHEAD;
    p->out->cap = out_cap - WS_BUFFER_OVERHEAD;
  }
  p->flags |= WS__F_FIXED;
  return WS_OK;
}

/* Moves to CLOSED; on_close runs when the outermost API call returns
 * (never inside another callback). err says why. The code on_close gets
 * follows one rule (see ws.h): the peer's close frame's, else the one this
 * side's close frame carried (both kept in close_code), else `code`. */
static void ws__set_closed(struct ws__conn_priv *p, int code, int err) {
  if (WS__CLOSED(p)) return;
  p->state = WS_STATE_CLOSED;
  if (!(p->flags & (WS__F_PEER_CODE | WS__F_CLOSE_SENT)))
    p->close_code = (uint16_t)code;
  if (err != WS_OK && p->err == WS_OK) p->err = err;
}

/* Gives the buffers back (never the batch's stack buffer). */
static void ws__release(struct ws__conn_priv *p) {
  ws__z_release(p);
  if (!WS__FIXED(p)) {
    /* One at a time, as in ws__z_release(). */
    if (p->in) ws__mem(p, WS_MEM_INPUT, p->in, sizeof *p->in + p->in->cap, 0);
    p->in = NULL;
    if (p->out && !(p->flags & WS__F_STACK_OUT))
      ws__mem(p, WS_MEM_OUTPUT, p->out, sizeof *p->out + p->out->cap, 0);
  }
  p->in = NULL;
  p->out = NULL;
  p->flags &= ~(uint32_t)WS__F_STACK_OUT;
}

/* The budget refused memory: the connection fails at once with the code
 * the hook gave. A server with nothing queued writes its close frame
 * straight to the transport first, best effort (behind queued output it
 * would never reach a peer that does not read). */
static void ws__refused(struct ws__conn_priv *p, int code) {
  if (WS__CLOSED(p)) return;
  if (code < 1000 || code > 4999) code = WS_CLOSE_TRY_AGAIN;
  if (WS__SERVER(p) && p->state == WS_STATE_OPEN &&
      WS__QUEUED(p) == 0 &&
      !(p->flags & (WS__F_CLOSE_SENT | WS__F_UNSTACK)) && p->cb->write) {
    unsigned char f[4];
    size_t n = 0;
    f[0] = 0x80 | WS_OP_CLOSE;
    f[1] = 2;
    f[2] = (unsigned char)(code >> 8);
    f[3] = (unsigned char)code;
    p->depth++;
    (void)p->cb->write((ws_conn *)(void *)p, f, sizeof f, &n, p->user);
    p->depth--;
  }
  ws__set_closed(p, p->state == WS_STATE_CONNECTING ? WS_CLOSE_ABNORMAL : code,
                 WS_EBUDGET);
}

/* see ws.h */
size_t ws_conn_memory(const ws_conn *c) {
  const struct ws__conn_priv *p = WS__P(c);
  size_t n = 0;
  if (!WS__FIXED(p)) {
    if (p->in) n += sizeof *p->in + p->in->cap;
    if (p->out && !(p->flags & WS__F_STACK_OUT))
      n += sizeof *p->out + p->out->cap;
  }
#if WS_ENABLE_ZLIB
  if (p->z) {
    const struct ws__zconn *z = (const struct ws__zconn *)p->z;
    n += sizeof *z + z->mcap + (z->tx ? z->tx->cost : 0) +
         (z->rx ? z->rx->cost : 0);
  }
#endif
  return n;
}

/* Runs owed on_close at the end of a public call, after finishing a
 * ws_conn_free() made inside a callback. Returns rc, or WS_ECLOSED when
 * the connection is now closed (and c may be gone). */
static int ws__done(ws_conn *c, int rc) {
  struct ws__conn_priv *p = WS__P(c);
  const ws_callbacks *cb;
  char reason[WS_CONTROL_MAX];
  size_t len = 0;
  int notify;
  if (!WS__CLOSED(p)) return rc;
  if (p->depth) return rc == WS_OK ? WS_ECLOSED : rc;
  notify = (p->flags & WS__F_STARTED) && !(p->flags & WS__F_NOTIFIED);
  p->flags |= WS__F_NOTIFIED;
  ws__z_release(p); /* nothing compresses any more: zlib's memory goes now */
  if (notify) {
    /* A copy: a pending free releases the buffer holding the peer's
     * reason before on_close runs, as on_close is the last use of c. */
    const char *r = ws_strerror(p->err);
    if (p->flags & WS__F_PEER_CODE) {
      r = p->in ? (const char *)p->in->d : "";
      len = p->in ? p->close_len : 0;
    } else {
      len = strlen(r);
    }
    len = WS__MIN(len, sizeof reason);
    memcpy(reason, r, len);
  }
  cb = p->cb;
  if (p->flags & WS__F_FREE) ws__release(p);
  if (notify && cb->on_close) cb->on_close(c, p->close_code, reason, len, p->user);
  return WS_ECLOSED; /* c must not be touched after on_close */
}

/* Output queue --------------------------------------------------------- */

static int ws__out_room(struct ws__conn_priv *p, size_t n);

#if WS_BATCH_STACK
/* Takes the queue off a lent stack buffer: its live bytes move to a heap
 * buffer with room for `more` after them (no bytes and no room: no buffer).
 * Without memory the stack buffer stays the queue. */
static int ws__out_unstack(struct ws__conn_priv *p, size_t more) {
  struct ws__obuf *o = p->out;
  size_t n = o->len - o->head;
  p->out = NULL;
  p->flags &= ~(uint32_t)WS__F_STACK_OUT;
  if (n + more == 0) return WS_OK;
  p->flags |= WS__F_UNSTACK;
  if (ws__out_room(p, n + more) != WS_OK) {
    p->out = o;
    p->flags = (p->flags | WS__F_STACK_OUT) & ~(uint32_t)WS__F_UNSTACK;
    return WS__NOMEM(p);
  }
  p->flags &= ~(uint32_t)WS__F_UNSTACK;
  memcpy(p->out->d, o->d + o->head, n);
  p->out->len = n;
  if (o->pong_end == o->len && o->pong_end != 0 && o->pong_at >= o->head) {
    p->out->pong_at = o->pong_at - o->head; /* the last pong moved too */
    p->out->pong_end = n;
  }
  return WS_OK;
}
#endif

/* Makes room for n more bytes at the end of the output queue, allocating
 * it when there is none. */
static int ws__out_room(struct ws__conn_priv *p, size_t n) {
  struct ws__obuf *o = p->out, *q;
  size_t need, cap;
  if (o) {
    if (o->cap - o->len >= n) return WS_OK;
    if (o->head > 0) {
      memmove(o->d, o->d + o->head, o->len - o->head);
      o->len -= o->head;
      if (o->pong_end != 0 && o->pong_at >= o->head) {
        o->pong_at -= o->head; /* the last pong moved with the rest */
        o->pong_end -= o->head;
      } else {
        o->pong_end = 0;
      }
      o->head = 0;
      if (o->cap - o->len >= n) return WS_OK;
    }
    if (WS__FIXED(p)) return WS_EFULL;
  }
  if (WS_FIXED_BUFFERS) return WS_ENOMEM; /* none was given */
  need = (o ? o->len : 0) + n;
  if (need < n) return WS_ENOMEM;
#if WS_BATCH_STACK
  if (p->flags & WS__F_STACK_OUT) return ws__out_unstack(p, n); /* outgrown */
#endif
  /* The first buffer, counters included, is 1 KiB (less WS__SLOP): small
   * enough for the allocators' per-thread caches (glibc's takes up to
   * 1032 bytes), since it comes and goes with each burst of output. */
  cap = o ? o->cap : WS__BUF_FIRST(sizeof *o);
  while (cap < need) cap = cap * 2 < cap ? need : WS__BUF_NEXT(cap, sizeof *o);
  if (cap + sizeof *o < cap) return WS_ENOMEM;
  q = (struct ws__obuf *)ws__mem(p, WS_MEM_OUTPUT, o,
                                 o ? sizeof *o + o->cap : 0, sizeof *o + cap);
  if (q == NULL) return WS__NOMEM(p);
  if (o == NULL) {
    q->head = q->len = q->pong_end = 0;
    q->stall = 0;
  }
  q->cap = cap;
  p->out = q;
  return WS_OK;
}

/* Whether a send of `total` bytes (frames, headers counted) may be queued
 * now: WS_ETOOBIG when it never can, being larger than max_queued (or a
 * fixed out buffer) even with the queue empty; WS_EFULL when it can once
 * the queue has drained. The queue never holds more than max_queued. */
static int ws__out_fits(const struct ws__conn_priv *p, size_t total) {
  size_t limit = p->cfg->max_queued;
  if ((p->flags & WS__F_FIXED) && p->out->cap < limit) limit = p->out->cap;
  if (total > limit) return WS_ETOOBIG;
  if (WS__QUEUED(p) + total > p->cfg->max_queued) return WS_EFULL;
  return WS_OK;
}

static void ws__fail(ws_conn *c, int err, int code);

/* Writes queued output through the write callback. */
static int ws__flush(ws_conn *c) {
  struct ws__conn_priv *p = WS__P(c);
  struct ws__obuf *o = p->out;
  if (WS__CLOSED(p)) return WS_OK;
  /* The write callback may end the connection (ws_conn_abort or
   * ws_conn_free from inside it): no further write then. */
  while (o && o->head < o->len &&
         !(p->flags & (WS__F_CORK | WS__F_HOLD)) && !WS__CLOSED(p)) {
    size_t n = 0;
    int rc = WS_EIO;
    if (p->cb->write) {
      p->depth++;
      rc = p->cb->write(c, o->d + o->head, o->len - o->head, &n, p->user);
      p->depth--;
    }
    if (rc == WS_EAGAIN || (rc == WS_OK && n == 0)) {
      p->flags |= WS__F_BLOCKED;
      break;
    }
    if (rc != WS_OK || n > o->len - o->head) {
      p->err = p->err ? p->err : WS_EIO;
      ws__set_closed(p, WS_CLOSE_ABNORMAL, WS_EIO);
      return WS_EIO;
    }
    o->head += n;
  }
  if (o && o->head == o->len) {
    p->flags &= ~(uint32_t)WS__F_BLOCKED;
    o->head = o->len = o->pong_end = 0;
    o->stall = 0;
    if (!WS__FIXED(p) && !(p->flags & WS__F_STACK_OUT) &&
        o->cap > WS_KEEP_BUFFER) {
      ws__mem(p, WS_MEM_OUTPUT, o, sizeof *o + o->cap, 0);
      p->out = NULL;
    }
  }
  /* Everything is out: a failing connection, or a server whose closing
   * handshake is complete, is done (the server closes TCP first). */
  if (WS__QUEUED(p) == 0 &&
      ((p->flags & WS__F_FAILING) ||
       (WS__SERVER(p) &&
        (p->flags & (WS__F_CLOSE_SENT | WS__F_CLOSE_RCVD)) ==
            (WS__F_CLOSE_SENT | WS__F_CLOSE_RCVD))))
    ws__set_closed(p, p->close_code, WS_OK);
  return WS_OK;
}

/* An early write in a batch: what it holds goes now, and output is held
 * again for the rest of the batch. */
static int ws__flush_held(ws_conn *c) {
  struct ws__conn_priv *p = WS__P(c);
  int rc;
  p->flags &= ~(uint32_t)WS__F_HOLD;
  rc = ws__flush(c);
  p->flags |= WS__F_HOLD;
  return rc;
}

/* Flushes unless a batch holds output; a batch that grows large is flushed
 * anyway so one read cannot pile up unbounded replies. */
static int ws__maybe_flush(ws_conn *c) {
  struct ws__conn_priv *p = WS__P(c);
  size_t q = WS__QUEUED(p);
  /* Held output that stays held: nothing for ws__flush to do (nor when
   * closed: ws__flush then returns at once). */
  if (q > 0 && ((p->flags & WS__F_CORK) ||
                ((p->flags & WS__F_HOLD) && q < WS_BATCH_FLUSH)))
    return WS_OK;
  if ((p->flags & WS__F_HOLD) && q >= WS_BATCH_FLUSH) return ws__flush_held(c);
  return ws__flush(c);
}

/* Appends one frame (fin: 0 or 1) to a queue known to have room for it.
 * The payload may be NULL when len is 0. */
static int ws__put_frame(ws_conn *c, int fin, int op, const void *data,
                         size_t len) {
  struct ws__conn_priv *p = WS__P(c);
  unsigned char *o = p->out->d + p->out->len;
  size_t hl = ws__put_head(o, fin, op, len);
#ifndef WS_NO_CLIENT
  if (!WS__SERVER(p)) { /* masked, with a fresh key */
    uint8_t key[4];
    int rc;
    if ((rc = ws__random(c, key, 4)) != WS_OK) return rc;
    o[1] |= 0x80;
    memcpy(o + hl, key, 4);
    hl += 4;
    if (len) memcpy(o + hl, data, len);
    ws_mask(o + hl, len, key, 0);
  } else
#endif
  if (len) {
    memcpy(o + hl, data, len);
  }
  p->out->len += hl + len;
  return WS_OK;
}

/* Appends one frame. The payload may be NULL when len is 0. */
static int ws__queue_frame(ws_conn *c, int fin, int op, const void *data,
                           size_t len) {
  int rc;
  if ((rc = ws__out_room(WS__P(c), WS_FRAME_HEADER_MAX + len)) != WS_OK)
    return rc;
  return ws__put_frame(c, fin, op, data, len);
}

/* A data frame's header: its length's class, and a client's mask key. */
static size_t ws__hdr_size(size_t len, int server) {
  return ws__head_size(len) + (server ? 0 : 4);
}

/* Queues a close frame (code 0: none) and marks it sent. A close frame is
 * small and is queued past max_queued: it must not be lost. */
static int ws__queue_close(ws_conn *c, int code, const char *reason,
                           size_t rlen) {
  struct ws__conn_priv *p = WS__P(c);
  unsigned char body[WS_CONTROL_MAX];
  size_t n = 0;
  int rc;
  if (code) {
    body[0] = (unsigned char)(code >> 8);
    body[1] = (unsigned char)code;
    n = 2;
    if (rlen) memcpy(body + 2, reason, rlen);
    n += rlen;
  }
  if ((rc = ws__queue_frame(c, 1, WS_OP_CLOSE, body, n)) != WS_OK) return rc;
  /* What on_close reports unless the peer's close frame arrives. */
  if (!(p->flags & WS__F_PEER_CODE))
    p->close_code = (uint16_t)(code ? code : WS_CLOSE_NO_STATUS);
  p->flags |= WS__F_CLOSE_SENT | WS__F_ARM_CLOSE;
  return WS_OK;
}

/* Fails the connection: a close frame with `code` when one may still be
 * sent (code 0: drop the transport at once, 1006), then CLOSED once the
 * output is flushed. Only the first error sticks. */
static void ws__fail(ws_conn *c, int err, int code) {
  struct ws__conn_priv *p = WS__P(c);
  if ((p->flags & WS__F_FAILING) || WS__CLOSED(p)) return;
  if (p->err == WS_OK) p->err = err;
  p->flags |= WS__F_FAILING;
  if (code && (p->state == WS_STATE_OPEN || p->state == WS_STATE_CLOSING) &&
      !(p->flags & WS__F_CLOSE_SENT)) {
    p->state = WS_STATE_CLOSING;
    if (ws__queue_close(c, code, NULL, 0) != WS_OK)
      ws__set_closed(p, WS_CLOSE_ABNORMAL, err);
    return;
  }
  if (!code || !(p->flags & WS__F_CLOSE_SENT)) {
    ws__set_closed(p, WS_CLOSE_ABNORMAL, err);
    return;
  }
  /* A close frame was already sent: finish once it is flushed (on_close
   * gets the code it carried; p->err says why this side gave up). */
}

/* Input --------------------------------------------------------------- */

/* Makes room for at least `want` bytes at in + rlen, moving live bytes to
 * the front and growing the buffer when allowed. Returns the room (0 when a
 * fixed buffer is full), or a negative error. */
static long ws__in_room(struct ws__conn_priv *p, size_t want) {
  struct ws__ibuf *b = p->in, *q;
  /* Squeeze out what was consumed: the bytes before the message, and the
   * frame headers between its fragments. The peer's close reason, kept at
   * the front for on_close, stays where it is. */
  if (b && b->cap - b->rlen < want && p->state >= WS_STATE_OPEN &&
      !(p->flags & WS__F_CLOSE_RCVD) &&
      (b->mstart > 0 || b->rpos > b->mstart + b->mlen)) {
    if (b->mstart > 0) memmove(b->d, b->d + b->mstart, b->mlen);
    memmove(b->d + b->mlen, b->d + b->rpos, b->rlen - b->rpos);
    b->rlen = b->mlen + (b->rlen - b->rpos);
    b->rpos = b->mlen;
    b->mstart = 0;
  }
  if (b == NULL || (b->cap - b->rlen < want && !WS__FIXED(p))) {
    size_t need, cap;
    if (WS_FIXED_BUFFERS) return WS_ENOMEM; /* none was given */
    need = (b ? b->rlen : 0) + want;
    cap = b ? b->cap : WS__BUF_FIRST(sizeof *b);
    while (cap < need) cap = WS__BUF_NEXT(cap, sizeof *b);
    q = (struct ws__ibuf *)ws__mem(p, WS_MEM_INPUT, b,
                                   b ? sizeof *b + b->cap : 0, sizeof *b + cap);
    if (q == NULL) return WS__NOMEM(p);
    if (b == NULL) memset(q, 0, sizeof *q);
    q->cap = cap;
    p->in = b = q;
  }
  return (long)WS__MIN(b->cap - b->rlen, (size_t)0x7FFFFFFF);
}

/* Client: the nonce and the offered subprotocols sit at the front of the
 * input buffer until the response has been checked. */
#define WS__CLI_BASE(p) ((size_t)16 + (p)->in->proto_len)

/* How many bytes the next read should have room for. */
static size_t ws__read_want(const struct ws__conn_priv *p) {
  if (p->state == WS_STATE_CONNECTING) {
    size_t base = WS__SERVER(p) ? 0 : WS__CLI_BASE(p);
    size_t rlen = p->in ? p->in->rlen : 0, cap = p->in ? p->in->cap : 0;
    size_t used = rlen - base;
    /* Small steps: a head is usually a few hundred bytes, and a client
     * that trickles one should not pin max_handshake bytes. */
    if (used > p->cfg->max_handshake || cap > rlen) return 1;
    return WS__MIN(p->cfg->max_handshake + 1 - used, (size_t)1024);
  }
  if (p->in && p->in->frame_left > WS_READ_CHUNK && !p->cfg->stream)
    return (size_t)WS__MIN(p->in->frame_left, (ws__flen)(1u << 20));
  return WS_READ_CHUNK;
}

static int ws__call_message(ws_conn *c, int op, const void *d, size_t n,
                            int fin) {
  struct ws__conn_priv *p = WS__P(c);
  int rc = 0;
  if (p->cb->on_message) {
    p->depth++;
    rc = p->cb->on_message(c, op, d, n, fin, p->user);
    p->depth--;
  }
  if (rc < 0) {
    ws__fail(c, WS_EAPP, WS_CLOSE_INTERNAL);
    return WS_EAPP;
  }
  return WS_OK;
}

/* Fails the connection for a refused frame (a header, a payload, a close
 * frame's body) with the close code its error calls for; returns the error. */
static int ws__frame_fail(ws_conn *c, int err) {
  ws__fail(c, err,
           err == WS_ETOOBIG                    ? WS_CLOSE_TOO_BIG
           : err == WS_EUTF8 || err == WS_EDATA ? WS_CLOSE_INVALID_DATA
           : err == WS_ENOMEM                   ? WS_CLOSE_INTERNAL
                                                : WS_CLOSE_PROTOCOL);
  return err;
}

/* A whole control frame sits at in + rpos. */
static int ws__control(ws_conn *c, const ws_frame *f, unsigned char *d) {
  struct ws__conn_priv *p = WS__P(c);
  size_t n = (size_t)f->len;
  if (f->masked) ws_mask(d, n, f->mask, 0);
  if (f->opcode != WS_OP_CLOSE) {
    /* A ping or a pong: the application sees it (after a pong answered
     * the ping in flight); a ping is answered. */
    void (*seen)(ws_conn *, const void *, size_t, void *);
    if (f->opcode == WS_OP_PONG && (p->flags & WS__F_PONG_WAIT) &&
        p->state == WS_STATE_OPEN) {
      /* Answered: the next ping one interval from now. */
      p->flags &= ~(uint32_t)WS__F_PONG_WAIT;
      p->flags |= WS__F_ARM_PING;
    }
    seen = f->opcode == WS_OP_PING ? p->cb->on_ping : p->cb->on_pong;
    if (seen) {
      p->depth++;
      seen(c, d, n, p->user);
      p->depth--;
    }
    if (f->opcode == WS_OP_PONG) return WS_OK;
    /* Answer unless closing; a peer that pings faster than it reads gets
     * no more pongs once the queue is full (a later ping is answered). */
    if (!(p->flags & (WS__F_CLOSE_SENT | WS__F_FAILING)) && !WS__CLOSED(p) &&
        WS__QUEUED(p) + n + WS_FRAME_HEADER_MAX <= p->cfg->max_queued) {
      struct ws__obuf *o = p->out;
      size_t q;
      int rc;
      /* Only the latest ping needs its pong (RFC 6455 5.5.3). While the
       * transport refuses output (the peer is not reading), a pong still
       * unsent at the end of the queue gives way to this one, so a peer
       * that pings and never reads holds one pong here, not one each. A
       * peer that reads gets every pong, in order. */
      if (o && (p->flags & WS__F_BLOCKED) && o->pong_end == o->len &&
          o->pong_end != 0 && o->pong_at >= o->head)
        o->len = o->pong_at;
      q = WS__QUEUED(p);
      rc = ws__queue_frame(c, 1, WS_OP_PONG, d, n);
      if (rc == WS_ENOMEM) {
        ws__fail(c, rc, WS_CLOSE_INTERNAL);
        return rc;
      }
      if (rc != WS_OK) return rc == WS_EBUDGET ? rc : WS_OK;
      /* It is the queue's last frame, what the queue grew by (the queue
       * may have moved). */
      p->out->pong_end = p->out->len;
      p->out->pong_at = p->out->len - (WS__QUEUED(p) - q);
    }
    return WS_OK;
  }
  /* Close */
  {
    uint16_t code;
    const char *reason;
    size_t rlen;
    int rc = ws_close_parse(d, n, &code, &reason, &rlen);
    if (rc != WS_OK) return ws__frame_fail(c, rc);
    /* Keep the reason at the front of the buffer for on_close. */
    memmove(p->in->d, reason, rlen);
    p->close_len = (uint8_t)rlen;
    p->close_code = code;
    p->flags |= WS__F_CLOSE_RCVD | WS__F_PEER_CODE | WS__F_ARM_CLOSE;
    p->state = WS_STATE_CLOSING;
    p->in->rpos = p->in->rlen = p->in->mstart = rlen;
    p->in->mlen = 0;
    if (!(p->flags & WS__F_CLOSE_SENT)) {
      /* Echo the peer's code (none if it sent none). */
      rc = ws__queue_close(c, code == WS_CLOSE_NO_STATUS ? 0 : code, NULL, 0);
      if (rc != WS_OK) ws__set_closed(p, code, rc);
    }
    return WS_OK;
  }
}

/* Nothing pending in the input buffer: rewind it, and give it back when
 * it is over WS_KEEP_BUFFER (so an idle connection holds none). */
static void ws__in_idle(struct ws__conn_priv *p) {
  struct ws__ibuf *b = p->in;
  if (b == NULL || b->rpos != b->rlen || b->mlen != 0 || b->op != 0 ||
      b->msg_op != 0 || p->state < WS_STATE_OPEN ||
      (p->flags & WS__F_CLOSE_RCVD) || WS__CLOSED(p))
    return;
  b->rpos = b->rlen = b->mstart = 0;
  if (!WS__FIXED(p) && b->cap > WS_KEEP_BUFFER) {
    ws__mem(p, WS_MEM_INPUT, b, sizeof *b + b->cap, 0);
    p->in = NULL;
  }
}

/* A data frame of len bytes, after total bytes of its message of which
 * mlen are held, is over a limit: max_frame, max_message, or (fixed
 * buffers, not streaming) what the input buffer can hold. */
static int ws__too_big(const struct ws__conn_priv *p, ws__flen len,
                       ws__flen total, size_t mlen) {
  return len > p->cfg->max_frame || len > p->cfg->max_message - total ||
         (!p->cfg->stream && WS__FIXED(p) &&
          mlen + len + WS__IN_RESERVE > p->in->cap);
}

/* Frame acceptance: the rules every frame meets, written once for both
 * feeds: ws__frames() over the input buffer (ws_conn_on_readable,
 * ws_conn_feed) and ws_conn_feed_inplace() over the caller's bytes. A
 * header is checked by ws__frame_head(), a data payload unmasked and
 * checked by ws__payload(), a control frame handled by ws__control(), a
 * message delivered by ws__call_message(); a refused frame fails the
 * connection through ws__frame_fail(). */

/* Reads the frame header at d[0..len) and checks it against the role and
 * the message in progress in b (NULL: none, as for ws_conn_feed_inplace(),
 * which holds none). Returns WS_OK, WS_EAGAIN (the header is not all here),
 * or why the frame is refused: WS_EPROTO (reserved bits or opcodes, a bad
 * control frame or length, the wrong masking, a message's first frame or a
 * continuation out of place) or WS_ETOOBIG (over a limit). */
WS__INLINE int ws__frame_head(const struct ws__conn_priv *p,
                              const unsigned char *d, size_t len, ws_frame *f,
                              size_t *hl, const struct ws__ibuf *b) {
  int rc = ws__frame_parse(d, len, f, hl);
  if (rc != WS_OK) return rc;
  /* RSV1 only with permessage-deflate, on a message's first frame (never
   * a control frame or a continuation); RSV2 and RSV3 never. A client
   * masks its frames, a server does not. */
  if ((f->rsv != 0 &&
       (f->rsv != 4 || !(WS__PMD(p) & WS__PMD_ON) || f->opcode >= 8 ||
        f->opcode == WS_OP_CONT)) ||
      f->masked != (WS__SERVER(p) ? 1 : 0))
    return WS_EPROTO;
  if (f->opcode >= 8) return WS_OK; /* control frames may come in between */
#if !WS_SMALL
  if (f->opcode != WS_OP_CONT) {
    /* A message starts: none may be open, so nothing of one is held. */
    if (b && b->msg_op) return WS_EPROTO;
    return ws__too_big(p, f->len, 0, 0) ? WS_ETOOBIG : WS_OK;
  }
  if (!b || !b->msg_op) return WS_EPROTO; /* no message to continue */
  return ws__too_big(p, f->len, b->msg_total, b->mlen) ? WS_ETOOBIG : WS_OK;
#else
  /* The same checks in one test and one call of ws__too_big() (smaller;
   * the form above is faster, its sums with 0 folding away). */
  if ((f->opcode != WS_OP_CONT) != (!b || !b->msg_op)) return WS_EPROTO;
  {
    ws__flen total = f->opcode != WS_OP_CONT ? 0 : b->msg_total;
#if SIZE_MAX < UINT64_MAX
    /* Lengths are counted in size_t here (ws__flen): a frame, or a
     * message, longer than it can count is over a limit (1009). */
    if (f->len > SIZE_MAX - total) return WS_ETOOBIG;
#endif
    return ws__too_big(p, (ws__flen)f->len, total,
                       f->opcode != WS_OP_CONT ? 0 : b->mlen)
               ? WS_ETOOBIG
               : WS_OK;
  }
#endif
}

/* A piece of a data frame's payload, d[0..n) at offset off in its frame:
 * unmasked in place (a server's input), then, in a text message, checked
 * as UTF-8 from the message's state *utf8 (done: the message ends with
 * this piece). WS_OK, or the connection fails with 1007: WS_EUTF8. */
WS__INLINE int ws__payload(ws_conn *c, unsigned char *d, size_t n,
                           const uint8_t key[4], unsigned off, int msg_op,
                           uint32_t *utf8, int done) {
  if (WS__SERVER(WS__P(c))) ws_mask(d, n, key, off);
  if (msg_op == WS_OP_TEXT && ws_utf8_check(utf8, d, n, done, NULL) != WS_OK)
    return ws__frame_fail(c, WS_EUTF8);
  return WS_OK;
}

/* A piece of a compressed message's payload, in[0..n) (unmasked), at the
 * end of a frame when `last`, at the end of the message when `done` (then
 * the tail 00 00 ff ff the sender removed follows it). Inflated bytes count
 * against max_frame and max_message as they come out, so a bomb stops at
 * the limit; they are checked as UTF-8 in a text message, and delivered in
 * pieces (cfg.stream) or gathered and delivered whole at the end. Returns
 * WS_OK or the error that failed the connection. */
static int ws__inflate(ws_conn *c, int op, const unsigned char *in, size_t n,
                       int last, int done) {
  static const unsigned char tail[4] = {0x00, 0x00, 0xff, 0xff};
  struct ws__conn_priv *p = WS__P(c);
  struct ws__zconn *z = ws__z_get(p);
  unsigned char chunk[WS_INFLATE_CHUNK];
  int pass, rc;
  if (z == NULL) return ws__frame_fail(c, WS_ENOMEM);
  if (z->rx == NULL) {
    z->rx = ws__zs_make(p, 1, (int)WS__MAX(WS__PMD_RX_BITS(p->pmd), 9u), 0);
    if (z->rx == NULL) {
      ws__z_drop(p);
      return ws__frame_fail(c, WS_ENOMEM);
    }
  }
  for (pass = 0; pass < 2; pass++) {
    const unsigned char *src = pass ? tail : in;
    /* An empty payload is an empty message: no tail (00 00 ff ff alone
     * would start a stored block that never ends). */
    int tailed = done && p->in->msg_total > 0;
    size_t left = pass ? (tailed ? sizeof tail : 0) : n;
    int more = !pass || tailed;
    while (!z->ended && (left > 0 || more)) {
      uint64_t allow = WS__MIN(p->cfg->max_frame - z->fout,
                               p->cfg->max_message - z->mout);
      unsigned char *out = chunk;
      size_t cap = sizeof chunk, used, made;
      if (!p->cfg->stream) {
        if (z->mcap - z->mlen < 512) {
          /* Grow, doubling, to at most one byte past max_message (the
           * byte that tells the limit was passed). */
          uint64_t lim = p->cfg->max_message < (uint64_t)SIZE_MAX
                             ? p->cfg->max_message + 1
                             : (uint64_t)SIZE_MAX;
          size_t want = z->mcap ? z->mcap * 2 : 1024;
          unsigned char *m;
          if (want < z->mcap || want > lim) want = (size_t)lim;
          if (want > z->mcap) {
            if ((m = (unsigned char *)ws__mem(p, WS_MEM_INPUT, z->m, z->mcap,
                                              want)) == NULL)
              return ws__frame_fail(c, WS__NOMEM(p));
            z->m = m;
            z->mcap = want;
          }
        }
        out = z->m + z->mlen;
        cap = z->mcap - z->mlen;
        if (cap == 0) return ws__frame_fail(c, WS_ETOOBIG); /* no more room */
      }
      if (cap > allow) cap = (size_t)allow + 1;
      rc = ws__zs_run(z->rx, src, left, &used, out, cap, &made, 0);
      src += used;
      left -= used;
      if (rc < 0) return ws__frame_fail(c, rc);
      if (made > allow) return ws__frame_fail(c, WS_ETOOBIG);
      if (rc == WS__ZS_END) z->ended = 1;
      z->fout += made;
      z->mout += made;
      more = made == cap; /* full: zlib may hold more */
      if (op == WS_OP_TEXT && made &&
          ws_utf8_check(&p->in->utf8, out, made, 0, NULL) != WS_OK)
        return ws__frame_fail(c, WS_EUTF8);
      if (!p->cfg->stream) {
        z->mlen += made;
      } else if (made) {
        if ((rc = ws__call_message(c, op, out, made, 0)) != WS_OK) return rc;
        if ((p->flags & WS__F_FAILING) || WS__CLOSED(p)) return WS_OK;
      }
    }
  }
  if (last) z->fout = 0;
  if (!done) return WS_OK;
  if (op == WS_OP_TEXT &&
      ws_utf8_check(&p->in->utf8, tail, 0, 1, NULL) != WS_OK)
    return ws__frame_fail(c, WS_EUTF8);
  rc = ws__call_message(c, op, p->cfg->stream || !z->m ? chunk : z->m,
                        p->cfg->stream ? 0 : z->mlen, 1);
  /* The message is out: its buffer goes, and the decompressor too when the
   * peer keeps no context (or a final block ended its stream). */
  if (z->m) ws__mem(p, WS_MEM_INPUT, z->m, z->mcap, 0);
  z->m = NULL;
  z->mlen = z->mcap = 0;
  z->mout = 0;
  if (p->pmd & WS__PMD_RX_RESET) {
    ws__zs_drop(p, z->rx);
    z->rx = NULL;
  } else if (z->ended) {
    ws__zs_reset(z->rx);
  }
  z->ended = 0;
  ws__z_drop(p);
  return rc;
}

/* Processes frames in in[rpos..rlen). */
static int ws__frames(ws_conn *c) {
  struct ws__conn_priv *p = WS__P(c);
  while (!(p->flags & (WS__F_CLOSE_RCVD | WS__F_FAILING)) && !WS__CLOSED(p)) {
    if (p->in->op == 0) {
      /* Between frames: parse a header. */
      ws_frame f;
      size_t hl;
      int rc = ws__frame_head(p, p->in->d + p->in->rpos,
                              p->in->rlen - p->in->rpos, &f, &hl, p->in);
      if (rc == WS_EAGAIN) break;
      if (rc != WS_OK) return ws__frame_fail(c, rc);
      if (f.opcode >= 8) {
        if (p->in->rlen - p->in->rpos < hl + (ws__flen)f.len) break; /* whole frame first */
        rc = ws__control(c, &f, p->in->d + p->in->rpos + hl);
        if (rc != WS_OK) return rc;
        if (!(p->flags & WS__F_CLOSE_RCVD)) {
          p->in->rpos += hl + (size_t)f.len;
          if (p->in->msg_op == 0) p->in->mstart = p->in->rpos;
        }
        continue;
      }
      p->in->rpos += hl;
      if (f.opcode != WS_OP_CONT) {
        p->in->msg_total = 0;
        p->in->msg_op = f.opcode;
        p->in->mstart = p->in->rpos;
        p->in->mlen = 0;
        p->in->utf8 = WS_UTF8_INIT;
        p->in->zmsg = WS_ENABLE_ZLIB && f.rsv != 0;
      }
      p->in->op = f.opcode == WS_OP_CONT ? WS__OP_CONT_FRAME : f.opcode;
      p->in->fin = f.fin;
      memcpy(p->in->key, f.mask, 4);
      p->in->frame_left = (ws__flen)f.len;
      p->in->off = 0;
    }
    /* Inside a data frame: take what payload is here. */
    {
      size_t avail = (size_t)WS__MIN(p->in->frame_left, (ws__flen)(p->in->rlen - p->in->rpos));
      int last = (avail == p->in->frame_left);
      int done = last && p->in->fin;
      unsigned char *d = p->in->d + p->in->rpos;
      if (avail == 0 && !last) break;
      if (ws__payload(c, d, avail, p->in->key, p->in->off,
                      p->in->zmsg ? 0 : p->in->msg_op, &p->in->utf8,
                      done) != WS_OK)
        return WS_EUTF8;
      p->in->frame_left -= avail;
      p->in->off = (uint8_t)((p->in->off + avail) & 3);
      p->in->msg_total += avail;
      p->in->rpos += avail;
      if (WS_ENABLE_ZLIB && p->in->zmsg) {
        /* Compressed: inflated out of the buffer; nothing is kept here. */
        int op = p->in->msg_op, rc;
        if (last) p->in->op = 0;
        if (done) p->in->msg_op = 0;
        p->in->mstart = p->in->rpos;
        if ((rc = ws__inflate(c, op, d, avail, last, done)) != WS_OK)
          return rc;
        continue;
      }
      {
        /* Streaming, the piece is delivered now and nothing is kept (an
         * empty piece is only worth a call when it ends the message);
         * else it joins the message held at mstart, delivered whole once
         * done. */
        int op = p->in->msg_op, stream = p->cfg->stream != 0;
        if (!stream) {
          if (p->in->mstart + p->in->mlen != (size_t)(d - p->in->d))
            memmove(p->in->d + p->in->mstart + p->in->mlen, d, avail);
          p->in->mlen += avail;
          d = p->in->d + p->in->mstart;
          avail = p->in->mlen;
        }
        if (last) p->in->op = 0;
        if (done) p->in->msg_op = 0;
        if (stream || done) {
          p->in->mstart = p->in->rpos;
          p->in->mlen = 0;
        }
        if (done || (stream && avail > 0)) {
          int rc = ws__call_message(c, op, d, avail, done);
          if (rc != WS_OK) return rc;
        }
      }
    }
  }
  ws__in_idle(p);
  return WS_OK;
}

static void ws__open(ws_conn *c, const char *proto, size_t plen) {
  struct ws__conn_priv *p = WS__P(c);
  p->state = WS_STATE_OPEN;
  p->flags &= ~(uint32_t)WS__F_ARM_HS;
  p->t = WS__NONE; /* the handshake timeout stops; a ping's may follow */
  if (p->cfg->ping_interval_ms) p->flags |= WS__F_ARM_PING;
  if (p->cb->on_open) {
    p->depth++;
    p->cb->on_open(c, proto, plen, p->user);
    p->depth--;
  }
}

/* The HTTP head at in->d + base (the server's request, the client's
 * response), searched from where the last search stopped: its length when
 * it is all here; 0 when it is not yet; WS_EPROTO for a bare LF in it,
 * WS_ETOOBIG when more than max_handshake bytes came without its end. */
static long ws__in_head(struct ws__conn_priv *p, size_t base) {
  const unsigned char *d = p->in->d + base;
  size_t len = p->in->rlen - base, from = (size_t)WS__HEAD_SCAN(p->in);
  size_t head = ws__head_end((const char *)d, len, from);
  if (ws__bare_lf_from(d, head ? head : len, from)) return WS_EPROTO;
  WS__HEAD_SCAN(p->in) = len; /* resume the searches here next time */
  if (head == 0 || head > p->cfg->max_handshake)
    return len > p->cfg->max_handshake ? WS_ETOOBIG : 0;
  return (long)head;
}

#ifndef WS_NO_SERVER
/* Refuses an upgrade with an HTTP error and ends the connection. */
static int ws__refuse(ws_conn *c, int status, int err) {
  struct ws__conn_priv *p = WS__P(c);
  size_t n;
  p->err = err;
  p->close_code = WS_CLOSE_ABNORMAL;
  p->flags |= WS__F_FAILING;
  if (ws__out_room(p, 160) != WS_OK ||
      ws_http_error_write(p->out->d + p->out->len, p->out->cap - p->out->len, status, &n) !=
          WS_OK) {
    ws__set_closed(p, WS_CLOSE_ABNORMAL, err);
    return err;
  }
  p->out->len += n;
  return err;
}

/* see ws.h */
int ws_http_respond(ws_conn *c, int status, const ws_header *headers,
                    size_t num_headers, const void *body, size_t len) {
  struct ws__conn_priv *p;
  ws__wbuf w;
  size_t i, need = 128 + len;
  int rc;
  WS_ASSERT(c != NULL && "ws_http_respond() called with a NULL connection");
  p = WS__P(c);
  if (!(p->flags & WS__F_IN_HTTP) || (p->flags & WS__F_FAILING) || WS__CLOSED(p))
    return WS_ESTATE;
  if (status < 100 || status > 599 || (body == NULL && len > 0) ||
      (headers == NULL && num_headers > 0))
    return WS_EINVAL;
  for (i = 0; i < num_headers; i++) need += headers[i].name_len + headers[i].value_len + 4;
  if ((rc = ws__out_room(p, need)) != WS_OK) return rc;
  w.p = (char *)p->out->d + p->out->len, w.cap = p->out->cap - p->out->len, w.len = 0, w.over = 0;
  ws__http_head(&w, status, "", len);
  if (ws__wr_extra(&w, headers, num_headers) != WS_OK) return WS_EINVAL;
  ws__wrs(&w, "\r\n");
  if (len) ws__wr(&w, (const char *)body, len);
  if (w.over) return WS_ENOSPC;
  p->out->len += w.len;
  /* The exchange ends once the response is out. */
  p->flags |= WS__F_FAILING;
  p->close_code = WS_CLOSE_ABNORMAL;
  return WS_OK;
}

/* Server: look for a complete request and answer it. */
static int ws__server_handshake(ws_conn *c) {
  struct ws__conn_priv *p = WS__P(c);
  ws_header hdrs[WS_MAX_HEADERS];
  ws_request req;
  ws_accept acc;
  size_t consumed, n, extra = 0, i, pmd_len = 0, plen = 0;
  int status, rc, ext = 0;
  char pmd_text[WS__PMD_TEXT_MAX];
  long head = ws__in_head(p, 0);
  status = head == WS_EPROTO ? 400 : 431;
  /* Without the whole head, a bad first line fails at once; only its
   * first bytes are looked at, so a trickled head costs O(n). */
  if (head == 0 &&
      ws__request_parse((const char *)p->in->d, WS__MIN(p->in->rlen, (size_t)16), &req, hdrs,
                        0, &consumed, &status) != WS_EHANDSHAKE)
    return WS_OK;
  if (head <= 0) return ws__refuse(c, status, WS_EHANDSHAKE);
  rc = ws__request_parse((const char *)p->in->d, (size_t)head, &req, hdrs, WS__MAX_HDRS(p),
                         &consumed, &status);
  if (rc != WS_OK && req.method && !req.upgrade && p->cb->on_http) {
    /* A well-formed plain HTTP request: the application may answer it. */
    size_t before = WS__QUEUED(p);
    p->depth++;
    p->flags |= WS__F_IN_HTTP;
    status = p->cb->on_http(c, &req, p->user);
    p->flags &= ~(uint32_t)WS__F_IN_HTTP;
    p->depth--;
    if (WS__CLOSED(p)) return WS_ECLOSED;
    if (status == 0 && WS__QUEUED(p) > before) return WS_OK; /* answered */
    return ws__refuse(c, status >= 400 && status <= 599 ? status : 404,
                      WS_EHANDSHAKE);
  }
  if (rc != WS_OK) return ws__refuse(c, status, WS_EHANDSHAKE);
  memset(&acc, 0, sizeof acc);
  status = 0;
  if (p->cb->on_handshake) {
    p->depth++;
    status = p->cb->on_handshake(c, &req, &acc, p->user);
    p->depth--;
    if (WS__CLOSED(p)) return WS_ECLOSED;
  }
  if (status != 0)
    return ws__refuse(c, (status >= 400 && status <= 599) ? status : 500,
                      WS_EREFUSED);
  if (acc.protocol) {
    /* It must be one the client offered (WS_EINVAL past the last). */
    const char *t;
    size_t k, tl;
    plen = strlen(acc.protocol);
    for (k = 0; (rc = ws_request_protocol(&req, k, &t, &tl)) == WS_OK; k++)
      if (tl == plen && memcmp(t, acc.protocol, tl) == 0) break;
    if (rc != WS_OK) return ws__refuse(c, 500, WS_EINVAL);
  }
  for (i = 0; i < acc.num_headers && acc.headers; i++) {
    extra += acc.headers[i].name_len + acc.headers[i].value_len + 4;
    if (acc.headers[i].name &&
        ws__ieq(acc.headers[i].name, acc.headers[i].name_len,
                "sec-websocket-extensions"))
      ext = 1; /* the application answers offers itself */
  }
  if (acc.protocol) extra += plen + 32;
  /* permessage-deflate: the first acceptable offer, under the policy. */
  p->pmd = 0;
  if (p->cfg->deflate.enable && !ext && !WS__FIXED(p) &&
      ws__zs_usable(p->cfg))
    p->pmd = ws__pmd_accept(&req, &p->cfg->deflate, pmd_text, &pmd_len);
  if ((rc = ws__out_room(p, 160 + extra + 32 + WS__PMD_TEXT_MAX)) != WS_OK)
    return ws__refuse(c, 500, rc);
  rc = ws_response_write(p->out->d + p->out->len, p->out->cap - p->out->len, req.key,
                         req.key_len, acc.protocol, acc.headers,
                         acc.num_headers, &n);
  if (rc != WS_OK) return ws__refuse(c, 500, rc);
  if (WS__PMD(p)) {
    /* In before the blank line that ends the head. */
    char *e = (char *)p->out->d + p->out->len + n - 2;
    memcpy(e, "Sec-WebSocket-Extensions: ", 26);
    memcpy(e + 26, pmd_text, pmd_len);
    memcpy(e + 26 + pmd_len, "\r\n\r\n", 4);
    n += 26 + pmd_len + 2;
  }
  p->out->len += n;
  p->in->rpos = p->in->mstart = consumed;
  p->in->frame_left = 0; /* WS__HEAD_SCAN ends: no frame yet */
  ws__open(c, acc.protocol, plen);
  return WS_OK;
}
#endif /* WS_NO_SERVER */

#ifndef WS_NO_CLIENT

/* Client: look for the server's response and check it. */
static int ws__client_handshake(ws_conn *c) {
  struct ws__conn_priv *p = WS__P(c);
  ws_header hdrs[WS_MAX_HEADERS];
  ws_response resp;
  size_t base = WS__CLI_BASE(p), consumed;
  uint8_t nonce[16];
  int rc;
  long head;
  memcpy(nonce, p->in->d, 16);
  head = ws__in_head(p, base);
  /* Without the whole head, a bad status line fails at once (its first
   * bytes only are looked at, as the server does with a request line). */
  if (head == 0 &&
      ws__response_parse(p->in->d + base, WS__MIN(p->in->rlen - base, (size_t)16), nonce,
                         NULL, 0, &resp, hdrs, 0, &consumed, 0) != WS_EHANDSHAKE)
    return WS_OK;
  if (head <= 0) {
    ws__set_closed(p, WS_CLOSE_ABNORMAL, WS_EHANDSHAKE);
    return WS_EHANDSHAKE;
  }
  rc = ws__response_parse(p->in->d + base, (size_t)head, nonce,
                          (const char *)p->in->d + 16, p->in->proto_len,
                          &resp, hdrs, WS__MAX_HDRS(p), &consumed,
                          (WS__PMD(p) & WS__PMD_OFFER) != 0);
  if (resp.status >= 100 && resp.status <= 599) p->http_status = (uint16_t)resp.status;
  if (rc != WS_OK) {
    /* A well-formed reply that is not 101: no upgrade happened (refused, or
     * Upgrade stripped on the way), which the error says apart from a
     * broken acceptance. */
    rc = resp.headers != NULL && resp.status != 101 ? WS_EUPGRADE : WS_EHANDSHAKE;
    ws__set_closed(p, WS_CLOSE_ABNORMAL, rc);
    return rc;
  }
  /* From here the input buffer holds frames only. */
  p->in->proto_len = 0;
  p->in->rpos = p->in->mstart = base + consumed;
  p->in->frame_left = 0; /* WS__HEAD_SCAN ends: no frame yet */
  if (WS__PMD(p) & WS__PMD_OFFER) {
    uint16_t agreed;
    if (ws__pmd_check(&resp, p->pmd, &agreed) != WS_OK) {
      /* The server chose what we did not offer: fail the connection with
       * 1010, without opening it for the application. */
      p->pmd = 0;
      p->state = WS_STATE_OPEN;
      p->flags &= ~(uint32_t)WS__F_ARM_HS;
      ws__fail(c, WS_EHANDSHAKE, WS_CLOSE_EXTENSION);
      return WS_EHANDSHAKE;
    }
    p->pmd = agreed;
  }
  ws__open(c, resp.protocol, resp.protocol_len);
  return WS_OK;
}
#endif /* WS_NO_CLIENT */

/* Processes whatever input is buffered. */
static int ws__process(ws_conn *c) {
  struct ws__conn_priv *p = WS__P(c);
  int rc = WS_OK;
  if ((p->flags & WS__F_FAILING) || WS__CLOSED(p)) return p->err;
  if (p->state == WS_STATE_CONNECTING) {
#if !defined(WS_NO_SERVER) && !defined(WS_NO_CLIENT)
    rc = p->role == WS_SERVER ? ws__server_handshake(c)
                              : ws__client_handshake(c);
#elif !defined(WS_NO_SERVER)
    rc = ws__server_handshake(c);
#else
    rc = ws__client_handshake(c);
#endif
    if (rc != WS_OK || p->state != WS_STATE_OPEN) return rc;
  }
  if (p->state >= WS_STATE_OPEN && !(p->flags & WS__F_CLOSE_RCVD)) {
    if (WS__CLOSED(p)) return rc;
    rc = ws__frames(c);
  } else if (p->flags & WS__F_CLOSE_RCVD) {
    p->in->rlen = p->in->rpos; /* after the peer's close, input is ignored */
  }
  return rc;
}

/* End of stream from the transport. */
static void ws__eof(ws_conn *c) {
  struct ws__conn_priv *p = WS__P(c);
  p->flags |= WS__F_EOF;
  if (p->flags & WS__F_CLOSE_RCVD)
    ws__set_closed(p, p->close_code, WS_OK);
  else
    ws__set_closed(p, WS_CLOSE_ABNORMAL, WS_EEOF);
}

/* see ws.h */
int ws_conn_want_read(const ws_conn *c) {
  const struct ws__conn_priv *p = WS__P(c);
  size_t q;
  if (p->state == WS_STATE_INIT || WS__CLOSED(p) || (p->flags & WS__F_FAILING))
    return 0;
  if (WS__SERVER(p) && (p->flags & WS__F_CLOSE_RCVD)) return 0;
  /* Stop reading once half the output limit is queued (and always before
   * a pong could no longer fit): a peer that sends faster than it reads is
   * paused, and what it already sent still has room for its replies. */
  q = WS__QUEUED(p);
  if (q == 0) return 1; /* nothing queued: never stall */
  return q <= p->cfg->max_queued / 2 &&
         q + WS_FRAME_HEADER_MAX + WS_CONTROL_MAX <= p->cfg->max_queued;
}

/* The sticky error or WS_OK, at the end of a public call. */
static int ws__result(ws_conn *c, int rc) {
  struct ws__conn_priv *p = WS__P(c);
  if (rc == WS_OK && p->err != WS_OK && !WS__CLOSED(p))
    rc = p->err;
  /* Slow readers: output over the threshold starts its clock (at the next
   * tick), output back under it stops it. */
  if (p->cfg->slow_reader_ms && p->cfg->slow_reader_bytes && p->out &&
      !WS__CLOSED(p)) {
    if (WS__QUEUED(p) <= p->cfg->slow_reader_bytes) {
      p->out->stall = 0;
      p->flags &= ~(uint32_t)WS__F_ARM_SLOW;
    } else if (p->out->stall == 0) {
      p->flags |= WS__F_ARM_SLOW;
    }
  }
  return ws__done(c, rc);
}

#if WS_BATCH_STACK
/* Lends the output queue a stack buffer for one call that processes input,
 * when the connection has no queue. */
#define WS__STACK_OUT(p)                                                  \
  union {                                                                 \
    size_t align;                                                         \
    unsigned char b[WS_BATCH_STACK];                                      \
  } ws__sb;                                                               \
  if ((p)->out == NULL && !WS__FIXED(p)) {                                \
    (p)->out = (struct ws__obuf *)(void *)ws__sb.b;                       \
    (p)->out->cap = sizeof ws__sb - sizeof *(p)->out;                     \
    (p)->out->head = (p)->out->len = (p)->out->pong_end = 0;              \
    (p)->out->stall = 0;                                                  \
    (p)->flags |= WS__F_STACK_OUT;                                        \
  }
#else
#define WS__STACK_OUT(p)
#endif

/* Batch: a call that processes input (WS__F_INPUT) holds the replies it
 * queues (WS__F_HOLD) and lets them leave in one flush, here. What the
 * transport does not take moves from a lent stack buffer to the heap
 * before the call returns (or on_close runs). */
static void ws__begin_batch(struct ws__conn_priv *p) {
  p->flags |= WS__F_INPUT | WS__F_HOLD;
}

static int ws__end_batch(ws_conn *c, int rc) {
  struct ws__conn_priv *p = WS__P(c);
  int frc;
  p->flags &= ~(uint32_t)(WS__F_INPUT | WS__F_HOLD);
  frc = ws__flush(c);
#if WS_BATCH_STACK
  if ((p->flags & WS__F_STACK_OUT) &&
      (WS__CLOSED(p) || ws__out_unstack(p, 0) != WS_OK)) {
    p->out = NULL; /* closed, or no memory: what is left is dropped */
    p->flags &= ~(uint32_t)WS__F_STACK_OUT;
    if (!WS__CLOSED(p))
      ws__set_closed(p, WS_CLOSE_ABNORMAL, WS_ENOMEM);
  }
#endif
  return ws__result(c, rc != WS_OK ? rc : frc);
}

/* Room for the next bytes in (ws__in_room()); 0 when there is none, and
 * then the connection has failed: without memory, or with a fixed input
 * buffer full of what cannot be consumed (the request head or the message
 * is larger than the buffer). */
static size_t ws__in_take(ws_conn *c, size_t want) {
  struct ws__conn_priv *p = WS__P(c);
  long room = ws__in_room(p, want);
  if (room > 0) return (size_t)room;
  if (room < 0)
    ws__fail(c, (int)room, WS_CLOSE_INTERNAL);
#ifndef WS_NO_SERVER
  else if (p->state == WS_STATE_CONNECTING && WS__SERVER(p))
    ws__refuse(c, 431, WS_EHANDSHAKE);
#endif
  else
    ws__fail(c, WS_ETOOBIG, WS_CLOSE_TOO_BIG);
  return 0;
}

/* see ws.h */
int ws_conn_on_readable(ws_conn *c) {
  struct ws__conn_priv *p;
  int rc = WS_OK, full = 0;
  WS_ASSERT(c != NULL &&
            "ws_conn_on_readable() called with a NULL connection");
  p = WS__P(c);
  WS_ASSERT(p->depth == 0 &&
            "ws_conn_on_readable() called from a callback of the same connection");
  if (WS__CLOSED(p)) return ws__done(c, WS_ECLOSED);
  ws__start(p);
  ws__begin_batch(p);
  WS__STACK_OUT(p)
  while (ws_conn_want_read(c)) {
    size_t n = 0, room = ws__in_take(c, ws__read_want(p));
    if (room == 0) break;
    rc = WS_EIO;
    if (p->cb->read) {
      p->depth++;
      rc = p->cb->read(c, p->in->d + p->in->rlen, room, &n, p->user);
      p->depth--;
    }
    if (rc == WS_EAGAIN) {
      rc = WS_OK;
      ws__in_idle(p); /* the room made for this read was not needed */
      break;
    }
    if (rc != WS_OK || n > room) {
      ws__set_closed(p, WS_CLOSE_ABNORMAL, WS_EIO);
      rc = WS_EIO;
      break;
    }
    if (n == 0) {
      ws__eof(c);
      break;
    }
    p->in->rlen += n;
    rc = ws__process(c);
    if (rc != WS_OK) break;
    /* What this read's bytes produced (pongs, replies sent from callbacks)
     * is written before the next read, one write per read: on a blocking
     * socket that read waits for the peer, which may be waiting for these
     * bytes. Once the transport has left some queued, the rest waits for
     * the end of the call. */
    if (!full && WS__QUEUED(p) > 0) {
      rc = ws__flush_held(c);
      if (rc != WS_OK) break;
      full = WS__QUEUED(p) > 0;
    }
  }
  return ws__end_batch(c, rc);
}

/* Copies bytes in and processes them: the body of ws_conn_feed(). */
static int ws__feed(ws_conn *c, const unsigned char *d, size_t len) {
  struct ws__conn_priv *p = WS__P(c);
  int rc = WS_OK;
  while (len > 0 && !WS__CLOSED(p) && !(p->flags & WS__F_FAILING)) {
    size_t take;
    if (p->flags & WS__F_CLOSE_RCVD) break; /* the rest is ignored */
    take = ws__in_take(c, WS__MIN(len, WS__MAX(ws__read_want(p), (size_t)WS_READ_CHUNK)));
    if (take == 0) break;
    take = WS__MIN(len, take);
    memcpy(p->in->d + p->in->rlen, d, take);
    p->in->rlen += take;
    d += take;
    len -= take;
    rc = ws__process(c);
    if (rc != WS_OK) break;
  }
  return rc;
}

/* The checks both feeds start with; WS_OK, and a batch begun, when the
 * bytes may be processed. NULL data (len 0) is the end of the stream, as
 * a read of 0 bytes. */
static int ws__feed_begin(ws_conn *c, const void *data, size_t len) {
  struct ws__conn_priv *p;
  WS_ASSERT(c != NULL && "ws_conn_feed[_inplace]() called with a NULL connection");
  p = WS__P(c);
  WS_ASSERT(p->depth == 0 &&
            "ws_conn_feed[_inplace]() called from a callback of the same connection");
  if (data == NULL && len > 0) return WS_EINVAL;
  if (WS__CLOSED(p)) return ws__done(c, WS_ECLOSED);
  if (p->state == WS_STATE_INIT) return WS_ESTATE;
  ws__start(p);
  if (data == NULL) {
    ws__eof(c);
    return ws__done(c, WS_ECLOSED);
  }
  ws__begin_batch(p);
  return WS_OK;
}

/* see ws.h */
int ws_conn_feed(ws_conn *c, const void *data, size_t len) {
  int rc = ws__feed_begin(c, data, len);
  if (rc != WS_OK) return rc;
  WS__STACK_OUT(WS__P(c))
  return ws__end_batch(c, ws__feed(c, (const unsigned char *)data, len));
}

/* No input held: no bytes, no frame or message in progress. */
static int ws__in_empty(const struct ws__conn_priv *p) {
  const struct ws__ibuf *b = p->in;
  return b == NULL || (b->rpos == b->rlen && b->mlen == 0 && b->op == 0 &&
                       b->msg_op == 0);
}

/* see ws.h */
size_t ws_conn_buffered(const ws_conn *c) {
  const struct ws__conn_priv *p = WS__P(c);
  if (ws__in_empty(p)) return 0;
  return p->in->rlen - p->in->rpos + p->in->mlen + (p->in->op != 0 || p->in->msg_op != 0);
}

/* see ws.h */
int ws_conn_feed_inplace(ws_conn *c, void *data, size_t len) {
  struct ws__conn_priv *p;
  unsigned char *d = (unsigned char *)data;
  size_t pos = 0;
  int rc = ws__feed_begin(c, data, len);
  if (rc != WS_OK) return rc;
  p = WS__P(c);
  WS__STACK_OUT(p)
  /* Whole frames, while nothing is held, are handled where they lie, by the
   * rules ws__frames() applies (a refused header fails here as it would
   * there). The first thing that is not a whole data frame with FIN or a
   * whole ping or pong (a fragment, a close, a frame still arriving) goes,
   * with the rest, through the copying path. */
  while (!WS_SMALL && pos < len && p->state == WS_STATE_OPEN &&
         !(p->flags & (WS__F_CLOSE_RCVD | WS__F_FAILING)) &&
         ws__in_empty(p)) {
    ws_frame f;
    size_t hl;
    unsigned char *pl;
    uint32_t st = WS_UTF8_INIT;
    rc = ws__frame_head(p, d + pos, len - pos, &f, &hl, NULL);
    if (rc != WS_OK) {
      if (rc == WS_EAGAIN) rc = WS_OK;
      else ws__frame_fail(c, rc);
      break;
    }
    if (f.len > (uint64_t)(len - pos - hl) || !f.fin ||
        f.opcode == WS_OP_CLOSE || f.rsv)
      break; /* a compressed message is inflated from the buffer */
    pl = d + pos + hl;
    if (f.opcode >= 8) {
      if ((rc = ws__control(c, &f, pl)) != WS_OK) break;
      pos += hl + (size_t)f.len;
      continue;
    }
    if ((rc = ws__payload(c, pl, (size_t)f.len, f.mask, 0, f.opcode, &st,
                          1)) != WS_OK)
      break;
    pos += hl + (size_t)f.len;
    if ((rc = ws__call_message(c, f.opcode, pl, (size_t)f.len, 1)) != WS_OK)
      break;
  }
  if (rc == WS_OK && pos < len) rc = ws__feed(c, d + pos, len - pos);
  return ws__end_batch(c, rc);
}

/* see ws.h */
int ws_conn_on_writable(ws_conn *c) {
  WS_ASSERT(c != NULL &&
            "ws_conn_on_writable() called with a NULL connection");
  WS_ASSERT(WS__P(c)->depth == 0 &&
            "ws_conn_on_writable() called from a callback of the same connection");
  if (WS__CLOSED(WS__P(c))) return ws__done(c, WS_ECLOSED);
  ws__start(WS__P(c));
  return ws__result(c, ws__flush(c));
}

/* see ws.h */
int ws_conn_tick(ws_conn *c, uint64_t now) {
  struct ws__conn_priv *p;
  WS_ASSERT(c != NULL && "ws_conn_tick() called with a NULL connection");
  p = WS__P(c);
  WS_ASSERT(p->depth == 0 &&
            "ws_conn_tick() called from a callback of the same connection");
  if (WS__CLOSED(p)) return ws__done(c, WS_ECLOSED);
  ws__start(p);
  /* One timer at a time: the state says which (the handshake while
   * connecting, the close once closing, a ping or the pong it waits for
   * while open). A timer armed later in a call wins. */
  {
    uint32_t ms = 0;
    int arm = 0;
    if (p->flags & WS__F_ARM_HS) arm = 1, ms = p->cfg->handshake_timeout_ms;
    if ((p->flags & WS__F_ARM_PING) && p->state == WS_STATE_OPEN)
      arm = 1, ms = p->cfg->ping_interval_ms;
    if (p->flags & WS__F_ARM_CLOSE) arm = 1, ms = p->cfg->close_timeout_ms;
    if (arm) p->t = ms ? now + ms : WS__NONE; /* 0: no such timeout */
  }
  p->flags &= ~(uint32_t)(WS__F_ARM_HS | WS__F_ARM_CLOSE | WS__F_ARM_PING);
  if (p->flags & WS__F_ARM_SLOW) {
    p->flags &= ~(uint32_t)WS__F_ARM_SLOW;
    if (p->out) p->out->stall = now + p->cfg->slow_reader_ms;
  }
  if (p->out && p->out->stall && now >= p->out->stall &&
      WS__QUEUED(p) > p->cfg->slow_reader_bytes) {
    /* A close frame behind the queue would never be read: closed now. */
    ws__set_closed(p, WS_CLOSE_POLICY, WS_ESLOW);
    return ws__result(c, WS_OK);
  }
  if (now < p->t) return ws__result(c, WS_OK);
  if (p->state == WS_STATE_OPEN &&
      !(p->flags & (WS__F_FAILING | WS__F_PONG_WAIT))) {
    /* A ping, then its pong awaited (the next ping follows the pong);
     * with the queue full, the ping waits one more interval. */
    p->t = now + p->cfg->ping_interval_ms; /* t: the next ping */
    if (WS__QUEUED(p) + WS_FRAME_HEADER_MAX <= p->cfg->max_queued &&
        ws__queue_frame(c, 1, WS_OP_PING, NULL, 0) == WS_OK) {
      if (p->cfg->pong_timeout_ms) {
        p->t = now + p->cfg->pong_timeout_ms; /* t: the pong's deadline */
        p->flags |= WS__F_PONG_WAIT;
      }
      return ws__result(c, ws__flush(c));
    }
  } else if (p->state == WS_STATE_INIT) {
    p->t = WS__NONE;
  } else if (p->flags & WS__F_CLOSE_RCVD) {
    /* Closing after the peer's close (never while connecting or open):
     * the peer did not end the stream in time; its close stands. */
    ws__set_closed(p, p->close_code, WS_OK);
  } else {
    /* The handshake, the close or a pong timed out. */
    ws__set_closed(p, WS_CLOSE_ABNORMAL, WS_ETIMEDOUT);
  }
  return ws__result(c, WS_OK);
}

/* see ws.h */
uint64_t ws_conn_next_deadline(const ws_conn *c) {
  const struct ws__conn_priv *p = WS__P(c);
  if (WS__CLOSED(p)) return WS__NONE;
  if (p->flags &
      (WS__F_ARM_HS | WS__F_ARM_CLOSE | WS__F_ARM_PING | WS__F_ARM_SLOW))
    return 0;
  if (p->out && p->out->stall && p->out->stall < p->t) return p->out->stall;
  return p->t;
}

/* see ws.h */
int ws_conn_want_write(const ws_conn *c) {
  const struct ws__conn_priv *p = WS__P(c);
  return WS__QUEUED(p) > 0 && !WS__CLOSED(p);
}

/* see ws.h */
size_t ws_conn_queued(const ws_conn *c) {
  return WS__QUEUED(WS__P(c));
}

/* see ws.h */
int ws_conn_state(const ws_conn *c) { return WS__P(c)->state; }

/* see ws.h */
int ws_conn_role(const ws_conn *c) { return WS__P(c)->role; }

/* see ws.h */
int ws_conn_error(const ws_conn *c) { return WS__P(c)->err; }

/* see ws.h */
int ws_conn_http_status(const ws_conn *c) { return WS__P(c)->http_status; }

/* see ws.h */
void *ws_conn_user(const ws_conn *c) { return WS__P(c)->user; }

/* see ws.h */
int ws_conn_deflate(const ws_conn *c) {
  return (WS__PMD(WS__P(c)) & WS__PMD_ON) ? 1 : 0;
}

/* see ws.h */
int ws_conn_deflate_fresh(const ws_conn *c) {
  unsigned m = WS__PMD(WS__P(c));
  if (!(m & WS__PMD_ON) || !(m & WS__PMD_TX_RESET) || WS__PMD_TX_BITS(m) < 9)
    return 0;
  return (int)WS__PMD_TX_BITS(m);
}

/* see ws.h */
void ws_conn_set_user(ws_conn *c, void *user) { WS__P(c)->user = user; }

/* see ws.h */
int ws_conn_cork(ws_conn *c, int on) {
  struct ws__conn_priv *p = WS__P(c);
  if (on) {
    p->flags |= WS__F_CORK;
    return WS_OK;
  }
  p->flags &= ~(uint32_t)WS__F_CORK;
  if (p->depth) return ws__flush(c);
  return ws__result(c, ws__flush(c));
}

#ifndef WS_NO_CLIENT
/* strlen(), 0 for NULL. */
static size_t ws__slen(const char *s) { return s ? strlen(s) : 0; }

/* see ws.h */
int ws_client_start(ws_conn *c, const ws_client_opts *o) {
  struct ws__conn_priv *p;
  size_t n, plen;
  uint8_t nonce[16];
  long room;
  int rc;
  WS_ASSERT(c != NULL && "ws_client_start() called with a NULL connection");
  p = WS__P(c);
  if (WS__SERVER(p) || p->state != WS_STATE_INIT) return WS_ESTATE;
  if (o == NULL) return WS_EINVAL;
  plen = ws__slen(o->protocols);
  if (plen > p->cfg->max_handshake / 2) return WS_EINVAL;
  rc = ws__random(c, nonce, 16);
  if (rc != WS_OK || WS__CLOSED(p)) /* freed from the callback */
    return ws__done(c, rc != WS_OK ? rc : WS_ECLOSED);
  {
    /* Room for the longest request these options can make (256 covers
     * the fixed text); a fixed queue has the room it has, and the writer
     * says whether the request fits it. */
    size_t i, need = 256 + plen + (o->deflate ? 32 + WS__PMD_TEXT_MAX : 0) +
                     ws__slen(o->host) + ws__slen(o->path) +
                     ws__slen(o->origin);
    for (i = 0; i < o->num_headers && o->headers; i++)
      need += o->headers[i].name_len + o->headers[i].value_len + 4;
    if ((rc = ws__out_room(p, WS__FIXED(p) ? 0 : need)) != WS_OK)
      return rc;
  }
  rc = ws_client_request_write(p->out->d + p->out->len, p->out->cap - p->out->len, o,
                               nonce, &n);
  if (rc != WS_OK) return rc == WS_ENOSPC ? WS_EFULL : rc;
  p->pmd = 0;
  if (o->deflate && !WS__FIXED(p) && ws__zs_usable(p->cfg)) {
    /* The offer goes in before the blank line that ends the head. */
    char text[WS__PMD_TEXT_MAX];
    size_t tl;
    uint16_t offer = ws__pmd_offer(&p->cfg->deflate, text, &tl);
    if (p->out->cap - p->out->len < n + 32 + tl) return WS_ENOSPC;
    memcpy(p->out->d + p->out->len + n - 2, "Sec-WebSocket-Extensions: ", 26);
    memcpy(p->out->d + p->out->len + n + 24, text, tl);
    memcpy(p->out->d + p->out->len + n + 24 + tl, "\r\n\r\n", 4);
    n += 26 + tl + 2;
    p->pmd = offer;
  }
  /* The nonce and the offered subprotocols stay at the front of the input
   * buffer until the response has been checked against them. */
  room = ws__in_room(p, 16 + plen + WS_READ_CHUNK);
  if (room < 0) return (int)room;
  if ((size_t)room < 16 + plen + 1) return WS_EFULL;
  memcpy(p->in->d, nonce, 16);
  if (plen) memcpy(p->in->d + 16, o->protocols, plen);
  p->in->proto_len = (uint16_t)plen;
  p->in->rpos = p->in->rlen = p->in->mstart = 16 + plen;
  p->out->len += n;
  p->state = WS_STATE_CONNECTING;
  p->flags |= WS__F_STARTED | WS__F_ARM_HS;
  return ws__result(c, ws__flush(c));
}
#endif /* WS_NO_CLIENT */

/* The zero-copy sends (ws_callbacks.writev, ws_send_encoded() to an idle
 * connection): a server's, and not in the small build, where every send is
 * copied into the queue and leaves through ws__flush() (the same bytes;
 * some 400 B less code on a Cortex-M4). */
#if !defined(WS_NO_SERVER) && !WS_SMALL
#define WS__DIRECT 1
#else
#define WS__DIRECT 0
#endif

#if WS__DIRECT
/* Writes what is queued, then hdr and d, in one call of the transport
 * (writev; write when d alone is to go: nothing queued, no header), and
 * queues only what it leaves.
 * A frame that left in part and cannot be queued breaks the stream: the
 * connection ends. */
static int ws__send_now(ws_conn *c, const unsigned char *hdr, size_t hl,
                        const unsigned char *d, size_t len) {
  struct ws__conn_priv *p = WS__P(c);
  size_t q = WS__QUEUED(p), w = 0, skip;
  ws_iovec iov[3];
  int n = 0, rc;
  if (q) {
    iov[n].base = p->out->d + p->out->head;
    iov[n++].len = q;
  }
  if (hl) {
    iov[n].base = hdr;
    iov[n++].len = hl;
  }
  iov[n].base = d;
  iov[n++].len = len;
  p->depth++;
  if (n == 1)
    rc = p->cb->write(c, d, len, &w, p->user);
  else
    rc = p->cb->writev(c, iov, n, &w, p->user);
  p->depth--;
  if (rc == WS_EAGAIN) rc = WS_OK, w = 0;
  if (rc != WS_OK || w > q + hl + len) {
    ws__set_closed(p, WS_CLOSE_ABNORMAL, WS_EIO);
    return WS_EIO;
  }
  if (q) {
    size_t t = WS__MIN(w, q);
    p->out->head += t;
    w -= t;
  }
  /* w bytes of header + payload are out: queue the rest. */
  skip = w;
  if (skip < hl + len) {
    rc = ws__out_room(p, hl + len - skip);
    if (rc != WS_OK) {
      if (skip == 0) return rc;
      ws__set_closed(p, WS_CLOSE_ABNORMAL, rc);
      return rc;
    }
    if (skip < hl) {
      memcpy(p->out->d + p->out->len, hdr + skip, hl - skip);
      p->out->len += hl - skip;
      skip = hl;
    }
    memcpy(p->out->d + p->out->len, d + (skip - hl), len - (skip - hl));
    p->out->len += len - (skip - hl);
  }
  return WS_OK;
}
#endif

/* Queues data frames for one send: the whole of it, or nothing. */

static int ws__send_data(ws_conn *c, int op, const void *data, size_t len,
                         int fin, int rsv1) {
  struct ws__conn_priv *p = WS__P(c);
  const unsigned char *d = (const unsigned char *)data;
  size_t fs = p->cfg->frame_size && len > p->cfg->frame_size
                  ? p->cfg->frame_size
                  : (len ? len : 1);
  size_t frames = fs >= len ? 1 : (len + fs - 1) / fs; /* no division: one */
  size_t total = len + frames * ws__hdr_size(WS__MIN(fs, len), WS__SERVER(p));
  size_t olen, i;
  int rc;
  if (total < len) return WS_ETOOBIG;
  if ((rc = ws__out_fits(p, total)) != WS_OK) return rc;
#if WS__DIRECT
  /* A server's large single-frame send leaves from the caller's buffer
   * (after what is queued), without a copy of what the transport takes. */
  if (len >= WS_DIRECT_MIN && frames == 1 && p->cb->writev &&
      WS__SERVER(p) &&
      !(p->flags & (WS__F_CORK | WS__F_FIXED)) && !WS__CLOSED(p)) {
    unsigned char hdr[WS_FRAME_HEADER_MAX];
    size_t hl = ws_frame_write(hdr, fin, op, len, NULL);
    if (rsv1) hdr[0] |= 0x40;
    return ws__send_now(c, hdr, hl, d, len);
  }
#endif
  /* Room up front for all of it (total bounds every frame's header), so the
   * frames below neither move the queue nor fail half-way for want of
   * space, and the buffer stays within what max_queued allows. */
  if ((rc = ws__out_room(p, total)) != WS_OK) return rc;
  olen = p->out->len; /* after ws__out_room(), which may move the queue down */
  for (i = 0; i < frames; i++) {
    size_t n = WS__MIN(fs, len - i * fs), at = p->out->len;
    if (!len) n = 0;
    rc = ws__put_frame(c, fin && i + 1 == frames, i == 0 ? op : WS_OP_CONT,
                       d + i * fs, n);
    if (rc != WS_OK) {
      p->out->len = olen; /* all or nothing */
      return rc;
    }
    if (rsv1 && i == 0) p->out->d[at] |= 0x40; /* a compressed message */
  }
  return WS_OK;
}

/* Sends a whole message compressed (RSV1 on its first frame): deflated with
 * a sync flush into a scratch buffer, less the 00 00 ff ff tail, then sent
 * as any message. Without context takeover the compressor lives only for
 * this call. A refused send (WS_EFULL, WS_ETOOBIG, WS_ENOMEM) leaves the
 * compressor reset, so the next message refers to nothing the peer did not
 * get. */
static int ws__send_deflated(ws_conn *c, int op, const void *data,
                             size_t len) {
  struct ws__conn_priv *p = WS__P(c);
  struct ws__zconn *z = ws__z_get(p);
  unsigned char *buf;
  size_t clen;
  int rc;
  if (z == NULL) return WS_ENOMEM;
  if (z->tx == NULL) {
    int bits = (int)WS__PMD_TX_BITS(p->pmd), mem = p->cfg->deflate.mem_level;
    z->tx = ws__zs_make(p, 0, bits, mem >= 1 && mem <= 9 ? mem : 8);
    if (z->tx == NULL) {
      ws__z_drop(p);
      return WS_ENOMEM;
    }
  }
  rc = ws__deflate_buf(z->tx, p->cfg, (const unsigned char *)data, len, 0,
                       &buf, &clen);
  if (rc == WS_OK) {
    rc = ws__send_data(c, op, buf, clen, 1, 1);
    ws__realloc(p, buf, 0);
  }
  if (rc != WS_OK && !WS__CLOSED(p)) ws__zs_reset(z->tx);
  if (p->pmd & WS__PMD_TX_RESET) {
    ws__zs_drop(p, z->tx);
    z->tx = NULL;
    ws__z_drop(p);
  }
  return rc;
}

static int ws__can_send(const struct ws__conn_priv *p) {
  if (p->state != WS_STATE_OPEN ||
      (p->flags & (WS__F_CLOSE_SENT | WS__F_FAILING)))
    return p->state == WS_STATE_CLOSED ? WS_ECLOSED : WS_ESTATE;
  return WS_OK;
}

static int ws__send_end(ws_conn *c, int rc) {
  /* A refused send returns its reason; one that broke the transport (a
   * direct write) ends the connection like a failed flush. */
  if (rc != WS_OK && !WS__CLOSED(WS__P(c))) return rc;
  if (rc == WS_OK) rc = ws__maybe_flush(c);
  if (WS__P(c)->depth) return rc;
  return ws__result(c, rc);
}

/* see ws.h */
int ws_send(ws_conn *c, int op, const void *data, size_t len) {
  struct ws__conn_priv *p;
  int rc;
  WS_ASSERT(c != NULL && "ws_send() called with a NULL connection");
  p = WS__P(c);
  if ((op != WS_OP_TEXT && op != WS_OP_BINARY) || (data == NULL && len > 0))
    return WS_EINVAL;
  if ((rc = ws__can_send(p)) != WS_OK) return rc;
  if (p->send_op) return WS_ESTATE; /* a fragmented send is open */
  if (op == WS_OP_TEXT) {
    uint32_t st = WS_UTF8_INIT;
    if (ws_utf8_check(&st, data, len, 1, NULL) != WS_OK) return WS_EUTF8;
  }
  if ((WS__PMD(p) & WS__PMD_ON) && len >= p->cfg->deflate.threshold &&
      WS__PMD_TX_BITS(p->pmd) >= 9)
    return ws__send_end(c, ws__send_deflated(c, op, data, len));
  return ws__send_end(c, ws__send_data(c, op, data, len, 1, 0));
}

/* see ws.h */
int ws_send_fragment(ws_conn *c, int op, const void *data, size_t len,
                     int fin) {
  struct ws__conn_priv *p;
  uint32_t st;
  int rc, frame_op, msg_op;
  WS_ASSERT(c != NULL && "ws_send_fragment() called with a NULL connection");
  p = WS__P(c);
  if (data == NULL && len > 0) return WS_EINVAL;
  if ((rc = ws__can_send(p)) != WS_OK) return rc;
  msg_op = p->send_op; /* the open fragmented send's opcode, or 0 */
  if (msg_op == 0) {
    if (op != WS_OP_TEXT && op != WS_OP_BINARY) return WS_EINVAL;
    msg_op = op;
    frame_op = op;
    st = WS_UTF8_INIT;
  } else {
    if (op != WS_OP_CONT && op != msg_op) return WS_EINVAL;
    frame_op = WS_OP_CONT;
    st = p->utf8_out;
  }
  if (msg_op == WS_OP_TEXT && ws_utf8_check(&st, data, len, fin, NULL) != WS_OK)
    return WS_EUTF8;
  rc = ws__send_data(c, frame_op, data, len, fin, 0);
  if (rc == WS_OK) {
    p->utf8_out = st;
    p->send_op = (uint8_t)(fin ? 0 : msg_op);
  }
  return ws__send_end(c, rc);
}

/* see ws.h */
int ws_send_encoded(ws_conn *c, const void *frame, size_t len) {
  struct ws__conn_priv *p;
  ws_frame f;
  size_t hl;
  int rc;
  WS_ASSERT(c != NULL && "ws_send_encoded() called with a NULL connection");
  p = WS__P(c);
  if (frame == NULL || !WS__SERVER(p)) return WS_EINVAL;
  /* RSV1 only on a compressed data frame (ws_deflate_encode()), to a
   * connection whose compressor keeps no context. */
  if (ws_frame_parse(frame, len, &f, &hl) != WS_OK || f.masked ||
      (f.rsv && (f.rsv != 4 || f.opcode >= 8 || !ws_conn_deflate_fresh(c))) ||
      hl + f.len != len || f.opcode == WS_OP_CLOSE || f.opcode == WS_OP_CONT ||
      !f.fin)
    return WS_EINVAL;
  if ((rc = ws__can_send(p)) != WS_OK) return rc;
  if (p->send_op && f.opcode < 8) return WS_ESTATE;
  if ((rc = ws__out_fits(p, len)) != WS_OK) return rc;
  /* Nothing queued, nothing holding output and no input being processed
   * (a publish to many): write from the caller's bytes and queue only what
   * the transport leaves. */
#if WS__DIRECT
  if (WS__QUEUED(p) == 0 && p->cb->write && !p->depth &&
      !(p->flags & (WS__F_CORK | WS__F_INPUT | WS__F_HOLD | WS__F_FIXED)))
    return ws__send_end(c, ws__send_now(c, NULL, 0, frame, len));
#endif
  if ((rc = ws__out_room(p, len)) != WS_OK) return rc;
  memcpy(p->out->d + p->out->len, frame, len);
  p->out->len += len;
  return ws__send_end(c, WS_OK);
}

static int ws__send_control(ws_conn *c, int op, const void *data, size_t len) {
  struct ws__conn_priv *p;
  int rc;
  WS_ASSERT(c != NULL &&
            "ws_ping() or ws_pong() called with a NULL connection");
  p = WS__P(c);
  if (len > WS_CONTROL_MAX || (data == NULL && len > 0)) return WS_EINVAL;
  if ((rc = ws__can_send(p)) != WS_OK) return rc;
  if ((rc = ws__out_fits(p, len + WS_FRAME_HEADER_MAX)) != WS_OK) return rc;
  return ws__send_end(c, ws__queue_frame(c, 1, op, data, len));
}

/* see ws.h */
int ws_ping(ws_conn *c, const void *data, size_t len) {
  return ws__send_control(c, WS_OP_PING, data, len);
}

/* see ws.h */
int ws_pong(ws_conn *c, const void *data, size_t len) {
  return ws__send_control(c, WS_OP_PONG, data, len);
}

/* see ws.h */
int ws_close(ws_conn *c, int code, const char *reason, size_t reason_len) {
  struct ws__conn_priv *p;
  uint32_t st = WS_UTF8_INIT;
  int rc;
  WS_ASSERT(c != NULL && "ws_close() called with a NULL connection");
  p = WS__P(c);
  if ((code != 0 && !ws_close_code_valid((unsigned)code)) ||
      (code == 0 && reason_len > 0) || reason_len > WS_CONTROL_MAX - 2 ||
      (reason == NULL && reason_len > 0) ||
      ws_utf8_check(&st, reason, reason_len, 1, NULL) != WS_OK)
    return WS_EINVAL;
  if ((rc = ws__can_send(p)) != WS_OK) return rc;
  p->state = WS_STATE_CLOSING;
  rc = ws__queue_close(c, code, reason, reason_len);
  if (rc != WS_OK) {
    ws__set_closed(p, WS_CLOSE_ABNORMAL, rc);
    if (p->depth) return rc;
    return ws__done(c, rc);
  }
  return ws__send_end(c, WS_OK);
}

/* see ws.h */
int ws_conn_abort(ws_conn *c, int err) {
  struct ws__conn_priv *p;
  WS_ASSERT(c != NULL && "ws_conn_abort() called with a NULL connection");
  p = WS__P(c);
  if (!(p->flags & WS__F_STARTED)) return WS_ESTATE;
  ws__set_closed(p, WS_CLOSE_ABNORMAL, err < 0 ? err : WS_EIO);
  if (p->depth) return WS_OK; /* on_close runs when the outer call returns */
  return ws__done(c, WS_OK);
}

/* see ws.h */
void ws_conn_free(ws_conn *c) {
  struct ws__conn_priv *p;
  if (c == NULL) return;
  p = WS__P(c);
  /* As an abort; inside a callback of c, the outermost call finishes it
   * (ws__done): the stack and the buffers are still in use there. */
  ws__set_closed(p, WS_CLOSE_ABNORMAL, WS_ECLOSED);
  p->flags |= WS__F_FREE;
  if (p->depth == 0) ws__done(c, WS_OK);
}
