/*
 * ws_bcast_server.c - ws's side of the broadcast benchmark, on the loop, and
 * of the echo and broadcast rows with several loops ("ws-2loops").
 *
 *   build/bench/ws_bcast_server [-p PORT] [--threads N] [--echo]
 *                               [--deflate[=context]]
 *
 * Every connection is subscribed to one topic when it opens; every message
 * any connection sends is published to that topic (checked and encoded
 * once, the same bytes queued to every subscriber, the sender included).
 * --threads N runs N loops on N threads on the one port, in a
 * ws_loop_group (SO_REUSEPORT, or one acceptor handing sockets round), and
 * publishes with ws_loop_group_publish(): at once on the sender's loop,
 * through the other loops' queues on theirs. --echo echoes each message to
 * its sender instead (the echo rows). --deflate accepts permessage-deflate
 * without context takeover on the server's side, so a publish compresses
 * once for every subscriber; --deflate=context keeps context, and each
 * subscriber's compressor then compresses it again (tests/bench/
 * deflate_run.sh). Listens on 127.0.0.1; SIGINT/SIGTERM end it.
 */
#define _POSIX_C_SOURCE 200809L
#include "ws.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_THREADS 16

static ws_loop g_loops[MAX_THREADS];
static ws_loop *g_ptrs[MAX_THREADS];
static ws_loop_group g_group;
static int g_echo, g_threads = 1;

static void on_open(ws_conn *c, const char *proto, size_t len, void *user) {
  (void)proto, (void)len, (void)user;
  if (!g_echo && ws_loop_subscribe(c, "all") != WS_OK)
    ws_close(c, WS_CLOSE_INTERNAL, NULL, 0);
}

static int on_message(ws_conn *c, int op, const void *data, size_t len,
                      int fin, void *user) {
  (void)fin, (void)user;
  if (g_echo)
    ws_send(c, op, data, len);
  else if (g_threads == 1) /* one loop: the plain local publish */
    ws_loop_publish(ws_loop_of(c), "all", op, data, len, NULL);
  else
    ws_loop_group_publish(&g_group, ws_loop_of(c), "all", op, data, len);
  return 0;
}

static void on_signal(int sig) {
  (void)sig;
  ws_loop_stop(&g_loops[0]); /* the other threads block the signals */
}

static void stop_post(ws_loop *l, void *arg) {
  (void)arg;
  ws_loop_stop(l);
}

static void *loop_thread(void *arg) {
  ws_loop_run((ws_loop *)arg);
  return NULL;
}

int main(int argc, char **argv) {
  ws_loop_config cfg;
  ws_loop_callbacks cb;
  unsigned port = 9002, bound = 0;
  struct sigaction sa;
  pthread_t th[MAX_THREADS];
  sigset_t sigs, old;
  int i, threads = 1, deflate = 0;
  for (i = 1; i < argc; i++) {
    if (strcmp(argv[i], "-p") == 0 && i + 1 < argc) {
      port = (unsigned)atoi(argv[++i]);
    } else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc &&
               (threads = atoi(argv[i + 1])) >= 1 && threads <= MAX_THREADS) {
      i++;
    } else if (strcmp(argv[i], "--echo") == 0) {
      g_echo = 1;
    } else if (strcmp(argv[i], "--deflate") == 0) {
      deflate = 1;
    } else if (strcmp(argv[i], "--deflate=context") == 0) {
      deflate = 2;
    } else {
      fprintf(stderr, "usage: ws_bcast_server [-p PORT] [--threads 1-%d] [--echo] [--deflate[=context]]\n",
              MAX_THREADS);
      return 2;
    }
  }
  g_threads = threads;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);
  ws_loop_config_init(&cfg);
  cfg.server.deflate.enable = deflate != 0;
  cfg.server.deflate.no_context_takeover = deflate == 1;
  memset(&cb, 0, sizeof cb);
  cb.conn.on_open = on_open;
  cb.conn.on_message = on_message;
  for (i = 0; i < threads; i++) {
    if (ws_loop_init(&g_loops[i], &cfg, &cb, NULL) != WS_OK) return 1;
    g_ptrs[i] = &g_loops[i];
  }
  if (ws_loop_group_init(&g_group, g_ptrs, (size_t)threads) != WS_OK ||
      ws_loop_group_listen(&g_group, "127.0.0.1", port, &bound) != WS_OK) {
    perror("ws_bcast_server: listen");
    return 1;
  }
  printf("ws_bcast_server listening on ws://127.0.0.1:%u/ (%d loop%s)\n", bound,
         threads, threads > 1 ? "s" : "");
  fflush(stdout);
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &sigs, &old);
  for (i = 1; i < threads; i++)
    if (pthread_create(&th[i], NULL, loop_thread, &g_loops[i]) != 0) return 1;
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  ws_loop_run(&g_loops[0]);
  for (i = 1; i < threads; i++) ws_loop_post(&g_loops[i], stop_post, NULL);
  for (i = 1; i < threads; i++) pthread_join(th[i], NULL);
  for (i = 0; i < threads; i++) ws_loop_free(&g_loops[i]);
  return 0;
}
