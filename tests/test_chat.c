/*
 * test_chat.c - drives build/chat (a real process on a loopback port) with
 * WebSocket clients on a ws_loop: join, messages broadcast to the room and
 * only to it, join/leave notices with member lists, errors, the page. Run
 * twice: one loop, and --threads 2 (two loops on one port; clients land
 * on both, and everything above must hold across them), where several
 * clients also check that each sender's messages arrive in order, once.
 */
#define _DEFAULT_SOURCE 1
#include "../src/ws.c"
#include "t.h"

#include <signal.h>
#include <stdio.h>
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

static void scenario(const char *bin, const char *threads) {
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
    if (threads)
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
  CHECK_INT(ws_loop_init(&g_loop, &cfg, &cb, NULL), WS_OK);
  snprintf(url, sizeof url, "ws://127.0.0.1:%u/ws", port);
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
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
  }
  ws_loop_free(&g_loop);
  close(out[0]);
}

int main(int argc, char **argv) {
  const char *bin = argc > 1 ? argv[1] : "build/chat";
  signal(SIGPIPE, SIG_IGN);
  if (access(bin, X_OK) != 0) {
    printf("not ok - %s not built\n", bin);
    return t_done("test_chat") | 1;
  }
  scenario(bin, NULL);
  printf("ok one loop\n");
  scenario(bin, "2");
  printf("ok --threads 2\n");
  return t_done("test_chat");
}
