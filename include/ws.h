/* SPDX-License-Identifier: MIT. Copyright (c) 2026 the ws authors; terms in LICENSE. */
/*
 * ws.h - an embeddable WebSocket (RFC 6455) library.
 *
 * Conventions
 * -----------
 * - Two files: this header and src/ws.c. `cc app.c ws.c` builds; nothing is
 *   to be generated (ws.c is itself joined from the parts in the project's
 *   src/ws/, and committed). Every public name starts with `ws_` or `WS_`; names with a
 *   double underscore (`ws__`) are private and may change at any time.
 * - Return values: functions returning `int` return WS_OK (0) or a negative
 *   WS_E* code (see WS_ERRNO_MAP). WS_EAGAIN is a status ("need more bytes",
 *   "would block"), not a failure. Counts travel in `size_t *` out-parameters.
 * - Pointers: a NULL pointer is only allowed where a function says so.
 *   Byte buffers are `const void *` + `size_t`; strings passed in are
 *   NUL-terminated unless a length travels with them. Strings handed out
 *   (into parsed requests, callbacks) are NOT NUL-terminated: each comes with
 *   its length.
 * - Memory: the library never allocates behind your back. `ws_conn` is owned
 *   by the caller (stack, static, or inside your own struct). Buffers are
 *   either fixed (ws_conn_set_buffers(): the connection never allocates) or
 *   grown through the realloc-style hook in ws_config, which carries a
 *   context pointer. Defining WS_NO_MALLOC removes the libc default;
 *   defining WS_FIXED_BUFFERS to 1 (with WS_NO_LOOP, without
 *   permessage-deflate) leaves growing out altogether: every connection
 *   then needs ws_conn_set_buffers(), the hook and the budget (.realloc,
 *   .charge) are not used, and a connection without buffers fails with
 *   WS_ENOMEM.
 * - Lifetimes: every pointer handed to a callback is valid until that
 *   callback returns, unless its documentation says otherwise.
 * - Threads: a ws_conn is driven by one thread at a time. Different
 *   connections may be driven by different threads with no locking. There
 *   is no global mutable state.
 * - Time: the core never reads a clock. Pass milliseconds from any monotonic
 *   source to ws_conn_tick().
 * - Network bytes never reach an assert. API misuse (for instance a NULL
 *   connection) may trip WS_ASSERT, which is assert() unless you define it.
 *   The asserted expression ends in a string naming the misuse
 *   (`c != NULL && "ws_send() called with a NULL connection"`), so the
 *   assert's output says what went wrong. Under WS_NO_OS the default is a
 *   trap instead (__builtin_trap() with gcc and clang: a HardFault on a
 *   Cortex-M), so that no printf or fprintf comes into a firmware link and
 *   no message strings into its flash; with NDEBUG, or another compiler,
 *   the checks compile to nothing there.
 * - Small builds: ws.c compiled with WS_SMALL defined to 1 (the default
 *   when compiling for size, -Os or -Oz, without an OS: WS_NO_OS, or a
 *   target that is neither Unix-like nor Windows; -DWS_SMALL=0 or 1 decides
 *   either way) takes the smaller form wherever there is a choice: masking
 *   and UTF-8 checking a byte at a time (no word-at-a-time or SIMD paths),
 *   ws_strerror() returning the error's name (as ws_errname()),
 *   WS_MAX_HEADERS 20 instead of 32, ws_conn_feed_inplace() copying
 *   like ws_conn_feed(), every send copied into the output queue (no
 *   zero-copy write through ws_callbacks.writev or from ws_send_encoded():
 *   the same bytes leave), and incoming frame and message lengths counted
 *   in size_t. Where size_t has 32 bits (a Cortex-M, i686), a frame, or a
 *   message, of more than SIZE_MAX bytes (4 GiB - 1) is refused when the
 *   header that would cross it is read, with WS_ETOOBIG and close code
 *   1009, as one over max_frame or max_message is: those limits are
 *   capped at SIZE_MAX there. ws_frame_parse() and ws_frame_write() still
 *   take any 63-bit length. Every other check on network bytes is the
 *   same: the small build passes the same conformance suites.
 *   docs/embedded.md has the figures.
 *
 * Overview
 * --------
 * Three layers, each built on the public API of the one below: the codec
 * (pure functions: frame headers, masking, UTF-8, close payloads, the HTTP
 * upgrade), the connection (ws_conn: one connection's state machine over
 * your read and write callbacks, with no clock and no socket of its own),
 * and the loop (ws_loop: sockets, timers, topics, the caller's other fds
 * (ws_watch), over epoll, kqueue or poll). TLS sits beside the connection
 * as a read/write pair. Choices that shape the API, and that differ from a
 * first sketch of it:
 * - ws_config and ws_callbacks are kept by pointer, never copied: one
 *   `static const` pair serves every connection (and may sit in flash), so
 *   it must outlive them all.
 * - Replies made while input is processed (pongs, echoes sent from
 *   on_message) are gathered in a buffer on the stack of that call and
 *   written in one write per read, before the next read; only what the
 *   transport does not take reaches a heap buffer.
 * - One ping is in flight at a time: the next is due one interval after
 *   the pong, so one deadline serves every timer (ws_conn_next_deadline()).
 * - on_close runs exactly once, at the end of the outermost library call,
 *   never inside another callback; one rule gives its code ("Close codes").
 *
 * (The project's docs/internals.md walks the code: bytes in to on_message,
 * and ws_send() to the transport.)
 */
#ifndef WS_H
#define WS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define WS_VERSION_MAJOR 0
#define WS_VERSION_MINOR 1
#define WS_VERSION_PATCH 0
#define WS_VERSION_NUM \
  ((WS_VERSION_MAJOR << 16) | (WS_VERSION_MINOR << 8) | WS_VERSION_PATCH)

/* The library's version as "MAJOR.MINOR.PATCH"; a static string. */
const char *ws_version(void);

/* ------------------------------------------------------------------------
 * Errors
 * ---------------------------------------------------------------------- */

/* One list yields the enum, ws_strerror() and ws_errname(). */
#define WS_ERRNO_MAP(X)                                                   \
  X(OK, 0, "success")                                                     \
  X(EAGAIN, -1, "need more data or would block")                          \
  X(EINVAL, -2, "invalid argument")                                       \
  X(ENOMEM, -3, "out of memory")                                          \
  X(EPROTO, -4, "protocol error")                                         \
  X(EUTF8, -5, "invalid UTF-8 in a text message or close reason")         \
  X(ETOOBIG, -6, "frame or message larger than the configured limit")     \
  X(EHANDSHAKE, -7, "invalid opening handshake")                          \
  X(EREFUSED, -8, "handshake refused")                                    \
  X(ECLOSED, -9, "connection closed")                                     \
  X(ESTATE, -10, "call not valid in this connection state")               \
  X(EFULL, -11, "output queue limit reached")                             \
  X(EIO, -12, "transport error")                                          \
  X(EEOF, -13, "transport closed by peer without a closing handshake")    \
  X(ETIMEDOUT, -14, "timed out")                                          \
  X(ERANDOM, -15, "random source failed or missing")                      \
  X(ENOSPC, -16, "output buffer too small")                               \
  X(EAPP, -17, "application callback returned an error")                 \
  X(EDATA, -18, "invalid compressed data")                               \
  X(ERESOLVE, -19, "host name not resolved")                              \
  X(EPROXY, -20, "HTTP proxy did not open the tunnel")                    \
  X(EUPGRADE, -21, "no 101 Switching Protocols (a proxy may have stripped Upgrade)") \
  X(EBUDGET, -22, "memory refused by the budget")                         \
  X(ESLOW, -23, "peer reads too slowly: output stalled")

enum ws_err {
#define WS__ERR_ENUM(name, val, text) WS_##name = (val),
  WS_ERRNO_MAP(WS__ERR_ENUM)
#undef WS__ERR_ENUM
  WS__ERR_LAST = -24
};

/* A static, human-readable description of an error code (never NULL). */
const char *ws_strerror(int err);
/* The error's name without the prefix, e.g. "EPROTO" (never NULL). */
const char *ws_errname(int err);

/* ------------------------------------------------------------------------
 * Protocol constants
 * ---------------------------------------------------------------------- */

enum ws_opcode {
  WS_OP_CONT = 0x0,
  WS_OP_TEXT = 0x1,
  WS_OP_BINARY = 0x2,
  WS_OP_CLOSE = 0x8,
  WS_OP_PING = 0x9,
  WS_OP_PONG = 0xA
};

enum ws_close_code {
  WS_CLOSE_NORMAL = 1000,
  WS_CLOSE_GOING_AWAY = 1001,
  WS_CLOSE_PROTOCOL = 1002,
  WS_CLOSE_UNSUPPORTED = 1003,
  WS_CLOSE_NO_STATUS = 1005,   /* never on the wire: close frame had no code */
  WS_CLOSE_ABNORMAL = 1006,    /* never on the wire: no close frame at all */
  WS_CLOSE_INVALID_DATA = 1007,
  WS_CLOSE_POLICY = 1008,
  WS_CLOSE_TOO_BIG = 1009,
  WS_CLOSE_EXTENSION = 1010,
  WS_CLOSE_INTERNAL = 1011,
  WS_CLOSE_TRY_AGAIN = 1013    /* "try again later": the server is loaded */
};

/* ------------------------------------------------------------------------
 * Layer 0: codec. Pure functions: no state, no allocation, no I/O.
 * ---------------------------------------------------------------------- */

/* Largest frame header: 2 + 8 (length) + 4 (mask key). */
#define WS_FRAME_HEADER_MAX 14
/* Largest control-frame payload (RFC 6455 section 5.5). */
#define WS_CONTROL_MAX 125

typedef struct ws_frame {
  uint64_t len;      /* payload length */
  uint8_t fin;       /* 1 on the last frame of a message */
  uint8_t rsv;       /* RSV1..RSV3 as bits 2..0 */
  uint8_t opcode;    /* WS_OP_* */
  uint8_t masked;    /* 1 if a mask key follows */
  uint8_t mask[4];   /* the key, valid when masked */
} ws_frame;

/*
 * Parses one frame header from buf[0..len).
 * On WS_OK, *f is filled and *hdr_len is the header size (2..14); the payload
 * starts at buf + *hdr_len. Checks the rules that hold for every frame:
 * reserved opcodes, control frames that are fragmented or longer than 125,
 * a 64-bit length with its top bit set, and lengths not in minimal form.
 * RSV bits and masking are reported, not judged: they depend on the role and
 * on extensions (the connection layer judges them).
 *   WS_OK      header complete and valid
 *   WS_EAGAIN  buf holds a valid prefix of a header; read more
 *   WS_EPROTO  the header can never be valid (close with 1002)
 *   WS_EINVAL  NULL argument
 */
int ws_frame_parse(const void *buf, size_t len, ws_frame *f, size_t *hdr_len);

/*
 * Writes a frame header into out (which must hold WS_FRAME_HEADER_MAX
 * bytes). mask may be NULL (unmasked, server to client) or point to a 4-byte
 * key (client to server; the caller masks the payload with ws_mask()).
 * Returns the header size, 2..14; 0 if opcode is not 0..15 or a control
 * frame breaks the rules (fin = 0 or len > 125).
 */
size_t ws_frame_write(void *out, int fin, int opcode, uint64_t len,
                      const uint8_t *mask);

/*
 * XORs buf[0..len) in place with the 4-byte key, starting at byte `offset`
 * of the payload (only offset % 4 matters), so a payload can be (un)masked
 * in pieces. Works on any alignment, a machine word at a time.
 */
void ws_mask(void *buf, size_t len, const uint8_t key[4], uint64_t offset);

/*
 * Incremental UTF-8 validation. Start with *state = 0 (WS_UTF8_INIT) and
 * feed chunks in order; the state carries partial sequences across chunks
 * and across message fragments. Rejects overlong forms, surrogates
 * (U+D800..U+DFFF), code points above U+10FFFF and stray bytes at the first
 * byte that can never begin a valid continuation.
 * If `final` is non-zero the chunk ends the message, and a truncated
 * sequence at its end is an error.
 *   WS_OK      valid so far (and complete, when final)
 *   WS_EUTF8   invalid; *bad_at (if not NULL) is the offset in this chunk of
 *              the first byte that made it so (len when a final chunk ends
 *              inside a sequence)
 * Long input is checked 64 bytes at a time with SSE2 (x86) or NEON
 * (AArch64) where the compiler targets them; defining WS_NO_SIMD when
 * compiling ws.c forces the portable C path (same results; `make cross`
 * tests both).
 */
#define WS_UTF8_INIT 0u
int ws_utf8_check(uint32_t *state, const void *buf, size_t len, int final,
                  size_t *bad_at);

/*
 * Parses and checks a close frame's payload. A zero-length payload gives
 * *code = 1005 (no status) and an empty reason. reason points into buf.
 *   WS_OK      valid
 *   WS_EPROTO  1-byte payload, longer than 125 bytes, or a code that may not
 *              appear on the wire (close with 1002)
 *   WS_EUTF8   the reason is not valid UTF-8 (close with 1007)
 */
int ws_close_parse(const void *buf, size_t len, uint16_t *code,
                   const char **reason, size_t *reason_len);

/* 1 if `code` may be sent in a close frame (1000-1003, 1007-1014,
 * 3000-4999), else 0. */
int ws_close_code_valid(unsigned code);

/*
 * Computes Sec-WebSocket-Accept for a Sec-WebSocket-Key: base64 of
 * SHA-1(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"). Writes 28 characters
 * and a NUL into out (29 bytes).
 *   WS_OK, or WS_EINVAL when key_len is over 64 bytes.
 */
#define WS_ACCEPT_LEN 28
int ws_accept_key(const char *key, size_t key_len, char out[29]);

/* One HTTP header, pointing into the parsed buffer (not NUL-terminated). */
typedef struct ws_header {
  const char *name;
  size_t name_len;
  const char *value;
  size_t value_len;
} ws_header;

/* A parsed opening handshake request (server side). Every pointer points
 * into the buffer given to ws_request_parse(). */
typedef struct ws_request {
  const char *method;   size_t method_len;
  const char *path;     size_t path_len;     /* request target, e.g. "/chat?x=1" */
  const char *host;     size_t host_len;
  const char *origin;   size_t origin_len;   /* NULL if absent */
  const char *key;      size_t key_len;      /* Sec-WebSocket-Key */
  ws_header *headers;   size_t num_headers;  /* every header, in order */
  int minor_version;    /* HTTP/1.x */
  int upgrade;          /* 1 if it asked for a WebSocket upgrade at all */
} ws_request;

/*
 * Parses an opening handshake request from buf[0..len). `headers` is
 * caller storage for up to `max_headers` entries. On WS_OK, *consumed is the
 * length of the request head including the blank line; bytes after it are
 * not part of the handshake.
 * *status (not NULL) is set to 101 on success, else the HTTP status the
 * server should answer with: 400 (malformed, or a required header missing
 * or wrong), 426 (unsupported Sec-WebSocket-Version; answer with
 * ws_http_error_write(), which adds "Sec-WebSocket-Version: 13") or 431 (more
 * than max_headers headers). When the HTTP syntax was valid (status 400/426
 * for WebSocket reasons), *req is filled, so a plain HTTP GET (req->upgrade
 * == 0) can be served by the application.
 *   WS_OK         a valid WebSocket upgrade request
 *   WS_EAGAIN     incomplete so far; call again with more bytes
 *   WS_EHANDSHAKE invalid: see *status
 */
int ws_request_parse(const void *buf, size_t len, ws_request *req,
                     ws_header *headers, size_t max_headers, size_t *consumed,
                     int *status);

/* Number of subprotocols the request offers (Sec-WebSocket-Protocol, comma
 * lists over any number of header lines). */
size_t ws_request_protocol_count(const ws_request *req);
/* The i-th offered subprotocol; WS_OK, or WS_EINVAL when i is out of range. */
int ws_request_protocol(const ws_request *req, size_t i, const char **name,
                        size_t *name_len);
/* Finds a header by name (case-insensitive); the first one, or NULL. */
const ws_header *ws_request_header(const ws_request *req, const char *name);

/*
 * Writes a "101 Switching Protocols" response for the request's key into
 * out[0..cap). `protocol` (NULL for none) is the chosen subprotocol; extra
 * headers (may be NULL when n_extra is 0) are added as given. Names must be
 * HTTP tokens and no value may contain CR, LF or NUL.
 *   WS_OK      *out_len is the response length
 *   WS_EINVAL  bad key, protocol or header
 *   WS_ENOSPC  cap too small
 */
int ws_response_write(void *out, size_t cap, const char *key, size_t key_len,
                      const char *protocol, const ws_header *extra,
                      size_t n_extra, size_t *out_len);

/* Writes a minimal error response ("HTTP/1.1 <status> <reason>", with
 * Connection: close and Content-Length: 0; 426 adds Sec-WebSocket-Version:
 * 13). WS_OK, WS_EINVAL (status not 400..599) or WS_ENOSPC. */
int ws_http_error_write(void *out, size_t cap, int status, size_t *out_len);

/* What a client sends. */
typedef struct ws_client_opts {
  const char *host;        /* Host header value, e.g. "example.com:8080" */
  const char *path;        /* request target; NULL means "/" */
  const char *origin;      /* NULL: no Origin header */
  const char *protocols;   /* offered subprotocols, "a, b"; NULL: none */
  const ws_header *headers;  /* extra headers (NULL when num_headers is 0) */
  size_t num_headers;
  /* 1: offer permessage-deflate (ws_conn only: ws_client_request_write()
   * ignores it), with the parameters of the connection's cfg.deflate
   * ("Compression" below); 0 (default): no offer. */
  int deflate;
  /* ws_loop_connect() only (ignored elsewhere): the HTTP proxy to tunnel
   * through with CONNECT, "http://[user[:password]@]host[:port]" (no
   * scheme: http://; port 1080 when none, as curl; user and password
   * percent-decoded, sent as Basic). NULL (default): from the
   * environment, as curl reads it ("Proxies" at ws_loop_connect()). "":
   * no proxy, whatever the environment says. */
  const char *proxy;
} ws_client_opts;

/*
 * Writes a client opening handshake with the 16-byte nonce (its base64 is
 * the Sec-WebSocket-Key) into out[0..cap).
 *   WS_OK      *out_len is the request length
 *   WS_EINVAL  missing host, CR/LF/NUL in a field, or a bad header name
 *   WS_ENOSPC  cap too small
 */
int ws_client_request_write(void *out, size_t cap, const ws_client_opts *o,
                            const uint8_t nonce[16], size_t *out_len);

/* A parsed handshake response (client side); pointers into the buffer. */
typedef struct ws_response {
  int status;
  const char *protocol; size_t protocol_len;  /* NULL if none chosen */
  ws_header *headers;   size_t num_headers;
} ws_response;

/*
 * Parses and checks the server's response to a request sent with `nonce`
 * and offering `protocols` (the same comma list as ws_client_opts.protocols,
 * or NULL). Checks status 101, Upgrade and Connection tokens, the
 * Sec-WebSocket-Accept value, that no extension was chosen (a request
 * written by ws_client_request_write() offers none; a ws_conn that offered
 * permessage-deflate checks the server's choice itself), and that a chosen
 * subprotocol was offered.
 *   WS_OK         valid; *consumed is the head length
 *   WS_EAGAIN     incomplete
 *   WS_EHANDSHAKE not a valid acceptance (resp->status says what came back)
 */
int ws_response_parse(const void *buf, size_t len, const uint8_t nonce[16],
                      const char *protocols, size_t protocols_len,
                      ws_response *resp, ws_header *headers,
                      size_t max_headers, size_t *consumed);

/* ------------------------------------------------------------------------
 * Layer 1: one connection (server or client) over caller callbacks.
 *
 * Started. A connection is started by ws_client_start() (client) or by the
 * first ws_conn_on_readable(), ws_conn_on_writable(), ws_conn_feed(),
 * ws_conn_feed_inplace() or ws_conn_tick() call on it (server); from then
 * on on_close is owed and runs exactly once, and before it ws_conn_abort()
 * returns WS_ESTATE and ws_conn_free() runs no callback.
 *
 * Close codes. Whatever ends a connection (the closing handshake, end of
 * stream, a timeout, a transport or protocol error, ws_conn_abort(),
 * ws_conn_free()), on_close gets:
 * - the code and reason of the peer's close frame, if it arrived (1005 and
 *   no reason if it had no code);
 * - otherwise the code of the close frame this side sent (ws_close(), or a
 *   failure such as 1002 for a protocol error; 1005 if it had no code) and
 *   ws_strerror(ws_conn_error(c)) as the reason;
 * - otherwise 1006 and ws_strerror(ws_conn_error(c)).
 * ws_conn_error() tells what ended it (WS_OK after a clean handshake).
 *
 * Socket modes. Every entry point works over a non-blocking transport
 * (read and write return WS_EAGAIN rather than wait). Over a blocking one:
 * - ws_conn_on_readable() reads until the read callback returns WS_EAGAIN,
 *   which a blocking read never does: it returns only when the connection
 *   ends, so the application acts from callbacks (a client sends its next
 *   message from on_message), and no timer runs unless the read gives up
 *   after a while (SO_RCVTIMEO) and returns WS_EAGAIN, letting the caller
 *   call ws_conn_tick(). What each read's bytes produce (pongs, the close
 *   echo, sends made from callbacks) is written before the next read.
 * - ws_conn_feed() and ws_conn_feed_inplace() work in either mode: the
 *   caller reads; what the bytes produce is written before they return.
 * - ws_conn_on_writable(), ws_conn_tick(), ws_client_start(), ws_send()
 *   and the other sends work in either mode: they write at once what the
 *   transport takes (a blocking write waits until it takes it all). A send
 *   made from a callback while input is processed is written with the
 *   other replies, once that input's processing ends.
 * ---------------------------------------------------------------------- */

typedef struct ws_conn ws_conn;

enum ws_role { WS_SERVER = 0, WS_CLIENT = 1 };

enum ws_state {
  WS_STATE_INIT = 0,        /* initialised; client: before ws_client_start */
  WS_STATE_CONNECTING = 1,  /* opening handshake in progress */
  WS_STATE_OPEN = 2,
  WS_STATE_CLOSING = 3,     /* a close frame was sent or received */
  WS_STATE_CLOSED = 4       /* done: close the transport */
};

/* What the server's handshake callback may add to the 101 response. */
typedef struct ws_accept {
  const char *protocol;       /* chosen subprotocol (one that was offered) */
  const ws_header *headers;   /* extra response headers */
  size_t num_headers;
} ws_accept;

/* A piece of output for ws_callbacks.writev. */
typedef struct ws_iovec {
  const void *base;
  size_t len;
} ws_iovec;

/* Sends from this size up go out without a copy where the transport has a
 * writev (ws_callbacks.writev). */
#ifndef WS_DIRECT_MIN
#define WS_DIRECT_MIN 16384
#endif

typedef struct ws_callbacks {
  /* Transport. read: store up to cap bytes in buf and set *n. Return WS_OK
   * with *n > 0 for data, WS_OK with *n == 0 for end of stream, WS_EAGAIN
   * when nothing is available now, anything else for an error. */
  int (*read)(ws_conn *c, void *buf, size_t cap, size_t *n, void *user);
  /* write: take up to len bytes, set *n (0..len). WS_OK (a short count is
   * normal), WS_EAGAIN (nothing taken), anything else for an error. */
  int (*write)(ws_conn *c, const void *buf, size_t len, size_t *n,
               void *user);
  /* Fill buf with n unpredictable bytes (mask keys, the client nonce).
   * NULL: the OS source (getrandom/arc4random/urandom; rand_s on Windows)
   * where there is one. */
  int (*random)(ws_conn *c, void *buf, size_t n, void *user);

  /* Server: decide on an upgrade request. Return 0 to accept (optionally
   * filling *acc; its pointers must stay valid until the ws_conn_* call that
   * invoked this callback returns), or an HTTP status 400..599 to refuse.
   * NULL: accept everything, choosing no subprotocol. */
  int (*on_handshake)(ws_conn *c, const ws_request *req, ws_accept *acc,
                      void *user);
  /* The connection is open. protocol is the negotiated subprotocol (NULL
   * and 0 when none). */
  void (*on_open)(ws_conn *c, const char *protocol, size_t protocol_len,
                  void *user);
  /* A message (or, with ws_config.stream set, a piece of one). op is
   * WS_OP_TEXT or WS_OP_BINARY for every piece; fin is 1 on the last. Text
   * has been checked for UTF-8 up to here (a streamed piece may end inside
   * a code point). Return 0, or a negative value to fail the connection
   * with 1011. */
  int (*on_message)(ws_conn *c, int op, const void *data, size_t len,
                    int fin, void *user);
  /* A ping arrived (the pong reply is automatic) / a pong arrived. */
  void (*on_ping)(ws_conn *c, const void *data, size_t len, void *user);
  void (*on_pong)(ws_conn *c, const void *data, size_t len, void *user);
  /* Server: a well-formed HTTP request that is not a WebSocket upgrade (a
   * browser asking for a page). Answer it with ws_http_respond() and return
   * 0, or return an HTTP status 400..599 to refuse. NULL: 400 for all. The
   * connection ends once the response is written. */
  int (*on_http)(ws_conn *c, const ws_request *req, void *user);
  /* Called exactly once per started connection (see "Started" above),
   * when it reaches CLOSED, never from inside another callback. code and
   * reason follow the close-code rule above. This is the last use of c by
   * the library: the callback may call ws_conn_free(c) and release the
   * memory holding c. */
  void (*on_close)(ws_conn *c, int code, const char *reason, size_t len,
                   void *user);
  /* Optional, server: write the n pieces in order, as one write (writev,
   * sendmsg), setting *written (0..total) as write does. With it, a large
   * send (WS_DIRECT_MIN bytes or more) leaves from the caller's buffer,
   * after what is queued, without being copied; only what the transport
   * does not take is queued. NULL (or a WS_SMALL build, which never calls
   * it): every send is copied into the queue. */
  int (*writev)(ws_conn *c, const ws_iovec *iov, int n, size_t *written,
                void *user);
} ws_callbacks;

/*
 * Compression: permessage-deflate (RFC 7692), in builds with
 * WS_ENABLE_ZLIB (link -lz; the Makefile turns it on when zlib's header is
 * installed, make WS_ZLIB=0 turns it off). ws_deflate_available() says
 * whether this build has it; without it no offer is made or accepted and
 * these settings are ignored. docs/deflate.md has the memory per setting.
 *
 * Negotiation. A server with `enable` set takes the first acceptable
 * permessage-deflate offer of the request, in order; an offer with an
 * unknown, malformed or repeated parameter is declined (the next one is
 * tried; none accepted: no compression). A client offers when
 * ws_client_opts.deflate is 1: one offer with client_max_window_bits
 * (bare when window_bits is 15), and the other three parameters as set
 * below. A response that names another extension, more than one, a bad
 * or repeated parameter, or parameters the offer does not allow fails the
 * connection with 1010 (on_open is not called; on_close gets 1010, and
 * ws_conn_error() WS_EHANDSHAKE). No compression is negotiated on a
 * connection with fixed buffers (ws_conn_set_buffers(): zlib allocates),
 * nor without an allocator (WS_NO_MALLOC and no cfg.realloc).
 *
 * The fields speak of "our" compressor (what this side sends) and the
 * peer's (what it receives), whatever the role:
 * - no_context_takeover: 1: our compressor starts afresh for each message
 *   (server_no_context_takeover from a server, client_no_context_takeover
 *   from a client). It then exists only while a message is compressed.
 *   The peer may also ask for it; then it holds as if set.
 * - peer_no_context_takeover: 1: ask the peer to start afresh for each
 *   message (the other parameter). Then our decompressor exists only
 *   while a message arrives. A server may impose it; a client asks, and
 *   fails with 1010 when the server does not agree.
 * - window_bits (9..15): our compressor's LZ77 window, 2^bits bytes; the
 *   peer may ask for a smaller one. When 8 is agreed (zlib's raw deflate
 *   has no 8-bit window), this side sends every message uncompressed,
 *   which the extension allows.
 * - peer_window_bits (8..15): the largest window the peer is asked to
 *   use (server: client_max_window_bits in the response, when the offer
 *   allows it; client: server_max_window_bits in the offer, 15: not
 *   sent, the client's default, as a server that ignores the request
 *   leaves the client no choice but 1010). Our decompressor's window
 *   follows what is agreed (at least 9).
 * - mem_level (1..9): zlib's memLevel for our compressor: its hash
 *   table takes 2^(mem_level + 9) bytes, besides 2^(window_bits + 2).
 * - threshold: messages shorter than this go out uncompressed.
 *
 * Frames. A compressed message has RSV1 on its first frame; control frames
 * are never compressed. ws_send() compresses a message of threshold bytes
 * or more (the whole message, then splits it by frame_size); fragments
 * sent with ws_send_fragment() go uncompressed. ws_loop_publish() (and a
 * group publish, on each loop) compresses a message of threshold bytes or
 * more (the server config's) once for every subscriber whose compressor
 * keeps no context, with the smallest window among them
 * (ws_deflate_encode()); subscribers with context takeover compress it
 * with their own compressor (ws_send()), the others get it plain.
 * Received compressed messages may be fragmented, and may alternate with
 * uncompressed ones.
 * Inflated bytes count against max_frame (per frame) and max_message
 * while they are inflated, piece by piece: a message that inflates past
 * either fails with 1009 at that point, before the rest is inflated (a
 * "bomb" costs at most the limit). A corrupt stream fails with 1007
 * (WS_EDATA); RSV1 on a control or continuation frame, or without the
 * extension, with 1002. With cfg.stream, inflated pieces are delivered as
 * they come. A final DEFLATE block (BFINAL) inside a message ends what is
 * inflated of it (the rest of its payload is ignored) and starts our
 * decompressor afresh, so with context takeover a later message that
 * refers back past it fails with 1007 (zlib with a sync flush, as every
 * common peer uses, never sends one).
 * Memory: zlib's allocations go through cfg.realloc. A failed one while
 * receiving fails the connection with 1011 (WS_ENOMEM); while sending,
 * ws_send() returns WS_ENOMEM and the connection goes on.
 */
typedef struct ws_deflate_config {
  int enable;                   /* server: accept offers (default 0) */
  int no_context_takeover;      /* default 0 */
  int peer_no_context_takeover; /* default 0 */
  uint8_t window_bits;          /* default WS_DEFLATE_WINDOW_BITS */
  uint8_t peer_window_bits;     /* default WS_DEFLATE_PEER_WINDOW_BITS
                                   (server), 15 (client) */
  uint8_t mem_level;            /* default WS_DEFLATE_MEM_LEVEL */
  size_t threshold;             /* default WS_DEFLATE_THRESHOLD */
} ws_deflate_config;

/* The defaults, chosen by measurement on JSON chat messages (docs/deflate.md):
 * a 13-bit window and memLevel 3 keep 92% of zlib's default compression
 * ratio at 58 KB per connection with context takeover, where zlib's
 * defaults (15 bits, memLevel 8) take 308 KB. */
#ifndef WS_DEFLATE_WINDOW_BITS
#define WS_DEFLATE_WINDOW_BITS 13
#endif
#ifndef WS_DEFLATE_PEER_WINDOW_BITS
#define WS_DEFLATE_PEER_WINDOW_BITS 13
#endif
#ifndef WS_DEFLATE_MEM_LEVEL
#define WS_DEFLATE_MEM_LEVEL 3
#endif
#ifndef WS_DEFLATE_THRESHOLD
#define WS_DEFLATE_THRESHOLD 64
#endif

/* 1 if this build has permessage-deflate (WS_ENABLE_ZLIB), else 0. */
int ws_deflate_available(void);

typedef struct ws_config {
  int role;                     /* WS_SERVER or WS_CLIENT */
  size_t max_handshake;         /* request/response head bytes (8 KiB) */
  size_t max_headers;           /* header lines (32, at most WS_MAX_HEADERS;
                                   20 in a WS_SMALL build) */
  uint64_t max_frame;           /* incoming frame payload (16 MiB) */
  uint64_t max_message;         /* incoming message (16 MiB). Both are at
                                   most SIZE_MAX in a WS_SMALL build where
                                   size_t has 32 bits: see Small builds */
  size_t max_queued;            /* queued output bytes (16 MiB + 1 KiB);
                                   also the largest send: see ws_send() */
  size_t frame_size;            /* sends above this are split; 0: never */
  int stream;                   /* 1: deliver messages piece by piece */
  uint32_t handshake_timeout_ms;  /* 10000; 0: none */
  uint32_t close_timeout_ms;      /* 5000; 0: none */
  uint32_t ping_interval_ms;      /* a ping this long after the open and
                                     after each pong; 0: no pings */
  uint32_t pong_timeout_ms;       /* 10000: a pong must answer a ping by
                                     then (one ping in flight at a time) */
  /* Allocator: like realloc(ptr, size), with memory aligned as malloc's
   * (buffers start with 64-bit counters); size 0 frees and returns NULL.
   * NULL: libc realloc/free (none under WS_NO_MALLOC: then use fixed
   * buffers). */
  void *(*realloc)(void *ptr, size_t size, void *ctx);
  void *alloc_ctx;
  /* Memory budget (NULL: none; see "Memory budget" below). Called with
   * bytes > 0 before the connection takes that much more memory of a kind
   * (WS_MEM_*), and with bytes < 0 before it gives memory back (the
   * result is then ignored). Return 0 to allow, or a close code to refuse:
   * the connection then fails at once with that code. ctx is alloc_ctx. */
  int (*charge)(ws_conn *c, int kind, ptrdiff_t bytes, void *ctx);
  /* Slow readers: output queued over slow_reader_bytes (64 KiB) that has
   * not drained below it for slow_reader_ms (10000) fails the connection
   * with 1008 and WS_ESLOW. 0 in either: off. Needs ws_conn_tick(). */
  size_t slow_reader_bytes;
  uint32_t slow_reader_ms;
  ws_deflate_config deflate;    /* permessage-deflate: off by default */
} ws_config;

/* Fills *cfg with safe defaults for the role. */
void ws_config_init(ws_config *cfg, int role);

/*
 * Memory budget. Every limit above is per connection; a budget caps what
 * many connections hold together (the loop keeps one: ws_loop_config's
 * mem_budget). The core asks ws_config.charge before each allocation it
 * makes for a connection, by kind:
 *   WS_MEM_INPUT    the input buffer (a request head, a message being put
 *                   together) and, with compression, the inflated message
 *   WS_MEM_OUTPUT   the output queue (pongs and the close frame included)
 *   WS_MEM_DEFLATE  compression state (zlib's streams, by their documented
 *                   sizes, and the connection's share of bookkeeping)
 *   WS_MEM_TLS      not used by the core: the loop counts a TLS session so
 * and tells it, with a negative count, before giving memory back. The
 * bytes are what the connection takes, headers included; ws_conn_memory()
 * returns the running total the hook has been told (inside the hook: the
 * total before this change, except when the hook is given back a charge
 * whose allocation then failed: the connection never held those bytes,
 * and the total already leaves them out). Fixed buffers (ws_conn_set_buffers()) and the
 * batch's stack buffer are never counted; a compressed send's scratch
 * buffer, released before ws_send() returns, is not either.
 *
 * A refusal (the hook returns a close code, e.g. 1009 or 1013) fails the
 * connection at once: it reaches CLOSED with that code and WS_EBUDGET, and
 * a close frame with the code is written straight to the transport when
 * no output was queued before it (a peer that is not reading would never
 * get one from behind its queue). The call that asked gets an error
 * (ws_send(): WS_EBUDGET, then WS_ECLOSED as for any closed connection).
 *
 * A shared budget for a host loop: keep a counter in alloc_ctx, add bytes
 * in the hook, refuse when the counter would pass the budget (the loop's
 * refinement: refuse only connections over their fair share), and read
 * ws_conn_memory() to find the largest holders.
 */
enum ws_mem_kind {
  WS_MEM_INPUT = 0,
  WS_MEM_OUTPUT = 1,
  WS_MEM_DEFLATE = 2,
  WS_MEM_TLS = 3
};
/* Bytes the connection holds now, as counted for the hook (0 when idle
 * with no buffers: the usual state of an idle connection). */
size_t ws_conn_memory(const ws_conn *c);

/*
 * Compresses a whole message afresh (no context) into one complete,
 * unmasked frame with RSV1: the way to compress a broadcast once for every
 * connection whose ws_conn_deflate_fresh() is window_bits or more, and
 * queue the same bytes to each with ws_send_encoded() (ws_loop_publish()
 * does). The frame comes from cfg's allocator (cfg.realloc, or libc), with
 * zlib's memLevel from cfg->deflate.mem_level; release it with
 * ws_deflate_free() and the same cfg. Text is not checked for UTF-8.
 *   WS_OK      *frame and *frame_len
 *   WS_EINVAL  NULL argument, op not TEXT or BINARY, window_bits outside
 *              9..15, or no zlib in this build (or no allocator)
 *   WS_ENOMEM
 */
int ws_deflate_encode(const ws_config *cfg, int op, const void *data,
                      size_t len, int window_bits, void **frame,
                      size_t *frame_len);
/* Releases a frame from ws_deflate_encode() (NULL is fine). */
void ws_deflate_free(const ws_config *cfg, void *frame);

/* The connection object. Its size is public so it can live anywhere; its
 * fields are private. */
/* Bytes of each buffer given to ws_conn_set_buffers() that the connection
 * keeps for its own bookkeeping. */
#define WS_BUFFER_OVERHEAD (5 * sizeof(size_t) + 44)

struct ws__ibuf;  /* input: a header and the bytes, allocated while used */
struct ws__obuf;  /* output queue: the same */
struct ws__conn_priv {
  /* The small fields first: a 32-bit target reaches the first bytes with
   * shorter instructions (Thumb: bytes at offsets up to 31). */
  uint8_t state, role, close_len, send_op, depth;
  uint16_t http_status;            /* client: the upgrade reply's status */
  uint16_t close_code, pmd;        /* pmd: what deflate agreed, or offered */
  uint32_t utf8_out, flags;
  int err;
  const ws_config *cfg;
  const ws_callbacks *cb;
  void *user;
  struct ws__ibuf *in;
  struct ws__obuf *out;
  void *z;                         /* compression streams while they live */
  uint64_t t;                      /* the running timer (the state says which) */
};

struct ws_conn {
  struct ws__conn_priv ws__p;
};

/*
 * Initialises c to use *cfg and *cb, which are NOT copied: both must stay
 * valid and unchanged until the connection is freed (one pair can serve any
 * number of connections, and a `static const` pair costs no RAM). user is
 * passed to every callback. cb may be NULL only if the caller will use
 * ws_conn_feed() and never expects callbacks.
 *   WS_OK, or WS_EINVAL for a NULL c/cfg, a bad role or max_handshake
 *   outside 64..65535.
 */
int ws_conn_init(ws_conn *c, const ws_config *cfg, const ws_callbacks *cb,
                 void *user);

/*
 * Gives the connection fixed buffers (before any I/O): it then never
 * allocates. Each buffer starts with WS_BUFFER_OVERHEAD bytes of the
 * connection's bookkeeping (any alignment is fine). `in` holds incoming
 * bytes and, unless streaming, one whole message: messages larger than
 * in_cap - WS_BUFFER_OVERHEAD - 256 are refused with 1009 (or streamed
 * with cfg.stream). `out` holds queued output; a send larger than
 * out_cap - WS_BUFFER_OVERHEAD returns WS_ETOOBIG, one that does not fit
 * beside what is queued WS_EFULL. Both must be at least 512 + WS_BUFFER_OVERHEAD bytes
 * and outlive the connection.
 *   WS_OK, WS_EINVAL (too small, NULL), WS_ESTATE (I/O already happened)
 */
int ws_conn_set_buffers(ws_conn *c, void *in, size_t in_cap, void *out,
                        size_t out_cap);

/*
 * Client: queues the opening handshake and flushes what the transport takes.
 * The options' strings need only live until this call returns.
 *   WS_OK, WS_ESTATE (not a client in INIT), WS_EINVAL, WS_ERANDOM,
 *   WS_ENOMEM, WS_EFULL, WS_EBUDGET (the charge hook refused: the
 *   connection is CLOSED without having started, so no on_close)
 */
int ws_client_start(ws_conn *c, const ws_client_opts *o);

/*
 * Reads through the read callback until it returns WS_EAGAIN, end of
 * stream or an error, processing everything read; what a read's bytes
 * produce is written before the next read (see "Socket modes" above).
 * Does not read while the output queue is over half of max_queued
 * (ws_conn_want_read() says so).
 *   WS_OK      processed; the connection is still live
 *   WS_ECLOSED the connection reached CLOSED (on_close has run; c may be
 *              freed memory now: do not touch it unless you know it is not)
 *   another    the sticky error that failed the connection; a close frame may
 *              still be queued: keep flushing until CLOSED
 */
int ws_conn_on_readable(ws_conn *c);

/*
 * Processes bytes the caller already read (push mode; also the bytes a host
 * server read before handing the socket over). Copies what it needs. What
 * they produce is written before it returns.
 * data NULL with len 0 is the end of the stream, as a read of 0 bytes: the
 * peer closed its side. The connection reaches CLOSED at once (a client
 * whose closing handshake is complete, with the close frame's code; in the
 * middle of a message or of the handshake, 1006: see "Close codes").
 * len 0 with data not NULL processes nothing.
 * Returns as ws_conn_on_readable(): WS_ECLOSED after an end of stream.
 */
int ws_conn_feed(ws_conn *c, const void *data, size_t len);

/*
 * Like ws_conn_feed(), for bytes in a buffer the caller lets the connection
 * modify until the call returns (a loop's one receive buffer shared by all
 * its sockets): whole frames are unmasked and delivered where they lie, with
 * no copy and no allocation, while the connection holds no input; only what
 * cannot be finished yet (a frame still arriving, a fragmented message) is
 * copied in. data NULL with len 0 is the end of the stream and len 0 with
 * data not NULL processes nothing, as for ws_conn_feed(). Returns as
 * ws_conn_on_readable(). In a WS_SMALL build it works as ws_conn_feed():
 * every byte is copied in, so a message must fit the input buffer.
 */
int ws_conn_feed_inplace(ws_conn *c, void *data, size_t len);

/* Input the connection holds: bytes of an unfinished frame, message or
 * handshake (1 or more while a frame or message is in progress, even with
 * no bytes held); 0 when it holds none, and ws_conn_feed_inplace() can
 * work in place. */
size_t ws_conn_buffered(const ws_conn *c);

/* Flushes queued output through the write callback. Returns as
 * ws_conn_on_readable(). */
int ws_conn_on_writable(ws_conn *c);

/* Tells the connection the time (ms, any monotonic origin) and runs the
 * handshake, close, ping and pong timers. Returns as ws_conn_on_readable().
 * Required: the core has no clock of its own, so a connection that is
 * never ticked fails silently: its handshake never times out, it sends no
 * ping (whatever ping_interval_ms says) and never notices a dead peer,
 * and after ws_close() to a peer that does not answer it stays CLOSING
 * forever. The loop ticks its own connections; a host loop MUST call this
 * by ws_conn_next_deadline().
 */
int ws_conn_tick(ws_conn *c, uint64_t now_ms);

/* The time at which ws_conn_tick() should next be called; UINT64_MAX when
 * no timer runs. A value at or before now (0 included) means: call it now.
 * A host loop MUST wake by then (a poll() timeout, a timer) and tick: a
 * tick that does not come is not detected (see ws_conn_tick()). A timer
 * counts from the first tick after it is set, so once one is set (the
 * handshake's start and end, ws_close(), the peer's close) this returns 0
 * until the next tick. The deadline can move after any call on the
 * connection: read it again after each. */
uint64_t ws_conn_next_deadline(const ws_conn *c);

/* 1 if output is queued (wait for writability), else 0. */
int ws_conn_want_write(const ws_conn *c);
/* 1 if the connection wants input now: not closed, and less than half of
 * max_queued waiting to be written (backpressure: a peer that does not
 * read is not read from). */
int ws_conn_want_read(const ws_conn *c);
/* Bytes of output queued. */
size_t ws_conn_queued(const ws_conn *c);
/* WS_STATE_*. */
int ws_conn_state(const ws_conn *c);
/* WS_SERVER or WS_CLIENT. */
int ws_conn_role(const ws_conn *c);
/* The sticky error, WS_OK while none. */
int ws_conn_error(const ws_conn *c);

/* Client: the HTTP status of the server's reply to the upgrade: 101 once
 * open, the refusal's status when it answered otherwise (a 503, a 404),
 * 0 before a reply or for a server connection. A complete reply with any
 * status but 101 fails the connection with WS_EUPGRADE (1006): the server
 * refused, or a proxy on the way dropped the Upgrade header and the server
 * answered a plain GET (a 200 page, a 400, a 426); this status says which
 * came back. A 101 that is not a valid acceptance is WS_EHANDSHAKE. */
int ws_conn_http_status(const ws_conn *c);
/* The user pointer given to ws_conn_init(). */
void *ws_conn_user(const ws_conn *c);

/* 1 if permessage-deflate was agreed on this connection, else 0. */
int ws_conn_deflate(const ws_conn *c);

/* The window bits (9..15) this side may compress with when deflate was
 * agreed and its compressor keeps no context (each message compressed
 * afresh): then a frame from ws_deflate_encode() with that many window bits
 * or fewer may be sent to it with ws_send_encoded(). 0 otherwise (no
 * deflate, context takeover, or an 8-bit window). */
int ws_conn_deflate_fresh(const ws_conn *c);

/* Replaces the user pointer passed to callbacks. */
void ws_conn_set_user(ws_conn *c, void *user);

/* Holds queued output until uncorked (1: cork, 0: uncork and flush), so
 * many sends leave in one write. Returns WS_OK or the flush's result. */
int ws_conn_cork(ws_conn *c, int on);

/*
 * Sends a whole message (op WS_OP_TEXT or WS_OP_BINARY); split into frames
 * of at most cfg.frame_size when set. Text is checked for UTF-8.
 * A send is taken whole or not at all, and the output queue never holds
 * more than max_queued bytes, frame headers counted (2 to 14 bytes a
 * frame: len < 126: 2, < 65536: 4, else 10; a client adds 4). So the
 * largest message one call can send is max_queued less its headers (and,
 * with ws_conn_set_buffers(), out_cap - WS_BUFFER_OVERHEAD less them),
 * whatever the queue and the transport: a larger one is refused with
 * WS_ETOOBIG, even on an empty queue and a writable socket. Send it with
 * ws_send_fragment() in pieces that fit (max_queued - WS_FRAME_HEADER_MAX
 * bytes always do unless cfg.frame_size splits them), each when the queue
 * has drained enough for it (WS_EFULL: wait for writability), or raise
 * max_queued.
 *   WS_OK      queued (and flushed as far as the transport took it)
 *   WS_EFULL   does not fit beside what is queued now: nothing queued;
 *              it will fit once the queue drains (retry after
 *              ws_conn_on_writable() has written some)
 *   WS_ETOOBIG can never fit (see above): nothing queued, the connection
 *              is unaffected; retrying cannot succeed
 *   WS_ESTATE  not open, or a fragmented send is in progress
 *   WS_EUTF8, WS_EINVAL, WS_ENOMEM
 */
int ws_send(ws_conn *c, int op, const void *data, size_t len);

/* Sends one fragment of a message: op is WS_OP_TEXT/BINARY on the first
 * fragment (WS_OP_CONT or the same op after), fin 1 on the last. Control
 * frames may be sent in between. Returns as ws_send(), with the same limit
 * per fragment: the way to send a message larger than max_queued. */
int ws_send_fragment(ws_conn *c, int op, const void *data, size_t len,
                     int fin);

/*
 * Server: queues one complete, already encoded frame (an unmasked header
 * from ws_frame_write() followed by its payload): the way to encode a
 * broadcast once and queue the same bytes to many connections. Only whole
 * text/binary messages (fin set) and ping/pong frames; the bytes are
 * copied. RSV bits are refused, but for RSV1 on a data frame from
 * ws_deflate_encode() to a connection whose ws_conn_deflate_fresh() is not
 * 0 (and at least the window bits the frame was made with: the caller's
 * duty, which the connection cannot check). Text payloads are not
 * re-checked for UTF-8: check once before.
 *   WS_OK, WS_EINVAL (not such a frame, or a client connection), WS_EFULL,
 *   WS_ETOOBIG (len over max_queued or the fixed out buffer: as
 *   ws_send()), WS_ESTATE (not open, or a fragmented send is open),
 *   WS_ENOMEM
 */
int ws_send_encoded(ws_conn *c, const void *frame, size_t len);

/* Sends a ping / pong with up to 125 bytes of payload. As ws_send(). */
int ws_ping(ws_conn *c, const void *data, size_t len);
int ws_pong(ws_conn *c, const void *data, size_t len);

/*
 * Starts the closing handshake with `code` (a valid wire code, or 0 for a
 * close frame without code) and a UTF-8 reason of up to 123 bytes (may be
 * NULL). No data may be sent after it.
 *   WS_OK, WS_EINVAL (code or reason), WS_ESTATE (already closing/closed)
 */
int ws_close(ws_conn *c, int code, const char *reason, size_t reason_len);

/*
 * Server, from inside on_http only: queues a complete HTTP/1.1 response
 * (status line, Content-Length, Connection: close, the given headers, the
 * body). The connection ends once it is written.
 *   WS_OK, WS_ESTATE (not inside on_http), WS_EINVAL (status, a header),
 *   WS_ENOMEM, WS_ENOSPC
 */
int ws_http_respond(ws_conn *c, int status, const ws_header *headers,
                    size_t num_headers, const void *body, size_t len);

/*
 * Ends the connection now, as when the transport is lost: no closing
 * handshake and nothing more written, state CLOSED. err (a negative WS_E*
 * code; WS_EIO if not) becomes ws_conn_error() unless an error came first.
 * on_close gets what "Close codes" above says: the peer's code if its
 * close frame arrived, else the code of ours if we sent one, else 1006;
 * the reason is the peer's, or ws_strerror(ws_conn_error(c)). From inside
 * a callback, on_close runs when the outermost call into the library for c
 * returns.
 *   WS_ECLOSED (on_close has run), WS_OK (it will run), WS_ESTATE (not
 *   started: nothing happens, no on_close)
 */
int ws_conn_abort(ws_conn *c, int err);

/*
 * Ends the connection, as ws_conn_abort(c, WS_ECLOSED) when it is started
 * and not yet CLOSED (on_close runs, with the code "Close codes" gives),
 * and releases its buffers. c may be NULL. Afterwards c's memory may be
 * released, or given to ws_conn_init() again.
 * From inside one of c's own callbacks other than on_close, it takes effect
 * when the outermost call into the library for c (the one the application
 * made, which ran the callback) returns, and that call returns WS_ECLOSED.
 * Until then c's memory must stay valid, though c takes no more work
 * (sends return WS_ECLOSED, no more input is processed); on_close, if
 * owed, runs at that point, as the last use of c.
 * Inside on_close it takes effect at once, and c's memory may be released
 * before on_close returns.
 */
void ws_conn_free(ws_conn *c);

/* ------------------------------------------------------------------------
 * TLS over mbedTLS (src/ws/tls.c in ws.c; built when WS_ENABLE_MBEDTLS is 1,
 * linked with -lmbedtls -lmbedx509 -lmbedcrypto; mbedTLS 2.28 and 3.x).
 * A TLS session is a transport under layer 1: a connection whose read and
 * write callbacks call ws_tls_read() and ws_tls_write() sees plaintext.
 * The loop does this for wss:// URLs and for ws_loop_listen_tls(). Under
 * the session is a socket (ws_tls_new(), hosted builds) or any transport
 * of the caller's (ws_tls_new_io(): lwIP raw, a UART; also in WS_NO_OS
 * builds). This header does not include mbedTLS: configs and sessions are
 * opaque and allocated with mbedtls_calloc (mbedTLS allocates anyway).
 * Built without TLS, the config functions exist and fail
 * (ws_tls_available() is 0), in loop builds only. A config and its
 * sessions are used by one thread at a time.
 * ---------------------------------------------------------------------- */

typedef struct ws_tls_config ws_tls_config;  /* settings shared by sessions */
typedef struct ws_tls ws_tls;                /* one TLS session */

/* What ws_tls_config_new() builds. Every pointer need only live until that
 * call returns (files are read, buffers copied). */
typedef struct ws_tls_options {
  int role;                  /* WS_SERVER or WS_CLIENT */
  /* Server: the certificate chain (leaf first) and its private key, PEM
   * (or DER) from files or from memory (files win when both are set). */
  const char *cert_file, *key_file;
  const void *cert_pem;  size_t cert_pem_len;
  const void *key_pem;   size_t key_pem_len;
  const char *key_password;  /* NULL: the key is not encrypted */
  /* Client: the CAs to trust; NULL and no ca_pem: the system bundle
   * (/etc/ssl/certs/ca-certificates.crt and the usual other places). */
  const char *ca_file;
  const void *ca_pem;    size_t ca_pem_len;
  /* Client: 1 turns OFF every check of the server's certificate (chain,
   * dates, host name): anyone in the path can read and change the
   * traffic. For tests against throwaway certificates only. Default 0:
   * peer verification is on, against the URL's host. */
  int insecure_skip_verify;
  /* Entropy for the config's CTR-DRBG, added to mbedTLS's configured
   * sources as a strong one: fill buf with n unpredictable bytes (a
   * hardware TRNG) and return WS_OK, anything else for a failure. NULL:
   * mbedTLS's configured sources only (the OS on hosted systems;
   * MBEDTLS_ENTROPY_HARDWARE_ALT on firmware). With none at all,
   * ws_tls_config_new() fails. mbedTLS 3.x: psa_crypto_init() seeds PSA's
   * own generator from mbedTLS's configured sources, which this callback
   * does not reach (firmware configures MBEDTLS_ENTROPY_HARDWARE_ALT or
   * MBEDTLS_PSA_CRYPTO_EXTERNAL_RNG). Called only inside
   * ws_tls_config_new() and while sessions of the config run. */
  int (*entropy)(void *buf, size_t n, void *user);
  void *entropy_user;
} ws_tls_options;

/* 1 if this build has TLS, else 0. */
int ws_tls_available(void);

/* Zeroes *o and sets its role: verification on, nothing loaded yet. */
void ws_tls_options_init(ws_tls_options *o, int role);

/*
 * Builds a config with sensible settings: TLS 1.2 or later, mbedTLS's
 * default suites, a CTR-DRBG seeded from the OS; a server presents its
 * certificate; a client verifies the server against the CAs (REQUIRED
 * unless insecure_skip_verify). err (may be NULL) receives a one-line
 * reason on failure. Free with ws_tls_config_free() after every session
 * and listener using it is gone (after ws_loop_free() for a loop's).
 *   WS_OK (*out is the config), WS_EINVAL (bad options, a file or PEM that
 *   does not load, no CA bundle, or no TLS in this build: see err),
 *   WS_ENOMEM, WS_EIO
 */
int ws_tls_config_new(ws_tls_config **out, const ws_tls_options *o,
                      char *err, size_t errcap);

/*
 * Wraps the application's own, fully set up mbedtls_ssl_config (passed as
 * void * so this header needs no mbedTLS) for sessions of `role`. The
 * mbedTLS config must outlive the wrapper; ws_tls_config_free() frees the
 * wrapper only. Calls psa_crypto_init() where mbedTLS 3.x needs it.
 *   WS_OK, WS_EINVAL, WS_ENOMEM, WS_EIO
 */
int ws_tls_config_wrap(ws_tls_config **out, int role, void *mbedtls_conf);

/* The mbedtls_ssl_config * a config uses (to adjust a helper-made one
 * before its first session: ALPN, suites, debug); NULL without TLS. */
void *ws_tls_config_mbedtls(ws_tls_config *tc);

/* Frees a config (NULL is fine). */
void ws_tls_config_free(ws_tls_config *tc);

/* The transport under a session: the shape of ws_callbacks.read/write,
 * for a session instead of a connection. Called only from inside
 * ws_tls_read(), ws_tls_write() and ws_tls_close() on that session (never
 * re-enter them from here); user is the pointer given to ws_tls_new_io().
 *   send: take up to len bytes (ciphertext), set *n (1..len). WS_OK (a
 *         short count is normal), WS_EAGAIN (nothing taken now: the
 *         session then wants WS_TLS_WANT_WRITE), WS_EEOF (the peer reset
 *         the link), anything else for an error.
 *   recv: store up to cap bytes in buf, set *n. WS_OK with *n > 0 for
 *         data, WS_OK with *n == 0 for end of stream, WS_EAGAIN (nothing
 *         now: WS_TLS_WANT_READ), WS_EEOF (reset), anything else for an
 *         error.
 * Errors are final: the session fails with WS_EIO and ws_tls_error(). */
typedef struct ws_tls_io {
  int (*send)(ws_tls *t, const void *buf, size_t len, size_t *n, void *user);
  int (*recv)(ws_tls *t, void *buf, size_t cap, size_t *n, void *user);
} ws_tls_io;

/*
 * Starts a TLS session over the caller's transport (*io is copied; user is
 * passed to its callbacks). host (client; may be NULL on a server) is sent
 * as SNI and checked against the certificate (DNS names; an IP literal also
 * matches an iPAddress entry). The handshake runs inside the first
 * ws_tls_read()/ws_tls_write() calls. The config must outlive the session.
 * Available in every TLS build, WS_NO_OS included.
 *   WS_OK, WS_EINVAL (NULL tc, io or callback; a bad host), WS_ENOMEM
 */
int ws_tls_new_io(ws_tls **out, ws_tls_config *tc, const ws_tls_io *io,
                  void *user, const char *host);

/*
 * ws_tls_new_io() over a connected, non-blocking socket (hosted builds
 * only: not under WS_NO_OS). The session does not own fd; a reset
 * (ECONNRESET, EPIPE) fails it as WS_EEOF does above.
 *   WS_OK, WS_EINVAL, WS_ENOMEM
 */
int ws_tls_new(ws_tls **out, ws_tls_config *tc, int fd, const char *host);

/*
 * Reads plaintext, driving the handshake first: the shape of
 * ws_callbacks.read.
 *   WS_OK      *n > 0 bytes, or *n == 0: end of stream (close_notify, or
 *              the transport's end)
 *   WS_EAGAIN  would block (ws_tls_wants() says on what)
 *   WS_EIO     failed: a transport error, a TLS alert, a certificate
 *              refused; ws_tls_error() says which
 */
int ws_tls_read(ws_tls *t, void *buf, size_t cap, size_t *n);

/*
 * Writes plaintext, driving the handshake first: the shape of
 * ws_callbacks.write (at most one record, 16 KiB, per call). After
 * WS_EAGAIN the next call MUST start with the same bytes (a ws_conn's
 * output queue does).
 *   WS_OK (*n taken), WS_EAGAIN (nothing taken), WS_EIO (ws_tls_error())
 */
int ws_tls_write(ws_tls *t, const void *buf, size_t len, size_t *n);

/* What the session waits for beyond the connection's own wishes: while
 * WS_TLS_HANDSHAKING, wait for exactly the readiness it names (READ or
 * WRITE), whatever the connection wants; after it, a READ or WRITE bit
 * asks for that readiness too (a record half written, a renegotiation).
 * Then call ws_conn_on_readable() (which reads through the session). */
#define WS_TLS_WANT_READ 1u
#define WS_TLS_WANT_WRITE 2u
#define WS_TLS_HANDSHAKING 4u
unsigned ws_tls_wants(const ws_tls *t);

/* Sends close_notify (best effort, without blocking) after a completed
 * handshake. Returns WS_OK if the transport is still sound (worth a
 * graceful TCP close), WS_EIO if it failed. Call before closing it. */
int ws_tls_close(ws_tls *t);

/* The last failure as one line ("TLS certificate verification failed: The
 * certificate validity has expired", ...); "" when none. Static storage
 * in the session: valid until ws_tls_free(). Never NULL. */
const char *ws_tls_error(const ws_tls *t);

/* 1 when the handshake failed because the peer's certificate did not
 * verify (a failure that retrying will not cure), else 0. */
int ws_tls_verify_failed(const ws_tls *t);

/* Bytes a session holds: its state and its two record buffers (mbedTLS's
 * configured content lengths plus record overhead). What the loop counts
 * against its memory budget for a wss:// connection. */
size_t ws_tls_memory(const ws_tls *t);

/* Frees a session (NULL is fine). Does not close the socket/transport. */
void ws_tls_free(ws_tls *t);

/* ------------------------------------------------------------------------
 * Layer 2: the event loop (not in WS_NO_LOOP builds). POSIX sockets; epoll,
 * kqueue or poll, chosen at compile time in that order (-DWS_LOOP_POLL,
 * -DWS_LOOP_EPOLL, -DWS_LOOP_KQUEUE force one). On Windows: Winsock over
 * WSAPoll, built with mingw-w64 (link -lws2_32; threads are winpthreads);
 * there every `int fd` here is a SOCKET (sockets only: no pipes or files
 * for ws_watch), SO_REUSEPORT does not exist (ws_loop_has_reuseport() is
 * 0), TLS in the loop is not ported, and other compilers stop at an
 * #error (the core alone, WS_NO_LOOP, needs C99 only). Built on the public API
 * above only. One loop per thread: every ws_loop_* function and every
 * ws_conn_* / ws_send* call on a loop's connections MUST be made on the
 * thread that runs the loop, except ws_loop_post(), ws_loop_group_publish()
 * and ws_loop_group_drops() (debug builds assert this). Several loops on
 * several threads share a port and topics through a ws_loop_group. Link
 * with -pthread where the C library needs it.
 * ---------------------------------------------------------------------- */
#ifndef WS_NO_LOOP

typedef struct ws_loop ws_loop;
typedef struct ws_loop_conn ws_loop_conn;
typedef struct ws_timer ws_timer;
typedef struct ws_loop_client ws_loop_client;
typedef struct ws_watch ws_watch;

typedef struct ws_loop_config {
  ws_config server;           /* template for accepted and adopted conns */
  ws_config client;           /* template for ws_loop_connect() */
  uint32_t idle_timeout_ms;   /* no input for this long: close 1001; 0: off */
  int backlog;                /* listen() backlog (511) */
  size_t max_conns;           /* connections at once; 0: only the fd limit */
  int max_events;             /* readiness events per wait (256) */
  uint32_t linger_ms;         /* after a close, how long a half-closed socket
                                 is read to its end before it is closed, so
                                 the peer gets FIN rather than a reset
                                 (2000; 0: close at once) */
  ws_tls_config *tls_client;  /* wss:// connections (a WS_CLIENT config);
                                 NULL: made on first use with the system
                                 CAs and verification on. Not owned. */
  int reuseport;              /* 1: ws_loop_listen*() set SO_REUSEPORT
                                 (SO_REUSEPORT_LB on FreeBSD) before bind,
                                 so several loops, in one process or in
                                 several, listen on one port and the kernel
                                 spreads connections over them; every
                                 socket on the port must ask for it. Where
                                 ws_loop_has_reuseport() is 0 listening
                                 fails with WS_EINVAL (0: off) */
  size_t mem_budget;          /* bytes all of the loop's connections hold
                                 together: input, output, compression and
                                 TLS (WS_LOOP_MEM_BUDGET, 256 MiB; 0: no
                                 budget). See "Memory budget" below. */
} ws_loop_config;

/* The default budget of a loop (docs/limits.md says why this figure). */
#ifndef WS_LOOP_MEM_BUDGET
#define WS_LOOP_MEM_BUDGET ((size_t)256 * 1024 * 1024)
#endif

/* Fills *cfg with defaults: both templates from ws_config_init(), plus
 * keepalive pings every 30 s (under the 60 s idle timeout of common load
 * balancers) with a 10 s pong timeout, and WS_LOOP_MEM_BUDGET. */
void ws_loop_config_init(ws_loop_config *cfg);

typedef struct ws_loop_callbacks {
  /* For every connection of the loop. read and write are the loop's own
   * (these fields are ignored); random, on_handshake, on_open, on_message,
   * on_ping, on_pong, on_http and on_close are called as for any ws_conn.
   * A connection's user pointer starts as the loop's (ws_conn_set_user()
   * changes it; ws_loop_connect() and ws_loop_adopt() take one). After
   * on_close the loop closes the socket and releases the connection. */
  ws_callbacks conn;
  /* The output queue emptied after the connection had to wait for the
   * socket: the moment to resume sending after WS_EFULL. */
  void (*on_drain)(ws_conn *c, void *user);
  /* Memory for a connection (NULL: the server config's allocator). Return
   * NULL to refuse the connection. free_conn gets it back once the
   * connection is finished, after on_close. loop_user is the loop's. */
  ws_loop_conn *(*alloc_conn)(ws_loop *l, void *loop_user);
  void (*free_conn)(ws_loop *l, ws_loop_conn *lc, void *loop_user);
} ws_loop_callbacks;

/* Private parts; the names and layout may change at any time. */
struct ws__tnode { uint64_t when; uint32_t idx; int kind; };
struct ws__io { int fd, pidx; unsigned char kind, events; unsigned short flags; };
struct ws__loop_conn_priv {
  struct ws__io io;                 /* io.flags: the connection's WS__LC_* */
  uint32_t last_rx;                 /* loop time of the last input (low bits) */
  struct ws__tnode tn;
  ws_loop *loop;
  ws_loop_conn *next, *prev, *pend;
  void *subs;
  void *tls;                        /* ws_tls session, or NULL */
};
struct ws__timer_priv {
  struct ws__tnode tn;
  uint64_t repeat;
  void (*cb)(ws_loop *l, ws_timer *t, void *user);
  void *user;
};
struct ws__watch_priv {
  struct ws__io io;                 /* io.events: the interest registered */
  void (*cb)(ws_loop *l, ws_watch *w, unsigned ready, void *user);
  void *user;
  ws_loop *loop;                    /* the loop it is started on, or NULL */
  ws_watch *next, *prev;            /* the loop's started watches */
};
/* Freed blocks the loop keeps for its next ones (the loop's allocator). */
struct ws__kept {
  void *b[32];
  size_t len[32];
  size_t bytes; /* their sum */
  int n;
};

struct ws__loop_priv {
  ws_loop_config cfg;
  ws_loop_callbacks cb;
  ws_callbacks ccb;                 /* what every connection calls */
  void *user;
  int bfd;                          /* epoll/kqueue fd, -1 for poll */
  void *bev;                        /* backend event array */
  void *pfd;                        /* poll: struct pollfd array */
  struct ws__io **pio;              /* poll: io per pollfd */
  size_t pcount, pcap, pnext;       /* poll: where the next scan starts */
  struct { struct ws__io *io; unsigned ev; } *ready;
  int nready;
  struct ws__tnode **heap;
  size_t hcount, hcap;
  ws_loop_conn *conns, *dead, *pend;
  size_t nconns;
  ws_watch *watches;                /* started watches (caller memory) */
  void *listeners;
  struct ws__io wake;
  int wake_w;
  void *post;                       /* mutex and queue, allocated */
  void **topics;
  size_t ntopics, tcap;
  uint64_t now;
  unsigned long owner;
  void (*topic_fn)(ws_loop *l, const char *topic, int active, void *user);
  void *topic_user;                 /* ws_loop_on_topic() */
  void *resolver;                   /* name resolution threads, or NULL */
  ws_loop_client *clients;          /* running reconnecting clients */
  void *lingering;
  size_t nlinger;
  void *tls_default;                /* client TLS config made on demand */
  unsigned char *rbuf;              /* one receive buffer for all sockets */
  int stop, shutting, paused, freeing, rbusy;
  int turning;                      /* inside ws_loop_run_once() */
  size_t ginbox;                    /* bytes of group publishes queued to
                                       this loop, not yet run (atomic) */
  size_t gdrops;                    /* group publishes refused (atomic) */
  size_t held[4], held_all, held_peak, holders; /* the memory budget */
  size_t rquota;                    /* bytes a connection may still read in
                                       this event (WS__LOOP_READ_SHARE) */
  size_t evshare;                   /* one event's share in this turn */
  void *(*urealloc)(void *ptr, size_t size, void *ctx); /* the caller's */
  void *uctx[2];                    /* the caller's alloc_ctx: server, client */
  struct ws__kept mc;               /* freed buffer mappings kept */
  struct ws__kept hc;               /* freed heap buffers kept while tight */
  ws_loop_conn *rat, *rat_tail;     /* rationed connections, in turn order
                                       (ws__loop_ration) */
  size_t nrat;
  uint64_t failed[7];               /* ws_loop_stats' failed_*, in order */
  /* The templates' own charge hooks, run after the loop's. */
  int (*ucharge[2])(ws_conn *c, int kind, ptrdiff_t bytes, void *ctx);
};

struct ws_loop { struct ws__loop_priv ws__lp; };
struct ws_loop_conn {
  ws_conn conn;                     /* first: a ws_conn * of a loop's conn
                                       converts to ws_loop_conn * */
  struct ws__loop_conn_priv ws__l;
};
struct ws_timer { struct ws__timer_priv ws__t; };
struct ws_watch { struct ws__watch_priv ws__w; };

/* The reconnect policy of a ws_loop_client (ws_reconnect_init() sets the
 * defaults given here). Delays: exponential with full jitter. After a
 * failure the next attempt waits a random time in [0, bound); bound starts
 * at first_ms and grows by growth_pct/100 per failure, up to max_ms; a
 * connection that stayed open reset_ms starts it over. */
typedef struct ws_reconnect {
  uint32_t first_ms;     /* the first retry within 0..first_ms (5000; RFC
                            6455 7.2.3 asks clients to spread out) */
  uint32_t max_ms;       /* no delay above it (60000) */
  uint32_t growth_pct;   /* bound growth per failed attempt (160: x1.6) */
  uint32_t reset_ms;     /* open this long: the delays start over (30000) */
  uint32_t max_attempts; /* failed attempts in a row before giving up
                            (0: never) */
  /* Before each retry: the attempt (1 = the first retry), its delay, and
   * what ended the last try (ws_conn_error(), and the HTTP status of a
   * refused upgrade, else 0). Return nonzero to give up instead. NULL:
   * retry. */
  int (*on_attempt)(ws_loop_client *k, unsigned attempt, uint32_t delay_ms,
                    int err, int http_status, void *user);
  /* No more attempts: a final failure, max_attempts reached, or
   * on_attempt said so (not after ws_loop_client_stop()). NULL: none. */
  void (*on_give_up)(ws_loop_client *k, int err, int http_status,
                     void *user);
} ws_reconnect;

struct ws__loop_client_priv {
  ws_timer timer;                   /* the next attempt */
  ws_loop *loop;
  char *url;                        /* a copy */
  const ws_client_opts *opts;       /* the caller's, kept */
  ws_reconnect pol;
  void *user;
  ws_conn *conn;                    /* the connection now, or NULL */
  uint64_t opened_at;               /* loop time of its open; 0: not open */
  uint64_t rng;                     /* the jitter's generator */
  uint32_t bound;                   /* the next delay's upper bound */
  unsigned fails, opens;
  int running;
  ws_loop_client *next, *prev;      /* the loop's running clients */
};
struct ws_loop_client { struct ws__loop_client_priv ws__k; };

/* Initialises a loop in caller memory. cb may be NULL (no callbacks).
 *   WS_OK, WS_EINVAL, WS_EIO (the backend or wake-up pipe failed),
 *   WS_ENOMEM */
int ws_loop_init(ws_loop *l, const ws_loop_config *cfg,
                 const ws_loop_callbacks *cb, void *user);

/* The backend's name: "epoll", "kqueue", "poll" or "wsapoll". */
const char *ws_loop_backend(void);

/* The backend's own fd (epoll or kqueue; readable when the loop has work),
 * so a host loop can watch it and call ws_loop_run_once(l, 0); -1 for
 * poll and WSAPoll. */
int ws_loop_backend_fd(const ws_loop *l);

/*
 * Listens on host:port (a numeric IPv4 or IPv6 address; NULL means "::",
 * which also takes IPv4 where the system allows). port 0 picks one; the
 * port bound is stored in *bound_port when not NULL.
 *   WS_OK, WS_EINVAL (bad host), WS_EIO (socket, bind or listen failed;
 *   errno says why), WS_ENOMEM
 */
int ws_loop_listen(ws_loop *l, const char *host, unsigned port,
                   unsigned *bound_port);

/*
 * As ws_loop_listen(), serving TLS (wss://) with a WS_SERVER config from
 * ws_tls_config_new() or ws_tls_config_wrap(), which must outlive the loop
 * (free it after ws_loop_free()). The TLS handshake counts against the
 * handshake timeout; a peer that does not speak TLS fails it and is closed
 * (FIN); closing a connection sends close_notify.
 *   As ws_loop_listen(); WS_EINVAL also for a NULL or client config, or a
 *   build without TLS
 */
int ws_loop_listen_tls(ws_loop *l, const char *host, unsigned port,
                       ws_tls_config *tls, unsigned *bound_port);

/* Accepts connections from a listening socket the caller made (set
 * non-blocking by the loop, closed by it at the end). As ws_loop_listen. */
int ws_loop_listen_fd(ws_loop *l, int fd);

/*
 * Connects to a ws:// or wss:// URL ("ws://host[:port][/path]", IPv6 hosts
 * in brackets; wss:// runs TLS with cfg.tls_client, SNI and certificate
 * check against the URL's host; a refused certificate ends in on_close
 * 1006, and ws_tls_error(ws_loop_conn_tls(c)) in on_close says why).
 * Nothing blocks the loop: a name is resolved with getaddrinfo() on one
 * of the loop's resolver threads (at most 4, started on demand, ending
 * when idle), and its addresses (IPv6 and IPv4, at most 8) are tried in
 * turn: refused or unreachable, the next at once; silent, the next after
 * its share of the time left. cfg.client.handshake_timeout_ms (10 s)
 * runs from this call and covers it all: resolution, TCP, TLS and the
 * upgrade. Dropping the connection meanwhile (ws_conn_abort(),
 * ws_loop_free()) cancels its resolution: on_close runs at once, and the
 * late answer is discarded; ws_loop_free() never waits for a resolver.
 * o (may be NULL) adds an origin, subprotocols and headers (its host and
 * path are taken from the URL when NULL). The connection's callbacks are
 * the loop's, with `user` as its user pointer. *out (may be NULL)
 * receives the connection; it opens (on_open) or fails later (on_close,
 * 1006, with ws_conn_error(): WS_ERESOLVE for a name that does not
 * resolve, WS_EIO when every address refused, WS_ETIMEDOUT, WS_EPROXY
 * (below), WS_EUPGRADE when the reply was not 101: ws_conn_http_status()
 * says what came back, e.g. 200 from a proxy that stripped Upgrade).
 * Proxies. Through an HTTP proxy the connection dials the proxy (its
 * name resolved as above), sends "CONNECT host:port HTTP/1.1" (with
 * Proxy-Authorization: Basic when the proxy URL has a user), and once the
 * proxy answers 2xx goes on as a direct connection would, through the
 * tunnel: TLS for wss:// with SNI and the certificate checked against the
 * URL's host, then the upgrade. Always CONNECT, for ws:// too. The proxy
 * is o->proxy when not NULL ("" for none); else the environment, read at
 * each call as curl reads it: ws_proxy, then http_proxy (lower case only),
 * for ws://; wss_proxy, then https_proxy, for wss://; then all_proxy;
 * lower case first, then upper (WS_PROXY, HTTPS_PROXY, ...). no_proxy
 * (or NO_PROXY), a comma list, exempts hosts from a proxy of the
 * environment (not from o->proxy): "*" all, "example.com" or
 * ".example.com" that domain and its subdomains, an address itself (no
 * ports or CIDR ranges). Only http:// proxies: another scheme in the URL
 * or the environment is WS_EINVAL. A proxy that does not open the tunnel
 * ends the connection with WS_EPROXY: ws_loop_proxy_status() in on_close
 * says how (its status: 407, 403, 502...; a reply that is not HTTP, or a
 * head over cfg.client.max_handshake, has status 0).
 *   WS_OK, WS_EINVAL (URL or proxy URL; wss:// in a build without TLS,
 *   or no system CA bundle for the default config), WS_EIO (a numeric
 *   address that cannot be dialled at all), WS_ENOMEM
 */
int ws_loop_connect(ws_loop *l, const char *url, const ws_client_opts *o,
                    void *user, ws_conn **out);

/*
 * In on_close of a loop client connection that failed at its proxy
 * (ws_conn_error() is WS_EPROXY): the status of the proxy's reply to
 * CONNECT (407, 403, 502...; 0 when the reply was not HTTP or over the
 * limit), and in *why (may be NULL) one line saying what went wrong
 * ("proxy refused the tunnel: HTTP 407 Proxy Authentication Required",
 * "proxy reply is not HTTP", "proxy reply head over 8192 bytes
 * (max_handshake)"), valid until on_close returns. Elsewhere 0 and "".
 */
int ws_loop_proxy_status(const ws_conn *c, const char **why);

/*
 * Reconnecting clients (opt-in): a ws_loop_client keeps one client
 * connection to a URL, making a new one whenever it ends, on the policy in
 * *r (NULL: the defaults). The first attempt starts now. Each attempt is a
 * ws_loop_connect(url, o, user): the loop's callbacks see every
 * connection, each with its own on_open and on_close. What ends a try:
 *   retried  refused, reset, unreachable (WS_EIO), timed out (WS_ETIMEDOUT),
 *            a name that did not resolve (WS_ERESOLVE), an upgrade refused
 *            with HTTP 5xx, a proxy's 5xx (502, 503) or a reply of a proxy
 *            that is not HTTP or too long (WS_EPROXY), and any end of a
 *            connection that had opened
 *   final    an upgrade refused with HTTP 4xx (401, 403, 404...), a proxy's
 *            4xx (407, 403: WS_EPROXY), a certificate that does not
 *            verify, an invalid URL
 * The hooks' http_status is the server's, or the proxy's with WS_EPROXY.
 * Application state stays the application's: in on_open, use
 * ws_loop_client_of(c) and ws_loop_client_opens() to tell a reconnect
 * (opens > 1) and subscribe again, resend what was not acknowledged.
 * A ws_loop_client is caller memory, like ws_timer: it MUST stay valid and
 * unmoved until ws_loop_client_stop() (or ws_loop_free()). o and what it
 * points to are kept by pointer and MUST stay valid as long. Every
 * ws_loop_client_* call MUST be made on the loop's thread.
 *   WS_OK, WS_EINVAL (bad URL or arguments; nothing started), WS_ENOMEM
 */
int ws_loop_client_start(ws_loop *l, ws_loop_client *k, const char *url,
                         const ws_client_opts *o, const ws_reconnect *r,
                         void *user);

/* The defaults above. */
void ws_reconnect_init(ws_reconnect *r);

/* No more attempts: a pending one is cancelled, an open connection is
 * closed with 1000 (its on_close still comes, as for any close), one
 * still connecting is aborted. Then k is the caller's again. Idempotent. */
void ws_loop_client_stop(ws_loop *l, ws_loop_client *k);

/* The client's connection now (connecting or open), or NULL between
 * attempts and after it stopped. */
ws_conn *ws_loop_client_conn(const ws_loop_client *k);

/* The reconnecting client a connection belongs to, or NULL. */
ws_loop_client *ws_loop_client_of(const ws_conn *c);

/* How many of its connections have opened, the current one included once
 * its on_open runs: 1 in the first on_open, more after a reconnect. */
unsigned ws_loop_client_opens(const ws_loop_client *k);

/*
 * Takes over a connected socket from a host server, together with the bytes
 * it already read from it (the start of the HTTP request), and continues
 * the upgrade as a server connection. The loop owns fd from now on.
 *   WS_OK (*out, may be NULL, is the connection), WS_ECLOSED (the bytes
 *   already ended it: on_close has run), WS_EINVAL, WS_ENOMEM
 */
int ws_loop_adopt(ws_loop *l, int fd, const void *data, size_t len,
                  void *user, ws_conn **out);

/* Runs one iteration: waits up to timeout_ms (-1: until something happens,
 * 0: not at all) for events and timers, and handles them. WS_OK, or WS_EIO
 * when the wait failed. Not from a callback of the same loop (nor
 * ws_loop_run()): debug builds assert. */
int ws_loop_run_once(ws_loop *l, int timeout_ms);

/* Runs until ws_loop_stop(), or until a ws_loop_shutdown() has finished
 * (its connections and lingering sockets are done: started timers and
 * watches do not hold it). WS_OK, or WS_EIO. */
int ws_loop_run(ws_loop *l);

/* Makes ws_loop_run() return after the current iteration. */
void ws_loop_stop(ws_loop *l);

/* Graceful shutdown: stops accepting, sends close 1001 to every open
 * connection and aborts the ones still connecting; ws_loop_run() returns
 * once all have closed (each bounded by its close timeout). */
void ws_loop_shutdown(ws_loop *l);

/*
 * Releases the loop, in two steps, on the calling thread, which becomes the
 * loop's thread (as with ws_loop_run_once(); the loop MUST NOT be running
 * on another):
 * 1. Work still queued by ws_loop_post() runs, in order, with the loop as
 *    it is between two iterations: connections, listeners and timers still
 *    there, sends still written as far as the sockets take them at once
 *    (nothing is read any more, and no ws_timer fires). So the code that
 *    releases a post's argument runs, as it would have at the next
 *    iteration. The queue closes at that moment: a ws_loop_post() made
 *    while ws_loop_free() runs (from a post function, or from on_close in
 *    step 2) returns WS_ECLOSED and its argument stays the caller's, so
 *    the drain is bounded by what was queued when it began.
 * 2. Aborts the connections left (on_close with the code "Close codes"
 *    gives: 1006 unless a close frame was exchanged), closes every socket
 *    and releases everything the loop holds. Watches still started are
 *    forgotten, their memory untouched and their fds left open ("Watches",
 *    below); a post or on_close above may still stop them.
 * Other threads MUST have made their last ws_loop_post() on this loop
 * before ws_loop_free() is called (join them, or otherwise know they are
 * done): the queue and its lock go with the loop. It MUST NOT be called
 * from a callback of the same loop (debug builds assert): stop the loop
 * there, and free it after ws_loop_run() returns.
 */
void ws_loop_free(ws_loop *l);

/* Milliseconds until the loop's next timer (0: due now), or -1 when none:
 * with ws_loop_backend_fd(), what a host loop needs to drive this one. */
int ws_loop_timeout(const ws_loop *l);

/* Open connections, connecting ones included. */
size_t ws_loop_conn_count(const ws_loop *l);

/* The loop's clock (ms, monotonic), as of the current iteration. */
uint64_t ws_loop_now(const ws_loop *l);

/* The socket of a loop connection. */
int ws_loop_conn_fd(const ws_conn *c);

/* The loop a connection belongs to. */
ws_loop *ws_loop_of(const ws_conn *c);

/* The TLS session of a loop connection, NULL for plain ones. Valid until
 * on_close returns (the loop then sends close_notify and frees it). */
ws_tls *ws_loop_conn_tls(const ws_conn *c);

/*
 * Thread-safe: runs fn(l, arg) on the loop's thread at its next iteration,
 * waking it. The supported way to send from another thread. Once posted,
 * fn runs exactly once: at an iteration, or, if the loop is freed first,
 * inside ws_loop_free() (see there), so fn may own and release arg. The
 * posts of one thread run in the order they were made.
 *   WS_OK, WS_ENOMEM
 *   WS_EIO      the wake-up failed; fn is queued all the same and runs
 *               at a later wake-up or in ws_loop_free()
 *   WS_ECLOSED  ws_loop_free() has begun (a post made by a post function
 *               or by on_close during it): fn will not run, arg is still
 *               the caller's
 *   WS_EINVAL   fn is NULL, or the loop was never set up or is freed
 * Posting from another thread while, or after, ws_loop_free() runs is a
 * misuse with undefined results (see ws_loop_free()).
 */
int ws_loop_post(ws_loop *l, void (*fn)(ws_loop *l, void *arg), void *arg);

/* Starts (or restarts) a caller-owned timer: cb runs after `after_ms`, then
 * every `repeat_ms` if not 0. The timer memory must stay valid until it is
 * stopped or has fired for the last time, and MUST be zeroed before its
 * first start or stop (static, `= {0}`-style, or memset): the loop tells a
 * running timer from a new one by what the memory holds. */
void ws_timer_start(ws_loop *l, ws_timer *t, uint64_t after_ms,
                    uint64_t repeat_ms,
                    void (*cb)(ws_loop *l, ws_timer *t, void *user),
                    void *user);
/* Stops a timer; harmless if it is not running. */
void ws_timer_stop(ws_loop *l, ws_timer *t);

/*
 * Watches: any other file descriptor on the loop's thread (a Redis or NATS
 * client's socket, a game's UDP socket, a database driver's connection).
 * A ws_watch is caller memory, like ws_timer; the fd stays the caller's
 * (the loop never reads, writes, closes it or changes its flags: make it
 * non-blocking, or a callback that reads too much stalls the loop).
 * Readiness is level-triggered, on every backend: cb runs once per loop
 * iteration for as long as the fd is ready for something in the interest,
 * with `ready` holding WS_WATCH_READ and/or WS_WATCH_WRITE, never a flag
 * outside the interest, never 0. An error or a hang-up on the fd (the peer
 * closed, a pipe's other end closed, POLLERR, POLLHUP, EV_EOF) is reported
 * as READ|WRITE masked by the interest, so the read or write the callback
 * makes meets it (end of stream, or the error in errno). Readiness is a
 * hint: a callback may find nothing to read (EAGAIN), for instance when an
 * earlier callback of the same iteration read the fd.
 * cb may call any loop function, ws_watch_stop() and ws_watch_set() on any
 * watch included, its own: a watch stopped during an iteration gets no
 * further callback in it, even if its fd was ready, and a watch started
 * during an iteration is called from the next one on.
 * The descriptor MUST NOT be one the loop owns (a connection's, a
 * listener's, ws_loop_backend_fd()), and MUST stay open until the watch is
 * stopped: stop first, then close. Regular files: poll reports them
 * always ready, kqueue readable until their end, epoll refuses them
 * (WS_EIO).
 * ws_loop_run() does not return for lack of work, so a watch needs nothing
 * to keep it running; after ws_loop_shutdown() it returns once the
 * connections are done, whatever watches (and timers) are started.
 * ws_loop_free() forgets the watches still started: it does not touch
 * their memory (which may already be released) nor close their fds, and
 * after it ws_watch_* MUST NOT be called on them. Stop them before it
 * when their owner has something to release.
 * Every ws_watch_* call MUST be made on the loop's thread.
 */
#define WS_WATCH_READ 1u
#define WS_WATCH_WRITE 2u

/*
 * Starts watching fd for `events` (WS_WATCH_READ, WS_WATCH_WRITE, both, or
 * 0: started, but not watched until ws_watch_set() asks for something).
 * w is caller memory, in any state but started; it MUST stay valid, and
 * MUST NOT be moved, until ws_watch_stop() returns (or ws_loop_free(),
 * which forgets it). cb is called as described above, with w and the
 * user pointer given here, on the loop's thread.
 *   WS_OK
 *   WS_EINVAL  fd < 0, cb NULL, a flag other than READ and WRITE in
 *              events, w already started on this loop, fd already
 *              watched by another started watch of this loop, or the
 *              loop freed
 *   WS_EIO     the backend refused the fd (errno says why; epoll refuses
 *              regular files, and an fd the loop already watches); w is
 *              not started
 *   WS_ENOMEM  (poll) its array could not grow; w is not started
 */
int ws_watch_start(ws_loop *l, ws_watch *w, int fd, unsigned events,
                   void (*cb)(ws_loop *l, ws_watch *w, unsigned ready,
                              void *user),
                   void *user);

/*
 * Changes what a started watch waits for (the same values as
 * ws_watch_start(); 0 takes the fd off the backend and keeps the watch
 * started, with its fd, callback and user pointer). Setting the interest it
 * already has costs nothing, so an adapter may set WRITE each time it has
 * output. A readiness already collected for the current iteration is
 * masked by the new interest before it is delivered.
 *   WS_OK
 *   WS_EINVAL  w not started on this loop, or a flag other than READ and
 *              WRITE in events
 *   WS_EIO, WS_ENOMEM  as ws_watch_start(); the watch keeps its previous
 *              interest
 */
int ws_watch_set(ws_loop *l, ws_watch *w, unsigned events);

/*
 * Stops a watch: its fd leaves the backend, and its callback is not called
 * again, not even for readiness already collected in the current iteration.
 * Harmless on a watch that is not started (stopped, or zeroed memory). When
 * it returns the caller may release w and close the fd, from inside any
 * callback too (the watch's own, another watch's, a connection's, a
 * timer's, a post).
 */
void ws_watch_stop(ws_loop *l, ws_watch *w);

/* The fd of a started watch; -1 when it is stopped. */
int ws_watch_fd(const ws_watch *w);

/* The interest of a started watch (0, WS_WATCH_READ, WS_WATCH_WRITE or
 * both); 0 when it is stopped. */
unsigned ws_watch_events(const ws_watch *w);

/*
 * Topics: a server connection subscribes to any number of named topics;
 * publishing encodes the message once and queues the same bytes to every
 * subscriber (with permessage-deflate: compressed once for those without
 * context takeover, see "Compression"). A connection's subscriptions end
 * with it.
 *   subscribe:   WS_OK (also when already subscribed), WS_EINVAL, WS_ENOMEM
 *   unsubscribe: WS_OK, WS_EINVAL (not subscribed)
 *   publish:     WS_OK (*sent, may be NULL, is how many connections took
 *                it; one over its queue limit is skipped), WS_EINVAL,
 *                WS_EUTF8, WS_ENOMEM
 */
int ws_loop_subscribe(ws_conn *c, const char *topic);
int ws_loop_unsubscribe(ws_conn *c, const char *topic);
int ws_loop_publish(ws_loop *l, const char *topic, int op, const void *data,
                    size_t len, size_t *sent);
/* Subscribers of a topic (0 for an unknown topic). */
size_t ws_loop_topic_size(ws_loop *l, const char *topic);

/*
 * Topic activity, for a bridge to a broker (ws_redis.h, ws_nats.h): fn is
 * called on the loop's thread when a topic gets its first subscriber on
 * this loop (active 1) and when its last one leaves (active 0), whether by
 * ws_loop_unsubscribe() or because the connection ended (also inside
 * ws_loop_free(): remove the hook before it if its user is gone). When the
 * hook is set, fn is called at once with active 1 for every topic that
 * has subscribers. One hook per loop; fn NULL removes it. fn may call any
 * loop function except subscribe and unsubscribe.
 */
void ws_loop_on_topic(ws_loop *l,
                      void (*fn)(ws_loop *l, const char *topic, int active,
                                 void *user),
                      void *user);

/*
 * Memory budget. The loop counts what each of its connections holds (the
 * core's input and output buffers and compression state, through
 * ws_config.charge, and each TLS session by ws_tls_memory()) and keeps
 * the sum under cfg.mem_budget:
 * - Below the budget every request for memory is granted (each connection
 *   within its own limits: max_message, max_queued).
 * - Into its last eighth, a request is refused from a connection that
 *   would then hold more than its fair share (the budget divided by the
 *   connections holding memory); connections under their share keep
 *   working there. Past the budget nobody gets more: it is a hard cap.
 *   A refused connection fails at once: 1009 when the memory was
 *   for input (a message), 1013 "try again later" for output (a reader too
 *   slow for what it is sent, pongs to a ping flood); on_close gets that
 *   code and ws_conn_error() WS_EBUDGET.
 * - Within a sixteenth of the budget, new upgrade requests get HTTP 503.
 * A user hook in a template (ws_config.charge) still runs, after the
 * loop's, and may refuse too, with the template's alloc_ctx. The loop's
 * count is exact for the core and an estimate for TLS; zlib's streams
 * count by zlib's documented sizes.
 * A template without an allocator (ws_config.realloc NULL) gets the
 * loop's own for its connections: on Linux, a block of 128 KiB or more is
 * a mapping of its own, so that a freed one goes back to the system
 * instead of staying in libc's heap, and up to 4 MiB of freed ones are
 * kept for the next (docs/limits.md, "Where RSS goes"); smaller blocks,
 * and every block on other systems, come from libc. A template's own
 * allocator is used as given.
 */
struct ws_loop_stats {
  size_t conns;             /* open connections */
  size_t paused;            /* ... whose input waits for output to drain */
  size_t rationed;          /* ... read in the turn's ration: they had
                               more to send than one event reads (the
                               loop's fairness, docs/loop.md) */
  size_t mem_budget;        /* cfg.mem_budget */
  size_t held;              /* bytes held now: the sum of the next four */
  size_t held_in, held_out, held_deflate, held_tls;
  size_t held_peak;         /* the largest held since ws_loop_init() */
  size_t holders;           /* connections holding any memory */
  /* Connections failed, by reason, since ws_loop_init(): */
  uint64_t failed_budget_1009;  /* the budget refused input */
  uint64_t failed_budget_1013;  /* the budget refused output */
  uint64_t failed_slow_reader;  /* output stalled (ws_config slow_reader) */
  uint64_t failed_too_big;      /* over max_frame / max_message (1009) */
  uint64_t failed_protocol;     /* a protocol, UTF-8, compression or
                                   handshake error */
  uint64_t failed_timeout;      /* handshake, pong or close timeout */
  uint64_t refused_503;         /* upgrades refused near the budget */
};

/* Fills *st. Loop thread only; walks the connections (to count paused).
 * The type is a struct tag only, so that the call can have its name. */
void ws_loop_stats(ws_loop *l, struct ws_loop_stats *st);

/*
 * Groups: several loops of one process, one per thread, serving one port
 * and sharing topics (docs/loop.md, "Several loops"). A ws_loop_group is
 * caller memory; it keeps the array of loops by pointer, and both MUST
 * stay valid and unchanged until every loop of the group is freed (posts
 * and handed-off sockets in flight refer to them). Nothing in a group
 * needs releasing: free the loops (ws_loop_free() runs what is still
 * queued to each) and the group's memory is the caller's again.
 *
 * Accepting: ws_loop_group_listen() makes every loop listen on the port
 * with SO_REUSEPORT where ws_loop_has_reuseport() says the kernel spreads
 * connections over such sockets (Linux, FreeBSD's SO_REUSEPORT_LB).
 * Elsewhere, or when `handoff` is set, the first loop alone listens and
 * hands each accepted socket to the loops in turn (round robin, itself
 * included) through their post queues; the receiving loop adopts it as
 * ws_loop_adopt() does, with its own user pointer.
 *
 * Publishing: ws_loop_group_publish() encodes the frame once, into one
 * allocation shared by every loop with an atomic reference count (the last
 * loop to send it frees it), and posts it to each other loop, which sends
 * it to its own subscribers as ws_loop_publish() does. No lock is taken
 * on the send path: the only lock is the post queue's, held for a list
 * append. Each loop's post queue is FIFO, so the publishes of one thread
 * reach every subscriber in the order they were made, on every loop.
 * Bound: a loop's bytes queued by group publishes and not yet run are
 * counted (payload + 64 per publish); a publish that would take a loop
 * past `max_inbox` is not queued to that loop, is counted in
 * ws_loop_group_drops(), and the call returns WS_EFULL (the other loops
 * still get it). A loop stalled by a slow callback thus loses group
 * publishes rather than holding unbounded memory.
 */
typedef struct ws_loop_group ws_loop_group;
struct ws__loop_group_priv {
  ws_loop *const *loops;
  size_t n, next;                   /* next: handoff's round robin */
};
struct ws_loop_group {
  size_t max_inbox;   /* bytes per loop (default 8 MiB); may be changed
                         before the loops run on their threads */
  int handoff;        /* 1: one acceptor hands sockets over even where
                         SO_REUSEPORT exists (default 0) */
  struct ws__loop_group_priv ws__g;
};

/* 1 where ws_loop_config.reuseport and ws_loop_group_listen() can share a
 * port among loops with the kernel spreading connections; 0 otherwise. */
int ws_loop_has_reuseport(void);

/*
 * Makes a group of the n loops in loops[] (each initialised, each to run
 * on its own thread), with the defaults above. loops[] is kept by pointer.
 *   WS_OK, WS_EINVAL (g or loops NULL, n 0, a NULL loop)
 */
int ws_loop_group_init(ws_loop_group *g, ws_loop *const *loops, size_t n);

/*
 * Listens on host:port for the whole group (as ws_loop_listen(): numeric
 * host, port 0 picks one, stored in *bound_port). Reuseport mode: every
 * loop listens (the loops' own `reuseport` setting is not needed).
 * Handoff mode: the first loop listens. Call it from the thread that
 * initialised the loops, before they run on their threads (each listen is
 * the loop's own call).
 *   WS_OK, or as ws_loop_listen() (WS_EINVAL also for a NULL g); on
 *   failure the loops before the failing one may already listen (their
 *   listeners close when the loops are freed): treat it as fatal
 */
int ws_loop_group_listen(ws_loop_group *g, const char *host, unsigned port,
                         unsigned *bound_port);

/*
 * Publishes to a topic on every loop of the group. `from` is the loop
 * whose thread makes the call (in its callback, timer, watch or post), or
 * NULL from any other thread: from's subscribers get the frame at once,
 * the other loops' at their next iteration. Callable from any thread.
 * data is copied; the caller keeps it.
 *   WS_OK
 *   WS_EFULL    at least one loop was over max_inbox (or being freed):
 *               it does not get this publish (counted); the others do
 *   WS_EINVAL   NULL topic or g, op not TEXT or BINARY, data NULL with
 *               len > 0, from not in the group
 *   WS_EUTF8    op TEXT and data is not valid UTF-8; nothing sent
 *   WS_ENOMEM   no memory for the shared copy; nothing sent
 */
int ws_loop_group_publish(ws_loop_group *g, ws_loop *from, const char *topic,
                          int op, const void *data, size_t len);

/* Group publishes refused so far (over max_inbox, or a loop being freed),
 * over all the group's loops. Any thread. */
size_t ws_loop_group_drops(const ws_loop_group *g);

#endif /* WS_NO_LOOP */

#ifdef __cplusplus
}
#endif

#endif /* WS_H */
