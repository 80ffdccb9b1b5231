#!/usr/bin/python3
"""py_tls.py - Python's websockets (Debian python3-websockets) over TLS,
both ways, for tests/tls/interop.sh. Run with Debian's /usr/bin/python3.

  py_tls.py client PORT CAFILE
      Against build/echo_server --cert/--key on 127.0.0.1:PORT: refuses the
      server without the test CA, then (trusting CAFILE, host name checked)
      connects as wss://localhost and wss://127.0.0.1 and checks the echo of
      text and binary messages of many sizes (up to 1 MiB + 1, well over
      64 KiB), fragmented ones and a ping; closes with 1000.
  py_tls.py server CERT KEY
      A wss:// server on 127.0.0.1 (port 0): prints
      "py_tls listening on wss://127.0.0.1:PORT/ (websockets V)" first.
      Path /drive: sends messages of many sizes to a client that echoes
      them (build/echo_client), checks each echo, then closes with 1000 and
      prints "drive done ok=N fail=M". Any other path: echoes. Every
      connection ends with a "close path=P code=C" line. Exits after 60 s.

Prints "ok - ..." / "not ok - ..." lines; the exit status counts failures.
"""
import asyncio
import ssl
import sys

import websockets
import websockets.exceptions

T = 10  # seconds, every wait
MAX = 16 << 20
UTF8 = "h\u00e9llo w\u00f6rld \u2013 \u2713 \U0001d11e \u65e5\u672c\u8a9e \U0001f389"
SIZES = [0, 1, 125, 126, 65535, 65536, 65537, 100000, (1 << 20) + 1]

fails = 0


def log(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def check(name, good, why=""):
    global fails
    if good:
        log("ok - python %s" % name)
    else:
        fails += 1
        log("not ok - python %s: %s" % (name, why))
    return good


def text(n):
    unit = "abc\u00e9\u20ac\U0001d11e"  # 1-, 2-, 3- and 4-byte characters
    s = (unit * (n // len(unit) + 1))[:n]
    return s


def binary(n):
    pattern = bytes((i * 7 + 3) % 256 for i in range(256))
    return (pattern * (n // 256 + 1))[:n]


def messages():
    """(name, message) pairs: text and binary of every size, UTF-8."""
    out = []
    for n in SIZES:
        out.append(("text-%dchars" % n, text(n)))
        out.append(("binary-%d" % n, binary(n)))
    out.append(("text-utf8", UTF8))
    return out


async def expect_echo(ws, name, want):
    try:
        got = await asyncio.wait_for(ws.recv(), T)
    except asyncio.TimeoutError:
        return check(name, False, "no echo within %d s" % T)
    except websockets.exceptions.ConnectionClosed as e:
        return check(name, False, "connection closed: %s" % e)
    if type(got) is not type(want):
        return check(name, False, "echo came back as %s" % type(got).__name__)
    return check(name, got == want, "echo differs (%d, want %d)" % (len(got), len(want)))


# ---------------------------------------------------------------- client

async def client(port, cafile):
    # Without the test CA: the system bundle does not know it.
    try:
        ws = await asyncio.wait_for(
            websockets.connect("wss://localhost:%d/" % port, ssl=ssl.create_default_context()), T)
        await ws.close()
        check("client without the test CA is refused", False, "the handshake succeeded")
    except ssl.SSLCertVerificationError as e:
        check("client without the test CA is refused (%s)" % e.verify_message, True)
    except Exception as e:  # pylint: disable=broad-except
        check("client without the test CA is refused", False, "%s: %s" % (type(e).__name__, e))

    ctx = ssl.create_default_context(cafile=cafile)  # CERT_REQUIRED, host names checked
    for host in ("localhost", "127.0.0.1"):
        url = "wss://%s:%d/python-tls" % (host, port)
        try:
            ws = await asyncio.wait_for(
                websockets.connect(url, ssl=ctx, max_size=MAX, ping_interval=None, compression=None), T)
        except Exception as e:  # pylint: disable=broad-except
            check("client connects to %s" % url, False, "%s: %s" % (type(e).__name__, e))
            continue
        tls = ws.transport.get_extra_info("ssl_object")
        check("client connects to %s (%s, %s)" % (url, tls.version(), tls.cipher()[0]),
              tls is not None and ws.transport.get_extra_info("peercert") is not None, "not TLS")
        if host != "localhost":  # the whole set once is enough
            await ws.send("by IP")
            await expect_echo(ws, "client %s: text echo" % host, "by IP")
        else:
            try:
                for name, m in messages():
                    await ws.send(m)
                    await expect_echo(ws, "client %s: %s echo" % (host, name), m)
                big = binary(300000)
                await ws.send([big[i:i + 75000] for i in range(0, 300000, 75000)])
                await expect_echo(ws, "client %s: 4-fragment 300000-byte binary echo" % host, big)
                await ws.send(["\u00e9\u20ac" * 20000, "\U0001d11e" * 10000, "end"])
                await expect_echo(ws, "client %s: 3-fragment text echo" % host,
                                  "\u00e9\u20ac" * 20000 + "\U0001d11e" * 10000 + "end")
                waiter = await ws.ping(b"py-tls")
                await asyncio.wait_for(waiter, T)
                check("client %s: ping answered" % host, True)
            except Exception as e:  # pylint: disable=broad-except
                check("client %s: messages" % host, False, "%s: %s" % (type(e).__name__, e))
        await asyncio.wait_for(ws.close(1000, "py bye"), T)
        # The server's close frame echoes our code (the reason is its own).
        check("client %s: closed with 1000" % host, ws.close_code == 1000,
              "close code %s reason %r" % (ws.close_code, ws.close_reason))


# ---------------------------------------------------------------- server

async def drive(ws):
    ok0 = fails
    try:
        for name, m in messages():
            await ws.send(m)
            await expect_echo(ws, "server drive: %s echoed by the client" % name, m)
        big = binary(200000)
        await ws.send([big[i:i + 50000] for i in range(0, 200000, 50000)])
        await expect_echo(ws, "server drive: 4-fragment 200000-byte binary", big)
    except websockets.exceptions.ConnectionClosed as e:
        check("server drive", False, "connection closed: %s" % e)
    log("drive done fail=%d" % (fails - ok0))
    await ws.close(1000, "drive done")


async def handler(ws, path):
    tls = ws.transport.get_extra_info("ssl_object")
    log("open path=%s tls=%s" % (path, tls.version() if tls else "none"))
    try:
        if path == "/drive":
            await drive(ws)
        else:
            async for msg in ws:
                await ws.send(msg)
    except websockets.exceptions.ConnectionClosed:
        pass
    finally:
        await ws.wait_closed()
        log("close path=%s code=%s" % (path, ws.close_code))


async def server(cert, key):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    async with websockets.serve(handler, "127.0.0.1", 0, ssl=ctx, max_size=MAX,
                                ping_interval=None, compression=None) as srv:
        port = srv.sockets[0].getsockname()[1]
        log("py_tls listening on wss://127.0.0.1:%d/ (websockets %s)" % (port, websockets.__version__))
        await asyncio.sleep(60)


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "client":
        asyncio.run(asyncio.wait_for(client(int(sys.argv[2]), sys.argv[3]), 60))
    elif len(sys.argv) == 4 and sys.argv[1] == "server":
        asyncio.run(server(sys.argv[2], sys.argv[3]))
    else:
        sys.stderr.write("usage: py_tls.py client PORT CAFILE | server CERT KEY\n")
        return 2
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
