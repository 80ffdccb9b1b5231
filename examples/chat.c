/*
 * chat.c - a team chat server on the ws event loop: rooms, names, messages
 * broadcast to everyone in the room, join/leave notices and a member list.
 * It serves its own page at / and speaks WebSocket at /ws, with
 * permessage-deflate when the build has zlib.
 *
 *   build/chat [-p PORT] [-h HOST] [--threads N]   (default 127.0.0.1:8080)
 *
 * --threads N runs N loops on N threads, one port (SO_REUSEPORT where the
 * system spreads connections over such sockets, else one acceptor hands
 * them round): rooms are topics published to every loop of a ws_loop_group,
 * so messages and join/leave notices cross loops. Member lists are per
 * process: one list of clients under a mutex, read when an event is made.
 *
 *   build/chat ... --redis redis://127.0.0.1:6379
 *   build/chat ... --nats nats://127.0.0.1:4222
 *
 * makes the process one node of a cluster: every loop opens its own bridge
 * (ws_redis.h, ws_nats.h), rooms become broker channels, and messages and
 * join/leave notices reach the room's members on every process and every
 * loop (a loop's own members at once, the others through the broker, each
 * once). Member lists stay per process: a "join" from another process lists
 * that process's members of the room. Presence across the cluster would need
 * state the broker does not keep (Pub/Sub stores nothing), so it is left to
 * an application with a database. While the broker is down, each process's
 * chat goes on locally; what was said meanwhile is not replayed elsewhere.
 *
 * GET /stats answers with the memory budget's counters (ws_loop_stats())
 * as one JSON object, summed over the process's loops: the answering
 * loop's now, the others' as each stored them within the last half second.
 *
 * Protocol, client to server (text messages):
 *   join ROOM NAME     enter ROOM (leaving any other) as NAME
 *   say TEXT           send TEXT to the room
 *   leave              leave the room
 * Server to client: one JSON object per message, with "type" one of
 * "joined" (you are in: room, name, members), "join" / "leave" (someone
 * came or went: room, name, members), "msg" (room, name, text), "error"
 * (text).
 */
#define _POSIX_C_SOURCE 200809L
#include "ws.h"

#ifdef WS_CHAT_REDIS
#include "ws_redis.h"
#endif
#ifdef WS_CHAT_NATS
#include "ws_nats.h"
#endif

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define NAME_MAX_LEN 24
#define TEXT_MAX_LEN 2000

typedef struct client {
  ws_conn *conn;
  char name[NAME_MAX_LEN + 1];
  char room[NAME_MAX_LEN + 1];
  struct client *next, *prev;
} client;

#define MAX_THREADS 64

/* Everyone connected, for member lists, across all loops: g_mu guards the
 * list and every client's room and name. */
static client *g_clients;
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static ws_loop g_loops[MAX_THREADS];
static ws_loop *g_loop_ptrs[MAX_THREADS];
static ws_loop_group g_group;

/* --redis / --nats: one bridge per loop, used on that loop's thread only. */
enum { BRIDGE_NONE, BRIDGE_REDIS, BRIDGE_NATS };
static int g_bridge_kind;
static const char *g_bridge_url;
static uint64_t g_origin; /* this process, to the bridges */
#ifdef WS_CHAT_REDIS
static ws_redis *g_redis[MAX_THREADS];
#endif
#ifdef WS_CHAT_NATS
static ws_nats *g_nats[MAX_THREADS];
#endif

static const char PAGE[] =
    "<!doctype html>\n"
    "<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
    "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
    "<title>ws chat</title>\n"
    "<style>\n"
    "body{font:15px system-ui,sans-serif;margin:0;display:flex;height:100vh;"
    "background:#f4f5f7;color:#1d1c1d}\n"
    "#side{width:210px;background:#3f0e40;color:#fff;padding:14px;box-sizing:border-box}\n"
    "#side h2{font-size:15px;margin:14px 0 6px;opacity:.8}\n"
    "#members{list-style:none;padding:0;margin:0}#members li{padding:2px 0}\n"
    "#main{flex:1;display:flex;flex-direction:column}\n"
    "#log{flex:1;overflow-y:auto;padding:12px 16px;background:#fff}\n"
    ".m{margin:4px 0}.m b{margin-right:6px}.n{color:#777;font-style:italic}\n"
    "form{display:flex;gap:6px;padding:10px;border-top:1px solid #ddd}\n"
    "input{font:inherit;padding:7px;border:1px solid #bbb;border-radius:4px}\n"
    "#text{flex:1}button{font:inherit;padding:7px 12px}\n"
    "#status{font-size:12px;opacity:.8}\n"
    "</style></head><body>\n"
    "<div id=\"side\"><div><b>ws chat</b></div><div id=\"status\">connecting</div>\n"
    "<h2 id=\"roomname\">#</h2><ul id=\"members\"></ul></div>\n"
    "<div id=\"main\"><form id=\"joinf\"><input id=\"name\" placeholder=\"your name\" "
    "maxlength=\"24\" required><input id=\"room\" value=\"general\" maxlength=\"24\" "
    "required><button>Join</button></form>\n"
    "<div id=\"log\"></div>\n"
    "<form id=\"sayf\"><input id=\"text\" placeholder=\"message\" autocomplete=\"off\" "
    "maxlength=\"2000\"><button>Send</button></form></div>\n"
    "<script>\n"
    "const $=id=>document.getElementById(id);\n"
    "const ws=new WebSocket((location.protocol==='https:'?'wss://':'ws://')+location.host+'/ws');\n"
    "function line(html,cls){const d=document.createElement('div');d.className='m '+(cls||'');"
    "d.innerHTML=html;$('log').appendChild(d);$('log').scrollTop=1e9;}\n"
    "function esc(s){return s.replace(/[&<>\"]/g,c=>({'&':'&amp;','<':'&lt;','>':'&gt;','\"':'&quot;'}[c]));}\n"
    "function members(list){$('members').innerHTML=list.map(n=>'<li>'+esc(n)+'</li>').join('');}\n"
    "ws.onopen=()=>{$('status').textContent='connected';};\n"
    "ws.onclose=e=>{$('status').textContent='disconnected ('+e.code+')';};\n"
    "ws.onmessage=e=>{const m=JSON.parse(e.data);\n"
    " if(m.type==='joined'){$('roomname').textContent='#'+m.room;members(m.members);"
    "line('you joined #'+esc(m.room)+' as '+esc(m.name),'n');}\n"
    " else if(m.type==='join'){members(m.members);line(esc(m.name)+' joined','n');}\n"
    " else if(m.type==='leave'){members(m.members);line(esc(m.name)+' left','n');}\n"
    " else if(m.type==='msg'){line('<b>'+esc(m.name)+'</b>'+esc(m.text));}\n"
    " else if(m.type==='error'){line('error: '+esc(m.text),'n');}};\n"
    "$('joinf').onsubmit=e=>{e.preventDefault();ws.send('join '+$('room').value+' '+$('name').value);"
    "$('text').focus();};\n"
    "$('sayf').onsubmit=e=>{e.preventDefault();if($('text').value){ws.send('say '+$('text').value);"
    "$('text').value='';}};\n"
    "</script></body></html>\n";

/* Appends s to a JSON string being built, escaped. */
static size_t json_str(char *out, size_t cap, size_t at, const char *s,
                       size_t n) {
  size_t i;
  if (at < cap) out[at] = '"';
  at++;
  for (i = 0; i < n; i++) {
    unsigned char ch = (unsigned char)s[i];
    char esc[8];
    const char *add = NULL;
    size_t k;
    if (ch == '"') add = "\\\"";
    else if (ch == '\\') add = "\\\\";
    else if (ch == '\n') add = "\\n";
    else if (ch < 0x20) {
      snprintf(esc, sizeof esc, "\\u%04x", ch);
      add = esc;
    }
    if (add) {
      for (k = 0; add[k]; k++, at++)
        if (at < cap) out[at] = add[k];
    } else {
      if (at < cap) out[at] = (char)ch;
      at++;
    }
  }
  if (at < cap) out[at] = '"';
  return at + 1;
}

static size_t json_lit(char *out, size_t cap, size_t at, const char *s) {
  for (; *s; s++, at++)
    if (at < cap) out[at] = *s;
  return at;
}

/* {"type":T,"room":R,"name":N[,"text":X][,"members":[...]]} */
static size_t make_event(char *out, size_t cap, const char *type,
                         const client *who, const char *text, size_t tlen,
                         int with_members) {
  size_t at = 0;
  at = json_lit(out, cap, at, "{\"type\":");
  at = json_str(out, cap, at, type, strlen(type));
  at = json_lit(out, cap, at, ",\"room\":");
  at = json_str(out, cap, at, who->room, strlen(who->room));
  at = json_lit(out, cap, at, ",\"name\":");
  at = json_str(out, cap, at, who->name, strlen(who->name));
  if (text) {
    at = json_lit(out, cap, at, ",\"text\":");
    at = json_str(out, cap, at, text, tlen);
  }
  if (with_members) {
    const client *c;
    int first = 1;
    at = json_lit(out, cap, at, ",\"members\":[");
    for (c = g_clients; c; c = c->next) {
      if (strcmp(c->room, who->room) != 0) continue;
      if (!first) at = json_lit(out, cap, at, ",");
      at = json_str(out, cap, at, c->name, strlen(c->name));
      first = 0;
    }
    at = json_lit(out, cap, at, "]");
  }
  at = json_lit(out, cap, at, "}");
  return at;
}

static void send_error(ws_conn *c, const char *text) {
  char buf[256];
  size_t at = json_lit(buf, sizeof buf, 0, "{\"type\":\"error\",\"text\":");
  at = json_str(buf, sizeof buf, at, text, strlen(text));
  at = json_lit(buf, sizeof buf, at, "}");
  if (at <= sizeof buf) ws_send(c, WS_OP_TEXT, buf, at);
}

/* Publishes to a room on every loop of every process: at once to this
 * loop's members; through the other loops' queues to theirs, or, with a
 * bridge, through the broker to every other loop and process. */
static void publish(ws_loop *l, const char *topic, const char *buf, size_t n) {
  size_t i = (size_t)(l - g_loops);
  /* The process's own loops first, without the broker, so that chat within
   * a process goes on while the broker is down; then the broker, for the
   * other processes (the bridges of this process share one origin and so
   * skip what came from here). */
  ws_loop_group_publish(&g_group, l, topic, WS_OP_TEXT, buf, n);
  switch (g_bridge_kind) {
#ifdef WS_CHAT_REDIS
  case BRIDGE_REDIS:
    ws_redis_send(g_redis[i], topic, WS_OP_TEXT, buf, n);
    break;
#endif
#ifdef WS_CHAT_NATS
  case BRIDGE_NATS:
    ws_nats_send(g_nats[i], topic, WS_OP_TEXT, buf, n);
    break;
#endif
  default:
    (void)i;
  }
}

#if defined(WS_CHAT_REDIS) || defined(WS_CHAT_NATS)
/* The broker link going up or down, on the loop's thread. */
static void bridge_state(int loop, int up) {
  fprintf(stderr, "chat: loop %d: broker %s\n", loop, up ? "connected" : "unreachable, retrying");
}
#endif
#ifdef WS_CHAT_REDIS
static void redis_state(ws_redis *b, int up, void *user) {
  (void)b;
  bridge_state((int)((ws_loop *)user - g_loops), up);
}
#endif
#ifdef WS_CHAT_NATS
static void nats_state(ws_nats *b, int up, void *user) {
  (void)b;
  bridge_state((int)((ws_loop *)user - g_loops), up);
}
#endif

/* Opens loop i's bridge (on the thread that runs it, or before it runs). */
static int bridge_open(int i) {
  int rc = WS_OK;
  (void)i;
  switch (g_bridge_kind) {
#ifdef WS_CHAT_REDIS
  case BRIDGE_REDIS: {
    ws_redis_config bc;
    ws_redis_config_init(&bc);
    bc.url = g_bridge_url;
    bc.on_state = redis_state;
    bc.origin = g_origin;
    bc.user = &g_loops[i];
    rc = ws_redis_open(&g_redis[i], &g_loops[i], &bc);
    break;
  }
#endif
#ifdef WS_CHAT_NATS
  case BRIDGE_NATS: {
    ws_nats_config bc;
    ws_nats_config_init(&bc);
    bc.url = g_bridge_url;
    bc.on_state = nats_state;
    bc.origin = g_origin;
    bc.user = &g_loops[i];
    rc = ws_nats_open(&g_nats[i], &g_loops[i], &bc);
    break;
  }
#endif
  default:
    break;
  }
  return rc;
}

/* Closes loop i's bridge on the thread that ran the loop, once its clients
 * are gone, and says what crossed it. */
static void bridge_close(int i) {
  size_t sent = 0, received = 0, lost_down = 0, lost_full = 0, junk = 0;
  (void)i;
  switch (g_bridge_kind) {
#ifdef WS_CHAT_REDIS
  case BRIDGE_REDIS: {
    ws_redis_stats st;
    ws_redis_stats_get(g_redis[i], &st);
    sent = st.sent, received = st.received, junk = st.junk;
    lost_down = st.lost_down, lost_full = st.lost_full;
    ws_redis_close(g_redis[i]);
    break;
  }
#endif
#ifdef WS_CHAT_NATS
  case BRIDGE_NATS: {
    ws_nats_stats st;
    ws_nats_stats_get(g_nats[i], &st);
    sent = st.sent, received = st.received, junk = st.junk;
    lost_down = st.lost_down, lost_full = st.lost_full;
    ws_nats_close(g_nats[i]);
    break;
  }
#endif
  default:
    return;
  }
  fprintf(stderr, "chat: loop %d: bridge sent %zu received %zu lost_down %zu "
          "lost_full %zu junk %zu\n", i, sent, received, lost_down, lost_full, junk);
}

static void room_event(const client *who, const char *type, const char *text,
                       size_t tlen, int with_members) {
  char stack[4096], *buf = stack, topic[NAME_MAX_LEN + 8];
  size_t n;
  pthread_mutex_lock(&g_mu);
  n = make_event(stack, sizeof stack, type, who, text, tlen, with_members);
  if (n > sizeof stack) {
    buf = (char *)malloc(n);
    if (buf) make_event(buf, n, type, who, text, tlen, with_members);
  }
  pthread_mutex_unlock(&g_mu);
  if (buf == NULL) return;
  snprintf(topic, sizeof topic, "room:%s", who->room);
  publish(ws_loop_of(who->conn), topic, buf, n);
  if (buf != stack) free(buf);
}

static int valid_word(const char *s, size_t n) {
  size_t i;
  if (n == 0 || n > NAME_MAX_LEN) return 0;
  for (i = 0; i < n; i++) {
    char ch = s[i];
    if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
          (ch >= '0' && ch <= '9') || ch == '_' || ch == '-' || ch == '.'))
      return 0;
  }
  return 1;
}

static void leave_room(client *cl) {
  char topic[NAME_MAX_LEN + 8];
  client gone = *cl;
  if (!cl->room[0]) return;
  snprintf(topic, sizeof topic, "room:%s", cl->room);
  ws_loop_unsubscribe(cl->conn, topic);
  pthread_mutex_lock(&g_mu);
  cl->room[0] = '\0'; /* no longer in the member list */
  pthread_mutex_unlock(&g_mu);
  room_event(&gone, "leave", NULL, 0, 1);
}

static int on_handshake(ws_conn *c, const ws_request *req, ws_accept *acc,
                        void *user) {
  (void)c, (void)acc, (void)user;
  if (req->path_len != 3 || memcmp(req->path, "/ws", 3) != 0) return 404;
  return 0;
}

/* Each loop's counters, stored every half second by its own timer (a
 * loop's stats are read on its own thread only). */
static struct ws_loop_stats g_stats[MAX_THREADS];
static ws_timer g_stats_timer[MAX_THREADS];

static void stats_store(ws_loop *l, ws_timer *t, void *user) {
  struct ws_loop_stats st;
  (void)t, (void)user;
  ws_loop_stats(l, &st);
  pthread_mutex_lock(&g_mu);
  g_stats[l - g_loops] = st;
  pthread_mutex_unlock(&g_mu);
}

static int stats_respond(ws_conn *c) {
  static const ws_header ct[] = {{"Content-Type", 12, "application/json", 16},
                                 {"Cache-Control", 13, "no-store", 8}};
  ws_loop *l = ws_loop_of(c);
  struct ws_loop_stats s, one;
  size_t i, me = (size_t)(l - g_loops);
  char body[1024];
  int n;
  memset(&s, 0, sizeof s);
  ws_loop_stats(l, &one);
  pthread_mutex_lock(&g_mu);
  g_stats[me] = one;
  for (i = 0; i < MAX_THREADS && g_loop_ptrs[i]; i++) {
    const struct ws_loop_stats *t = &g_stats[i];
    s.conns += t->conns;
    s.paused += t->paused;
    s.rationed += t->rationed;
    s.mem_budget += t->mem_budget;
    s.held += t->held;
    s.held_in += t->held_in;
    s.held_out += t->held_out;
    s.held_deflate += t->held_deflate;
    s.held_tls += t->held_tls;
    s.held_peak += t->held_peak;
    s.holders += t->holders;
    s.failed_budget_1009 += t->failed_budget_1009;
    s.failed_budget_1013 += t->failed_budget_1013;
    s.failed_slow_reader += t->failed_slow_reader;
    s.failed_too_big += t->failed_too_big;
    s.failed_protocol += t->failed_protocol;
    s.failed_timeout += t->failed_timeout;
    s.refused_503 += t->refused_503;
  }
  pthread_mutex_unlock(&g_mu);
  n = snprintf(body, sizeof body,
               "{\"loops\":%u,\"conns\":%lu,\"paused\":%lu,\"rationed\":%lu,"
               "\"mem_budget\":%lu,\"held\":%lu,\"held_in\":%lu,"
               "\"held_out\":%lu,\"held_deflate\":%lu,\"held_tls\":%lu,"
               "\"held_peak\":%lu,\"holders\":%lu,"
               "\"failed_budget_1009\":%lu,\"failed_budget_1013\":%lu,"
               "\"failed_slow_reader\":%lu,\"failed_too_big\":%lu,"
               "\"failed_protocol\":%lu,\"failed_timeout\":%lu,"
               "\"refused_503\":%lu}\n",
               (unsigned)i, (unsigned long)s.conns, (unsigned long)s.paused,
               (unsigned long)s.rationed,
               (unsigned long)s.mem_budget, (unsigned long)s.held,
               (unsigned long)s.held_in, (unsigned long)s.held_out,
               (unsigned long)s.held_deflate, (unsigned long)s.held_tls,
               (unsigned long)s.held_peak, (unsigned long)s.holders,
               (unsigned long)s.failed_budget_1009,
               (unsigned long)s.failed_budget_1013,
               (unsigned long)s.failed_slow_reader,
               (unsigned long)s.failed_too_big,
               (unsigned long)s.failed_protocol,
               (unsigned long)s.failed_timeout, (unsigned long)s.refused_503);
  return ws_http_respond(c, 200, ct, 2, body, (size_t)n) == WS_OK ? 0 : 500;
}

static int on_http(ws_conn *c, const ws_request *req, void *user) {
  static const ws_header ct[] = {
      {"Content-Type", 12, "text/html; charset=utf-8", 24},
      {"Cache-Control", 13, "no-store", 8}};
  (void)user;
  if (req->method_len != 3 || memcmp(req->method, "GET", 3) != 0) return 405;
  if (req->path_len == 1 && req->path[0] == '/')
    return ws_http_respond(c, 200, ct, 2, PAGE, sizeof PAGE - 1) == WS_OK ? 0 : 500;
  if (req->path_len == 6 && memcmp(req->path, "/stats", 6) == 0)
    return stats_respond(c);
  return 404;
}

static void on_open(ws_conn *c, const char *proto, size_t n, void *user) {
  client *cl = (client *)calloc(1, sizeof *cl);
  (void)proto, (void)n, (void)user;
  if (cl == NULL) {
    ws_close(c, WS_CLOSE_INTERNAL, "out of memory", 13);
    return;
  }
  cl->conn = c;
  pthread_mutex_lock(&g_mu);
  cl->next = g_clients;
  if (g_clients) g_clients->prev = cl;
  g_clients = cl;
  pthread_mutex_unlock(&g_mu);
  ws_conn_set_user(c, cl);
}

static int on_message(ws_conn *c, int op, const void *data, size_t len,
                      int fin, void *user) {
  client *cl = (client *)user;
  const char *s = (const char *)data;
  (void)fin;
  if (cl == NULL) return 0;
  if (op != WS_OP_TEXT) {
    send_error(c, "text messages only");
    return 0;
  }
  if (len > 5 && memcmp(s, "join ", 5) == 0) {
    const char *room = s + 5, *sp = memchr(room, ' ', len - 5), *name;
    size_t rlen, nlen;
    char topic[NAME_MAX_LEN + 8];
    if (sp == NULL) {
      send_error(c, "usage: join ROOM NAME");
      return 0;
    }
    rlen = (size_t)(sp - room);
    name = sp + 1;
    nlen = len - (size_t)(name - s);
    if (!valid_word(room, rlen) || !valid_word(name, nlen)) {
      send_error(c, "room and name: 1-24 of A-Z a-z 0-9 _ - .");
      return 0;
    }
    leave_room(cl);
    pthread_mutex_lock(&g_mu);
    memcpy(cl->room, room, rlen);
    cl->room[rlen] = '\0';
    memcpy(cl->name, name, nlen);
    cl->name[nlen] = '\0';
    /* Member lists run newest join first. The list's order, not the order
     * of the connections' opens, which loops on other threads may take
     * in any order, decides it. */
    if (cl != g_clients) {
      cl->prev->next = cl->next;
      if (cl->next) cl->next->prev = cl->prev;
      cl->prev = NULL;
      cl->next = g_clients;
      g_clients->prev = cl;
      g_clients = cl;
    }
    pthread_mutex_unlock(&g_mu);
    /* Tell the room first, then join it: the newcomer gets "joined". */
    room_event(cl, "join", NULL, 0, 1);
    snprintf(topic, sizeof topic, "room:%s", cl->room);
    if (ws_loop_subscribe(c, topic) != WS_OK) {
      send_error(c, "could not join");
      leave_room(cl);
      return 0;
    }
    {
      char buf[4096];
      size_t n;
      pthread_mutex_lock(&g_mu);
      n = make_event(buf, sizeof buf, "joined", cl, NULL, 0, 1);
      pthread_mutex_unlock(&g_mu);
      if (n <= sizeof buf) ws_send(c, WS_OP_TEXT, buf, n);
    }
    return 0;
  }
  if (len > 4 && memcmp(s, "say ", 4) == 0) {
    if (!cl->room[0]) {
      send_error(c, "join a room first");
      return 0;
    }
    if (len - 4 > TEXT_MAX_LEN) {
      send_error(c, "message too long");
      return 0;
    }
    room_event(cl, "msg", s + 4, len - 4, 0);
    return 0;
  }
  if (len == 5 && memcmp(s, "leave", 5) == 0) {
    leave_room(cl);
    return 0;
  }
  send_error(c, "unknown command");
  return 0;
}

static void on_close(ws_conn *c, int code, const char *reason, size_t len,
                     void *user) {
  client *cl = (client *)user;
  (void)c, (void)code, (void)reason, (void)len;
  if (cl == NULL) return; /* never opened: plain HTTP or a failed upgrade */
  pthread_mutex_lock(&g_mu);
  if (cl->prev)
    cl->prev->next = cl->next;
  else
    g_clients = cl->next;
  if (cl->next) cl->next->prev = cl->prev;
  pthread_mutex_unlock(&g_mu);
  if (cl->room[0]) {
    char topic[NAME_MAX_LEN + 8];
    snprintf(topic, sizeof topic, "room:%s", cl->room);
    ws_loop_unsubscribe(c, topic);
    room_event(cl, "leave", NULL, 0, 1); /* it is off the member list */
  }
  free(cl);
}

static void on_signal(int sig) {
  (void)sig;
  /* Only sets a flag: safe in a handler. The other loops' threads block
   * these signals, so the main thread's wait is the one cut short. */
  ws_loop_stop(&g_loops[0]);
}

static void shutdown_post(ws_loop *l, void *arg) {
  (void)arg;
  ws_loop_shutdown(l);
}

static void *loop_thread(void *arg) {
  ws_loop_run((ws_loop *)arg); /* until shutdown_post's shutdown is done */
  bridge_close((int)((ws_loop *)arg - g_loops));
  return NULL;
}

int main(int argc, char **argv) {
  ws_loop_config cfg;
  ws_loop_callbacks cb;
  const char *host = "127.0.0.1", *cert = NULL, *key = NULL;
  unsigned port = 8080, bound = 0;
  ws_tls_config *tls[MAX_THREADS] = {NULL};
  pthread_t th[MAX_THREADS];
#ifndef _WIN32
  sigset_t sigs, old;
#endif
  int i, rc, threads = 1;
  for (i = 1; i < argc; i++) {
    if (strcmp(argv[i], "-p") == 0 && i + 1 < argc) {
      port = (unsigned)atoi(argv[++i]);
    } else if (strcmp(argv[i], "-h") == 0 && i + 1 < argc) {
      host = argv[++i];
    } else if (strcmp(argv[i], "--cert") == 0 && i + 1 < argc) {
      cert = argv[++i];
    } else if (strcmp(argv[i], "--key") == 0 && i + 1 < argc) {
      key = argv[++i];
    } else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc &&
               (threads = atoi(argv[i + 1])) >= 1 && threads <= MAX_THREADS) {
      i++;
    } else if ((strcmp(argv[i], "--redis") == 0 || strcmp(argv[i], "--nats") == 0) &&
               i + 1 < argc && !g_bridge_kind) {
      g_bridge_kind = argv[i][2] == 'r' ? BRIDGE_REDIS : BRIDGE_NATS;
      g_bridge_url = argv[++i];
    } else {
      fprintf(stderr, "usage: %s [-p PORT] [-h HOST] [--cert FILE --key FILE] "
                      "[--threads 1-%d] [--redis URL | --nats URL]\n",
              argv[0], MAX_THREADS);
      return 2;
    }
  }
#ifndef WS_CHAT_REDIS
  if (g_bridge_kind == BRIDGE_REDIS) {
    fprintf(stderr, "chat: built without the Redis bridge (hiredis not installed: "
                    "apt-get install libhiredis-dev, then make)\n");
    return 2;
  }
#endif
#ifndef WS_CHAT_NATS
  if (g_bridge_kind == BRIDGE_NATS) {
    fprintf(stderr, "chat: built without the NATS bridge\n");
    return 2;
  }
#endif
#ifdef SIGPIPE /* not on Windows */
  signal(SIGPIPE, SIG_IGN);
#endif
  signal(SIGINT, on_signal);
  signal(SIGTERM, on_signal);
  ws_loop_config_init(&cfg);
  cfg.server.max_message = 16 * 1024;
  /* permessage-deflate where the build has it (browsers offer it), without
   * context takeover either way: an idle member holds no zlib state, and
   * what is compressed is only what one message repeats of itself. */
  cfg.server.deflate.enable = ws_deflate_available();
  cfg.server.deflate.no_context_takeover = 1;
  cfg.server.deflate.peer_no_context_takeover = 1;
  memset(&cb, 0, sizeof cb);
  cb.conn.on_handshake = on_handshake;
  cb.conn.on_http = on_http;
  cb.conn.on_open = on_open;
  cb.conn.on_message = on_message;
  cb.conn.on_close = on_close;
  if (threads > 1 && (cert || key)) {
    if (!ws_loop_has_reuseport()) {
      /* Handing sockets off needs a plain listener. */
      fprintf(stderr, "chat: --threads with --cert needs SO_REUSEPORT (Linux, FreeBSD)\n");
      return 2;
    }
    cfg.reuseport = 1; /* every loop listens with TLS on the port itself */
  }
  { /* one origin for every bridge of this process */
    FILE *f = fopen("/dev/urandom", "rb");
    if (f == NULL || fread(&g_origin, sizeof g_origin, 1, f) != 1)
      g_origin = ((uint64_t)time(NULL) << 22) ^ (uint64_t)getpid();
    if (f) fclose(f);
    if (g_origin == 0) g_origin = 1;
  }
  for (i = 0; i < threads; i++) {
    if (ws_loop_init(&g_loops[i], &cfg, &cb, NULL) != WS_OK) {
      fprintf(stderr, "chat: cannot start the loop\n");
      return 1;
    }
    g_loop_ptrs[i] = &g_loops[i];
    ws_timer_start(&g_loops[i], &g_stats_timer[i], 0, 500, stats_store, NULL);
    if (bridge_open(i) != WS_OK) {
      fprintf(stderr, "chat: bad broker URL: %s\n", g_bridge_url);
      return 2;
    }
  }
  ws_loop_group_init(&g_group, g_loop_ptrs, (size_t)threads);
  if (cert || key) { /* https:// page, wss:// socket */
    ws_tls_options to;
    char err[200];
    ws_tls_options_init(&to, WS_SERVER);
    to.cert_file = cert;
    to.key_file = key;
    /* A TLS config per loop: a config's random generator is not shared
     * between threads. The first loop picks the port; the others join it. */
    for (i = 0, rc = WS_OK; i < threads && rc == WS_OK; i++) {
      if (!cert || !key || ws_tls_config_new(&tls[i], &to, err, sizeof err) != WS_OK) {
        fprintf(stderr, "chat: TLS: %s\n", !cert || !key ? "--cert and --key go together" : err);
        return 2;
      }
      rc = ws_loop_listen_tls(&g_loops[i], host, i ? bound : port, tls[i],
                              i ? NULL : &bound);
    }
  } else {
    rc = ws_loop_group_listen(&g_group, host, port, &bound);
  }
  if (rc != WS_OK) {
    perror("chat: listen");
    return 1;
  }
  printf("chat: open %s://%s:%u/ in a browser (%s backend, %d thread%s, %s%s%s)\n",
         tls[0] ? "https" : "http", strchr(host, ':') ? "[::1]" : host, bound,
         ws_loop_backend(), threads, threads > 1 ? "s" : "",
         threads == 1 ? "one loop"
         : ws_loop_has_reuseport() ? "SO_REUSEPORT" : "one acceptor hands off",
         g_bridge_kind ? ", cluster through " : "", g_bridge_kind ? g_bridge_url : "");
  fflush(stdout);
  /* Loop 0 runs on this thread, the others on their own, which block the
   * stop signals so that they reach this one (Windows has no signal
   * masks: its Ctrl-C handler runs on a thread of its own anyway). */
#ifndef _WIN32
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &sigs, &old);
#endif
  for (i = 1; i < threads; i++) {
    if (pthread_create(&th[i], NULL, loop_thread, &g_loops[i]) != 0) {
      fprintf(stderr, "chat: cannot start thread %d\n", i);
      return 1;
    }
  }
#ifndef _WIN32
  pthread_sigmask(SIG_SETMASK, &old, NULL);
#endif
  ws_loop_run(&g_loops[0]);
  /* Stopped by a signal: every loop closes its clients politely, on its own
   * thread; then all are freed here. */
  for (i = 1; i < threads; i++) ws_loop_post(&g_loops[i], shutdown_post, NULL);
  ws_loop_shutdown(&g_loops[0]);
  ws_loop_run(&g_loops[0]);
  bridge_close(0);
  for (i = 1; i < threads; i++) pthread_join(th[i], NULL);
  for (i = 0; i < threads; i++) ws_loop_free(&g_loops[i]);
  for (i = 0; i < threads; i++) ws_tls_config_free(tls[i]);
  return 0;
}
