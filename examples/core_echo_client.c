/*
 * core_echo_client.c - a WebSocket client that echoes what the server
 * sends, using only the core (layer 1) over its own poll() loop.
 * build/echo_client is the same client on ws_loop.
 *
 *   build/core/echo_client ws://HOST:PORT/PATH [--timeout SECONDS] [-v]
 *
 * HOST is a numeric IPv4 address, a name such as "localhost", or an IPv6
 * address in brackets ("ws://[::1]:9001/"). The client connects, performs
 * the opening handshake, sends every message it receives back unchanged
 * (the library answers pings and the closing handshake by itself) and
 * waits for the server to close.
 *
 * Exit status:
 *   0  clean close: the server sent a close frame, the closing handshake
 *      completed and the server closed the connection
 *   1  anything else, with the reason on stderr: a refused or invalid
 *      handshake, a protocol error (the library sent its close code, e.g.
 *      1002 or 1007), a connection error, or the timeout (default 60 s)
 *   2  bad usage
 *
 * The loop is the same poll() shape as echo_server.c, for one connection.
 * on_close only records the outcome; main() frees the connection after
 * ws_conn_state() says CLOSED, then closes the socket the lingering way
 * (shutdown, discard input until the server's FIN or LINGER_MS): after a
 * failure the library stops reading at once, and close() on a socket with
 * unread bytes sends RST, which can destroy our close frame in flight.
 */
#define _POSIX_C_SOURCE 200809L

#include "ws.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
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

#define MAX_MESSAGE (16u * 1024 * 1024)
#define MAX_QUEUED (64u * 1024 * 1024)
#define LINGER_MS 1000

typedef struct session {
  ws_conn conn;
  int fd;
  int opened;        /* the opening handshake completed */
  int closed;        /* on_close has run */
  int close_code;    /* what on_close reported */
  int close_err;     /* ws_conn_error() when it did */
  char reason[128];
} session;

static int g_verbose;

static uint64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* URL ------------------------------------------------------------------ */

typedef struct url {
  char host[256];  /* without brackets */
  char port[6];
  char hostport[300]; /* the Host header: "host:port", "[v6]:port" */
  const char *path;   /* points into the argument; "/" when empty */
} url;

static int parse_url(const char *s, url *u) {
  const char *h, *he, *p;
  size_t hl;
  long port = 80;
  int v6 = 0;
  if (strncmp(s, "ws://", 5) != 0) return -1;
  h = s + 5;
  if (*h == '[') {
    he = strchr(++h, ']');
    if (he == NULL) return -1;
    p = he + 1;
    v6 = 1;
  } else {
    he = h + strcspn(h, ":/?#");
    p = he;
  }
  hl = (size_t)(he - h);
  if (hl == 0 || hl >= sizeof u->host) return -1;
  memcpy(u->host, h, hl);
  u->host[hl] = '\0';
  if (*p == ':') {
    char *end;
    port = strtol(p + 1, &end, 10);
    if (end == p + 1 || port < 1 || port > 65535) return -1;
    p = end;
  }
  if (*p != '\0' && *p != '/' && *p != '?') return -1;
  snprintf(u->port, sizeof u->port, "%ld", port);
  snprintf(u->hostport, sizeof u->hostport, v6 ? "[%s]:%s" : "%s:%s", u->host,
           u->port);
  u->path = *p == '/' ? p : "/"; /* "ws://h:1?q" keeps no query: fine here */
  return 0;
}

/* Connects a non-blocking socket to the first address that answers, within
 * the deadline. Returns the fd or -1 with a message on stderr. */
static int dial(const url *u, uint64_t deadline) {
  struct addrinfo hints, *res, *ai;
  int fd = -1, rc, err = 0;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  rc = getaddrinfo(u->host, u->port, &hints, &res);
  if (rc != 0) {
    fprintf(stderr, "echo_client: cannot resolve %s: %s\n", u->host,
            gai_strerror(rc));
    return -1;
  }
  for (ai = res; ai != NULL; ai = ai->ai_next) {
    int fl, one = 1;
    fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
    if (fd < 0) {
      err = errno;
      continue;
    }
    fl = fcntl(fd, F_GETFL, 0);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) != 0) {
      err = errno;
      close(fd);
      fd = -1;
      continue;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) break;
    if (errno == EINPROGRESS) {
      struct pollfd pfd;
      uint64_t now = now_ms();
      socklen_t len = sizeof err;
      pfd.fd = fd;
      pfd.events = POLLOUT;
      rc = now >= deadline ? 0 : poll(&pfd, 1, (int)(deadline - now));
      if (rc == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 &&
          err == 0)
        break;
      if (rc == 0) err = ETIMEDOUT;
    } else {
      err = errno;
    }
    close(fd);
    fd = -1;
  }
  freeaddrinfo(res);
  if (fd < 0)
    fprintf(stderr, "echo_client: cannot connect to %s: %s\n", u->hostport,
            strerror(err));
  return fd;
}

/* Half-closes fd, discards what the server still sends until its FIN (or
 * LINGER_MS, at most until the deadline), then closes it. */
static void linger_close(int fd, uint64_t deadline) {
  uint64_t until = now_ms() + LINGER_MS;
  if (until > deadline) until = deadline;
  if (shutdown(fd, SHUT_WR) == 0) {
    for (;;) {
      char buf[16384];
      struct pollfd pfd;
      uint64_t now = now_ms();
      ssize_t r;
      if (now >= until) break;
      pfd.fd = fd;
      pfd.events = POLLIN;
      if (poll(&pfd, 1, (int)(until - now)) <= 0) break;
      r = read(fd, buf, sizeof buf);
      if (r > 0 || (r < 0 && (errno == EINTR || errno == EAGAIN))) continue;
      break; /* end of stream or an error */
    }
  }
  close(fd);
}

/* Callbacks ------------------------------------------------------------ */

static int cb_read(ws_conn *c, void *buf, size_t cap, size_t *n, void *user) {
  session *s = (session *)user;
  ssize_t r;
  (void)c;
  do {
    r = read(s->fd, buf, cap);
  } while (r < 0 && errno == EINTR);
  if (r < 0) return (errno == EAGAIN || errno == EWOULDBLOCK) ? WS_EAGAIN : WS_EIO;
  *n = (size_t)r; /* 0: end of stream */
  return WS_OK;
}

static int cb_write(ws_conn *c, const void *buf, size_t len, size_t *n,
                    void *user) {
  session *s = (session *)user;
  ssize_t r;
  (void)c;
  do {
    r = write(s->fd, buf, len);
  } while (r < 0 && errno == EINTR);
  if (r < 0) return (errno == EAGAIN || errno == EWOULDBLOCK) ? WS_EAGAIN : WS_EIO;
  *n = (size_t)r;
  return WS_OK;
}

static void cb_open(ws_conn *c, const char *proto, size_t plen, void *user) {
  session *s = (session *)user;
  (void)c;
  s->opened = 1;
  if (g_verbose)
    fprintf(stderr, "echo_client: open (subprotocol %.*s)\n", (int)plen,
            proto ? proto : "none");
}

static int cb_message(ws_conn *c, int op, const void *data, size_t len,
                      int fin, void *user) {
  int rc;
  (void)fin, (void)user;
  rc = ws_send(c, op, data, len);
  if (rc == WS_EFULL || rc == WS_ETOOBIG || rc == WS_ENOMEM || rc == WS_EINVAL ||
      rc == WS_EUTF8)
    return -1; /* fails the connection with 1011 */
  return 0;
}

static void cb_close(ws_conn *c, int code, const char *reason, size_t len,
                     void *user) {
  session *s = (session *)user;
  if (len >= sizeof s->reason) len = sizeof s->reason - 1;
  memcpy(s->reason, reason, len);
  s->reason[len] = '\0';
  s->close_code = code;
  s->close_err = ws_conn_error(c);
  s->closed = 1;
}

/* Main ----------------------------------------------------------------- */

static int usage(void) {
  fprintf(stderr,
          "usage: echo_client ws://HOST:PORT/PATH [--timeout SECONDS] [-v]\n");
  return 2;
}

/* Explains how the session ended; returns the exit status. */
static int report(const session *s) {
  if (s->close_err == WS_OK && s->close_code != WS_CLOSE_ABNORMAL) {
    if (g_verbose)
      fprintf(stderr, "echo_client: closed by the server: %d %s\n",
              s->close_code, s->reason);
    return 0;
  }
  if (!s->opened)
    fprintf(stderr, "echo_client: handshake failed: %s (%s)\n",
            ws_errname(s->close_err), s->reason);
  else if (s->close_code != WS_CLOSE_ABNORMAL)
    fprintf(stderr, "echo_client: failed: %s (%s), sent close %d\n",
            ws_errname(s->close_err), ws_strerror(s->close_err),
            s->close_code);
  else if (s->close_err != WS_OK)
    fprintf(stderr, "echo_client: connection lost: %s (%s), code 1006\n",
            ws_errname(s->close_err), s->reason);
  else
    fprintf(stderr, "echo_client: connection lost (%s), code 1006\n",
            s->reason);
  return 1;
}

int main(int argc, char **argv) {
  static session s; /* static: the ws_conn may be large for a small stack */
  const char *arg_url = NULL;
  double timeout_s = 60;
  uint64_t deadline;
  ws_config cfg;
  ws_callbacks cb;
  ws_client_opts opts;
  url u;
  int a, rc;

  for (a = 1; a < argc; a++) {
    if (strcmp(argv[a], "--timeout") == 0 && a + 1 < argc) {
      char *end;
      timeout_s = strtod(argv[++a], &end);
      if (*argv[a] == '\0' || *end != '\0' || !(timeout_s > 0) ||
          timeout_s > 86400)
        return usage();
    } else if (strcmp(argv[a], "-v") == 0) {
      g_verbose = 1;
    } else if (arg_url == NULL && argv[a][0] != '-') {
      arg_url = argv[a];
    } else {
      return usage();
    }
  }
  if (arg_url == NULL) return usage();
  if (parse_url(arg_url, &u) != 0) {
    fprintf(stderr, "echo_client: unsupported URL '%s' (want ws://host:port/path)\n",
            arg_url);
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  deadline = now_ms() + (uint64_t)(timeout_s * 1000);

  s.fd = dial(&u, deadline);
  if (s.fd < 0) return 1;

  ws_config_init(&cfg, WS_CLIENT);
  cfg.max_frame = MAX_MESSAGE;
  cfg.max_message = MAX_MESSAGE;
  cfg.max_queued = MAX_QUEUED;
  memset(&cb, 0, sizeof cb);
  cb.read = cb_read;
  cb.write = cb_write;
  cb.on_open = cb_open;
  cb.on_message = cb_message;
  cb.on_close = cb_close;
  rc = ws_conn_init(&s.conn, &cfg, &cb, &s);
  if (rc == WS_OK) {
    memset(&opts, 0, sizeof opts);
    opts.host = u.hostport;
    opts.path = u.path;
    rc = ws_client_start(&s.conn, &opts);
  }
  if (rc != WS_OK && rc != WS_ECLOSED && !s.closed) {
    fprintf(stderr, "echo_client: cannot start: %s\n", ws_strerror(rc));
    close(s.fd);
    return 1;
  }

  while (ws_conn_state(&s.conn) != WS_STATE_CLOSED) {
    struct pollfd pfd;
    uint64_t now = now_ms(), dl;
    int timeout;
    if (now >= deadline) {
      ws_conn_free(&s.conn); /* on_close runs with 1006 */
      close(s.fd);
      fprintf(stderr, "echo_client: timed out after %g s\n", timeout_s);
      return 1;
    }
    dl = ws_conn_next_deadline(&s.conn);
    if (dl <= now) {
      ws_conn_tick(&s.conn, now);
      continue;
    }
    if (dl > deadline) dl = deadline;
    timeout = (int)(dl - now);
    pfd.fd = s.fd;
    pfd.events = 0;
    if (ws_conn_want_read(&s.conn)) pfd.events |= POLLIN;
    if (ws_conn_want_write(&s.conn)) pfd.events |= POLLOUT;
    rc = poll(&pfd, 1, timeout);
    if (rc < 0) {
      if (errno == EINTR) continue;
      perror("echo_client: poll");
      ws_conn_free(&s.conn);
      close(s.fd);
      return 1;
    }
    if (rc == 0) continue;
    if (pfd.revents & POLLOUT) {
      ws_conn_on_writable(&s.conn);
      if (ws_conn_state(&s.conn) == WS_STATE_CLOSED) break;
    }
    if ((pfd.events & POLLIN) && (pfd.revents & (POLLIN | POLLHUP | POLLERR)))
      ws_conn_on_readable(&s.conn);
    else if (pfd.revents & (POLLHUP | POLLERR | POLLNVAL))
      ws_conn_free(&s.conn); /* the transport failed: on_close with 1006 */
  }
  ws_conn_free(&s.conn);
  linger_close(s.fd, deadline);
  return report(&s);
}
