/*
 * ws_client.c - the ws client cases of the interoperability matrix that
 * build/echo_client and build/wsc cannot express (tests/interop): sending
 * fragmented messages, a ping between fragments, and closing with a code
 * of our choosing, against a server that speaks the peer protocol
 * (docs/interop.md).
 *
 *   build/interop/ws_client ws://127.0.0.1:PORT/PATH
 *
 * Prints "ok - NAME" or "not ok - NAME: WHY" per case and exits 0 when all
 * passed. Cases, in order on one connection (offering "interop.v2"):
 *   subprotocol                      the server chose interop.v2
 *   fragmented-text-utf8             a text message in 5 fragments cut inside
 *                                    UTF-8 sequences comes back whole
 *   fragmented-binary-ping-between   256 KiB in 4 fragments, a ping after the
 *                                    first; the echo and the pong come back
 *   close-from-client-4000           close 4000 "client-bye ✓"; the server's
 *                                    close frame echoes 4000
 */
#define _POSIX_C_SOURCE 200809L
#include "ws.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char UTF8[] = "h\xc3\xa9llo w\xc3\xb6rld \xe2\x80\x93 \xe2\x9c\x93 "
                           "\xf0\x9d\x84\x9e \xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e "
                           "\xf0\x9f\x8e\x89";
#define BIG (256 * 1024)

static ws_loop g_loop;
static ws_timer g_timer;
static unsigned char g_big[BIG];
static int g_step, g_failed, g_pong, g_echoed, g_opened;

static void result(const char *name, int good, const char *why) {
  if (good) printf("ok - %s\n", name);
  else printf("not ok - %s: %s\n", name, why), g_failed++;
  fflush(stdout);
}

static void send_pieces(ws_conn *c, int op, const unsigned char *d, size_t len,
                        int n, int ping_between) {
  int i;
  size_t at = 0;
  for (i = 0; i < n; i++) {
    size_t end = len * (size_t)(i + 1) / (size_t)n;
    if (ws_send_fragment(c, i ? WS_OP_CONT : op, d + at, end - at, i + 1 == n) != WS_OK)
      return;
    at = end;
    if (i == 0 && ping_between) ws_ping(c, "between", 7);
  }
}

/* Moves to the next case once the current one is complete. */
static void advance(ws_conn *c) {
  if (g_step == 1) {
    g_step = 2;
    g_echoed = g_pong = 0;
    send_pieces(c, WS_OP_BINARY, g_big, BIG, 4, 1);
  } else if (g_step == 2 && g_echoed && g_pong) {
    result("fragmented-binary-ping-between", g_echoed == 1, "the echo differs");
    g_step = 3;
    {
      static const char bye[] = "client-bye \xe2\x9c\x93";
      int rc = ws_close(c, 4000, bye, sizeof bye - 1);
      if (rc != WS_OK) result("close-from-client-4000", 0, ws_strerror(rc));
    }
  }
}

static void on_open(ws_conn *c, const char *proto, size_t n, void *user) {
  (void)user;
  g_opened = 1;
  result("subprotocol", n == 10 && memcmp(proto, "interop.v2", 10) == 0,
         "interop.v2 was not chosen");
  g_step = 1;
  send_pieces(c, WS_OP_TEXT, (const unsigned char *)UTF8, sizeof UTF8 - 1, 5, 0);
}

static int on_message(ws_conn *c, int op, const void *d, size_t len, int fin,
                      void *user) {
  (void)fin, (void)user;
  if (g_step == 1) {
    result("fragmented-text-utf8",
           op == WS_OP_TEXT && len == sizeof UTF8 - 1 && memcmp(d, UTF8, len) == 0,
           "the echo differs");
    advance(c);
  } else if (g_step == 2) {
    g_echoed = (op == WS_OP_BINARY && len == BIG && memcmp(d, g_big, BIG) == 0) ? 1 : 2;
    advance(c);
  }
  return 0;
}

static void on_pong(ws_conn *c, const void *d, size_t len, void *user) {
  (void)user;
  if (g_step == 2 && len == 7 && memcmp(d, "between", 7) == 0) {
    g_pong = 1;
    advance(c);
  }
}

static void on_close(ws_conn *c, int code, const char *reason, size_t len,
                     void *user) {
  char why[200];
  (void)user;
  snprintf(why, sizeof why, "closed with %d \"%.*s\" (%s) at step %d", code,
           (int)len, reason, ws_errname(ws_conn_error(c)), g_step);
  if (!g_opened) result("subprotocol", 0, why);
  else if (g_step == 3) result("close-from-client-4000", code == 4000, why);
  else result("the cases", 0, why);
  ws_loop_shutdown(ws_loop_of(c));
}

static void on_timeout(ws_loop *l, ws_timer *t, void *user) {
  (void)l, (void)t;
  ws_conn_abort((ws_conn *)user, WS_ETIMEDOUT);
}

int main(int argc, char **argv) {
  ws_loop_config cfg;
  ws_loop_callbacks cb;
  ws_client_opts o;
  ws_conn *c = NULL;
  size_t i;
  if (argc != 2) {
    fprintf(stderr, "usage: ws_client ws://127.0.0.1:PORT/PATH\n");
    return 2;
  }
  for (i = 0; i < BIG; i++) g_big[i] = (unsigned char)(i % 251);
  signal(SIGPIPE, SIG_IGN);
  ws_loop_config_init(&cfg);
  cfg.client.ping_interval_ms = 0;
  memset(&cb, 0, sizeof cb);
  cb.conn.on_open = on_open;
  cb.conn.on_message = on_message;
  cb.conn.on_pong = on_pong;
  cb.conn.on_close = on_close;
  memset(&o, 0, sizeof o);
  o.protocols = "interop.v2";
  if (ws_loop_init(&g_loop, &cfg, &cb, NULL) != WS_OK ||
      ws_loop_connect(&g_loop, argv[1], &o, NULL, &c) != WS_OK) {
    fprintf(stderr, "ws_client: cannot connect to %s\n", argv[1]);
    return 1;
  }
  ws_timer_start(&g_loop, &g_timer, 30000, 0, on_timeout, c);
  ws_loop_run(&g_loop);
  ws_timer_stop(&g_loop, &g_timer);
  ws_loop_free(&g_loop);
  return g_failed || g_step != 3 ? 1 : 0;
}
