/*
 * firmware_client.c - a WebSocket client on a fixed memory budget, the way
 * firmware uses the core: static buffers (ws_conn_set_buffers), no malloc,
 * no OS (ws.c built with -DWS_NO_OS -DWS_NO_MALLOC -DWS_NO_LOOP
 * -DWS_NO_SERVER -DWS_FIXED_BUFFERS=1: the last leaves out the code that
 * grows buffers), the transport through callbacks.
 *
 * The application part (app_*) knows nothing of the transport: bytes go out
 * through the write callback, bytes in are pushed with ws_conn_feed() by
 * whoever receives them (an lwIP tcp_recv callback, a modem's UART
 * handler), and time comes from a millisecond tick. What a board supplies
 * is four functions, the "port":
 *
 *   port_send(buf, len)   take up to len bytes for the peer, return how many
 *   port_poll(buf, cap)   bytes received since the last call (0: none),
 *                         or -1 when the peer closed the stream
 *   port_ms()             a monotonic millisecond count
 *   port_random(buf, n)   n unpredictable bytes (a hardware RNG)
 *
 * docs/embedded.md shows port_send/port_poll over lwIP's raw API and over a
 * modem's AT socket. On a Unix-like host (the #if below) the same file
 * runs over a TCP socket, which is how `make test` exercises it
 * (tests/examples.sh, against build/echo_server):
 *
 *   build/firmware_client HOST PORT [MESSAGE]
 *
 * It connects (HOST is a numeric IPv4 address), sends MESSAGE ("hello from
 * firmware" by default) as text, checks that the echo is the same,
 * closes with 1000 and exits 0 after the closing handshake; anything else
 * exits 1. On a board, call app_start() once the TCP connection is up and
 * app_poll() from the main loop.
 */
#if defined(__unix__) || defined(__APPLE__)
#define _POSIX_C_SOURCE 200809L
#define FW_HOSTED 1
#else
#define FW_HOSTED 0
#endif

#include "ws.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* The port --------------------------------------------------------------- */

static size_t port_send(const void *buf, size_t len);
static long port_poll(void *buf, size_t cap);
static uint32_t port_ms(void);
static int port_random(void *buf, size_t n);

/* The application -------------------------------------------------------- */

/* The whole memory budget: 1 KiB in (the largest message is 1024 -
 * WS_BUFFER_OVERHEAD - 256 bytes), 640 B out (the largest send, its frame
 * header included, is 640 - WS_BUFFER_OVERHEAD bytes), the connection and
 * the config. No heap. */
#define RX_SIZE 1024
#define TX_SIZE 640

static unsigned char rx_buf[RX_SIZE];
static unsigned char tx_buf[TX_SIZE];
static ws_conn conn;
static ws_config config;

static const char *app_message = "hello from firmware";
static int app_echoed;    /* 1: the echo came back the same */
static int app_closed;    /* 1: on_close has run */
static int app_close_code;

static int on_write(ws_conn *c, const void *buf, size_t len, size_t *n,
                    void *user) {
  (void)c;
  (void)user;
  *n = port_send(buf, len);
  return *n ? WS_OK : WS_EAGAIN;
}

static int on_random(ws_conn *c, void *buf, size_t n, void *user) {
  (void)c;
  (void)user;
  return port_random(buf, n) == 0 ? WS_OK : WS_ERANDOM;
}

static void on_open(ws_conn *c, const char *protocol, size_t protocol_len,
                    void *user) {
  (void)protocol;
  (void)protocol_len;
  (void)user;
  /* Larger than tx_buf can hold: WS_ETOOBIG, nothing is sent. */
  if (ws_send(c, WS_OP_TEXT, app_message, strlen(app_message)) != WS_OK)
    ws_close(c, WS_CLOSE_NORMAL, NULL, 0);
}

static int on_message(ws_conn *c, int op, const void *data, size_t len,
                      int fin, void *user) {
  (void)user;
  (void)fin;
  app_echoed = op == WS_OP_TEXT && len == strlen(app_message) &&
               memcmp(data, app_message, len) == 0;
  ws_close(c, WS_CLOSE_NORMAL, NULL, 0);
  return 0;
}

static void on_close(ws_conn *c, int code, const char *reason, size_t len,
                     void *user) {
  (void)c;
  (void)reason;
  (void)len;
  (void)user;
  app_closed = 1;
  app_close_code = code;
}

/* Kept by pointer by the connection: it may sit in flash. The transport
 * has no read callback: input is pushed with ws_conn_feed(). */
static const ws_callbacks callbacks = {
    NULL, on_write, on_random, NULL, on_open, on_message,
    NULL, NULL, NULL, on_close, NULL};

/* Call once the transport is connected. host is the Host header. */
static int app_start(const char *host) {
  ws_client_opts opts;
  int rc;
  ws_config_init(&config, WS_CLIENT);
  config.ping_interval_ms = 30000;
  rc = ws_conn_init(&conn, &config, &callbacks, NULL);
  if (rc == WS_OK) rc = ws_conn_set_buffers(&conn, rx_buf, sizeof rx_buf,
                                            tx_buf, sizeof tx_buf);
  if (rc != WS_OK) return rc;
  memset(&opts, 0, sizeof opts);
  opts.host = host;
  opts.path = "/";
  return ws_client_start(&conn, &opts);
}

/* Call from the main loop: feeds what arrived, runs the timers, writes
 * what the transport would not take before. Returns 1 while the
 * connection lives, 0 once it is closed. */
static int app_poll(void) {
  static uint64_t now;   /* port_ms() widened: it wraps after 49 days */
  static uint32_t last;
  unsigned char chunk[256];
  long n = port_poll(chunk, sizeof chunk);
  uint32_t t = port_ms();
  now += (uint32_t)(t - last);
  last = t;
  if (app_closed) return 0;
  if (n > 0) ws_conn_feed(&conn, chunk, (size_t)n);
  else if (n < 0) ws_conn_feed(&conn, NULL, 0); /* end of stream */
  if (!app_closed) ws_conn_tick(&conn, now);
  if (!app_closed && ws_conn_want_write(&conn)) ws_conn_on_writable(&conn);
  return !app_closed;
}

#if FW_HOSTED
/* The port over a TCP socket ----------------------------------------------- */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int sock = -1;

static size_t port_send(const void *buf, size_t len) {
  ssize_t n = send(sock, buf, len, MSG_NOSIGNAL);
  return n > 0 ? (size_t)n : 0;
}

static long port_poll(void *buf, size_t cap) {
  struct pollfd pfd;
  ssize_t n;
  pfd.fd = sock;
  pfd.events = POLLIN;
  if (poll(&pfd, 1, 10) <= 0) return 0;
  n = recv(sock, buf, cap, 0);
  return n > 0 ? (long)n : -1;
}

static uint32_t port_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint32_t)((uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u);
}

static int port_random(void *buf, size_t n) {
  FILE *f = fopen("/dev/urandom", "rb");
  size_t got = f ? fread(buf, 1, n, f) : 0;
  if (f) fclose(f);
  return got == n ? 0 : -1;
}

int main(int argc, char **argv) {
  struct sockaddr_in sa;
  char host[64];
  uint32_t start;
  if (argc < 3 || argc > 4) {
    fprintf(stderr, "usage: %s HOST PORT [MESSAGE]\n", argv[0]);
    return 2;
  }
  if (argc == 4) app_message = argv[3];
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_port = htons((uint16_t)atoi(argv[2]));
  if (inet_pton(AF_INET, argv[1], &sa.sin_addr) != 1) {
    fprintf(stderr, "firmware_client: HOST must be a numeric IPv4 address\n");
    return 2;
  }
  sock = socket(AF_INET, SOCK_STREAM, 0);
  if (sock < 0 || connect(sock, (struct sockaddr *)&sa, sizeof sa) != 0) {
    perror("firmware_client: connect");
    return 1;
  }
  /* Non-blocking like a TCP stack's send window: a short send is queued
   * by the connection and retried from app_poll(). */
  fcntl(sock, F_SETFL, fcntl(sock, F_GETFL) | O_NONBLOCK);
  snprintf(host, sizeof host, "%s:%s", argv[1], argv[2]);
  if (app_start(host) != WS_OK) {
    fprintf(stderr, "firmware_client: start: %s\n", ws_strerror(ws_conn_error(&conn)));
    return 1;
  }
  start = port_ms();
  while (app_poll())
    if (port_ms() - start > 10000) {
      fprintf(stderr, "firmware_client: timed out\n");
      return 1;
    }
  close(sock);
  printf("firmware_client: echo %s, closed with %d, %u bytes of buffers\n",
         app_echoed ? "matched" : "DIFFERED", app_close_code,
         (unsigned)(sizeof rx_buf + sizeof tx_buf));
  return app_echoed && app_close_code == WS_CLOSE_NORMAL ? 0 : 1;
}
#else
/* On a board: the board support package supplies these (see
 * docs/embedded.md for lwIP and an AT modem). */
extern size_t board_tcp_send(const void *buf, size_t len);
extern long board_tcp_poll(void *buf, size_t cap);
extern uint32_t board_millis(void);
extern int board_rng(void *buf, size_t n);
extern int board_tcp_connect(void); /* 0 once connected */

static size_t port_send(const void *buf, size_t len) {
  return board_tcp_send(buf, len);
}
static long port_poll(void *buf, size_t cap) { return board_tcp_poll(buf, cap); }
static uint32_t port_ms(void) { return board_millis(); }
static int port_random(void *buf, size_t n) { return board_rng(buf, n); }

int main(void) {
  for (;;) {
    if (board_tcp_connect() != 0) continue;
    app_closed = 0;
    if (app_start("example.com") != WS_OK) continue;
    while (app_poll()) {
    }
  }
}
#endif
