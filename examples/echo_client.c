/*
 * echo_client.c - a WebSocket client, on the ws event loop, that echoes
 * what the server sends.
 *
 *   build/echo_client [--cafile FILE | --insecure] [--timeout SECONDS] [-v]
 *                     ws[s]://HOST:PORT/PATH
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
 * wss:// verifies the server against the system CAs, or --cafile's;
 * --insecure turns every certificate check off (tests only).
 * examples/core_echo_client.c is the same client over its own poll() loop.
 */
#define _POSIX_C_SOURCE 200809L
#include "ws.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static ws_loop g_loop;
static int g_verbose, g_opened, g_code = WS_CLOSE_ABNORMAL, g_err = WS_EIO;
static char g_reason[128], g_tls_err[200];

static void on_open(ws_conn *c, const char *proto, size_t n, void *user) {
  (void)c, (void)proto, (void)n, (void)user;
  g_opened = 1;
  if (g_verbose) fprintf(stderr, "echo_client: connected\n");
}

static int on_message(ws_conn *c, int op, const void *data, size_t len,
                      int fin, void *user) {
  (void)fin, (void)user;
  return ws_send(c, op, data, len) == WS_OK ? 0 : -1;
}

static void on_close(ws_conn *c, int code, const char *reason, size_t len,
                     void *user) {
  (void)user;
  g_code = code;
  g_err = ws_conn_error(c);
  if (len >= sizeof g_reason) len = sizeof g_reason - 1;
  memcpy(g_reason, reason, len);
  g_reason[len] = '\0';
  if (ws_loop_conn_tls(c) && ws_tls_error(ws_loop_conn_tls(c))[0])
    snprintf(g_tls_err, sizeof g_tls_err, "%s", ws_tls_error(ws_loop_conn_tls(c)));
  /* Let the socket finish its lingering close, then return from run. */
  ws_loop_shutdown(ws_loop_of(c));
}

static void on_timeout(ws_loop *l, ws_timer *t, void *user) {
  (void)l, (void)t;
  ws_conn_abort((ws_conn *)user, WS_ETIMEDOUT);
}

static int usage(void) {
  fprintf(stderr,
          "usage: echo_client [--cafile FILE | --insecure] [--timeout SECONDS] [-v]\n"
          "                   ws[s]://HOST:PORT/PATH\n");
  return 2;
}

/* Explains how the session ended; returns the exit status. */
static int report(void) {
  if (g_err == WS_OK && g_code != WS_CLOSE_ABNORMAL) {
    if (g_verbose)
      fprintf(stderr, "echo_client: closed by the server: %d %s\n", g_code,
              g_reason);
    return 0;
  }
  if (!g_opened && g_tls_err[0])
    fprintf(stderr, "echo_client: %s\n", g_tls_err);
  else if (!g_opened)
    fprintf(stderr, "echo_client: handshake failed: %s (%s)\n",
            ws_errname(g_err), g_reason);
  else if (g_code != WS_CLOSE_ABNORMAL)
    fprintf(stderr, "echo_client: failed: %s (%s), sent close %d\n",
            ws_errname(g_err), ws_strerror(g_err), g_code);
  else
    fprintf(stderr, "echo_client: connection lost: %s (%s), code 1006\n",
            ws_errname(g_err), g_reason);
  return 1;
}

int main(int argc, char **argv) {
  ws_loop_config cfg;
  ws_loop_callbacks cb;
  ws_timer timer;
  ws_conn *c = NULL;
  const char *url = NULL;
  long timeout = 60;
  const char *cafile = NULL;
  int i, rc, insecure = 0;
  ws_tls_config *tls = NULL;
  for (i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--timeout") == 0 && i + 1 < argc) {
      char *end;
      timeout = strtol(argv[++i], &end, 10);
      if (*end != '\0' || timeout <= 0) return usage();
    } else if (strcmp(argv[i], "--cafile") == 0 && i + 1 < argc) {
      cafile = argv[++i];
    } else if (strcmp(argv[i], "--insecure") == 0) {
      insecure = 1;
    } else if (strcmp(argv[i], "-v") == 0) {
      g_verbose = 1;
    } else if (argv[i][0] == '-' || url) {
      return usage();
    } else {
      url = argv[i];
    }
  }
  if (url == NULL) return usage();
#ifdef SIGPIPE /* not on Windows */
  signal(SIGPIPE, SIG_IGN);
#endif
  ws_loop_config_init(&cfg);
  cfg.client.ping_interval_ms = 0; /* the peer under test leads */
  if (cafile || insecure) {
    ws_tls_options to;
    char err[200];
    ws_tls_options_init(&to, WS_CLIENT);
    to.ca_file = cafile;
    to.insecure_skip_verify = insecure;
    if (ws_tls_config_new(&tls, &to, err, sizeof err) != WS_OK) {
      fprintf(stderr, "echo_client: TLS: %s\n", err);
      return 2;
    }
    if (insecure)
      fprintf(stderr, "echo_client: WARNING: --insecure: the server's certificate is NOT checked\n");
    cfg.tls_client = tls;
  }
  memset(&cb, 0, sizeof cb);
  cb.conn.on_open = on_open;
  cb.conn.on_message = on_message;
  cb.conn.on_close = on_close;
  if (ws_loop_init(&g_loop, &cfg, &cb, NULL) != WS_OK) {
    fprintf(stderr, "echo_client: cannot create the event loop\n");
    return 1;
  }
  rc = ws_loop_connect(&g_loop, url, NULL, NULL, &c);
  if (rc != WS_OK) {
    fprintf(stderr, "echo_client: %s: %s\n", url,
            rc == WS_EINVAL ? (ws_tls_available() ? "not a ws[s]://host:port/path URL"
                                                  : "not a ws://host:port/path URL (no TLS in this build)")
                            : ws_strerror(rc));
    return rc == WS_EINVAL ? 2 : 1;
  }
  memset(&timer, 0, sizeof timer);
  ws_timer_start(&g_loop, &timer, (uint64_t)timeout * 1000u, 0, on_timeout, c);
  ws_loop_run(&g_loop);
  ws_timer_stop(&g_loop, &timer);
  ws_loop_free(&g_loop);
  ws_tls_config_free(tls);
  return report();
}
