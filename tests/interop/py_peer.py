#!/usr/bin/python3
"""py_peer.py - Python's websockets in the interoperability matrix
(tests/interop), both ways. Run with Debian's /usr/bin/python3 (the one
python3-websockets is installed for).

  py_peer.py server [--port PORT] [--deflate]
      The peer protocol (docs/interop.md) on websockets.serve():
      prints "py_peer listening on ws://127.0.0.1:PORT/ (websockets V)"
      first, then one line per event; the path /drive drives the client as
      common.js drive() does.
  py_peer.py client URL
      The client cases against a server speaking the peer protocol (ws's
      build/interop/ws_peer): one "ok - NAME" or "not ok - NAME: WHY" line
      per case. Each case connects to URL + "python/" + NAME, so the server's
      log tells the cases apart.
  py_peer.py deflate-client URL
      permessage-deflate cases against ws_peer --deflate, with websockets'
      default compression (it offers permessage-deflate with
      client_max_window_bits): the extension is agreed, and JSON chat
      messages, large text and binary messages echo unchanged.
  --deflate (server): accept permessage-deflate, as websockets does by
      default (the matrix's other rows run without it).
"""
import asyncio
import sys

import websockets
import websockets.exceptions
from websockets.frames import OP_PING
from websockets.legacy.server import WebSocketServerProtocol

# The same constants as common.js.
SIZES = [0, 1, 125, 126, 127, 65535, 65536, 65537, 1 << 20, 16 << 20]
PROTOCOLS = ["interop.v1", "interop.v2"]
UTF8 = "h\u00e9llo w\u00f6rld \u2013 \u2713 \U0001d11e \u65e5\u672c\u8a9e \U0001f389"
ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
MAX = 64 << 20
T = 20


def text(n):
    return (ALPHABET * (n // len(ALPHABET) + 1))[:n]


def binary(n):
    pattern = bytes(i % 251 for i in range(251))
    return (pattern * (n // 251 + 1))[:n]


def size_name(n):
    if n >= 1 << 20 and n % (1 << 20) == 0:
        return "%dMiB" % (n >> 20)
    return str(n)


def split_chars(s, n):
    """n pieces of a str, cut between characters (websockets sends str
    fragments, so it cannot cut inside a UTF-8 sequence)."""
    return [s[len(s) * i // n:len(s) * (i + 1) // n] for i in range(n)]


def split_bytes(b, n):
    return [b[len(b) * i // n:len(b) * (i + 1) // n] for i in range(n)]


def log(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


# ---------------------------------------------------------------- server

class Peer(WebSocketServerProtocol):
    """Counts and logs the pings it receives (websockets answers them by
    itself and has no hook for them)."""

    pings_seen = 0
    conn_id = 0

    async def read_frame(self, max_size):
        frame = await super().read_frame(max_size)
        if frame.opcode == OP_PING:
            self.pings_seen += 1
            log("ping id=%d len=%d" % (self.conn_id, len(frame.data)))
        return frame


def choose(client_protocols, server_protocols):
    for p in client_protocols:  # the client's order decides
        if p in server_protocols:
            return p
    return None


next_id = [0]


async def drive(ws):
    ok = fail = 0
    first = None

    def record(name, good, why=""):
        nonlocal ok, fail, first
        if good:
            ok += 1
        else:
            fail += 1
            first = first or name
        log("drive case=%s %s" % (name, "ok" if good else "fail " + why))

    async def expect(name, want):
        try:
            got = await asyncio.wait_for(ws.recv(), T)
        except asyncio.TimeoutError:
            return record(name, False, "no echo within %d s" % T)
        if type(got) is not type(want):
            return record(name, False, "echo came back as %s" % type(got).__name__)
        if got != want:
            return record(name, False, "echo differs (%d, want %d)" % (len(got), len(want)))
        record(name, True)

    try:
        for n in SIZES:
            await ws.send(text(n))
            await expect("text-" + size_name(n), text(n))
        await ws.send(UTF8)
        await expect("text-utf8", UTF8)
        for n in SIZES:
            await ws.send(binary(n))
            await expect("binary-" + size_name(n), binary(n))
        await ws.send(split_chars(UTF8, 5))
        await expect("fragmented-text-utf8", UTF8)
        big = binary(256 * 1024)
        await ws.send(split_bytes(big, 4))
        await expect("fragmented-binary", big)
        try:
            waiter = await ws.ping(b"drive-ping")
            await asyncio.wait_for(waiter, T)
            record("server-ping-pong", True)
        except asyncio.TimeoutError:
            record("server-ping-pong", False, "no pong within %d s" % T)
    except websockets.exceptions.ConnectionClosed as e:
        record("drive", False, "connection closed: %s" % e)
    log("drive done ok=%d fail=%d" % (ok, fail))
    if fail:
        await ws.close(4001, ("drive failed: %s" % first)[:120])
    else:
        await ws.close(1000, "drive ok")


async def handler(ws, path):
    next_id[0] += 1
    ws.conn_id = next_id[0]
    log("open id=%d path=%s proto=%s" % (ws.conn_id, path, ws.subprotocol or ""))
    pongs = [0]
    try:
        if path == "/drive":
            await drive(ws)
            return
        async for msg in ws:
            if isinstance(msg, bytes) or not msg.startswith("!"):
                await ws.send(msg)
                continue
            cmd, _, arg = msg.partition(" ")
            if cmd == "!close":
                code, _, reason = arg.partition(" ")
                await ws.close(int(code), reason)
            elif cmd == "!ping":
                waiter = await ws.ping(arg.encode())
                await asyncio.wait_for(waiter, T)
                pongs[0] += 1
                await ws.send("pong:" + arg)
            elif cmd == "!frag":
                n, _, rest = arg.partition(" ")
                await ws.send(split_chars(rest, int(n)))
            elif cmd == "!fragb":
                n, size = (int(x) for x in arg.split(" "))
                await ws.send(split_bytes(binary(size), n))
            elif cmd == "!stats":
                await ws.send("stats pings=%d pongs=%d" % (ws.pings_seen, pongs[0]))
            elif cmd == "!proto":
                await ws.send("proto:" + (ws.subprotocol or ""))
            else:
                await ws.send(msg)
    except websockets.exceptions.ConnectionClosed:
        pass
    finally:
        await ws.wait_closed()
        log("close id=%d path=%s code=%s reason=%s" % (ws.conn_id, path, ws.close_code, ws.close_reason))


async def serve(port, deflate=False):
    stop = asyncio.get_running_loop().create_future()
    import signal
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
    async with websockets.serve(handler, "127.0.0.1", port, create_protocol=Peer,
                                subprotocols=PROTOCOLS, select_subprotocol=choose,
                                max_size=MAX, max_queue=None, ping_interval=None,
                                compression="deflate" if deflate else None) as server:
        bound = server.sockets[0].getsockname()[1]
        log("py_peer listening on ws://127.0.0.1:%d/ (websockets %s)" % (bound, websockets.__version__))
        await stop


# ---------------------------------------------------------------- client

results = [0, 0]


def report(name, good, why=""):
    results[0 if good else 1] += 1
    log(("ok - %s" % name) if good else ("not ok - %s: %s" % (name, why)))


async def case(base, name, fn, **kw):
    kw.setdefault("max_size", MAX)
    kw.setdefault("ping_interval", None)
    try:
        async with websockets.connect(base + "python/" + name, open_timeout=T,
                                      close_timeout=T, **kw) as ws:
            why = await asyncio.wait_for(fn(ws), 60)
            report(name, not why, why or "")
    except Exception as e:  # any failure of the case is its failure
        report(name, False, "%s: %s" % (type(e).__name__, e))


def echo(msg):
    async def run(ws):
        await ws.send(msg)
        got = await asyncio.wait_for(ws.recv(), T)
        if type(got) is not type(msg):
            return "echo came back as %s" % type(got).__name__
        if got != msg:
            return "echo differs (%d bytes, want %d)" % (len(got), len(msg))
        return None
    return run


def expect_reply(send, want):
    async def run(ws):
        await ws.send(send)
        got = await asyncio.wait_for(ws.recv(), T)
        if got != want:
            return "got %r, want %r" % (got if len(got) < 80 else got[:80], want if len(want) < 80 else want[:80])
        return None
    return run


async def client_ping(ws):
    waiter = await ws.ping(b"py-ping")
    await asyncio.wait_for(waiter, T)  # the pong carried the same payload
    return None


async def keepalive(ws):
    await asyncio.sleep(1.5)  # quiet: the server's keepalive pings go on
    await ws.send("!stats")
    got = await asyncio.wait_for(ws.recv(), T)
    pongs = int(got.rsplit("pongs=", 1)[1])
    if pongs < 2:
        return "server saw %d pongs in 1.5 s (%s)" % (pongs, got)
    return await echo("still open")(ws)


async def subprotocol(ws):
    if ws.subprotocol != "interop.v2":
        return "negotiated %r, want 'interop.v2'" % ws.subprotocol
    return await expect_reply("!proto", "proto:interop.v2")(ws)


async def no_subprotocol(ws):
    if ws.subprotocol is not None:
        return "negotiated %r, want none" % ws.subprotocol
    return await expect_reply("!proto", "proto:")(ws)


async def extension_declined(ws):
    # websockets offered permessage-deflate; ws implements no extension.
    if ws.extensions:
        return "extensions accepted: %r" % ws.extensions
    return await echo("x" * 1000)(ws)


async def close_from_client(ws):
    await ws.close(4000, "client-bye \u2713")
    if ws.close_code != 4000:
        return "close code %r after the handshake, want 4000 echoed" % ws.close_code
    return None


async def close_from_server(ws):
    await ws.send("!close 4001 server-bye \u2713")
    try:
        got = await asyncio.wait_for(ws.recv(), T)
        return "got a message %r instead of the close" % got
    except websockets.exceptions.ConnectionClosed:
        pass
    await ws.wait_closed()
    if ws.close_code != 4001 or ws.close_reason != "server-bye \u2713":
        return "closed with %r %r" % (ws.close_code, ws.close_reason)
    return None


async def client(base):
    if not base.endswith("/"):
        base += "/"
    for n in SIZES:
        await case(base, "text-" + size_name(n), echo(text(n)))
    await case(base, "text-utf8", echo(UTF8))
    for n in SIZES:
        await case(base, "binary-" + size_name(n), echo(binary(n)))
    await case(base, "fragmented-text-utf8", expect_reply(split_chars(UTF8, 5), UTF8))
    big = binary(256 * 1024)
    await case(base, "fragmented-binary", expect_reply(split_bytes(big, 4), big))
    await case(base, "server-fragmented-text-utf8", expect_reply("!frag 5 " + UTF8, UTF8))
    await case(base, "server-fragmented-binary-ping-between", expect_reply("!fragb 4 262144", big))
    await case(base, "client-ping-pong", client_ping)
    await case(base, "server-ping-pong", expect_reply("!ping py-ping", "pong:py-ping"))
    await case(base, "keepalive-pings-answered", keepalive)
    await case(base, "subprotocol", subprotocol, subprotocols=["nope", "interop.v2", "interop.v1"])
    await case(base, "subprotocol-none", no_subprotocol)
    await case(base, "extension-declined", extension_declined)
    await case(base, "close-from-client-4000", close_from_client)
    await case(base, "close-from-server-4001", close_from_server)
    log("python-client: %d passed, %d failed" % (results[0], results[1]))
    return 1 if results[1] else 0


async def deflate_client(base):
    import json
    results = [0, 0]

    def report(name, why):
        results[0 if why is None else 1] += 1
        log("ok - %s" % name if why is None else "not ok - %s: %s" % (name, why))

    chat = [json.dumps({"type": "msg", "room": "lobby", "from": "user%d" % i,
                        "text": "hello everyone, message number %d" % i, "ts": 1700000000 + i})
            for i in range(50)]
    cases = [("json-chat-50", chat), ("text-1MiB", [text(1 << 20)]),
             ("binary-1MiB", [bytes(i % 251 for i in range(1 << 20))]), ("utf8", [UTF8]),
             ("empty", [""])]
    for name, msgs in cases:
        try:
            async with websockets.connect(base + "python-deflate/" + name, max_size=MAX,
                                          ping_interval=None) as ws:
                exts = [e.name for e in ws.extensions]
                if exts != ["permessage-deflate"]:
                    report(name, "extensions %r" % exts)
                    continue
                why = None
                for m in msgs:
                    await ws.send(m)
                    got = await asyncio.wait_for(ws.recv(), 20)
                    if got != m:
                        why = "echo differs (%d, want %d)" % (len(got), len(m))
                        break
                report(name, why)
        except Exception as e:  # noqa: BLE001 - every failure is a case failure
            report(name, "%s: %s" % (type(e).__name__, e))
    return 1 if results[1] else 0


def main():
    args = sys.argv[1:]
    deflate = "--deflate" in args
    args = [a for a in args if a != "--deflate"]
    if args[:1] == ["server"]:
        port = int(args[2]) if args[1:2] == ["--port"] else 0
        asyncio.run(serve(port, deflate))
        return 0
    if args[:1] == ["client"] and len(args) == 2:
        return asyncio.run(client(args[1]))
    if args[:1] == ["deflate-client"] and len(args) == 2:
        return asyncio.run(deflate_client(args[1]))
    sys.stderr.write(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main())
