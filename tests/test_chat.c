/*
 * test_chat.c - drives build/chat (a real process on a loopback port) with
 * WebSocket clients on a ws_loop: join, messages broadcast to the room and
 * only to it, join/leave notices with member lists, errors, the page. Run
 * twice: one loop, and --threads 2 (two loops on one port; clients land
 * on both, and everything above must hold across them), where several
 * clients also check that each sender's messages arrive in order, once.
 * Then, for each broker installed (redis-server, nats-server; CI=true
 * makes a missing one a failure), a cluster: three chat processes bridged
 * by a real broker started here (see cluster()).
 */
#define _DEFAULT_SOURCE 1
#include "../src/ws.c"
#include "t.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <sys/socket.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

typedef struct chatter {
  char log[65536]; /* every message received, one per line */
  size_t len;
  int opened, closed;
} chatter;

static ws_loop g_loop;
static int g_basic; /* main()'s "basic": the Windows build under wine */
#if WS_ENABLE_MBEDTLS
static ws_tls_config *g_ctls; /* the wss:// scenario's client config */
#endif

static void on_open(ws_conn *c, const char *p, size_t n, void *user) {
  (void)c, (void)p, (void)n;
  ((chatter *)user)->opened = 1;
}

static int on_message(ws_conn *c, int op, const void *d, size_t n, int fin,
                      void *user) {
  chatter *ch = (chatter *)user;
  (void)c, (void)op, (void)fin;
  if (ch->len + n + 2 < sizeof ch->log) {
    memcpy(ch->log + ch->len, d, n);
    ch->len += n;
    ch->log[ch->len++] = '\n';
    ch->log[ch->len] = '\0';
  }
  return 0;
}

static void on_close(ws_conn *c, int code, const char *r, size_t n,
                     void *user) {
  (void)c, (void)code, (void)r, (void)n;
  ((chatter *)user)->closed = 1;
}

/* Runs the loop until `who` has received `needle`, or 5 s pass. */
static int wait_for(chatter *who, const char *needle) {
  uint64_t end = ws__loop_clock() + 5000;
  while (strstr(who->log, needle) == NULL) {
    if (ws__loop_clock() > end) {
      printf("    waited for %s; log:\n%s\n", needle, who->log);
      return 0;
    }
    ws_loop_run_once(&g_loop, 10);
  }
  return 1;
}

static void say(ws_conn *c, const char *text) {
  CHECK_INT(ws_send(c, WS_OP_TEXT, text, strlen(text)), WS_OK);
}

/* --threads: N clients in one room each say M numbered lines; each must
 * see all N*M, each sender's in order, none twice. */
#define LOAD_N 8
#define LOAD_M 25
static chatter g_load[LOAD_N];

static int load_check(const chatter *ch, int verbose) {
  int next[LOAD_N] = {0}, k, got = 0;
  const char *p = ch->log;
  while ((p = strstr(p, "\"text\":\"L")) != NULL) {
    int who = -1, seq = -1;
    if (sscanf(p + 9, "%d-%d", &who, &seq) != 2 || who < 0 || who >= LOAD_N ||
        seq != next[who]) {
      if (verbose) printf("    out of order or twice: %.20s\n", p);
      return -1;
    }
    next[who]++;
    got++;
    p += 9;
  }
  for (k = 0; k < LOAD_N; k++)
    if (next[k] != LOAD_M) return 0;
  return got;
}

static void load_test(const char *url) {
  ws_conn *cs[LOAD_N];
  char text[64];
  int i, k, done;
  uint64_t end;
  memset(g_load, 0, sizeof g_load);
  for (i = 0; i < LOAD_N; i++)
    CHECK_INT(ws_loop_connect(&g_loop, url, NULL, &g_load[i], &cs[i]), WS_OK);
  for (i = 0; i < LOAD_N; i++) {
    end = ws__loop_clock() + 5000;
    while (!g_load[i].opened && ws__loop_clock() < end) ws_loop_run_once(&g_loop, 10);
    snprintf(text, sizeof text, "join load u%d", i);
    say(cs[i], text);
    CHECK(wait_for(&g_load[i], "\"type\":\"joined\""));
  }
  for (k = 0; k < LOAD_M; k++) {
    for (i = 0; i < LOAD_N; i++) {
      snprintf(text, sizeof text, "say L%d-%d", i, k);
      say(cs[i], text);
    }
    ws_loop_run_once(&g_loop, 0);
  }
  end = ws__loop_clock() + 10000;
  do {
    for (done = 1, i = 0; i < LOAD_N; i++)
      if (load_check(&g_load[i], 0) != LOAD_N * LOAD_M) done = 0;
    if (!done) ws_loop_run_once(&g_loop, 10);
  } while (!done && ws__loop_clock() < end);
  for (i = 0; i < LOAD_N; i++)
    CHECK_INT(load_check(&g_load[i], 1), LOAD_N * LOAD_M);
  for (i = 0; i < LOAD_N; i++) CHECK_INT(ws_close(cs[i], 1000, NULL, 0), WS_OK);
  end = ws__loop_clock() + 5000;
  do {
    for (done = 1, i = 0; i < LOAD_N; i++) done &= g_load[i].closed;
    if (!done) ws_loop_run_once(&g_loop, 10);
  } while (!done && ws__loop_clock() < end);
  CHECK(done);
}

/* tls_dir: run the server with --cert/--key from tests/tls/certs.sh in
 * that directory, and the clients over wss:// trusting its CA. */
static void scenario(const char *bin, const char *threads, const char *tls_dir) {
  int out[2];
  pid_t pid;
  char line[256] = {0}, url[128];
  unsigned port = 0;
  ws_loop_config cfg;
  ws_loop_callbacks cb;
  ws_conn *a, *b, *c;
  static chatter alice, bob, carol;
  if (pipe(out) != 0) {
    CHECK(0);
    return;
  }
  pid = fork();
  if (pid == 0) {
#ifdef __linux__
    prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive the test */
#endif
    dup2(out[1], 1);
    close(out[0]);
    char cert[256], key[256];
    snprintf(cert, sizeof cert, "%s/srv.pem", tls_dir ? tls_dir : "");
    snprintf(key, sizeof key, "%s/srv.key", tls_dir ? tls_dir : "");
    if (threads && tls_dir)
      execl(bin, bin, "-p", "0", "--threads", threads, "--cert", cert, "--key", key, (char *)NULL);
    else if (threads)
      execl(bin, bin, "-p", "0", "--threads", threads, (char *)NULL);
    else
      execl(bin, bin, "-p", "0", (char *)NULL);
    _exit(127);
  }
  close(out[1]);
  {
    ssize_t n = read(out[0], line, sizeof line - 1);
    const char *p = n > 0 ? strstr(line, "127.0.0.1:") : NULL;
    if (p) port = (unsigned)atoi(p + 10);
    if (tls_dir) CHECK(strstr(line, "https://") != NULL);
  }
  if (!CHECK(port > 0)) {
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    close(out[0]);
    return;
  }
  memset(&alice, 0, sizeof alice);
  memset(&bob, 0, sizeof bob);
  memset(&carol, 0, sizeof carol);
  ws_loop_config_init(&cfg);
  memset(&cb, 0, sizeof cb);
  cb.conn.on_open = on_open;
  cb.conn.on_message = on_message;
  cb.conn.on_close = on_close;
#if WS_ENABLE_MBEDTLS
  if (tls_dir) {
    ws_tls_options to;
    char ca[256], err[200];
    snprintf(ca, sizeof ca, "%s/ca.pem", tls_dir);
    ws_tls_options_init(&to, WS_CLIENT);
    to.ca_file = ca;
    CHECK_INT(ws_tls_config_new(&g_ctls, &to, err, sizeof err), WS_OK);
    cfg.tls_client = g_ctls;
  }
#endif
  CHECK_INT(ws_loop_init(&g_loop, &cfg, &cb, NULL), WS_OK);
  snprintf(url, sizeof url, "%s://127.0.0.1:%u/ws", tls_dir ? "wss" : "ws", port);
  CHECK_INT(ws_loop_connect(&g_loop, url, NULL, &alice, &a), WS_OK);
  CHECK_INT(ws_loop_connect(&g_loop, url, NULL, &bob, &b), WS_OK);
  CHECK_INT(ws_loop_connect(&g_loop, url, NULL, &carol, &c), WS_OK);
  {
    uint64_t end = ws__loop_clock() + 5000;
    while (!(alice.opened && bob.opened && carol.opened) && ws__loop_clock() < end)
      ws_loop_run_once(&g_loop, 10);
  }
  CHECK(alice.opened && bob.opened && carol.opened);

  say(a, "join general alice");
  CHECK(wait_for(&alice, "{\"type\":\"joined\",\"room\":\"general\",\"name\":\"alice\",\"members\":[\"alice\"]}"));
  say(b, "join general bob");
  CHECK(wait_for(&bob, "\"type\":\"joined\",\"room\":\"general\",\"name\":\"bob\""));
  CHECK(wait_for(&alice, "{\"type\":\"join\",\"room\":\"general\",\"name\":\"bob\",\"members\":[\"bob\",\"alice\"]}"));
  say(c, "join random carol");
  CHECK(wait_for(&carol, "\"type\":\"joined\",\"room\":\"random\""));

  /* A message reaches everyone in the room, the sender included, and no
   * one elsewhere; quotes and non-ASCII survive. */
  say(b, "say hi \"all\" \xe2\x98\x83");
  CHECK(wait_for(&alice, "{\"type\":\"msg\",\"room\":\"general\",\"name\":\"bob\",\"text\":\"hi \\\"all\\\" \xe2\x98\x83\"}"));
  CHECK(wait_for(&bob, "\"text\":\"hi \\\"all\\\""));
  say(c, "say only random");
  CHECK(wait_for(&carol, "only random"));
  CHECK(strstr(alice.log, "only random") == NULL);
  CHECK(strstr(carol.log, "hi \\\"all") == NULL);

  /* Errors. */
  say(c, "join bad/room carol");
  CHECK(wait_for(&carol, "{\"type\":\"error\""));
  say(c, "shout");
  CHECK(wait_for(&carol, "unknown command"));

  /* Leaving, by command and by disconnecting. */
  say(b, "leave");
  CHECK(wait_for(&alice, "{\"type\":\"leave\",\"room\":\"general\",\"name\":\"bob\",\"members\":[\"alice\"]}"));
  say(b, "say nobody hears");
  CHECK(wait_for(&bob, "join a room first"));
  say(c, "join general carol");
  CHECK(wait_for(&alice, "\"name\":\"carol\",\"members\":[\"carol\",\"alice\"]"));
  CHECK_INT(ws_close(c, 1000, NULL, 0), WS_OK);
  CHECK(wait_for(&alice, "{\"type\":\"leave\",\"room\":\"general\",\"name\":\"carol\",\"members\":[\"alice\"]}"));
  load_test(url);

  /* SIGTERM: the server closes every connection with 1001 and exits 0. */
  kill(pid, SIGTERM);
  {
    uint64_t end = ws__loop_clock() + 5000;
    while (!(alice.closed && bob.closed) && ws__loop_clock() < end)
      ws_loop_run_once(&g_loop, 10);
  }
  CHECK(alice.closed && bob.closed);
  {
    int st = 0;
    CHECK(waitpid(pid, &st, 0) == pid);
    /* (wine passes no signal on to a Windows program: it just ends) */
    CHECK(g_basic || (WIFEXITED(st) && WEXITSTATUS(st) == 0));
  }
  ws_loop_free(&g_loop);
#if WS_ENABLE_MBEDTLS
  ws_tls_config_free(g_ctls);
  g_ctls = NULL;
#endif
  close(out[0]);
}

/* ---------------------------------------------------------------------
 * The cluster: three chat processes, one broker
 * ------------------------------------------------------------------- */

static unsigned free_port(void) {
  struct sockaddr_in a;
  socklen_t n = sizeof a;
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  unsigned port = 0;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
      getsockname(fd, (struct sockaddr *)&a, &n) == 0)
    port = ntohs(a.sin_port);
  if (fd >= 0) close(fd);
  return port;
}

/* A blocking TCP connection to 127.0.0.1:port, or -1. */
static int tcp_to(unsigned port) {
  struct sockaddr_in a;
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_port = htons((unsigned short)port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) == 0) return fd;
  if (fd >= 0) close(fd);
  return -1;
}

static int wait_listening(unsigned port, int ms) {
  uint64_t end = ws__loop_clock() + (uint64_t)ms;
  do {
    int fd = tcp_to(port);
    if (fd >= 0) {
      close(fd);
      return 1;
    }
    usleep(20000);
  } while (ws__loop_clock() < end);
  return 0;
}

static int have_program(const char *name) {
  char cmd[128];
  snprintf(cmd, sizeof cmd, "command -v %s >/dev/null 2>&1", name);
  return system(cmd) == 0;
}

/* The broker on 127.0.0.1:port, nothing persisted, its output discarded. */
static pid_t broker_start(int nats, unsigned port) {
  char ps[16];
  pid_t pid;
  snprintf(ps, sizeof ps, "%u", port);
  pid = fork();
  if (pid == 0) {
    int null = open("/dev/null", O_WRONLY);
#ifdef __linux__
    prctl(PR_SET_PDEATHSIG, SIGKILL);
#endif
    dup2(null, 1);
    dup2(null, 2);
    if (nats)
      execlp("nats-server", "nats-server", "-a", "127.0.0.1", "-p", ps, (char *)NULL);
    else
      execlp("redis-server", "redis-server", "--port", ps, "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", (char *)NULL);
    _exit(127);
  }
  if (!wait_listening(port, 5000)) {
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return -1;
  }
  return pid;
}

typedef struct node {
  pid_t pid;
  unsigned port;
  char url[64];
  char errlog[64]; /* its stderr, in a file */
} node;

static int node_start(node *n, const char *bin, const char *flag,
                      const char *burl, const char *threads, int idx) {
  int out[2];
  char line[256] = {0};
  const char *p;
  ssize_t got;
  memset(n, 0, sizeof *n);
  snprintf(n->errlog, sizeof n->errlog, "/tmp/ws-test-chat.%d.%d.log", (int)getpid(), idx);
  if (pipe(out) != 0) return 0;
  n->pid = fork();
  if (n->pid == 0) {
    int err = open(n->errlog, O_WRONLY | O_CREAT | O_TRUNC, 0600);
#ifdef __linux__
    prctl(PR_SET_PDEATHSIG, SIGKILL);
#endif
    dup2(out[1], 1);
    if (err >= 0) dup2(err, 2);
    close(out[0]);
    if (threads)
      execl(bin, bin, "-p", "0", flag, burl, "--threads", threads, (char *)NULL);
    else
      execl(bin, bin, "-p", "0", flag, burl, (char *)NULL);
    _exit(127);
  }
  close(out[1]);
  got = read(out[0], line, sizeof line - 1);
  close(out[0]);
  p = got > 0 ? strstr(line, "127.0.0.1:") : NULL;
  if (p) n->port = (unsigned)atoi(p + 10);
  snprintf(n->url, sizeof n->url, "ws://127.0.0.1:%u/ws", n->port);
  return n->port > 0;
}

static int alive(pid_t pid) { return waitpid(pid, NULL, WNOHANG) == 0; }

/* Sum of "junk N" over the stats lines a stopped node wrote. */
static long node_junk(const node *n) {
  char buf[8192];
  long total = 0;
  size_t got;
  const char *p = buf;
  FILE *f = fopen(n->errlog, "r");
  if (f == NULL) return -1;
  got = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[got] = '\0';
  while ((p = strstr(p, " junk ")) != NULL) {
    total += atol(p + 6);
    p += 6;
  }
  return total;
}

/* Publishes `len` bytes on a broker channel from a raw connection, as
 * another application would. */
static void broker_publish(int nats, unsigned port, const char *channel,
                           const void *data, size_t len) {
  char head[256], reply[256];
  int fd = tcp_to(port);
  size_t hl;
  if (!CHECK(fd >= 0)) return;
  if (nats) {
    (void)!read(fd, reply, sizeof reply); /* INFO */
    hl = (size_t)snprintf(head, sizeof head,
                          "CONNECT {\"verbose\":false,\"pedantic\":false}\r\nPUB %s %zu\r\n",
                          channel, len);
  } else {
    hl = (size_t)snprintf(head, sizeof head,
                          "*3\r\n$7\r\nPUBLISH\r\n$%zu\r\n%s\r\n$%zu\r\n",
                          strlen(channel), channel, len);
  }
  CHECK((size_t)write(fd, head, hl) == hl);
  {
    const char *d = (const char *)data;
    size_t off = 0;
    while (off < len) {
      ssize_t w = write(fd, d + off, len - off);
      if (w <= 0) break; /* NATS closes on a payload over max_payload */
      off += (size_t)w;
    }
  }
  (void)!write(fd, "\r\n", 2);
  if (nats) (void)!write(fd, "PING\r\n", 6);
  {
    struct timeval tv = {2, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    (void)!read(fd, reply, sizeof reply); /* :N / PONG / -ERR: it was taken */
  }
  close(fd);
}

/* Runs the loop until every chatter in who[] has `needle`, or ms pass. */
static int wait_all(chatter **who, int n, const char *needle, int ms) {
  uint64_t end = ws__loop_clock() + (uint64_t)ms;
  int i, done;
  do {
    for (done = 1, i = 0; i < n; i++)
      if (strstr(who[i]->log, needle) == NULL) done = 0;
    if (!done) ws_loop_run_once(&g_loop, 10);
  } while (!done && ws__loop_clock() < end);
  return done;
}

static int count_of(const chatter *ch, const char *needle) {
  int k = 0;
  const char *p = ch->log;
  while ((p = strstr(p, needle)) != NULL) {
    k++;
    p += strlen(needle);
  }
  return k;
}

/* Says "say TAG-k" from `from` every 300 ms until every chatter in who[]
 * has seen one of them, for at most ms: the way across is open. */
static int until_across(ws_conn *from, chatter **who, int n, const char *tag,
                        int ms) {
  uint64_t end = ws__loop_clock() + (uint64_t)ms, next = 0;
  char text[64], needle[64];
  int k = 0, i, done;
  snprintf(needle, sizeof needle, "\"text\":\"%s-", tag);
  do {
    if (ws__loop_clock() >= next) {
      snprintf(text, sizeof text, "say %s-%d", tag, k++);
      say(from, text);
      next = ws__loop_clock() + 300;
    }
    ws_loop_run_once(&g_loop, 10);
    for (done = 1, i = 0; i < n; i++)
      if (strstr(who[i]->log, needle) == NULL) done = 0;
  } while (!done && ws__loop_clock() < end);
  return done;
}

/* Three chat processes on three ports (the first with --threads 2), one
 * broker. Alice and Dave on node 0, Bob on node 1, Carol on node 2:
 *  - messages and join notices cross processes, each once, each sender's
 *    in order (the load test with clients spread over the nodes);
 *  - the broker killed: node 0's chat goes on between its own clients
 *    (on either of its loops), no process exits; restarted on its port:
 *    delivery across resumes within the bridges' backoff cap;
 *  - junk on the room's channel (no envelope, invalid UTF-8 in a TEXT
 *    envelope, malformed JSON, 10 MB): no process crashes, no client is
 *    dropped, the bridges count it, and the chat goes on;
 *  - one process killed: the others are unaffected. */
static void cluster(const char *bin, int nats) {
  const char *server = nats ? "nats-server" : "redis-server";
  unsigned bport = free_port();
  char burl[64];
  pid_t broker;
  node nd[3];
  ws_loop_config cfg;
  ws_loop_callbacks cb;
  static chatter alice, bob, carol, dave;
  chatter *all[4], *others[2];
  ws_conn *a, *b, *c, *d;
  int i, up = 1;
  if (!have_program(server)) {
    if (getenv("CI") && strcmp(getenv("CI"), "true") == 0) {
      printf("not ok - %s not installed (CI=true)\n", server);
      CHECK(0);
    } else {
      printf("# cluster over %s skipped: not installed\n", server);
    }
    return;
  }
  memset(nd, 0, sizeof nd);
  snprintf(burl, sizeof burl, "%s://127.0.0.1:%u", nats ? "nats" : "redis", bport);
  broker = broker_start(nats, bport);
  if (!CHECK(broker > 0)) return;
  for (i = 0; i < 3; i++)
    if (!CHECK(node_start(&nd[i], bin, nats ? "--nats" : "--redis", burl,
                          i == 0 ? "2" : NULL, i))) {
      up = 0;
      break;
    }
  if (!up) goto out;
  memset(&alice, 0, sizeof alice);
  memset(&bob, 0, sizeof bob);
  memset(&carol, 0, sizeof carol);
  memset(&dave, 0, sizeof dave);
  all[0] = &alice, all[1] = &bob, all[2] = &carol, all[3] = &dave;
  ws_loop_config_init(&cfg);
  memset(&cb, 0, sizeof cb);
  cb.conn.on_open = on_open;
  cb.conn.on_message = on_message;
  cb.conn.on_close = on_close;
  CHECK_INT(ws_loop_init(&g_loop, &cfg, &cb, NULL), WS_OK);
  CHECK_INT(ws_loop_connect(&g_loop, nd[0].url, NULL, &alice, &a), WS_OK);
  CHECK_INT(ws_loop_connect(&g_loop, nd[1].url, NULL, &bob, &b), WS_OK);
  CHECK_INT(ws_loop_connect(&g_loop, nd[2].url, NULL, &carol, &c), WS_OK);
  CHECK_INT(ws_loop_connect(&g_loop, nd[0].url, NULL, &dave, &d), WS_OK);
  {
    uint64_t end = ws__loop_clock() + 5000;
    while (!(alice.opened && bob.opened && carol.opened && dave.opened) &&
           ws__loop_clock() < end)
      ws_loop_run_once(&g_loop, 10);
  }
  CHECK(alice.opened && bob.opened && carol.opened && dave.opened);
  say(a, "join general alice");
  say(b, "join general bob");
  say(c, "join general carol");
  say(d, "join general dave");
  CHECK(wait_all(all, 4, "\"type\":\"joined\"", 5000));
  /* Every node's subscription is made in the background: wait until a
   * message from each node reaches every other. */
  CHECK(until_across(a, all, 4, "sync0", 10000));
  CHECK(until_across(b, all, 4, "sync1", 10000));
  CHECK(until_across(c, all, 4, "sync2", 10000));

  /* Across processes, each once; a join names the joiner everywhere. */
  say(b, "say hello from bob");
  CHECK(wait_all(all, 4, "\"name\":\"bob\",\"text\":\"hello from bob\"", 5000));
  for (i = 0; i < 4; i++) CHECK_INT(count_of(all[i], "hello from bob"), 1);
  say(c, "leave");
  CHECK(wait_all(all, 2, "{\"type\":\"leave\",\"room\":\"general\",\"name\":\"carol\"", 5000));
  say(c, "join general carol");
  CHECK(wait_all(all, 2, "{\"type\":\"join\",\"room\":\"general\",\"name\":\"carol\",\"members\":[\"carol\"]}", 5000));

  /* Three nodes' clients, each sender's lines in order, none twice: the
   * load test, its clients spread over the nodes in turn. */
  {
    ws_conn *cs[LOAD_N];
    char text[64];
    int k, done;
    uint64_t end;
    memset(g_load, 0, sizeof g_load);
    for (i = 0; i < LOAD_N; i++)
      CHECK_INT(ws_loop_connect(&g_loop, nd[i % 3].url, NULL, &g_load[i], &cs[i]), WS_OK);
    for (i = 0; i < LOAD_N; i++) {
      end = ws__loop_clock() + 5000;
      while (!g_load[i].opened && ws__loop_clock() < end) ws_loop_run_once(&g_loop, 10);
      snprintf(text, sizeof text, "join load u%d", i);
      say(cs[i], text);
      CHECK(wait_for(&g_load[i], "\"type\":\"joined\""));
    }
    {
      chatter *lw[LOAD_N];
      for (i = 0; i < LOAD_N; i++) lw[i] = &g_load[i];
      CHECK(until_across(cs[0], lw, LOAD_N, "warm0", 10000));
      CHECK(until_across(cs[1], lw, LOAD_N, "warm1", 10000));
      CHECK(until_across(cs[2], lw, LOAD_N, "warm2", 10000));
    }
    for (k = 0; k < LOAD_M; k++) {
      for (i = 0; i < LOAD_N; i++) {
        snprintf(text, sizeof text, "say L%d-%d", i, k);
        say(cs[i], text);
      }
      ws_loop_run_once(&g_loop, 0);
    }
    end = ws__loop_clock() + 10000;
    do {
      for (done = 1, i = 0; i < LOAD_N; i++)
        if (load_check(&g_load[i], 0) != LOAD_N * LOAD_M) done = 0;
      if (!done) ws_loop_run_once(&g_loop, 10);
    } while (!done && ws__loop_clock() < end);
    for (i = 0; i < LOAD_N; i++) CHECK_INT(load_check(&g_load[i], 1), LOAD_N * LOAD_M);
    for (i = 0; i < LOAD_N; i++) ws_close(cs[i], 1000, NULL, 0);
  }

  /* The broker dies: chat within node 0 goes on, across its two loops
   * (the first client of a node lands on either). */
  kill(broker, SIGKILL);
  waitpid(broker, NULL, 0);
  broker = -1;
  say(a, "say while down");
  CHECK(wait_for(&dave, "\"text\":\"while down\""));
  {
    uint64_t end = ws__loop_clock() + 500;
    while (ws__loop_clock() < end) ws_loop_run_once(&g_loop, 10);
  }
  CHECK(strstr(bob.log, "while down") == NULL); /* at most once: lost */
  for (i = 0; i < 3; i++) CHECK(alive(nd[i].pid));
  /* Back on its port: the bridges reconnect within their cap (10 s),
   * resubscribe, and messages cross again. */
  broker = broker_start(nats, bport);
  CHECK(broker > 0);
  others[0] = &bob, others[1] = &carol;
  CHECK(until_across(a, others, 2, "back", 20000));
  CHECK(until_across(b, all, 1, "back1", 10000));

  /* Junk on the room's channel. */
  {
    const char *chan = nats ? "ws.room:general" : "ws:room:general";
    static const unsigned char bad_text[] = {'W', 'S', 'B', '1', 1, 2, 3, 4, 5, 6, 7, 8, 1, 0xff, 0xfe};
    static const unsigned char bad_json[] = "WSB1\x01\x02\x03\x04\x05\x06\x07\x08\x01{\"type\":";
    size_t big = 10u << 20;
    char *mb = (char *)malloc(big);
    broker_publish(nats, bport, chan, "no envelope at all", 18);
    broker_publish(nats, bport, chan, "\xff\xfe", 2);
    broker_publish(nats, bport, chan, bad_text, sizeof bad_text);
    broker_publish(nats, bport, chan, bad_json, sizeof bad_json - 1);
    if (mb) {
      memset(mb, 'x', big);
      memcpy(mb, "WSB1\x01\x02\x03\x04\x05\x06\x07\x08\x01", 13);
      broker_publish(nats, bport, chan, mb, big);
      free(mb);
    }
    /* The chat goes on. Said until all have one: a bridge still reading
     * the 10 MB, or one whose link bounced meanwhile, loses what is said
     * in that moment (at most once), never the chat. */
    CHECK(until_across(b, all, 4, "after-junk", 20000));
    for (i = 0; i < 4; i++) {
      CHECK(!all[i]->closed);
      CHECK(strstr(all[i]->log, "no envelope") == NULL);
    }
    for (i = 0; i < 3; i++) CHECK(alive(nd[i].pid));
  }

  /* One process dies: the others are unaffected. */
  kill(nd[2].pid, SIGKILL);
  waitpid(nd[2].pid, NULL, 0);
  nd[2].pid = -1;
  say(b, "say after a node died");
  CHECK(wait_all(all, 2, "after a node died", 5000));
  CHECK(wait_for(&dave, "after a node died"));
  {
    uint64_t end = ws__loop_clock() + 5000;
    while (!carol.closed && ws__loop_clock() < end) ws_loop_run_once(&g_loop, 10);
    CHECK(carol.closed);
  }

  /* SIGTERM: both exit 0; their bridges counted the junk. */
  for (i = 0; i < 2; i++) {
    int st = 0;
    kill(nd[i].pid, SIGTERM);
    CHECK(waitpid(nd[i].pid, &st, 0) == nd[i].pid);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    nd[i].pid = -1;
    if (!CHECK(node_junk(&nd[i]) >= 3)) printf("    node %d junk %ld\n", i, node_junk(&nd[i]));
  }
  {
    uint64_t end = ws__loop_clock() + 5000;
    while (!(alice.closed && bob.closed && dave.closed) && ws__loop_clock() < end)
      ws_loop_run_once(&g_loop, 10);
  }
  ws_loop_free(&g_loop);
out:
  for (i = 0; i < 3; i++) {
    if (nd[i].pid > 0) {
      kill(nd[i].pid, SIGKILL);
      waitpid(nd[i].pid, NULL, 0);
    }
    if (nd[i].errlog[0]) unlink(nd[i].errlog);
  }
  if (broker > 0) {
    kill(broker, SIGKILL);
    waitpid(broker, NULL, 0);
  }
  printf("ok cluster over %s\n", server);
}

int main(int argc, char **argv) {
  const char *bin = argc > 1 ? argv[1] : "build/chat";
  /* "basic": one loop and two, no TLS, no brokers (make cross runs the
   * Windows build under wine this way: it has neither). */
  g_basic = argc > 2 && strcmp(argv[2], "basic") == 0;
  signal(SIGPIPE, SIG_IGN);
  if (access(bin, X_OK) != 0) {
    printf("not ok - %s not built\n", bin);
    return t_done("test_chat") | 1;
  }
  scenario(bin, NULL, NULL);
  printf("ok one loop\n");
  scenario(bin, "2", NULL);
  printf("ok --threads 2\n");
  if (g_basic) return t_done("test_chat");
#if WS_ENABLE_MBEDTLS
  { /* --threads 2 with TLS: a TLS config per loop, both on the port */
    char dir[] = "/tmp/ws_chat_tls_XXXXXX", cmd[300];
    if (CHECK(mkdtemp(dir) != NULL)) {
      snprintf(cmd, sizeof cmd, "sh tests/tls/certs.sh %s >/dev/null 2>&1", dir);
      if (CHECK(system(cmd) == 0)) scenario(bin, "2", dir);
      snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
      (void)!system(cmd);
      printf("ok --threads 2 over TLS\n");
    }
  }
#endif
  cluster(bin, 0);
  cluster(bin, 1);
  return t_done("test_chat");
}
