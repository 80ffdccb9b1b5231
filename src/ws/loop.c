/* loop.c - part 8, layer 2: the event loop: sockets, timers, topics, posts from other threads.
 * Uses ws.h and config.h only: `make check-layers` compiles it alone with each backend. */
#include "config.h"

#if !defined(WS_NO_LOOP) && WS__HAVE_NET

#include <errno.h>
#include <fcntl.h>
#ifndef _WIN32 /* loop_win.c includes Winsock instead */
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <sys/socket.h>
#endif
#ifdef __linux__
#include <sys/mman.h> /* mremap(): the connections' large buffers */
#include <sys/ioctl.h> /* TIOCOUTQ: a lingering socket's unacknowledged bytes */
#endif
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#if !defined(WS_LOOP_POLL) && !defined(WS_LOOP_EPOLL) && !defined(WS_LOOP_KQUEUE)
#if defined(__linux__)
#define WS_LOOP_EPOLL 1
#elif defined(__APPLE__) || defined(__FreeBSD__) || defined(__OpenBSD__) || \
    defined(__NetBSD__) || defined(__DragonFly__)
#define WS_LOOP_KQUEUE 1
#else
#define WS_LOOP_POLL 1
#endif
#endif


#define WS__LOOP_IN 1u
#define WS__LOOP_OUT 2u

/* io kinds */
enum {
  WS__IO_CONN = 1,
  WS__IO_LISTENER = 2,
  WS__IO_WAKE = 3,
  WS__IO_LINGER = 4,
  WS__IO_WATCH = 5 /* a caller's fd (ws_watch) */
};
/* timer-node kinds */
enum { WS__TN_CONN = 1, WS__TN_TIMER = 2, WS__TN_LINGER = 3 };
/* connection flags */
enum {
  WS__LC_CONNECTING = 1, /* non-blocking connect() in progress */
  WS__LC_DEAD = 2,       /* on_close ran; released at the end of the turn */
  WS__LC_PEND = 4,       /* on the pending-update list */
  WS__LC_OWNED = 8,      /* memory from the loop's allocator */
  WS__LC_WAITED = 16,    /* output had to wait for the socket */
  WS__LC_DRAINED = 32,   /* a read came back short: the socket is empty */
  WS__LC_DIAL = 64,      /* a client still resolving or trying addresses:
                            its ws__dial is in ws__l.subs */
  WS__LC_KEPT = 128,     /* a ws_loop_client's connection */
  WS__LC_RATIONED = 256  /* on the rationed list, not the live list: read
                            in the turn's ration, not on readiness */
};

#define WS__LP(l) (&(l)->ws__lp)
#define WS__LC(c) ((ws_loop_conn *)(c))
#define WS__TN_NONE UINT32_MAX

/* The loop's one receive buffer, shared by its plain sockets. */
#ifndef WS__LOOP_RBUF
#define WS__LOOP_RBUF (256u * 1024)
#endif
/* What one readiness event may read of one connection, so that a flooding
 * peer waits its turn (ws__loop_read). */
#ifndef WS__LOOP_READ_SHARE
#define WS__LOOP_READ_SHARE (64u * 1024)
#endif
/* What the rationed connections read together in one turn
 * (ws__loop_ration), and what a turn's events share (ws__loop_turn). */
#ifndef WS__LOOP_TURN_READ
#define WS__LOOP_TURN_READ (256u * 1024)
#endif
/* The least share of one event, however many events a turn has. */
#ifndef WS__LOOP_MIN_SHARE
#define WS__LOOP_MIN_SHARE (1024u)
#endif
#define WS__LOOP_NEVER UINT64_MAX

/* A client's way to its TCP connection: names, addresses (see ws__dial). */
static int ws__dial_next(ws_loop *l, ws_loop_conn *lc);
static int ws__dial_connected(ws_loop_conn *lc);
static void ws__dial_end(ws_loop_conn *lc);
static uint64_t ws__dial_attempt_end(ws_loop_conn *lc, uint64_t now);
static int ws__dial_proxying(ws_loop_conn *lc);
static unsigned ws__dial_wants(ws_loop_conn *lc);
static int ws__proxy_step(ws_loop *l, ws_loop_conn *lc);

typedef struct ws__listener {
  struct ws__io io;
  struct ws__listener *next;
  ws_tls_config *tls; /* NULL: plain */
  ws_loop_group *group; /* handoff: accepted sockets go round the group */
} ws__listener;

/* A finished connection's socket, half-closed, read to its end before it is
 * closed: closing with unread input makes the kernel send a reset, which
 * can destroy the close frame just sent before the peer reads it. */
typedef struct ws__linger {
  struct ws__io io;
  struct ws__tnode tn;
  struct ws__linger *next, *prev;
} ws__linger;

typedef struct ws__post_item {
  void (*fn)(ws_loop *l, void *arg);
  void *arg;
  struct ws__post_item *next;
} ws__post_item;

typedef struct ws__post_q {
  pthread_mutex_t mu;
  ws__post_item *head, *tail;
  int closed; /* ws_loop_free() has begun: posts are refused */
  int refs;   /* the loop's, and its resolver's while that runs */
  int wake_w; /* the wake pipe's write end, for ws__post_q_push() */
} ws__post_q;

struct ws__sub;
typedef struct ws__topic {
  struct ws__topic *hnext;
  struct ws__sub *head;
  size_t count, len;
  char name[1];
} ws__topic;

typedef struct ws__sub {
  ws__topic *t;
  ws_loop_conn *lc;
  struct ws__sub *tnext, *tprev, *cnext;
} ws__sub;

static uint64_t ws__loop_clock(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* The loop's own records (connections, tables): the caller's allocator,
 * or libc. */
static void *ws__loop_alloc(ws_loop *l, void *p, size_t n) {
  struct ws__loop_priv *lp = WS__LP(l);
  if (lp->urealloc) return lp->urealloc(p, n, lp->uctx[0]);
  if (n == 0) {
    free(p);
    return NULL;
  }
  return realloc(p, n);
}

/* Connection buffers: what the connections allocate (input, output,
 * compression), when the caller gave no allocator. glibc keeps freed
 * memory in its heap, and past its first large free it serves large
 * blocks from the heap too: under an attack that fills the budget, RSS
 * ran 30 to 80 MiB over what the connections held (docs/security.md).
 * On Linux, blocks of WS__LOOP_MAP_MIN bytes or more are mappings of
 * their own (page-rounded, grown and shrunk in place by mremap), so a
 * freed one goes back to the system; up to WS__LOOP_MAP_CACHE bytes of
 * freed mappings are kept for the next buffers, so that steady traffic
 * of large messages does not fault its pages in again for every
 * message. Smaller blocks come from libc. Each block has a header of
 * WS__BLK bytes: its size, and its mapping's length (0: from libc).
 * Without mremap (other systems), or under AddressSanitizer (which must
 * see every buffer), every block comes from libc. */
#define WS__BLK 16
#ifndef WS__LOOP_MAP_MIN
#define WS__LOOP_MAP_MIN (128u * 1024 - 64) /* conn.c's 128 KiB buffers */
#endif
#ifndef WS__LOOP_MAP_CACHE
#define WS__LOOP_MAP_CACHE (4u * 1024 * 1024)
#endif
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define WS__LOOP_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define WS__LOOP_ASAN 1
#endif
#if defined(__linux__) && defined(MREMAP_MAYMOVE) && !defined(WS__LOOP_ASAN) && \
    !defined(WS_LOOP_NO_MAP)
#define WS__LOOP_MAPS 1
#else
#define WS__LOOP_MAPS 0
#endif

#if WS__LOOP_MAPS
static size_t ws__page(size_t n) {
  static size_t pg;
  if (pg == 0) {
    long v = sysconf(_SC_PAGESIZE);
    pg = v > 0 ? (size_t)v : 4096;
  }
  return (n + pg - 1) & ~(pg - 1);
}

/* The loop is tight past half its budget. A fragment flood grows
 * thousands of buffers step by step, and glibc keeps the freed steps in
 * its heap as resident holes between live blocks: 180 MiB of them beside
 * a full budget (docs/limits.md). While tight, a block of libc's of
 * WS__LOOP_UNPAGE bytes or more gives its whole pages back before it is
 * freed (madvise: the block is still the loop's, and glibc writes only
 * at its ends), so that its hole costs address space, not memory. Below
 * half the budget that is not worth its system call and page faults:
 * steady traffic finds its pages in place in the heap. (Mapping blocks
 * from 16 KiB while tight was worse: the holes made before then were
 * never filled again, 290 to 300 MiB in that row.) */
#ifndef WS__LOOP_UNPAGE
#define WS__LOOP_UNPAGE (16u * 1024)
#endif
static int ws__loop_tight(const struct ws__loop_priv *p) {
  return p->cfg.mem_budget && p->held_all >= p->cfg.mem_budget / 2;
}

static void ws__loop_unpage(unsigned char *b, size_t len) {
  size_t pg = ws__page(1);
  uintptr_t lo = ((uintptr_t)b + 64 + pg - 1) & ~(uintptr_t)(pg - 1);
  uintptr_t hi = ((uintptr_t)b + len - 64) & ~(uintptr_t)(pg - 1);
  if (hi > lo) (void)madvise((void *)lo, hi - lo, MADV_DONTNEED);
}

/* While tight, freed heap blocks of WS__LOOP_UNPAGE bytes or more are
 * kept, up to WS__LOOP_HEAP_CACHE bytes, for the next block of the same
 * size (conn.c's buffers come in a few sizes): steady traffic under load
 * takes them with their pages in place, where an madvise would make it
 * fault them in again for each message. Past the cache they are unpaged
 * and freed. */
#ifndef WS__LOOP_HEAP_CACHE
#define WS__LOOP_HEAP_CACHE (4u * 1024 * 1024)
#endif
/* Kept blocks count against the budget: one is kept only while what the
 * connections hold and what is kept stay within it, and a charge that
 * would pass it first gives them all back (ws__loop_drop_kept). */
static int ws__kept_fits(const struct ws__loop_priv *p, size_t len) {
  size_t budget = p->cfg.mem_budget;
  return budget == 0 || p->held_all + p->mc.bytes + p->hc.bytes + len <= budget;
}

/* Keeps block b of len bytes in k, which holds at most `most` blocks and
 * `max` bytes: 0 when it has no room for it. */
static int ws__kept_put(struct ws__loop_priv *p, struct ws__kept *k, int most, size_t max,
                        void *b, size_t len) {
  if (k->n >= most || k->bytes + len > max || !ws__kept_fits(p, len)) return 0;
  k->b[k->n] = b;
  k->len[k->n++] = len;
  k->bytes += len;
  return 1;
}

/* Takes block i out of k. */
static void *ws__kept_take(struct ws__kept *k, int i) {
  void *b = k->b[i];
  k->bytes -= k->len[i];
  k->b[i] = k->b[--k->n];
  k->len[i] = k->len[k->n];
  return b;
}

static unsigned char *ws__heap_take(struct ws__loop_priv *p, size_t len) {
  int i;
  for (i = 0; i < p->hc.n; i++)
    if (p->hc.len[i] == len) return (unsigned char *)ws__kept_take(&p->hc, i);
  return NULL;
}

static void ws__heap_give(struct ws__loop_priv *p, unsigned char *b, size_t len) {
  if (b && len >= WS__LOOP_UNPAGE && ws__loop_tight(p)) {
    if (ws__kept_put(p, &p->hc, 32, WS__LOOP_HEAP_CACHE, b, len)) return;
    ws__loop_unpage(b, len);
  }
  free(b);
}

/* A kept mapping of len bytes or more, at most a quarter more (*got: its
 * length), taken from the cache; NULL when none fits. */
static unsigned char *ws__map_fit(struct ws__loop_priv *p, size_t len, size_t *got) {
  int i, best = -1;
  const size_t *l = p->mc.len;
  for (i = 0; i < p->mc.n; i++)
    if (l[i] >= len && l[i] - len <= len / 4 && (best < 0 || l[i] < l[best])) best = i;
  if (best < 0) return NULL;
  *got = l[best];
  return (unsigned char *)ws__kept_take(&p->mc, best);
}

/* Gives a mapping back: kept while the cache has room, else unmapped. */
static void ws__map_give(struct ws__loop_priv *p, void *m, size_t len) {
  if (!ws__kept_put(p, &p->mc, 16, WS__LOOP_MAP_CACHE, m, len)) munmap(m, len);
}

/* Gives every kept block back to the system. */
static void ws__loop_drop_kept(struct ws__loop_priv *p) {
  int i;
  for (i = 0; i < p->hc.n; i++) {
    ws__loop_unpage((unsigned char *)p->hc.b[i], p->hc.len[i]);
    free(p->hc.b[i]);
  }
  for (i = 0; i < p->mc.n; i++) munmap(p->mc.b[i], p->mc.len[i]);
  p->hc.n = p->mc.n = 0;
  p->hc.bytes = p->mc.bytes = 0;
}

/* Moves block b (header hd) to nb, which has room for n bytes: its bytes
 * are copied, and b goes back, a mapping to the mappings' cache, a heap
 * block to ws__heap_give(). */
static void ws__blk_move(struct ws__loop_priv *p, unsigned char *nb, unsigned char *b,
                         const size_t hd[2], size_t n) {
  memcpy(nb + WS__BLK, b + WS__BLK, hd[0] < n ? hd[0] : n);
  if (hd[1])
    ws__map_give(p, b, hd[1]);
  else
    ws__heap_give(p, b, hd[0] + WS__BLK);
}
#else
#define ws__heap_give(p, b, len) free(b)
#define ws__loop_drop_kept(p) ((void)(p))
#define ws__kept_fits(p, len) 1 /* nothing is kept */
#endif

/* ws_config.realloc of the loop's connections (ctx: the loop). */
static void *ws__loop_buf(void *ptr, size_t n, void *ctx) {
  struct ws__loop_priv *p = WS__LP((ws_loop *)ctx);
  unsigned char *b = ptr ? (unsigned char *)ptr - WS__BLK : NULL, *nb;
  size_t hd[2] = {0, 0}; /* size, mapping length */
  if (b) memcpy(hd, b, sizeof hd);
  (void)p;
#if WS__LOOP_MAPS
  if (hd[1] || (n >= WS__LOOP_MAP_MIN && n < SIZE_MAX / 2)) {
    size_t len, got = 0;
    if (n == 0) {
      ws__map_give(p, b, hd[1]);
      return NULL;
    }
    len = ws__page(n + WS__BLK);
    nb = NULL;
    if (hd[1] >= len && hd[1] - len <= len / 4) { /* fits as it is */
      nb = b;
      got = hd[1];
    } else if ((nb = ws__map_fit(p, len, &got)) == NULL && hd[1]) {
      /* a mapping already, and none kept fits: to its new length */
      void *r = mremap(b, hd[1], len, MREMAP_MAYMOVE);
      if (r == MAP_FAILED) return NULL;
      nb = (unsigned char *)r;
      got = len;
    } else {
      /* a kept mapping (its pages are there already: cheaper to copy
       * into than to fault new pages in), else a new one; when the
       * system refuses one (vm.max_map_count), libc's heap below */
      if (nb == NULL) {
        void *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m != MAP_FAILED) {
          nb = (unsigned char *)m;
          got = len;
        }
      }
      if (nb && b) ws__blk_move(p, nb, b, hd, n);
    }
    if (nb) {
      hd[0] = n;
      hd[1] = got;
      memcpy(nb, hd, sizeof hd);
      return nb + WS__BLK;
    }
  }
#endif
  if (n == 0) {
    ws__heap_give(p, b, hd[0] + WS__BLK);
    return NULL;
  }
  if (n > SIZE_MAX - WS__BLK) return NULL;
#if WS__LOOP_MAPS
  /* a kept block of that size; or, while tight, not realloc, which would
   * free b with its pages */
  if (n + WS__BLK >= WS__LOOP_UNPAGE &&
      ((nb = ws__heap_take(p, n + WS__BLK)) != NULL || (b && ws__loop_tight(p)))) {
    if (nb == NULL && (nb = (unsigned char *)malloc(n + WS__BLK)) == NULL) return NULL;
    if (b) ws__blk_move(p, nb, b, hd, n);
  } else
#endif
  if ((nb = (unsigned char *)realloc(b, n + WS__BLK)) == NULL)
    return NULL;
  hd[0] = n;
  memcpy(nb, hd, sizeof hd);
  return nb + WS__BLK;
}

/* An id for the calling thread, for the debug check only. pthread_t is
 * opaque, but it is an integer or a pointer on the systems this loop runs
 * on; pthread_equal would need the value stored as pthread_t in ws.h. */
static unsigned long ws__loop_self(void) {
  pthread_t t = pthread_self();
  unsigned long id = 0;
  memcpy(&id, &t, sizeof t < sizeof id ? sizeof t : sizeof id);
  return id;
}

/* Counters shared between loops' threads (group inbox bytes, drops, the
 * shared publish's references). C99 has no atomics: GCC and Clang have
 * the __atomic builtins; other compilers take one process-wide mutex,
 * held for an addition. */
#if defined(__GNUC__)
static size_t ws__atomic_add(size_t *v, size_t d) {
  return __atomic_add_fetch(v, d, __ATOMIC_ACQ_REL);
}
static size_t ws__atomic_sub(size_t *v, size_t d) {
  return __atomic_sub_fetch(v, d, __ATOMIC_ACQ_REL);
}
static size_t ws__atomic_load(const size_t *v) {
  return __atomic_load_n(v, __ATOMIC_ACQUIRE);
}
#else
static pthread_mutex_t ws__atomic_mu = PTHREAD_MUTEX_INITIALIZER;
static size_t ws__atomic_add(size_t *v, size_t d) {
  size_t r;
  pthread_mutex_lock(&ws__atomic_mu);
  r = *v += d;
  pthread_mutex_unlock(&ws__atomic_mu);
  return r;
}
static size_t ws__atomic_sub(size_t *v, size_t d) {
  size_t r;
  pthread_mutex_lock(&ws__atomic_mu);
  r = *v -= d;
  pthread_mutex_unlock(&ws__atomic_mu);
  return r;
}
static size_t ws__atomic_load(const size_t *v) {
  size_t r;
  pthread_mutex_lock(&ws__atomic_mu);
  r = *v;
  pthread_mutex_unlock(&ws__atomic_mu);
  return r;
}
#endif

#ifndef NDEBUG
/* One string literal: assert() prints the expression's text, and two
 * adjacent literals would print with their quotes between them. */
#define WS__LOOP_THREAD(l)                         \
  WS_ASSERT(WS__LP(l)->owner == ws__loop_self() &&  \
            "ws_loop_*(), ws_timer_*() or ws_watch_*() called from a thread other than the loop's")
#else
#define WS__LOOP_THREAD(l) ((void)0)
#endif

static int ws__io_nonblock(int fd) {
#ifdef _WIN32
  return ws__w_nonblock(fd);
#else
  int fl = fcntl(fd, F_GETFL, 0);
  if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) return -1;
  fl = fcntl(fd, F_GETFD, 0);
  if (fl >= 0) (void)fcntl(fd, F_SETFD, fl | FD_CLOEXEC);
#ifdef SO_NOSIGPIPE
  {
    int one = 1;
    (void)setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &one, sizeof one);
  }
#endif
  return 0;
#endif
}


/* Backends --------------------------------------------------------------
 * One contract, filled by the one backend part compiled in (loop_epoll.c,
 * loop_kqueue.c, loop_poll.c): create, set interest (0 removes), wait
 * (fills ready[]), destroy, name. Errors and hang-ups are reported as
 * readable+writable so the one read/write path finds them. */
static int ws__be_create(struct ws__loop_priv *p);
static int ws__be_set(struct ws__loop_priv *p, struct ws__io *io, unsigned ev);
static int ws__be_wait(struct ws__loop_priv *p, int timeout);
static void ws__be_destroy(struct ws__loop_priv *p);
static const char *ws__be_name(void);

/* see ws.h */
const char *ws_loop_backend(void) { return ws__be_name(); }

/* see ws.h */
int ws_loop_backend_fd(const ws_loop *l) { return WS__LP(l)->bfd; }

/* Timer heap (a binary min-heap of nodes, each knowing its index) ------- */

static void ws__tn_swap(struct ws__loop_priv *p, size_t a, size_t b) {
  struct ws__tnode *t = p->heap[a];
  p->heap[a] = p->heap[b];
  p->heap[b] = t;
  p->heap[a]->idx = (uint32_t)a;
  p->heap[b]->idx = (uint32_t)b;
}

static void ws__tn_up(struct ws__loop_priv *p, size_t i) {
  while (i > 0 && p->heap[(i - 1) / 2]->when > p->heap[i]->when) {
    ws__tn_swap(p, i, (i - 1) / 2);
    i = (i - 1) / 2;
  }
}

static void ws__tn_down(struct ws__loop_priv *p, size_t i) {
  for (;;) {
    size_t m = i, a = 2 * i + 1, b = a + 1;
    if (a < p->hcount && p->heap[a]->when < p->heap[m]->when) m = a;
    if (b < p->hcount && p->heap[b]->when < p->heap[m]->when) m = b;
    if (m == i) return;
    ws__tn_swap(p, i, m);
    i = m;
  }
}

static void ws__tn_remove(struct ws__loop_priv *p, struct ws__tnode *t) {
  size_t i = t->idx, last;
  if (i == WS__TN_NONE) return;
  last = --p->hcount;
  if (i != last) {
    p->heap[i] = p->heap[last];
    p->heap[i]->idx = (uint32_t)i;
    ws__tn_down(p, i);
    ws__tn_up(p, i);
  }
  t->idx = WS__TN_NONE;
}

/* Sets a node's time (NEVER removes it). */
static int ws__tn_set(ws_loop *l, struct ws__tnode *t, uint64_t when) {
  struct ws__loop_priv *p = WS__LP(l);
  if (when == WS__LOOP_NEVER) {
    ws__tn_remove(p, t);
    return WS_OK;
  }
  if (t->idx == WS__TN_NONE) {
    if (p->hcount == p->hcap) {
      size_t cap = p->hcap ? p->hcap * 2 : 64;
      void *h = ws__loop_alloc(l, p->heap, cap * sizeof *p->heap);
      if (h == NULL) return WS_ENOMEM;
      p->heap = (struct ws__tnode **)h;
      p->hcap = cap;
    }
    t->when = when;
    t->idx = (uint32_t)p->hcount;
    p->heap[p->hcount++] = t;
    ws__tn_up(p, t->idx);
  } else if (when != t->when) {
    uint64_t old = t->when;
    t->when = when;
    if (when < old)
      ws__tn_up(p, t->idx);
    else
      ws__tn_down(p, t->idx);
  }
  return WS_OK;
}

/* see ws.h */
void ws_timer_start(ws_loop *l, ws_timer *t, uint64_t after_ms,
                    uint64_t repeat_ms,
                    void (*cb)(ws_loop *l, ws_timer *t, void *user),
                    void *user) {
  struct ws__timer_priv *tp = &t->ws__t;
  WS__LOOP_THREAD(l);
  if (tp->tn.kind != WS__TN_TIMER) {
    tp->tn.kind = WS__TN_TIMER;
    tp->tn.idx = WS__TN_NONE;
  }
  tp->repeat = repeat_ms;
  tp->cb = cb;
  tp->user = user;
  (void)ws__tn_set(l, &tp->tn, WS__LP(l)->now + after_ms);
}

/* see ws.h */
void ws_timer_stop(ws_loop *l, ws_timer *t) {
  WS__LOOP_THREAD(l);
  if (t->ws__t.tn.kind == WS__TN_TIMER) ws__tn_remove(WS__LP(l), &t->ws__t.tn);
}

/* Watches: the caller's descriptors ---------------------------------------
 * The loop's interest bits are the public ones (WS__LOOP_IN is
 * WS_WATCH_READ, WS__LOOP_OUT is WS_WATCH_WRITE), so io.events holds the
 * interest as registered with the backend. */

#define WS__WATCH_ALL (WS_WATCH_READ | WS_WATCH_WRITE)

/* see ws.h */
int ws_watch_start(ws_loop *l, ws_watch *w, int fd, unsigned events,
                   void (*cb)(ws_loop *l, ws_watch *w, unsigned ready,
                              void *user),
                   void *user) {
  struct ws__loop_priv *p = WS__LP(l);
  struct ws__watch_priv *wp;
  ws_watch *it;
  int rc;
  WS__LOOP_THREAD(l);
  if (w == NULL || fd < 0 || cb == NULL || (events & ~WS__WATCH_ALL) ||
      p->post == NULL)
    return WS_EINVAL;
  /* The list, not w's own fields, says whether w is started: w may be
   * uninitialised memory. Watches are few; the walk is cheap. */
  for (it = p->watches; it; it = it->ws__w.next)
    if (it == w || it->ws__w.io.fd == fd) return WS_EINVAL;
  wp = &w->ws__w;
  memset(wp, 0, sizeof *wp);
  wp->io.fd = fd;
  wp->io.pidx = -1;
  wp->io.kind = WS__IO_WATCH;
  wp->cb = cb;
  wp->user = user;
  if ((rc = ws__be_set(p, &wp->io, events)) != WS_OK) {
    wp->io.fd = -1;
    return rc;
  }
  wp->loop = l;
  wp->next = p->watches;
  if (p->watches) p->watches->ws__w.prev = w;
  p->watches = w;
  return WS_OK;
}

/* see ws.h */
int ws_watch_set(ws_loop *l, ws_watch *w, unsigned events) {
  struct ws__loop_priv *p = WS__LP(l);
  WS__LOOP_THREAD(l);
  if (w == NULL || w->ws__w.loop != l || p->post == NULL ||
      (events & ~WS__WATCH_ALL))
    return WS_EINVAL;
  /* On failure io.events keeps the interest the backend still has. */
  return ws__be_set(p, &w->ws__w.io, events);
}

/* see ws.h */
void ws_watch_stop(ws_loop *l, ws_watch *w) {
  struct ws__loop_priv *p = WS__LP(l);
  struct ws__watch_priv *wp;
  int i;
  WS__LOOP_THREAD(l);
  /* p->post is NULL once ws_loop_free() has finished: its watches are
   * forgotten, the backend and the list are gone. */
  if (w == NULL || w->ws__w.loop != l || p->post == NULL) return;
  wp = &w->ws__w;
  (void)ws__be_set(p, &wp->io, 0);
  /* The current iteration may still hold readiness for this watch (kqueue:
   * one entry per filter). The caller may free w as soon as this returns,
   * so the entries go now, and the dispatch never reads w again. */
  for (i = 0; p->ready && i < p->nready; i++)
    if (p->ready[i].io == &wp->io) p->ready[i].io = NULL;
  if (wp->prev)
    wp->prev->ws__w.next = wp->next;
  else
    p->watches = wp->next;
  if (wp->next) wp->next->ws__w.prev = wp->prev;
  wp->next = wp->prev = NULL;
  wp->loop = NULL;
  wp->io.fd = -1;
}

/* see ws.h */
int ws_watch_fd(const ws_watch *w) {
  return w->ws__w.loop ? w->ws__w.io.fd : -1;
}

/* see ws.h */
unsigned ws_watch_events(const ws_watch *w) {
  return w->ws__w.loop ? w->ws__w.io.events : 0u;
}

/* Readiness on a watch, entry i of the current iteration. kqueue reports a
 * descriptor's read and write filters as two entries: they are merged into
 * one call, so every backend calls once per iteration. What is delivered is
 * masked by the interest now: an earlier callback may have changed it. */
static void ws__watch_event(ws_loop *l, int i) {
  struct ws__loop_priv *p = WS__LP(l);
  struct ws__io *io = p->ready[i].io;
  ws_watch *w = (ws_watch *)((char *)io - offsetof(ws_watch, ws__w.io));
  unsigned ev = p->ready[i].ev;
  int j;
  for (j = i + 1; j < p->nready; j++) {
    if (p->ready[j].io == io) {
      ev |= p->ready[j].ev;
      p->ready[j].io = NULL;
    }
  }
  ev &= io->events;
  if (ev) w->ws__w.cb(l, w, ev, w->ws__w.user);
}

/* Connections ------------------------------------------------------------ */

static int ws__loop_read(ws_conn *c, void *buf, size_t cap, size_t *n,
                         void *user) {
  ws_loop_conn *lc = WS__LC(c);
  (void)user;
#if WS_ENABLE_MBEDTLS
  if (lc->ws__l.tls) { /* the same share, counted in plaintext bytes */
    struct ws__loop_priv *p = &lc->ws__l.loop->ws__lp;
    int rc;
    if (p->rquota == 0) return WS_EAGAIN;
    if (cap > p->rquota) cap = p->rquota;
    rc = ws_tls_read((ws_tls *)lc->ws__l.tls, buf, cap, n);
    if (rc == WS_OK && *n > 0) {
      p->rquota -= *n;
      lc->ws__l.last_rx = (uint32_t)p->now;
    }
    return rc;
  }
#endif
  /* A read that came back short emptied the socket: the next one would
   * only say EAGAIN, so it is skipped (readiness is level-triggered: bytes
   * that arrive meanwhile bring another event). */
  if (lc->ws__l.io.flags & WS__LC_DRAINED) {
    lc->ws__l.io.flags &= (unsigned short)~WS__LC_DRAINED;
    return WS_EAGAIN;
  }
  /* One event reads at most WS__LOOP_READ_SHARE bytes of a connection, then the
   * others get their turn: a peer that refills its socket as fast as it is
   * read (a flood) cannot hold the loop. What is left brings the next
   * event (level-triggered). */
  if (lc->ws__l.loop->ws__lp.rquota == 0) return WS_EAGAIN;
  if (cap > lc->ws__l.loop->ws__lp.rquota) cap = lc->ws__l.loop->ws__lp.rquota;
  for (;;) {
    ssize_t r = recv(lc->ws__l.io.fd, buf, cap, 0);
    if (r >= 0) {
      *n = (size_t)r;
      if (r > 0) {
        lc->ws__l.loop->ws__lp.rquota -= (size_t)r;
        lc->ws__l.last_rx = (uint32_t)lc->ws__l.loop->ws__lp.now;
        if ((size_t)r < cap) lc->ws__l.io.flags |= WS__LC_DRAINED;
      }
      return WS_OK;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return WS_EAGAIN;
    return WS_EIO;
  }
}

/* Puts a connection on the list whose interest and timers are brought up
 * to date at the end of the current step: sends made from anywhere (another
 * connection's callback, a timer, a post) change what it waits for. */
static void ws__loop_touch(ws_loop_conn *lc) {
  struct ws__loop_conn_priv *q = &lc->ws__l;
  if (q->io.flags & (WS__LC_PEND | WS__LC_DEAD)) return;
  q->io.flags |= WS__LC_PEND;
  q->pend = q->loop->ws__lp.pend;
  q->loop->ws__lp.pend = lc;
}

/* A connection is on one of two lists: the live list (p->conns), or, while
 * rationed, the rationed list (p->rat .. p->rat_tail, in the order of their
 * turns). The dead list (p->dead) uses `next` only. */
static void ws__lc_unlink(struct ws__loop_priv *p, ws_loop_conn *lc) {
  struct ws__loop_conn_priv *q = &lc->ws__l;
  int rat = (q->io.flags & WS__LC_RATIONED) != 0;
  if (q->prev)
    q->prev->ws__l.next = q->next;
  else if (rat)
    p->rat = q->next;
  else
    p->conns = q->next;
  if (q->next)
    q->next->ws__l.prev = q->prev;
  else if (rat)
    p->rat_tail = q->prev;
  q->next = q->prev = NULL;
  p->nrat -= (size_t)rat;
  q->io.flags &= (unsigned short)~WS__LC_RATIONED;
}

static void ws__lc_link(struct ws__loop_priv *p, ws_loop_conn *lc) {
  lc->ws__l.next = p->conns;
  lc->ws__l.prev = NULL;
  if (p->conns) p->conns->ws__l.prev = lc;
  p->conns = lc;
}

/* Fairness between connections. One event reads at most a share of a
 * connection: the turn's WS__LOOP_TURN_READ split between its events, from
 * WS__LOOP_MIN_SHARE to WS__LOOP_READ_SHARE (ws__loop_turn). One that read
 * all of it has more to send than a turn should give it. It is rationed:
 * it stops waiting for readiness (its interest loses input) and is read
 * instead at the end of each turn, in turn with the other rationed
 * connections, a share each until the turn's ration (WS__LOOP_TURN_READ)
 * is read. A turn then costs at most the events' part and one ration,
 * however many peers flood, and the connections with little to say are
 * answered in it. A peer whose socket is not read waits, and TCP's flow
 * control slows it. A rationed connection that reads less than its share
 * (its socket is empty) waits for readiness again. */
static void ws__lc_ration(struct ws__loop_priv *p, ws_loop_conn *lc) {
  struct ws__loop_conn_priv *q = &lc->ws__l;
  if (q->io.flags & (WS__LC_RATIONED | WS__LC_DEAD)) return;
  ws__lc_unlink(p, lc);
  q->io.flags |= WS__LC_RATIONED;
  q->prev = p->rat_tail;
  if (p->rat_tail)
    p->rat_tail->ws__l.next = lc;
  else
    p->rat = lc;
  p->rat_tail = lc;
  p->nrat++;
  ws__loop_touch(lc); /* its interest loses input */
}

/* Sends pieces on a plain socket in one call; a short count or
 * would-block marks the connection as having waited (for on_drain). */
static int ws__loop_sendv(ws_loop_conn *lc, const ws_iovec *iov, int cnt,
                          size_t *n) {
  struct iovec v[3];
  struct msghdr m;
  size_t total = 0;
  int i, flags = 0;
#ifdef MSG_NOSIGNAL
  flags = MSG_NOSIGNAL;
#endif
  for (i = 0; i < cnt; i++) {
    v[i].iov_base = (void *)(uintptr_t)iov[i].base;
    v[i].iov_len = iov[i].len;
    total += iov[i].len;
  }
  memset(&m, 0, sizeof m);
  m.msg_iov = v;
  m.msg_iovlen = cnt;
  for (;;) {
    /* One piece: send(), which spares the kernel the message header. */
    ssize_t r = cnt == 1 ? send(lc->ws__l.io.fd, v[0].iov_base, total, flags)
                         : sendmsg(lc->ws__l.io.fd, &m, flags);
    if (r >= 0) {
      *n = (size_t)r;
      if ((size_t)r < total) lc->ws__l.io.flags |= WS__LC_WAITED;
      return WS_OK;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      lc->ws__l.io.flags |= WS__LC_WAITED;
      return WS_EAGAIN;
    }
    return WS_EIO;
  }
}

static int ws__loop_write(ws_conn *c, const void *buf, size_t len, size_t *n,
                          void *user) {
  ws_loop_conn *lc = WS__LC(c);
  ws_iovec one;
  (void)user;
  ws__loop_touch(lc);
  if (lc->ws__l.io.flags & WS__LC_CONNECTING) return WS_EAGAIN;
#if WS_ENABLE_MBEDTLS
  if (lc->ws__l.tls) {
    int rc = ws_tls_write((ws_tls *)lc->ws__l.tls, buf, len, n);
    if (rc == WS_EAGAIN || (rc == WS_OK && *n < len))
      lc->ws__l.io.flags |= WS__LC_WAITED;
    return rc;
  }
#endif
  one.base = buf;
  one.len = len;
  return ws__loop_sendv(lc, &one, 1, n);
}

/* The pieces of one send (layer 1 passes at most 3): one sendmsg on a
 * plain socket; through TLS, one piece after another (a record each). */
static int ws__loop_writev(ws_conn *c, const ws_iovec *iov, int cnt,
                           size_t *n, void *user) {
  ws_loop_conn *lc = WS__LC(c);
  int i;
  if (cnt <= 3 && !lc->ws__l.tls) {
    ws__loop_touch(lc);
    if (lc->ws__l.io.flags & WS__LC_CONNECTING) return WS_EAGAIN;
    return ws__loop_sendv(lc, iov, cnt, n);
  }
  *n = 0;
  for (i = 0; i < cnt; i++) {
    size_t k = 0;
    int rc = ws__loop_write(c, iov[i].base, iov[i].len, &k, user);
    if (rc != WS_OK && rc != WS_EAGAIN) return rc;
    *n += k;
    if (rc == WS_EAGAIN || k < iov[i].len) return *n ? WS_OK : WS_EAGAIN;
  }
  return WS_OK;
}

static void ws__sub_drop_all(ws_loop_conn *lc);

static void ws__linger_end(ws_loop *l, ws__linger *g) {
  struct ws__loop_priv *p = WS__LP(l);
  (void)ws__be_set(p, &g->io, 0);
  close(g->io.fd);
  ws__tn_remove(p, &g->tn);
  if (g->prev)
    g->prev->next = g->next;
  else
    p->lingering = g->next;
  if (g->next) g->next->prev = g->prev;
  p->nlinger--;
  ws__loop_alloc(l, g, 0);
}

/* Hands a finished connection's socket over to lingering: FIN now, then
 * read and drop until the peer's FIN or the linger time. A socket that
 * failed, or the end of a loop, closes at once. */
static void ws__loop_linger(ws_loop *l, int fd, int err) {
  struct ws__loop_priv *p = WS__LP(l);
  ws__linger *g = NULL;
  if (fd < 0) return;
  if (err != WS_EIO && p->cfg.linger_ms && !p->freeing &&
      shutdown(fd, SHUT_WR) == 0)
    g = (ws__linger *)ws__loop_alloc(l, NULL, sizeof *g);
  if (g == NULL) {
    close(fd);
    return;
  }
  memset(g, 0, sizeof *g);
  g->io.fd = fd;
  g->io.pidx = -1;
  g->io.kind = WS__IO_LINGER;
  g->tn.kind = WS__TN_LINGER;
  g->tn.idx = WS__TN_NONE;
  g->next = (ws__linger *)p->lingering;
  if (g->next) g->next->prev = g;
  p->lingering = g;
  p->nlinger++;
  if (ws__be_set(p, &g->io, WS__LOOP_IN) != WS_OK ||
      ws__tn_set(l, &g->tn, p->now + p->cfg.linger_ms) != WS_OK)
    ws__linger_end(l, g);
}

/* Whether the peer's kernel acknowledged all this socket sent, our close
 * frame included (Linux; elsewhere unknown: no). The count has one more
 * for our FIN while it is not acknowledged, and a peer that does not
 * read holds it back with a closed window: up to 1 counts as done. */
static int ws__linger_acked(int fd) {
#if defined(__linux__) && defined(TIOCOUTQ)
  int q = -1;
  return ioctl(fd, TIOCOUTQ, &q) == 0 && q >= 0 && q <= 1;
#else
  (void)fd;
  return 0;
#endif
}

/* Drains a lingering socket: at most one event's share per event, like a
 * connection's read (ws__lc_ration), so that a peer that goes on sending
 * after our close cannot hold the loop; the rest brings the next event,
 * until the linger time ends it. A peer that fills a share and has
 * acknowledged our close is closed at once: lingering is for our close
 * to arrive, and a flood of sockets that go on sending after it would
 * crowd the loop's readiness (3,700 at once in make attack's unfinished
 * row, where an honest client's event waited about 15 turns behind them). */
static void ws__linger_read(ws_loop *l, ws__linger *g) {
  char sink[4096];
  size_t left = WS__LP(l)->evshare;
  for (;;) {
    ssize_t r;
    if (left == 0) {
      if (ws__linger_acked(g->io.fd)) ws__linger_end(l, g);
      return;
    }
    r = recv(g->io.fd, sink, left < sizeof sink ? left : sizeof sink, 0);
    if (r > 0) {
      left -= (size_t)r;
      continue;
    }
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    ws__linger_end(l, g); /* end of stream or an error */
    return;
  }
}

static void ws__client_ended(ws_loop *l, ws_loop_client *k, int final, int st);

/* The running client whose connection c is (WS__LC_KEPT): a short list. */
static ws_loop_client *ws__client_find(struct ws__loop_priv *p, const ws_conn *c) {
  ws_loop_client *k;
  for (k = p->clients; k; k = k->ws__k.next)
    if (k->ws__k.conn == c) return k;
  return NULL;
}

/* Memory budget (ws.h: "Memory budget") ----------------------------------- */

/* What a connection holds: its core's memory and its TLS session. */
static size_t ws__lc_memory(const ws_loop_conn *lc) {
  size_t n = ws_conn_memory(&lc->conn);
#if WS_ENABLE_MBEDTLS
  if (lc->ws__l.tls) n += ws_tls_memory((const ws_tls *)lc->ws__l.tls);
#endif
  return n;
}

/* Counts bytes (negative: given back) of a kind for a connection that held
 * `before`. */
static void ws__mem_count(struct ws__loop_priv *p, int kind, ptrdiff_t bytes,
                          size_t before) {
  if (bytes > 0) {
    if (before == 0) p->holders++;
    p->held[kind] += (size_t)bytes;
    p->held_all += (size_t)bytes;
    if (p->held_all > p->held_peak) p->held_peak = p->held_all;
  } else if (bytes < 0) {
    size_t n = (size_t)-bytes;
    if (before == n && p->holders) p->holders--;
    p->held[kind] -= n;
    p->held_all -= n;
  }
}

/* ws_config.charge of every loop connection. */
static int ws__loop_charge(ws_conn *c, int kind, ptrdiff_t bytes, void *ctx) {
  ws_loop_conn *lc = WS__LC(c);
  struct ws__loop_priv *p = WS__LP(lc->ws__l.loop);
  int client = ws_conn_role(c) == WS_CLIENT;
  int (*user)(ws_conn *, int, ptrdiff_t, void *) = p->ucharge[client];
  size_t before = ws__lc_memory(lc), budget = p->cfg.mem_budget;
  ctx = p->uctx[client]; /* the caller's, not the loop */
  if (bytes > 0) {
    size_t n = (size_t)bytes;
    /* The budget is a hard cap; its last eighth is kept for connections
     * under their fair share. */
    if (!ws__kept_fits(p, n)) ws__loop_drop_kept(p); /* kept blocks first */
    if (budget && p->held_all + n > budget - budget / 8) {
      size_t share = budget / (p->holders + (before == 0));
      if (p->held_all + n > budget || before + n > share)
        return kind == WS_MEM_INPUT ? WS_CLOSE_TOO_BIG : WS_CLOSE_TRY_AGAIN;
    }
    if (user) {
      int code = user(c, kind, bytes, ctx);
      if (code) return code;
    }
  } else if (user) {
    (void)user(c, kind, bytes, ctx);
  }
  ws__mem_count(p, kind, bytes, before);
  return 0;
}

#if WS_ENABLE_MBEDTLS
/* A TLS session joins a connection / leaves it, counted. */
static void ws__lc_tls_set(ws_loop_conn *lc, ws_tls *t) {
  struct ws__loop_priv *p = WS__LP(lc->ws__l.loop);
  ws_tls *old = (ws_tls *)lc->ws__l.tls;
  if (old) {
    ws__mem_count(p, WS_MEM_TLS, -(ptrdiff_t)ws_tls_memory(old),
                  ws__lc_memory(lc));
    lc->ws__l.tls = NULL;
    ws_tls_free(old);
  }
  if (t) {
    ws__mem_count(p, WS_MEM_TLS, (ptrdiff_t)ws_tls_memory(t), ws__lc_memory(lc));
    lc->ws__l.tls = t;
  }
}
#endif

/* Near the budget, upgrades are refused with 503. */
static int ws__loop_on_handshake(ws_conn *c, const ws_request *req,
                                 ws_accept *acc, void *user) {
  struct ws__loop_priv *p = WS__LP(WS__LC(c)->ws__l.loop);
  size_t budget = p->cfg.mem_budget;
  if (budget && p->held_all >= budget - budget / 16) {
    p->failed[6]++;
    return 503;
  }
  return p->cb.conn.on_handshake ? p->cb.conn.on_handshake(c, req, acc, user)
                                 : 0;
}

/* see ws.h */
void ws_loop_stats(ws_loop *l, struct ws_loop_stats *st) {
  struct ws__loop_priv *p = WS__LP(l);
  ws_loop_conn *lc;
  int i;
  WS__LOOP_THREAD(l);
  memset(st, 0, sizeof *st);
  st->conns = p->nconns;
  for (i = 0; i < 2; i++) /* the live list, then the rationed one */
    for (lc = i ? p->rat : p->conns; lc; lc = lc->ws__l.next)
      if (ws_conn_state(&lc->conn) == WS_STATE_OPEN &&
          !ws_conn_want_read(&lc->conn))
        st->paused++;
  st->rationed = p->nrat;
  st->mem_budget = p->cfg.mem_budget;
  st->held = p->held_all;
  st->held_in = p->held[WS_MEM_INPUT];
  st->held_out = p->held[WS_MEM_OUTPUT];
  st->held_deflate = p->held[WS_MEM_DEFLATE];
  st->held_tls = p->held[WS_MEM_TLS];
  st->held_peak = p->held_peak;
  st->holders = p->holders;
  st->failed_budget_1009 = p->failed[0];
  st->failed_budget_1013 = p->failed[1];
  st->failed_slow_reader = p->failed[2];
  st->failed_too_big = p->failed[3];
  st->failed_protocol = p->failed[4];
  st->failed_timeout = p->failed[5];
  st->refused_503 = p->failed[6];
}

/* A connection ended: counted by why (ws_loop_stats' failed_*). */
static void ws__loop_count_end(struct ws__loop_priv *p, int code, int err) {
  switch (err) {
  case WS_EBUDGET: p->failed[code == WS_CLOSE_TOO_BIG ? 0 : 1]++; break;
  case WS_ESLOW: p->failed[2]++; break;
  case WS_ETOOBIG: p->failed[3]++; break;
  case WS_EPROTO: case WS_EUTF8: case WS_EDATA: case WS_EHANDSHAKE:
    p->failed[4]++;
    break;
  case WS_ETIMEDOUT: p->failed[5]++; break;
  default: break;
  }
}

/* on_open of every loop connection: a reconnecting client counts the open
 * first, so that its on_open can tell a reconnect. */
static void ws__loop_on_open(ws_conn *c, const char *proto, size_t len,
                             void *user) {
  ws_loop_conn *lc = WS__LC(c);
  struct ws__loop_priv *p = WS__LP(lc->ws__l.loop);
  if (lc->ws__l.io.flags & WS__LC_KEPT) {
    ws_loop_client *k = ws__client_find(p, c);
    if (k) {
      k->ws__k.opens++;
      k->ws__k.opened_at = p->now ? p->now : 1;
    }
  }
  if (p->cb.conn.on_open) p->cb.conn.on_open(c, proto, len, user);
}

/* on_close of every loop connection: the application's, then the loop's
 * part. The memory stays until the end of the turn, so code still holding
 * the pointer in this turn finds it marked dead rather than freed. */
static void ws__loop_on_close(ws_conn *c, int code, const char *reason,
                              size_t len, void *user) {
  ws_loop_conn *lc = WS__LC(c);
  struct ws__loop_conn_priv *q = &lc->ws__l;
  ws_loop *l = q->loop;
  struct ws__loop_priv *p = WS__LP(l);
  int err = ws_conn_error(c);
  /* A plain connection whose closing handshake completed has nothing more
   * coming: it closes at once. The others linger (see ws__loop_linger). */
  int linger = err != WS_OK || q->tls != NULL;
  ws_loop_client *kept = NULL;
  int final = 0, st = 0;
  ws__loop_count_end(p, code, err);
  if (p->cb.conn.on_close) p->cb.conn.on_close(c, code, reason, len, user);
  q->io.flags |= WS__LC_DEAD;
  if ((q->io.flags & WS__LC_KEPT) && (kept = ws__client_find(p, c)) != NULL) {
    /* Worth retrying? Not a refusal in 4xx, nor a certificate that does
     * not verify (read before the TLS session goes, below). */
    st = err == WS_EPROXY ? ws_loop_proxy_status(c, NULL) : ws_conn_http_status(c);
    final = kept->ws__k.opened_at == 0 && st >= 400 && st <= 499;
#if WS_ENABLE_MBEDTLS
    if (q->tls && ws_tls_verify_failed((ws_tls *)q->tls)) final = 1;
#endif
  }
  ws__dial_end(lc); /* a resolution still running is cancelled */
  (void)ws__be_set(p, &q->io, 0);
#if WS_ENABLE_MBEDTLS
  if (q->tls) { /* close_notify; a TLS failure on a sound socket lingers */
    err = ws_tls_close((ws_tls *)q->tls);
    ws__lc_tls_set(lc, NULL);
  }
#endif
  if (linger)
    ws__loop_linger(l, q->io.fd, err);
  else if (q->io.fd >= 0)
    close(q->io.fd);
  q->io.fd = -1;
  ws__tn_remove(p, &q->tn);
  ws__sub_drop_all(lc);
  /* From the live (or rationed) list to the dead list. */
  ws__lc_unlink(p, lc);
  q->next = p->dead;
  q->prev = NULL;
  p->dead = lc;
  p->nconns--;
  if (p->paused) { /* a file descriptor is free again: accept again */
    ws__listener *ls;
    p->paused = 0;
    for (ls = (ws__listener *)p->listeners; ls; ls = ls->next)
      if (ls->io.fd >= 0) (void)ws__be_set(p, &ls->io, WS__LOOP_IN);
  }
  if (kept) ws__client_ended(l, kept, final, st);
}

static void ws__loop_release_dead(ws_loop *l) {
  struct ws__loop_priv *p = WS__LP(l);
  while (p->dead) {
    ws_loop_conn *lc = p->dead;
    p->dead = lc->ws__l.next;
    ws_conn_free(&lc->conn);
    if (lc->ws__l.io.flags & WS__LC_OWNED)
      ws__loop_alloc(l, lc, 0);
    else if (p->cb.free_conn)
      p->cb.free_conn(l, lc, p->user);
  }
}

/* A new connection record around fd, registered, not yet started. */
static ws_loop_conn *ws__loop_new_conn(ws_loop *l, int fd, const ws_config *cfg,
                                       void *user) {
  struct ws__loop_priv *p = WS__LP(l);
  ws_loop_conn *lc;
  int owned = 0;
  if (p->cfg.max_conns && p->nconns >= p->cfg.max_conns) return NULL;
  if (p->cb.alloc_conn) {
    lc = p->cb.alloc_conn(l, p->user);
  } else {
    lc = (ws_loop_conn *)ws__loop_alloc(l, NULL, sizeof *lc);
    owned = 1;
  }
  if (lc == NULL) return NULL;
  memset(&lc->ws__l, 0, sizeof lc->ws__l);
  /* The config and callbacks are the loop's: shared, not copied. */
  if (ws_conn_init(&lc->conn, cfg, &p->ccb, user) != WS_OK) {
    if (owned)
      ws__loop_alloc(l, lc, 0);
    else if (p->cb.free_conn)
      p->cb.free_conn(l, lc, p->user);
    return NULL;
  }
  lc->ws__l.io.flags = (unsigned short)(owned ? WS__LC_OWNED : 0);
  lc->ws__l.loop = l;
  lc->ws__l.io.fd = fd;
  lc->ws__l.io.pidx = -1;
  lc->ws__l.io.kind = WS__IO_CONN;
  lc->ws__l.tn.kind = WS__TN_CONN;
  lc->ws__l.tn.idx = WS__TN_NONE;
  lc->ws__l.last_rx = (uint32_t)p->now;
  ws__lc_link(p, lc);
  p->nconns++;
  return lc;
}

/* Undoes ws__loop_new_conn for a connection that never started. */
static void ws__loop_discard(ws_loop *l, ws_loop_conn *lc) {
  struct ws__loop_priv *p = WS__LP(l);
  struct ws__loop_conn_priv *q = &lc->ws__l;
  ws__dial_end(lc);
  (void)ws__be_set(p, &q->io, 0);
#if WS_ENABLE_MBEDTLS
  ws__lc_tls_set(lc, NULL);
#endif
  ws__lc_unlink(p, lc);
  p->nconns--;
  ws_conn_free(&lc->conn);
  if (q->io.flags & WS__LC_OWNED)
    ws__loop_alloc(l, lc, 0);
  else if (p->cb.free_conn)
    p->cb.free_conn(l, lc, p->user);
}

/* Brings a connection's interest and timer up to date, running its timers
 * when due. */
static void ws__loop_update(ws_loop *l, ws_loop_conn *lc) {
  struct ws__loop_priv *p = WS__LP(l);
  struct ws__loop_conn_priv *q = &lc->ws__l;
  ws_conn *c = &lc->conn;
  uint64_t when;
  unsigned ev;
  int i;
  for (i = 0; i < 3; i++) {
    if (q->io.flags & WS__LC_DEAD) return;
    when = ws_conn_next_deadline(c);
    if (when > p->now) break;
    if (ws_conn_tick(c, p->now) == WS_ECLOSED) return;
  }
  if (q->io.flags & WS__LC_DEAD) return;
  if ((q->io.flags & WS__LC_DIAL) && q->io.fd >= 0) {
    /* An address that has not answered in its share of the time: the
     * next one. */
    if (ws__dial_attempt_end(lc, p->now) <= p->now && ws__dial_next(l, lc) != WS_OK) {
      ws_conn_abort(c, WS_ETIMEDOUT);
      return;
    }
    if (q->io.fd >= 0 && ws__dial_attempt_end(lc, p->now) < when)
      when = ws__dial_attempt_end(lc, p->now);
  }
  if (p->cfg.idle_timeout_ms && ws_conn_state(c) == WS_STATE_OPEN) {
    /* ms since the last input (32 bits, wrapping: differences only) */
    uint32_t quiet = (uint32_t)p->now - q->last_rx;
    uint64_t idle = p->now;
    if (quiet < p->cfg.idle_timeout_ms) idle += p->cfg.idle_timeout_ms - quiet;
    if (quiet >= p->cfg.idle_timeout_ms) {
      if (ws_close(c, WS_CLOSE_GOING_AWAY, "idle", 4) == WS_ECLOSED ||
          (q->io.flags & WS__LC_DEAD))
        return;
      when = ws_conn_next_deadline(c);
      if (when <= p->now) when = p->now;
    } else if (idle < when) {
      when = idle;
    }
  }
  if (q->io.flags & WS__LC_CONNECTING)
    ev = q->io.fd >= 0 ? ws__dial_wants(lc) : 0u; /* no socket while resolving */
  else
    ev = (ws_conn_want_read(c) ? WS__LOOP_IN : 0u) |
         (ws_conn_want_write(c) ? WS__LOOP_OUT : 0u);
#if WS_ENABLE_MBEDTLS
  if (q->tls && !(q->io.flags & WS__LC_CONNECTING)) {
    unsigned w = ws_tls_wants((const ws_tls *)q->tls);
    if (w & WS_TLS_HANDSHAKING) ev = 0; /* the TLS handshake decides */
    if (w & WS_TLS_WANT_READ) ev |= WS__LOOP_IN;
    if (w & WS_TLS_WANT_WRITE) ev |= WS__LOOP_OUT;
  }
#endif
  if (q->io.flags & WS__LC_RATIONED) ev &= ~(unsigned)WS__LOOP_IN; /* read in the ration */
  if (ev != q->io.events && ws__be_set(p, &q->io, ev) != WS_OK) {
    ws_conn_abort(c, WS_EIO);
    return;
  }
  if (ws__tn_set(l, &q->tn, when) != WS_OK) ws_conn_abort(c, WS_ENOMEM);
}

static void ws__loop_flush_pending(ws_loop *l) {
  struct ws__loop_priv *p = WS__LP(l);
  while (p->pend) {
    ws_loop_conn *lc = p->pend;
    p->pend = lc->ws__l.pend;
    lc->ws__l.io.flags &= (unsigned short)~WS__LC_PEND;
    ws__loop_update(l, lc);
  }
}

/* Input on a connection. A plain socket whose connection holds no input is
 * read into the loop's one receive buffer and processed there, in place:
 * no per-connection buffer is allocated for whole frames. Anything else
 * (TLS, a handshake, a frame or message still arriving, end of stream, an
 * error) goes through the connection's own read. */
static int ws__loop_readable(ws_loop *l, ws_loop_conn *lc, size_t share) {
  struct ws__loop_priv *p = WS__LP(l);
  struct ws__loop_conn_priv *q = &lc->ws__l;
  ws_conn *c = &lc->conn;
  int rc = WS_OK;
  p->rquota = share; /* this event's share (see ws__loop_read) */
  while (p->rquota > 0) {
    ssize_t r;
    size_t want = p->rquota;
    if (q->tls || p->rbusy || ws_conn_state(c) != WS_STATE_OPEN ||
        ws_conn_buffered(c) != 0 || !ws_conn_want_read(c))
      return ws_conn_on_readable(c);
    if (p->rbuf == NULL &&
        (p->rbuf = (unsigned char *)ws__loop_alloc(l, NULL, WS__LOOP_RBUF)) == NULL)
      return ws_conn_on_readable(c);
    r = recv(q->io.fd, p->rbuf, want, 0);
    if (r <= 0) {
      if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return rc;
      if (r < 0 && errno == EINTR) continue;
      return ws_conn_on_readable(c); /* its own read meets the end or error */
    }
    p->rquota -= (size_t)r;
    q->last_rx = (uint32_t)p->now;
    p->rbusy = 1;
    rc = ws_conn_feed_inplace(c, p->rbuf, (size_t)r);
    p->rbusy = 0;
    if (rc == WS_ECLOSED || (q->io.flags & WS__LC_DEAD)) return WS_ECLOSED;
    if ((size_t)r < want) break; /* the socket is empty */
  }
  return rc;
}

/* Readiness on a connection. */
static void ws__loop_conn_event(ws_loop *l, ws_loop_conn *lc, unsigned ev) {
  struct ws__loop_priv *p = WS__LP(l);
  struct ws__loop_conn_priv *q = &lc->ws__l;
  ws_conn *c = &lc->conn;
  if (q->io.flags & WS__LC_CONNECTING) {
    int err = 0;
    socklen_t len = sizeof err;
    if (!ws__dial_proxying(lc) && getsockopt(q->io.fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
      err = errno;
    if (err == EINPROGRESS || err == EALREADY || err == EINTR) return;
    if (err != 0) { /* refused, unreachable: the next address, if any */
      if ((q->io.flags & WS__LC_DIAL) && ws__dial_next(l, lc) == WS_OK) return;
      q->io.flags &= (unsigned short)~WS__LC_CONNECTING;
      ws_conn_abort(c, WS_EIO);
      return;
    }
    /* Through a proxy, the tunnel first: the connection stays connecting
     * (its request waits) until the proxy said yes. */
    if ((q->io.flags & WS__LC_DIAL) && (err = ws__proxy_step(l, lc)) != WS_OK) {
      if (err == WS_EAGAIN) {
        ws__loop_touch(lc);
        return;
      }
      q->io.flags &= (unsigned short)~WS__LC_CONNECTING;
      ws_conn_abort(c, err);
      return;
    }
    q->io.flags &= (unsigned short)~WS__LC_CONNECTING;
    if ((q->io.flags & WS__LC_DIAL) && (err = ws__dial_connected(lc)) != WS_OK) {
      ws_conn_abort(c, err);
      return;
    }
    ev = WS__LOOP_OUT;
  }
  q->io.flags &= (unsigned short)~WS__LC_DRAINED; /* a new event: read */
  if (ev & WS__LOOP_IN) {
    if (ws__loop_readable(l, lc, p->evshare) == WS_ECLOSED ||
        (q->io.flags & WS__LC_DEAD))
      return;
    if (p->rquota == 0) ws__lc_ration(p, lc); /* it has more: see there */
  }
  if (ev & WS__LOOP_OUT) {
    size_t before = ws_conn_queued(c);
    if (ws_conn_on_writable(c) == WS_ECLOSED || (q->io.flags & WS__LC_DEAD)) return;
    if (before > 0 && ws_conn_queued(c) == 0 && (q->io.flags & WS__LC_WAITED)) {
      q->io.flags &= (unsigned short)~WS__LC_WAITED;
      if (p->cb.on_drain && ws_conn_state(c) == WS_STATE_OPEN)
        p->cb.on_drain(c, ws_conn_user(c));
      if (q->io.flags & WS__LC_DEAD) return;
    }
    /* Input paused for backpressure may go on now (a rationed connection's
     * waits for its turn in the ration). */
    if (ws_conn_want_read(c) && !(ev & WS__LOOP_IN) &&
        !(q->io.flags & WS__LC_RATIONED)) {
      q->io.flags &= (unsigned short)~WS__LC_DRAINED;
      p->rquota = p->evshare;
      if (ws_conn_on_readable(c) == WS_ECLOSED || (q->io.flags & WS__LC_DEAD))
        return;
      if (p->rquota == 0) ws__lc_ration(p, lc);
    }
  }
  ws__loop_touch(lc);
}

/* Starts a server connection on fd with `data` already read. */
static int ws__loop_start_server(ws_loop *l, int fd, const void *data,
                                 size_t len, void *user, ws_conn **out) {
  struct ws__loop_priv *p = WS__LP(l);
  ws_loop_conn *lc;
  int rc;
  lc = ws__loop_new_conn(l, fd, &p->cfg.server, user);
  if (out) *out = NULL;
  if (lc == NULL) return WS_ENOMEM;
  if (ws__be_set(p, &lc->ws__l.io, WS__LOOP_IN) != WS_OK) {
    lc->ws__l.io.fd = -1; /* the caller still owns fd */
    ws__loop_discard(l, lc);
    return WS_EIO;
  }
  /* Started now (ws.h): on_close is owed from here, so every path that
   * ends it (ws_loop_free() included) goes through on_close; and the
   * handshake timer runs from the accept. */
  (void)ws_conn_tick(&lc->conn, ws__loop_clock());
  if (len > 0) {
    rc = ws_conn_feed(&lc->conn, data, len);
    if (rc == WS_ECLOSED || (lc->ws__l.io.flags & WS__LC_DEAD)) return WS_ECLOSED;
  }
  ws__loop_touch(lc);
  if (out) *out = &lc->conn;
  return WS_OK;
}

/* Handoff mode: an accepted socket on the group's acceptor goes to the
 * next loop in turn, through its post queue (the fd travels as the
 * post's argument, so nothing is allocated beyond the post). */
static void ws__group_adopt(ws_loop *l, void *arg) {
  int fd = (int)(intptr_t)arg, rc;
  rc = ws_loop_adopt(l, fd, NULL, 0, WS__LP(l)->user, NULL);
  /* WS_ECLOSED: the loop owns fd and closed it; otherwise still ours. */
  if (rc != WS_OK && rc != WS_ECLOSED) close(fd);
}

/* 1 when fd went to another loop (or was closed), 0 to accept it here. */
static int ws__group_handoff(ws_loop *l, ws_loop_group *g, int fd) {
  struct ws__loop_group_priv *gp = &g->ws__g;
  ws_loop *to = gp->loops[gp->next++ % gp->n];
  int rc;
  if (to == l) return 0;
  rc = ws_loop_post(to, ws__group_adopt, (void *)(intptr_t)fd);
  /* WS_EIO: queued all the same, it runs at a later wake-up. */
  if (rc != WS_OK && rc != WS_EIO) close(fd);
  return 1;
}

static void ws__loop_accept(ws_loop *l, ws__listener *ls) {
  struct ws__loop_priv *p = WS__LP(l);
  int i;
  for (i = 0; i < 64 && !p->shutting; i++) {
#if defined(__linux__) && defined(_GNU_SOURCE) && defined(SOCK_NONBLOCK)
    /* Non-blocking and close-on-exec at once; TCP_NODELAY comes from the
     * listener (Linux copies it to accepted sockets). */
    int fd = accept4(ls->io.fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
#define WS__ACCEPT4 1
#else
    int fd = accept(ls->io.fd, NULL, NULL), one = 1;
#endif
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
          errno == ENOMEM) {
        /* Out of descriptors: stop accepting until a connection ends,
         * instead of spinning on a listener that stays readable. */
        ws__listener *it;
        p->paused = 1;
        for (it = (ws__listener *)p->listeners; it; it = it->next)
          if (it->io.fd >= 0) (void)ws__be_set(p, &it->io, 0);
      }
      return;
    }
#ifndef WS__ACCEPT4
    if (ws__io_nonblock(fd) < 0) {
      close(fd);
      continue;
    }
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
#endif
    if (ls->group && ws__group_handoff(l, ls->group, fd)) continue;
    {
      ws_conn *c = NULL;
      if (ws__loop_start_server(l, fd, NULL, 0, p->user, &c) == WS_ENOMEM) {
        close(fd); /* refused: max_conns, or no memory */
        continue;
      }
#if WS_ENABLE_MBEDTLS
      if (c && ls->tls) { /* nothing was read yet: TLS goes under it now */
        ws_tls *t = NULL;
        if (ws_tls_new(&t, ls->tls, fd, NULL) != WS_OK)
          ws_conn_abort(c, WS_ENOMEM);
        else
          ws__lc_tls_set(WS__LC(c), t);
      }
#else
      (void)c;
#endif
    }
  }
}

/* Listeners ---------------------------------------------------------------- */

static int ws__loop_add_listener(ws_loop *l, int fd, ws_tls_config *tls) {
  struct ws__loop_priv *p = WS__LP(l);
  ws__listener *ls;
  if (ws__io_nonblock(fd) < 0) return WS_EIO;
  ls = (ws__listener *)ws__loop_alloc(l, NULL, sizeof *ls);
  if (ls == NULL) return WS_ENOMEM;
  memset(ls, 0, sizeof *ls);
  ls->io.fd = fd;
  ls->io.pidx = -1;
  ls->io.kind = WS__IO_LISTENER;
  ls->tls = tls;
  if (ws__be_set(p, &ls->io, WS__LOOP_IN) != WS_OK) {
    ws__loop_alloc(l, ls, 0);
    return WS_EIO;
  }
  ls->next = (ws__listener *)p->listeners;
  p->listeners = ls;
  return WS_OK;
}

/* A numeric IPv4 or IPv6 host and a port as a socket address; 0, or -1
 * when host is not a numeric address. */
static int ws__loop_numeric(const char *host, unsigned port,
                            struct sockaddr_storage *ss, socklen_t *alen) {
  struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
  struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
  memset(ss, 0, sizeof *ss);
  if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
    a4->sin_family = AF_INET;
    a4->sin_port = htons((uint16_t)port);
    *alen = sizeof *a4;
  } else if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
    a6->sin6_family = AF_INET6;
    a6->sin6_port = htons((uint16_t)port);
    *alen = sizeof *a6;
  } else {
    return -1;
  }
  return 0;
}

/* see ws.h */
int ws_loop_listen_fd(ws_loop *l, int fd) {
  WS__LOOP_THREAD(l);
  if (fd < 0) return WS_EINVAL;
  return ws__loop_add_listener(l, fd, NULL);
}

/* The option that lets sockets share a port with the kernel spreading
 * connections over them. macOS and older BSDs have SO_REUSEPORT without
 * the spreading (the last socket bound takes everything): not used. */
#if defined(SO_REUSEPORT_LB)
#define WS__REUSEPORT SO_REUSEPORT_LB
#elif defined(SO_REUSEPORT) && (defined(__linux__) || defined(__DragonFly__))
#define WS__REUSEPORT SO_REUSEPORT
#endif

/* see ws.h */
int ws_loop_has_reuseport(void) {
#ifdef WS__REUSEPORT
  return 1;
#else
  return 0;
#endif
}

static int ws__loop_listen(ws_loop *l, const char *host, unsigned port,
                           ws_tls_config *tls, int reuseport,
                           unsigned *bound_port) {
  struct sockaddr_storage ss;
  struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
  struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
  socklen_t alen;
  int fd, one = 1, rc;
  WS__LOOP_THREAD(l);
  if (port > 65535) return WS_EINVAL;
  if (reuseport && !ws_loop_has_reuseport()) return WS_EINVAL;
  if (host == NULL) host = "::";
  if (ws__loop_numeric(host, port, &ss, &alen) != 0) return WS_EINVAL;
  fd = socket(ss.ss_family, SOCK_STREAM, 0);
  if (fd < 0) return WS_EIO;
#ifdef _WIN32 /* there SO_REUSEADDR would let others bind the port too */
  (void)setsockopt(fd, SOL_SOCKET, SO_EXCLUSIVEADDRUSE, &one, sizeof one);
#else
  (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
#endif
#ifdef WS__REUSEPORT
  if (reuseport &&
      setsockopt(fd, SOL_SOCKET, WS__REUSEPORT, &one, sizeof one) < 0) {
    int e = errno;
    close(fd);
    errno = e;
    return WS_EIO;
  }
#endif
  (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (ss.ss_family == AF_INET6) {
    int v6only = strcmp(host, "::") != 0;
    (void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof v6only);
  }
  if (bind(fd, (struct sockaddr *)&ss, alen) < 0 ||
      listen(fd, WS__LP(l)->cfg.backlog) < 0) {
    int e = errno;
    close(fd);
    errno = e;
    return WS_EIO;
  }
  if (bound_port) {
    alen = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &alen) == 0)
      *bound_port = ntohs(ss.ss_family == AF_INET ? a4->sin_port : a6->sin6_port);
  }
  rc = ws__loop_add_listener(l, fd, tls);
  if (rc != WS_OK) close(fd);
  return rc;
}

/* see ws.h */
int ws_loop_listen(ws_loop *l, const char *host, unsigned port,
                   unsigned *bound_port) {
  return ws__loop_listen(l, host, port, NULL, WS__LP(l)->cfg.reuseport,
                         bound_port);
}

/* see ws.h */
int ws_loop_listen_tls(ws_loop *l, const char *host, unsigned port,
                       ws_tls_config *tls, unsigned *bound_port) {
#if WS_ENABLE_MBEDTLS
  if (tls == NULL) return WS_EINVAL;
  return ws__loop_listen(l, host, port, tls, WS__LP(l)->cfg.reuseport,
                         bound_port);
#else
  (void)l, (void)host, (void)port, (void)tls, (void)bound_port;
  return WS_EINVAL;
#endif
}

/* Connecting --------------------------------------------------------------- */

/* Splits "ws[s]://host[:port][/path]" into its parts (host without
 * brackets); *tls is 1 for wss://. */
static int ws__loop_parse_url(const char *url, char *host, size_t hcap,
                              unsigned *port, const char **path, int *tls) {
  const char *h, *e, *colon = NULL;
  size_t n;
  if (strncmp(url, "ws://", 5) == 0) {
    *tls = 0;
    h = url + 5;
  } else if (strncmp(url, "wss://", 6) == 0) {
    *tls = 1;
    h = url + 6;
  } else {
    return WS_EINVAL;
  }
  if (*h == '[') {
    e = strchr(h, ']');
    if (e == NULL) return WS_EINVAL;
    n = (size_t)(e - h - 1);
    if (n == 0 || n >= hcap) return WS_EINVAL;
    memcpy(host, h + 1, n);
    e++;
    if (*e == ':') colon = e;
  } else {
    e = h;
    while (*e && *e != ':' && *e != '/' && *e != '?') e++;
    n = (size_t)(e - h);
    if (n == 0 || n >= hcap) return WS_EINVAL;
    memcpy(host, h, n);
    if (*e == ':') colon = e;
  }
  host[n] = '\0';
  *port = *tls ? 443 : 80;
  if (colon) {
    unsigned long v = 0;
    e = colon + 1;
    if (*e < '0' || *e > '9') return WS_EINVAL;
    while (*e >= '0' && *e <= '9') {
      v = v * 10 + (unsigned long)(*e - '0');
      if (v > 65535) return WS_EINVAL;
      e++;
    }
    if (v == 0) return WS_EINVAL;
    *port = (unsigned)v;
  }
  if (*e != '\0' && *e != '/' && *e != '?') return WS_EINVAL;
  *path = *e ? e : "/";
  return WS_OK;
}

/* Posts to a loop's queue from any thread (ws_loop_post(), and resolver
 * threads whether or not the loop still exists): the queue is reference
 * counted, and the wake-up is written under its lock, so that
 * ws_loop_free() (which closes the queue under that lock before it closes
 * the pipe) never has it written after the close. WS_ECLOSED once the loop
 * is being freed (fn will not run, arg is the caller's); WS_EIO when the
 * wake-up could not be written (queued all the same). */
static int ws__post_q_push(ws__post_q *q, void (*fn)(ws_loop *l, void *arg),
                           void *arg) {
  int rc = WS_OK;
  ws__post_item *it = (ws__post_item *)malloc(sizeof *it);
  if (it == NULL) return WS_ENOMEM;
  it->fn = fn;
  it->arg = arg;
  it->next = NULL;
  pthread_mutex_lock(&q->mu);
  if (q->closed) {
    pthread_mutex_unlock(&q->mu);
    free(it);
    return WS_ECLOSED;
  }
  if (q->tail) {
    q->tail->next = it;
  } else {
    char b = 1;
    ssize_t r;
    q->head = it;
    do r = write(q->wake_w, &b, 1);
    while (r < 0 && errno == EINTR);
    /* EAGAIN: the pipe is full, so a wake-up is pending anyway. */
    if (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK) rc = WS_EIO;
  }
  q->tail = it;
  pthread_mutex_unlock(&q->mu);
  return rc;
}

static void ws__post_q_unref(ws__post_q *q) {
  int last;
  pthread_mutex_lock(&q->mu);
  last = --q->refs == 0;
  pthread_mutex_unlock(&q->mu);
  if (last) {
    pthread_mutex_destroy(&q->mu);
    free(q);
  }
}

/*
 * Names resolve off the loop's thread: getaddrinfo() blocks for as long as
 * the resolver takes. A loop starts up to WS__RESOLVERS worker threads on
 * demand; each takes jobs from the loop's queue until it is empty, then
 * ends. A result comes back as a post. A job belongs to its connection
 * until a worker takes it; a connection that goes away first cancels it:
 * a waiting job is dropped at once, a running one is marked and freed by
 * whoever sees it next. The workers hold references on the pool and the
 * post queue, so ws_loop_free() never waits for a slow name.
 */
#ifndef WS__RESOLVERS
#define WS__RESOLVERS 4
#endif
enum { WS__RJ_QUEUED, WS__RJ_RUNNING, WS__RJ_POSTED, WS__RJ_ORPHAN };

struct ws__resolver;
typedef struct ws__rjob {
  struct ws__rjob *next;
  struct ws__resolver *r;
  ws_loop_conn *lc; /* NULL once the connection is gone (under r->mu) */
  int state;        /* WS__RJ_*, under r->mu */
  int rc;           /* getaddrinfo()'s */
  struct addrinfo *res;
  char host[256], service[8];
} ws__rjob;

typedef struct ws__resolver {
  pthread_mutex_t mu;
  ws__rjob *head, *tail; /* waiting for a worker */
  int threads, refs;     /* refs: the loop's and one per worker */
  ws__post_q *q;         /* holds a reference */
} ws__resolver;

/* A client connection between ws_loop_connect() and its TCP connection. */
#ifndef WS__DIAL_MAX
#define WS__DIAL_MAX 8 /* addresses tried per connection */
#endif
typedef struct ws__dial {
  ws__rjob *job;           /* resolving: the job, else NULL */
  void *tc;                /* wss://: the ws_tls_config */
  uint64_t attempt_end;    /* loop time to give up on this address */
  int naddr, next;         /* addresses, and the next to try */
  struct sockaddr_storage addr[WS__DIAL_MAX];
  socklen_t alen[WS__DIAL_MAX];
  char host[256];          /* SNI and the certificate's name */
  /* Through an HTTP proxy (ws__proxy_step): the CONNECT request, then the
   * reply's head; NULL for a direct connection. */
  char *px;
  size_t pxlen, pxdone;    /* request length / written; then reply bytes */
  int pxstate;             /* WS__PX_* */
  int pxstatus;            /* the proxy's reply status, once read */
  char pxerr[96];          /* why the tunnel failed; "" until then */
} ws__dial;

enum { WS__PX_NONE, WS__PX_SEND, WS__PX_READ };

#define WS__DIAL(lc) ((ws__dial *)(lc)->ws__l.subs)

/* When to give up on the address being tried. Worked out at the first
 * update after its connect() (the handshake timer runs by then): the last
 * address has what is left of the connection's timeout; the others share
 * it out equally, at least 250 ms each (5 s each without a timeout). */
static uint64_t ws__dial_attempt_end(ws_loop_conn *lc, uint64_t now) {
  ws__dial *d = WS__DIAL(lc);
  if (d->attempt_end == 0) {
    int left = d->naddr - d->next + 1;
    if (left <= 1) {
      d->attempt_end = WS__LOOP_NEVER;
    } else {
      uint64_t end = ws_conn_next_deadline(&lc->conn), share = 5000;
      if (end != WS__LOOP_NEVER && end > now) share = (end - now) / (uint64_t)left;
      if (share < 250) share = 250;
      d->attempt_end = now + share;
    }
  }
  return d->attempt_end;
}

static void ws__rjob_free(ws__rjob *j) {
  if (j->res) freeaddrinfo(j->res);
  free(j);
}

static void ws__resolver_unref_locked(ws__resolver *r, int *last) {
  *last = --r->refs == 0;
}

static void ws__resolver_destroy(ws__resolver *r) {
  pthread_mutex_destroy(&r->mu);
  ws__post_q_unref(r->q);
  free(r);
}

static void ws__resolved(ws_loop *l, void *arg);

static void *ws__resolver_main(void *arg) {
  ws__resolver *r = (ws__resolver *)arg;
  int last, rc;
  pthread_mutex_lock(&r->mu);
  while (r->head) {
    ws__rjob *j = r->head;
    struct addrinfo hints;
    r->head = j->next;
    if (r->head == NULL) r->tail = NULL;
    j->state = WS__RJ_RUNNING;
    pthread_mutex_unlock(&r->mu);
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    /* No AI_ADDRCONFIG: it would drop ::1 and 127.0.0.1 on a host without
     * other addresses of that family; an address that cannot be reached
     * fails at once and the next is tried. */
    j->rc = getaddrinfo(j->host, j->service, &hints, &j->res);
    pthread_mutex_lock(&r->mu);
    if (j->lc == NULL) { /* cancelled while it ran */
      ws__rjob_free(j);
      continue;
    }
    j->state = WS__RJ_POSTED;
    /* Not queued (the loop is being freed, or no memory): its connection's
     * end frees the job. WS_EIO is queued all the same. */
    rc = ws__post_q_push(r->q, ws__resolved, j);
    if (rc == WS_ECLOSED || rc == WS_ENOMEM) j->state = WS__RJ_ORPHAN;
  }
  r->threads--;
  ws__resolver_unref_locked(r, &last);
  pthread_mutex_unlock(&r->mu);
  if (last) ws__resolver_destroy(r);
  return NULL;
}

/* Queues the resolution of host:port for lc, starting a worker if fewer
 * than WS__RESOLVERS run. */
static int ws__resolve(ws_loop *l, ws_loop_conn *lc, const char *host,
                       unsigned port) {
  struct ws__loop_priv *p = WS__LP(l);
  ws__resolver *r = (ws__resolver *)p->resolver;
  ws__post_q *q = (ws__post_q *)p->post;
  ws__rjob *j;
  int rc = WS_OK;
  if (r == NULL) {
    r = (ws__resolver *)calloc(1, sizeof *r);
    if (r == NULL) return WS_ENOMEM;
    pthread_mutex_init(&r->mu, NULL);
    r->refs = 1;
    r->q = q;
    pthread_mutex_lock(&q->mu);
    q->refs++;
    pthread_mutex_unlock(&q->mu);
    p->resolver = r;
  }
  j = (ws__rjob *)calloc(1, sizeof *j);
  if (j == NULL) return WS_ENOMEM;
  snprintf(j->host, sizeof j->host, "%s", host);
  snprintf(j->service, sizeof j->service, "%u", port);
  j->r = r;
  j->lc = lc;
  j->state = WS__RJ_QUEUED;
  pthread_mutex_lock(&r->mu);
  if (r->tail)
    r->tail->next = j;
  else
    r->head = j;
  r->tail = j;
  if (r->threads < WS__RESOLVERS) {
    pthread_t th;
    pthread_attr_t at;
    sigset_t all, old;
    /* Signals stay with the application's threads. */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&th, &at, ws__resolver_main, r) == 0) {
      r->threads++;
      r->refs++;
    } else if (r->threads == 0) { /* no worker would ever take it */
      r->head = r->tail = NULL;
      free(j);
      j = NULL;
      rc = WS_ENOMEM;
    }
    pthread_attr_destroy(&at);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
  }
  pthread_mutex_unlock(&r->mu);
  if (j) WS__DIAL(lc)->job = j;
  return rc;
}

/* The loop's end: its reference on the pool goes; running workers finish
 * their name and end. Every connection has been released already. */
static void ws__resolver_release(struct ws__loop_priv *p) {
  ws__resolver *r = (ws__resolver *)p->resolver;
  int last;
  if (r == NULL) return;
  p->resolver = NULL;
  pthread_mutex_lock(&r->mu);
  ws__resolver_unref_locked(r, &last);
  pthread_mutex_unlock(&r->mu);
  if (last) ws__resolver_destroy(r);
}

/* A dialling connection ends (opened, failed or dropped): cancels its
 * resolution and frees its state. */
static void ws__dial_end(ws_loop_conn *lc) {
  ws__dial *d = WS__DIAL(lc);
  if (!(lc->ws__l.io.flags & WS__LC_DIAL)) return;
  lc->ws__l.io.flags &= (unsigned short)~WS__LC_DIAL;
  lc->ws__l.subs = NULL;
  free(d->px);
  if (d->job) {
    ws__rjob *j = d->job;
    ws__resolver *r = j->r;
    pthread_mutex_lock(&r->mu);
    if (j->state == WS__RJ_QUEUED) {
      ws__rjob **pp = &r->head, *prev = NULL;
      while (*pp != j) {
        prev = *pp;
        pp = &(*pp)->next;
      }
      *pp = j->next;
      if (r->tail == j) r->tail = prev;
      ws__rjob_free(j);
    } else if (j->state == WS__RJ_ORPHAN) {
      ws__rjob_free(j);
    } else { /* running, or its result posted: whoever sees it next frees it */
      j->lc = NULL;
    }
    pthread_mutex_unlock(&r->mu);
  }
  free(d);
}

/* Closes the address being tried, if any, and starts a non-blocking
 * connect() to the next one. WS_EIO when none is left. */
static int ws__dial_next(ws_loop *l, ws_loop_conn *lc) {
  struct ws__loop_priv *p = WS__LP(l);
  struct ws__loop_conn_priv *q = &lc->ws__l;
  ws__dial *d = WS__DIAL(lc);
  if (q->io.fd >= 0) {
    (void)ws__be_set(p, &q->io, 0);
    close(q->io.fd);
    q->io.fd = -1;
  }
  while (d->next < d->naddr) {
    int i = d->next++, one = 1;
    int fd = socket(d->addr[i].ss_family, SOCK_STREAM, 0);
    if (fd < 0) continue;
    if (ws__io_nonblock(fd) < 0) {
      close(fd);
      continue;
    }
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&d->addr[i], d->alen[i]) < 0 &&
        errno != EINPROGRESS && errno != EINTR) {
      close(fd);
      continue;
    }
    q->io.fd = fd;
    q->io.flags |= WS__LC_CONNECTING;
    d->attempt_end = 0; /* ws__dial_attempt_end() works it out */
    ws__loop_touch(lc);
    return WS_OK;
  }
  return WS_EIO;
}

/*
 * HTTP proxies. A client behind one opens a tunnel with CONNECT, for ws://
 * as for wss:// (a proxy that forwards a plain GET may well drop the
 * Upgrade header), then speaks to the server through it as it would
 * directly: TLS inside the tunnel, with the server's name.
 */

/* Case-insensitive equality of n bytes, ASCII only (no locale). */
static int ws__px_ieq(const char *a, const char *b, size_t n) {
  size_t i;
  for (i = 0; i < n; i++) {
    int x = (unsigned char)a[i], y = (unsigned char)b[i];
    if (x >= 'A' && x <= 'Z') x += 32;
    if (y >= 'A' && y <= 'Z') y += 32;
    if (x != y) return 0;
  }
  return 1;
}

/* 1 when no_proxy's comma list names host: "*", the host itself, or a
 * domain it is in ("example.com" and ".example.com" both match
 * example.com and www.example.com, not badexample.com); IPv6 addresses
 * with or without brackets; no ports, no CIDR ranges. */
static int ws__no_proxy(const char *list, const char *host) {
  size_t hl = strlen(host);
  while (*list) {
    const char *s = list, *e;
    size_t n;
    while (*s == ' ' || *s == '\t' || *s == ',') s++;
    for (e = s; *e && *e != ','; e++) {}
    list = e;
    n = (size_t)(e - s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t')) n--;
    if (n == 1 && *s == '*') return 1;
    if (n > 0 && *s == '.') s++, n--;
    if (n >= 2 && *s == '[' && s[n - 1] == ']') s++, n -= 2;
    if (n > 0 && s[n - 1] == '.') n--;
    if (n == 0) continue;
    if (hl == n && ws__px_ieq(host, s, n)) return 1;
    if (hl > n && host[hl - n - 1] == '.' && ws__px_ieq(host + hl - n, s, n))
      return 1;
  }
  return 0;
}

static const char *ws__px_getenv(const char *lower, const char *upper) {
  const char *v = getenv(lower);
  if ((v == NULL || *v == '\0') && upper) v = getenv(upper);
  return v && *v ? v : NULL;
}

/* The proxy to use for a connection to host: opt when the caller gave one
 * ("" for none), else the environment as curl reads it: ws_proxy then
 * http_proxy (lower case only: a CGI program's HTTP_PROXY is the request's
 * "Proxy:" header) for ws://; wss_proxy then https_proxy for wss://; then
 * all_proxy; each in lower case first, then upper; no_proxy (or NO_PROXY)
 * exempts hosts. NULL: connect directly. */
static const char *ws__proxy_for(const char *opt, int tls, const char *host) {
  const char *v, *np;
  if (opt) return *opt ? opt : NULL;
  if (tls) {
    v = ws__px_getenv("wss_proxy", "WSS_PROXY");
    if (v == NULL) v = ws__px_getenv("https_proxy", "HTTPS_PROXY");
  } else {
    v = ws__px_getenv("ws_proxy", "WS_PROXY");
    if (v == NULL) v = ws__px_getenv("http_proxy", NULL);
  }
  if (v == NULL) v = ws__px_getenv("all_proxy", "ALL_PROXY");
  np = ws__px_getenv("no_proxy", "NO_PROXY");
  if (v && np && ws__no_proxy(np, host)) v = NULL;
  return v;
}

static int ws__px_hex(int c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* Appends s[0..n) percent-decoded to out (at *o, cap bytes). */
static int ws__px_decode(const char *s, size_t n, char *out, size_t *o,
                         size_t cap) {
  size_t i;
  for (i = 0; i < n; i++) {
    int c = (unsigned char)s[i];
    if (c == '%') {
      int h = i + 2 < n ? ws__px_hex(s[i + 1]) : -1;
      int lo = h >= 0 ? ws__px_hex(s[i + 2]) : -1;
      if (lo < 0) return WS_EINVAL;
      c = h * 16 + lo;
      i += 2;
    }
    if (*o + 1 >= cap) return WS_EINVAL;
    out[(*o)++] = (char)c;
  }
  return WS_OK;
}

/* Splits "[http://][user[:password]@]host[:port][/]": host without
 * brackets, port 1080 when none (curl's default), cred "user:password"
 * decoded ("" without a user). */
static int ws__proxy_parse(const char *url, char *host, size_t hcap,
                           unsigned *port, char *cred, size_t ccap) {
  const char *a = strstr(url, "://"), *end, *at = NULL, *h, *e;
  size_t n, o = 0;
  if (a) {
    if ((size_t)(a - url) != 4 || !ws__px_ieq(url, "http", 4)) return WS_EINVAL;
    a += 3;
  } else {
    a = url;
  }
  for (end = a; *end && *end != '/' && *end != '?' && *end != '#'; end++)
    if (*end == '@') at = end;
  cred[0] = '\0';
  if (at) {
    const char *colon = (const char *)memchr(a, ':', (size_t)(at - a));
    const char *ue = colon ? colon : at;
    if (ws__px_decode(a, (size_t)(ue - a), cred, &o, ccap) != WS_OK) return WS_EINVAL;
    if (o + 1 >= ccap) return WS_EINVAL;
    cred[o++] = ':';
    if (colon && ws__px_decode(colon + 1, (size_t)(at - colon - 1), cred, &o, ccap) != WS_OK)
      return WS_EINVAL;
    cred[o] = '\0';
    if (strchr(cred, '\r') || strchr(cred, '\n') || o != strlen(cred)) return WS_EINVAL;
    h = at + 1;
  } else {
    h = a;
  }
  if (*h == '[') {
    e = (const char *)memchr(h, ']', (size_t)(end - h));
    if (e == NULL) return WS_EINVAL;
    n = (size_t)(e - h - 1);
    h++;
    e++;
  } else {
    for (e = h; e < end && *e != ':'; e++) {}
    n = (size_t)(e - h);
  }
  if (n == 0 || n >= hcap) return WS_EINVAL;
  memcpy(host, h, n);
  host[n] = '\0';
  *port = 1080;
  if (e < end && *e == ':') {
    unsigned long v = 0;
    for (e++; e < end && *e >= '0' && *e <= '9'; e++)
      if ((v = v * 10 + (unsigned long)(*e - '0')) > 65535) return WS_EINVAL;
    if (v == 0) return WS_EINVAL;
    *port = (unsigned)v;
  }
  return e == end ? WS_OK : WS_EINVAL;
}

/* Base64 (RFC 4648) of in[0..n) into out, NUL-terminated. */
static void ws__px_b64(const unsigned char *in, size_t n, char *out) {
  static const char t[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  size_t i;
  for (i = 0; i + 2 < n; i += 3) {
    *out++ = t[in[i] >> 2];
    *out++ = t[((in[i] & 3) << 4) | (in[i + 1] >> 4)];
    *out++ = t[((in[i + 1] & 15) << 2) | (in[i + 2] >> 6)];
    *out++ = t[in[i + 2] & 63];
  }
  if (i < n) {
    *out++ = t[in[i] >> 2];
    *out++ = t[((in[i] & 3) << 4) | (i + 1 < n ? in[i + 1] >> 4 : 0)];
    *out++ = i + 1 < n ? t[(in[i + 1] & 15) << 2] : '=';
    *out++ = '=';
  }
  *out = '\0';
}

/* A connection to host:port through proxy: writes the CONNECT request
 * into d and gives the proxy's host and port, which are dialled instead. */
static int ws__proxy_setup(ws__dial *d, const char *proxy, const char *host,
                           unsigned port, char *phost, size_t pcap,
                           unsigned *pport) {
  char cred[512], auth[720], target[270];
  size_t n;
  const char *h;
  if (ws__proxy_parse(proxy, phost, pcap, pport, cred, sizeof cred) != WS_OK)
    return WS_EINVAL;
  for (h = host; *h; h++) /* it goes on the request line as it is */
    if ((unsigned char)*h <= 0x20 || *h == 0x7F) return WS_EINVAL;
  snprintf(target, sizeof target, strchr(host, ':') ? "[%s]:%u" : "%s:%u", host, port);
  auth[0] = '\0';
  if (cred[0]) {
    memcpy(auth, "Proxy-Authorization: Basic ", 27);
    ws__px_b64((const unsigned char *)cred, strlen(cred), auth + 27);
    strcat(auth, "\r\n");
  }
  n = 2 * strlen(target) + strlen(auth) + 64;
  if ((d->px = (char *)malloc(n)) == NULL) return WS_ENOMEM;
  d->pxlen = (size_t)snprintf(d->px, n, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n%s\r\n",
                              target, target, auth);
  return WS_OK;
}

/* 1 while a connection is inside its CONNECT exchange (its socket is
 * connected to the proxy, the tunnel is not open yet). */
static int ws__dial_proxying(ws_loop_conn *lc) {
  return (lc->ws__l.io.flags & WS__LC_DIAL) && WS__DIAL(lc)->pxstate != WS__PX_NONE;
}

/* What a connecting socket waits for: the proxy's reply, else writable
 * (connected). */
static unsigned ws__dial_wants(ws_loop_conn *lc) {
  return ws__dial_proxying(lc) && WS__DIAL(lc)->pxstate == WS__PX_READ ? WS__LOOP_IN
                                                                      : WS__LOOP_OUT;
}

/* Fails the tunnel: WS_EPROXY, with the reason ws_loop_proxy_status()
 * gives. */
static int ws__px_fail(ws__dial *d, const char *why, size_t n) {
  size_t i, o = 0;
  for (i = 0; i < n && o + 1 < sizeof d->pxerr; i++) /* printable only */
    d->pxerr[o++] = why[i] >= 0x20 && why[i] < 0x7F ? why[i] : '?';
  d->pxerr[o] = '\0';
  return WS_EPROXY;
}

/* Drives the CONNECT exchange on the socket connected to the proxy: sends
 * the request, reads the reply's head (at most cfg.client.max_handshake
 * bytes) and checks it. WS_OK once the tunnel is open (or at once, without
 * a proxy), WS_EAGAIN while waiting, WS_EPROXY (the proxy refused, or its
 * reply is not HTTP or too long), WS_EIO, WS_ENOMEM. */
static int ws__proxy_step(ws_loop *l, ws_loop_conn *lc) {
  ws__dial *d = WS__DIAL(lc);
  size_t cap = WS__LP(l)->cfg.client.max_handshake;
  int fd = lc->ws__l.io.fd, flags = 0;
  char *h;
#ifdef MSG_NOSIGNAL
  flags = MSG_NOSIGNAL;
#endif
  if (d->px == NULL) return WS_OK;
  if (cap > ((size_t)1 << 20)) cap = (size_t)1 << 20; /* the buffer: at most 1 MiB */
  if (d->pxstate == WS__PX_NONE) {
    d->pxstate = WS__PX_SEND;
    /* Connected: the proxy's address is the one; the connection's timeout
     * covers the rest (the proxy may take its time to reach the server). */
    d->attempt_end = WS__LOOP_NEVER;
  }
  while (d->pxstate == WS__PX_SEND) {
    ssize_t r = send(fd, d->px + d->pxdone, d->pxlen - d->pxdone, flags);
    if (r < 0) {
      if (errno == EINTR) continue;
      return errno == EAGAIN || errno == EWOULDBLOCK ? WS_EAGAIN : WS_EIO;
    }
    if ((d->pxdone += (size_t)r) < d->pxlen) continue;
    if ((h = (char *)realloc(d->px, cap + 1)) == NULL) return WS_ENOMEM;
    d->px = h;
    d->pxdone = 0;
    d->pxstate = WS__PX_READ;
  }
  for (;;) {
    ssize_t r = recv(fd, d->px + d->pxdone, cap - d->pxdone, 0);
    size_t i, st;
    if (r < 0) {
      if (errno == EINTR) continue;
      return errno == EAGAIN || errno == EWOULDBLOCK ? WS_EAGAIN : WS_EIO;
    }
    if (r == 0)
      return ws__px_fail(d, "proxy closed the connection before its reply ended", 50);
    d->pxdone += (size_t)r;
    h = d->px;
    h[d->pxdone] = '\0';
    if (memcmp(h, "HTTP/1.", d->pxdone < 7 ? d->pxdone : 7) != 0)
      return ws__px_fail(d, "proxy reply is not HTTP", 23);
    for (i = 3; i < d->pxdone; i++)
      if (memcmp(h + i - 3, "\r\n\r\n", 4) == 0) break;
    if (i == d->pxdone) {
      if (d->pxdone < cap) continue;
      snprintf(d->pxerr, sizeof d->pxerr,
               "proxy reply head over %lu bytes (max_handshake)", (unsigned long)cap);
      return WS_EPROXY;
    }
    /* "HTTP/1.x ddd[ reason]" */
    if (i < 12 || h[7] < '0' || h[7] > '9' || h[8] != ' ' || h[9] < '1' ||
        h[9] > '5' || h[10] < '0' || h[10] > '9' || h[11] < '0' || h[11] > '9' ||
        (h[12] != ' ' && h[12] != '\r'))
      return ws__px_fail(d, "proxy reply is not HTTP", 23);
    st = (size_t)(h[9] - '0') * 100 + (size_t)(h[10] - '0') * 10 + (size_t)(h[11] - '0');
    d->pxstatus = (int)st;
    if (st < 200 || st > 299) {
      size_t eol = (size_t)(strstr(h, "\r\n") - h);
      char why[96];
      snprintf(why, sizeof why, "proxy refused the tunnel: HTTP %.*s",
               (int)(eol - 9 < 60 ? eol - 9 : 60), h + 9);
      return ws__px_fail(d, why, strlen(why));
    }
    /* What follows a 2xx reply is the server's, which speaks only after
     * us: bytes here mean the proxy is not tunnelling. */
    if (i + 1 != d->pxdone)
      return ws__px_fail(d, "proxy sent bytes after its 2xx reply", 36);
    d->pxstate = WS__PX_NONE;
    return WS_OK;
  }
}

/* see ws.h */
int ws_loop_proxy_status(const ws_conn *c, const char **why) {
  ws_loop_conn *lc = WS__LC((ws_conn *)(uintptr_t)c);
  const ws__dial *d = (lc->ws__l.io.flags & WS__LC_DIAL) ? WS__DIAL(lc) : NULL;
  if (why) *why = d ? d->pxerr : "";
  return d ? d->pxstatus : 0;
}

/* The TCP connection is up: TLS starts (wss://) and dialling ends. */
static int ws__dial_connected(ws_loop_conn *lc) {
  ws__dial *d = WS__DIAL(lc);
#if WS_ENABLE_MBEDTLS
  if (d->tc) {
    ws_tls *t = NULL;
    int rc = ws_tls_new(&t, (ws_tls_config *)d->tc, lc->ws__l.io.fd, d->host);
    if (rc != WS_OK) return rc;
    ws__lc_tls_set(lc, t);
  }
#else
  (void)d;
#endif
  ws__dial_end(lc);
  return WS_OK;
}

/* A resolution's result, on the loop's thread. */
static void ws__resolved(ws_loop *l, void *arg) {
  ws__rjob *j = (ws__rjob *)arg;
  ws__resolver *r = j->r;
  ws_loop_conn *lc;
  ws__dial *d;
  struct addrinfo *ai;
  pthread_mutex_lock(&r->mu);
  lc = j->lc;
  pthread_mutex_unlock(&r->mu);
  if (lc == NULL) { /* the connection went meanwhile */
    ws__rjob_free(j);
    return;
  }
  d = WS__DIAL(lc);
  d->job = NULL;
  for (ai = j->rc == 0 ? j->res : NULL; ai && d->naddr < WS__DIAL_MAX; ai = ai->ai_next) {
    if ((ai->ai_family != AF_INET && ai->ai_family != AF_INET6) ||
        ai->ai_addrlen > sizeof d->addr[0])
      continue;
    memcpy(&d->addr[d->naddr], ai->ai_addr, ai->ai_addrlen);
    d->alen[d->naddr++] = (socklen_t)ai->ai_addrlen;
  }
  ws__rjob_free(j);
  if (d->naddr == 0) {
    ws_conn_abort(&lc->conn, WS_ERESOLVE);
    return;
  }
  if (ws__dial_next(l, lc) != WS_OK) ws_conn_abort(&lc->conn, WS_EIO);
}

/* see ws.h */
int ws_loop_connect(ws_loop *l, const char *url, const ws_client_opts *o,
                    void *user, ws_conn **out) {
  struct ws__loop_priv *p = WS__LP(l);
  char host[256], hosthdr[300], pathbuf[2048], dhost[256];
  const char *path, *proxy;
  unsigned port, dport;
  ws_client_opts opts;
  ws_loop_conn *lc;
  ws__dial *d;
  int rc, tls = 0, numeric;
  unsigned defport;
  ws_tls_config *tc = NULL;
  WS__LOOP_THREAD(l);
  if (out) *out = NULL;
  if (url == NULL) return WS_EINVAL;
  if (ws__loop_parse_url(url, host, sizeof host, &port, &path, &tls) != WS_OK)
    return WS_EINVAL;
  defport = tls ? 443 : 80;
  if (tls) {
#if WS_ENABLE_MBEDTLS
    tc = p->cfg.tls_client;
    if (tc == NULL) { /* verification on, the system's CAs */
      if (p->tls_default == NULL) {
        ws_tls_options to;
        ws_tls_config *dt = NULL;
        ws_tls_options_init(&to, WS_CLIENT);
        if (ws_tls_config_new(&dt, &to, NULL, 0) != WS_OK) return WS_EINVAL;
        p->tls_default = dt;
      }
      tc = (ws_tls_config *)p->tls_default;
    }
#else
    return WS_EINVAL;
#endif
  }
  if (strlen(path) >= sizeof pathbuf) return WS_EINVAL;
  memcpy(pathbuf, path, strlen(path) + 1);
  d = (ws__dial *)calloc(1, sizeof *d);
  if (d == NULL) return WS_ENOMEM;
  d->tc = tc;
  snprintf(d->host, sizeof d->host, "%s", host);
  /* Through a proxy, its address is dialled, and CONNECT names the host. */
  snprintf(dhost, sizeof dhost, "%s", host);
  dport = port;
  proxy = ws__proxy_for(o ? o->proxy : NULL, tls, host);
  if (proxy && (rc = ws__proxy_setup(d, proxy, host, port, dhost, sizeof dhost,
                                     &dport)) != WS_OK) {
    free(d);
    return rc;
  }
  /* A numeric host is its one address; a name resolves on a worker
   * thread (ws__resolve), and its addresses are tried in turn. */
  numeric = ws__loop_numeric(dhost, dport, &d->addr[0], &d->alen[0]) == 0;
  if (numeric) d->naddr = 1;
  if (strchr(host, ':')) /* an IPv6 address (a name has no colon) */
    snprintf(hosthdr, sizeof hosthdr, port == defport ? "[%s]" : "[%s]:%u", host, port);
  else
    snprintf(hosthdr, sizeof hosthdr, port == defport ? "%s" : "%s:%u", host, port);
  lc = ws__loop_new_conn(l, -1, &p->cfg.client, user);
  if (lc == NULL) {
    free(d->px);
    free(d);
    return WS_ENOMEM;
  }
  lc->ws__l.subs = d;
  lc->ws__l.io.flags |= WS__LC_CONNECTING | WS__LC_DIAL;
  if (o)
    opts = *o;
  else
    memset(&opts, 0, sizeof opts);
  if (opts.host == NULL) opts.host = hosthdr;
  if (opts.path == NULL) opts.path = pathbuf;
  rc = ws_client_start(&lc->conn, &opts); /* queued until connected */
  if (rc == WS_OK) rc = numeric ? ws__dial_next(l, lc) : ws__resolve(l, lc, dhost, dport);
  if (rc != WS_OK) {
    ws__loop_discard(l, lc); /* frees d, drops a queued resolution */
    return rc;
  }
  ws__loop_touch(lc); /* the handshake timeout runs from now */
  if (out) *out = &lc->conn;
  return WS_OK;
}

/* Reconnecting clients ----------------------------------------------------- */

/* see ws.h */
void ws_reconnect_init(ws_reconnect *r) {
  memset(r, 0, sizeof *r);
  r->first_ms = 5000;
  r->max_ms = 60000;
  r->growth_pct = 160;
  r->reset_ms = 30000;
}

/* A random delay in [0, bound): xorshift64*, seeded per client. */
static uint32_t ws__client_jitter(struct ws__loop_client_priv *k, uint32_t bound) {
  uint64_t x = k->rng;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  k->rng = x;
  return bound ? (uint32_t)(((x * 2685821657736338717ull) >> 32) % bound) : 0;
}

static void ws__client_unlink(struct ws__loop_priv *p, ws_loop_client *k) {
  struct ws__loop_client_priv *q = &k->ws__k;
  if (q->prev)
    q->prev->ws__k.next = q->next;
  else
    p->clients = q->next;
  if (q->next) q->next->ws__k.prev = q->prev;
  q->next = q->prev = NULL;
}

/* Ends a client's attempts for good; the caller's memory is its own again. */
static void ws__client_finish(ws_loop *l, ws_loop_client *k) {
  struct ws__loop_client_priv *q = &k->ws__k;
  if (!q->running) return;
  q->running = 0;
  ws_timer_stop(l, &q->timer);
  ws__client_unlink(WS__LP(l), k);
  free(q->url);
  q->url = NULL;
}

/* One attempt: the connection, or the error of a connect refused at once. */
static int ws__client_attempt(ws_loop *l, ws_loop_client *k) {
  struct ws__loop_client_priv *q = &k->ws__k;
  ws_conn *c = NULL;
  int rc;
  q->opened_at = 0;
  rc = ws_loop_connect(l, q->url, q->opts, q->user, &c);
  if (rc == WS_OK) {
    q->conn = c;
    WS__LC(c)->ws__l.io.flags |= WS__LC_KEPT;
  }
  return rc;
}

static void ws__client_timer(ws_loop *l, ws_timer *t, void *user) {
  ws_loop_client *k = (ws_loop_client *)user;
  int rc;
  (void)t;
  if ((rc = ws__client_attempt(l, k)) != WS_OK)
    ws__client_ended(l, k, rc == WS_EINVAL, 0); /* a failed attempt */
}

/* The client's connection ended (or never started): retry after a jittered
 * delay, or give up. st: the HTTP status that ended it (the server's, or
 * the proxy's), else 0. */
static void ws__client_ended(ws_loop *l, ws_loop_client *k, int final, int st) {
  struct ws__loop_priv *p = WS__LP(l);
  struct ws__loop_client_priv *q = &k->ws__k;
  ws_conn *c = q->conn;
  int err = c ? ws_conn_error(c) : WS_EIO;
  uint32_t delay;
  q->conn = NULL;
  if (!q->running) return;
  if (q->opened_at && p->now - q->opened_at >= q->pol.reset_ms) {
    q->fails = 0; /* it held: the delays start over */
    q->bound = q->pol.first_ms;
  }
  q->opened_at = 0;
  q->fails++;
  if (final || (q->pol.max_attempts && q->fails > q->pol.max_attempts)) {
    void (*give_up)(ws_loop_client *, int, int, void *) = q->pol.on_give_up;
    void *user = q->user;
    ws__client_finish(l, k);
    if (give_up) give_up(k, err, st, user);
    return;
  }
  delay = ws__client_jitter(q, q->bound);
  {
    uint64_t next = (uint64_t)q->bound * q->pol.growth_pct / 100;
    q->bound = next > q->pol.max_ms ? q->pol.max_ms : (uint32_t)next;
    if (q->bound == 0) q->bound = 1;
  }
  if (q->pol.on_attempt && q->pol.on_attempt(k, q->fails, delay, err, st, q->user)) {
    void (*give_up)(ws_loop_client *, int, int, void *) = q->pol.on_give_up;
    void *user = q->user;
    ws__client_finish(l, k);
    if (give_up) give_up(k, err, st, user);
    return;
  }
  if (q->running) ws_timer_start(l, &q->timer, delay, 0, ws__client_timer, k);
}

/* see ws.h */
int ws_loop_client_start(ws_loop *l, ws_loop_client *k, const char *url,
                         const ws_client_opts *o, const ws_reconnect *r,
                         void *user) {
  struct ws__loop_priv *p = WS__LP(l);
  struct ws__loop_client_priv *q;
  char host[256];
  const char *path;
  unsigned port;
  int tls = 0, rc;
  size_t n;
  WS__LOOP_THREAD(l);
  if (k == NULL || url == NULL ||
      ws__loop_parse_url(url, host, sizeof host, &port, &path, &tls) != WS_OK)
    return WS_EINVAL;
  q = &k->ws__k;
  memset(q, 0, sizeof *q);
  if (r)
    q->pol = *r;
  else
    ws_reconnect_init(&q->pol);
  if (q->pol.first_ms == 0) q->pol.first_ms = 1;
  if (q->pol.max_ms < q->pol.first_ms) q->pol.max_ms = q->pol.first_ms;
  if (q->pol.growth_pct < 100) q->pol.growth_pct = 100;
  n = strlen(url) + 1;
  if ((q->url = (char *)malloc(n)) == NULL) return WS_ENOMEM;
  memcpy(q->url, url, n);
  q->loop = l;
  q->opts = o;
  q->user = user;
  q->bound = q->pol.first_ms;
  q->rng = ws__loop_clock() ^ (uint64_t)(uintptr_t)k ^ 0x9E3779B97F4A7C15ull;
  if (q->rng == 0) q->rng = 1;
  q->running = 1;
  q->next = p->clients;
  if (q->next) q->next->ws__k.prev = k;
  p->clients = k;
  if ((rc = ws__client_attempt(l, k)) == WS_EINVAL) {
    ws__client_finish(l, k); /* nothing to retry: say so here */
    return rc;
  }
  if (rc != WS_OK) ws__client_ended(l, k, 0, 0); /* retried */
  return WS_OK;
}

/* see ws.h */
void ws_loop_client_stop(ws_loop *l, ws_loop_client *k) {
  struct ws__loop_client_priv *q = &k->ws__k;
  ws_conn *c = q->conn;
  WS__LOOP_THREAD(l);
  if (!q->running) return;
  ws__client_finish(l, k);
  q->conn = NULL;
  if (c) {
    WS__LC(c)->ws__l.io.flags &= (unsigned short)~WS__LC_KEPT;
    if (ws_conn_state(c) == WS_STATE_OPEN)
      (void)ws_close(c, WS_CLOSE_NORMAL, NULL, 0);
    else
      ws_conn_abort(c, WS_ECLOSED);
  }
}

/* see ws.h */
ws_conn *ws_loop_client_conn(const ws_loop_client *k) { return k->ws__k.conn; }

/* see ws.h */
ws_loop_client *ws_loop_client_of(const ws_conn *c) {
  const ws_loop_conn *lc = (const ws_loop_conn *)c;
  if (!(lc->ws__l.io.flags & WS__LC_KEPT) || lc->ws__l.loop == NULL) return NULL;
  return ws__client_find(WS__LP(lc->ws__l.loop), c);
}

/* see ws.h */
unsigned ws_loop_client_opens(const ws_loop_client *k) { return k->ws__k.opens; }

/* see ws.h */
int ws_loop_adopt(ws_loop *l, int fd, const void *data, size_t len,
                  void *user, ws_conn **out) {
  int one = 1;
  WS__LOOP_THREAD(l);
  if (fd < 0 || (data == NULL && len > 0)) return WS_EINVAL;
  if (ws__io_nonblock(fd) < 0) return WS_EINVAL;
  (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return ws__loop_start_server(l, fd, data, len, user, out);
}

/* Topics ------------------------------------------------------------------- */

static size_t ws__topic_hash(const char *s, size_t n) {
  size_t h = 2166136261u, i;
  for (i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 16777619u;
  return h;
}

static ws__topic **ws__topic_slot(struct ws__loop_priv *p, const char *name,
                                  size_t n) {
  ws__topic **t;
  if (p->tcap == 0) return NULL;
  t = (ws__topic **)&p->topics[ws__topic_hash(name, n) & (p->tcap - 1)];
  while (*t && ((*t)->len != n || memcmp((*t)->name, name, n) != 0))
    t = &(*t)->hnext;
  return t;
}

static ws__topic *ws__topic_get(ws_loop *l, const char *name, int create) {
  struct ws__loop_priv *p = WS__LP(l);
  size_t n = strlen(name);
  ws__topic **slot = ws__topic_slot(p, name, n), *t;
  if (slot && *slot) return *slot;
  if (!create) return NULL;
  if (p->ntopics + 1 > p->tcap) { /* grow and rehash */
    size_t cap = p->tcap ? p->tcap * 2 : 16, i;
    void **nt = (void **)ws__loop_alloc(l, NULL, cap * sizeof *nt);
    if (nt == NULL) return NULL;
    memset(nt, 0, cap * sizeof *nt);
    for (i = 0; i < p->tcap; i++) {
      ws__topic *it = (ws__topic *)p->topics[i], *next;
      for (; it; it = next) {
        size_t b = ws__topic_hash(it->name, it->len) & (cap - 1);
        next = it->hnext;
        it->hnext = (ws__topic *)nt[b];
        nt[b] = it;
      }
    }
    ws__loop_alloc(l, p->topics, 0);
    p->topics = nt;
    p->tcap = cap;
    slot = ws__topic_slot(p, name, n);
  }
  t = (ws__topic *)ws__loop_alloc(l, NULL, sizeof *t + n);
  if (t == NULL) return NULL;
  memset(t, 0, sizeof *t);
  memcpy(t->name, name, n + 1);
  t->len = n;
  *slot = t;
  p->ntopics++;
  return t;
}

static void ws__topic_drop_if_empty(ws_loop *l, ws__topic *t) {
  struct ws__loop_priv *p = WS__LP(l);
  ws__topic **slot;
  if (t->count) return;
  slot = ws__topic_slot(p, t->name, t->len);
  if (slot && *slot == t) *slot = t->hnext;
  p->ntopics--;
  ws__loop_alloc(l, t, 0);
}

static void ws__sub_unlink(ws_loop *l, ws__sub *s) {
  ws__topic *t = s->t;
  if (s->tprev)
    s->tprev->tnext = s->tnext;
  else
    t->head = s->tnext;
  if (s->tnext) s->tnext->tprev = s->tprev;
  t->count--;
  if (t->count == 0 && WS__LP(l)->topic_fn)
    WS__LP(l)->topic_fn(l, t->name, 0, WS__LP(l)->topic_user);
  ws__topic_drop_if_empty(l, t);
  ws__loop_alloc(l, s, 0);
}

static void ws__sub_drop_all(ws_loop_conn *lc) {
  ws__sub *s = (ws__sub *)lc->ws__l.subs;
  while (s) {
    ws__sub *next = s->cnext;
    ws__sub_unlink(lc->ws__l.loop, s);
    s = next;
  }
  lc->ws__l.subs = NULL;
}

/* see ws.h */
int ws_loop_subscribe(ws_conn *c, const char *topic) {
  ws_loop_conn *lc = WS__LC(c);
  ws_loop *l = lc->ws__l.loop;
  ws__topic *t;
  ws__sub *s;
  if (topic == NULL || l == NULL || (lc->ws__l.io.flags & WS__LC_DEAD))
    return WS_EINVAL;
  WS__LOOP_THREAD(l);
  for (s = (ws__sub *)lc->ws__l.subs; s; s = s->cnext)
    if (strcmp(s->t->name, topic) == 0) return WS_OK;
  t = ws__topic_get(l, topic, 1);
  if (t == NULL) return WS_ENOMEM;
  s = (ws__sub *)ws__loop_alloc(l, NULL, sizeof *s);
  if (s == NULL) {
    ws__topic_drop_if_empty(l, t);
    return WS_ENOMEM;
  }
  s->t = t;
  s->lc = lc;
  s->tprev = NULL;
  s->tnext = t->head;
  if (t->head) t->head->tprev = s;
  t->head = s;
  t->count++;
  s->cnext = (ws__sub *)lc->ws__l.subs;
  lc->ws__l.subs = s;
  if (t->count == 1 && WS__LP(l)->topic_fn)
    WS__LP(l)->topic_fn(l, t->name, 1, WS__LP(l)->topic_user);
  return WS_OK;
}

/* see ws.h */
int ws_loop_unsubscribe(ws_conn *c, const char *topic) {
  ws_loop_conn *lc = WS__LC(c);
  ws__sub **sp;
  if (topic == NULL || lc->ws__l.loop == NULL) return WS_EINVAL;
  WS__LOOP_THREAD(lc->ws__l.loop);
  for (sp = (ws__sub **)&lc->ws__l.subs; *sp; sp = &(*sp)->cnext) {
    if (strcmp((*sp)->t->name, topic) == 0) {
      ws__sub *s = *sp;
      *sp = s->cnext;
      ws__sub_unlink(lc->ws__l.loop, s);
      return WS_OK;
    }
  }
  return WS_EINVAL;
}

/* see ws.h */
void ws_loop_on_topic(ws_loop *l,
                      void (*fn)(ws_loop *l, const char *topic, int active,
                                 void *user),
                      void *user) {
  struct ws__loop_priv *p = WS__LP(l);
  size_t i;
  WS__LOOP_THREAD(l);
  p->topic_fn = fn;
  p->topic_user = user;
  for (i = 0; fn && i < p->tcap; i++) {
    ws__topic *t;
    for (t = (ws__topic *)p->topics[i]; t; t = t->hnext)
      if (t->count) fn(l, t->name, 1, user);
  }
}

/* see ws.h */
size_t ws_loop_topic_size(ws_loop *l, const char *topic) {
  ws__topic *t;
  WS__LOOP_THREAD(l);
  t = topic ? ws__topic_get(l, topic, 0) : NULL;
  return t ? t->count : 0;
}

/* Sends an encoded frame (hl header bytes, then len payload bytes) to a
 * topic's subscribers; how many took it. With permessage-deflate, the
 * subscribers whose compressor keeps no context share one compressed
 * frame, made with the smallest window among them (a smaller window is
 * always readable by a larger one); those with context takeover compress
 * with their own compressor, which must see every message they send. */
static size_t ws__publish_frame(ws_loop *l, ws__topic *t,
                                const unsigned char *frame, size_t hl, int op,
                                size_t len) {
  const ws_config *cfg = &WS__LP(l)->cfg.server;
  ws__sub *s, *next;
  size_t n = 0, zlen = 0;
  void *z = NULL;
  int bits = 0;
  if (len >= cfg->deflate.threshold) {
    for (s = t->head; s; s = s->tnext) {
      int b = ws_conn_deflate_fresh(&s->lc->conn);
      if (b && (bits == 0 || b < bits)) bits = b;
    }
    /* Without memory, each gets it plain. */
    if (bits && ws_deflate_encode(cfg, op, frame + hl, len, bits, &z, &zlen) != WS_OK)
      z = NULL;
  }
  for (s = t->head; s; s = next) {
    /* A send may end its connection (a write error), and its
     * subscriptions go with it, this node included: step on first. Other
     * connections' nodes are untouched. */
    ws_conn *c = &s->lc->conn;
    int rc;
    next = s->tnext;
    if (z && ws_conn_deflate_fresh(c))
      rc = ws_send_encoded(c, z, zlen);
    else if (ws_conn_deflate(c) && !ws_conn_deflate_fresh(c))
      rc = ws_send(c, op, frame + hl, len);
    else
      rc = ws_send_encoded(c, frame, hl + len);
    if (rc == WS_EINVAL) /* a client connection masks each frame itself */
      rc = ws_send(c, op, frame + hl, len);
    if (rc == WS_OK) n++;
  }
  ws_deflate_free(cfg, z);
  return n;
}

/* see ws.h */
int ws_loop_publish(ws_loop *l, const char *topic, int op, const void *data,
                    size_t len, size_t *sent) {
  ws__topic *t;
  unsigned char small[4096], *frame;
  size_t hl, n = 0;
  WS__LOOP_THREAD(l);
  if (sent) *sent = 0;
  if (topic == NULL || (op != WS_OP_TEXT && op != WS_OP_BINARY) ||
      (data == NULL && len > 0))
    return WS_EINVAL;
  if (op == WS_OP_TEXT) {
    uint32_t st = WS_UTF8_INIT;
    if (ws_utf8_check(&st, data, len, 1, NULL) != WS_OK) return WS_EUTF8;
  }
  t = ws__topic_get(l, topic, 0);
  if (t == NULL) return WS_OK;
  /* Encode once; the same bytes go to every subscriber. */
  if (len + WS_FRAME_HEADER_MAX <= sizeof small) {
    frame = small;
  } else {
    frame = (unsigned char *)ws__loop_alloc(l, NULL, len + WS_FRAME_HEADER_MAX);
    if (frame == NULL) return WS_ENOMEM;
  }
  hl = ws_frame_write(frame, 1, op, len, NULL);
  if (len) memcpy(frame + hl, data, len);
  n = ws__publish_frame(l, t, frame, hl, op, len);
  if (frame != small) ws__loop_alloc(l, frame, 0);
  if (sent) *sent = n;
  return WS_OK;
}

/* Groups: several loops, one port, shared topics --------------------------- */

#define WS__GROUP_INBOX_DEFAULT (8u * 1024 * 1024)
#define WS__GROUP_ITEM_COST 64u /* charged per publish beside its payload */

/* One group publish: the frame encoded once, shared by every loop it was
 * posted to; the last to send it frees it. */
typedef struct ws__gmsg {
  size_t refs;          /* atomic */
  size_t hl, len, cost; /* header bytes, payload bytes, inbox charge */
  int op;
  unsigned char *frame; /* after the topic, in the same allocation */
  char topic[1];
} ws__gmsg;

static void ws__gmsg_release(ws__gmsg *m) {
  if (ws__atomic_sub(&m->refs, 1) == 0) free(m);
}

static void ws__gmsg_send(ws_loop *l, const ws__gmsg *m) {
  ws__topic *t = ws__topic_get(l, m->topic, 0);
  if (t) (void)ws__publish_frame(l, t, m->frame, m->hl, m->op, m->len);
}

/* Runs on the receiving loop's thread, from its post queue. */
static void ws__gmsg_run(ws_loop *l, void *arg) {
  ws__gmsg *m = (ws__gmsg *)arg;
  (void)ws__atomic_sub(&WS__LP(l)->ginbox, m->cost);
  ws__gmsg_send(l, m);
  ws__gmsg_release(m);
}

/* see ws.h */
int ws_loop_group_init(ws_loop_group *g, ws_loop *const *loops, size_t n) {
  size_t i;
  if (g == NULL || loops == NULL || n == 0) return WS_EINVAL;
  for (i = 0; i < n; i++)
    if (loops[i] == NULL) return WS_EINVAL;
  memset(g, 0, sizeof *g);
  g->max_inbox = WS__GROUP_INBOX_DEFAULT;
  g->ws__g.loops = loops;
  g->ws__g.n = n;
  return WS_OK;
}

/* see ws.h */
int ws_loop_group_listen(ws_loop_group *g, const char *host, unsigned port,
                         unsigned *bound_port) {
  struct ws__loop_group_priv *gp;
  unsigned bound = 0;
  size_t i;
  int rc;
  if (g == NULL || g->ws__g.n == 0) return WS_EINVAL;
  gp = &g->ws__g;
  if (g->handoff || !ws_loop_has_reuseport()) {
    ws_loop *l = gp->loops[0];
    rc = ws__loop_listen(l, host, port, NULL, 0, &bound);
    if (rc != WS_OK) return rc;
    ((ws__listener *)WS__LP(l)->listeners)->group = g; /* the one just made */
  } else {
    /* The first bind picks the port (port 0); the others take the same. */
    for (i = 0; i < gp->n; i++) {
      rc = ws__loop_listen(gp->loops[i], host, i ? bound : port, NULL, 1,
                           &bound);
      if (rc != WS_OK) return rc;
    }
  }
  if (bound_port) *bound_port = bound;
  return WS_OK;
}

/* see ws.h */
int ws_loop_group_publish(ws_loop_group *g, ws_loop *from, const char *topic,
                          int op, const void *data, size_t len) {
  struct ws__loop_group_priv *gp;
  ws__gmsg *m;
  size_t i, tlen, cost;
  int full = 0;
  if (g == NULL || topic == NULL || (op != WS_OP_TEXT && op != WS_OP_BINARY) ||
      (data == NULL && len > 0))
    return WS_EINVAL;
  gp = &g->ws__g;
  if (from) {
    for (i = 0; i < gp->n && gp->loops[i] != from; i++) {
    }
    if (i == gp->n) return WS_EINVAL;
    WS__LOOP_THREAD(from);
  }
  if (op == WS_OP_TEXT) { /* once here, not once per loop */
    uint32_t st = WS_UTF8_INIT;
    if (ws_utf8_check(&st, data, len, 1, NULL) != WS_OK) return WS_EUTF8;
  }
  tlen = strlen(topic);
  if (len > (size_t)-1 - sizeof *m - tlen - WS_FRAME_HEADER_MAX - WS__GROUP_ITEM_COST)
    return WS_ENOMEM;
  /* One allocation: the header, the topic, the frame. malloc, not a
   * loop's allocator: whichever loop sends it last frees it. */
  m = (ws__gmsg *)malloc(sizeof *m + tlen + WS_FRAME_HEADER_MAX + len);
  if (m == NULL) return WS_ENOMEM;
  memcpy(m->topic, topic, tlen + 1);
  m->frame = (unsigned char *)m->topic + tlen + 1;
  m->hl = ws_frame_write(m->frame, 1, op, len, NULL);
  if (len) memcpy(m->frame + m->hl, data, len);
  m->len = len;
  m->op = op;
  m->cost = cost = len + WS__GROUP_ITEM_COST;
  m->refs = 1; /* this call's own, released at the end */
  for (i = 0; i < gp->n; i++) {
    ws_loop *to = gp->loops[i];
    struct ws__loop_priv *tp = WS__LP(to);
    int rc;
    if (to == from) continue;
    /* Reserve first, then check: two publishers racing for the last room
     * cannot both pass. */
    if (ws__atomic_add(&tp->ginbox, cost) <= g->max_inbox) {
      (void)ws__atomic_add(&m->refs, 1);
      rc = ws_loop_post(to, ws__gmsg_run, m);
      if (rc == WS_OK || rc == WS_EIO) continue; /* WS_EIO: queued all the same */
      (void)ws__atomic_sub(&m->refs, 1); /* ours is still held: not 0 */
    }
    /* Not queued (no room, or the loop is closing): the reservation goes
     * back and the drop is counted. */
    (void)ws__atomic_sub(&tp->ginbox, cost);
    (void)ws__atomic_add(&tp->gdrops, 1);
    full = 1;
  }
  if (from) ws__gmsg_send(from, m);
  ws__gmsg_release(m);
  return full ? WS_EFULL : WS_OK;
}

/* see ws.h */
size_t ws_loop_group_drops(const ws_loop_group *g) {
  size_t i, n = 0;
  for (i = 0; i < g->ws__g.n; i++)
    n += ws__atomic_load(&WS__LP(g->ws__g.loops[i])->gdrops);
  return n;
}

/* Posting from other threads ---------------------------------------------- */

/* see ws.h */
int ws_loop_post(ws_loop *l, void (*fn)(ws_loop *l, void *arg), void *arg) {
  ws__post_q *q = (ws__post_q *)WS__LP(l)->post;
  if (fn == NULL || q == NULL) return WS_EINVAL;
  return ws__post_q_push(q, fn, arg);
}

/* Runs the posts queued so far. `last` (from ws_loop_free) also closes the
 * queue, under the same lock, so no post can slip in after the final run
 * and be dropped with its argument. */
static void ws__loop_run_posts(ws_loop *l, int last) {
  struct ws__loop_priv *p = WS__LP(l);
  ws__post_q *q = (ws__post_q *)p->post;
  ws__post_item *it;
  char drain[64];
  while (p->wake.fd >= 0 && read(p->wake.fd, drain, sizeof drain) > 0) {
  }
  pthread_mutex_lock(&q->mu);
  if (last) q->closed = 1;
  it = q->head;
  q->head = q->tail = NULL;
  pthread_mutex_unlock(&q->mu);
  while (it) {
    ws__post_item *next = it->next;
    it->fn(l, it->arg);
    free(it);
    it = next;
  }
}

/* The loop ------------------------------------------------------------------ */

/* see ws.h */
void ws_loop_config_init(ws_loop_config *cfg) {
  memset(cfg, 0, sizeof *cfg);
  ws_config_init(&cfg->server, WS_SERVER);
  ws_config_init(&cfg->client, WS_CLIENT);
  cfg->server.ping_interval_ms = cfg->client.ping_interval_ms = 30000;
  cfg->server.pong_timeout_ms = cfg->client.pong_timeout_ms = 10000;
  cfg->backlog = 511;
  cfg->max_events = 256;
  cfg->linger_ms = 2000;
  cfg->mem_budget = WS_LOOP_MEM_BUDGET;
}

/* see ws.h */
int ws_loop_init(ws_loop *l, const ws_loop_config *cfg,
                 const ws_loop_callbacks *cb, void *user) {
  struct ws__loop_priv *p;
  ws__post_q *q;
  int fds[2], rc;
  if (l == NULL || cfg == NULL || cfg->max_events <= 0) return WS_EINVAL;
  p = WS__LP(l);
  memset(p, 0, sizeof *p);
  p->cfg = *cfg;
  p->cfg.server.role = WS_SERVER;
  p->cfg.client.role = WS_CLIENT;
  if (cb) p->cb = *cb;
  p->ccb = p->cb.conn;
  p->ccb.read = ws__loop_read;
  p->ccb.write = ws__loop_write;
  p->ccb.writev = ws__loop_writev;
  p->ccb.on_close = ws__loop_on_close;
  p->ccb.on_open = ws__loop_on_open;
  p->ccb.on_handshake = ws__loop_on_handshake;
  p->ucharge[0] = p->cfg.server.charge;
  p->ucharge[1] = p->cfg.client.charge;
  p->cfg.server.charge = p->cfg.client.charge = ws__loop_charge;
  /* The caller's allocator and its context stay the caller's (the loop's
   * records, the charge hook); without one, the connections' buffers come
   * from ws__loop_buf, with the loop as its context. */
  p->urealloc = p->cfg.server.realloc;
  p->uctx[0] = p->cfg.server.alloc_ctx;
  p->uctx[1] = p->cfg.client.alloc_ctx;
  if (p->cfg.server.realloc == NULL) {
    p->cfg.server.realloc = ws__loop_buf;
    p->cfg.server.alloc_ctx = l;
  }
  if (p->cfg.client.realloc == NULL) {
    p->cfg.client.realloc = ws__loop_buf;
    p->cfg.client.alloc_ctx = l;
  }
  p->user = user;
  p->bfd = -1;
  p->wake.fd = p->wake_w = -1;
  p->owner = ws__loop_self();
  p->now = ws__loop_clock();
  p->ready = malloc(sizeof *p->ready * (size_t)cfg->max_events);
  q = (ws__post_q *)malloc(sizeof *q);
  if (p->ready == NULL || q == NULL) {
    free(p->ready);
    free(q);
    return WS_ENOMEM;
  }
  memset(q, 0, sizeof *q);
  pthread_mutex_init(&q->mu, NULL);
  q->refs = 1;
  p->post = q;
  if ((rc = ws__be_create(p)) != WS_OK) {
    ws_loop_free(l);
    return rc;
  }
  if (pipe(fds) < 0) {
    ws_loop_free(l);
    return WS_EIO;
  }
  p->wake.fd = fds[0];
  p->wake_w = fds[1];
  q->wake_w = fds[1];
  p->wake.pidx = -1;
  p->wake.kind = WS__IO_WAKE;
  if (ws__io_nonblock(fds[0]) < 0 || ws__io_nonblock(fds[1]) < 0 ||
      ws__be_set(p, &p->wake, WS__LOOP_IN) != WS_OK) {
    ws_loop_free(l);
    return WS_EIO;
  }
  return WS_OK;
}

/* Runs due timers: connection deadlines and application timers. */
static void ws__loop_timers(ws_loop *l) {
  struct ws__loop_priv *p = WS__LP(l);
  int guard = 0;
  while (p->hcount > 0 && p->heap[0]->when <= p->now && guard++ < 100000) {
    struct ws__tnode *t = p->heap[0];
    if (t->kind == WS__TN_CONN) {
      ws_loop_conn *lc =
          (ws_loop_conn *)((char *)t - offsetof(ws_loop_conn, ws__l.tn));
      ws__tn_remove(p, t);
      ws__loop_update(l, lc); /* ticks, then files the next deadline */
    } else if (t->kind == WS__TN_LINGER) {
      ws__linger_end(l, (ws__linger *)((char *)t - offsetof(ws__linger, tn)));
    } else {
      ws_timer *tm = (ws_timer *)((char *)t - offsetof(ws_timer, ws__t.tn));
      ws__tn_remove(p, t);
      if (tm->ws__t.repeat) (void)ws__tn_set(l, t, p->now + tm->ws__t.repeat);
      tm->ws__t.cb(l, tm, tm->ws__t.user);
    }
  }
}

static int ws__loop_turn(ws_loop *l, int timeout_ms);

/* see ws.h */
int ws_loop_run_once(ws_loop *l, int timeout_ms) {
  struct ws__loop_priv *p = WS__LP(l);
  int rc;
  WS_ASSERT(!p->turning &&
            "ws_loop_run_once() or ws_loop_run() called from a callback of the same loop");
  p->owner = ws__loop_self(); /* the thread that runs the loop owns it */
  p->turning = 1;
  rc = ws__loop_turn(l, timeout_ms);
  p->turning = 0;
  return rc;
}

/* The turn's ration (see ws__lc_ration): the first n rationed connections
 * (n: as many as there were before this turn's events; those rationed by
 * them had their share in this turn) read in their order, a share each,
 * until WS__LOOP_TURN_READ bytes are read. One that read its whole share goes to
 * the end of the list; one that read less, or does not want input (paused
 * for its output, closing), is back on the live list and waits for
 * readiness. */
static void ws__loop_ration(ws_loop *l, size_t n) {
  struct ws__loop_priv *p = WS__LP(l);
  size_t left = WS__LOOP_TURN_READ;
  for (; n > 0 && p->rat && left > 0; n--) {
    ws_loop_conn *lc = p->rat;
    struct ws__loop_conn_priv *q = &lc->ws__l;
    size_t share = left < WS__LOOP_READ_SHARE ? left : WS__LOOP_READ_SHARE;
    ws__lc_unlink(p, lc);
    ws__lc_link(p, lc);
    ws__loop_touch(lc); /* input back in its interest, unless rationed again */
    q->io.flags &= (unsigned short)~WS__LC_DRAINED;
    if (ws_conn_want_read(&lc->conn) &&
        ws__loop_readable(l, lc, share) != WS_ECLOSED && !(q->io.flags & WS__LC_DEAD)) {
      left -= share - p->rquota;
      if (p->rquota == 0) ws__lc_ration(p, lc);
    }
    ws__loop_flush_pending(l);
  }
}

/* One turn of ws_loop_run_once(): timers, a wait, the events, timers. */
static int ws__loop_turn(ws_loop *l, int timeout_ms) {
  struct ws__loop_priv *p = WS__LP(l);
  int i, rc, wait = timeout_ms;
  size_t rationed;
  p->now = ws__loop_clock();
  ws__loop_timers(l);
  ws__loop_flush_pending(l);
  ws__loop_release_dead(l);
  if (p->hcount > 0) {
    uint64_t due = p->heap[0]->when;
    int until = due <= p->now ? 0 : due - p->now > 0x7FFFFFFF ? 0x7FFFFFFF
                                                              : (int)(due - p->now);
    if (wait < 0 || until < wait) wait = until;
  }
  if (p->stop || p->rat) wait = 0; /* rationed input waits for no event */
  /* A wait cut short by a signal reports nothing: the last turn's events,
   * whose connections may be gone, must not be handled again. */
  p->nready = 0;
  rationed = p->nrat;
  rc = ws__be_wait(p, wait);
  if (rc != WS_OK) return rc;
  p->now = ws__loop_clock();
  /* Each event's share: the turn's ration split between the events, within
   * [WS__LOOP_MIN_SHARE, WS__LOOP_READ_SHARE] (see ws__lc_ration). */
  p->evshare = WS__LOOP_READ_SHARE;
  if (p->nready > 0 && WS__LOOP_TURN_READ / (size_t)p->nready < p->evshare)
    p->evshare = WS__LOOP_TURN_READ / (size_t)p->nready;
  if (p->evshare < WS__LOOP_MIN_SHARE) p->evshare = WS__LOOP_MIN_SHARE;
  for (i = 0; i < p->nready; i++) {
    struct ws__io *io = p->ready[i].io;
    unsigned ev = p->ready[i].ev;
    if (io == NULL) continue; /* a watch stopped (or merged) in this turn */
    if (io->fd < 0) continue; /* closed earlier in this turn */
    if (io->kind == WS__IO_CONN) {
      ws_loop_conn *lc =
          (ws_loop_conn *)((char *)io - offsetof(ws_loop_conn, ws__l.io));
      if (!(lc->ws__l.io.flags & WS__LC_DEAD)) ws__loop_conn_event(l, lc, ev);
    } else if (io->kind == WS__IO_LISTENER) {
      ws__loop_accept(l, (ws__listener *)io);
    } else if (io->kind == WS__IO_WAKE) {
      ws__loop_run_posts(l, 0);
    } else if (io->kind == WS__IO_LINGER) {
      ws__linger_read(l, (ws__linger *)io);
    } else if (io->kind == WS__IO_WATCH) {
      ws__watch_event(l, i);
    }
    ws__loop_flush_pending(l);
  }
  ws__loop_ration(l, rationed);
  ws__loop_timers(l);
  ws__loop_flush_pending(l);
  ws__loop_release_dead(l);
  return WS_OK;
}

/* see ws.h */
int ws_loop_run(ws_loop *l) {
  struct ws__loop_priv *p = WS__LP(l);
  p->stop = 0;
  while (!p->stop && !(p->shutting && p->nconns == 0 && p->nlinger == 0)) {
    int rc = ws_loop_run_once(l, -1);
    if (rc != WS_OK) return rc;
  }
  p->stop = 0;
  return WS_OK;
}

/* see ws.h */
void ws_loop_stop(ws_loop *l) { WS__LP(l)->stop = 1; }

static void ws__loop_close_listeners(struct ws__loop_priv *p) {
  ws__listener *ls;
  for (ls = (ws__listener *)p->listeners; ls; ls = ls->next) {
    if (ls->io.fd < 0) continue;
    (void)ws__be_set(p, &ls->io, 0);
    close(ls->io.fd);
    ls->io.fd = -1;
  }
}

/* see ws.h */
void ws_loop_shutdown(ws_loop *l) {
  struct ws__loop_priv *p = WS__LP(l);
  ws_loop_conn *lc, *next;
  int i;
  WS__LOOP_THREAD(l);
  p->shutting = 1;
  ws__loop_close_listeners(p);
  for (i = 0; i < 2; i++) /* the live list, then the rationed one */
    for (lc = i ? p->rat : p->conns; lc; lc = next) {
      next = lc->ws__l.next; /* this one may move to the dead list */
      if (ws_conn_state(&lc->conn) == WS_STATE_OPEN)
        ws_close(&lc->conn, WS_CLOSE_GOING_AWAY, "shutdown", 8);
      else if (ws_conn_state(&lc->conn) < WS_STATE_OPEN)
        ws_conn_abort(&lc->conn, WS_ECLOSED);
      if (!(lc->ws__l.io.flags & WS__LC_DEAD)) ws__loop_touch(lc);
    }
  ws__loop_flush_pending(l);
}

/* see ws.h */
void ws_loop_free(ws_loop *l) {
  struct ws__loop_priv *p = WS__LP(l);
  ws__post_q *q = (ws__post_q *)p->post;
  size_t i;
  WS_ASSERT(!p->turning && "ws_loop_free() called from a callback of the same loop");
  /* The calling thread takes the loop over, as in ws_loop_run_once: the
   * posts below run on it and may use the loop. */
  p->owner = ws__loop_self();
  /* Posts still queued run first, with the loop whole (connections open,
   * sends still possible), so whatever releases their arguments runs as
   * it would have at the next iteration. The queue closes as they are
   * taken: a post made from here on is refused, never dropped. */
  if (q) {
    ws__loop_run_posts(l, 1);
    ws__loop_flush_pending(l);
  }
  p->freeing = 1;
  while (p->clients) ws__client_finish(l, p->clients); /* no more attempts */
  while (p->conns) ws_conn_abort(&p->conns->conn, WS_ECLOSED);
  while (p->rat) ws_conn_abort(&p->rat->conn, WS_ECLOSED);
  ws__loop_release_dead(l);
  while (p->lingering) ws__linger_end(l, (ws__linger *)p->lingering);
  ws__loop_close_listeners(p);
  while (p->listeners) {
    ws__listener *ls = (ws__listener *)p->listeners;
    p->listeners = ls->next;
    ws__loop_alloc(l, ls, 0);
  }
  if (p->wake.fd >= 0) close(p->wake.fd);
  if (p->wake_w >= 0) close(p->wake_w);
  p->wake.fd = p->wake_w = -1;
#if WS_ENABLE_MBEDTLS
  ws_tls_config_free((ws_tls_config *)p->tls_default);
  p->tls_default = NULL;
#endif
  ws__be_destroy(p);
  /* Watches still started are forgotten, not touched: their memory is the
   * caller's and may be gone already; their registrations went with the
   * backend, and their fds stay the caller's. */
  p->watches = NULL;
  /* Every connection is gone, so no job waits: workers still resolving
   * hold the pool and the queue, and free them when they end. */
  ws__resolver_release(p);
  if (q) { /* empty: closed, and drained above */
    ws__post_q_unref(q);
    p->post = NULL;
  }
  for (i = 0; i < p->tcap; i++) { /* topics left by no one: none expected */
    ws__topic *t = (ws__topic *)p->topics[i];
    while (t) {
      ws__topic *next = t->hnext;
      ws__loop_alloc(l, t, 0);
      t = next;
    }
  }
  ws__loop_alloc(l, p->topics, 0);
  ws__loop_alloc(l, p->heap, 0);
  ws__loop_alloc(l, p->rbuf, 0);
  p->rbuf = NULL;
  ws__loop_drop_kept(p);
  free(p->ready);
  p->topics = NULL;
  p->heap = NULL;
  p->ready = NULL;
  p->tcap = p->hcap = p->hcount = 0;
}

/* see ws.h */
int ws_loop_timeout(const ws_loop *l) {
  const struct ws__loop_priv *p = WS__LP(l);
  uint64_t now = ws__loop_clock(), due;
  if (p->pend) return 0;
  if (p->hcount == 0) return -1;
  due = p->heap[0]->when;
  if (due <= now) return 0;
  return due - now > 0x7FFFFFFF ? 0x7FFFFFFF : (int)(due - now);
}

/* see ws.h */
size_t ws_loop_conn_count(const ws_loop *l) { return WS__LP(l)->nconns; }

/* see ws.h */
uint64_t ws_loop_now(const ws_loop *l) { return WS__LP(l)->now; }

/* see ws.h */
int ws_loop_conn_fd(const ws_conn *c) { return WS__LC(c)->ws__l.io.fd; }

/* see ws.h */
ws_loop *ws_loop_of(const ws_conn *c) { return WS__LC(c)->ws__l.loop; }

/* see ws.h */
ws_tls *ws_loop_conn_tls(const ws_conn *c) {
  return (ws_tls *)WS__LC(c)->ws__l.tls;
}

#endif /* !WS_NO_LOOP */
