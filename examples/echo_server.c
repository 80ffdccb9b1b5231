/*
 * echo_server.c - a WebSocket echo server on the ws event loop.
 *
 *   build/echo_server [-p PORT] [--cert FILE --key FILE] [--deflate]
 *                     [--mem-budget BYTES] [-v]
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
 * library's default settings (ws.h, "Compression"). --mem-budget sets the
 * loop's memory budget (default WS_LOOP_MEM_BUDGET; 0: none), and a plain
 * GET /stats answers with ws_loop_stats() as one JSON object (make attack
 * reads it).
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

/* GET /stats: the loop's counters as JSON; any other request that is not
 * an upgrade gets 400, as without this callback. */
static int on_http(ws_conn *c, const ws_request *req, void *user) {
  static const ws_header ct = {"Content-Type", 12, "application/json", 16};
  struct ws_loop_stats st;
  char body[1024];
  int n;
  (void)user;
  if (req->path_len != 6 || memcmp(req->path, "/stats", 6) != 0) return 400;
  ws_loop_stats(&g_loop, &st);
  n = snprintf(body, sizeof body,
               "{\"conns\":%zu,\"paused\":%zu,\"rationed\":%zu,\"mem_budget\":%zu,"
               "\"held\":%zu,\"held_in\":%zu,\"held_out\":%zu,"
               "\"held_deflate\":%zu,\"held_tls\":%zu,\"held_peak\":%zu,"
               "\"holders\":%zu,\"failed_budget_1009\":%llu,"
               "\"failed_budget_1013\":%llu,\"failed_slow_reader\":%llu,"
               "\"failed_too_big\":%llu,\"failed_protocol\":%llu,"
               "\"failed_timeout\":%llu,\"refused_503\":%llu}\n",
               st.conns, st.paused, st.rationed, st.mem_budget, st.held, st.held_in,
               st.held_out, st.held_deflate, st.held_tls, st.held_peak,
               st.holders, (unsigned long long)st.failed_budget_1009,
               (unsigned long long)st.failed_budget_1013,
               (unsigned long long)st.failed_slow_reader,
               (unsigned long long)st.failed_too_big,
               (unsigned long long)st.failed_protocol,
               (unsigned long long)st.failed_timeout,
               (unsigned long long)st.refused_503);
  return ws_http_respond(c, 200, &ct, 1, body, (size_t)n) == WS_OK ? 0 : 500;
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
  long long budget = -1;
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
    } else if (strcmp(argv[i], "--mem-budget") == 0 && i + 1 < argc) {
      char *end;
      budget = strtoll(argv[++i], &end, 10);
      if (*argv[i] == '\0' || *end != '\0' || budget < 0) {
        fprintf(stderr, "echo_server: bad --mem-budget '%s'\n", argv[i]);
        return 2;
      }
    } else if (strcmp(argv[i], "-v") == 0) {
      g_verbose = 1;
    } else {
      fprintf(stderr, "usage: echo_server [-p PORT] [--cert FILE --key FILE] "
                      "[--deflate] [--mem-budget BYTES] [-v]\n");
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
  if (budget >= 0) cfg.mem_budget = (size_t)budget;
  memset(&cb, 0, sizeof cb);
  cb.conn.on_message = on_message;
  cb.conn.on_close = on_close;
  cb.conn.on_http = on_http;
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
