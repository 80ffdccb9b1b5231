/* loop_poll.c - part 9: the loop's poll() backend, for any POSIX system (-DWS_LOOP_POLL).
 * Fills the backend contract declared in loop.c; uses what loop.c uses. */
#if !defined(WS_NO_LOOP) && WS__HAVE_OS && defined(WS_LOOP_POLL)

#include <poll.h>

static int ws__be_create(struct ws__loop_priv *p) {
  p->bfd = -1;
  return WS_OK;
}

static int ws__be_set(struct ws__loop_priv *p, struct ws__io *io, unsigned ev) {
  struct pollfd *pf;
  if (ev == io->events) return WS_OK;
  if (io->events == 0) { /* add */
    if (p->pcount == p->pcap) {
      size_t cap = p->pcap ? p->pcap * 2 : 64;
      void *a = realloc(p->pfd, cap * sizeof(struct pollfd));
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
    pf = (struct pollfd *)p->pfd;
    if ((size_t)io->pidx != last) {
      pf[io->pidx] = pf[last];
      p->pio[io->pidx] = p->pio[last];
      p->pio[io->pidx]->pidx = io->pidx;
    }
    io->pidx = -1;
    io->events = 0;
    return WS_OK;
  }
  pf = (struct pollfd *)p->pfd + io->pidx;
  pf->fd = io->fd;
  pf->events = (short)((ev & WS__LOOP_IN ? POLLIN : 0) | (ev & WS__LOOP_OUT ? POLLOUT : 0));
  pf->revents = 0;
  io->events = (unsigned char)ev;
  return WS_OK;
}

static int ws__be_wait(struct ws__loop_priv *p, int timeout) {
  /* With more descriptors ready than max_events, a scan from index 0 would
   * serve the same low entries every turn and starve the rest: each scan
   * starts where the previous one stopped, so every ready entry is served
   * within pcount / max_events turns. */
  struct pollfd *pf = (struct pollfd *)p->pfd;
  int n = poll(pf, (nfds_t)p->pcount, timeout), k = 0;
  size_t i, seen, start = p->pnext < p->pcount ? p->pnext : 0;
  if (n < 0) return errno == EINTR ? 0 : WS_EIO;
  for (seen = 0, i = start; seen < p->pcount && k < n && k < p->cfg.max_events; seen++) {
    unsigned e = 0;
    if (pf[i].revents) {
      if (pf[i].revents & (POLLIN | POLLERR | POLLHUP | POLLNVAL)) e |= WS__LOOP_IN;
      if (pf[i].revents & (POLLOUT | POLLERR | POLLHUP | POLLNVAL)) e |= WS__LOOP_OUT;
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

static const char *ws__be_name(void) { return "poll"; }

#endif /* WS_LOOP_POLL */
