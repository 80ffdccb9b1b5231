/*
 * test_misuse.c - API misuse names itself: the library is built with a
 * WS_ASSERT of the application's own (ws.h, Conventions), which records the
 * asserted expression and jumps back here instead of aborting. The text it
 * gets must name the call and the misuse.
 */
static void t_misuse(const char *expr);
#define WS_ASSERT(x) ((x) ? (void)0 : t_misuse(#x))

#include "../src/ws.c"
#include "t.h"

#include <setjmp.h>

static jmp_buf t_back;
static const char *t_expr;

static void t_misuse(const char *expr) {
  t_expr = expr;
  longjmp(t_back, 1);
}

/* Runs one misuse; the asserted text must contain `want`. */
#define MISUSE(call, want)                                                \
  do {                                                                    \
    t_expr = NULL;                                                        \
    if (setjmp(t_back) == 0) call;                                        \
    if (!CHECK(t_expr != NULL && strstr(t_expr, want) != NULL))           \
      printf("    %s: assert text \"%s\"\n", #call,                       \
             t_expr ? t_expr : "(none)");                                 \
  } while (0)

static ws_conn g_conn;

/* A callback that drives its own connection: the assert stops it before
 * anything changes, so the connection is still whole afterwards. */
static void reenter_open(ws_conn *c, const char *p, size_t n, void *user) {
  (void)p, (void)n, (void)user;
  MISUSE(ws_conn_tick(c, 0),
         "ws_conn_tick() called from a callback of the same connection");
  MISUSE(ws_conn_on_readable(c),
         "ws_conn_on_readable() called from a callback of the same connection");
  MISUSE(ws_conn_feed(c, "", 0),
         "ws_conn_feed[_inplace]() called from a callback of the same connection");
}

static int sink(ws_conn *c, const void *b, size_t len, size_t *n, void *u) {
  (void)c, (void)b, (void)u;
  *n = len;
  return WS_OK;
}

static void test_misuse_names(void) {
  ws_config cfg;
  ws_callbacks cb;
  static const char req[] =
      "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n"
      "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
      "Sec-WebSocket-Version: 13\r\n\r\n";
  MISUSE(ws_send(NULL, WS_OP_TEXT, "x", 1),
         "ws_send() called with a NULL connection");
  MISUSE(ws_conn_on_writable(NULL), "ws_conn_on_writable() called with a NULL");
  MISUSE(ws_config_init(NULL, WS_SERVER), "ws_config_init() called with a NULL");
  ws_config_init(&cfg, WS_SERVER);
  memset(&cb, 0, sizeof cb);
  cb.write = sink;
  cb.on_open = reenter_open;
  CHECK_INT(ws_conn_init(&g_conn, &cfg, &cb, NULL), WS_OK);
  CHECK_INT(ws_conn_feed(&g_conn, req, sizeof req - 1), WS_OK);
  CHECK_INT(ws_conn_state(&g_conn), WS_STATE_OPEN);
  ws_conn_free(&g_conn);
}

/* A loop's own callback may not run it again or free it. */
static void reenter_timer(ws_loop *l, ws_timer *t, void *user) {
  (void)t;
  MISUSE(ws_loop_run_once(l, 0),
         "ws_loop_run_once() or ws_loop_run() called from a callback of the same loop");
  MISUSE(ws_loop_run(l),
         "ws_loop_run_once() or ws_loop_run() called from a callback of the same loop");
  MISUSE(ws_loop_free(l), "ws_loop_free() called from a callback of the same loop");
  (*(int *)user)++;
}

static void test_loop_misuse(void) {
  ws_loop l;
  ws_loop_config cfg;
  ws_timer t;
  int ran = 0;
  memset(&t, 0, sizeof t);
  ws_loop_config_init(&cfg);
  CHECK_INT(ws_loop_init(&l, &cfg, NULL, NULL), WS_OK);
  ws_timer_start(&l, &t, 0, 0, reenter_timer, &ran);
  CHECK_INT(ws_loop_run_once(&l, 100), WS_OK);
  CHECK_INT(ran, 1);
  CHECK_INT(ws_loop_run_once(&l, 0), WS_OK); /* whole afterwards */
  ws_loop_free(&l);
}

int main(void) {
  RUN(test_misuse_names);
  RUN(test_loop_misuse);
  return t_done("test_misuse");
}
