/*
 * slow_drain.c - `make cross`: a client that makes an echo server's write
 * wait on the socket alone.
 *
 *   build/slow_drain PORT [MBYTES]
 *
 * Connects to 127.0.0.1:PORT with a small receive buffer, sends one binary
 * message of MBYTES MB (default 8) and then nothing else: no pong, no
 * close, not a byte until the whole echo is in. It reads the echo in 4 KiB
 * reads, pausing 100 ms after each 512 KiB, and checks every byte. The
 * server's output is far over what the socket buffers hold, so its writes
 * go short again and again with no input to wake it: only the socket
 * becoming writable can resume them. A server that misses that stalls;
 * a read that waits 5 s for nothing ends the run with exit status 1.
 * Exit 0 when the echo is complete and equal.
 */
#define _POSIX_C_SOURCE 200809L
#include "ws.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define READ_SIZE 4096
#define PAUSE_EVERY (512 * 1024)
#define PAUSE_MS 100
#define STALL_S 5

static int g_fd = -1;
static size_t g_len;   /* the message's length */
static size_t g_got;   /* echoed bytes checked so far */
static int g_bad;      /* 1: a byte differed, or another message came */
static int g_stalled;  /* 1: a read waited STALL_S seconds for nothing */
static int g_closed;

/* Byte i of the message: a pattern that no shift or repeat of a block
 * reproduces, so a lost, doubled or misplaced piece shows. */
static unsigned char pattern(size_t i) {
  uint32_t x = (uint32_t)i * 2654435761u;
  return (unsigned char)((x >> 24) ^ (uint32_t)(i >> 16));
}

/* One blocking read of at most READ_SIZE per call, then WS_EAGAIN, so the
 * caller paces the reads. */
static int on_read(ws_conn *c, void *buf, size_t cap, size_t *n, void *user) {
  static int turn;
  ssize_t r;
  (void)c, (void)user;
  if ((turn ^= 1) == 0) return WS_EAGAIN;
  r = recv(g_fd, buf, cap < READ_SIZE ? cap : READ_SIZE, 0);
  if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
    g_stalled = 1;
    return WS_EIO;
  }
  if (r < 0) return WS_EIO;
  *n = (size_t)r;
  return WS_OK;
}

static int on_write(ws_conn *c, const void *buf, size_t len, size_t *n,
                    void *user) {
  ssize_t r;
  (void)c, (void)user;
  r = send(g_fd, buf, len, 0);
  if (r < 0) return WS_EIO;
  *n = (size_t)r;
  return WS_OK;
}

static int on_message(ws_conn *c, int op, const void *data, size_t len,
                      int fin, void *user) {
  const unsigned char *d = (const unsigned char *)data;
  size_t i;
  (void)c, (void)user;
  if (op != WS_OP_BINARY || g_got + len > g_len) {
    g_bad = 1;
    return 0;
  }
  for (i = 0; i < len; i++)
    if (d[i] != pattern(g_got + i)) {
      if (!g_bad)
        fprintf(stderr, "slow_drain: byte %zu differs\n", g_got + i);
      g_bad = 1;
      break;
    }
  g_got += len;
  if (fin && g_got != g_len) g_bad = 1;
  return 0;
}

static void on_close(ws_conn *c, int code, const char *reason, size_t len,
                     void *user) {
  (void)c, (void)user;
  if (g_got < g_len)
    fprintf(stderr, "slow_drain: closed with %d %.*s\n", code, (int)len,
            reason);
  g_closed = 1;
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void pause_ms(long ms) {
  struct timespec ts;
  ts.tv_sec = ms / 1000;
  ts.tv_nsec = (ms % 1000) * 1000000L;
  nanosleep(&ts, NULL);
}

int main(int argc, char **argv) {
  static ws_conn conn;
  ws_config cfg;
  ws_callbacks cb;
  ws_client_opts o;
  struct sockaddr_in sa;
  struct timeval tv;
  char host[32];
  unsigned char *msg;
  int port, rcvbuf = 64 * 1024, pauses = 0, rc;
  size_t i, next_pause = PAUSE_EVERY;
  double t0;
  if (argc < 2 || (port = atoi(argv[1])) <= 0 || port > 65535) {
    fprintf(stderr, "usage: slow_drain PORT [MBYTES]\n");
    return 2;
  }
  g_len = (size_t)(argc > 2 ? atoi(argv[2]) : 8) * 1024 * 1024;
  if (g_len == 0 || (msg = (unsigned char *)malloc(g_len)) == NULL) return 2;
  for (i = 0; i < g_len; i++) msg[i] = pattern(i);

  /* A small receive buffer (set before connecting, so the window is small
   * from the start), and a bound on every read. */
  g_fd = socket(AF_INET, SOCK_STREAM, 0);
  tv.tv_sec = STALL_S;
  tv.tv_usec = 0;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_port = htons((unsigned short)port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (g_fd < 0 ||
      setsockopt(g_fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf) < 0 ||
      setsockopt(g_fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) < 0 ||
      connect(g_fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
    perror("slow_drain: connect");
    return 1;
  }

  ws_config_init(&cfg, WS_CLIENT);
  cfg.stream = 1;               /* check the echo as it comes */
  cfg.ping_interval_ms = 0;     /* send nothing the test did not ask for */
  memset(&cb, 0, sizeof cb);
  cb.read = on_read;
  cb.write = on_write;
  cb.on_message = on_message;
  cb.on_close = on_close;
  memset(&o, 0, sizeof o);
  snprintf(host, sizeof host, "127.0.0.1:%d", port);
  o.host = host;
  if (ws_conn_init(&conn, &cfg, &cb, NULL) != WS_OK ||
      ws_client_start(&conn, &o) != WS_OK) {
    fprintf(stderr, "slow_drain: cannot start the client\n");
    return 1;
  }
  while (ws_conn_state(&conn) == WS_STATE_CONNECTING && !g_closed)
    if (ws_conn_on_readable(&conn) == WS_ECLOSED) break;
  if (ws_conn_state(&conn) != WS_STATE_OPEN) {
    fprintf(stderr, "slow_drain: no handshake%s\n",
            g_stalled ? " (timed out)" : "");
    return 1;
  }

  /* The one message, sent whole (the socket blocks: the server reads it
   * all before it echoes a byte); then only reads. */
  t0 = now_s();
  rc = ws_send(&conn, WS_OP_BINARY, msg, g_len);
  while (rc == WS_OK && ws_conn_queued(&conn) != 0)
    rc = ws_conn_on_writable(&conn);
  if (rc != WS_OK) {
    fprintf(stderr, "slow_drain: send: %s\n", ws_errname(rc));
    return 1;
  }
  pause_ms(PAUSE_MS);
  pauses++;
  while (g_got < g_len && !g_bad && !g_closed) {
    if (ws_conn_on_readable(&conn) == WS_ECLOSED) break;
    if (ws_conn_state(&conn) != WS_STATE_OPEN) break;
    if (g_got >= next_pause && g_got < g_len) {
      pause_ms(PAUSE_MS);
      pauses++;
      next_pause += PAUSE_EVERY;
    }
  }
  if (g_got != g_len || g_bad) {
    fprintf(stderr, "slow_drain: %zu of %zu bytes echoed after %.1f s%s%s\n",
            g_got, g_len, now_s() - t0,
            g_stalled ? ": the server stopped writing (no byte for 5 s)" : "",
            g_bad ? ": the echo differs" : "");
    return 1;
  }
  printf("slow_drain: %zu bytes echoed in %.1f s, read 4 KiB at a time with "
         "%d pauses of %d ms and no input to the server\n",
         g_len, now_s() - t0, pauses, PAUSE_MS);
  ws_conn_free(&conn);
  close(g_fd);
  free(msg);
  return 0;
}
