/* loop_wsapoll.c - part 9: the loop's WSAPoll backend, for Windows (Vista and later).
 * Fills the backend contract declared in loop.c; uses what loop.c and loop_win.c use. */
#if !defined(WS_NO_LOOP) && WS__HAVE_NET && defined(WS_LOOP_WSAPOLL)

/* The poll backend's bookkeeping (loop_poll.c) over WSAPOLLFD: a dense
 * array, the last entry moved into a removed one's place, each scan
 * starting where the last one stopped. WSAPoll watches sockets only, so
 * ws_watch and ws_loop_adopt take sockets on Windows. Before Windows 10
 * 2004 WSAPoll did not report a refused non-blocking connect: there the
 * attempt ends at the handshake timeout instead. */

static int ws__be_create(struct ws__loop_priv *p) {
  p->bfd = -1;
  return WS_OK;
}

static int ws__be_set(struct ws__loop_priv *p, struct ws__io *io, unsigned ev) {
  WSAPOLLFD *pf;
  if (ev == io->events) return WS_OK;
  if (io->events == 0) { /* add */
    if (p->pcount == p->pcap) {
      size_t cap = p->pcap ? p->pcap * 2 : 64;
      void *a = realloc(p->pfd, cap * sizeof(WSAPOLLFD));
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
    pf = (WSAPOLLFD *)p->pfd;
    if ((size_t)io->pidx != last) {
      pf[io->pidx] = pf[last];
      p->pio[io->pidx] = p->pio[last];
      p->pio[io->pidx]->pidx = io->pidx;
    }
    io->pidx = -1;
    io->events = 0;
    return WS_OK;
  }
  pf = (WSAPOLLFD *)p->pfd + io->pidx;
  pf->fd = WS__W_S(io->fd);
  pf->events = (SHORT)((ev & WS__LOOP_IN ? POLLRDNORM : 0) | (ev & WS__LOOP_OUT ? POLLWRNORM : 0));
  pf->revents = 0;
  io->events = (unsigned char)ev;
  return WS_OK;
}

static int ws__be_wait(struct ws__loop_priv *p, int timeout) {
  WSAPOLLFD *pf = (WSAPOLLFD *)p->pfd;
  int n, k = 0;
  size_t i, seen, start = p->pnext < p->pcount ? p->pnext : 0;
  if (p->pcount == 0) { /* WSAPoll refuses an empty set */
    Sleep(timeout < 0 ? INFINITE : (DWORD)timeout);
    p->nready = 0;
    return WS_OK;
  }
  n = WSAPoll(pf, (ULONG)p->pcount, timeout);
  if (n == SOCKET_ERROR) return WSAGetLastError() == WSAEINTR ? 0 : WS_EIO;
  for (seen = 0, i = start; seen < p->pcount && k < n && k < p->cfg.max_events; seen++) {
    unsigned e = 0;
    if (pf[i].revents) {
      if (pf[i].revents & (POLLRDNORM | POLLRDBAND | POLLERR | POLLHUP | POLLNVAL)) e |= WS__LOOP_IN;
      if (pf[i].revents & (POLLWRNORM | POLLERR | POLLHUP | POLLNVAL)) e |= WS__LOOP_OUT;
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

static const char *ws__be_name(void) { return "wsapoll"; }

#endif /* WS_LOOP_WSAPOLL */
