/*
 * test_fixed.c - the core built with WS_FIXED_BUFFERS (config.h): no
 * allocator at all, every connection on buffers given with
 * ws_conn_set_buffers(), as firmware builds it (examples/firmware_client.c).
 *
 * A client and a server joined by memory pipes, each on 1 KiB buffers, go
 * through the handshake, messages whole and in fragments, a ping, a message
 * over the input buffer (1009) and a send over the output buffer; a
 * connection given no buffers fails with WS_ENOMEM without ever calling the
 * allocator or the budget hook in its config (both are left out).
 */
#define WS_FIXED_BUFFERS 1
#define WS_NO_LOOP 1
#define WS_NO_MALLOC 1
#undef WS_ENABLE_ZLIB
#define WS_ENABLE_ZLIB 0
#include "../src/ws.c"
#include "t.h"

#define SZ 1024

typedef struct side {
  ws_conn c;
  unsigned char in[SZ], out[SZ];
  unsigned char pipe[4096]; /* bytes written, not yet fed to the peer */
  size_t plen;
  int opened, closed, close_code, msgs, pongs;
  unsigned char msg[SZ];
  size_t msg_len;
  int msg_op;
} side;

static int calls; /* of the allocator and the budget hook */

static void *never_realloc(void *ptr, size_t n, void *ctx) {
  (void)ptr, (void)n, (void)ctx;
  calls++;
  return NULL;
}

static int never_charge(ws_conn *c, int kind, ptrdiff_t n, void *ctx) {
  (void)c, (void)kind, (void)n, (void)ctx;
  calls++;
  return 0;
}

static int on_write(ws_conn *c, const void *d, size_t n, size_t *done,
                    void *user) {
  side *s = (side *)user;
  (void)c;
  if (n > sizeof s->pipe - s->plen) n = sizeof s->pipe - s->plen;
  memcpy(s->pipe + s->plen, d, n);
  s->plen += n;
  *done = n;
  return n ? WS_OK : WS_EAGAIN;
}

static int on_random(ws_conn *c, void *b, size_t n, void *user) {
  static unsigned char x = 7;
  unsigned char *p = (unsigned char *)b;
  (void)c, (void)user;
  while (n--) *p++ = x = (unsigned char)(x * 13 + 5);
  return WS_OK;
}

static void on_open(ws_conn *c, const char *proto, size_t len, void *user) {
  (void)c, (void)proto, (void)len;
  ((side *)user)->opened = 1;
}

static int on_message(ws_conn *c, int op, const void *d, size_t n, int fin,
                      void *user) {
  side *s = (side *)user;
  (void)c;
  s->msgs++;
  s->msg_op = op;
  s->msg_len = n < sizeof s->msg ? n : sizeof s->msg;
  memcpy(s->msg, d, s->msg_len);
  CHECK_INT(fin, 1);
  return 0;
}

static void on_pong(ws_conn *c, const void *d, size_t n, void *user) {
  (void)c, (void)d, (void)n;
  ((side *)user)->pongs++;
}

static void on_close(ws_conn *c, int code, const char *r, size_t n,
                     void *user) {
  side *s = (side *)user;
  (void)c, (void)r, (void)n;
  s->closed = 1;
  s->close_code = code;
}

static const ws_callbacks cbs = {.write = on_write,
                                 .random = on_random,
                                 .on_open = on_open,
                                 .on_message = on_message,
                                 .on_pong = on_pong,
                                 .on_close = on_close};

/* Feeds each side what the other wrote until both pipes stay empty. */
static void pump(side *a, side *b) {
  int i;
  for (i = 0; i < 64 && (a->plen || b->plen); i++) {
    side *from = a->plen ? a : b, *to = from == a ? b : a;
    unsigned char tmp[sizeof from->pipe];
    size_t n = from->plen;
    memcpy(tmp, from->pipe, n);
    from->plen = 0;
    if (!to->closed) ws_conn_feed(&to->c, tmp, n);
  }
}

static ws_config scfg, ccfg;

static void pair(side *cli, side *srv) {
  ws_client_opts o;
  memset(cli, 0, sizeof *cli);
  memset(srv, 0, sizeof *srv);
  ws_config_init(&scfg, WS_SERVER);
  ws_config_init(&ccfg, WS_CLIENT);
  scfg.realloc = ccfg.realloc = never_realloc;
  scfg.charge = ccfg.charge = never_charge;
  CHECK_INT(ws_conn_init(&srv->c, &scfg, &cbs, srv), WS_OK);
  CHECK_INT(ws_conn_init(&cli->c, &ccfg, &cbs, cli), WS_OK);
  CHECK_INT(ws_conn_set_buffers(&srv->c, srv->in, SZ, srv->out, SZ), WS_OK);
  CHECK_INT(ws_conn_set_buffers(&cli->c, cli->in, SZ, cli->out, SZ), WS_OK);
  memset(&o, 0, sizeof o);
  o.host = "fw.example";
  o.path = "/chat";
  CHECK_INT(ws_client_start(&cli->c, &o), WS_OK);
  pump(cli, srv);
}

static void test_exchange(void) {
  side cli, srv;
  unsigned char big[SZ];
  memset(big, 'b', sizeof big);
  calls = 0;
  pair(&cli, &srv);
  CHECK(cli.opened && srv.opened);
  CHECK_INT(ws_send(&cli.c, WS_OP_TEXT, "hello", 5), WS_OK);
  pump(&cli, &srv);
  CHECK_INT(srv.msgs, 1);
  CHECK_INT(srv.msg_op, WS_OP_TEXT);
  CHECK(srv.msg_len == 5 && memcmp(srv.msg, "hello", 5) == 0);
  /* A message in three fragments arrives whole, a ping between them (the
   * most the client's buffer holds is SZ - WS_BUFFER_OVERHEAD - 256: 684
   * bytes on a 64-bit host). */
  CHECK_INT(ws_send_fragment(&srv.c, WS_OP_BINARY, big, 300, 0), WS_OK);
  CHECK_INT(ws_send_fragment(&srv.c, WS_OP_CONT, big, 300, 0), WS_OK);
  CHECK_INT(ws_ping(&srv.c, "p", 1), WS_OK);
  CHECK_INT(ws_send_fragment(&srv.c, WS_OP_CONT, big, 80, 1), WS_OK);
  pump(&cli, &srv);
  CHECK_INT(cli.msgs, 1);
  CHECK_INT(cli.msg_op, WS_OP_BINARY);
  CHECK_INT(cli.msg_len, 680);
  CHECK_INT(srv.pongs, 1);
  /* A send larger than the output buffer never fits. */
  CHECK_INT(ws_send(&cli.c, WS_OP_BINARY, big, SZ - WS_BUFFER_OVERHEAD),
            WS_ETOOBIG);
  CHECK_INT(ws_conn_memory(&cli.c), 0);
  /* The closing handshake. */
  CHECK_INT(ws_close(&cli.c, 1000, NULL, 0), WS_OK);
  pump(&cli, &srv);
  CHECK(srv.closed && srv.close_code == 1000);
  ws_conn_feed(&cli.c, NULL, 0); /* the server ended the stream */
  CHECK(cli.closed && cli.close_code == 1000);
  CHECK_INT(calls, 0);
}

static void test_too_big(void) {
  /* Over what the server's input buffer holds (SZ - overhead - 256): 1009
   * to the client, without an allocation. */
  side cli, srv;
  unsigned char big[SZ];
  size_t most = SZ - WS_BUFFER_OVERHEAD - 256;
  memset(big, 'x', sizeof big);
  calls = 0;
  pair(&cli, &srv);
  CHECK_INT(ws_send(&cli.c, WS_OP_BINARY, big, most), WS_OK);
  pump(&cli, &srv);
  CHECK_INT(srv.msgs, 1);
  CHECK_INT(srv.msg_len, most);
  CHECK_INT(ws_send(&cli.c, WS_OP_BINARY, big, most + 1), WS_OK);
  pump(&cli, &srv);
  CHECK_INT(srv.msgs, 1);
  CHECK(srv.closed && srv.close_code == 1009);
  CHECK_INT(ws_conn_error(&srv.c), WS_ETOOBIG);
  ws_conn_feed(&cli.c, NULL, 0); /* the server ended the stream */
  CHECK(cli.closed && cli.close_code == 1009);
  CHECK_INT(calls, 0);
}

static void test_no_buffers(void) {
  /* Without buffers nothing can be allocated: WS_ENOMEM, and the config's
   * allocator and budget hook are never called. */
  side s;
  ws_client_opts o;
  memset(&s, 0, sizeof s);
  ws_config_init(&ccfg, WS_CLIENT);
  ccfg.realloc = never_realloc;
  ccfg.charge = never_charge;
  calls = 0;
  CHECK_INT(ws_conn_init(&s.c, &ccfg, &cbs, &s), WS_OK);
  memset(&o, 0, sizeof o);
  o.host = "fw.example";
  CHECK_INT(ws_client_start(&s.c, &o), WS_ENOMEM);
  ws_conn_free(&s.c);
  memset(&s, 0, sizeof s);
  ws_config_init(&scfg, WS_SERVER);
  scfg.realloc = never_realloc;
  scfg.charge = never_charge;
  CHECK_INT(ws_conn_init(&s.c, &scfg, &cbs, &s), WS_OK);
  CHECK_INT(ws_conn_feed(&s.c, "GET / HTTP/1.1\r\n", 16), WS_ECLOSED);
  CHECK_INT(ws_conn_error(&s.c), WS_ENOMEM);
  CHECK_INT(calls, 0);
  ws_conn_free(&s.c);
}

int main(void) {
  RUN(test_exchange);
  RUN(test_too_big);
  RUN(test_no_buffers);
  return t_done("test_fixed");
}
