/* loop_poll.c - part 9: the loop's poll() backend, for any POSIX system (-DWS_LOOP_POLL), and
 * the same over WSAPoll for Windows (WS_LOOP_WSAPOLL, set by loop_win.c).
 * Fills the backend contract declared in loop.c; uses what loop.c (and loop_win.c) use. */
#if !defined(WS_NO_LOOP) &&                          \
    ((WS__HAVE_OS && defined(WS_LOOP_POLL)) ||       \
     (WS__HAVE_NET && defined(WS_LOOP_WSAPOLL)))

/* One bookkeeping for both: a dense array, the last entry moved into a
 * removed one's place, each scan starting where the last one stopped.
 * WSAPoll (Windows Vista and later) watches sockets only, so ws_watch and
 * ws_loop_adopt take sockets on Windows; before Windows 10 2004 it did not
 * report a refused non-blocking connect: there the attempt ends at the
 * handshake timeout instead. */
#ifdef WS_LOOP_WSAPOLL
typedef WSAPOLLFD ws__pollfd;
#define WS__PFD_FD(fd) WS__W_S(fd)
#define WS__PFD_IN POLLRDNORM
#define WS__PFD_OUT POLLWRNORM
#define WS__PFD_READ (POLLRDNORM | POLLRDBAND)
#else
#include <poll.h>
typedef struct pollfd ws__pollfd;
#define WS__PFD_FD(fd) (fd)
#define WS__PFD_IN POLLIN
#define WS__PFD_OUT POLLOUT
#define WS__PFD_READ POLLIN
#endif

/* poll() or WSAPoll(): the number of entries ready, 0 when interrupted by
 * a signal, or -1 on an error. */
static int ws__poll(ws__pollfd *pf, size_t n, int timeout) {
#ifdef WS_LOOP_WSAPOLL
  int r;
  if (n == 0) { /* WSAPoll refuses an empty set */
    Sleep(timeout < 0 ? INFINITE : (DWORD)timeout);
    return 0;
  }
  r = WSAPoll(pf, (ULONG)n, timeout);
  if (r == SOCKET_ERROR) return WSAGetLastError() == WSAEINTR ? 0 : -1;
#else
  int r = poll(pf, (nfds_t)n, timeout);
  if (r < 0) return errno == EINTR ? 0 : -1;
#endif
  return r;
}

static int ws__be_create(struct ws__loop_priv *p) {
  p->bfd = -1;
  return WS_OK;
}

static int ws__be_set(struct ws__loop_priv *p, struct ws__io *io, unsigned ev) {
  ws__pollfd *pf;
  if (ev == io->events) return WS_OK;
  if (io->events == 0) { /* add */
    if (p->pcount == p->pcap) {
      size_t cap = p->pcap ? p->pcap * 2 : 64;
      void *a = realloc(p->pfd, cap * sizeof(ws__pollfd));
      void *b;
      if (a == NULL) return WS_ENOMEM;
      p->pfd = a;
      b = realloc(p->pio, cap * sizeof(struct ws__io *));
      if (b == NULL) return WS_ENOMEM;
      p->pio = (struct ws__io **)b;
      p->pcap = cap;
    }
    io->pidx = (int)p->pcount++;
    p->pio[io->pidx] = io;
  } else if (ev == 0) { /* remove: the last entry takes its place */
    size_t last = --p->pcount;
    pf = (ws__pollfd *)p->pfd;
    if ((size_t)io->pidx != last) {
      pf[io->pidx] = pf[last];
      p->pio[io->pidx] = p->pio[last];
      p->pio[io->pidx]->pidx = io->pidx;
    }
    io->pidx = -1;
    io->events = 0;
    return WS_OK;
  }
  pf = (ws__pollfd *)p->pfd + io->pidx;
  pf->fd = WS__PFD_FD(io->fd);
  pf->events = (short)((ev & WS__LOOP_IN ? WS__PFD_IN : 0) |
                       (ev & WS__LOOP_OUT ? WS__PFD_OUT : 0));
  pf->revents = 0;
  io->events = (unsigned char)ev;
  return WS_OK;
}

static int ws__be_wait(struct ws__loop_priv *p, int timeout) {
  /* With more descriptors ready than max_events, a scan from index 0 would
   * serve the same low entries every turn and starve the rest: each scan
   * starts where the previous one stopped, so every ready entry is served
   * within pcount / max_events turns. */
  ws__pollfd *pf = (ws__pollfd *)p->pfd;
  int n = ws__poll(pf, p->pcount, timeout), k = 0;
  size_t i, seen, start = p->pnext < p->pcount ? p->pnext : 0;
  if (n < 0) return WS_EIO;
  for (seen = 0, i = start; seen < p->pcount && k < n && k < p->cfg.max_events; seen++) {
    unsigned e = 0;
    if (pf[i].revents) {
      if (pf[i].revents & (WS__PFD_READ | POLLERR | POLLHUP | POLLNVAL)) e |= WS__LOOP_IN;
      if (pf[i].revents & (WS__PFD_OUT | POLLERR | POLLHUP | POLLNVAL)) e |= WS__LOOP_OUT;
      p->ready[k].io = p->pio[i];
      p->ready[k].ev = e;
      k++;
    }
    if (++i == p->pcount) i = 0;
  }
  p->pnext = i;
  p->nready = k;
  return WS_OK;
}

static void ws__be_destroy(struct ws__loop_priv *p) {
  free(p->pfd);
  free(p->pio);
  p->pfd = NULL;
  p->pio = NULL;
  p->pcount = p->pcap = 0;
}

#ifdef WS_LOOP_WSAPOLL
static const char *ws__be_name(void) { return "wsapoll"; }
#else
static const char *ws__be_name(void) { return "poll"; }
#endif

#endif /* WS_LOOP_POLL || WS_LOOP_WSAPOLL */
