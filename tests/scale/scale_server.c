/*
 * scale_server.c - one ws server process of `make scale` (tests/scale/run.sh).
 *
 *   scale_server -p PORT [-s SIZE] [--timeout S]
 *                (--local | --redis URL | --nats URL)
 *
 * Listens on 127.0.0.1:PORT with ws_loop_config.reuseport = 1, so any
 * number of these processes share the port and the kernel spreads the
 * connections over them; and on a port of its own (127.0.0.1, picked by
 * the kernel), so a driver can reach this very process. Every connection
 * subscribes to the topic "all"; keepalive pings stay at the loop's
 * default (30 s).
 *
 * A connection to the path /admin (on either port) is not subscribed; its
 * text messages are commands, each answered with one text message:
 *   publish SEQ [TS]  publishes SIZE bytes to "all": SEQ (8 bytes, little
 *                     endian), TS (8 bytes: CLOCK_MONOTONIC ns; now when
 *                     absent), then the bytes scale_byte(SEQ, i). --local:
 *                     to this process's connections (ws_loop_publish);
 *                     --redis/--nats: through the bridge, so to every
 *                     process's. Answer: "ok seq=SEQ sent=N".
 *   stats             answer: the stats line below.
 * SIGUSR1 prints the stats line on stdout:
 *   stats pid=P turns=T conns=C opened=O closed=X rss_kb=R pss_kb=S
 *         utime_ms=U stime_ms=K published=B
 * turns counts ws_loop_run_once() calls (this program runs its own loop).
 * At start it prints "ready pid=P port=PORT admin=APORT mode=M" once it
 * listens. SIGINT/SIGTERM end it; so does --timeout S (a bound for a run
 * whose driver died: SIGALRM's default action).
 *
 * The bridges (src/ws_redis.c, src/ws_nats.c) are compiled in when the
 * Makefile finds them (WS_SCALE_REDIS, WS_SCALE_NATS).
 */
#define _POSIX_C_SOURCE 200809L
#include "ws.h"
#if WS_SCALE_REDIS
#include "ws_redis.h"
#endif
#if WS_SCALE_NATS
#include "ws_nats.h"
#endif

#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "scale_common.h"

enum { MODE_LOCAL, MODE_REDIS, MODE_NATS };

static ws_loop g_loop;
static int g_mode = MODE_LOCAL;
static size_t g_size = 64;
static unsigned long long g_turns, g_opened, g_closed, g_published;
static size_t g_held;                /* subscribed connections open now */
static unsigned char *g_payload;
static char g_admin_tag;             /* user pointer of admin connections */
static char g_sub_tag;               /* ... and of subscribed ones */
static volatile sig_atomic_t g_stop, g_usr1;
#if WS_SCALE_REDIS
static ws_redis *g_redis;
#endif
#if WS_SCALE_NATS
static ws_nats *g_nats;
#endif

static void on_signal(int sig) {
  if (sig == SIGUSR1)
    g_usr1 = 1;
  else
    g_stop = 1;
}

/* "Key: value kB" from a /proc file; -1 when absent. */
static long proc_kb(const char *path, const char *key) {
  char line[256];
  size_t kl = strlen(key);
  long v = -1;
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  while (fgets(line, sizeof line, f))
    if (strncmp(line, key, kl) == 0 && line[kl] == ':') {
      v = strtol(line + kl + 1, NULL, 10);
      break;
    }
  fclose(f);
  return v;
}

static int stats_line(char *buf, size_t cap) {
  struct rusage ru;
  size_t links = 0, fails = 0, down = 0, full = 0, got = 0, junk = 0;
  int n;
  getrusage(RUSAGE_SELF, &ru);
#if WS_SCALE_REDIS
  if (g_redis) {
    ws_redis_stats st;
    ws_redis_stats_get(g_redis, &st);
    links = st.connects, fails = st.failures, down = st.lost_down;
    full = st.lost_full, got = st.received, junk = st.junk;
  }
#endif
#if WS_SCALE_NATS
  if (g_nats) {
    ws_nats_stats st;
    ws_nats_stats_get(g_nats, &st);
    links = st.connects, fails = st.failures, down = st.lost_down;
    full = st.lost_full, got = st.received, junk = st.junk;
  }
#endif
  n = snprintf(buf, cap,
               "stats pid=%ld turns=%llu conns=%zu opened=%llu closed=%llu "
               "rss_kb=%ld pss_kb=%ld utime_ms=%ld stime_ms=%ld published=%llu "
               "links=%zu link_failures=%zu lost_down=%zu lost_full=%zu "
               "received=%zu junk=%zu",
               (long)getpid(), g_turns, g_held, g_opened, g_closed,
               proc_kb("/proc/self/smaps_rollup", "Rss"),
               proc_kb("/proc/self/smaps_rollup", "Pss"),
               (long)ru.ru_utime.tv_sec * 1000 + (long)ru.ru_utime.tv_usec / 1000,
               (long)ru.ru_stime.tv_sec * 1000 + (long)ru.ru_stime.tv_usec / 1000,
               g_published, links, fails, down, full, got, junk);
  return n;
}

static int on_handshake(ws_conn *c, const ws_request *req, ws_accept *acc,
                        void *user) {
  (void)acc, (void)user;
  if (req->path_len == 6 && memcmp(req->path, "/admin", 6) == 0)
    ws_conn_set_user(c, &g_admin_tag);
  return 0;
}

static void on_open(ws_conn *c, const char *proto, size_t len, void *user) {
  (void)proto, (void)len;
  if (user == &g_admin_tag) return;
  if (ws_loop_subscribe(c, "all") != WS_OK) {
    ws_close(c, WS_CLOSE_INTERNAL, NULL, 0);
    return;
  }
  ws_conn_set_user(c, &g_sub_tag);
  g_opened++;
  g_held++;
}

static void on_close(ws_conn *c, int code, const char *reason, size_t len,
                     void *user) {
  (void)c, (void)code, (void)reason, (void)len;
  if (user != &g_sub_tag) return;
  g_held--;
  g_closed++;
}

/* Publishes one broadcast; returns the local connections that took it. */
static size_t publish(uint64_t seq, uint64_t ts) {
  size_t sent = 0;
  scale_payload(g_payload, g_size, seq, ts);
#if WS_SCALE_REDIS
  if (g_mode == MODE_REDIS) {
    ws_redis_publish(g_redis, "all", WS_OP_BINARY, g_payload, g_size, &sent);
    g_published++;
    return sent;
  }
#endif
#if WS_SCALE_NATS
  if (g_mode == MODE_NATS) {
    ws_nats_publish(g_nats, "all", WS_OP_BINARY, g_payload, g_size, &sent);
    g_published++;
    return sent;
  }
#endif
  ws_loop_publish(&g_loop, "all", WS_OP_BINARY, g_payload, g_size, &sent);
  g_published++;
  return sent;
}

static int on_message(ws_conn *c, int op, const void *data, size_t len,
                      int fin, void *user) {
  char cmd[128], out[512];
  unsigned long long seq, ts;
  int n;
  (void)fin;
  if (user != &g_admin_tag) return 0; /* subscribers only listen */
  if (op != WS_OP_TEXT || len >= sizeof cmd) {
    ws_send(c, WS_OP_TEXT, "error: bad command", 18);
    return 0;
  }
  memcpy(cmd, data, len);
  cmd[len] = 0;
  n = sscanf(cmd, "publish %llu %llu", &seq, &ts);
  if (n >= 1) {
    size_t sent = publish(seq, n == 2 ? ts : scale_now_ns());
    n = snprintf(out, sizeof out, "ok seq=%llu sent=%zu", seq, sent);
  } else if (strcmp(cmd, "stats") == 0) {
    n = stats_line(out, sizeof out);
  } else {
    n = snprintf(out, sizeof out, "error: unknown command");
  }
  ws_send(c, WS_OP_TEXT, out, (size_t)n);
  return 0;
}

static void usage(void) {
  fprintf(stderr, "usage: scale_server -p PORT [-s SIZE] [--timeout S] (--local");
#if WS_SCALE_REDIS
  fprintf(stderr, " | --redis URL");
#endif
#if WS_SCALE_NATS
  fprintf(stderr, " | --nats URL");
#endif
  fprintf(stderr, ")\n");
  exit(2);
}

int main(int argc, char **argv) {
  ws_loop_config cfg;
  ws_loop_callbacks cb;
  struct sigaction sa;
  struct rlimit rl;
  const char *url = NULL;
  unsigned port = 0, admin = 0;
  int i, rc = 0;
  static const char *names[] = {"local", "redis", "nats"};
  for (i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (strcmp(a, "--local") == 0) {
      g_mode = MODE_LOCAL;
    } else if (strcmp(a, "-p") == 0 && v) {
      port = (unsigned)atoi(v), i++;
    } else if (strcmp(a, "-s") == 0 && v) {
      g_size = (size_t)atoi(v), i++;
    } else if (strcmp(a, "--timeout") == 0 && v) {
      alarm((unsigned)atoi(v)), i++;
#if WS_SCALE_REDIS
    } else if (strcmp(a, "--redis") == 0 && v) {
      g_mode = MODE_REDIS, url = v, i++;
#endif
#if WS_SCALE_NATS
    } else if (strcmp(a, "--nats") == 0 && v) {
      g_mode = MODE_NATS, url = v, i++;
#endif
    } else {
      usage();
    }
  }
  if (port == 0 || g_size < SCALE_HDR) usage();
  (void)url;
  if (!(g_payload = malloc(g_size))) return 1;
  /* Up to the hard limit, which this program does not try to raise. */
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGUSR1, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);
  ws_loop_config_init(&cfg);
  cfg.reuseport = 1;
  cfg.backlog = 4096;
  memset(&cb, 0, sizeof cb);
  cb.conn.on_handshake = on_handshake;
  cb.conn.on_open = on_open;
  cb.conn.on_message = on_message;
  cb.conn.on_close = on_close;
  if (ws_loop_init(&g_loop, &cfg, &cb, NULL) != WS_OK) return 1;
  if (ws_loop_listen(&g_loop, "127.0.0.1", port, NULL) != WS_OK ||
      ws_loop_listen(&g_loop, "127.0.0.1", 0, &admin) != WS_OK) {
    perror("scale_server: listen");
    return 1;
  }
#if WS_SCALE_REDIS
  if (g_mode == MODE_REDIS) {
    ws_redis_config rc_;
    ws_redis_config_init(&rc_);
    rc_.url = url;
    if (ws_redis_open(&g_redis, &g_loop, &rc_) != WS_OK) {
      fprintf(stderr, "scale_server: ws_redis_open %s failed\n", url);
      return 1;
    }
  }
#endif
#if WS_SCALE_NATS
  if (g_mode == MODE_NATS) {
    ws_nats_config nc;
    ws_nats_config_init(&nc);
    nc.url = url;
    if (ws_nats_open(&g_nats, &g_loop, &nc) != WS_OK) {
      fprintf(stderr, "scale_server: ws_nats_open %s failed\n", url);
      return 1;
    }
  }
#endif
  printf("ready pid=%ld port=%u admin=%u mode=%s\n", (long)getpid(), port, admin,
         names[g_mode]);
  fflush(stdout);
  while (!g_stop) {
    if (ws_loop_run_once(&g_loop, -1) != WS_OK) {
      rc = 1;
      break;
    }
    g_turns++;
    if (g_usr1) {
      char line[512];
      g_usr1 = 0;
      stats_line(line, sizeof line);
      printf("%s\n", line);
      fflush(stdout);
    }
  }
  { /* the last word: what the bridge saw, for the run's logs */
    char line[512];
    stats_line(line, sizeof line);
    printf("%s\n", line);
    fflush(stdout);
  }
#if WS_SCALE_REDIS
  ws_redis_close(g_redis);
#endif
#if WS_SCALE_NATS
  ws_nats_close(g_nats);
#endif
  ws_loop_free(&g_loop);
  free(g_payload);
  return rc;
}
