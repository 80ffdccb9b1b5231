/*
 * floor_server.c - a WebSocket echo server without any library: the least
 * user-space work an echo server can do, so that the benchmark report can
 * show what the kernel alone costs for each load and how close each
 * library comes to that. Linux, libc only.
 *
 *   floor_server -p PORT [--uring]     listens on 127.0.0.1:PORT
 *   floor_server --uring --probe       exit 0 if this kernel gives us the
 *                                      io_uring used by --uring, else say
 *                                      why and exit 1
 *
 * Default: one thread, level-triggered epoll; one recv per readiness event
 * into a shared 256 KiB buffer, handled in place when nothing is held for
 * the connection. --uring: one io_uring driven by raw system calls (no
 * liburing): multishot accept, multishot recv into a ring of provided
 * buffers, IORING_OP_SEND, one io_uring_enter per turn. SIGTERM or SIGINT
 * ends it with status 0.
 *
 * What it does: answers the opening handshake (finds Sec-WebSocket-Key in
 * any case, replies 101); sends every data frame back unmasked with its
 * first byte (FIN and opcode) unchanged, so a fragmented message comes back
 * as the same fragments; answers a ping with a pong, drops pongs; sends a
 * close frame back and then closes.
 *
 * What it leaves out on purpose, because it is a floor and not a server to
 * use: no UTF-8 validation of text, no check of the request line or of the
 * other handshake headers, of control-frame rules, of continuation order or
 * of close codes. What it cannot go past (an unmasked frame, a frame over
 * 16 MiB, a request over 8 KiB or too short to be one) closes the
 * connection without a close frame.
 *
 * A reply is unmasked and moved in one pass: over the input it answers in
 * the epoll loop (a reply is 4 bytes shorter than its frame: no masking
 * key), from the provided buffer into the connection's reply buffer with
 * --uring (the provided buffer goes back to the kernel at once). All the
 * replies to one read leave in one send. A frame split across reads is held
 * (copied, with --uring) until it is whole.
 */
#define _GNU_SOURCE
#include "bench_common.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#if defined(__has_include)
#if __has_include(<linux/io_uring.h>)
#include <linux/io_uring.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#if defined(IORING_SETUP_DEFER_TASKRUN) && defined(IORING_RECV_MULTISHOT) && \
    defined(__NR_io_uring_setup)
#define FLOOR_URING 1
#endif
#endif
#endif

#define RBUF (256 * 1024)            /* the shared read buffer (epoll) */
#define MAX_FRAME ((uint64_t)16 << 20)
#define MAX_REQUEST 8192
#define RESPONSE_LEN 129             /* the 101 response below */

static const char RESPONSE[] =
    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
    "Connection: Upgrade\r\nSec-WebSocket-Accept: ";

typedef struct buf {
  unsigned char *p;
  size_t len, cap;
} buf;

typedef struct conn {
  int fd;
  int open;        /* the handshake is done */
  int closing;     /* close once the replies are out (close frame or error) */
  size_t want;     /* the held request or frame needs at least this many bytes */
  buf in;          /* held input: a partial request or frame */
  buf out;         /* epoll: what the socket did not take */
  size_t outoff;
  /* --uring */
  buf ob[2];       /* replies: ob[cur] fills while the other is being sent */
  int cur, sidx, sending, dying, dirty, recv_armed, ops;
  size_t soff;
} conn;

static int g_lfd;
static volatile sig_atomic_t g_stop;   /* SIGTERM or SIGINT: return 0 */

static void on_stop(int sig) {
  (void)sig;
  g_stop = 1;
}

static void die(const char *what) {
  fprintf(stderr, "floor_server: %s: %s\n", what, strerror(errno));
  exit(1);
}

static void buf_reserve(buf *b, size_t more) {
  size_t cap;
  if (b->len + more <= b->cap) return;
  cap = b->cap * 2;
  if (cap < b->len + more) cap = b->len + more;
  if (cap < 64) cap = 64;   /* small: an idle connection holds little */
  if (!(b->p = realloc(b->p, cap))) die("realloc");
  b->cap = cap;
}

static void buf_put(buf *b, const unsigned char *p, size_t n) {
  buf_reserve(b, n);
  memcpy(b->p + b->len, p, n);
  b->len += n;
}

/* d[i] = s[i] ^ key[i % 4]; d may be s or lie at least 4 bytes before it
 * (every block is loaded before anything is stored over it). */
static void unmask_move(unsigned char *d, const unsigned char *s, size_t n,
                        const unsigned char key[4]) {
  size_t i = 0;
  uint32_t k4;
  uint64_t k8;
  memcpy(&k4, key, 4);
#ifdef __SSE2__
  {
    __m128i k = _mm_set1_epi32((int)k4);
    for (; i + 64 <= n; i += 64) {
      __m128i a = _mm_loadu_si128((const __m128i *)(s + i));
      __m128i b = _mm_loadu_si128((const __m128i *)(s + i + 16));
      __m128i c = _mm_loadu_si128((const __m128i *)(s + i + 32));
      __m128i e = _mm_loadu_si128((const __m128i *)(s + i + 48));
      _mm_storeu_si128((__m128i *)(d + i), _mm_xor_si128(a, k));
      _mm_storeu_si128((__m128i *)(d + i + 16), _mm_xor_si128(b, k));
      _mm_storeu_si128((__m128i *)(d + i + 32), _mm_xor_si128(c, k));
      _mm_storeu_si128((__m128i *)(d + i + 48), _mm_xor_si128(e, k));
    }
    for (; i + 16 <= n; i += 16) {
      __m128i a = _mm_loadu_si128((const __m128i *)(s + i));
      _mm_storeu_si128((__m128i *)(d + i), _mm_xor_si128(a, k));
    }
  }
#endif
  memcpy(&k8, key, 4);
  memcpy((unsigned char *)&k8 + 4, key, 4);
  for (; i + 8 <= n; i += 8) {
    uint64_t v;
    memcpy(&v, s + i, 8);
    v ^= k8;
    memcpy(d + i, &v, 8);
  }
  for (; i < n; i++) d[i] = s[i] ^ key[i & 3];
}

/* Handles in[0..n) of c: answers the handshake and every whole frame there,
 * writing the replies to out[0..*wlen). out may be in: no reply is longer
 * than what it answers, nor written past it. Returns the bytes used; the
 * rest is a partial request or frame, which needs c->want bytes at least. */
static size_t handle(conn *c, unsigned char *in, size_t n, unsigned char *out,
                     size_t *wlen) {
  size_t s = 0, w = 0;
  *wlen = 0;
  if (c->closing) return n;
  if (!c->open) {
    unsigned char *e = memmem(in, n, "\r\n\r\n", 4);
    const char *key;
    size_t kl, hl;
    char acc[29];
    if (!e) {
      if (n > MAX_REQUEST) c->closing = 1;
      c->want = n + 1;
      return c->closing ? n : 0;
    }
    hl = (size_t)(e - in) + 4;
    key = bench_header((const char *)in, hl, "Sec-WebSocket-Key", &kl);
    /* A request with the headers RFC 6455 requires is longer than our
     * response, which can therefore be written over it. */
    if (!key || hl < RESPONSE_LEN) {
      c->closing = 1;
      return n;
    }
    bench_accept(key, kl, acc);
    memcpy(out, RESPONSE, sizeof RESPONSE - 1);
    memcpy(out + sizeof RESPONSE - 1, acc, 28);
    memcpy(out + sizeof RESPONSE - 1 + 28, "\r\n\r\n", 4);
    w = RESPONSE_LEN;
    s = hl;
    c->open = 1;
  }
  for (;;) {
    unsigned char *h = in + s, *dst, key[4], b0;
    size_t avail = n - s, hl = 2;
    uint64_t len;
    int op;
    if (avail < 2) { c->want = 2; break; }
    if (!(h[1] & 0x80)) { c->closing = 1; break; }   /* not masked */
    len = h[1] & 0x7F;
    if (len == 126) {
      if (avail < 4) { c->want = 4; break; }
      len = (uint64_t)h[2] << 8 | h[3];
      hl = 4;
    } else if (len == 127) {
      int i;
      if (avail < 10) { c->want = 10; break; }
      for (len = 0, i = 0; i < 8; i++) len = len << 8 | h[2 + i];
      hl = 10;
    }
    if (len > MAX_FRAME) { c->closing = 1; break; }
    if (avail < hl + 4 + len) { c->want = hl + 4 + (size_t)len; break; }
    b0 = h[0];
    op = b0 & 0x0F;
    memcpy(key, h + hl, 4);
    s += hl + 4 + (size_t)len;
    if (op == 10) continue;                    /* a pong: no answer */
    if (op == 9) b0 = (unsigned char)((b0 & 0xF0) | 10);   /* ping: pong */
    dst = out + w;
    memmove(dst, h, hl);                       /* the length as it came */
    dst[0] = b0;
    dst[1] &= 0x7F;                            /* no mask */
    unmask_move(dst + hl, h + hl + 4, (size_t)len, key);
    w += hl + (size_t)len;
    if (op == 8) { c->closing = 1; break; }
  }
  *wlen = w;
  return c->closing ? n : s;
}

/* ---- epoll ------------------------------------------------------------- */

static int g_ep;
static unsigned char *g_rbuf;

static void ep_set(conn *c, unsigned ev) {
  struct epoll_event e;
  e.events = ev;
  e.data.ptr = c;
  if (epoll_ctl(g_ep, EPOLL_CTL_MOD, c->fd, &e) < 0) die("epoll_ctl");
}

static void ep_free(conn *c) {
  close(c->fd);
  free(c->in.p);
  free(c->out.p);
  free(c);
}

/* Sends p[0..n) and queues what the socket does not take; then the
 * connection waits for EPOLLOUT alone (reads resume once all is out).
 * -1: the connection failed. */
static int ep_send(conn *c, const unsigned char *p, size_t n) {
  ssize_t r;
  if (c->out.len) {               /* not reached: no reads while queued */
    buf_put(&c->out, p, n);
    return 0;
  }
  do r = send(c->fd, p, n, MSG_NOSIGNAL);
  while (r < 0 && errno == EINTR);
  if (r < 0) {
    if (errno != EAGAIN && errno != EWOULDBLOCK) return -1;
    r = 0;
  }
  if ((size_t)r < n) {
    buf_put(&c->out, p + r, n - (size_t)r);
    c->outoff = 0;
    ep_set(c, EPOLLOUT);
  }
  return 0;
}

/* EPOLLOUT: sends what is queued. -1: close the connection. */
static int ep_flush(conn *c) {
  ssize_t r = send(c->fd, c->out.p + c->outoff, c->out.len - c->outoff, MSG_NOSIGNAL);
  if (r < 0) return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? 0 : -1;
  c->outoff += (size_t)r;
  if (c->outoff < c->out.len) return 0;
  c->out.len = c->outoff = 0;
  if (c->closing) return -1;
  ep_set(c, EPOLLIN);
  return 0;
}

/* EPOLLIN: one recv, then everything whole is answered. -1: close. */
static int ep_read(conn *c) {
  size_t have = c->in.len, n, used, w;
  unsigned char *p;
  ssize_t r;
  if (!have) {
    p = g_rbuf;
    r = recv(c->fd, p, RBUF, 0);
  } else {
    size_t room = c->want > have ? c->want - have : 0;
    buf_reserve(&c->in, room < 65536 ? 65536 : room);
    p = c->in.p;
    r = recv(c->fd, p + have, c->in.cap - have, 0);
  }
  if (r <= 0) return r < 0 && (errno == EAGAIN || errno == EINTR) ? 0 : -1;
  n = have + (size_t)r;
  used = handle(c, p, n, p, &w);
  if (w && ep_send(c, p, w) < 0) return -1;
  if (p == g_rbuf) {
    if (used < n) buf_put(&c->in, p + used, n - used);
  } else {
    memmove(c->in.p, c->in.p + used, n - used);
    c->in.len = n - used;
  }
  return c->closing && !c->out.len ? -1 : 0;
}

static void run_epoll(void) {
  struct epoll_event ev, evs[512];
  if (!(g_rbuf = malloc(RBUF))) die("malloc");
  memset(g_rbuf, 0, RBUF);   /* resident from the start, like the rest */
  if ((g_ep = epoll_create1(EPOLL_CLOEXEC)) < 0) die("epoll_create1");
  ev.events = EPOLLIN;
  ev.data.ptr = NULL;
  if (epoll_ctl(g_ep, EPOLL_CTL_ADD, g_lfd, &ev) < 0) die("epoll_ctl");
  for (;;) {
    int n = epoll_wait(g_ep, evs, 512, -1), i;
    if (g_stop) return;
    if (n < 0) {
      if (errno == EINTR) continue;
      die("epoll_wait");
    }
    for (i = 0; i < n; i++) {
      conn *c = evs[i].data.ptr;
      if (!c) {
        int fd = accept4(g_lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) continue;
        if (!(c = calloc(1, sizeof *c))) die("calloc");
        c->fd = fd;
        ev.events = EPOLLIN;
        ev.data.ptr = c;
        if (epoll_ctl(g_ep, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl");
        continue;
      }
      if (c->out.len ? ep_flush(c) : ep_read(c)) ep_free(c);
    }
  }
}

/* ---- io_uring ---------------------------------------------------------- */
#ifdef FLOOR_URING

/* Provided buffers, 8 MiB in all: 64 KiB each (with 32 KiB ones, 64 KiB
 * messages took more recvs and more kernel time here), 128 of them so that
 * a turn over a few hundred connections rarely runs out (ENOBUFS). */
#define NBUF 128                 /* a power of 2 */
#define BSZ (64 * 1024)
#define BGID 0
enum { K_ACCEPT, K_RECV, K_SEND, K_OTHER };   /* user_data's low 2 bits */

static int g_ring;
static unsigned *g_sq_head, *g_sq_tail, *g_sq_mask, *g_sq_array, g_sq_entries;
static unsigned *g_cq_head, *g_cq_tail, *g_cq_mask;
static struct io_uring_sqe *g_sqes;
static struct io_uring_cqe *g_cqes;
static unsigned g_tail, g_to_submit;
static struct io_uring_buf_ring *g_br;
static unsigned char *g_bufs;
static unsigned short g_br_tail;
static conn **g_dirty;
static size_t g_ndirty, g_dirty_cap;

static int ur_enter(unsigned submit, unsigned min, unsigned flags) {
  return (int)syscall(__NR_io_uring_enter, g_ring, submit, min, flags, NULL, 0);
}

/* Sets up the ring and the provided buffers. 0 ok, -1 with why printed. */
static int ur_init(void) {
  struct io_uring_params p;
  struct io_uring_buf_reg reg;
  size_t sqsz, cqsz;
  unsigned char *sq, *cq;
  unsigned i;
  memset(&p, 0, sizeof p);
  p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
  g_ring = (int)syscall(__NR_io_uring_setup, 4096, &p);
  if (g_ring < 0 && errno == EINVAL) {   /* a kernel before 6.1 */
    fprintf(stderr, "floor_server: io_uring without SINGLE_ISSUER|DEFER_TASKRUN\n");
    memset(&p, 0, sizeof p);
    g_ring = (int)syscall(__NR_io_uring_setup, 4096, &p);
  }
  if (g_ring < 0) {
    fprintf(stderr, "floor_server: io_uring_setup: %s\n", strerror(errno));
    return -1;
  }
  sqsz = p.sq_off.array + p.sq_entries * sizeof(unsigned);
  cqsz = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
  if (p.features & IORING_FEAT_SINGLE_MMAP) {
    if (cqsz > sqsz) sqsz = cqsz;
    cqsz = sqsz;
  }
  sq = mmap(NULL, sqsz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, g_ring,
            IORING_OFF_SQ_RING);
  cq = (p.features & IORING_FEAT_SINGLE_MMAP)
           ? sq
           : mmap(NULL, cqsz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE,
                  g_ring, IORING_OFF_CQ_RING);
  g_sqes = mmap(NULL, p.sq_entries * sizeof(struct io_uring_sqe), PROT_READ | PROT_WRITE,
                MAP_SHARED | MAP_POPULATE, g_ring, IORING_OFF_SQES);
  if (sq == MAP_FAILED || cq == MAP_FAILED || g_sqes == MAP_FAILED) {
    fprintf(stderr, "floor_server: io_uring mmap: %s\n", strerror(errno));
    return -1;
  }
  g_sq_head = (unsigned *)(sq + p.sq_off.head);
  g_sq_tail = (unsigned *)(sq + p.sq_off.tail);
  g_sq_mask = (unsigned *)(sq + p.sq_off.ring_mask);
  g_sq_array = (unsigned *)(sq + p.sq_off.array);
  g_sq_entries = p.sq_entries;
  g_cq_head = (unsigned *)(cq + p.cq_off.head);
  g_cq_tail = (unsigned *)(cq + p.cq_off.tail);
  g_cq_mask = (unsigned *)(cq + p.cq_off.ring_mask);
  g_cqes = (struct io_uring_cqe *)(cq + p.cq_off.cqes);
  g_tail = *g_sq_tail;
  /* The provided buffers, resident from the start (like the epoll side's
   * read buffer), so that the idle mode counts connections only. */
  g_br = mmap(NULL, NBUF * sizeof(struct io_uring_buf), PROT_READ | PROT_WRITE,
              MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
  g_bufs = mmap(NULL, (size_t)NBUF * BSZ, PROT_READ | PROT_WRITE,
                MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
  if (g_br == MAP_FAILED || g_bufs == MAP_FAILED) {
    fprintf(stderr, "floor_server: mmap: %s\n", strerror(errno));
    return -1;
  }
  memset(&reg, 0, sizeof reg);
  reg.ring_addr = (uint64_t)(uintptr_t)g_br;
  reg.ring_entries = NBUF;
  reg.bgid = BGID;
  if (syscall(__NR_io_uring_register, g_ring, IORING_REGISTER_PBUF_RING, &reg, 1) < 0) {
    fprintf(stderr, "floor_server: IORING_REGISTER_PBUF_RING: %s\n", strerror(errno));
    return -1;
  }
  for (i = 0; i < NBUF; i++) {
    struct io_uring_buf *b = &g_br->bufs[i];
    b->addr = (uint64_t)(uintptr_t)(g_bufs + (size_t)i * BSZ);
    b->len = BSZ;
    b->bid = (unsigned short)i;
  }
  g_br_tail = NBUF;
  __atomic_store_n(&g_br->tail, g_br_tail, __ATOMIC_RELEASE);
  return 0;
}

/* Gives buffer bid back to the kernel (seen at the next tail store). */
static void ur_give(unsigned bid) {
  struct io_uring_buf *b = &g_br->bufs[g_br_tail & (NBUF - 1)];
  b->addr = (uint64_t)(uintptr_t)(g_bufs + (size_t)bid * BSZ);
  b->len = BSZ;
  b->bid = (unsigned short)bid;
  g_br_tail++;
}

/* Submits what is queued now: only when the submission queue is full. */
static void ur_submit_now(void) {
  __atomic_store_n(g_sq_tail, g_tail, __ATOMIC_RELEASE);
  while (g_to_submit) {
    int r = ur_enter(g_to_submit, 0, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) die("io_uring_enter (submit)");
    g_to_submit -= (unsigned)r;
  }
}

static struct io_uring_sqe *ur_sqe(int kind, conn *c) {
  struct io_uring_sqe *s;
  unsigned i;
  if (g_tail - __atomic_load_n(g_sq_head, __ATOMIC_ACQUIRE) >= g_sq_entries)
    ur_submit_now();
  i = g_tail++ & *g_sq_mask;
  g_sq_array[i] = i;
  s = &g_sqes[i];
  memset(s, 0, sizeof *s);
  s->user_data = (uint64_t)(uintptr_t)c | (uint64_t)kind;
  g_to_submit++;
  if (c) c->ops++;
  return s;
}

static void ur_arm_accept(void) {
  struct io_uring_sqe *s = ur_sqe(K_ACCEPT, NULL);
  s->opcode = IORING_OP_ACCEPT;
  s->fd = g_lfd;
  s->ioprio = IORING_ACCEPT_MULTISHOT;
  s->accept_flags = SOCK_CLOEXEC;
}

static void ur_arm_recv(conn *c) {
  struct io_uring_sqe *s = ur_sqe(K_RECV, c);
  s->opcode = IORING_OP_RECV;
  s->fd = c->fd;
  s->ioprio = IORING_RECV_MULTISHOT;
  s->flags = IOSQE_BUFFER_SELECT;
  s->buf_group = BGID;
  c->recv_armed = 1;
}

/* Sends ob[sidx] from soff on. */
static void ur_send(conn *c) {
  struct io_uring_sqe *s = ur_sqe(K_SEND, c);
  s->opcode = IORING_OP_SEND;
  s->fd = c->fd;
  s->addr = (uint64_t)(uintptr_t)(c->ob[c->sidx].p + c->soff);
  s->len = (unsigned)(c->ob[c->sidx].len - c->soff);
  s->msg_flags = MSG_NOSIGNAL;
  c->sending = 1;
}

static void ur_mark(conn *c) {
  if (c->dirty) return;
  if (g_ndirty == g_dirty_cap) {
    g_dirty_cap = g_dirty_cap ? g_dirty_cap * 2 : 1024;
    if (!(g_dirty = realloc(g_dirty, g_dirty_cap * sizeof *g_dirty))) die("realloc");
  }
  g_dirty[g_ndirty++] = c;
  c->dirty = 1;
}

/* Ends c: a shutdown ends its multishot recv; it is closed and freed at the
 * end of a turn in which nothing in flight refers to it any more (the
 * caller marks it). */
static void ur_kill(conn *c) {
  if (c->dying) return;
  c->dying = 1;
  if (c->recv_armed) {
    struct io_uring_sqe *s = ur_sqe(K_OTHER, c);
    s->opcode = IORING_OP_SHUTDOWN;
    s->fd = c->fd;
    s->len = SHUT_RDWR;
  }
}

/* n bytes arrived for c: the replies go to ob[cur]. What completes a held
 * frame is appended to it (no more than it needs); the rest is answered
 * where it lies, and only a partial frame at its end is held. */
static void ur_input(conn *c, const unsigned char *d, size_t n) {
  buf *o = &c->ob[c->cur];
  size_t used, w, len0 = o->len;
  while (n && !c->closing) {
    size_t take = n;
    if (!c->in.len) {
      buf_reserve(o, n);
      used = handle(c, (unsigned char *)d, n, o->p + o->len, &w);
      o->len += w;
      if (used < n) buf_put(&c->in, d + used, n - used);
      break;
    }
    if (c->open && c->want > c->in.len && c->want - c->in.len < n)
      take = c->want - c->in.len;
    buf_put(&c->in, d, take);
    d += take, n -= take;
    buf_reserve(o, c->in.len);
    used = handle(c, c->in.p, c->in.len, o->p + o->len, &w);
    o->len += w;
    memmove(c->in.p, c->in.p + used, c->in.len - used);
    c->in.len -= used;
  }
  if (o->len != len0 || c->closing) ur_mark(c);
}

static void ur_cqe(const struct io_uring_cqe *e) {
  int kind = (int)(e->user_data & 3), more = !!(e->flags & IORING_CQE_F_MORE);
  conn *c = (conn *)(uintptr_t)(e->user_data & ~(uint64_t)3);
  if (kind == K_ACCEPT) {
    if (e->res >= 0) {
      if (!(c = calloc(1, sizeof *c))) die("calloc");
      c->fd = e->res;
      ur_arm_recv(c);
    }
    if (!more) ur_arm_accept();
    return;
  }
  if (!c) return;   /* a close */
  if (kind == K_RECV) {
    if (e->res > 0 && (e->flags & IORING_CQE_F_BUFFER)) {
      unsigned bid = e->flags >> IORING_CQE_BUFFER_SHIFT;
      if (!c->dying) ur_input(c, g_bufs + (size_t)bid * BSZ, (size_t)e->res);
      ur_give(bid);
    }
    if (more) return;
    c->recv_armed = 0;
    c->ops--;
    if (e->res == -EINVAL) {
      fprintf(stderr, "floor_server: multishot recv: %s\n", strerror(EINVAL));
      exit(1);
    }
    if (!c->dying && (e->res > 0 || e->res == -ENOBUFS)) ur_arm_recv(c);
    else ur_kill(c);   /* end of stream, an error, or our shutdown */
    ur_mark(c);
    return;
  }
  c->ops--;
  if (kind == K_SEND) {
    size_t left = c->ob[c->sidx].len - c->soff;
    c->sending = 0;
    if (e->res <= 0) ur_kill(c);
    else if (!c->dying) {
      c->soff += (size_t)e->res;
      if ((size_t)e->res < left) {
        ur_send(c);          /* a short send: the rest */
        return;
      }
      c->ob[c->sidx].len = 0;
    }
  }
  ur_mark(c);
}

/* The end of a turn: sends what each connection has, ends and frees. */
static void ur_flush_dirty(void) {
  size_t i;
  for (i = 0; i < g_ndirty; i++) {
    conn *c = g_dirty[i];
    c->dirty = 0;
    if (!c->dying && !c->sending) {
      if (c->ob[c->cur].len) {
        c->sidx = c->cur;
        c->soff = 0;
        c->cur ^= 1;
        ur_send(c);
      } else if (c->closing) {
        ur_kill(c);
      }
    }
    if (c->dying && !c->ops) {
      struct io_uring_sqe *s = ur_sqe(K_OTHER, NULL);
      s->opcode = IORING_OP_CLOSE;
      s->fd = c->fd;
      free(c->in.p);
      free(c->ob[0].p);
      free(c->ob[1].p);
      free(c);
    }
  }
  g_ndirty = 0;
}

static void run_uring(void) {
  ur_arm_accept();
  for (;;) {
    unsigned h, t;
    int r;
    __atomic_store_n(g_sq_tail, g_tail, __ATOMIC_RELEASE);
    r = ur_enter(g_to_submit, 1, IORING_ENTER_GETEVENTS);
    /* (valgrind holds a signal back until a completion ends the wait) */
    if (g_stop) return;
    if (r < 0 && errno != EINTR && errno != EAGAIN && errno != EBUSY) die("io_uring_enter");
    if (r > 0) g_to_submit -= (unsigned)r;
    h = *g_cq_head;
    t = __atomic_load_n(g_cq_tail, __ATOMIC_ACQUIRE);
    for (; h != t; h++) ur_cqe(&g_cqes[h & *g_cq_mask]);
    __atomic_store_n(g_cq_head, h, __ATOMIC_RELEASE);
    __atomic_store_n(&g_br->tail, g_br_tail, __ATOMIC_RELEASE);
    ur_flush_dirty();
  }
}

#endif /* FLOOR_URING */

/* ---- main -------------------------------------------------------------- */

static void usage(void) {
  fprintf(stderr, "usage: floor_server -p PORT [--uring] | floor_server --uring --probe\n");
  exit(2);
}

int main(int argc, char **argv) {
  struct sockaddr_in a;
  struct rlimit rl;
  int port = 0, uring = 0, probe = 0, one = 1, i;
  for (i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "-p") && i + 1 < argc) port = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--uring")) uring = 1;
    else if (!strcmp(argv[i], "--probe")) probe = 1;
    else usage();
  }
#ifdef FLOOR_URING
  if (probe) return ur_init() < 0 ? 1 : 0;
#else
  if (probe || uring) {
    fprintf(stderr, "floor_server: built without io_uring (<linux/io_uring.h> too old or missing)\n");
    return 1;
  }
#endif
  if (port <= 0 || port > 65535) usage();
  signal(SIGPIPE, SIG_IGN);
  {
    /* Not restarted: the wait returns EINTR and the loop returns. */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
  }
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  /* io_uring waits for readiness itself: its listener stays blocking. */
  g_lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | (uring ? 0 : SOCK_NONBLOCK), 0);
  if (g_lfd < 0) die("socket");
  setsockopt(g_lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  setsockopt(g_lfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);   /* inherited */
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_port = htons((uint16_t)port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(g_lfd, (struct sockaddr *)&a, sizeof a) < 0) die("bind");
  if (listen(g_lfd, 4096) < 0) die("listen");
#ifdef FLOOR_URING
  if (uring) {
    if (ur_init() < 0) return 1;
    run_uring();
    return 0;
  }
#endif
  run_epoll();
  return 0;
}
