/*
 * ws_redis.h - a bridge from a ws loop to Redis Pub/Sub, so a publish on
 * one server reaches the topic's subscribers on every server. An optional
 * add-on: vendor include/ws_redis.h and src/ws_redis.c beside ws.h and ws.c,
 * and link with hiredis 0.14 or later (-lhiredis; Debian libhiredis-dev).
 * It uses only the public API of ws.h; docs/bridges.md has the whole
 * picture.
 *
 * Conventions: as in ws.h. Every function MUST be called on the thread of
 * the loop the bridge was opened on; each loop (thread) of a process opens
 * its own bridge, which is one node: bridges share nothing and take no
 * lock.
 *
 * Mapping: one broker channel per topic with subscribers on this loop,
 * named prefix + topic. The bridge subscribes when the topic gets its first
 * local subscriber, unsubscribes when its last one leaves, and subscribes
 * every live topic again after a reconnect (ws_loop_on_topic()).
 *
 * Two connections: RESP2 lets a subscribed connection do nothing but
 * (UN)SUBSCRIBE and PING, so one connection subscribes and another
 * publishes, in order (FIFO). The link is up when both are.
 *
 * Envelope: what a bridge publishes is
 *   "WSB1" (4 bytes) | origin (8 bytes) | op (1 byte: 1 TEXT, 2 BINARY) |
 *   the message
 * where origin is random per bridge instance (/dev/urandom, or time, pid
 * and an address mixed when it cannot be read). A bridge drops what carries
 * its own origin: its local subscribers already had it from
 * ws_loop_publish(). So while the broker is up a publish reaches every
 * subscriber on every node once. A payload that is shorter, has another
 * magic or another op is junk (dropped and counted) unless accept_foreign
 * is set. The NATS bridge (ws_nats.h) uses the same envelope.
 *
 * Delivery is at most once: Redis Pub/Sub stores nothing, so what is
 * published while a node's link is down never reaches it, and what the
 * node publishes then is counted (lost_down) and not sent.
 *
 * Health check: every ping_ms the publishing connection PUBLISHes a probe
 * to a channel of the bridge's own that the subscribing connection
 * subscribes to (prefix + "\0health:" + the origin in hex: a NUL byte, so
 * no topic can name it); both must see it within another ping_ms, or both
 * connections are dropped and made again. So one probe proves both
 * connections and the broker in between; a stopped broker (SIGSTOP) is
 * found within 2 * ping_ms.
 *
 * SIGPIPE: hiredis writes with write(2), which raises SIGPIPE when the
 * broker has gone. ws_redis_open() sets SIGPIPE to SIG_IGN if it is at its
 * default (which would end the process); a handler of the application's
 * own is left alone.
 */
#ifndef WS_REDIS_H
#define WS_REDIS_H

#include "ws.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ws_redis ws_redis; /* opaque; ws_redis_open() allocates */

typedef struct ws_redis_config {
  /* "redis://[[user]:password@]host[:port][/db]", port 6379 by default.
   * host is a numeric IPv4 address, an IPv6 address in brackets, or a name
   * (resolved with getaddrinfo() at each connect, which may block the loop:
   * use numeric addresses where that matters). The password (and user, for
   * Redis 6 ACLs) may be %-encoded; they are sent with AUTH on each
   * connection. db is accepted and ignored: Pub/Sub channels are the same
   * in every database. Copied by ws_redis_open(). */
  const char *url;
  const char *prefix;       /* broker channel = prefix + topic ("ws:"); NULL
                               is ""; copied */
  size_t max_queue;         /* bytes handed to the publishing connection and
                               not yet acknowledged by the broker (1 MiB; 0:
                               the default): hiredis's output buffer, plus
                               what the kernel and the broker still hold. A
                               publish past it is not sent and is counted
                               (lost_full); the loop never waits */
  size_t max_message;       /* largest message taken from the broker (1 MiB;
                               0: the default), envelope not included;
                               bigger ones are junk */
  unsigned backoff_min_ms;  /* reconnect after a random delay in [1, d] ms,  */
  unsigned backoff_max_ms;  /* d starting at min (250) and doubling up to max
                               (10000); d starts again at min after a link
                               that came up. 0: the default */
  unsigned ping_ms;         /* health check every ping_ms (5000); no answer
                               within another ping_ms: reconnect. Also the
                               time a connect attempt has to come up (10 s
                               when ping_ms is 0). 0: no health check */
  int accept_foreign;       /* 0 (default): a payload without our envelope is
                               junk; 1: delivered as TEXT if it is valid
                               UTF-8, else as BINARY (lets other services
                               publish into topics) */
  /* Optional: called on the loop thread for each valid message from the
   * broker (another node's, or a foreign one when accepted), before local
   * delivery; return 0 to skip the delivery. topic and data are valid
   * until it returns. It may call ws_redis_publish() and any loop function
   * but ws_loop_subscribe()/ws_loop_unsubscribe(); it MUST NOT call
   * ws_redis_close(). */
  int (*on_message)(ws_redis *b, const char *topic, int op, const void *data,
                    size_t len, void *user);
  /* Optional: the link came up (1: both connections answer; the live
   * topics are subscribed) or went down (0). Same rules as on_message. */
  void (*on_state)(ws_redis *b, int up, void *user);
  void *user;
  uint64_t origin;          /* 0 (default): a random origin per bridge.
                               Bridges given one value skip each other's
                               messages: give it to every bridge of a
                               process that reaches its own loops itself
                               (ws_loop_group_publish) and the broker with
                               ws_redis_send() */
} ws_redis_config;

typedef struct ws_redis_stats {
  int connected;            /* 1 while the link is up */
  size_t connects;          /* links made (first + reconnects) */
  size_t failures;          /* attempts that failed, links lost */
  size_t topics;            /* broker channels subscribed now (as the broker
                               last confirmed; the health channel is not
                               counted) */
  size_t sent;              /* publishes handed to the broker; those in flight
                               when a link breaks may or may not arrive */
  size_t received;          /* valid messages from the broker */
  size_t lost_down;         /* publishes not sent: link down (at-most-once) */
  size_t lost_full;         /* publishes not sent: over max_queue */
  size_t junk;              /* from the broker, dropped: no envelope, bad
                               envelope, over max_message, invalid UTF-8 in a
                               TEXT message */
} ws_redis_stats;

/* Fills *cfg with the defaults above; url NULL (to be set). */
void ws_redis_config_init(ws_redis_config *cfg);

/*
 * Opens a bridge on loop l (loop thread). Starts connecting in the
 * background and returns: a broker that is down is not an error (the
 * bridge retries, with backoff). Sets ws_loop_on_topic() on l, which the
 * bridge owns from now on. cfg is copied. *out is the bridge.
 *   WS_OK
 *   WS_EINVAL  out, l or cfg NULL; url NULL or not as above
 *   WS_ENOMEM
 */
int ws_redis_open(ws_redis **out, ws_loop *l, const ws_redis_config *cfg);

/*
 * Publishes through the broker to every other node's subscribers, written
 * at once (so that they start on it while this loop serves its own), then
 * to the topic's local subscribers (ws_loop_publish()). The broker side is
 * best effort, counted in the stats (sent, lost_down, lost_full), and
 * never makes the loop wait. data is copied.
 *   ws_loop_publish()'s result: WS_OK (*sent, may be NULL: the local
 *   connections that took it), WS_EINVAL (also b NULL), WS_EUTF8 (neither
 *   side gets it), WS_ENOMEM (the broker side is still tried); or
 *   WS_ENOMEM when only the broker's copy could not be made (counted in
 *   lost_full, as a publish the bridge could not queue)
 */
int ws_redis_publish(ws_redis *b, const char *topic, int op, const void *data,
                     size_t len, size_t *sent);

/*
 * To the broker only, for the other nodes: no local delivery (the caller
 * makes it, e.g. with ws_loop_group_publish()). Loop thread.
 *   WS_OK (queued), WS_EINVAL, WS_EUTF8 (TEXT not UTF-8), and, counted in
 *   the stats: WS_ECLOSED (link down: lost_down), WS_EFULL (over
 *   max_queue: lost_full), WS_ENOMEM (lost_full)
 */
int ws_redis_send(ws_redis *b, const char *topic, int op, const void *data,
                  size_t len);

/* Copies the counters into *st. */
void ws_redis_stats_get(const ws_redis *b, ws_redis_stats *st);

/*
 * Loop thread, before ws_loop_free(): removes the topic hook, closes the
 * broker connections (in whatever state: up, connecting, waiting to retry),
 * frees everything. Not from on_message or on_state. NULL is a no-op.
 */
void ws_redis_close(ws_redis *b);

#ifdef __cplusplus
}
#endif

#endif /* WS_REDIS_H */
