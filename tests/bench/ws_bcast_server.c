/*
 * ws_bcast_server.c - ws's side of the broadcast benchmark, on the loop.
 *
 *   build/bench/ws_bcast_server [-p PORT]
 *
 * Every connection is subscribed to one topic when it opens; every message
 * any connection sends is published to that topic (ws_loop_publish: checked
 * and encoded once, the same bytes queued to every subscriber, the sender
 * included). Listens on 127.0.0.1; SIGINT/SIGTERM end it.
 */
#define _POSIX_C_SOURCE 200809L
#include "ws.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static ws_loop g_loop;

static void on_open(ws_conn *c, const char *proto, size_t len, void *user) {
  (void)proto, (void)len, (void)user;
  if (ws_loop_subscribe(c, "all") != WS_OK) ws_close(c, WS_CLOSE_INTERNAL, NULL, 0);
}

static int on_message(ws_conn *c, int op, const void *data, size_t len,
                      int fin, void *user) {
  (void)c, (void)fin, (void)user;
  ws_loop_publish(&g_loop, "all", op, data, len, NULL);
  return 0;
}

static void on_signal(int sig) {
  (void)sig;
  ws_loop_stop(&g_loop);
}

int main(int argc, char **argv) {
  ws_loop_config cfg;
  ws_loop_callbacks cb;
  unsigned port = 9002, bound = 0;
  struct sigaction sa;
  if (argc == 3 && strcmp(argv[1], "-p") == 0) port = (unsigned)atoi(argv[2]);
  else if (argc != 1) {
    fprintf(stderr, "usage: ws_bcast_server [-p PORT]\n");
    return 2;
  }
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);
  ws_loop_config_init(&cfg);
  memset(&cb, 0, sizeof cb);
  cb.conn.on_open = on_open;
  cb.conn.on_message = on_message;
  if (ws_loop_init(&g_loop, &cfg, &cb, NULL) != WS_OK) return 1;
  if (ws_loop_listen(&g_loop, "127.0.0.1", port, &bound) != WS_OK) {
    perror("ws_bcast_server: listen");
    return 1;
  }
  printf("ws_bcast_server listening on ws://127.0.0.1:%u/\n", bound);
  fflush(stdout);
  ws_loop_run(&g_loop);
  ws_loop_free(&g_loop);
  return 0;
}
