/* SPDX-License-Identifier: MIT. Copyright (c) 2026 the ws authors; terms in LICENSE. */
/*
 * ws_nats.h - a bridge from a ws_loop's topics to NATS (an optional
 * add-on: vendor include/ws_nats.h and src/ws_nats.c beside ws.h and ws.c).
 *
 * Each bridge is one node: it subscribes one NATS subject per topic that
 * has subscribers on its loop, and carries the loop's publishes to every
 * other node through the NATS server. Several loops in a process (one per
 * thread) each open their own bridge; a bridge has no locks and no state
 * shared with another. Every ws_nats_* call and every callback is on the
 * loop's thread. The header has the same shape as ws_redis.h, so an
 * application switches brokers with a search-and-replace of the prefix.
 *
 * Why the NATS text protocol, and not the official C client (libnats 3.4):
 * that client runs threads of its own even with an external event loop.
 * natsOptions_SetEventLoop() only moves the socket's reads and writes onto
 * the host loop; a subscription's messages are still handed to its own
 * delivery thread, or to the library's delivery pool
 * (natsOptions_UseGlobalMessageDelivery()), and connection events and
 * reconnects run on dedicated threads (nats.h: natsConnectionHandler,
 * natsCustomReconnectDelayHandler, nats_CloseAndWait(): "Internal threads
 * (such as subscriptions dispatchers, etc..)"). Every message would cross
 * threads to reach the loop that owns the subscribers, through a lock or
 * ws_loop_post(), which is what this library's loop model exists to avoid.
 * Measured with libnats 3.4.1: after natsConnection_Connect() with
 * natsOptions_SetEventLoop(), the process runs 4 threads of the library's
 * besides the caller's, and each asynchronous subscription adds one.
 * The client protocol the bridge needs is small (INFO, CONNECT, PUB, SUB,
 * UNSUB, MSG, PING/PONG, +OK/-ERR), so the bridge speaks it over a
 * non-blocking socket watched by the loop (ws_watch), with ws_timer for
 * backoff and the health check. It needs nothing but libc and ws.h.
 * Not supported: TLS to the server, NKEY/JWT credentials, cluster URL
 * discovery (one server URL), headers (HMSG).
 *
 * Subjects. subject = prefix + the topic mapped to ONE subject token:
 * bytes 0x21..0x7E other than '.', '*', '>' and '%' stay as they are;
 * every other byte (space and controls, '.', '*', '>', '%', bytes of 0x7F
 * and above, so UTF-8) becomes "%XX" (two upper-case hex digits). The empty
 * topic is "%" alone. So "room.1" is "ws.room%2E1" with the default prefix,
 * any topic gives a valid subject with no wildcard, and the mapping is
 * reversible: a message's subject is mapped back to its topic. A topic
 * whose subject would pass 4000 bytes (the server's control line is 4096)
 * stays local: it is not subscribed at the server, and its publishes count
 * in lost_big.
 * One subscription per topic keeps a topic's traffic away from the nodes
 * that have no subscriber for it. The other mapping, one subscription to
 * "<prefix>>" per node, costs one SUB in all but brings every topic's
 * messages to every node; it suits a few busy topics shared by all nodes,
 * not a chat with many rooms.
 *
 * Envelope (the same as ws_redis.h). A NATS payload is
 *   "WSB1" (4 bytes) | origin (8 bytes) | op (1 byte: 1 TEXT, 2 BINARY) |
 *   the message
 * origin is random per bridge (from /dev/urandom, else time ^ pid ^ an
 * address). CONNECT sets "echo":false, so the server does not send a
 * bridge its own publishes; a message carrying the bridge's own origin is
 * dropped all the same (its local subscribers had it from
 * ws_loop_publish()). So a publish reaches every subscriber on every node
 * once while the server is up. Any other payload (shorter than 13 bytes,
 * another magic, another op) is junk, unless accept_foreign is set.
 *
 * Delivery and failures:
 * - order: one connection per bridge carries its publishes in order, and
 *   NATS keeps a publisher's order per subject: per publisher and per
 *   topic, messages arrive in order.
 * - at most once: NATS core stores nothing. A publish made while the link
 *   is down (connecting, backing off) is counted in lost_down and goes to
 *   the local subscribers only; publishes still queued when a link drops
 *   are lost without a count. The loop's local delivery never waits on
 *   the server.
 * - reconnect: after a failed attempt or a lost link the next attempt is
 *   after a random delay in [0, d) (full jitter), d starting at
 *   backoff_min_ms and doubling up to backoff_max_ms; d is reset after a
 *   link that came up. Driven by a ws_timer: never a busy loop. Connects
 *   are non-blocking; resolving a host name (getaddrinfo()) blocks the
 *   loop for as long as the resolver takes: use a numeric address where
 *   that matters. On every link, every live topic is subscribed again.
 * - the link is up once the server has answered the PING sent after
 *   CONNECT and the SUBs, so the server holds every subscription by then
 *   (on_state(b, 1)). An -ERR is counted (stats.errors, the text in
 *   ws_nats_last_error()); the server closes the link after most of them
 *   (authorization, parser errors), and the bridge reconnects.
 * - health: a PING every ping_ms; no PONG within another ping_ms ends the
 *   link (also a server stopped with SIGSTOP, whose socket accepts but
 *   never answers), and so does a link not up within 2 * ping_ms (10 s
 *   with ping_ms 0). Server PINGs are answered.
 * - bounded queue: bytes waiting to be written to the server never pass
 *   max_queue for publishes: a publish that does not fit is dropped and
 *   counted (lost_full). SUB, UNSUB, PING and PONG may use 64 KiB more;
 *   past that the link is ended and a new one resubscribes everything.
 * - max_payload: the server ends a link that publishes more than its
 *   INFO's max_payload (1 MiB by default), so a publish whose envelope is
 *   bigger is dropped before sending and counted in lost_big.
 * - from the server: a MSG larger than max_message is skipped as it
 *   arrives (never buffered whole) and counted as junk; an invalid TEXT
 *   payload too. A line the protocol does not know, or a control line over
 *   64 KiB, ends the link (reconnect), never a crash.
 */
#ifndef WS_NATS_H
#define WS_NATS_H

#include <stddef.h>
#include <stdint.h>
#include "ws.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ws_nats ws_nats; /* opaque; ws_nats_open allocates */

typedef struct ws_nats_config {
  const char *url;          /* "nats://[user:pass@]host[:port]" (4222), or
                               "nats://token@host[:port]" (a user part
                               without ':' is an auth token; credentials
                               are taken as written, without %-decoding,
                               and sent in CONNECT); host numeric
                               (IPv4, IPv6 in brackets) or a name (resolving
                               a name may block: see above). Copied. */
  const char *prefix;       /* subject = prefix + mapped topic ("ws."): ""
                               or tokens each followed by '.', without
                               whitespace, '*' or '>'. Copied. */
  size_t max_queue;         /* bytes waiting to be written to the server
                               (default 1 MiB); a publish past it is dropped
                               and counted, never blocks the loop */
  size_t max_message;       /* largest payload taken from the server
                               (1 MiB); bigger ones are dropped and counted */
  unsigned backoff_min_ms;  /* reconnect: full jitter in [0, d), d starting  */
  unsigned backoff_max_ms;  /* at min (250) and growing x2 up to max (10000);
                               reset after a connection that worked */
  unsigned ping_ms;         /* health check: a PING every ping_ms (5000); no
                               reply within another ping_ms: reconnect. 0 off */
  int accept_foreign;       /* 0 (default): a payload without our envelope is
                               junk (dropped, counted); 1: delivered as a TEXT
                               message if valid UTF-8, else BINARY (lets other
                               services publish into topics) */
  /* Optional: called on the loop thread for each valid message from the
   * server before local delivery; return 0 to skip delivery. topic and
   * data are valid until it returns. */
  int (*on_message)(ws_nats *b, const char *topic, int op, const void *data,
                    size_t len, void *user);
  void (*on_state)(ws_nats *b, int up, void *user); /* link up / down */
  void *user;
  uint64_t origin;          /* 0 (default): a random origin per bridge.
                               Bridges given one value skip each other's
                               messages: give it to every bridge of a
                               process that reaches its own loops itself
                               (ws_loop_group_publish) and the server with
                               ws_nats_send() */
} ws_nats_config;

typedef struct ws_nats_stats {
  int connected;            /* 1 while the link is up */
  size_t connects;          /* links made (first + reconnects) */
  size_t failures;          /* attempts that failed, links lost */
  size_t topics;            /* subjects subscribed now (the live topics;
                               re-sent on each link) */
  size_t sent;              /* publishes handed to the server (queued on
                               the link) */
  size_t received;          /* valid messages from the server */
  size_t lost_down;         /* publishes not sent: link down (at-most-once) */
  size_t lost_full;         /* publishes not sent: over max_queue */
  size_t junk;              /* from the server, dropped: no envelope, bad
                               envelope, over max_message, invalid UTF-8 in a
                               TEXT message */
  /* NATS only (not in ws_redis_stats): */
  size_t lost_big;          /* publishes not sent: envelope over the
                               server's max_payload, or subject too long */
  size_t errors;            /* -ERR lines from the server */
  size_t queued;            /* bytes waiting to be written now */
} ws_nats_stats;

/* Fills *cfg with the defaults above (url and prefix "ws.": url NULL,
 * which ws_nats_open() refuses). */
void ws_nats_config_init(ws_nats_config *cfg);

/* Loop thread. Starts connecting in the background and returns: a server
 * that is down is not an error (the bridge retries). Sets
 * ws_loop_on_topic() (one bridge per loop). cfg is copied.
 *   WS_OK, WS_EINVAL (bad url, prefix or args), WS_ENOMEM */
int ws_nats_open(ws_nats **out, ws_loop *loop, const ws_nats_config *cfg);

/* Loop thread. Publishes to the server for every other node, written at
 * once (so that they start on it while this loop serves its own), then to
 * the topic's local subscribers (ws_loop_publish). Returns
 * ws_loop_publish()'s result (sent: local connections that took it); the
 * server side is best effort and counted in the stats. Nothing goes to the
 * server when the local publish fails with WS_EINVAL or WS_EUTF8. */
int ws_nats_publish(ws_nats *b, const char *topic, int op, const void *data,
                    size_t len, size_t *sent);

/* Loop thread. To the server only, for the other nodes: no local
 * delivery (the caller makes it, e.g. with ws_loop_group_publish()).
 *   WS_OK (queued), WS_EINVAL, WS_EUTF8 (TEXT not UTF-8), and, counted in
 *   the stats: WS_ECLOSED (link down: lost_down), WS_EFULL (over
 *   max_queue: lost_full), WS_ETOOBIG (over max_payload: lost_big) */
int ws_nats_send(ws_nats *b, const char *topic, int op, const void *data,
                 size_t len);

void ws_nats_stats_get(const ws_nats *b, ws_nats_stats *st);

/* The text of the last -ERR from the server ("" when none), NUL-terminated,
 * valid until the next call into the bridge. */
const char *ws_nats_last_error(const ws_nats *b);

/* Loop thread, before ws_loop_free(): removes the topic hook, closes the
 * link, frees everything, in any state. NULL is a no-op. Not from the
 * bridge's own callbacks (on_message, on_state). */
void ws_nats_close(ws_nats *b);

#ifdef __cplusplus
}
#endif

#endif
