/*
 * echo_server.c - a WebSocket echo server on the ws event loop.
 *
 *   build/echo_server [-p PORT] [--cert FILE --key FILE] [--deflate] [-v]
 *
 * Listens on 127.0.0.1:PORT (default 9001; -p 0 picks a free port and the
 * start line says which) and sends every text and binary message back
 * unchanged, to any number of clients. The conformance suite
 * (tests/conformance) talks to it. SIGINT/SIGTERM: stop accepting, close
 * every connection with 1001 and exit 0 once they are done.
 * examples/core_echo_server.c is the same server over a hand-written
 * poll() loop, using only the core. With --cert and --key (PEM) it serves
 * wss:// instead (needs a build with TLS: mbedTLS). With --deflate it
 * accepts permessage-deflate offers (needs a build with zlib), with the
 * library's default settings (ws.h, "Compression").
 */
#define _POSIX_C_SOURCE 200809L
#include "ws.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static ws_loop g_loop;
static int g_verbose;

static int on_message(ws_conn *c, int op, const void *data, size_t len,
                      int fin, void *user) {
  int rc = ws_send(c, op, data, len);
  (void)fin, (void)user;
  /* A client that sends faster than it reads fills its queue: it is not
   * a well-behaved peer, and it is told so. */
  if (rc == WS_EFULL) ws_close(c, WS_CLOSE_POLICY, "not reading", 11);
  return 0;
}

static void on_close(ws_conn *c, int code, const char *reason, size_t len,
                     void *user) {
  (void)user;
  if (g_verbose)
    fprintf(stderr, "echo_server: fd %d closed: %d %.*s (%s)\n",
            ws_loop_conn_fd(c), code, (int)len, reason,
            ws_errname(ws_conn_error(c)));
}

static void on_signal(int sig) {
  (void)sig;
  ws_loop_stop(&g_loop);
}

int main(int argc, char **argv) {
  ws_loop_config cfg;
  ws_loop_callbacks cb;
  unsigned port = 9001, bound = 0;
  const char *cert = NULL, *key = NULL;
  ws_tls_config *tls = NULL;
  int i, rc, deflate = 0;
#ifndef _WIN32
  struct sigaction sa;
#endif
  for (i = 1; i < argc; i++) {
    if ((strcmp(argv[i], "-p") == 0 || strcmp(argv[i], "--port") == 0) &&
        i + 1 < argc) {
      char *end;
      long v = strtol(argv[++i], &end, 10);
      if (*argv[i] == '\0' || *end != '\0' || v < 0 || v > 65535) {
        fprintf(stderr, "echo_server: bad port '%s'\n", argv[i]);
        return 2;
      }
      port = (unsigned)v;
    } else if (strcmp(argv[i], "--cert") == 0 && i + 1 < argc) {
      cert = argv[++i];
    } else if (strcmp(argv[i], "--key") == 0 && i + 1 < argc) {
      key = argv[++i];
    } else if (strcmp(argv[i], "--deflate") == 0) {
      deflate = 1;
    } else if (strcmp(argv[i], "-v") == 0) {
      g_verbose = 1;
    } else {
      fprintf(stderr, "usage: echo_server [-p PORT] [--cert FILE --key FILE] [--deflate] [-v]\n");
      return 2;
    }
  }
#ifdef _WIN32 /* no sigaction, no SIGPIPE; Ctrl-C runs on_signal */
  signal(SIGINT, on_signal);
  signal(SIGTERM, on_signal);
#else
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);
#endif

  ws_loop_config_init(&cfg);
  if (deflate && !ws_deflate_available()) {
    fprintf(stderr, "echo_server: --deflate: this build has no zlib\n");
    return 2;
  }
  cfg.server.deflate.enable = deflate;
  memset(&cb, 0, sizeof cb);
  cb.conn.on_message = on_message;
  cb.conn.on_close = on_close;
  if (ws_loop_init(&g_loop, &cfg, &cb, NULL) != WS_OK) {
    fprintf(stderr, "echo_server: cannot create the event loop\n");
    return 1;
  }
  if (cert || key) {
    ws_tls_options to;
    char err[200];
    ws_tls_options_init(&to, WS_SERVER);
    to.cert_file = cert;
    to.key_file = key;
    if (!cert || !key || ws_tls_config_new(&tls, &to, err, sizeof err) != WS_OK) {
      fprintf(stderr, "echo_server: TLS: %s\n",
              !cert || !key ? "--cert and --key go together" : err);
      return 2;
    }
    rc = ws_loop_listen_tls(&g_loop, "127.0.0.1", port, tls, &bound);
  } else {
    rc = ws_loop_listen(&g_loop, "127.0.0.1", port, &bound);
  }
  if (rc != WS_OK) {
    perror("echo_server: listen");
    return 1;
  }
  printf("echo_server listening on %s://127.0.0.1:%u/\n", tls ? "wss" : "ws", bound);
  fflush(stdout);
  if (g_verbose) fprintf(stderr, "echo_server: %s backend\n", ws_loop_backend());
  ws_loop_run(&g_loop);
  /* Stopped by a signal: close everyone with 1001, wait for them. */
  ws_loop_shutdown(&g_loop);
  ws_loop_run(&g_loop);
  ws_loop_free(&g_loop);
  ws_tls_config_free(tls);
  return 0;
}
