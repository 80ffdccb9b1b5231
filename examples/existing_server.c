/*
 * existing_server.c - linking ws into a C server that already exists.
 *
 * This is a tiny epoll HTTP server with a loop of its own, standing for
 * the server you already have. It answers plain requests itself. When a
 * request asks for "Upgrade: websocket", it stops watching that socket and
 * hands it to ws, together with the bytes it has already read, with
 * ws_loop_adopt(). ws's loop runs inside this server's loop: its backend fd
 * sits in our epoll set, and ws_loop_timeout() bounds our wait.
 *
 *   build/existing_server [-p PORT]      (default 9002; 0 picks one)
 * Linux only (epoll).
 */
#define _GNU_SOURCE 1
#include "ws.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_HEAD 8192

/* The host server's own per-connection state. */
typedef struct http_conn {
  int fd;
  size_t len;
  char buf[MAX_HEAD];
} http_conn;

static ws_loop g_ws;
static volatile sig_atomic_t g_stop;

static int ws_echo(ws_conn *c, int op, const void *d, size_t n, int fin,
                   void *user) {
  (void)fin, (void)user;
  return ws_send(c, op, d, n) == WS_EFULL ? -1 : 0;
}

/* Does the head ask for a WebSocket upgrade? (The host's own, rough test;
 * ws checks the request properly once it has it.) */
static int wants_websocket(const char *head) {
  const char *p = head;
  while ((p = strchr(p, '\n')) != NULL) {
    p++;
    if (strncasecmp(p, "Upgrade:", 8) == 0) {
      const char *e = strchr(p, '\r');
      size_t i, n = e ? (size_t)(e - p) : strlen(p);
      for (i = 8; i + 9 <= n; i++)
        if (strncasecmp(p + i, "websocket", 9) == 0) return 1;
    }
  }
  return 0;
}

static void http_close(int ep, http_conn *h) {
  epoll_ctl(ep, EPOLL_CTL_DEL, h->fd, NULL);
  close(h->fd);
  free(h);
}

static void http_readable(int ep, http_conn *h) {
  for (;;) {
    ssize_t r = read(h->fd, h->buf + h->len, sizeof h->buf - 1 - h->len);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    if (r <= 0 || h->len + (size_t)r >= sizeof h->buf - 1) {
      http_close(ep, h);
      return;
    }
    h->len += (size_t)r;
    h->buf[h->len] = '\0';
    if (strstr(h->buf, "\r\n\r\n") == NULL) continue;
    if (wants_websocket(h->buf)) {
      /* Hand over: the socket leaves our epoll set and our bookkeeping. */
      int fd = h->fd;
      epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
      if (ws_loop_adopt(&g_ws, fd, h->buf, h->len, NULL, NULL) == WS_EINVAL)
        close(fd);
      free(h);
    } else {
      static const char resp[] =
          "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 26\r\n"
          "Connection: close\r\n\r\nhello from the host server";
      (void)!write(h->fd, resp, sizeof resp - 1);
      http_close(ep, h);
    }
    return;
  }
}

static void on_signal(int sig) {
  (void)sig;
  g_stop = 1;
}

int main(int argc, char **argv) {
  struct sockaddr_in a;
  struct epoll_event ev, evs[64];
  ws_loop_config cfg;
  ws_loop_callbacks cb;
  unsigned port = 9002;
  int ep, lfd, one = 1, i;
  socklen_t alen = sizeof a;
  if (argc == 3 && strcmp(argv[1], "-p") == 0) {
    port = (unsigned)atoi(argv[2]);
  } else if (argc != 1) {
    fprintf(stderr, "usage: %s [-p PORT]\n", argv[0]);
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  signal(SIGINT, on_signal);
  signal(SIGTERM, on_signal);

  ws_loop_config_init(&cfg);
  memset(&cb, 0, sizeof cb);
  cb.conn.on_message = ws_echo;
  if (ws_loop_init(&g_ws, &cfg, &cb, NULL) != WS_OK ||
      ws_loop_backend_fd(&g_ws) < 0) {
    fprintf(stderr, "existing_server: needs the epoll backend\n");
    return 1;
  }

  ep = epoll_create1(EPOLL_CLOEXEC);
  lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_port = htons((uint16_t)port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(lfd, (struct sockaddr *)&a, sizeof a) < 0 || listen(lfd, 128) < 0) {
    perror("existing_server: listen");
    return 1;
  }
  getsockname(lfd, (struct sockaddr *)&a, &alen);
  ev.events = EPOLLIN;
  ev.data.ptr = NULL; /* NULL: the listener */
  epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
  ev.data.ptr = &g_ws; /* the ws loop's own fd */
  epoll_ctl(ep, EPOLL_CTL_ADD, ws_loop_backend_fd(&g_ws), &ev);
  printf("existing_server listening on http://127.0.0.1:%u/ (upgrades go to ws)\n",
         ntohs(a.sin_port));
  fflush(stdout);

  while (!g_stop) {
    int n = epoll_wait(ep, evs, 64, ws_loop_timeout(&g_ws));
    if (n < 0 && errno != EINTR) break;
    for (i = 0; i < n; i++) {
      if (evs[i].data.ptr == NULL) {
        int fd;
        while ((fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
          http_conn *h = (http_conn *)calloc(1, sizeof *h);
          if (h == NULL) {
            close(fd);
            continue;
          }
          h->fd = fd;
          ev.events = EPOLLIN;
          ev.data.ptr = h;
          epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
        }
      } else if (evs[i].data.ptr != &g_ws) {
        http_readable(ep, (http_conn *)evs[i].data.ptr);
      }
    }
    /* ws's turn: its events and its timers, without blocking. */
    ws_loop_run_once(&g_ws, 0);
  }
  ws_loop_shutdown(&g_ws);
  while (ws_loop_conn_count(&g_ws) > 0) ws_loop_run_once(&g_ws, 100);
  ws_loop_free(&g_ws);
  close(lfd);
  close(ep);
  return 0;
}
