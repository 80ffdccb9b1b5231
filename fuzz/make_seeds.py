#!/usr/bin/env python3
"""make_seeds.py - writes the seed corpora in fuzz/corpus/<target>/.

Run from the repository root or from fuzz/: python3 fuzz/make_seeds.py
The seeds are small on purpose; the fuzzers grow their own copies under
build/fuzz/corpus/ and never write here.
"""
import base64
import hashlib
import os
import shutil
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "corpus")
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def accept(key):
    return base64.b64encode(hashlib.sha1(key + GUID).digest())


def frame(op, payload=b"", fin=True, mask=None, rsv=0):
    """One frame, minimal length form; masked when mask is 4 bytes."""
    b0 = (0x80 if fin else 0) | (rsv << 4) | op
    n = len(payload)
    m = 0x80 if mask is not None else 0
    if n < 126:
        h = bytes([b0, m | n])
    elif n <= 0xFFFF:
        h = bytes([b0, m | 126]) + struct.pack(">H", n)
    else:
        h = bytes([b0, m | 127]) + struct.pack(">Q", n)
    if mask is None:
        return h + payload
    return h + bytes(mask) + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def close_payload(code, reason=b""):
    return struct.pack(">H", code) + reason


KEY = b"\x37\xfa\x21\x3d"

# RFC 6455 section 5.7 examples (unmasked server frames and masked client
# frames), plus a few more of each kind.
FRAMES = {
    "57_text_unmasked": bytes.fromhex("810548656c6c6f"),
    "57_text_masked": bytes.fromhex("818537fa213d7f9f4d5158"),
    "57_frag_first": bytes.fromhex("010348656c"),
    "57_frag_last": bytes.fromhex("80026c6f"),
    "57_ping_unmasked": bytes.fromhex("890548656c6c6f"),
    "57_pong_masked": bytes.fromhex("8a8537fa213d7f9f4d5158"),
    "57_binary_256": bytes.fromhex("827e0100") + bytes(range(256)),
    "57_binary_64k_header": bytes.fromhex("827f0000000000010000"),
    "close_1000": frame(8, close_payload(1000, b"bye")),
    "close_masked": frame(8, close_payload(1001), mask=KEY),
    "close_empty": frame(8),
    "close_1byte": bytes([0x88, 0x01, 0x03]),
    "close_bad_code": frame(8, close_payload(1005)),
    "close_bad_utf8": frame(8, close_payload(1000, b"\xc0\xaf")),
    "bad_rsv": frame(1, b"x", rsv=4),
    "bad_opcode": bytes([0x83, 0x00]),
    "bad_ctrl_frag": bytes([0x09, 0x00]),
    "bad_ctrl_long": bytes([0x89, 0x7E, 0x00, 0x7E]),
    "bad_nonminimal16": bytes([0x82, 0x7E, 0x00, 0x10]),
    "bad_nonminimal64": bytes([0x82, 0x7F, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF]),
    "bad_top_bit": bytes([0x82, 0x7F, 0x80, 0, 0, 0, 0, 0, 0, 0]),
    "empty_cont": bytes([0x80, 0x80]) + KEY,
}

LONG = ("The quick brown fox \u2014 jumps over \U0001F600 the lazy dog, "
        "caf\u00e9 \u4e2d\u6587 \u0416 \u03b1 ").encode() * 3

UTF8 = {
    "ascii": b"Hello, world",
    "two": "caf\u00e9".encode(),
    "three": "\u20ac\u2603".encode(),
    "four": "\U0001F600".encode(),
    "kosme": bytes.fromhex("cebae1bdb9cf83cebcceb5"),
    "max": bytes.fromhex("f48fbfbf"),
    "bound_d7ff": bytes.fromhex("ed9fbf"),
    "bound_e000": bytes.fromhex("ee8080"),
    "overlong_c0": bytes.fromhex("c080"),
    "overlong_e0": bytes.fromhex("e08080"),
    "overlong_f0": bytes.fromhex("f08f bfbf".replace(" ", "")),
    "surrogate": bytes.fromhex("eda080"),
    "too_big": bytes.fromhex("f4908080"),
    "f5": bytes.fromhex("f5808080"),
    "stray_cont": bytes.fromhex("41 80 42".replace(" ", "")),
    "truncated": bytes.fromhex("41e282"),
    "fe_ff": bytes.fromhex("feff"),
    # Long enough for the 64-byte SIMD blocks of ws_utf8_check.
    "long_text": LONG,
    "long_surrogate": LONG + bytes.fromhex("eda080") + LONG,
    "long_cut_lead": b"a" * 125 + bytes.fromhex("f09f98") + b"a" * 70,
}

REQ = (b"GET /chat HTTP/1.1\r\n"
       b"Host: server.example.com\r\n"
       b"Upgrade: websocket\r\n"
       b"Connection: Upgrade\r\n"
       b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
       b"Origin: http://example.com\r\n"
       b"Sec-WebSocket-Protocol: chat, superchat\r\n"
       b"Sec-WebSocket-Version: 13\r\n\r\n")

REQUESTS = {
    "rfc": REQ,
    "minimal": (b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Key: AQIDBAUGBwgJCgsMDQ4PEA==\r\n"
                b"Sec-WebSocket-Version: 13\r\n\r\n"),
    "lists": (b"GET /a?b=c HTTP/1.1\r\nhost: h:80\r\nUPGRADE: foo, WebSocket\r\n"
              b"connection: keep-alive, Upgrade\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
              b"Sec-WebSocket-Protocol: a\r\nSec-WebSocket-Protocol: b, ,c\r\n"
              b"sec-websocket-version: 13\r\n\r\ntrailing"),
    "version8": REQ.replace(b"Version: 13", b"Version: 8"),
    "no_key": REQ.replace(b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", b""),
    "plain_get": b"GET /index.html HTTP/1.1\r\nHost: h\r\n\r\n",
    "post": REQ.replace(b"GET", b"POST"),
    "incomplete": REQ[:60],
    "bare_lf": b"GET / HTTP/1.1\nHost: h\n\n",
    "two_hosts": REQ.replace(b"Host: server.example.com\r\n", b"Host: a\r\nHost: b\r\n"),
}

NONCE = b"the sample nonce"
RESP = (b"HTTP/1.1 101 Switching Protocols\r\n"
        b"Upgrade: websocket\r\n"
        b"Connection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept(base64.b64encode(NONCE)) + b"\r\n")

RESPONSES = {  # (offered protocols or None, response)
    "plain": (None, RESP + b"\r\n"),
    "proto": (b"chat, superchat", RESP + b"Sec-WebSocket-Protocol: chat\r\n\r\n"),
    "proto_not_offered": (b"chat", RESP + b"Sec-WebSocket-Protocol: x\r\n\r\n"),
    "extension": (None, RESP + b"Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n"),
    "bad_accept": (None, RESP.replace(b"s3pP", b"AAAA") + b"\r\n"),
    "404": (None, b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"),
    "incomplete": (None, RESP),
    "frames_after": (None, RESP + b"\r\n" + bytes.fromhex("810548656c6c6f")),
}


def conf(client=False, stream=False, fixed=False, raw=False, pull=False,
         ticks=False, free_in_close=False, protos=False, frame_i=8, msg_i=8,
         queued_i=6, hs_i=7, cork=False, fs_i=0, incap_i=4, outcap_i=2,
         fail_alloc=0, fail_rnd=0, wmode=0, wk=0, chunk_i=7, seed=0,
         timers=0, end=1, close_end=False, max_headers=31, script=bytes(8),
         big=0, long_header=False, encoded=False, http_body=False,
         budget=False, budget_limit=False, budget_1013=False):
    c0 = (client | stream << 1 | fixed << 2 | raw << 3 | pull << 4 |
          ticks << 5 | free_in_close << 6 | protos << 7)
    c = bytes([
        c0,
        frame_i | msg_i << 4,
        queued_i | hs_i << 4 | cork << 7,
        fs_i | incap_i << 3 | outcap_i << 6,
        fail_alloc | fail_rnd << 5,
        wmode | wk << 2,
        chunk_i | seed << 3,
        timers,
        end | close_end << 2 | max_headers << 3,
    ]) + bytes(script) + bytes([big | long_header << 2 | encoded << 3 |
                                http_body << 4 | budget << 5 |
                                budget_limit << 6 | budget_1013 << 7])
    assert len(c) == 18
    return c


def client_frames():  # what a client sends a server: masked
    return (frame(1, b"Hello", mask=KEY) + frame(2, bytes(range(40)), mask=KEY) +
            frame(9, b"ping", mask=KEY) +
            frame(1, "caf".encode(), fin=False, mask=KEY) +
            frame(0, "\u00e9!".encode(), mask=KEY) +
            frame(8, close_payload(1000, b"bye"), mask=KEY))


def server_frames():  # what a server sends a client: unmasked
    return (frame(1, b"Hello") + frame(10, b"pong") + frame(2, b"\x00" * 130) +
            frame(1, b"He", fin=False) + frame(9, b"") + frame(0, b"llo") +
            frame(8, close_payload(1001)))


CLIENT_NONCE = bytes((i * 37 + 11) & 255 for i in range(16))
CLIENT_ACCEPT = accept(base64.b64encode(CLIENT_NONCE))


def conn_seeds():
    cf, sf = client_frames(), server_frames()
    s = {
        "server_feed": conf() + cf,
        "server_pull_eof": conf(pull=True, chunk_i=3, seed=5) + cf,
        "server_stream": conf(stream=True, chunk_i=2) + cf,
        "server_fixed": conf(fixed=True) + cf,
        "server_bytewise": conf(chunk_i=0, wmode=1) + cf,
        "server_ticks": conf(ticks=True, timers=0x55) + frame(9, b"x", mask=KEY),
        "server_raw_hs": conf(raw=True, protos=True) + REQ + cf,
        "server_toobig": conf(msg_i=3, frame_i=3) + frame(2, bytes(40), mask=KEY),
        "server_unmasked": conf() + frame(1, b"bad"),
        "server_bad_utf8": conf() + frame(1, b"\xed\xa0\x80", mask=KEY),
        "server_write_err": conf(wmode=3, wk=4) + cf,
        "server_wouldblock": conf(wmode=2, queued_i=4) + cf,
        "server_free_in_close": conf(free_in_close=True) + cf,
        "server_script": conf(script=bytes([6, 7, 9, 13, 1, 2, 4, 12])) + cf,
        "server_fail_alloc": conf(fail_alloc=2) + cf,
        "client_feed": conf(client=True) + sf,
        "client_pull": conf(client=True, pull=True, chunk_i=4) + sf,
        "client_stream_fixed": conf(client=True, stream=True, fixed=True) + sf,
        "client_protos": conf(client=True, protos=True) + sf,
        "client_raw_resp": conf(client=True, raw=True) + (
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + CLIENT_ACCEPT +
            b"\r\n\r\n") + sf,
        "client_close_end": conf(client=True, close_end=True, end=0) + frame(1, b"hi"),
        "client_rnd_fail": conf(client=True, fail_rnd=2) + sf,
        "client_long_header": conf(client=True, long_header=True) + sf,
        "client_big": conf(client=True, msg_i=12, frame_i=12, big=1) + sf[:-4],
        "server_big_stream": conf(stream=True, msg_i=12, frame_i=12, queued_i=9,
                                  big=2, chunk_i=7) + cf[:-11],
        "server_big_whole": conf(msg_i=12, frame_i=12, queued_i=9, big=1) + cf[:-11],
        "server_encoded": conf(encoded=True) + cf,
        "server_http_body": conf(raw=True, http_body=True) + REQUESTS["plain_get"],
        "server_http_refuse": conf(raw=True, script=bytes([1] * 8)) + REQUESTS["plain_get"],
        "server_fixed_big_head": conf(raw=True, fixed=True, incap_i=0) +
            REQ[:-2] + b"X-Pad: " + b"p" * 600 + b"\r\n\r\n" + cf,
        # Budget exhaustion: the last two bytes are k (1 + v % 512) or the
        # limit (v * 8 bytes), little endian.
        "server_budget_kth": conf(budget=True, chunk_i=2) + cf + struct.pack("<H", 1),
        "server_budget_first": conf(budget=True, budget_1013=True) + cf +
            struct.pack("<H", 0),
        "server_budget_limit_big": conf(msg_i=12, frame_i=12, queued_i=9, big=1,
                                        budget=True, budget_limit=True) +
            cf[:-11] + struct.pack("<H", 4096),
        "server_budget_stalled": conf(wmode=2, queued_i=9, budget=True,
                                      budget_limit=True, budget_1013=True,
                                      script=bytes([13, 13, 7, 13, 0, 13, 13, 0])) +
            cf + struct.pack("<H", 200),
        "client_budget_kth": conf(client=True, budget=True) + sf + struct.pack("<H", 1),
        # Refused while OPEN with nothing queued: the close frame goes
        # straight to the transport.
        "server_budget_direct_close": conf(msg_i=12, frame_i=12, queued_i=9, big=1, chunk_i=5,
                                           budget=True, budget_limit=True,
                                           script=bytes([0, 0] + [12] * 6)) +
            struct.pack("<H", 4096),
        "server_partial_writes": conf(wmode=1, wk=20, queued_i=7, outcap_i=0,
                                      script=bytes([13, 6, 0, 13, 1, 13, 13, 0])) + cf * 3,
    }
    return s


# Reproducers of library bugs, replayed by `make fuzz-replay`.
def deflate_seeds():
    """fuzz_deflate: [mode][L][extension value][b0][len][payload]..."""
    import zlib

    def seed(mode, ext, frames=b""):
        return bytes([mode, len(ext)]) + ext + frames

    def fr(b0, payload):
        return bytes([b0, len(payload)]) + payload

    def raw_deflate(data):
        c = zlib.compressobj(6, zlib.DEFLATED, -15)
        out = c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)
        return out[:-4]

    text = b'{"type":"msg","room":"lobby","text":"hello hello hello"}'
    out = {}
    offers = {
        "offer_plain": b"permessage-deflate",
        "offer_bare_cmwb": b"permessage-deflate; client_max_window_bits",
        "offer_all": b"permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
                     b"server_max_window_bits=10; client_max_window_bits=12",
        "offer_quoted": b'permessage-deflate; client_max_window_bits="9"',
        "offer_two": b"permessage-deflate; x=1, permessage-deflate; server_max_window_bits=8",
        "offer_dup": b"permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        "offer_other": b"x-webkit-deflate-frame, foo; a=\"b\\\"c\"",
    }
    for name, ext in offers.items():
        out["server_" + name] = seed(0x70, ext)
    # Compressed frames from zlib (raw), a fragmented message, a plain one
    # between, RSV1 on a continuation and on a ping, a corrupt stream.
    good = fr(0xC1, raw_deflate(text))
    out["server_frames"] = seed(0x70, offers["offer_plain"], good + fr(0x81, b"plain") + good)
    comp = raw_deflate(text * 3)
    out["server_fragmented"] = seed(0x72, offers["offer_plain"],
                                    fr(0x41, comp[:10]) + fr(0x89, b"p") + fr(0x00, comp[10:20]) + fr(0x80, comp[20:]))
    out["server_rsv1_cont"] = seed(0x70, offers["offer_plain"], fr(0x41, comp[:10]) + fr(0xC0, comp[10:]))
    out["server_rsv1_ping"] = seed(0x70, offers["offer_plain"], fr(0xC9, b"x"))
    out["server_corrupt"] = seed(0x70, offers["offer_plain"], fr(0xC2, b"\xff\xff\xff"))
    out["server_harness_compressed"] = seed(0xF0 | 0x0C, offers["offer_all"],
                                            fr(0xC1, text) + fr(0xC2, b"\x00" * 200) + fr(0xC1, text))
    out["server_bomb"] = seed(0x70, offers["offer_plain"], fr(0xC2, raw_deflate(b"\x00" * 60000)[:250]))
    out["server_pieces"] = seed(0x72, offers["offer_plain"], fr(0x2F, good + good))
    responses = {
        "resp_plain": b"permessage-deflate",
        "resp_bits": b"permessage-deflate; server_max_window_bits=9; client_max_window_bits=10",
        "resp_nct": b"permessage-deflate; server_no_context_takeover; client_no_context_takeover",
        "resp_bad_param": b"permessage-deflate; foo",
        "resp_two": b"permessage-deflate, permessage-deflate",
        "resp_bare_cmwb": b"permessage-deflate; client_max_window_bits",
        "resp_other": b"x-other",
    }
    for name, ext in responses.items():
        out["client_" + name] = seed(0x71, ext)
    out["client_frames"] = seed(0x71, responses["resp_plain"],
                                fr(0xC1, raw_deflate(text)) + fr(0x81, b"plain"))
    out["client_none"] = seed(0x71, b"", fr(0x81, b"plain"))
    return out


def regressions():
    return {
        # max_queued < 139: ws_conn_want_read() is 0 with nothing queued, so
        # a pull-mode connection never reads (not even the handshake).
        "want_read_max_queued_0": conf(pull=True, queued_i=0),
    }


def write(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as fp:
        fp.write(data)


def main():
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    for name, data in FRAMES.items():
        write("fuzz_frame", name, data)
    # fuzz_close: [4-byte code for ws_close_code_valid][payload]
    for code in (1000, 1004, 1005, 1014, 1015, 2999, 3000, 4999, 5000, 0x103E8):
        write("fuzz_close", "code_%d" % code,
              struct.pack(">I", code) + close_payload(code & 0xFFFF, b"ok"))
    write("fuzz_close", "empty", bytes(4))
    write("fuzz_close", "one_byte", bytes(4) + b"\x03")
    write("fuzz_close", "bad_reason", bytes(4) + close_payload(1000, b"\xed\xa0\x80"))
    write("fuzz_close", "long", bytes(4) + close_payload(1000, b"a" * 124))
    # fuzz_utf8: [k][k chunk sizes][data]
    for name, data in UTF8.items():
        write("fuzz_utf8", name, b"\x00" + data)
        write("fuzz_utf8", name + "_split", b"\x03\x01\x02\x01" + data)
        if len(data) > 128:
            write("fuzz_utf8", name + "_halves", b"\x02\x50\x60" + data)
    # fuzz_request: [max_headers][request]
    for name, data in REQUESTS.items():
        write("fuzz_request", name, b"\x20" + data)
    write("fuzz_request", "few_headers", b"\x02" + REQ)
    # fuzz_response: [L][max_headers][protocols][response]
    for name, (protos, data) in RESPONSES.items():
        if protos is None:
            write("fuzz_response", name, b"\x80\x20" + data)
        else:
            write("fuzz_response", name, bytes([len(protos), 0x20]) + protos + data)
    for name, data in conn_seeds().items():
        write("fuzz_conn", name, data)
    for name, data in deflate_seeds().items():
        write("fuzz_deflate", name, data)
    d = os.path.join(HERE, "regressions", "fuzz_conn")
    os.makedirs(d, exist_ok=True)
    for name, data in regressions().items():
        with open(os.path.join(d, name), "wb") as fp:
            fp.write(data)


if __name__ == "__main__":
    main()
