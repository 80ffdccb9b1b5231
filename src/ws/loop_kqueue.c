/* loop_kqueue.c - part 9: the loop's kqueue backend (the BSDs and macOS).
 * Fills the backend contract declared in loop.c; uses what loop.c uses. */
#if !defined(WS_NO_LOOP) && WS__HAVE_OS && defined(WS_LOOP_KQUEUE)

#include <sys/event.h>

static int ws__be_create(struct ws__loop_priv *p) {
  p->bfd = kqueue();
  if (p->bfd < 0) return WS_EIO;
  (void)fcntl(p->bfd, F_SETFD, FD_CLOEXEC);
  p->bev = malloc(sizeof(struct kevent) * (size_t)p->cfg.max_events);
  return p->bev ? WS_OK : WS_ENOMEM;
}

static int ws__be_set(struct ws__loop_priv *p, struct ws__io *io, unsigned ev) {
  struct kevent ch[2];
  int n = 0;
  unsigned old = io->events;
  if ((ev & WS__LOOP_IN) != (old & WS__LOOP_IN)) {
    EV_SET(&ch[n], io->fd, EVFILT_READ, (ev & WS__LOOP_IN) ? EV_ADD : EV_DELETE,
           0, 0, io);
    n++;
  }
  if ((ev & WS__LOOP_OUT) != (old & WS__LOOP_OUT)) {
    EV_SET(&ch[n], io->fd, EVFILT_WRITE,
           (ev & WS__LOOP_OUT) ? EV_ADD : EV_DELETE, 0, 0, io);
    n++;
  }
  if (n && kevent(p->bfd, ch, n, NULL, 0, NULL) < 0 && ev != 0) {
    /* The changes before the failing one were made: a filter added there
     * is taken back, so none is left pointing at an io whose owner hears
     * "failed" (a ws_watch may be freed at once). */
    int e = errno, i;
    for (i = 0; i < n; i++) {
      if (ch[i].flags & EV_ADD) {
        ch[i].flags = EV_DELETE;
        (void)kevent(p->bfd, &ch[i], 1, NULL, 0, NULL);
      }
    }
    errno = e;
    return WS_EIO;
  }
  io->events = (unsigned char)ev;
  return WS_OK;
}

static int ws__be_wait(struct ws__loop_priv *p, int timeout) {
  struct kevent *ev = (struct kevent *)p->bev;
  struct timespec ts, *tp = NULL;
  int n, i;
  if (timeout >= 0) {
    ts.tv_sec = timeout / 1000;
    ts.tv_nsec = (long)(timeout % 1000) * 1000000L;
    tp = &ts;
  }
  n = kevent(p->bfd, NULL, 0, ev, p->cfg.max_events, tp);
  if (n < 0) return errno == EINTR ? 0 : WS_EIO;
  for (i = 0; i < n; i++) {
    unsigned e = ev[i].filter == EVFILT_WRITE ? WS__LOOP_OUT : WS__LOOP_IN;
    if (ev[i].flags & (EV_EOF | EV_ERROR)) e = WS__LOOP_IN | WS__LOOP_OUT;
    p->ready[i].io = (struct ws__io *)ev[i].udata;
    p->ready[i].ev = e;
  }
  p->nready = n;
  return WS_OK;
}

static const char *ws__be_name(void) { return "kqueue"; }

static void ws__be_destroy(struct ws__loop_priv *p) {
  if (p->bfd >= 0) close(p->bfd);
  free(p->bev);
  p->bfd = -1;
  p->bev = NULL;
}

#endif /* WS_LOOP_KQUEUE */
