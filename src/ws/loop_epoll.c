/* loop_epoll.c - part 9: the loop's epoll backend (Linux).
 * Fills the backend contract declared in loop.c; uses what loop.c uses. */
#if !defined(WS_NO_LOOP) && WS__HAVE_OS && defined(WS_LOOP_EPOLL)

#include <sys/epoll.h>

static int ws__be_create(struct ws__loop_priv *p) {
  p->bfd = epoll_create1(EPOLL_CLOEXEC);
  if (p->bfd < 0) return WS_EIO;
  p->bev = malloc(sizeof(struct epoll_event) * (size_t)p->cfg.max_events);
  return p->bev ? WS_OK : WS_ENOMEM;
}

static int ws__be_set(struct ws__loop_priv *p, struct ws__io *io, unsigned ev) {
  struct epoll_event e;
  int op;
  if (ev == io->events) return WS_OK;
  memset(&e, 0, sizeof e); /* old kernels want a non-NULL event for DEL */
  e.events = (ev & WS__LOOP_IN ? EPOLLIN : 0u) | (ev & WS__LOOP_OUT ? EPOLLOUT : 0u);
  e.data.ptr = io;
  op = io->events == 0 ? EPOLL_CTL_ADD : ev == 0 ? EPOLL_CTL_DEL : EPOLL_CTL_MOD;
  if (epoll_ctl(p->bfd, op, io->fd, &e) < 0 && ev != 0) return WS_EIO;
  io->events = (unsigned char)ev;
  return WS_OK;
}

static int ws__be_wait(struct ws__loop_priv *p, int timeout) {
  struct epoll_event *ev = (struct epoll_event *)p->bev;
  int n = epoll_wait(p->bfd, ev, p->cfg.max_events, timeout), i;
  if (n < 0) return errno == EINTR ? 0 : WS_EIO;
  for (i = 0; i < n; i++) {
    unsigned e = 0;
    if (ev[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) e |= WS__LOOP_IN;
    if (ev[i].events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) e |= WS__LOOP_OUT;
    p->ready[i].io = (struct ws__io *)ev[i].data.ptr;
    p->ready[i].ev = e;
  }
  p->nready = n;
  return WS_OK;
}

static const char *ws__be_name(void) { return "epoll"; }

static void ws__be_destroy(struct ws__loop_priv *p) {
  if (p->bfd >= 0) close(p->bfd);
  free(p->bev);
  p->bfd = -1;
  p->bev = NULL;
}

#endif /* WS_LOOP_EPOLL */
