/*
 * core_echo_server.c - a WebSocket echo server over a plain poll() loop,
 * using only the core (layer 1, ws_conn): the shape for people who bring
 * their own event loop. build/echo_server is the same server on ws_loop.
 *
 *   build/core/echo_server [-p PORT] [-v]
 *
 * Listens on 127.0.0.1:PORT (default 9001; -p 0 picks a free port and the
 * start line says which) and echoes every text and binary message back
 * unchanged. It is the server the conformance suite (tests/conformance)
 * talks to, so it does nothing clever: one poll() over the listening socket
 * and every client, the library doing all of the protocol.
 *
 * Ownership: the loop owns each client. on_close only records that the
 * connection ended; after every ws_conn_* call the loop looks at
 * ws_conn_state() and, once it is WS_STATE_CLOSED, calls ws_conn_free(),
 * half-closes the socket and frees the client after a short drain. The
 * ws_conn is never freed inside a callback, so "c may be freed in on_close"
 * never applies here.
 *
 * Why the drain ("lingering close"): a server closes the TCP connection
 * first. If the peer's bytes are still unread when close() runs (data it
 * sent after its close frame, the rest of a refused request), the kernel
 * answers with RST instead of FIN and the peer may lose our last frames. So
 * we shutdown(SHUT_WR), read and discard until the peer's FIN or for at
 * most LINGER_MS, then close().
 *
 * SIGINT/SIGTERM: stop accepting, send close 1001 (going away) on every open
 * connection and give the peers up to STOP_MS to finish the closing
 * handshake; whatever is left then is dropped. A second signal drops
 * everything at once.
 */
#define _POSIX_C_SOURCE 200809L

#include "ws.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_PORT 9001
#define MAX_MESSAGE (16u * 1024 * 1024) /* incoming frame and message limit */
#define MAX_QUEUED (64u * 1024 * 1024)  /* room for echoes while draining */
#define HIGH_WATER (1u << 20) /* stop reading while this much is queued */
#define LINGER_MS 2000
#define STOP_MS 2000

typedef struct client {
  ws_conn conn;
  int fd;
  int draining;          /* ws_conn is done and freed; discarding input */
  int dead;              /* to be closed and freed by the sweep */
  uint64_t drain_until;
} client;

static volatile sig_atomic_t g_stop; /* count of signals received */
static int g_sigpipe[2] = {-1, -1}; /* self-pipe: a signal wakes poll() */
static int g_verbose;

static uint64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void on_signal(int sig) {
  int saved = errno;
  (void)sig;
  g_stop = g_stop + 1;
  if (g_sigpipe[1] >= 0) {
    ssize_t r = write(g_sigpipe[1], "x", 1);
    (void)r;
  }
  errno = saved;
}

static int set_nonblock(int fd) {
  int fl = fcntl(fd, F_GETFL, 0);
  return fl < 0 ? -1 : fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

/* Transport callbacks ------------------------------------------------- */

static int cb_read(ws_conn *c, void *buf, size_t cap, size_t *n, void *user) {
  client *cl = (client *)user;
  ssize_t r;
  (void)c;
  do {
    r = read(cl->fd, buf, cap);
  } while (r < 0 && errno == EINTR);
  if (r < 0) return (errno == EAGAIN || errno == EWOULDBLOCK) ? WS_EAGAIN : WS_EIO;
  *n = (size_t)r; /* 0: end of stream */
  return WS_OK;
}

static int cb_write(ws_conn *c, const void *buf, size_t len, size_t *n,
                    void *user) {
  client *cl = (client *)user;
  ssize_t r;
  (void)c;
  do {
    r = write(cl->fd, buf, len);
  } while (r < 0 && errno == EINTR);
  if (r < 0) return (errno == EAGAIN || errno == EWOULDBLOCK) ? WS_EAGAIN : WS_EIO;
  *n = (size_t)r;
  return WS_OK;
}

/* Protocol callbacks -------------------------------------------------- */

static void cb_open(ws_conn *c, const char *proto, size_t plen, void *user) {
  client *cl = (client *)user;
  (void)c, (void)proto, (void)plen;
  if (g_verbose) fprintf(stderr, "echo_server: fd %d open\n", cl->fd);
}

/* Echo the whole (reassembled) message. Refusing to echo (a full queue)
 * fails the connection with 1011 rather than dropping a message. */
static int cb_message(ws_conn *c, int op, const void *data, size_t len,
                      int fin, void *user) {
  int rc;
  (void)fin, (void)user;
  rc = ws_send(c, op, data, len);
  if (rc == WS_EFULL || rc == WS_ETOOBIG || rc == WS_ENOMEM || rc == WS_EINVAL ||
      rc == WS_EUTF8)
    return -1;
  return 0; /* other results (closing, a transport error) end it anyway */
}

static void cb_close(ws_conn *c, int code, const char *reason, size_t len,
                     void *user) {
  client *cl = (client *)user;
  (void)c;
  if (g_verbose)
    fprintf(stderr, "echo_server: fd %d closed: %d %.*s\n", cl->fd, code,
            (int)len, reason);
}

/* Designated initializers: the struct may grow, unnamed members are NULL. */
static const ws_callbacks g_callbacks = {
    .read = cb_read,
    .write = cb_write,
    .on_open = cb_open,
    .on_message = cb_message,
    .on_close = cb_close,
};

/* Clients ------------------------------------------------------------- */

static client **g_clients;
static size_t g_nclients, g_capclients;

static client *client_new(int fd) {
  /* One config for every connection: ws_conn_init keeps a pointer to it. */
  static ws_config cfg;
  static int cfg_ready;
  client *cl;
  if (g_nclients == g_capclients) {
    size_t cap = g_capclients ? g_capclients * 2 : 16;
    client **v = (client **)realloc(g_clients, cap * sizeof *v);
    if (v == NULL) return NULL;
    g_clients = v;
    g_capclients = cap;
  }
  cl = (client *)calloc(1, sizeof *cl);
  if (cl == NULL) return NULL;
  cl->fd = fd;
  if (!cfg_ready) {
    cfg_ready = 1;
    ws_config_init(&cfg, WS_SERVER);
    cfg.max_frame = MAX_MESSAGE;
    cfg.max_message = MAX_MESSAGE;
    cfg.max_queued = MAX_QUEUED;
  }
  if (ws_conn_init(&cl->conn, &cfg, &g_callbacks, cl) != WS_OK) {
    free(cl);
    return NULL;
  }
  g_clients[g_nclients++] = cl;
  return cl;
}

/* Called after every ws_conn_* call on cl: once the connection is CLOSED
 * (on_close has run), release it and start the lingering close. */
static void client_check(client *cl, uint64_t now) {
  if (cl->draining || ws_conn_state(&cl->conn) != WS_STATE_CLOSED) return;
  ws_conn_free(&cl->conn);
  cl->draining = 1;
  cl->drain_until = now + LINGER_MS;
  if (shutdown(cl->fd, SHUT_WR) != 0) cl->dead = 1;
}

/* Discards input on a draining socket; done at EOF or on an error. */
static void client_drain(client *cl) {
  char buf[16384];
  for (;;) {
    ssize_t r = read(cl->fd, buf, sizeof buf);
    if (r > 0) continue;
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    cl->dead = 1;
    return;
  }
}

/* Gives up on a connection the transport has failed under (hang-up or an
 * error while the library was not reading): on_close runs with 1006. */
static void client_abort(client *cl) {
  ws_conn_free(&cl->conn);
  cl->draining = 1;
  cl->dead = 1;
}

/* Starts a graceful shutdown: close 1001 on open connections, and drop
 * those still in the opening handshake. */
static void stop_all(uint64_t now) {
  size_t i;
  for (i = 0; i < g_nclients; i++) {
    client *cl = g_clients[i];
    if (cl->draining) continue;
    if (ws_conn_state(&cl->conn) == WS_STATE_OPEN) {
      static const char why[] = "server shutting down";
      ws_close(&cl->conn, WS_CLOSE_GOING_AWAY, why, sizeof why - 1);
      client_check(cl, now);
    } else if (ws_conn_state(&cl->conn) != WS_STATE_CLOSING) {
      client_abort(cl);
    }
  }
}

static void sweep(void) {
  size_t i = 0;
  while (i < g_nclients) {
    client *cl = g_clients[i];
    if (!cl->dead) {
      i++;
      continue;
    }
    close(cl->fd);
    free(cl);
    g_clients[i] = g_clients[--g_nclients];
  }
}

static void accept_all(int lfd) {
  for (;;) {
    int one = 1, fd = accept(lfd, NULL, NULL);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK)
        fprintf(stderr, "echo_server: accept: %s\n", strerror(errno));
      return;
    }
    if (set_nonblock(fd) != 0 || client_new(fd) == NULL) {
      fprintf(stderr, "echo_server: cannot take a client\n");
      close(fd);
      continue;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
}

static int listen_on(int port, int *bound_port) {
  struct sockaddr_in sa;
  socklen_t salen = sizeof sa;
  int one = 1, fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_port = htons((uint16_t)port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
      listen(fd, SOMAXCONN) != 0 || set_nonblock(fd) != 0 ||
      getsockname(fd, (struct sockaddr *)&sa, &salen) != 0) {
    int e = errno;
    close(fd);
    errno = e;
    return -1;
  }
  *bound_port = ntohs(sa.sin_port);
  return fd;
}

static void usage(void) {
  fprintf(stderr, "usage: echo_server [-p PORT] [-v]\n"
                  "  -p PORT  listen on 127.0.0.1:PORT (default %d; 0: any "
                  "free port)\n"
                  "  -v       log connections to stderr\n",
                  DEFAULT_PORT);
}

int main(int argc, char **argv) {
  struct sigaction sa;
  struct pollfd *pfd = NULL;
  size_t pfd_cap = 0, i;
  int port = DEFAULT_PORT, lfd, a, stopping = 0;
  uint64_t stop_at = 0;

  for (a = 1; a < argc; a++) {
    if ((strcmp(argv[a], "-p") == 0 || strcmp(argv[a], "--port") == 0) &&
        a + 1 < argc) {
      char *end;
      long v = strtol(argv[++a], &end, 10);
      if (*argv[a] == '\0' || *end != '\0' || v < 0 || v > 65535) {
        fprintf(stderr, "echo_server: bad port '%s'\n", argv[a]);
        return 2;
      }
      port = (int)v;
    } else if (strcmp(argv[a], "-v") == 0) {
      g_verbose = 1;
    } else {
      usage();
      return 2;
    }
  }

  signal(SIGPIPE, SIG_IGN);
  if (pipe(g_sigpipe) != 0 || set_nonblock(g_sigpipe[0]) != 0 ||
      set_nonblock(g_sigpipe[1]) != 0) {
    perror("echo_server: pipe");
    return 1;
  }
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);

  lfd = listen_on(port, &port);
  if (lfd < 0) {
    fprintf(stderr, "echo_server: cannot listen on 127.0.0.1:%d: %s\n", port,
            strerror(errno));
    return 1;
  }
  printf("echo_server listening on ws://127.0.0.1:%d/\n", port);
  fflush(stdout);

  for (;;) {
    uint64_t now = now_ms(), next = UINT64_MAX;
    int timeout, n;
    size_t nfds;

    if (g_stop && !stopping) {
      stopping = 1;
      stop_at = now + STOP_MS;
      close(lfd);
      lfd = -1;
      stop_all(now);
    }
    if (stopping) {
      /* Done once every closing handshake is over (draining sockets are
       * just closed), or at the deadline, or on a second signal. */
      size_t live = 0;
      for (i = 0; i < g_nclients; i++)
        if (!g_clients[i]->draining && !g_clients[i]->dead) live++;
      if (live == 0 || now >= stop_at || g_stop > 1) break;
      if (stop_at < next) next = stop_at;
    }

    /* Timers: tick every connection whose deadline is due. */
    for (i = 0; i < g_nclients; i++) {
      client *cl = g_clients[i];
      if (cl->dead) continue;
      if (cl->draining) {
        if (now >= cl->drain_until) cl->dead = 1;
        continue;
      }
      if (ws_conn_next_deadline(&cl->conn) <= now) {
        ws_conn_tick(&cl->conn, now);
        client_check(cl, now);
      }
    }
    sweep();

    /* Interest set and the poll timeout from the nearest deadline. */
    if (pfd_cap < g_nclients + 2) {
      size_t cap = (g_nclients + 2) * 2;
      struct pollfd *v = (struct pollfd *)realloc(pfd, cap * sizeof *v);
      if (v == NULL) {
        fprintf(stderr, "echo_server: out of memory\n");
        break;
      }
      pfd = v;
      pfd_cap = cap;
    }
    pfd[0].fd = g_sigpipe[0];
    pfd[0].events = POLLIN;
    pfd[1].fd = lfd; /* -1 once stopping: poll() skips it */
    pfd[1].events = POLLIN;
    pfd[1].revents = 0;
    nfds = 2;
    for (i = 0; i < g_nclients; i++) {
      client *cl = g_clients[i];
      struct pollfd *p = &pfd[nfds++];
      uint64_t dl;
      p->fd = cl->fd;
      p->events = 0;
      p->revents = 0;
      if (cl->draining) {
        p->events = POLLIN;
        dl = cl->drain_until;
      } else {
        if (ws_conn_want_read(&cl->conn) &&
            ws_conn_queued(&cl->conn) < HIGH_WATER)
          p->events |= POLLIN;
        if (ws_conn_want_write(&cl->conn)) p->events |= POLLOUT;
        dl = ws_conn_next_deadline(&cl->conn);
      }
      if (dl < next) next = dl;
    }
    if (next == UINT64_MAX)
      timeout = -1;
    else if (next <= now)
      timeout = 0;
    else
      timeout = next - now > 60000 ? 60000 : (int)(next - now);

    n = poll(pfd, (nfds_t)nfds, timeout);
    if (n < 0) {
      if (errno == EINTR) continue;
      perror("echo_server: poll");
      break;
    }
    if (n == 0) continue;
    now = now_ms();
    if (pfd[0].revents) {
      char buf[64];
      while (read(g_sigpipe[0], buf, sizeof buf) > 0) {
      }
    }

    /* Clients first: pfd[2 + i] belongs to g_clients[i] until the sweep. */
    for (i = 0; i + 2 < nfds; i++) {
      client *cl = g_clients[i];
      short ev = pfd[i + 2].events, rev = pfd[i + 2].revents;
      if (rev == 0 || cl->dead) continue;
      if (cl->draining) {
        client_drain(cl);
        continue;
      }
      if (rev & POLLOUT) {
        ws_conn_on_writable(&cl->conn);
        client_check(cl, now);
        if (cl->draining) continue;
      }
      if ((ev & POLLIN) && (rev & (POLLIN | POLLHUP | POLLERR))) {
        ws_conn_on_readable(&cl->conn);
        client_check(cl, now);
      } else if (rev & (POLLHUP | POLLERR | POLLNVAL)) {
        client_abort(cl);
      }
    }
    sweep();
    if (lfd >= 0 && (pfd[1].revents & POLLIN)) accept_all(lfd);
  }

  /* What is left ends now (on_close runs with 1006). */
  for (i = 0; i < g_nclients; i++) {
    client *cl = g_clients[i];
    if (!cl->draining) ws_conn_free(&cl->conn);
    close(cl->fd);
    free(cl);
  }
  free(g_clients);
  free(pfd);
  if (lfd >= 0) close(lfd);
  close(g_sigpipe[0]);
  close(g_sigpipe[1]);
  return 0;
}
