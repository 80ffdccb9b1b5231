/*
 * wslay_server.c - the wslay peer of the ws benchmarks: a minimal echo /
 * broadcast server of our own over Debian's libwslay (its event API).
 *
 *   build/bench/wslay_server -p PORT [--broadcast]
 *
 * wslay does framing only, so the rest is ours: an epoll loop (level
 * triggered, like ws's), non-blocking sockets, and an opening handshake
 * that answers any request carrying a Sec-WebSocket-Key (SHA-1 and Base64
 * from bench_common.h, not from ws). Broadcast queues each message to every
 * open connection's wslay context (wslay copies it) and flushes it at once.
 * Note: wslay does not validate UTF-8 in text messages; ws, libwebsockets
 * (as configured here) and Node's ws do. Listens on 127.0.0.1 only.
 */
#define _GNU_SOURCE
#include "bench_common.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <wslay/wslay.h>

typedef struct wconn {
  int fd;
  unsigned ev;
  wslay_event_context_ptr ctx;   /* NULL during the handshake */
  char *hbuf;                    /* handshake request so far */
  size_t hlen;
  char resp[160];                /* the 101 response not yet written */
  size_t rlen, roff;
  struct wconn *next, *prev;     /* open connections */
} wconn;

static int g_ep, g_broadcast;
static volatile sig_atomic_t g_stop;
static wconn *g_open;
static wconn g_listen_tag;

static void on_signal(int sig) { (void)sig; g_stop = 1; }

static void set_ev(wconn *c, unsigned ev) {
  struct epoll_event e;
  if (c->ev == ev) return;
  e.events = ev;
  e.data.ptr = c;
  epoll_ctl(g_ep, EPOLL_CTL_MOD, c->fd, &e);
  c->ev = ev;
}

static void conn_free(wconn *c) {
  if (c->ctx) {
    if (c->prev) c->prev->next = c->next; else g_open = c->next;
    if (c->next) c->next->prev = c->prev;
    wslay_event_context_free(c->ctx);
  }
  close(c->fd);
  free(c->hbuf);
  free(c);
}

/* After any wslay call: flush, then watch what wslay wants; 0 or -1 (freed).
 * `other`: c is not the connection whose event is being handled (a
 * broadcast target): it is not freed here, which could free memory that a
 * later event of this epoll batch points to; its socket is shut down so
 * that its own next event frees it. */
static int settle(wconn *c, int other) {
  unsigned ev = 0;
  if (wslay_event_want_write(c->ctx) && wslay_event_send(c->ctx) != 0) goto end;
  if (wslay_event_want_read(c->ctx)) ev |= EPOLLIN;
  if (wslay_event_want_write(c->ctx)) ev |= EPOLLOUT;
  if (!ev) goto end;
  set_ev(c, ev);
  return 0;
end:
  if (!other) {
    conn_free(c);
    return -1;
  }
  shutdown(c->fd, SHUT_RDWR);
  wslay_event_shutdown_read(c->ctx);
  wslay_event_shutdown_write(c->ctx);
  set_ev(c, EPOLLIN);
  return 0;
}

static ssize_t recv_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len,
                       int flags, void *user) {
  wconn *c = user;
  ssize_t n;
  (void)flags;
  while ((n = recv(c->fd, buf, len, 0)) < 0 && errno == EINTR) {}
  if (n > 0) return n;
  wslay_event_set_error(ctx, n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)
                                 ? WSLAY_ERR_WOULDBLOCK
                                 : WSLAY_ERR_CALLBACK_FAILURE);
  return -1;
}

static ssize_t send_cb(wslay_event_context_ptr ctx, const uint8_t *data,
                       size_t len, int flags, void *user) {
  wconn *c = user;
  ssize_t n;
  int f = MSG_NOSIGNAL | ((flags & WSLAY_MSG_MORE) ? MSG_MORE : 0);
  while ((n = send(c->fd, data, len, f)) < 0 && errno == EINTR) {}
  if (n >= 0) return n;
  wslay_event_set_error(ctx, errno == EAGAIN || errno == EWOULDBLOCK
                                 ? WSLAY_ERR_WOULDBLOCK
                                 : WSLAY_ERR_CALLBACK_FAILURE);
  return -1;
}

static void on_msg(wslay_event_context_ptr ctx,
                   const struct wslay_event_on_msg_recv_arg *arg, void *user) {
  struct wslay_event_msg m;
  wconn *self = user, *o, *next;
  if (wslay_is_ctrl_frame(arg->opcode)) return;
  m.opcode = arg->opcode, m.msg = arg->msg, m.msg_length = arg->msg_length;
  if (!g_broadcast) {
    wslay_event_queue_msg(ctx, &m);
    return;
  }
  for (o = g_open; o; o = next) {
    next = o->next;
    if (wslay_event_queue_msg(o->ctx, &m) != 0) continue;
    if (o != self) settle(o, 1);   /* self is flushed after its recv */
  }
}

static const struct wslay_event_callbacks g_cbs = {recv_cb, send_cb, NULL, NULL,
                                                   NULL, NULL, on_msg};

/* Handshake bytes arrived or the socket is writable; 0 or -1 (freed). */
static int handshake(wconn *c, int readable) {
  if (readable && c->rlen == 0) {
    const char *key, *end;
    size_t kl;
    ssize_t n;
    char acc[29];
    if (!c->hbuf && !(c->hbuf = malloc(8192))) goto fail;
    n = recv(c->fd, c->hbuf + c->hlen, 8192 - c->hlen, 0);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return 0;
    if (n <= 0) goto fail;
    c->hlen += (size_t)n;
    end = memmem(c->hbuf, c->hlen, "\r\n\r\n", 4);
    if (!end) return c->hlen == 8192 ? (conn_free(c), -1) : 0;
    if ((size_t)(end + 4 - c->hbuf) != c->hlen) goto fail;  /* data after it */
    key = bench_header(c->hbuf, c->hlen, "Sec-WebSocket-Key", &kl);
    if (!key || kl != 24 || memcmp(c->hbuf, "GET ", 4) != 0) goto fail;
    bench_accept(key, kl, acc);
    c->rlen = (size_t)snprintf(c->resp, sizeof c->resp,
                               "HTTP/1.1 101 Switching Protocols\r\n"
                               "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                               "Sec-WebSocket-Accept: %s\r\n\r\n", acc);
    free(c->hbuf);
    c->hbuf = NULL;
  }
  while (c->roff < c->rlen) {
    ssize_t n = send(c->fd, c->resp + c->roff, c->rlen - c->roff, MSG_NOSIGNAL);
    if (n < 0 && errno == EAGAIN) { set_ev(c, EPOLLOUT); return 0; }
    if (n <= 0) goto fail;
    c->roff += (size_t)n;
  }
  if (c->rlen == 0) return 0;
  if (wslay_event_context_server_init(&c->ctx, &g_cbs, c) != 0) goto fail;
  wslay_event_config_set_max_recv_msg_length(c->ctx, 16u << 20);
  c->next = g_open, c->prev = NULL;
  if (g_open) g_open->prev = c;
  g_open = c;
  set_ev(c, EPOLLIN);
  return 0;
fail:
  conn_free(c);
  return -1;
}

int main(int argc, char **argv) {
  struct sockaddr_in a;
  struct epoll_event e, ev[256];
  int port = 9005, lfd, one = 1, i;
  for (i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "-p") && i + 1 < argc) port = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--broadcast")) g_broadcast = 1;
    else {
      fprintf(stderr, "usage: wslay_server -p PORT [--broadcast]\n");
      return 2;
    }
  }
  signal(SIGINT, on_signal);
  signal(SIGTERM, on_signal);
  signal(SIGPIPE, SIG_IGN);
  lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_port = htons((uint16_t)port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(lfd, (struct sockaddr *)&a, sizeof a) < 0 || listen(lfd, 511) < 0) {
    perror("wslay_server: listen");
    return 1;
  }
  g_ep = epoll_create1(0);
  e.events = EPOLLIN;
  e.data.ptr = &g_listen_tag;
  epoll_ctl(g_ep, EPOLL_CTL_ADD, lfd, &e);
  printf("wslay_server (wslay %s) listening on ws://127.0.0.1:%d/\n",
         WSLAY_VERSION, port);
  fflush(stdout);
  while (!g_stop) {
    int n = epoll_wait(g_ep, ev, 256, 1000);
    for (i = 0; i < n; i++) {
      wconn *c = ev[i].data.ptr;
      if (c == &g_listen_tag) {
        int fd;
        while ((fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
          wconn *nc = calloc(1, sizeof *nc);
          if (!nc) { close(fd); continue; }
          nc->fd = fd;
          setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          e.events = nc->ev = EPOLLIN;
          e.data.ptr = nc;
          epoll_ctl(g_ep, EPOLL_CTL_ADD, fd, &e);
        }
        continue;
      }
      if (!c->ctx) {
        handshake(c, (ev[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) != 0);
        continue;
      }
      if ((ev[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) &&
          wslay_event_recv(c->ctx) != 0) {
        conn_free(c);
        continue;
      }
      if ((ev[i].events & EPOLLOUT) && wslay_event_send(c->ctx) != 0) {
        conn_free(c);
        continue;
      }
      if (wslay_event_get_read_enabled(c->ctx) == 0 &&
          wslay_event_get_write_enabled(c->ctx) == 0) {
        conn_free(c);   /* shut down as a broadcast target */
        continue;
      }
      settle(c, 0);
    }
  }
  while (g_open) conn_free(g_open);
  close(lfd);
  return 0;
}
