/*
 * wsc.c - a small command-line WebSocket client.
 *
 *   build/wsc [options] ws://host:port/path
 *     --binary           send stdin lines as binary messages (default text)
 *     --subprotocol P    offer subprotocol P (repeatable)
 *     --origin O         send an Origin header
 *     --ping SECONDS     ping every SECONDS; a peer that stops answering ends it
 *     --linger MS        after stdin ends, wait for MS of quiet before closing
 *                        (default 500)
 *     --timeout SECONDS  give up connecting after SECONDS (default 10)
 *     --deflate          offer permessage-deflate (a build with zlib)
 *     --proxy URL        tunnel through the HTTP proxy at URL with CONNECT
 *                        ("http://[user:password@]host:port"; "" for none).
 *                        Without it the environment decides, as for curl:
 *                        http_proxy (ws://), https_proxy (wss://),
 *                        all_proxy, no_proxy
 *     --reconnect        keep connecting: after a failure or a drop, try
 *                        again after a jittered, growing delay (the
 *                        defaults of ws_reconnect_init()), until stdin ends;
 *                        lines read while not connected are dropped
 *     --backoff MS       with --reconnect: the first delay's bound (5000)
 *     --max-attempts N   with --reconnect: give up after N failures in a row
 *     -v                 report open (and whether deflate was agreed), pings,
 *                        pongs, the close, and with --reconnect each attempt
 *                        and its delay, on stderr
 *
 * Every stdin line (without its newline) becomes one message; every message
 * received is written to stdout (text followed by a newline, binary as is).
 * At the end of stdin it closes with 1000.
 *
 * Exit status: 0 after a clean closing handshake (1000, 1001 or no code),
 * 1 if the connection or handshake failed (with --reconnect: it gave up),
 * 2 for a usage error, 3 when the connection ended any other way (a
 * protocol error, 1006, a timeout).
 *
 * stdin is read by a second thread, which hands each line to the loop with
 * ws_loop_post(): the supported way to send from another thread.
 */
#define _POSIX_C_SOURCE 200809L
#include "ws.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _WIN32
#include <fcntl.h>
#include <io.h>
#endif

static ws_loop g_loop;
static ws_conn *g_conn;
static ws_timer g_linger;
static ws_loop_client g_client;
static int g_binary, g_verbose, g_opened, g_closed, g_code = -1;
static int g_stdin_done, g_reconnect, g_gave_up, g_reader;
static unsigned g_linger_ms = 500;
static char g_protocols[512];

typedef struct line {
  size_t len;
  char data[1];
} line;

static void linger_done(ws_loop *l, ws_timer *t, void *user) {
  (void)l, (void)t, (void)user;
  if (g_reconnect) { /* no more attempts; an open connection closes 1000 */
    if (g_conn == NULL) ws_loop_stop(&g_loop);
    ws_loop_client_stop(&g_loop, &g_client);
    return;
  }
  if (g_conn && !g_closed && ws_conn_state(g_conn) == WS_STATE_OPEN)
    ws_close(g_conn, WS_CLOSE_NORMAL, NULL, 0);
}

/* Runs on the loop thread. */
static void send_line(ws_loop *l, void *arg) {
  line *ln = (line *)arg;
  (void)l;
  if (ln == NULL) { /* end of stdin: close once the replies have settled */
    g_stdin_done = 1;
    ws_timer_start(&g_loop, &g_linger, g_linger_ms, 0, linger_done, NULL);
    return;
  }
  if (g_conn && ws_conn_state(g_conn) == WS_STATE_OPEN) {
    int rc = ws_send(g_conn, g_binary ? WS_OP_BINARY : WS_OP_TEXT, ln->data,
                     ln->len);
    if (rc != WS_OK && rc != WS_ECLOSED)
      fprintf(stderr, "wsc: send: %s\n", ws_strerror(rc));
  }
  free(ln);
}

/* The next line of stdin, without its newline, in *buf (grown as needed):
 * its length, or -1 at the end (or out of memory). getline() would do,
 * but Windows has none. */
static long next_line(char **buf, size_t *cap) {
  size_t n = 0;
  int ch;
  while ((ch = getc(stdin)) != EOF && ch != '\n') {
    if (n + 1 >= *cap) {
      size_t c2 = *cap ? *cap * 2 : 256;
      char *b2 = (char *)realloc(*buf, c2);
      if (b2 == NULL) return -1;
      *buf = b2;
      *cap = c2;
    }
    (*buf)[n++] = (char)ch;
  }
  return ch == EOF && n == 0 ? -1 : (long)n;
}

static void *read_stdin(void *arg) {
  char *buf = NULL;
  size_t cap = 0;
  long n;
  (void)arg;
  while ((n = next_line(&buf, &cap)) >= 0) {
    line *ln;
    if (n > 0 && buf[n - 1] == '\r') n--;
    ln = (line *)malloc(sizeof *ln + (size_t)n);
    if (ln == NULL) break;
    ln->len = (size_t)n;
    memcpy(ln->data, buf, (size_t)n);
    if (ws_loop_post(&g_loop, send_line, ln) != WS_OK) {
      free(ln);
      break;
    }
  }
  free(buf);
  ws_loop_post(&g_loop, send_line, NULL);
  return NULL;
}

static void on_open(ws_conn *c, const char *proto, size_t n, void *user) {
  pthread_t th;
  (void)user;
  g_opened = 1;
  g_conn = c;
  if (g_verbose)
    fprintf(stderr, "wsc: connected%s%.*s%s%s\n", n ? ", subprotocol " : "",
            (int)n, proto ? proto : "",
            ws_conn_deflate(c) ? ", permessage-deflate" : "",
            g_reconnect && ws_loop_client_opens(&g_client) > 1 ? " (reconnected)" : "");
  if (!g_reader && pthread_create(&th, NULL, read_stdin, NULL) == 0) {
    g_reader = 1;
    pthread_detach(th);
  }
}

static int on_message(ws_conn *c, int op, const void *d, size_t n, int fin,
                      void *user) {
  (void)c, (void)fin, (void)user;
  fwrite(d, 1, n, stdout);
  if (op == WS_OP_TEXT) fputc('\n', stdout);
  fflush(stdout);
  if (g_stdin_done) /* still talking: wait for quiet again */
    ws_timer_start(&g_loop, &g_linger, g_linger_ms, 0, linger_done, NULL);
  return 0;
}

static void on_ping(ws_conn *c, const void *d, size_t n, void *user) {
  (void)c, (void)d, (void)user;
  if (g_verbose) fprintf(stderr, "wsc: ping (%lu bytes)\n", (unsigned long)n);
}

static void on_pong(ws_conn *c, const void *d, size_t n, void *user) {
  (void)c, (void)d, (void)user;
  if (g_verbose) fprintf(stderr, "wsc: pong (%lu bytes)\n", (unsigned long)n);
}

static void on_close(ws_conn *c, int code, const char *reason, size_t len,
                     void *user) {
  int err = ws_conn_error(c), st = ws_conn_http_status(c);
  int opened = g_conn == c; /* this connection had opened */
  const char *why = "";
  (void)user;
  if (!g_reconnect) {
    g_closed = 1;
    ws_timer_stop(&g_loop, &g_linger);
  }
  g_code = code;
  if (g_conn == c) g_conn = NULL;
  if (err == WS_EPROXY) (void)ws_loop_proxy_status(c, &why);
  if (opened) {
    if (g_verbose || (code != 1000 && code != 1001 && code != 1005))
      fprintf(stderr, "wsc: closed %d%s%.*s\n", code, len ? ": " : "", (int)len,
              reason);
  } else if (why[0]) {
    fprintf(stderr, "wsc: could not connect: %s\n", why);
  } else if (ws_loop_conn_tls(c) && ws_tls_error(ws_loop_conn_tls(c))[0]) {
    fprintf(stderr, "wsc: could not connect: %s\n", ws_tls_error(ws_loop_conn_tls(c)));
  } else if (st != 0 && st != 101) {
    fprintf(stderr, "wsc: could not connect: %s (HTTP %d)\n",
            ws_strerror(err ? err : WS_EHANDSHAKE), st);
  } else {
    fprintf(stderr, "wsc: could not connect: %s\n", ws_strerror(err ? err : WS_EIO));
  }
  /* Reconnecting: the client decides; a close we asked for ends it. */
  if (!g_reconnect || (g_stdin_done && !ws_loop_client_conn(&g_client)))
    ws_loop_stop(&g_loop);
}

static int on_attempt(ws_loop_client *k, unsigned attempt, uint32_t delay_ms,
                      int err, int http_status, void *user) {
  (void)k, (void)user;
  if (g_verbose) {
    fprintf(stderr, "wsc: attempt %u in %lu ms (after %s", attempt,
            (unsigned long)delay_ms, err ? ws_errname(err) : "a close");
    if (http_status && http_status != 101) fprintf(stderr, ", HTTP %d", http_status);
    fprintf(stderr, ")\n");
  }
  return 0;
}

static void on_give_up(ws_loop_client *k, int err, int http_status, void *user) {
  (void)k, (void)user;
  g_gave_up = 1;
  fprintf(stderr, "wsc: gave up (%s", ws_strerror(err));
  if (http_status) fprintf(stderr, ", HTTP %d", http_status);
  fprintf(stderr, ")\n");
  ws_loop_stop(&g_loop);
}

static int usage(const char *argv0) {
  fprintf(stderr,
          "usage: %s [--binary] [--subprotocol P]... [--origin O] [--ping S] [--deflate]\n"
          "          [--linger MS] [--timeout S] [--cafile FILE | --insecure] [--proxy URL]\n"
          "          [--reconnect [--backoff MS] [--max-attempts N]] [-v]\n"
          "          ws[s]://host:port/path\n",
          argv0);
  return 2;
}

int main(int argc, char **argv) {
  ws_loop_config cfg;
  ws_loop_callbacks cb;
  ws_client_opts o;
  const char *url = NULL, *origin = NULL;
  unsigned ping = 0, timeout = 10;
  const char *cafile = NULL, *proxy = NULL;
  int i, rc, insecure = 0, deflate = 0;
  ws_reconnect pol;
  ws_reconnect_init(&pol);
  ws_tls_config *tls = NULL;
  for (i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--binary") == 0) {
      g_binary = 1;
    } else if (strcmp(a, "-v") == 0) {
      g_verbose = 1;
    } else if (strcmp(a, "--subprotocol") == 0 && i + 1 < argc) {
      size_t have = strlen(g_protocols), add = strlen(argv[++i]);
      if (have + add + 3 > sizeof g_protocols) return usage(argv[0]);
      if (have) strcat(g_protocols, ", ");
      strcat(g_protocols, argv[i]);
    } else if (strcmp(a, "--origin") == 0 && i + 1 < argc) {
      origin = argv[++i];
    } else if (strcmp(a, "--ping") == 0 && i + 1 < argc) {
      ping = (unsigned)atoi(argv[++i]);
    } else if (strcmp(a, "--linger") == 0 && i + 1 < argc) {
      g_linger_ms = (unsigned)atoi(argv[++i]);
    } else if (strcmp(a, "--timeout") == 0 && i + 1 < argc) {
      timeout = (unsigned)atoi(argv[++i]);
    } else if (strcmp(a, "--cafile") == 0 && i + 1 < argc) {
      cafile = argv[++i];
    } else if (strcmp(a, "--insecure") == 0) {
      insecure = 1;
    } else if (strcmp(a, "--deflate") == 0) {
      deflate = 1;
    } else if (strcmp(a, "--proxy") == 0 && i + 1 < argc) {
      proxy = argv[++i];
    } else if (strcmp(a, "--reconnect") == 0) {
      g_reconnect = 1;
    } else if (strcmp(a, "--backoff") == 0 && i + 1 < argc) {
      pol.first_ms = (uint32_t)atoi(argv[++i]);
    } else if (strcmp(a, "--max-attempts") == 0 && i + 1 < argc) {
      pol.max_attempts = (uint32_t)atoi(argv[++i]);
    } else if (a[0] == '-' || url) {
      return usage(argv[0]);
    } else {
      url = a;
    }
  }
  if (url == NULL) return usage(argv[0]);
#ifdef _WIN32
  _setmode(_fileno(stdout), _O_BINARY); /* messages as they came, no CRLF */
#else
  signal(SIGPIPE, SIG_IGN);
#endif
  ws_loop_config_init(&cfg);
  cfg.client.ping_interval_ms = ping * 1000u;
  cfg.client.pong_timeout_ms = ping ? ping * 2000u : 10000u;
  cfg.client.handshake_timeout_ms = timeout * 1000u;
  cfg.client.max_message = 64u << 20;
  if (cafile || insecure) {
    ws_tls_options to;
    char err[200];
    ws_tls_options_init(&to, WS_CLIENT);
    to.ca_file = cafile;
    to.insecure_skip_verify = insecure;
    if (ws_tls_config_new(&tls, &to, err, sizeof err) != WS_OK) {
      fprintf(stderr, "wsc: TLS: %s\n", err);
      return 2;
    }
    if (insecure)
      fprintf(stderr, "wsc: WARNING: --insecure: the server's certificate is NOT checked\n");
    cfg.tls_client = tls; /* lives until exit */
  }
  memset(&cb, 0, sizeof cb);
  cb.conn.on_open = on_open;
  cb.conn.on_message = on_message;
  cb.conn.on_ping = on_ping;
  cb.conn.on_pong = on_pong;
  cb.conn.on_close = on_close;
  if (ws_loop_init(&g_loop, &cfg, &cb, NULL) != WS_OK) return 1;
  memset(&o, 0, sizeof o);
  o.origin = origin;
  o.protocols = g_protocols[0] ? g_protocols : NULL;
  if (deflate && !ws_deflate_available()) {
    fprintf(stderr, "wsc: --deflate: this build has no zlib\n");
    return 2;
  }
  o.deflate = deflate;
  o.proxy = proxy; /* NULL: the environment's */
  if (g_reconnect) {
    pol.on_attempt = on_attempt;
    pol.on_give_up = on_give_up;
    rc = ws_loop_client_start(&g_loop, &g_client, url, &o, &pol, NULL);
  } else {
    rc = ws_loop_connect(&g_loop, url, &o, NULL, &g_conn);
    g_conn = NULL; /* set by on_open */
  }
  if (rc != WS_OK) {
    fprintf(stderr, "wsc: %s: %s\n", url,
            rc == WS_EINVAL ? (ws_tls_available() ? "not a ws:// or wss:// URL, or a proxy URL that is not http://"
                                                  : "not a ws:// URL (no TLS in this build), or a proxy URL that is not http://")
                            : ws_strerror(rc));
    return rc == WS_EINVAL ? 2 : 1;
  }
  ws_loop_run(&g_loop);
  /* The stdin thread may still be blocked in getline(): exit, don't join. */
  if (!g_opened || g_gave_up) return 1;
  return (g_code == 1000 || g_code == 1001 || g_code == 1005) ? 0 : 3;
}
