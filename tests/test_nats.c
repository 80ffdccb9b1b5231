/*
 * test_nats.c - the NATS bridge (include/ws_nats.h) against a real
 * nats-server started here on free loopback ports and ended by PID. Three
 * nodes (loops with a bridge each, run in turn from this thread) with real
 * ws clients on their own loops. Where the official C client is installed,
 * tests/nats_official.c (built by the Makefile) is a second, independent
 * peer: it publishes to our bridge and subscribes to our envelope.
 * Without nats-server: "# skipped", 0 passed (a failure with CI=true).
 */
#define _DEFAULT_SOURCE 1
#include "../src/ws.c"
#include "../src/ws_nats.c"
#include "t.h"

#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

/* ---------------------------------------------------------------------
 * nats-server processes
 * ------------------------------------------------------------------- */

typedef struct server {
  pid_t pid;
  unsigned port, mport;
  char url[64];
} server;

static pid_t g_pids[8]; /* ended at exit, whatever happened */

static void kill_all(void) {
  int i;
  for (i = 0; i < 8; i++)
    if (g_pids[i] > 0) {
      kill(g_pids[i], SIGCONT);
      kill(g_pids[i], SIGKILL);
      waitpid(g_pids[i], NULL, 0);
      g_pids[i] = 0;
    }
}

static uint64_t now_ms(void) {
  struct timeval tv;
  gettimeofday(&tv, NULL);
  return (uint64_t)tv.tv_sec * 1000u + (uint64_t)tv.tv_usec / 1000u;
}

static void sleep_ms(unsigned ms) {
  struct timespec ts;
  ts.tv_sec = ms / 1000;
  ts.tv_nsec = (long)(ms % 1000) * 1000000L;
  nanosleep(&ts, NULL);
}

static unsigned free_port(void) {
  struct sockaddr_in a;
  socklen_t al = sizeof a;
  unsigned port = 0;
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
      getsockname(fd, (struct sockaddr *)&a, &al) == 0)
    port = ntohs(a.sin_port);
  close(fd);
  return port;
}

/* A blocking loopback connection, with a 3 s receive timeout; -1 if none. */
static int dial(unsigned port) {
  struct sockaddr_in a;
  struct timeval tv = {3, 0};
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_port = htons((unsigned short)port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
    close(fd);
    return -1;
  }
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  return fd;
}

static int have_server(void) {
  const char *path = getenv("PATH");
  char buf[512];
  while (path && *path) {
    size_t n = strcspn(path, ":");
    snprintf(buf, sizeof buf, "%.*s/nats-server", (int)n, path);
    if (access(buf, X_OK) == 0) return 1;
    path += n + (path[n] == ':');
  }
  return 0;
}

/* Starts nats-server on s->port (a free one when 0), monitoring on
 * s->mport, with extra arguments; waits until it accepts. */
static int server_start(server *s, const char *a1, const char *a2) {
  char port[16], mport[16];
  uint64_t end;
  int i, fd;
  if (s->port == 0) s->port = free_port();
  if (s->mport == 0) s->mport = free_port();
  snprintf(port, sizeof port, "%u", s->port);
  snprintf(mport, sizeof mport, "%u", s->mport);
  snprintf(s->url, sizeof s->url, "nats://127.0.0.1:%u", s->port);
  s->pid = fork();
  if (s->pid == 0) {
    int nul = open("/dev/null", O_RDWR);
#ifdef __linux__
    prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlives the test */
#endif
    dup2(nul, 1);
    dup2(nul, 2);
    execlp("nats-server", "nats-server", "-a", "127.0.0.1", "-p", port, "-m",
           mport, a1, a2, (char *)NULL);
    _exit(127);
  }
  if (s->pid < 0) return -1;
  for (i = 0; i < 8; i++)
    if (g_pids[i] == 0) {
      g_pids[i] = s->pid;
      break;
    }
  for (end = now_ms() + 5000; now_ms() < end; sleep_ms(10)) {
    fd = dial(s->port);
    if (fd >= 0) {
      close(fd);
      return 0;
    }
  }
  return -1;
}

static void server_signal(server *s, int sig) {
  int i;
  kill(s->pid, sig);
  if (sig != SIGKILL) return;
  waitpid(s->pid, NULL, 0);
  for (i = 0; i < 8; i++)
    if (g_pids[i] == s->pid) g_pids[i] = 0;
  s->pid = 0;
}

/* GET path from the monitoring port; the body, malloc'd, or NULL. */
static char *http_get(unsigned port, const char *path) {
  char req[256], *buf;
  size_t cap = 1 << 16, n = 0;
  ssize_t k;
  int fd = dial(port);
  if (fd < 0) return NULL;
  snprintf(req, sizeof req,
           "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
           path);
  if (send(fd, req, strlen(req), 0) < 0) {
    close(fd);
    return NULL;
  }
  buf = (char *)malloc(cap + 1);
  while (buf && (k = recv(fd, buf + n, cap - n, 0)) > 0) {
    n += (size_t)k;
    if (n == cap) {
      char *p = (char *)realloc(buf, 2 * cap + 1);
      if (p == NULL) break;
      buf = p;
      cap *= 2;
    }
  }
  close(fd);
  if (buf) buf[n] = '\0';
  return buf;
}

/* Subscriptions the server holds on a subject (from /subsz). */
static int server_subs(server *s, const char *subject) {
  char *body = http_get(s->mport, "/subsz?subs=1&limit=100000"), *p, pat[256];
  int n = 0;
  if (body == NULL) return -1;
  snprintf(pat, sizeof pat, "\"subject\": \"%s\"", subject);
  for (p = body; (p = strstr(p, pat)) != NULL; p += strlen(pat)) n++;
  free(body);
  return n;
}

/* ---------------------------------------------------------------------
 * Nodes: a loop with a listener, its bridge, and ws clients of it (the
 * clients live on the same loop; the server side subscribes)
 * ------------------------------------------------------------------- */

enum { SERVER_SIDE, CLIENT_SIDE };

typedef struct msg_rec {
  int op;
  size_t len;
  char head[32];
} msg_rec;

typedef struct client {
  int kind; /* CLIENT_SIDE */
  int opened, closed, msgs, disorder;
  long next[3]; /* next sequence number expected from sender a, b, c */
  msg_rec rec[16];
  ws_conn *c;
} client;

typedef struct node {
  int kind; /* SERVER_SIDE: the loop's user pointer */
  ws_loop loop;
  unsigned port;
  ws_nats *b;
  ws_conn *srv[8];
  int nsrv;
  client cl[8];
  int ncl;
  int ups, downs;
} node;

static void on_open(ws_conn *c, const char *proto, size_t n, void *user) {
  (void)proto, (void)n;
  if (*(int *)user == SERVER_SIDE) {
    node *nd = (node *)user;
    if (nd->nsrv < 8) nd->srv[nd->nsrv++] = c;
  } else {
    ((client *)user)->opened = 1;
  }
}

static int on_message(ws_conn *c, int op, const void *d, size_t n, int fin,
                      void *user) {
  client *cl = (client *)user;
  const char *s = (const char *)d;
  (void)c, (void)fin;
  if (cl->kind != CLIENT_SIDE) return 0;
  if (cl->msgs < 16) {
    msg_rec *r = &cl->rec[cl->msgs];
    r->op = op;
    r->len = n;
    memcpy(r->head, d, n < sizeof r->head - 1 ? n : sizeof r->head - 1);
    r->head[n < sizeof r->head - 1 ? n : sizeof r->head - 1] = '\0';
  }
  cl->msgs++;
  /* "a:N": the N-th message of sender a (b, c); each sender's in order. */
  if (n > 2 && n < 16 && s[1] == ':' && s[0] >= 'a' && s[0] <= 'c') {
    char num[16];
    memcpy(num, s + 2, n - 2);
    num[n - 2] = '\0';
    if (atol(num) != cl->next[s[0] - 'a']) cl->disorder++;
    cl->next[s[0] - 'a'] = atol(num) + 1;
  }
  return 0;
}

static void on_close(ws_conn *c, int code, const char *r, size_t n,
                     void *user) {
  (void)code, (void)r, (void)n;
  if (*(int *)user == SERVER_SIDE) {
    node *nd = (node *)user;
    int i;
    for (i = 0; i < nd->nsrv; i++)
      if (nd->srv[i] == c) nd->srv[i] = NULL;
  } else {
    ((client *)user)->closed = 1;
  }
}

static void on_state(ws_nats *b, int up, void *user) {
  node *nd = (node *)user;
  (void)b;
  if (up)
    nd->ups++;
  else
    nd->downs++;
}

static node *g_nodes[4];
static int g_nn;
static uint64_t g_max_turn; /* longest loop iteration seen (ms) */

static void node_init(node *nd) {
  ws_loop_config cfg;
  ws_loop_callbacks cb;
  memset(nd, 0, sizeof *nd);
  nd->kind = SERVER_SIDE;
  ws_loop_config_init(&cfg);
  memset(&cb, 0, sizeof cb);
  cb.conn.on_open = on_open;
  cb.conn.on_message = on_message;
  cb.conn.on_close = on_close;
  CHECK_INT(ws_loop_init(&nd->loop, &cfg, &cb, nd), WS_OK);
  CHECK_INT(ws_loop_listen(&nd->loop, "127.0.0.1", 0, &nd->port), WS_OK);
  g_nodes[g_nn++] = nd;
}

static void test_cfg(ws_nats_config *c, const char *url, node *nd) {
  ws_nats_config_init(c);
  c->url = url;
  c->backoff_min_ms = 20;
  c->backoff_max_ms = 400;
  c->ping_ms = 1000;
  c->on_state = on_state;
  c->user = nd;
}

static void node_free(node *nd) {
  ws_nats_close(nd->b);
  nd->b = NULL;
  ws_loop_free(&nd->loop);
  g_nn = 0;
}

static void turn(void) {
  int i;
  for (i = 0; i < g_nn; i++) {
    uint64_t t0 = now_ms(), dt;
    ws_loop_run_once(&g_nodes[i]->loop, 1);
    dt = now_ms() - t0;
    if (dt > g_max_turn) g_max_turn = dt;
  }
}

static void pump(unsigned ms) {
  uint64_t end = now_ms() + ms;
  while (now_ms() < end) turn();
}

typedef int (*cond_fn)(void *arg);

static int run_until(cond_fn f, void *arg, unsigned ms) {
  uint64_t end = now_ms() + ms;
  while (!f(arg)) {
    if (now_ms() > end) return 0;
    turn();
  }
  return 1;
}

static int c_up(void *arg) {
  ws_nats_stats st;
  int i;
  (void)arg;
  for (i = 0; i < g_nn; i++) {
    if (g_nodes[i]->b == NULL) continue;
    ws_nats_stats_get(g_nodes[i]->b, &st);
    if (!st.connected) return 0;
  }
  return 1;
}

static int c_down(void *arg) {
  ws_nats_stats st;
  ws_nats_stats_get(((node *)arg)->b, &st);
  return !st.connected;
}

static int c_opened(void *arg) {
  node *nd = (node *)arg;
  int i;
  for (i = 0; i < nd->ncl; i++)
    if (!nd->cl[i].opened) return 0;
  return nd->nsrv >= nd->ncl;
}

/* k more clients of node nd, each subscribed (server side) to topic. */
static void add_clients(node *nd, int k, const char *topic) {
  char url[64];
  int i, first = nd->ncl;
  snprintf(url, sizeof url, "ws://127.0.0.1:%u/", nd->port);
  for (i = 0; i < k; i++) {
    client *cl = &nd->cl[nd->ncl++];
    memset(cl, 0, sizeof *cl);
    cl->kind = CLIENT_SIDE;
    CHECK_INT(ws_loop_connect(&nd->loop, url, NULL, cl, &cl->c), WS_OK);
  }
  CHECK(run_until(c_opened, nd, 5000));
  for (i = first; i < nd->nsrv; i++)
    if (topic && nd->srv[i]) CHECK_INT(ws_loop_subscribe(nd->srv[i], topic), WS_OK);
}

typedef struct wait_subs {
  server *s;
  const char *subject;
  int want;
} wait_subs;

static int c_subs(void *arg) {
  wait_subs *w = (wait_subs *)arg;
  static uint64_t last;
  if (now_ms() - last < 20) return 0; /* the monitor is polled every 20 ms */
  last = now_ms();
  return server_subs(w->s, w->subject) == w->want;
}

static int subs_become(server *s, const char *subject, int want) {
  wait_subs w;
  w.s = s;
  w.subject = subject;
  w.want = want;
  return run_until(c_subs, &w, 5000);
}

typedef struct wait_msgs {
  node *nd;
  int first, k, want;
} wait_msgs;

static int c_msgs(void *arg) {
  wait_msgs *w = (wait_msgs *)arg;
  int i;
  for (i = w->first; i < w->first + w->k; i++)
    if (w->nd->cl[i].msgs < w->want) return 0;
  return 1;
}

/* Clients first..first+k-1 of nd have want messages or more. */
static int msgs_reach(node *nd, int first, int k, int want) {
  wait_msgs w;
  w.nd = nd;
  w.first = first;
  w.k = k;
  w.want = want;
  return run_until(c_msgs, &w, 10000);
}

static void publish_seq(node *nd, char who, long from, long to) {
  char m[32];
  long i;
  for (i = from; i < to; i++) {
    int n = snprintf(m, sizeof m, "%c:%ld", who, i);
    CHECK_INT(ws_nats_publish(nd->b, "room.1", WS_OP_TEXT, m, (size_t)n, NULL),
              WS_OK);
    if (i % 50 == 49) turn();
  }
}

static server g_srv;
static node g_a, g_b;

/* ---------------------------------------------------------------------
 * Without a server: names, URLs, the parser fed a byte at a time
 * ------------------------------------------------------------------- */

static void test_subjects(void) {
  static const struct { const char *topic, *subject; } map[] = {
      {"room", "ws.room"},
      {"room.1", "ws.room%2E1"},
      {"", "ws.%"},
      {"a b*>%", "ws.a%20b%2A%3E%25"},
      {"caf\xc3\xa9", "ws.caf%C3%A9"},
      {"tab\there", "ws.tab%09here"},
      {"x:y/z-_~", "ws.x:y/z-_~"},
      {"..", "ws.%2E%2E"},
  };
  static const char *bad[] = {"ws.a%2", "ws.%41", "ws.a.b", "x.a", "ws.",
                              "ws.%00", "ws.a%2e", "ws.a*", "ws.a b", "ws"};
  char s[WS_NATS__LINE_MAX + 1], t[WS_NATS__LINE_MAX + 1], *big;
  size_t i, n;
  for (i = 0; i < sizeof map / sizeof map[0]; i++) {
    n = ws_nats__subject("ws.", map[i].topic, s, sizeof s);
    CHECK_INT(n, strlen(map[i].subject));
    CHECK(strcmp(s, map[i].subject) == 0);
    CHECK_INT(ws_nats__topic_of("ws.", s, n, t), 0);
    CHECK(strcmp(t, map[i].topic) == 0);
  }
  for (i = 0; i < sizeof bad / sizeof bad[0]; i++)
    CHECK_INT(ws_nats__topic_of("ws.", bad[i], strlen(bad[i]), t), -1);
  /* Every byte value maps to a valid token and back. */
  for (i = 1; i < 256; i++) {
    char one[3] = {(char)i, 'x', 0};
    size_t j;
    n = ws_nats__subject("", one, s, sizeof s);
    CHECK(n > 0);
    for (j = 0; j < n; j++)
      CHECK(s[j] > 0x20 && s[j] < 0x7F && s[j] != '.' && s[j] != '*' &&
            s[j] != '>');
    CHECK_INT(ws_nats__topic_of("", s, n, t), 0);
    CHECK(strcmp(t, one) == 0);
  }
  /* Too long for the server's control line: 0 (the topic stays local). */
  big = (char *)malloc(2000);
  memset(big, '.', 1999);
  big[1999] = '\0';
  CHECK_INT(ws_nats__subject("ws.", big, s, sizeof s), 0);
  big[1000] = '\0';
  CHECK(ws_nats__subject("ws.", big, s, sizeof s) > 0);
  free(big);
  CHECK(ws_nats__prefix_ok(""));
  CHECK(ws_nats__prefix_ok("ws."));
  CHECK(ws_nats__prefix_ok("app.ws."));
  CHECK(!ws_nats__prefix_ok("ws"));
  CHECK(!ws_nats__prefix_ok(".ws."));
  CHECK(!ws_nats__prefix_ok("a..b."));
  CHECK(!ws_nats__prefix_ok("*."));
  CHECK(!ws_nats__prefix_ok("a b."));
}

static void test_urls(void) {
  static const char *bad[] = {"redis://127.0.0.1", "nats://", "nats://:4222",
                              "nats://h:0", "nats://h:65536", "nats://h:x",
                              "nats://[::1", "nats://[::1]x", "nats://h/x",
                              "nats://h h"};
  ws_nats_config c;
  ws_nats *b;
  node nd;
  size_t i;
  node_init(&nd);
  for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    test_cfg(&c, bad[i], &nd);
    CHECK_INT(ws_nats_open(&b, &nd.loop, &c), WS_EINVAL);
    CHECK(b == NULL);
  }
  test_cfg(&c, "nats://127.0.0.1:1", &nd);
  c.prefix = "bad prefix.";
  CHECK_INT(ws_nats_open(&b, &nd.loop, &c), WS_EINVAL);
  test_cfg(&c, NULL, &nd);
  CHECK_INT(ws_nats_open(&b, &nd.loop, &c), WS_EINVAL);
  test_cfg(&c, "nats://s3cr3t@127.0.0.1", &nd);
  CHECK_INT(ws_nats_open(&b, &nd.loop, &c), WS_OK);
  CHECK(strcmp(b->token, "s3cr3t") == 0 && *b->user == 0);
  CHECK(strcmp(b->port, "4222") == 0 && b->addrlen == sizeof(struct sockaddr_in));
  ws_nats_close(b);
  test_cfg(&c, "nats://u:p%40ss@[::1]:4333/", &nd);
  CHECK_INT(ws_nats_open(&b, &nd.loop, &c), WS_OK);
  CHECK(strcmp(b->user, "u") == 0 && strcmp(b->pass, "p%40ss") == 0);
  CHECK(strcmp(b->host, "::1") == 0 && strcmp(b->port, "4333") == 0);
  CHECK(b->addrlen == sizeof(struct sockaddr_in6));
  ws_nats_close(b);
  test_cfg(&c, "nats://localhost:4444", &nd);
  CHECK_INT(ws_nats_open(&b, &nd.loop, &c), WS_OK);
  CHECK(b->addrlen == 0 && strcmp(b->host, "localhost") == 0);
  ws_nats_close(b);
  node_free(&nd);
}

typedef struct seen {
  int n, op;
  char topic[32];
  size_t len;
  unsigned char data[64];
} seen;

static seen g_seen;
static int record_msg(ws_nats *b, const char *topic, int op, const void *d,
                      size_t len, void *user) {
  (void)b, (void)user;
  g_seen.n++;
  g_seen.op = op;
  snprintf(g_seen.topic, sizeof g_seen.topic, "%s", topic);
  g_seen.len = len;
  memcpy(g_seen.data, d, len < sizeof g_seen.data ? len : sizeof g_seen.data);
  return 0; /* no local delivery: this test has no clients */
}

/* Feeds bytes to the parser as split reads would bring them. */
static void feed(ws_nats *b, const void *p, size_t n, size_t step) {
  const unsigned char *s = (const unsigned char *)p;
  size_t i;
  for (i = 0; i < n && b->state != WS_NATS__DOWN; i += step) {
    size_t k = n - i < step ? n - i : step;
    if (b->icap - b->ilen < k) {
      unsigned char *q = (unsigned char *)realloc(b->in, b->ilen + k + 64);
      b->in = q;
      b->icap = b->ilen + k + 64;
    }
    memcpy(b->in + b->ilen, s + i, k);
    b->ilen += k;
    ws_nats__parse(b);
  }
}

static void test_parser(void) {
  /* The parser on its own, fed every way a socket may split the stream:
   * one byte at a time, 7 at a time, all at once. */
  static const size_t steps[] = {1, 7, 100000};
  node nd;
  ws_nats_config c;
  ws_nats *b;
  size_t si;
  node_init(&nd);
  for (si = 0; si < sizeof steps / sizeof steps[0]; si++) {
    char in[4096];
    unsigned char env[64];
    size_t n = 0, big = 3000;
    char *bigmsg;
    test_cfg(&c, "nats://127.0.0.1:1", &nd);
    c.on_message = record_msg;
    c.max_message = 2000;
    CHECK_INT(ws_nats_open(&b, &nd.loop, &c), WS_OK);
    /* Nothing listens on port 1: wait for the failed attempt, then hold
     * the retry and play a server. */
    while (b->st.failures == 0 && ws_loop_now(&nd.loop) < 1u << 31)
      ws_loop_run_once(&nd.loop, 5);
    ws_timer_stop(&nd.loop, &b->retry);
    ws_nats__on_topic(&nd.loop, "room.1", 1, b);
    b->state = WS_NATS__UP;
    memset(&g_seen, 0, sizeof g_seen);
    memcpy(env, "WSB1ABCDEFGH\x01hi there", 21);
    n += (size_t)sprintf(in + n, "INFO {\"server_id\":\"x\",\"max_payload\":5000}\r\n");
    n += (size_t)sprintf(in + n, "PING\r\n+OK\r\n");
    n += (size_t)sprintf(in + n, "MSG ws.room%%2E1 1 21\r\n");
    memcpy(in + n, env, 21);
    n += 21;
    n += (size_t)sprintf(in + n, "\r\n");
    feed(b, in, n, steps[si]);
    CHECK_INT(b->max_payload, 5000);
    CHECK_INT(g_seen.n, 1);
    CHECK(strcmp(g_seen.topic, "room.1") == 0);
    CHECK_INT(g_seen.op, WS_OP_TEXT);
    CHECK(g_seen.len == 8 && memcmp(g_seen.data, "hi there", 8) == 0);
    CHECK(b->olen - b->ooff == 6 && memcmp(b->out + b->ooff, "PONG\r\n", 6) == 0);
    /* A payload over max_message is skipped as it comes, then the stream
     * goes on: a reply-to field, a BINARY message after it. */
    bigmsg = (char *)malloc(big + 64);
    n = (size_t)sprintf(bigmsg, "MSG ws.room%%2E1 1 %u\r\n", (unsigned)big);
    memset(bigmsg + n, 'z', big);
    memcpy(bigmsg + n + big, "\r\n", 2);
    feed(b, bigmsg, n + big + 2, steps[si]);
    free(bigmsg);
    CHECK_INT(b->st.junk, 1);
    CHECK_INT(g_seen.n, 1);
    memcpy(env, "WSB1ABCDEFGH\x02\x00\xff", 15);
    n = (size_t)sprintf(in, "MSG ws.room%%2E1 1 _INBOX.x 15\r\n");
    memcpy(in + n, env, 15);
    n += 15;
    n += (size_t)sprintf(in + n, "\r\n");
    feed(b, in, n, steps[si]);
    CHECK_INT(g_seen.n, 2);
    CHECK_INT(g_seen.op, WS_OP_BINARY);
    CHECK(g_seen.len == 2 && g_seen.data[1] == 0xff);
    /* Our own origin: dropped (its subscribers had it locally). Another
     * topic's subject: dropped. An -ERR: counted, the link stays. */
    memcpy(env, "WSB1", 4);
    memcpy(env + 4, b->origin, 8);
    env[12] = 1;
    n = (size_t)sprintf(in, "MSG ws.room%%2E1 1 14\r\n");
    memcpy(in + n, env, 13);
    in[n + 13] = 'x';
    n += 14;
    n += (size_t)sprintf(in + n, "\r\nMSG ws.other 9 13\r\nWSB1ABCDEFGH\x01\r\n");
    n += (size_t)sprintf(in + n, "-ERR 'Permissions Violation for Publish'\r\n");
    feed(b, in, n, steps[si]);
    CHECK_INT(g_seen.n, 2);
    CHECK_INT(b->st.received, 2);
    CHECK_INT(b->st.errors, 1);
    CHECK(strcmp(ws_nats_last_error(b), "Permissions Violation for Publish") == 0);
    CHECK_INT(b->state, WS_NATS__UP);
    /* Junk from the server: a payload without its CRLF, then an unknown
     * line: the link is ended (failures counts it), never a crash. */
    n = (size_t)sprintf(in, "MSG ws.room%%2E1 1 3\r\nabcXY");
    feed(b, in, n, steps[si]);
    CHECK_INT(b->state, WS_NATS__DOWN);
    CHECK_INT(b->st.failures, 2);
    b->state = WS_NATS__UP;
    feed(b, "HMSG x\r\n", 8, steps[si]);
    CHECK_INT(b->state, WS_NATS__DOWN);
    b->state = WS_NATS__UP;
    memset(in, 'q', sizeof in);
    for (n = 0; n < WS_NATS__LINE_MAX / sizeof in + 2; n++)
      feed(b, in, sizeof in, 4096);
    CHECK_INT(b->state, WS_NATS__DOWN); /* a line over 64 KiB */
    CHECK_INT(b->st.failures, 4);
    ws_nats_close(b);
  }
  node_free(&nd);
}


static void test_parser_random(void) {
  /* Random streams built from protocol pieces and noise, fed in random
   * cuts: never a crash (ASan, valgrind), the input buffer bounded; a bad
   * stream ends the link, which the test puts back up to go on. */
  static const char *piece[] = {"MSG ", "ws.room%2E1", "ws.x", " ", "1", "13",
                                "20", "999999999", "\r\n", "\n", "PING",
                                "PONG", "+OK", "-ERR 'x'", "INFO {}",
                                "WSB1ABCDEFGH\x01", "\x02", "\xff", "HMSG ",
                                "MSG ws.room%2E1 1 3\r\nabc\r\n", "%", "\t"};
  node nd;
  ws_nats_config c;
  ws_nats *b;
  uint64_t r = 88172645463325252ull;
  size_t maxcap = 0;
  int i, j;
  node_init(&nd);
  test_cfg(&c, "nats://127.0.0.1:1", &nd);
  c.on_message = record_msg;
  c.max_message = 64;
  c.accept_foreign = 1;
  CHECK_INT(ws_nats_open(&b, &nd.loop, &c), WS_OK);
  while (b->st.failures == 0 && ws_loop_now(&nd.loop) < 1u << 31)
    ws_loop_run_once(&nd.loop, 5);
  ws_nats__on_topic(&nd.loop, "room.1", 1, b);
  memset(&g_seen, 0, sizeof g_seen);
  for (i = 0; i < 20000; i++) {
    char buf[512];
    size_t n = 0;
    int k = 1 + (int)(r % 12);
    for (j = 0; j < k; j++) {
      const char *p;
      size_t pl;
      r ^= r << 13, r ^= r >> 7, r ^= r << 17;
      p = piece[r % (sizeof piece / sizeof piece[0])];
      pl = strlen(p);
      if (r % 7 == 0) {
        buf[n++] = (char)(r >> 24); /* noise */
      } else if (n + pl < sizeof buf) {
        memcpy(buf + n, p, pl);
        n += pl;
      }
    }
    ws_timer_stop(&nd.loop, &b->retry);
    b->state = WS_NATS__UP;
    b->olen = b->ooff = 0;
    feed(b, buf, n, 1 + (size_t)(r % 9));
    if (b->icap > maxcap) maxcap = b->icap;
  }
  printf("# random streams: %d MSG delivered, %u junk, %u links ended\n",
         g_seen.n, (unsigned)b->st.junk, (unsigned)b->st.failures);
  CHECK(g_seen.n > 0);
  CHECK(b->st.failures > 1);
  CHECK(maxcap <= WS_NATS__LINE_MAX + 2 * 4096);
  ws_nats_close(b);
  node_free(&nd);
}

/* ---------------------------------------------------------------------
 * With the server
 * ------------------------------------------------------------------- */

static void test_cross_delivery(void) {
  /* Spec 1: a publish on A reaches the subscribers on A and on B, once
   * each, in order; the same from B. */
  ws_nats_config c;
  ws_nats_stats sa, sb;
  int i;
  test_cfg(&c, g_srv.url, &g_a);
  CHECK_INT(ws_nats_open(&g_a.b, &g_a.loop, &c), WS_OK);
  test_cfg(&c, g_srv.url, &g_b);
  CHECK_INT(ws_nats_open(&g_b.b, &g_b.loop, &c), WS_OK);
  CHECK(run_until(c_up, NULL, 5000));
  CHECK_INT(g_a.ups, 1);
  add_clients(&g_a, 2, "room.1");
  add_clients(&g_b, 2, "room.1");
  CHECK(subs_become(&g_srv, "ws.room%2E1", 2)); /* one per node */
  publish_seq(&g_a, 'a', 0, 200);
  publish_seq(&g_b, 'b', 0, 200);
  CHECK(msgs_reach(&g_a, 0, 2, 400));
  CHECK(msgs_reach(&g_b, 0, 2, 400));
  pump(200); /* nothing more comes: each exactly once */
  for (i = 0; i < 2; i++) {
    CHECK_INT(g_a.cl[i].msgs, 400);
    CHECK_INT(g_b.cl[i].msgs, 400);
    CHECK_INT(g_a.cl[i].disorder, 0);
    CHECK_INT(g_b.cl[i].disorder, 0);
    CHECK_INT(g_a.cl[i].next[0], 200);
    CHECK_INT(g_b.cl[i].next[1], 200);
  }
  ws_nats_stats_get(g_a.b, &sa);
  ws_nats_stats_get(g_b.b, &sb);
  CHECK_INT(sa.sent, 200);
  CHECK_INT(sa.received, 200);
  CHECK_INT(sb.received, 200);
  CHECK_INT(sa.topics, 1);
  CHECK_INT(sa.junk + sb.junk + sa.lost_down + sa.lost_full, 0);
  CHECK_INT(sa.connects, 1);
  /* BINARY keeps its op across. */
  CHECK_INT(ws_nats_publish(g_a.b, "room.1", WS_OP_BINARY, "\x00\xff", 2, NULL), WS_OK);
  CHECK(msgs_reach(&g_b, 0, 2, 401));
  CHECK_INT(g_b.cl[0].msgs, 401);
  /* Refused locally (invalid UTF-8): nothing goes to the server. */
  CHECK_INT(ws_nats_publish(g_a.b, "room.1", WS_OP_TEXT, "\xff", 1, NULL), WS_EUTF8);
  ws_nats_stats_get(g_a.b, &sa);
  CHECK_INT(sa.sent, 201);
}

static void test_subscribe_visible(void) {
  /* Spec 2: the first local subscriber subscribes at the server, the last
   * one leaving unsubscribes (by unsubscribe, and by closing). */
  const char *weird = "a b.*>%caf\xc3\xa9";
  const char *weird_subject = "ws.a%20b%2E%2A%3E%25caf%C3%A9";
  int a0 = g_a.nsrv, b0 = g_b.nsrv;
  ws_nats_stats st;
  add_clients(&g_a, 2, NULL);
  add_clients(&g_b, 1, NULL);
  CHECK_INT(server_subs(&g_srv, "ws.t2"), 0);
  CHECK_INT(ws_loop_subscribe(g_a.srv[a0], "t2"), WS_OK);
  CHECK(subs_become(&g_srv, "ws.t2", 1));
  ws_nats_stats_get(g_a.b, &st);
  CHECK_INT(st.topics, 2);
  CHECK_INT(ws_loop_subscribe(g_a.srv[a0 + 1], "t2"), WS_OK);
  pump(100);
  CHECK_INT(server_subs(&g_srv, "ws.t2"), 1); /* still one */
  CHECK_INT(ws_loop_unsubscribe(g_a.srv[a0], "t2"), WS_OK);
  pump(100);
  CHECK_INT(server_subs(&g_srv, "ws.t2"), 1);
  CHECK_INT(ws_loop_unsubscribe(g_a.srv[a0 + 1], "t2"), WS_OK);
  CHECK(subs_become(&g_srv, "ws.t2", 0));
  ws_nats_stats_get(g_a.b, &st);
  CHECK_INT(st.topics, 1);
  /* The last subscriber closing unsubscribes too. */
  CHECK_INT(ws_loop_subscribe(g_a.srv[a0], "t3"), WS_OK);
  CHECK(subs_become(&g_srv, "ws.t3", 1));
  CHECK_INT(ws_close(g_a.srv[a0], 1000, NULL, 0), WS_OK);
  CHECK(subs_become(&g_srv, "ws.t3", 0));
  /* Any topic maps to a valid subject and back: B's subscriber gets A's
   * publish on a topic with a space, dots, wildcards, '%' and UTF-8. */
  CHECK_INT(ws_loop_subscribe(g_b.srv[b0], weird), WS_OK);
  CHECK(subs_become(&g_srv, weird_subject, 1));
  CHECK_INT(ws_nats_publish(g_a.b, weird, WS_OP_TEXT, "c:0", 3, NULL), WS_OK);
  {
    client *cl = &g_b.cl[g_b.ncl - 1];
    uint64_t end = now_ms() + 5000;
    while (cl->msgs == 0 && now_ms() < end) turn();
    CHECK_INT(cl->msgs, 1);
    CHECK(cl->rec[0].len == 3 && memcmp(cl->rec[0].head, "c:0", 3) == 0);
  }
}

static void test_kill_restart(void) {
  /* Spec 3: SIGKILL the server: local delivery goes on, lost_down counts,
   * no turn blocks; restart it on its port: both links come back within
   * the backoff cap, the topics are subscribed again, delivery resumes. */
  ws_nats_stats sa, sb;
  int before = g_a.cl[0].msgs, i, downs = g_a.downs;
  uint64_t t0;
  server_signal(&g_srv, SIGKILL);
  g_max_turn = 0;
  CHECK(run_until(c_down, &g_a, 3000));
  CHECK(run_until(c_down, &g_b, 3000));
  CHECK_INT(g_a.downs, downs + 1);
  publish_seq(&g_a, 'a', 200, 210);
  CHECK(msgs_reach(&g_a, 0, 2, before + 10));
  pump(600); /* attempts fail, backing off */
  ws_nats_stats_get(g_a.b, &sa);
  CHECK_INT(sa.lost_down, 10);
  CHECK(sa.failures >= 2);
  CHECK_INT(g_a.cl[0].disorder, 0);
  CHECK(g_max_turn < 1000); /* a blocked loop would hang for good */
  for (i = 0; i < 2; i++) CHECK_INT(g_b.cl[i].msgs, 401); /* nothing crossed */
  t0 = now_ms();
  CHECK_INT(server_start(&g_srv, NULL, NULL), 0);
  CHECK(run_until(c_up, NULL, 5000));
  /* backoff_max_ms 400: the next attempt is within 400 ms of the server
   * being there (plus the handshake and this machine's slack). */
  CHECK(now_ms() - t0 < 400 + 5000);
  printf("# links back %u ms after the restart began (backoff cap 400 ms); "
         "longest loop turn while down %u ms\n",
         (unsigned)(now_ms() - t0), (unsigned)g_max_turn);
  CHECK(subs_become(&g_srv, "ws.room%2E1", 2));
  CHECK_INT(g_a.b->backoff, 20); /* reset by the link that came up */
  ws_nats_stats_get(g_a.b, &sa);
  ws_nats_stats_get(g_b.b, &sb);
  CHECK_INT(sa.connects, 2);
  CHECK_INT(sb.connects, 2);
  /* The receivers' sequences resume after the gap. */
  g_b.cl[0].next[0] = g_b.cl[1].next[0] = 210;
  publish_seq(&g_a, 'a', 210, 220);
  CHECK(msgs_reach(&g_b, 0, 2, 411));
  CHECK_INT(g_b.cl[0].disorder, 0);
  CHECK(g_max_turn < 1000); /* a blocked loop would hang for good */
}

static void test_stopped_server(void) {
  /* Spec 4: SIGSTOP the server: the loop keeps turning, what passes
   * max_queue is dropped and counted, the queue stays within its bound;
   * the health check ends the dead link; SIGCONT: it recovers. */
  ws_nats_stats sa;
  char *blob = (char *)malloc(16384);
  size_t maxq = 0, maxcap = 0;
  int i, bseen;
  ws_nats_close(g_a.b);
  {
    ws_nats_config c;
    test_cfg(&c, g_srv.url, &g_a);
    c.max_queue = 256 * 1024;
    CHECK_INT(ws_nats_open(&g_a.b, &g_a.loop, &c), WS_OK);
  }
  CHECK(run_until(c_up, NULL, 5000));
  memset(blob, 'f', 16384);
  server_signal(&g_srv, SIGSTOP);
  g_max_turn = 0;
  for (i = 0; i < 3000; i++) {
    uint64_t t0 = now_ms();
    ws_nats_publish(g_a.b, "flood", WS_OP_BINARY, blob, 16384, NULL);
    CHECK(now_ms() - t0 < 1000);
    ws_nats_stats_get(g_a.b, &sa);
    if (sa.queued > maxq) maxq = sa.queued;
    if (g_a.b->ocap > maxcap) maxcap = g_a.b->ocap;
    if (i % 20 == 19) turn();
  }
  ws_nats_stats_get(g_a.b, &sa);
  printf("# SIGSTOP: 3000 x 16 KiB publishes: %u sent, %u lost_full, %u "
         "lost_down; queue peak %u bytes (limit %u), buffer %u bytes\n",
         (unsigned)sa.sent, (unsigned)sa.lost_full, (unsigned)sa.lost_down,
         (unsigned)maxq, 256u * 1024, (unsigned)maxcap);
  CHECK(sa.lost_full > 0);
  CHECK(maxq <= 256 * 1024);
  CHECK(maxcap <= 256 * 1024 + WS_NATS__CTL_SLACK);
  printf("# SIGSTOP: longest loop turn %u ms\n", (unsigned)g_max_turn);
  /* The health check: no PONG within 2 * ping_ms ends the link. */
  CHECK(run_until(c_down, &g_a, 3500));
  pump(300);
  CHECK(g_max_turn < 1000); /* a blocked loop would hang for good */
  server_signal(&g_srv, SIGCONT);
  CHECK(run_until(c_up, NULL, 8000));
  /* Delivery resumes: B sees a fresh message from A. */
  bseen = g_b.cl[0].msgs;
  g_b.cl[0].next[0] = g_b.cl[1].next[0] = 220;
  publish_seq(&g_a, 'a', 220, 221);
  CHECK(msgs_reach(&g_b, 0, 2, bseen + 1));
  free(blob);
}

/* A raw NATS client: CONNECT, then PING/PONG so the server has it. */
static int raw_client(server *s) {
  char buf[4096];
  ssize_t n;
  int fd = dial(s->port);
  static const char hello[] =
      "CONNECT {\"verbose\":false,\"pedantic\":false}\r\nPING\r\n";
  if (fd < 0) return -1;
  n = recv(fd, buf, sizeof buf - 1, 0); /* INFO */
  if (n <= 0 || send(fd, hello, sizeof hello - 1, 0) < 0) {
    close(fd);
    return -1;
  }
  n = recv(fd, buf, sizeof buf - 1, 0); /* PONG */
  if (n <= 0) {
    close(fd);
    return -1;
  }
  return fd;
}

static void raw_pub(int fd, const char *subject, const void *p, size_t n) {
  char head[128];
  int hn = snprintf(head, sizeof head, "PUB %s %u\r\n", subject, (unsigned)n);
  CHECK(send(fd, head, (size_t)hn, MSG_NOSIGNAL) == hn);
  CHECK(send(fd, p, n, MSG_NOSIGNAL) == (ssize_t)n);
  CHECK(send(fd, "\r\n", 2, MSG_NOSIGNAL) == 2);
}

static node g_c;

static void test_junk(void) {
  /* Spec 5: junk published by a raw client. B (envelope only,
   * max_message 64 KiB) drops and counts each; C (accept_foreign) takes
   * raw payloads as TEXT or BINARY. No client gets an invalid frame. */
  ws_nats_config c;
  ws_nats_stats sb, sc;
  unsigned char env[64], *big;
  char line[256];
  ssize_t n;
  int fd, b0 = g_b.ncl, bj;
  node_init(&g_c);
  test_cfg(&c, g_srv.url, &g_c);
  c.accept_foreign = 1;
  CHECK_INT(ws_nats_open(&g_c.b, &g_c.loop, &c), WS_OK);
  ws_nats_close(g_b.b);
  test_cfg(&c, g_srv.url, &g_b);
  c.max_message = 64 * 1024;
  CHECK_INT(ws_nats_open(&g_b.b, &g_b.loop, &c), WS_OK);
  add_clients(&g_b, 1, "junk");
  add_clients(&g_c, 1, "junk");
  CHECK(run_until(c_up, NULL, 5000));
  CHECK(subs_become(&g_srv, "ws.junk", 2));
  fd = raw_client(&g_srv);
  CHECK(fd >= 0);
  if (fd < 0) return;
  raw_pub(fd, "ws.junk", "hello", 5);                       /* no envelope */
  raw_pub(fd, "ws.junk", "WSB2ABCDEFGH\x01x", 14);          /* wrong magic */
  raw_pub(fd, "ws.junk", "WSB1ABCDEFGH\x01\xff\xfe", 15);   /* bad UTF-8 */
  raw_pub(fd, "ws.junk", "WSB1ABCDEFGH\x03x", 14);          /* bad op */
  raw_pub(fd, "ws.junk", "\xff\xfe", 2);                    /* raw binary */
  raw_pub(fd, "ws.junk", "WSB1", 4);                        /* short */
  big = (unsigned char *)malloc(200 * 1024);
  memset(big, 'z', 200 * 1024);
  memcpy(big, "WSB1ABCDEFGH\x02", 13);
  raw_pub(fd, "ws.junk", big, 200 * 1024); /* over B's max_message */
  memcpy(env, "WSB1", 4);
  memcpy(env + 4, g_b.b->origin, 8);
  env[12] = 1;
  memcpy(env + 13, "mine", 4);
  raw_pub(fd, "ws.junk", env, 17); /* B's own origin: B drops it */
  /* 10 MB: over the server's max_payload (1 MiB): the server refuses the
   * PUB line with -ERR and closes the publisher; no bridge sees it. */
  {
    static const char head[] = "PUB ws.junk 10485760\r\n";
    CHECK(send(fd, head, sizeof head - 1, MSG_NOSIGNAL) == (ssize_t)sizeof head - 1);
    n = recv(fd, line, sizeof line - 1, 0);
    line[n > 0 ? n : 0] = '\0';
    CHECK(strstr(line, "-ERR 'Maximum Payload Violation'") != NULL);
    close(fd);
  }
  fd = raw_client(&g_srv);
  CHECK(fd >= 0);
  if (fd < 0) {
    free(big);
    return;
  }
  memcpy(env + 4, "ZYXWVUTS", 8);
  memcpy(env + 13, "b:0", 3);
  raw_pub(fd, "ws.junk", env, 16); /* a valid one last: the stream holds */
  close(fd);
  {
    client *cb = &g_b.cl[b0], *cc = &g_c.cl[0];
    uint64_t end = now_ms() + 5000;
    while ((cb->msgs < 1 || cc->msgs < 8) && now_ms() < end) turn();
    pump(100);
    ws_nats_stats_get(g_b.b, &sb);
    ws_nats_stats_get(g_c.b, &sc);
    printf("# junk: B junk %u received %u; C junk %u received %u\n",
           (unsigned)sb.junk, (unsigned)sb.received, (unsigned)sc.junk,
           (unsigned)sc.received);
    bj = 7; /* all but the own-origin one and the valid one */
    CHECK_INT(sb.junk, bj);
    CHECK_INT(sb.received, 1);
    CHECK_INT(cb->msgs, 1);
    CHECK(cb->rec[0].op == WS_OP_TEXT && strcmp(cb->rec[0].head, "b:0") == 0);
    CHECK_INT(sb.failures, 0); /* the link held through it all */
    /* C: the bad UTF-8 TEXT in an envelope is junk; the rest arrive. */
    CHECK_INT(sc.junk, 1);
    CHECK_INT(cc->msgs, 8);
    CHECK(cc->rec[0].op == WS_OP_TEXT && strcmp(cc->rec[0].head, "hello") == 0);
    CHECK(cc->rec[1].op == WS_OP_TEXT && cc->rec[1].len == 14);
    CHECK(cc->rec[2].op == WS_OP_TEXT && cc->rec[2].len == 14); /* bad op */
    CHECK(cc->rec[3].op == WS_OP_BINARY && cc->rec[3].len == 2);
    CHECK(cc->rec[4].op == WS_OP_TEXT && cc->rec[4].len == 4);
    CHECK(cc->rec[5].op == WS_OP_BINARY && cc->rec[5].len == 200 * 1024 - 13);
    CHECK(cc->rec[6].op == WS_OP_TEXT && strcmp(cc->rec[6].head, "mine") == 0);
    CHECK(cc->rec[7].op == WS_OP_TEXT && strcmp(cc->rec[7].head, "b:0") == 0);
  }
  free(big);
}

static void test_max_payload(void) {
  /* A publish whose envelope passes the server's max_payload is dropped
   * before sending (the server would end the link) and counted. */
  ws_nats_stats sa;
  ws_nats_config c;
  size_t mp, failures;
  char *blob;
  int b0 = g_b.cl[0].msgs;
  ws_nats_close(g_a.b);
  test_cfg(&c, g_srv.url, &g_a);
  c.max_queue = 4u << 20; /* room for a PUB of max_payload */
  CHECK_INT(ws_nats_open(&g_a.b, &g_a.loop, &c), WS_OK);
  CHECK(run_until(c_up, NULL, 5000));
  mp = g_a.b->max_payload;
  blob = (char *)malloc(mp);
  memset(blob, 'q', mp);
  CHECK_INT(mp, 1024 * 1024); /* from INFO */
  ws_nats_stats_get(g_a.b, &sa);
  failures = sa.failures;
  CHECK_INT(ws_nats_publish(g_a.b, "room.1", WS_OP_BINARY, blob, mp - 12, NULL), WS_OK);
  ws_nats_stats_get(g_a.b, &sa);
  CHECK_INT(sa.lost_big, 1);
  CHECK_INT(ws_nats_publish(g_a.b, "room.1", WS_OP_BINARY, blob, mp - 13, NULL), WS_OK);
  /* The largest message crosses whole (B reads it in many pieces). */
  CHECK(msgs_reach(&g_b, 0, 2, b0 + 1));
  pump(100);
  CHECK_INT(g_b.cl[0].msgs, b0 + 1);
  CHECK_INT(g_b.cl[1].msgs, b0 + 1);
  CHECK_INT(g_b.b->st.junk, 0);
  ws_nats_stats_get(g_a.b, &sa);
  CHECK_INT(sa.lost_big, 1);
  CHECK(sa.connected);
  CHECK_INT(sa.failures, failures);
  CHECK_INT(sa.errors, 0);
  free(blob);
}

static void test_auth(void) {
  /* Credentials from the URL; a refused one is an -ERR, counted, and the
   * bridge keeps retrying. */
  server s;
  node nd, nd2;
  ws_nats_config c;
  ws_nats_stats st;
  char url[96];
  ws_nats *good, *bad;
  memset(&s, 0, sizeof s);
  CHECK_INT(server_start(&s, "--auth", "t0ken"), 0);
  node_init(&nd);
  node_init(&nd2);
  snprintf(url, sizeof url, "nats://t0ken@127.0.0.1:%u", s.port);
  test_cfg(&c, url, &nd);
  CHECK_INT(ws_nats_open(&good, &nd.loop, &c), WS_OK);
  snprintf(url, sizeof url, "nats://wrong@127.0.0.1:%u", s.port);
  c.user = &nd2;
  CHECK_INT(ws_nats_open(&bad, &nd2.loop, &c), WS_OK);
  {
    uint64_t end = now_ms() + 5000;
    while (now_ms() < end && (bad->st.errors < 2 || !good->st.connects)) turn();
  }
  ws_nats_stats_get(good, &st);
  CHECK_INT(st.connected, 1);
  ws_nats_stats_get(bad, &st);
  CHECK_INT(st.connected, 0);
  CHECK(st.errors >= 2);
  CHECK(st.failures >= 1);
  CHECK(strcmp(ws_nats_last_error(bad), "Authorization Violation") == 0);
  ws_nats_close(bad);
  ws_nats_close(good);
  ws_loop_free(&nd2.loop);
  node_free(&nd);
  server_signal(&s, SIGKILL);
}


/* Two loops on two threads, each its own node with its own bridge. */
typedef struct thread_node {
  node nd;
  char who;
  volatile int ready;
  struct thread_node *other;
  int ok;
} thread_node;

static pthread_mutex_t g_tmu = PTHREAD_MUTEX_INITIALIZER;

static int tn_ready(thread_node *t) {
  int r;
  pthread_mutex_lock(&g_tmu);
  r = t->ready;
  pthread_mutex_unlock(&g_tmu);
  return r;
}

static void *thread_main(void *arg) {
  thread_node *t = (thread_node *)arg;
  node *nd = &t->nd;
  ws_loop_config cfg;
  ws_loop_callbacks cb;
  ws_nats_config c;
  char url[64], m[32];
  uint64_t end = now_ms() + 15000;
  client *cl = &nd->cl[0];
  int i;
  ws_loop_config_init(&cfg);
  memset(&cb, 0, sizeof cb);
  cb.conn.on_open = on_open;
  cb.conn.on_message = on_message;
  cb.conn.on_close = on_close;
  nd->kind = SERVER_SIDE;
  if (ws_loop_init(&nd->loop, &cfg, &cb, nd) != WS_OK ||
      ws_loop_listen(&nd->loop, "127.0.0.1", 0, &nd->port) != WS_OK)
    return NULL;
  snprintf(url, sizeof url, "ws://127.0.0.1:%u/", nd->port);
  cl->kind = CLIENT_SIDE;
  nd->ncl = 1;
  ws_loop_connect(&nd->loop, url, NULL, cl, &cl->c);
  while ((nd->nsrv < 1 || !cl->opened) && now_ms() < end)
    ws_loop_run_once(&nd->loop, 5);
  if (nd->nsrv < 1) goto out;
  ws_loop_subscribe(nd->srv[0], "mt"); /* live before the link: in hello */
  test_cfg(&c, g_srv.url, nd);
  if (ws_nats_open(&nd->b, &nd->loop, &c) != WS_OK) goto out;
  while (!nd->b->st.connects && now_ms() < end) ws_loop_run_once(&nd->loop, 5);
  pthread_mutex_lock(&g_tmu);
  t->ready = 1;
  pthread_mutex_unlock(&g_tmu);
  while (!tn_ready(t->other) && now_ms() < end) ws_loop_run_once(&nd->loop, 5);
  for (i = 0; i < 100; i++) {
    int n = snprintf(m, sizeof m, "%c:%d", t->who, i);
    ws_nats_publish(nd->b, "mt", WS_OP_TEXT, m, (size_t)n, NULL);
    if (i % 10 == 9) ws_loop_run_once(&nd->loop, 0);
  }
  while (cl->msgs < 200 && now_ms() < end) ws_loop_run_once(&nd->loop, 5);
  t->ok = cl->msgs == 200 && cl->disorder == 0 && cl->next[0] == 100 &&
          cl->next[1] == 100;
  /* Stay until the other thread is done with its publishes too. */
  pthread_mutex_lock(&g_tmu);
  t->ready = 2;
  pthread_mutex_unlock(&g_tmu);
  while (tn_ready(t->other) < 2 && now_ms() < end) ws_loop_run_once(&nd->loop, 5);
out:
  ws_nats_close(nd->b);
  ws_loop_free(&nd->loop);
  return NULL;
}

static void test_threads(void) {
  /* Several loops of one process, one per thread, each with its bridge:
   * each thread's client gets its own 100 publishes (locally) and the
   * other thread's 100 (through the server), in order, none twice. */
  static thread_node t[2];
  pthread_t th[2];
  int i;
  memset(t, 0, sizeof t);
  t[0].who = 'a';
  t[1].who = 'b';
  t[0].other = &t[1];
  t[1].other = &t[0];
  for (i = 0; i < 2; i++) CHECK(pthread_create(&th[i], NULL, thread_main, &t[i]) == 0);
  for (i = 0; i < 2; i++) pthread_join(th[i], NULL);
  for (i = 0; i < 2; i++) {
    CHECK(t[i].ok);
    CHECK_INT(t[i].nd.cl[0].msgs, 200);
    CHECK_INT(t[i].nd.cl[0].disorder, 0);
  }
}

static void test_close_anytime(void) {
  /* Spec 6: close with the server down, mid-connect, mid-handshake, and
   * with topics and a queue: nothing leaks (ASan, valgrind). A server
   * that accepts but never speaks fails the attempt after 2 * ping_ms. */
  node nd;
  ws_nats_config c;
  ws_nats *b;
  char url[64];
  struct sockaddr_in a;
  socklen_t al = sizeof a;
  int lfd = socket(AF_INET, SOCK_STREAM, 0);
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  CHECK(bind(lfd, (struct sockaddr *)&a, sizeof a) == 0 && listen(lfd, 8) == 0);
  getsockname(lfd, (struct sockaddr *)&a, &al);
  node_init(&nd);
  add_clients(&nd, 1, "x");
  /* Nothing listening: backing off. */
  snprintf(url, sizeof url, "nats://127.0.0.1:%u", free_port());
  test_cfg(&c, url, &nd);
  CHECK_INT(ws_nats_open(&b, &nd.loop, &c), WS_OK);
  /* Backoff: d doubles from 20 ms to the 400 ms cap, the delays drawn in
   * [0, d), so by 620 ms d is capped; a busy loop would fail thousands of
   * times in this second, the backoff a few dozen at most. */
  pump(1000);
  printf("# nothing listening: %u attempts in 1 s (backoff 20..400 ms)\n",
         (unsigned)b->st.failures);
  CHECK(b->st.failures >= 6 && b->st.failures < 60);
  CHECK_INT(b->backoff, 400);
  CHECK_INT(ws_nats_publish(b, "x", WS_OP_TEXT, "local", 5, NULL), WS_OK);
  CHECK_INT(b->st.lost_down, 1);
  ws_nats_close(b);
  /* Mid-connect: closed before any turn. */
  snprintf(url, sizeof url, "nats://127.0.0.1:%u", ntohs(a.sin_port));
  test_cfg(&c, url, &nd);
  c.ping_ms = 150;
  CHECK_INT(ws_nats_open(&b, &nd.loop, &c), WS_OK);
  CHECK(b->state == WS_NATS__CONNECTING || b->state == WS_NATS__INFO);
  ws_nats_close(b);
  /* Mid-handshake: the listener never sends INFO. */
  CHECK_INT(ws_nats_open(&b, &nd.loop, &c), WS_OK);
  pump(50);
  CHECK_INT(b->state, WS_NATS__INFO);
  CHECK_INT(b->st.failures, 0);
  pump(400);
  CHECK(b->st.failures >= 1); /* the handshake bound: 2 * 150 ms */
  ws_nats_close(b);
  /* Up, with topics and bytes queued. */
  test_cfg(&c, g_srv.url, &nd);
  CHECK_INT(ws_nats_open(&b, &nd.loop, &c), WS_OK);
  {
    uint64_t end = now_ms() + 5000;
    while (!b->st.connects && now_ms() < end) turn();
  }
  CHECK_INT(ws_nats_send(b, "x", WS_OP_TEXT, "bye", 3), WS_OK); /* queued, not yet written */
  CHECK(b->olen > b->ooff);
  ws_nats_close(b);
  ws_nats_close(NULL);
  node_free(&nd);
  close(lfd);
}

#ifdef WS_NATS_OFFICIAL
/* Runs the official client's program; its stdout is *out (a pipe). */
static pid_t official(const char *mode, const char *url, const char *subject,
                      const char *arg, int *out) {
  int p[2];
  pid_t pid;
  if (pipe(p) != 0) return -1;
  pid = fork();
  if (pid == 0) {
#ifdef __linux__
    prctl(PR_SET_PDEATHSIG, SIGKILL);
#endif
    dup2(p[1], 1);
    close(p[0]);
    execl(WS_NATS_OFFICIAL, WS_NATS_OFFICIAL, mode, url, subject, arg,
          (char *)NULL);
    _exit(127);
  }
  close(p[1]);
  *out = p[0];
  fcntl(p[0], F_SETFL, O_NONBLOCK);
  return pid;
}

/* Reads a line from the child while the loops turn. */
static int read_line(int fd, char *buf, size_t cap, unsigned ms) {
  size_t n = 0;
  uint64_t end = now_ms() + ms;
  while (now_ms() < end && n + 1 < cap) {
    ssize_t k = read(fd, buf + n, 1);
    if (k == 1) {
      if (buf[n] == '\n') break;
      n++;
    } else if (k == 0) {
      break;
    } else {
      turn();
    }
  }
  buf[n] = '\0';
  return (int)n;
}

static void test_official_client(void) {
  /* The official C client (libnats) as the other peer: its raw publish
   * reaches C's subscriber (accept_foreign) and is junk to B; its
   * subscription sees A's publish as the envelope bytes. */
  char line[256], want[128];
  int fd, st, i, c0 = g_c.cl[0].msgs;
  pid_t pid;
  size_t bj = g_b.b->st.junk;
  pid = official("pub", g_srv.url, "ws.junk", "from libnats", &fd);
  CHECK(pid > 0);
  {
    uint64_t end = now_ms() + 5000;
    while (g_c.cl[0].msgs == c0 && now_ms() < end) turn();
  }
  waitpid(pid, &st, 0);
  close(fd);
  CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
  CHECK_INT(g_c.cl[0].msgs, c0 + 1);
  CHECK(g_c.cl[0].rec[c0 < 16 ? c0 : 15].op == WS_OP_TEXT);
  CHECK(strcmp(g_c.cl[0].rec[c0 < 16 ? c0 : 15].head, "from libnats") == 0);
  pump(50);
  CHECK_INT(g_b.b->st.junk, bj + 1);
  pid = official("sub", g_srv.url, "ws.junk", "5000", &fd);
  CHECK(pid > 0);
  CHECK(read_line(fd, line, sizeof line, 5000) > 0 && strcmp(line, "ready") == 0);
  CHECK_INT(ws_nats_publish(g_a.b, "junk", WS_OP_TEXT, "to libnats", 10, NULL), WS_OK);
  CHECK(read_line(fd, line, sizeof line, 5000) > 0);
  strcpy(want, "57534231"); /* WSB1 */
  for (i = 0; i < 8; i++) sprintf(want + 8 + 2 * i, "%02x", g_a.b->origin[i]);
  strcat(want, "01746f206c69626e617473"); /* op 1, "to libnats" */
  CHECK(strcmp(line, want) == 0);
  waitpid(pid, &st, 0);
  close(fd);
  CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}
#endif

static node g_x, g_y, g_z;
static void test_send_and_origin(void) {
  /* ws_nats_send(): to the server only. X and Y share an origin (two
   * loops of one process that reach each other themselves), Z has its
   * own: a send from X reaches Z's subscribers, not Y's (same origin:
   * skipped) nor X's (no local delivery). */
  ws_nats_config c;
  ws_nats_stats sx, sy;
  int i;
  node_init(&g_x);
  node_init(&g_y);
  node_init(&g_z);
  test_cfg(&c, g_srv.url, &g_x);
  c.origin = 0x1122334455667788ull;
  CHECK_INT(ws_nats_open(&g_x.b, &g_x.loop, &c), WS_OK);
  test_cfg(&c, g_srv.url, &g_y);
  c.origin = 0x1122334455667788ull;
  CHECK_INT(ws_nats_open(&g_y.b, &g_y.loop, &c), WS_OK);
  test_cfg(&c, g_srv.url, &g_z);
  CHECK_INT(ws_nats_open(&g_z.b, &g_z.loop, &c), WS_OK);
  CHECK(run_until(c_up, NULL, 5000));
  add_clients(&g_x, 1, "room.s");
  add_clients(&g_y, 1, "room.s");
  add_clients(&g_z, 1, "room.s");
  CHECK(subs_become(&g_srv, "ws.room%2Es", 3));
  for (i = 0; i < 5; i++) {
    char m[16];
    int n = snprintf(m, sizeof m, "a:%d", i);
    CHECK_INT(ws_nats_send(g_x.b, "room.s", WS_OP_TEXT, m, (size_t)n), WS_OK);
  }
  CHECK(msgs_reach(&g_z, 0, 1, 5));
  pump(300);
  CHECK_INT(g_z.cl[0].msgs, 5);
  CHECK_INT(g_z.cl[0].disorder, 0);
  CHECK_INT(g_y.cl[0].msgs, 0);
  CHECK_INT(g_x.cl[0].msgs, 0);
  ws_nats_stats_get(g_x.b, &sx);
  ws_nats_stats_get(g_y.b, &sy);
  CHECK_INT(sx.sent, 5);
  CHECK_INT(sy.received + sy.junk, 0); /* its own origin: skipped silently */
  CHECK_INT(ws_nats_send(g_x.b, "room.s", WS_OP_TEXT, "\xff", 1), WS_EUTF8);
  CHECK_INT(ws_nats_send(g_x.b, "room.s", 9, "x", 1), WS_EINVAL);
  node_free(&g_z);
  ws_nats_close(g_y.b);
  g_y.b = NULL;
  ws_loop_free(&g_y.loop);
  ws_nats_close(g_x.b);
  g_x.b = NULL;
  ws_loop_free(&g_x.loop);
  g_nn = 0;
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  atexit(kill_all);
  RUN(test_subjects);
  RUN(test_urls);
  RUN(test_parser);
  RUN(test_parser_random);
  if (!have_server()) {
    const char *ci = getenv("CI");
    printf("# skipped: nats-server not installed\n");
    if (ci && strcmp(ci, "true") == 0) CHECK(!"nats-server missing with CI=true");
    return t_done("test_nats");
  }
  CHECK_INT(server_start(&g_srv, NULL, NULL), 0);
  node_init(&g_a);
  node_init(&g_b);
  RUN(test_cross_delivery);
  RUN(test_subscribe_visible);
  RUN(test_kill_restart);
  RUN(test_max_payload);
  RUN(test_stopped_server);
  RUN(test_junk);
#ifdef WS_NATS_OFFICIAL
  RUN(test_official_client);
#else
  printf("# skipped: official NATS C client cross-check (libnats-dev not installed)\n");
#endif
  ws_nats_close(g_c.b);
  ws_nats_close(g_b.b);
  ws_nats_close(g_a.b);
  g_a.b = g_b.b = g_c.b = NULL;
  ws_loop_free(&g_c.loop);
  ws_loop_free(&g_b.loop);
  ws_loop_free(&g_a.loop);
  g_nn = 0;
  RUN(test_auth);
  RUN(test_threads);
  RUN(test_close_anytime);
  RUN(test_send_and_origin);
  server_signal(&g_srv, SIGKILL);
  return t_done("test_nats");
}
