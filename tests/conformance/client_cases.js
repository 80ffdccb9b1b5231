#!/usr/bin/env node
'use strict';
/*
 * client_cases.js - a raw-TCP fuzzing client that checks a WebSocket echo
 * server (build/echo_server) the way the Autobahn|Testsuite fuzzing client
 * does, but strictly: every case expects the exact close code, failing
 * fast on invalid UTF-8, and the server closing TCP cleanly (FIN) after the
 * closing handshake.
 *
 *   node tests/conformance/client_cases.js --port P [--host H]
 *        [--tls CERTDIR] [--case ID]... [--list] [--verbose] [--seed N]
 *
 * --tls: the server speaks wss:// (build/echo_server --cert/--key); every
 * connection is TLS (Node's tls module) verified against CERTDIR/ca.pem
 * (tests/tls/certs.sh makes it) and the host, and the cases run unchanged on the plaintext inside it (a "TCP
 * close" is then the end of the TLS stream: close_notify and/or FIN; a
 * reset is still a failure).
 *
 * --case takes an id ("2.4"), a prefix ("6" or "6.4") or a glob ("7.*.1").
 * The last line is "client_cases: N passed, M failed"; failing cases are
 * printed with their reason, then a summary per category.
 */
const fs = require('fs');
const net = require('net');
const path = require('path');
const tls = require('tls');
const crypto = require('crypto');
const W = require('./wire');

const { OP, EMPTY, fail, textPayload, closePayload, encodeFrame, encodeHeader, maskInPlace } = W;

const CATEGORIES = {
  1: 'framing',
  2: 'pings and pongs',
  3: 'reserved bits',
  4: 'opcodes',
  5: 'fragmentation',
  6: 'UTF-8',
  7: 'closing',
  9: 'limits and performance',
  10: 'masking',
  H: 'opening handshake',
};

const KiB = 1024;
const MiB = 1024 * 1024;
const BIG = 20000; // time bound for the big cases, ms

/* ---------------------------------------------------------------------
 * Connecting
 * ------------------------------------------------------------------- */

/* A socket to the server, and the event that says it is ready: plain TCP,
 * or TLS verified against the CA (ca: its PEM) when --tls is given. */
function dial(host, port, ca) {
  if (!ca) return { sock: net.connect({ host, port }), ready: 'connect' };
  return { sock: tls.connect({ host, port, ca, rejectUnauthorized: true }), ready: 'secureConnect' };
}

function connectRaw(ctx) {
  ctx.waiting = `a ${ctx.ca ? 'TLS' : 'TCP'} connection to ${ctx.host}:${ctx.port}`;
  return new Promise((resolve, reject) => {
    const { sock, ready } = dial(ctx.host, ctx.port, ctx.ca);
    ctx.defer(() => sock.destroy());
    sock.once(ready, () => {
      sock.removeAllListeners('error');
      sock.on('error', () => {}); // readers install their own
      sock.setNoDelay(true);
      resolve(sock);
    });
    sock.once('error', (e) => reject(new W.CaseFail(`cannot connect to the server: ${e.code || e.message}`)));
  });
}

/* An opening handshake request; `drop`, `replace` and `add` edit headers. */
function buildRequest(ctx, { method = 'GET', path = '/', version = 'HTTP/1.1', drop = [], replace = {}, add = [] } = {}) {
  const key = crypto.randomBytes(16).toString('base64');
  let hs = [
    ['Host', `${ctx.host}:${ctx.port}`],
    ['Upgrade', 'websocket'],
    ['Connection', 'Upgrade'],
    ['Sec-WebSocket-Key', key],
    ['Sec-WebSocket-Version', '13'],
  ];
  hs = hs.filter(([n]) => !drop.includes(n)).map(([n, v]) => [n, n in replace ? replace[n] : v]).concat(add);
  const text = `${method} ${path} ${version}\r\n` + hs.map(([n, v]) => `${n}: ${v}\r\n`).join('') + '\r\n';
  return { key, bytes: Buffer.from(text, 'latin1') };
}

/* Checks a 101 response strictly against the request's key. */
function check101(head, key, offered) {
  if (head.error) fail(`bad response head: ${head.error}`);
  if (!/^HTTP\/1\.1 101( |$)/.test(head.start)) fail(`expected "HTTP/1.1 101", got "${head.start}"`);
  if (!head.tokens('upgrade').includes('websocket')) fail('101 response without "Upgrade: websocket"');
  if (!head.tokens('connection').includes('upgrade')) fail('101 response without "Connection: Upgrade"');
  const acc = head.get('sec-websocket-accept');
  if (acc.length !== 1) fail(`101 response has ${acc.length} Sec-WebSocket-Accept headers`);
  if (acc[0] !== W.acceptFor(key)) fail(`wrong Sec-WebSocket-Accept "${acc[0]}", want "${W.acceptFor(key)}"`);
  if (head.get('sec-websocket-extensions').some((v) => v !== ''))
    fail('server chose an extension that was not offered');
  const proto = head.get('sec-websocket-protocol');
  if (proto.length && (!offered || proto.length > 1 || !offered.includes(proto[0])))
    fail(`server chose subprotocol "${proto.join(', ')}" that was not offered`);
}

/*
 * Connects and performs the opening handshake. `trailing` is sent in the
 * same write, right after the request; chop sends the request in pieces.
 */
async function open(ctx, { protocols = null, chop = 0, trailing = EMPTY, add = [] } = {}) {
  const sock = await connectRaw(ctx);
  if (protocols) add = add.concat([['Sec-WebSocket-Protocol', protocols.join(', ')]]);
  const { key, bytes } = buildRequest(ctx, { add });
  const all = Buffer.concat([bytes, trailing]);
  if (chop) {
    for (let i = 0; i < all.length; i += chop)
      await new Promise((r) => sock.write(all.subarray(i, i + chop), r));
  } else {
    sock.write(all);
  }
  ctx.waiting = 'the 101 response';
  const { head, rest } = await W.readHead(sock, 'opening handshake');
  check101(head, key, protocols);
  const peer = new W.Peer(ctx, sock, 'client', rest);
  ctx.defer(() => peer.destroy());
  return peer;
}

/*
 * Sends raw bytes as a request and expects an HTTP error `status`, then a
 * clean TCP close within 2 s with exactly Content-Length body bytes.
 * Returns the parsed head.
 */
async function expectHttpError(ctx, bytes, status, { chop = 0 } = {}) {
  const sock = await connectRaw(ctx);
  if (chop) {
    for (let i = 0; i < bytes.length; i += chop)
      await new Promise((r) => sock.write(bytes.subarray(i, i + chop), r));
  } else {
    sock.write(bytes);
  }
  ctx.waiting = `an HTTP ${status} response`;
  const { head, rest } = await W.readHead(sock, `HTTP ${status} response`);
  const m = /^HTTP\/1\.[01] (\d{3})( |$)/.exec(head.start);
  if (!m) fail(`not an HTTP status line: "${head.start}"`);
  if (Number(m[1]) !== status) fail(`expected HTTP ${status}, got "${head.start}"`);
  ctx.waiting = 'the server to close TCP after the error response';
  const body = await new Promise((resolve, reject) => {
    let got = rest;
    let ended = false;
    const timer = setTimeout(() => reject(new W.CaseFail('server did not close TCP within 2000 ms of the error response')), 2000);
    sock.on('data', (d) => (got = Buffer.concat([got, d])));
    sock.on('end', () => {
      ended = true;
      clearTimeout(timer);
      resolve(got);
    });
    sock.on('error', (e) => {
      if (ended) return;
      clearTimeout(timer);
      reject(new W.CaseFail(`connection reset (${e.code || e.message}) instead of a clean TCP close`));
    });
    sock.resume();
    // Over TLS the end can come in the same tick as the head, before these
    // listeners (see W.Peer).
    if (sock.readableEnded) {
      ended = true;
      clearTimeout(timer);
      resolve(got);
    }
  });
  const cl = head.get('content-length');
  if (cl.length && Number(cl[0]) !== body.length)
    fail(`body is ${body.length} bytes, Content-Length says ${cl[0]}`);
  return head;
}

/* ---------------------------------------------------------------------
 * The cases
 * ------------------------------------------------------------------- */

const cases = [];
function add(id, name, run, timeout = 4000) {
  cases.push({ id, name, run, timeout });
}
const text = (s) => Buffer.from(s, 'utf8');
const bytes = (h) => Buffer.from(h.replace(/\s+/g, ''), 'hex');

/* A valid message to echo before and after the interesting frame. */
async function echoCheck(p, s = 'still echoing') {
  await p.sendFrame({ opcode: OP.TEXT, payload: s });
  await p.expectMessage(OP.TEXT, s);
}

/* 1. Framing ---------------------------------------------------------- */
{
  const lengths = [0, 125, 126, 127, 128, 65535, 65536, 1 * MiB, 8 * MiB];
  const modes = [
    ['in one write', 0],
    ['in 1-byte chops', 1],
    ['in random small chops', -1],
  ];
  let group = 0;
  for (const [opName, op] of [['text', OP.TEXT], ['binary', OP.BINARY]]) {
    for (const [modeName, chop] of modes) {
      group++;
      lengths.forEach((len, i) => {
        // One await per byte: beyond 64 KiB that is slow and adds nothing.
        if (chop === 1 && len > 65536) return;
        const big = len >= MiB || (chop === 1 && len >= 65535);
        add(`1.${group}.${i + 1}`, `${opName} message of ${len} bytes, sent ${modeName}`, async (ctx) => {
          const p = await open(ctx);
          const payload = op === OP.TEXT ? textPayload(len) : ctx.rng.bytes(len);
          const f = p.frame({ opcode: op, payload });
          if (chop === 0) await p.send(f);
          else if (chop === 1) await p.sendChopped(f, 1);
          else await p.sendChopped(f, () => ctx.rng.int(1, len > MiB ? 65536 : 1500));
          await p.expectMessage(op, payload);
          await p.closeNormally();
        }, big ? BIG : 5000);
      });
    }
  }
  add('1.7.1', 'text of 5 bytes with a 16-bit length (not minimal) -> 1002', async (ctx) => {
    const p = await open(ctx);
    await p.sendFrame({ opcode: OP.TEXT, payload: 'Hello', form: 16 });
    await p.expectFail(1002);
  });
  add('1.7.2', 'binary of 200 bytes with a 64-bit length (not minimal) -> 1002', async (ctx) => {
    const p = await open(ctx);
    await p.sendFrame({ opcode: OP.BINARY, payload: ctx.rng.bytes(200), form: 64 });
    await p.expectFail(1002);
  });
  add('1.7.3', '64-bit length with the most significant bit set -> 1002', async (ctx) => {
    const p = await open(ctx);
    const h = encodeHeader({ opcode: OP.BINARY, len: 0, form: 64, key: crypto.randomBytes(4) });
    h[2] = 0x80;
    await p.send(h);
    await p.expectFail(1002);
  });
  add('1.7.4', 'two frames in one write, the second split over two writes', async (ctx) => {
    const p = await open(ctx);
    const a = p.frame({ opcode: OP.TEXT, payload: 'first' });
    const b = p.frame({ opcode: OP.BINARY, payload: ctx.rng.bytes(300) });
    await p.send(Buffer.concat([a, b.subarray(0, 3)]));
    await p.expectMessage(OP.TEXT, 'first');
    await p.send(b.subarray(3));
    await p.expectMessage(OP.BINARY, maskInPlace(Buffer.from(b.subarray(8)), b.subarray(4, 8)));
    await p.closeNormally();
  });
}

/* 2. Pings and pongs -------------------------------------------------- */
add('2.1', 'ping without payload -> pong without payload', async (ctx) => {
  const p = await open(ctx);
  await p.sendFrame({ opcode: OP.PING });
  await p.expectPong(EMPTY);
  await p.closeNormally();
});
add('2.2', 'ping with 125 bytes of text -> pong with the same payload', async (ctx) => {
  const p = await open(ctx);
  const pl = Buffer.alloc(125, '*');
  await p.sendFrame({ opcode: OP.PING, payload: pl });
  await p.expectPong(pl);
  await p.closeNormally();
});
add('2.3', 'ping with 125 bytes of binary -> pong with the same payload', async (ctx) => {
  const p = await open(ctx);
  const pl = Buffer.from(Array.from({ length: 125 }, (_, i) => (i * 37 + 255) & 255));
  await p.sendFrame({ opcode: OP.PING, payload: pl });
  await p.expectPong(pl);
  await p.closeNormally();
});
add('2.4', 'ping with a 126-byte payload -> 1002, no pong', async (ctx) => {
  const p = await open(ctx);
  await p.sendFrame({ opcode: OP.PING, payload: Buffer.alloc(126, 'x') });
  await p.expectFail(1002);
});
add('2.5', 'ping with 125 bytes sent in 1-byte chops -> pong', async (ctx) => {
  const p = await open(ctx);
  const pl = ctx.rng.bytes(125);
  await p.sendChopped(p.frame({ opcode: OP.PING, payload: pl }), 1);
  await p.expectPong(pl);
  await p.closeNormally();
});
add('2.6', 'unsolicited pong without payload is ignored', async (ctx) => {
  const p = await open(ctx);
  await p.sendFrame({ opcode: OP.PONG });
  await echoCheck(p);
  await p.closeNormally();
});
add('2.7', 'unsolicited pong with payload is ignored', async (ctx) => {
  const p = await open(ctx);
  await p.sendFrame({ opcode: OP.PONG, payload: 'unsolicited pong payload' });
  await echoCheck(p);
  await p.closeNormally();
});
add('2.8', 'unsolicited pong, then a ping -> one pong for the ping', async (ctx) => {
  const p = await open(ctx);
  await p.send(Buffer.concat([
    p.frame({ opcode: OP.PONG, payload: 'unsolicited' }),
    p.frame({ opcode: OP.PING, payload: 'ping payload' }),
  ]));
  await p.expectPong('ping payload');
  await echoCheck(p);
  await p.closeNormally();
});
add('2.9', '10 pings in one write -> 10 pongs in order', async (ctx) => {
  const p = await open(ctx);
  const pls = Array.from({ length: 10 }, (_, i) => text(`payload-${i}`));
  await p.send(Buffer.concat(pls.map((pl) => p.frame({ opcode: OP.PING, payload: pl }))));
  for (const pl of pls) await p.expectPong(pl, `the pong for ping "${pl}"`);
  await p.closeNormally();
});
add('2.10', '10 pings in 1-byte chops -> 10 pongs in order', async (ctx) => {
  const p = await open(ctx);
  const pls = Array.from({ length: 10 }, (_, i) => text(`chopped-${i}`));
  await p.sendChopped(Buffer.concat(pls.map((pl) => p.frame({ opcode: OP.PING, payload: pl }))), 1);
  for (const pl of pls) await p.expectPong(pl, `the pong for ping "${pl}"`);
  await p.closeNormally();
});
add('2.11', 'fragmented ping (fin=0, then continuation) -> 1002', async (ctx) => {
  const p = await open(ctx);
  await p.send(Buffer.concat([
    p.frame({ opcode: OP.PING, payload: 'frag1', fin: false }),
    p.frame({ opcode: OP.CONT, payload: 'frag2' }),
  ]));
  await p.expectFail(1002);
});
add('2.12', 'pong with a 126-byte payload -> 1002', async (ctx) => {
  const p = await open(ctx);
  await p.sendFrame({ opcode: OP.PONG, payload: Buffer.alloc(126, 'x') });
  await p.expectFail(1002);
});
add('2.13', '100 pings of 125 bytes in one write -> 100 pongs in order', async (ctx) => {
  const p = await open(ctx);
  const pls = Array.from({ length: 100 }, () => ctx.rng.bytes(125));
  await p.send(Buffer.concat(pls.map((pl) => p.frame({ opcode: OP.PING, payload: pl }))));
  for (let i = 0; i < pls.length; i++) await p.expectPong(pls[i], `pong ${i + 1} of 100`);
  await p.closeNormally();
});

/* 3. Reserved bits ---------------------------------------------------- */
add('3.1', 'text with RSV1 -> 1002', async (ctx) => {
  const p = await open(ctx);
  await p.sendFrame({ opcode: OP.TEXT, payload: 'Hello, world!', rsv: 4 });
  await p.expectFail(1002);
});
add('3.2', 'valid text, then text with RSV2 -> echo first, then 1002', async (ctx) => {
  const p = await open(ctx);
  await p.send(Buffer.concat([
    p.frame({ opcode: OP.TEXT, payload: 'Hello, world!' }),
    p.frame({ opcode: OP.TEXT, payload: 'Hello, world!', rsv: 2 }),
  ]));
  await p.expectMessage(OP.TEXT, 'Hello, world!');
  await p.expectFail(1002);
});
add('3.3', 'text, text with RSV1+RSV2, text (one write) -> one echo, then 1002', async (ctx) => {
  const p = await open(ctx);
  await p.send(Buffer.concat([
    p.frame({ opcode: OP.TEXT, payload: 'before' }),
    p.frame({ opcode: OP.TEXT, payload: 'bad', rsv: 6 }),
    p.frame({ opcode: OP.TEXT, payload: 'after' }),
  ]));
  await p.expectMessage(OP.TEXT, 'before');
  await p.expectFail(1002);
});
add('3.4', 'text, text with RSV3, text (1-byte chops) -> one echo, then 1002', async (ctx) => {
  const p = await open(ctx);
  await p.sendChopped(Buffer.concat([
    p.frame({ opcode: OP.TEXT, payload: 'before' }),
    p.frame({ opcode: OP.TEXT, payload: 'bad', rsv: 1 }),
    p.frame({ opcode: OP.TEXT, payload: 'after' }),
  ]), 1);
  await p.expectMessage(OP.TEXT, 'before');
  await p.expectFail(1002);
});
add('3.5', 'binary with RSV1+RSV3 -> 1002', async (ctx) => {
  const p = await open(ctx);
  await p.sendFrame({ opcode: OP.BINARY, payload: Buffer.from([0, 1, 2, 255]), rsv: 5 });
  await p.expectFail(1002);
});
add('3.6', 'ping with RSV2+RSV3 -> 1002, no pong', async (ctx) => {
  const p = await open(ctx);
  await p.sendFrame({ opcode: OP.PING, payload: 'Hello', rsv: 3 });
  await p.expectFail(1002);
});
add('3.7', 'close with all RSV bits -> 1002 (not a normal close)', async (ctx) => {
  const p = await open(ctx);
  await p.sendFrame({ opcode: OP.CLOSE, payload: closePayload(1000), rsv: 7 });
  await p.expectFail(1002);
});
add('3.8', 'continuation frame with RSV1 -> 1002', async (ctx) => {
  const p = await open(ctx);
  await p.send(Buffer.concat([
    p.frame({ opcode: OP.TEXT, payload: 'frag1', fin: false }),
    p.frame({ opcode: OP.CONT, payload: 'frag2', rsv: 4 }),
  ]));
  await p.expectFail(1002);
});
add('3.9', 'pong with RSV1 -> 1002', async (ctx) => {
  const p = await open(ctx);
  await p.sendFrame({ opcode: OP.PONG, payload: 'x', rsv: 4 });
  await p.expectFail(1002);
});

/* 4. Opcodes ---------------------------------------------------------- */
[3, 4, 5, 6, 7, 11, 12, 13, 14, 15].forEach((op, i) => {
  const id = op < 8 ? `4.1.${i + 1}` : `4.2.${i - 4}`;
  add(id, `text, frame with reserved opcode ${op}, text -> one echo, then 1002`, async (ctx) => {
    const p = await open(ctx);
    await p.send(Buffer.concat([
      p.frame({ opcode: OP.TEXT, payload: 'before' }),
      p.frame({ opcode: op, payload: i % 2 ? EMPTY : text('reserved opcode payload') }),
      p.frame({ opcode: OP.TEXT, payload: 'after' }),
    ]));
    await p.expectMessage(OP.TEXT, 'before');
    await p.expectFail(1002);
  });
});
add('4.3.1', 'reserved opcode 3 as the first frame, alone -> 1002', async (ctx) => {
  const p = await open(ctx);
  await p.sendFrame({ opcode: 3 });
  await p.expectFail(1002);
});
add('4.3.2', 'reserved opcode 11 inside a fragmented message -> 1002', async (ctx) => {
  const p = await open(ctx);
  await p.send(Buffer.concat([
    p.frame({ opcode: OP.TEXT, payload: 'frag1', fin: false }),
    p.frame({ opcode: 11, payload: 'x' }),
  ]));
  await p.expectFail(1002);
});

/* 5. Fragmentation ---------------------------------------------------- */
function fragments(p, op, parts, { pingBetween = false, last = true } = {}) {
  const out = [];
  parts.forEach((part, i) => {
    if (pingBetween && i > 0) out.push(p.frame({ opcode: OP.PING, payload: `ping-${i}` }));
    out.push(p.frame({ opcode: i === 0 ? op : OP.CONT, payload: part, fin: last && i === parts.length - 1 }));
  });
  return Buffer.concat(out);
}
function splitRandom(rng, buf, n) {
  const cuts = Array.from({ length: n - 1 }, () => rng.int(0, buf.length)).sort((a, b) => a - b);
  const parts = [];
  let prev = 0;
  for (const c of cuts.concat([buf.length])) {
    parts.push(buf.subarray(prev, c));
    prev = c;
  }
  return parts;
}

add('5.1', 'ping in 2 fragments -> 1002', async (ctx) => {
  const p = await open(ctx);
  await p.send(Buffer.concat([
    p.frame({ opcode: OP.PING, payload: 'fragment1', fin: false }),
    p.frame({ opcode: OP.CONT, payload: 'fragment2' }),
  ]));
  await p.expectFail(1002);
});
add('5.2', 'pong in 2 fragments -> 1002', async (ctx) => {
  const p = await open(ctx);
  await p.send(Buffer.concat([
    p.frame({ opcode: OP.PONG, payload: 'fragment1', fin: false }),
    p.frame({ opcode: OP.CONT, payload: 'fragment2' }),
  ]));
  await p.expectFail(1002);
});
add('5.3', 'text in 2 fragments -> whole message echoed', async (ctx) => {
  const p = await open(ctx);
  await p.send(fragments(p, OP.TEXT, [text('fragment1'), text('fragment2')]));
  await p.expectMessage(OP.TEXT, 'fragment1fragment2');
  await p.closeNormally();
});
add('5.4', 'text in 2 fragments, 1-byte chops', async (ctx) => {
  const p = await open(ctx);
  await p.sendChopped(fragments(p, OP.TEXT, [text('fragment1'), text('fragment2')]), 1);
  await p.expectMessage(OP.TEXT, 'fragment1fragment2');
  await p.closeNormally();
});
add('5.5', 'text in 2 fragments with a ping between -> pong, then the echo', async (ctx) => {
  const p = await open(ctx);
  await p.send(fragments(p, OP.TEXT, [text('fragment1'), text('fragment2')], { pingBetween: true }));
  await p.expectPong('ping-1');
  await p.expectMessage(OP.TEXT, 'fragment1fragment2');
  await p.closeNormally();
});
add('5.6', 'text in 2 fragments with a ping between, 1-byte chops', async (ctx) => {
  const p = await open(ctx);
  await p.sendChopped(fragments(p, OP.TEXT, [text('fragment1'), text('fragment2')], { pingBetween: true }), 1);
  await p.expectPong('ping-1');
  await p.expectMessage(OP.TEXT, 'fragment1fragment2');
  await p.closeNormally();
});
add('5.7', 'ping between fragments is answered before the message is complete', async (ctx) => {
  const p = await open(ctx);
  await p.sendFrame({ opcode: OP.TEXT, payload: 'fragment1', fin: false });
  await p.sendFrame({ opcode: OP.PING, payload: 'mid-message' });
  await p.expectPong('mid-message', 'a pong while the message is still open');
  await p.sendFrame({ opcode: OP.CONT, payload: 'fragment2' });
  await p.expectMessage(OP.TEXT, 'fragment1fragment2');
  await p.closeNormally();
});
add('5.8', 'binary in 2 fragments -> whole message echoed', async (ctx) => {
  const p = await open(ctx);
  const a = ctx.rng.bytes(100);
  const b = ctx.rng.bytes(200);
  await p.send(fragments(p, OP.BINARY, [a, b]));
  await p.expectMessage(OP.BINARY, Buffer.concat([a, b]));
  await p.closeNormally();
});
add('5.9', 'text of 64 KiB in 100 random fragments (some empty)', async (ctx) => {
  const p = await open(ctx);
  const msg = textPayload(64 * KiB);
  await p.send(fragments(p, OP.TEXT, splitRandom(ctx.rng, msg, 100)));
  await p.expectMessage(OP.TEXT, msg);
  await p.closeNormally();
});
add('5.10', 'text in 100 fragments with a ping between each -> 99 pongs, then the echo', async (ctx) => {
  const p = await open(ctx);
  const parts = Array.from({ length: 100 }, (_, i) => text(`<${i}>`));
  await p.send(fragments(p, OP.TEXT, parts, { pingBetween: true }));
  for (let i = 1; i < 100; i++) await p.expectPong(`ping-${i}`, `pong ${i} of 99`);
  await p.expectMessage(OP.TEXT, Buffer.concat(parts));
  await p.closeNormally();
});
add('5.11', 'continuation (fin=1) without a message -> 1002', async (ctx) => {
  const p = await open(ctx);
  await p.sendFrame({ opcode: OP.CONT, payload: 'non-continuation payload' });
  await p.expectFail(1002);
});
add('5.12', 'continuation (fin=0) without a message, then text -> 1002', async (ctx) => {
  const p = await open(ctx);
  await p.send(Buffer.concat([
    p.frame({ opcode: OP.CONT, payload: 'fragment1', fin: false }),
    p.frame({ opcode: OP.TEXT, payload: 'fragment2' }),
  ]));
  await p.expectFail(1002);
});
add('5.13', 'new text frame inside a fragmented text message -> 1002', async (ctx) => {
  const p = await open(ctx);
  await p.send(Buffer.concat([
    p.frame({ opcode: OP.TEXT, payload: 'fragment1', fin: false }),
    p.frame({ opcode: OP.TEXT, payload: 'fragment2' }),
  ]));
  await p.expectFail(1002);
});
add('5.14', 'binary frame inside a fragmented text message -> 1002', async (ctx) => {
  const p = await open(ctx);
  await p.send(Buffer.concat([
    p.frame({ opcode: OP.TEXT, payload: 'fragment1', fin: false }),
    p.frame({ opcode: OP.BINARY, payload: 'fragment2', fin: false }),
  ]));
  await p.expectFail(1002);
});
add('5.15', 'text, then a continuation after the final fragment -> echo, then 1002', async (ctx) => {
  const p = await open(ctx);
  await p.send(Buffer.concat([
    p.frame({ opcode: OP.TEXT, payload: 'fragment1', fin: false }),
    p.frame({ opcode: OP.CONT, payload: 'fragment2' }),
    p.frame({ opcode: OP.CONT, payload: 'fragment3', fin: false }),
    p.frame({ opcode: OP.TEXT, payload: 'fragment4' }),
  ]));
  await p.expectMessage(OP.TEXT, 'fragment1fragment2');
  await p.expectFail(1002);
});
add('5.16', 'close with fin=0 (fragmented close) -> 1002', async (ctx) => {
  const p = await open(ctx);
  await p.send(Buffer.concat([
    p.frame({ opcode: OP.CLOSE, payload: closePayload(1000), fin: false }),
    p.frame({ opcode: OP.CONT, payload: 'x' }),
  ]));
  await p.expectFail(1002);
});
add('5.17', '1000 empty fragments, then a final "final" -> echo "final"', async (ctx) => {
  const p = await open(ctx);
  const parts = Array.from({ length: 1000 }, () => EMPTY).concat([text('final')]);
  await p.send(fragments(p, OP.TEXT, parts));
  await p.expectMessage(OP.TEXT, 'final');
  await p.closeNormally();
}, 8000);
add('5.18', '1000 empty fragments and an empty final -> empty text echoed', async (ctx) => {
  const p = await open(ctx);
  await p.send(fragments(p, OP.TEXT, Array.from({ length: 1001 }, () => EMPTY)));
  await p.expectMessage(OP.TEXT, EMPTY);
  await p.closeNormally();
}, 8000);
add('5.19', 'binary in 3 fragments, the last one empty', async (ctx) => {
  const p = await open(ctx);
  const a = ctx.rng.bytes(10);
  const b = ctx.rng.bytes(20);
  await p.send(fragments(p, OP.BINARY, [a, b, EMPTY]));
  await p.expectMessage(OP.BINARY, Buffer.concat([a, b]));
  await p.closeNormally();
});
add('5.20', 'text in 5 fragments sent 50 ms apart with pings -> pongs as they come, then the echo', async (ctx) => {
  const p = await open(ctx);
  for (let i = 0; i < 5; i++) {
    await p.sendFrame({ opcode: i ? OP.CONT : OP.TEXT, payload: `f${i}`, fin: i === 4 });
    if (i < 4) {
      await p.sendFrame({ opcode: OP.PING, payload: `p${i}` });
      await p.expectPong(`p${i}`);
      await W.sleep(50);
    }
  }
  await p.expectMessage(OP.TEXT, 'f0f1f2f3f4');
  await p.closeNormally();
});

/* 6. UTF-8 ------------------------------------------------------------ */
{
  const VALID = [
    ['ASCII and Latin-1', 'Hello-µ@ßöäüàá-UTF-8!!'],
    ['Greek "kosme"', 'κόσμε'],
    ['U+0000', '\u0000'],
    ['U+0080', '\u0080'],
    ['U+07FF', '\u07ff'],
    ['U+0800', '\u0800'],
    ['U+D7FF', '\ud7ff'],
    ['U+E000', '\ue000'],
    ['U+FEFF (BOM)', '\ufeff'],
    ['U+FFFD', '\ufffd'],
    ['U+FFFE', '\ufffe'],
    ['U+FFFF', '\uffff'],
    ['U+10000', '\u{10000}'],
    ['U+10FFFF', '\u{10ffff}'],
    ['mixed 1- to 4-byte characters', 'a\u00e9\u20ac\u{1d11e}\u{1f600}z'],
  ];
  VALID.forEach(([name, s], i) => {
    const msg = text(s);
    if (!W.utf8ValidWhatwg(msg) || W.utf8FirstInvalid(msg) !== -1) throw new Error(`bad table entry ${name}`);
    add(`6.1.${i + 1}`, `valid UTF-8 ${name}, one frame`, async (ctx) => {
      const p = await open(ctx);
      await p.sendFrame({ opcode: OP.TEXT, payload: msg });
      await p.expectMessage(OP.TEXT, msg);
      await p.closeNormally();
    });
    add(`6.2.${i + 1}`, `valid UTF-8 ${name}, one fragment per byte`, async (ctx) => {
      const p = await open(ctx);
      const parts = msg.length ? Array.from(msg, (b) => Buffer.from([b])) : [EMPTY];
      await p.send(fragments(p, OP.TEXT, parts));
      await p.expectMessage(OP.TEXT, msg);
      await p.closeNormally();
    });
    add(`6.3.${i + 1}`, `valid UTF-8 ${name}, one frame in 1-byte chops`, async (ctx) => {
      const p = await open(ctx);
      await p.sendChopped(p.frame({ opcode: OP.TEXT, payload: msg }), 1);
      await p.expectMessage(OP.TEXT, msg);
      await p.closeNormally();
    });
  });

  const INVALID = [
    ['"kosme", U+D800, "edited"', 'ceba e1bdb9 cf83 cebc ceb5 eda080 656469746564'],
    ['lone continuation 80', '80'],
    ['lone continuation BF', 'bf'],
    ['continuations 80 BF 80 BF', '80bf80bf'],
    ['C0 (never valid)', 'c0'],
    ['overlong "/" C0 AF', 'c0af'],
    ['overlong C1 BF', 'c1bf'],
    ['overlong "/" E0 80 AF', 'e080af'],
    ['overlong U+07FF E0 9F BF', 'e09fbf'],
    ['overlong "/" F0 80 80 AF', 'f08080af'],
    ['overlong U+FFFF F0 8F BF BF', 'f08fbfbf'],
    ['overlong NUL C0 80', 'c080'],
    ['5-byte form F8 88 80 80 80', 'f888808080'],
    ['6-byte form FC 84 80 80 80 80', 'fc8480808080'],
    ['surrogate U+D800', 'eda080'],
    ['surrogate U+DB7F', 'edadbf'],
    ['surrogate U+DB80', 'edae80'],
    ['surrogate U+DBFF', 'edafbf'],
    ['surrogate U+DC00', 'edb080'],
    ['surrogate U+DF80', 'edbe80'],
    ['surrogate U+DFFF', 'edbfbf'],
    ['surrogate pair U+D800 U+DC00', 'eda080edb080'],
    ['U+110000 (F4 90 80 80)', 'f4908080'],
    ['F5 80 80 80', 'f5808080'],
    ['U+1FFFFF (F7 BF BF BF)', 'f7bfbfbf'],
    ['FE', 'fe'],
    ['FF', 'ff'],
    ['FE FE FF FF', 'fefeffff'],
    ['C2 then ASCII', 'c241'],
    ['E1 80 then ASCII', 'e18041'],
    ['F1 80 80 then ASCII', 'f1808041'],
  ];
  INVALID.forEach(([name, h], i) => {
    const msg = Buffer.concat([text('valid prefix κόσμε '), bytes(h), text(' valid suffix')]);
    const bad = W.utf8FirstInvalid(msg);
    if (W.utf8ValidWhatwg(msg) || bad < 0 || bad >= msg.length) throw new Error(`bad table entry ${name}`);
    add(`6.4.${i + 1}`, `invalid UTF-8 ${name}, one frame -> 1007`, async (ctx) => {
      const p = await open(ctx);
      await p.sendFrame({ opcode: OP.TEXT, payload: msg });
      await p.expectFail(1007);
    });
    add(`6.5.${i + 1}`, `invalid UTF-8 ${name}, one fragment per byte -> 1007`, async (ctx) => {
      const p = await open(ctx);
      await p.send(fragments(p, OP.TEXT, Array.from(msg, (b) => Buffer.from([b]))));
      await p.expectFail(1007);
    });
    add(`6.6.${i + 1}`, `fail fast: ${name}, prefix through the bad byte as a non-final fragment -> 1007`, async (ctx) => {
      const p = await open(ctx);
      await p.sendFrame({ opcode: OP.TEXT, payload: msg.subarray(0, bad + 1), fin: false });
      await p.expectFail(1007); // nothing more is sent: the message is not complete
    });
    add(`6.7.${i + 1}`, `fail fast: ${name}, a frame cut off right after the bad byte -> 1007`, async (ctx) => {
      const p = await open(ctx);
      const key = crypto.randomBytes(4);
      const head = encodeHeader({ opcode: OP.TEXT, len: msg.length, key });
      await p.send(Buffer.concat([head, maskInPlace(Buffer.from(msg.subarray(0, bad + 1)), key)]));
      await p.expectFail(1007);
    });
  });

  const TRUNCATED = [
    ['"kosme" cut after CE', 'ceba e1bdb9 cf83 cebc ce'],
    ['E0 A0 at the end', 'e0a0'],
    ['F0 90 80 at the end', 'f09080'],
  ];
  TRUNCATED.forEach(([name, h], i) => {
    const msg = Buffer.concat([text('prefix '), bytes(h)]);
    if (W.utf8ValidWhatwg(msg) || W.utf8FirstInvalid(msg) !== msg.length) throw new Error(`bad table entry ${name}`);
    add(`6.8.${i + 1}`, `message ending inside a character (${name}), one frame -> 1007`, async (ctx) => {
      const p = await open(ctx);
      await p.sendFrame({ opcode: OP.TEXT, payload: msg });
      await p.expectFail(1007);
    });
    add(`6.9.${i + 1}`, `message ending inside a character (${name}), per-byte fragments -> 1007`, async (ctx) => {
      const p = await open(ctx);
      await p.send(fragments(p, OP.TEXT, Array.from(msg, (b) => Buffer.from([b]))));
      await p.expectFail(1007);
    });
  });
  add('6.10.1', 'a character split across two fragments is valid', async (ctx) => {
    const p = await open(ctx);
    const msg = text('κ€𝄞');
    await p.send(fragments(p, OP.TEXT, [msg.subarray(0, 1), msg.subarray(1, 4), msg.subarray(4)]));
    await p.expectMessage(OP.TEXT, msg);
    await p.closeNormally();
  });
  add('6.10.2', 'fail fast: "κόσμε" fragment, F4 90 80 80 fragment (fin=0) -> 1007', async (ctx) => {
    const p = await open(ctx);
    await p.sendFrame({ opcode: OP.TEXT, payload: 'κόσμε', fin: false });
    await p.sendFrame({ opcode: OP.CONT, payload: bytes('f4908080'), fin: false });
    await p.expectFail(1007);
  });
  add('6.10.3', 'binary messages are not checked for UTF-8', async (ctx) => {
    const p = await open(ctx);
    const msg = bytes('c0afeda080fffe');
    await p.sendFrame({ opcode: OP.BINARY, payload: msg });
    await p.expectMessage(OP.BINARY, msg);
    await p.closeNormally();
  });
}

/* 7. Closing ---------------------------------------------------------- */
add('7.1.1', 'text echo, then a normal close; the server closes TCP', async (ctx) => {
  const p = await open(ctx);
  await echoCheck(p, 'Hello, world!');
  await p.closeNormally();
});
add('7.1.2', 'two close frames in one write -> one close reply, then TCP close', async (ctx) => {
  const p = await open(ctx);
  await p.send(Buffer.concat([
    p.frame({ opcode: OP.CLOSE, payload: closePayload(1000) }),
    p.frame({ opcode: OP.CLOSE, payload: closePayload(1001) }),
  ]));
  await p.expectClose(1000);
  await p.expectEnd();
});
add('7.1.3', 'close, then a ping -> no pong', async (ctx) => {
  const p = await open(ctx);
  await p.send(Buffer.concat([
    p.frame({ opcode: OP.CLOSE, payload: closePayload(1000) }),
    p.frame({ opcode: OP.PING, payload: 'after close' }),
  ]));
  await p.expectClose(1000);
  await p.expectEnd();
});
add('7.1.4', 'close, then text, binary and garbage -> all ignored', async (ctx) => {
  const p = await open(ctx);
  await p.send(Buffer.concat([
    p.frame({ opcode: OP.CLOSE, payload: closePayload(1000) }),
    p.frame({ opcode: OP.TEXT, payload: 'after close' }),
    p.frame({ opcode: OP.BINARY, payload: ctx.rng.bytes(64) }),
    Buffer.from([0x73, 0x00, 0xff, 0xff]), // reserved opcode, unmasked
  ]));
  await p.expectClose(1000);
  await p.expectEnd();
});
add('7.1.5', 'data sent after the close echo arrives is ignored', async (ctx) => {
  const p = await open(ctx);
  await p.sendClose(1000);
  await p.expectClose(1000);
  await p.sendFrame({ opcode: OP.TEXT, payload: 'too late' });
  await p.expectEnd();
});
add('7.1.6', 'first fragment, close, last fragment -> only the close reply', async (ctx) => {
  const p = await open(ctx);
  await p.send(Buffer.concat([
    p.frame({ opcode: OP.TEXT, payload: 'fragment1', fin: false }),
    p.frame({ opcode: OP.CLOSE, payload: closePayload(1000) }),
    p.frame({ opcode: OP.CONT, payload: 'fragment2' }),
  ]));
  await p.expectClose(1000);
  await p.expectEnd();
});
add('7.1.7', '256 KiB text, close and a ping in one write -> echo, close, no pong', async (ctx) => {
  const p = await open(ctx);
  const msg = textPayload(256 * KiB);
  await p.send(Buffer.concat([
    p.frame({ opcode: OP.TEXT, payload: msg }),
    p.frame({ opcode: OP.CLOSE, payload: closePayload(1000) }),
    p.frame({ opcode: OP.PING, payload: 'after close' }),
  ]));
  await p.expectMessage(OP.TEXT, msg);
  await p.expectClose(1000);
  await p.expectEnd();
});
add('7.1.8', 'close frame in 1-byte chops -> close reply', async (ctx) => {
  const p = await open(ctx);
  await p.sendChopped(p.frame({ opcode: OP.CLOSE, payload: closePayload(1000, 'chopped') }), 1);
  await p.expectClose(1000);
  await p.expectEnd();
});
add('7.2.1', 'close without payload -> close without payload', async (ctx) => {
  const p = await open(ctx);
  await p.sendFrame({ opcode: OP.CLOSE });
  await p.expectClose(null);
  await p.expectEnd();
});
add('7.2.2', 'close with a 1-byte payload -> 1002', async (ctx) => {
  const p = await open(ctx);
  await p.sendFrame({ opcode: OP.CLOSE, payload: Buffer.from([0x03]) });
  await p.expectFail(1002);
});
add('7.2.3', 'close 1000 without reason -> 1000', async (ctx) => {
  const p = await open(ctx);
  await p.sendClose(1000);
  await p.expectClose(1000);
  await p.expectEnd();
});
add('7.2.4', 'close 1000 with a reason -> 1000', async (ctx) => {
  const p = await open(ctx);
  await p.closeNormally(1000, 'Normal closure, goodbye');
});
add('7.2.5', 'close 1000 with a 123-byte reason -> 1000', async (ctx) => {
  const p = await open(ctx);
  await p.closeNormally(1000, '*'.repeat(123));
});
add('7.2.6', 'close with a 126-byte payload -> 1002', async (ctx) => {
  const p = await open(ctx);
  await p.sendFrame({ opcode: OP.CLOSE, payload: closePayload(1000, '*'.repeat(124)) });
  await p.expectFail(1002);
});
add('7.2.7', 'close 1000 with a multi-byte UTF-8 reason -> 1000', async (ctx) => {
  const p = await open(ctx);
  await p.closeNormally(1000, 'κόσμε € 𝄞');
});
add('7.2.8', 'close reason with invalid UTF-8 (surrogate) -> 1007', async (ctx) => {
  const p = await open(ctx);
  await p.sendFrame({ opcode: OP.CLOSE, payload: closePayload(1000, bytes('ceba e1bdb9 cf83 cebc ceb5 eda080 656469746564')) });
  await p.expectFail(1007);
});
add('7.2.9', 'close reason ending inside a character -> 1007', async (ctx) => {
  const p = await open(ctx);
  await p.sendFrame({ opcode: OP.CLOSE, payload: closePayload(1000, bytes('ceba e1bdb9 ce')) });
  await p.expectFail(1007);
});
[1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999].forEach((code, i) => {
  add(`7.3.${i + 1}`, `close with valid code ${code} -> echoed`, async (ctx) => {
    const p = await open(ctx);
    await p.sendClose(code, 'reason');
    await p.expectClose(code);
    await p.expectEnd();
  });
});
[0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535].forEach((code, i) => {
  add(`7.4.${i + 1}`, `close with invalid code ${code} -> 1002`, async (ctx) => {
    const p = await open(ctx);
    await p.sendClose(code, 'reason');
    await p.expectFail(1002);
  });
});

/* 9. Limits and performance ------------------------------------------- */
add('9.1', '16 MiB text message round trip', async (ctx) => {
  const p = await open(ctx);
  const msg = textPayload(16 * MiB);
  await p.sendFrame({ opcode: OP.TEXT, payload: msg });
  await p.expectMessage(OP.TEXT, msg);
  await p.closeNormally();
}, BIG);
add('9.2', '16 MiB binary message round trip', async (ctx) => {
  const p = await open(ctx);
  const msg = ctx.rng.bytes(16 * MiB);
  await p.sendFrame({ opcode: OP.BINARY, payload: msg });
  await p.expectMessage(OP.BINARY, msg);
  await p.closeNormally();
}, BIG);
add('9.3', '16 MiB text message in 64 KiB fragments', async (ctx) => {
  const p = await open(ctx);
  const msg = textPayload(16 * MiB);
  const parts = [];
  for (let i = 0; i < msg.length; i += 64 * KiB) parts.push(msg.subarray(i, i + 64 * KiB));
  await p.send(fragments(p, OP.TEXT, parts));
  await p.expectMessage(OP.TEXT, msg);
  await p.closeNormally();
}, BIG);
add('9.4', '1000 small messages pipelined in one write, echoed in order', async (ctx) => {
  const p = await open(ctx);
  const msgs = Array.from({ length: 1000 }, (_, i) => text(`message #${i}`));
  await p.send(Buffer.concat(msgs.map((m) => p.frame({ opcode: OP.TEXT, payload: m }))));
  for (let i = 0; i < msgs.length; i++) await p.expectMessage(OP.TEXT, msgs[i], `echo ${i + 1} of 1000`);
  await p.closeNormally();
}, 10000);
add('9.5', '1000 messages of 0..300 bytes, text and binary mixed, in one write', async (ctx) => {
  const p = await open(ctx);
  const msgs = Array.from({ length: 1000 }, (_, i) =>
    i % 2 ? [OP.BINARY, ctx.rng.bytes(ctx.rng.int(0, 300))] : [OP.TEXT, textPayload(ctx.rng.int(0, 300))]);
  await p.send(Buffer.concat(msgs.map(([op, m]) => p.frame({ opcode: op, payload: m }))));
  for (let i = 0; i < msgs.length; i++) await p.expectMessage(msgs[i][0], msgs[i][1], `echo ${i + 1} of 1000`);
  await p.closeNormally();
}, 10000);
add('9.6', 'a frame declaring 16 MiB + 1 bytes (over the limit) -> 1009 before the payload', async (ctx) => {
  const p = await open(ctx);
  await p.send(encodeHeader({ opcode: OP.BINARY, len: 16 * MiB + 1, key: crypto.randomBytes(4) }));
  await p.expectFail(1009);
});
add('9.7', 'a fragmented message growing past 16 MiB -> 1009', async (ctx) => {
  const p = await open(ctx);
  await p.sendFrame({ opcode: OP.BINARY, payload: ctx.rng.bytes(8 * MiB), fin: false });
  await p.send(encodeHeader({ opcode: OP.CONT, len: 8 * MiB + 1, key: crypto.randomBytes(4) }));
  await p.expectFail(1009);
}, BIG);
add('9.8', '10 messages of 1 MiB pipelined in one write', async (ctx) => {
  const p = await open(ctx);
  const msgs = Array.from({ length: 10 }, () => ctx.rng.bytes(MiB));
  await p.send(Buffer.concat(msgs.map((m) => p.frame({ opcode: OP.BINARY, payload: m }))));
  for (let i = 0; i < msgs.length; i++) await p.expectMessage(OP.BINARY, msgs[i], `echo ${i + 1} of 10`);
  await p.closeNormally();
}, BIG);

add('9.9', 'binary 1 MiB in 300 fragments with a ping after each, in random chops', async (ctx) => {
  const p = await open(ctx);
  const msg = ctx.rng.bytes(MiB);
  const parts = splitRandom(ctx.rng, msg, 300);
  await p.sendChopped(fragments(p, OP.BINARY, parts, { pingBetween: true }), () => ctx.rng.int(1, 5000));
  await p.expectPongs(parts.slice(1).map((_, i) => `ping-${i + 1}`), (i) => `pong ${i + 1} of ${parts.length - 1}`);
  await p.expectMessage(OP.BINARY, msg);
  await p.closeNormally();
}, BIG);
add('9.10', 'random stream: 400 frames of every kind in random chops, events in order', async (ctx) => {
  const p = await open(ctx);
  const { bytes: stream, expect } = W.randomStream(p, ctx.rng, 400);
  await p.sendChopped(stream, () => (ctx.rng.next() < 0.3 ? ctx.rng.int(1, 10) : ctx.rng.int(1, 20000)));
  await W.expectEvents(p, expect);
  await p.closeNormally();
}, BIG);

/* 10. Masking --------------------------------------------------------- */
add('10.1', 'unmasked text frame from the client -> 1002', async (ctx) => {
  const p = await open(ctx);
  await p.sendFrame({ opcode: OP.TEXT, payload: 'unmasked', mask: false });
  await p.expectFail(1002);
});
add('10.2', 'valid text, then an unmasked one -> echo, then 1002', async (ctx) => {
  const p = await open(ctx);
  await p.send(Buffer.concat([
    p.frame({ opcode: OP.TEXT, payload: 'masked' }),
    p.frame({ opcode: OP.TEXT, payload: 'unmasked', mask: false }),
  ]));
  await p.expectMessage(OP.TEXT, 'masked');
  await p.expectFail(1002);
});
add('10.3', 'unmasked ping -> 1002, no pong', async (ctx) => {
  const p = await open(ctx);
  await p.sendFrame({ opcode: OP.PING, payload: 'unmasked', mask: false });
  await p.expectFail(1002);
});
add('10.4', 'unmasked close -> 1002', async (ctx) => {
  const p = await open(ctx);
  await p.sendFrame({ opcode: OP.CLOSE, payload: closePayload(1000), mask: false });
  await p.expectFail(1002);
});
add('10.5', 'unmasked continuation inside a masked message -> 1002', async (ctx) => {
  const p = await open(ctx);
  await p.send(Buffer.concat([
    p.frame({ opcode: OP.TEXT, payload: 'frag1', fin: false }),
    p.frame({ opcode: OP.CONT, payload: 'frag2', mask: false }),
  ]));
  await p.expectFail(1002);
});
add('10.6', 'mask bit set with an all-zero key is a valid masked frame', async (ctx) => {
  const p = await open(ctx);
  await p.sendFrame({ opcode: OP.TEXT, payload: 'zero key', mask: Buffer.alloc(4) });
  await p.expectMessage(OP.TEXT, 'zero key');
  await p.closeNormally();
});

/* H. Opening handshake ------------------------------------------------ */
add('H.1', 'valid request -> strict 101, then echo and close', async (ctx) => {
  const p = await open(ctx);
  await echoCheck(p);
  await p.closeNormally();
});
add('H.2', 'request in 1-byte chops -> 101', async (ctx) => {
  const p = await open(ctx, { chop: 1 });
  await echoCheck(p);
  await p.closeNormally();
});
add('H.3', 'a frame pipelined in the same write as the request -> 101, then its echo', async (ctx) => {
  const f = encodeFrame({ opcode: OP.TEXT, payload: 'pipelined', mask: true });
  const p = await open(ctx, { trailing: f });
  await p.expectMessage(OP.TEXT, 'pipelined');
  await p.closeNormally();
});
add('H.4', 'offered subprotocols the server does not know -> 101 without one', async (ctx) => {
  const p = await open(ctx, { protocols: ['chat', 'superchat'] });
  await echoCheck(p);
  await p.closeNormally();
});
add('H.5', 'Connection: keep-alive, Upgrade and Upgrade: WebSocket -> 101', async (ctx) => {
  const sock = await connectRaw(ctx);
  const { key, bytes: req } = buildRequest(ctx, { replace: { Connection: 'keep-alive, Upgrade', Upgrade: 'WebSocket' } });
  sock.write(req);
  const { head, rest } = await W.readHead(sock, 'opening handshake');
  check101(head, key, null);
  const p = new W.Peer(ctx, sock, 'client', rest);
  ctx.defer(() => p.destroy());
  await echoCheck(p);
  await p.closeNormally();
});
add('H.6', 'missing Sec-WebSocket-Key -> 400 and TCP close', async (ctx) => {
  await expectHttpError(ctx, buildRequest(ctx, { drop: ['Sec-WebSocket-Key'] }).bytes, 400);
});
add('H.7', 'Sec-WebSocket-Version: 8 -> 426 with Sec-WebSocket-Version: 13', async (ctx) => {
  const head = await expectHttpError(ctx, buildRequest(ctx, { replace: { 'Sec-WebSocket-Version': '8' } }).bytes, 426);
  const v = head.tokens('sec-websocket-version');
  if (!v.includes('13')) fail(`426 response without "Sec-WebSocket-Version: 13" (got ${JSON.stringify(head.get('sec-websocket-version'))})`);
});
add('H.8', 'POST -> 400', async (ctx) => {
  await expectHttpError(ctx, buildRequest(ctx, { method: 'POST' }).bytes, 400);
});
add('H.9', 'garbage bytes instead of a request -> 400 and TCP close', async (ctx) => {
  await expectHttpError(ctx, Buffer.concat([Buffer.from([0x16, 0x03, 0x01, 0x00, 0xa5, 0x01]), ctx.rng.bytes(64)]), 400);
});
add('H.10', 'valid request followed by garbage in the same write -> 101, then 1002', async (ctx) => {
  const p = await open(ctx, { trailing: Buffer.from('this is not a websocket frame\r\n', 'latin1') });
  await p.expectFail(1002);
});
add('H.11', 'request with Content-Length and a garbage body -> refused (400) or 101 then 1002', async (ctx) => {
  const sock = await connectRaw(ctx);
  const body = Buffer.from('garbage body!!!!', 'latin1');
  const { key, bytes: req } = buildRequest(ctx, { add: [['Content-Length', String(body.length)]] });
  sock.write(Buffer.concat([req, body]));
  const { head, rest } = await W.readHead(sock, 'response');
  if (/^HTTP\/1\.1 400( |$)/.test(head.start)) return; // refusing is fine
  check101(head, key, null);
  const p = new W.Peer(ctx, sock, 'client', rest);
  ctx.defer(() => p.destroy());
  await p.expectFail(1002);
});
add('H.12', '9 KiB header -> 431 and TCP close', async (ctx) => {
  const req = buildRequest(ctx, { add: [['X-Padding', 'p'.repeat(9 * KiB)]] }).bytes;
  await expectHttpError(ctx, req, 431);
});
add('H.13', 'missing Upgrade header -> 400', async (ctx) => {
  await expectHttpError(ctx, buildRequest(ctx, { drop: ['Upgrade'] }).bytes, 400);
});
add('H.14', 'missing Connection: Upgrade -> 400', async (ctx) => {
  await expectHttpError(ctx, buildRequest(ctx, { replace: { Connection: 'keep-alive' } }).bytes, 400);
});
add('H.15', 'HTTP/1.0 request -> 400', async (ctx) => {
  await expectHttpError(ctx, buildRequest(ctx, { version: 'HTTP/1.0' }).bytes, 400);
});
add('H.16', 'Sec-WebSocket-Key of 15 bytes -> 400', async (ctx) => {
  const key = crypto.randomBytes(15).toString('base64');
  await expectHttpError(ctx, buildRequest(ctx, { replace: { 'Sec-WebSocket-Key': key } }).bytes, 400);
});
add('H.17', 'missing Host -> 400', async (ctx) => {
  await expectHttpError(ctx, buildRequest(ctx, { drop: ['Host'] }).bytes, 400);
});
add('H.18', 'two Sec-WebSocket-Key headers -> 400', async (ctx) => {
  const key = crypto.randomBytes(16).toString('base64');
  await expectHttpError(ctx, buildRequest(ctx, { add: [['Sec-WebSocket-Key', key]] }).bytes, 400);
});
add('H.19', '40 header lines -> 431', async (ctx) => {
  const many = Array.from({ length: 40 }, (_, i) => [`X-Header-${i}`, 'v']);
  await expectHttpError(ctx, buildRequest(ctx, { add: many }).bytes, 431);
});
add('H.20', 'missing key, request in 1-byte chops -> 400', async (ctx) => {
  await expectHttpError(ctx, buildRequest(ctx, { drop: ['Sec-WebSocket-Key'] }).bytes, 400, { chop: 1 });
});

add('H.22', 'Origin, a query string and an offered permessage-deflate -> 101 without extensions', async (ctx) => {
  const sock = await connectRaw(ctx);
  const { key, bytes: req } = buildRequest(ctx, {
    path: '/chat?room=1&x=%20',
    add: [['Origin', 'http://example.com'], ['Sec-WebSocket-Extensions', 'permessage-deflate; client_max_window_bits']],
  });
  sock.write(req);
  const { head, rest } = await W.readHead(sock, 'opening handshake');
  check101(head, key, null); // fails on any Sec-WebSocket-Extensions in the answer
  const p = new W.Peer(ctx, sock, 'client', rest);
  ctx.defer(() => p.destroy());
  await echoCheck(p);
  await p.closeNormally();
});

/*
 * H.21 needs 10 s of idling; rather than wait inside the case, main() opens
 * the idle connection before the first case and H.21 checks on it last.
 */
const HS_TIMEOUT = 10000; // the library's default handshake timeout
const idle = { sock: null, t0: 0, endAt: 0, bytes: 0, err: null };
function startIdle(host, port, ca) {
  idle.t0 = Date.now();
  idle.sock = dial(host, port, ca).sock; // a TLS socket holds the write until its handshake is done
  idle.sock.on('data', (d) => (idle.bytes += d.length));
  idle.sock.on('end', () => (idle.endAt = idle.endAt || Date.now()));
  idle.sock.on('error', (e) => (idle.err = idle.err || e));
  idle.sock.on('close', () => (idle.endAt = idle.endAt || Date.now()));
  idle.sock.write('GET / HTTP/1.1\r\nHost: x\r\n'); // half a request
}
add('H.21', `half a request, then silence -> dropped after the ${HS_TIMEOUT / 1000} s handshake timeout`, async (ctx) => {
  if (!idle.sock) fail('the idle connection was not started');
  ctx.defer(() => idle.sock.destroy());
  ctx.waiting = 'the server to drop the idle connection';
  while (!idle.endAt && Date.now() - idle.t0 < HS_TIMEOUT + 2500) await W.sleep(50);
  const after = (idle.endAt || Date.now()) - idle.t0;
  if (!idle.endAt) fail(`idle connection still open ${after} ms after connecting`);
  if (after < HS_TIMEOUT - 500) fail(`idle connection dropped after ${after} ms, before the handshake timeout`);
  if (idle.err) fail(`idle connection reset (${idle.err.code}) instead of a clean TCP close`);
  if (idle.bytes) fail(`server sent ${idle.bytes} bytes to a connection that never finished its request`);
}, BIG);

/* ---------------------------------------------------------------------
 * Main
 * ------------------------------------------------------------------- */

async function main() {
  let opts;
  try {
    opts = W.parseArgs(process.argv.slice(2), { '--port': 'port', '-p': 'port', '--host': 'host', '--tls': 'tls' });
  } catch (e) {
    console.error(`client_cases: ${e.message}`);
    process.exit(2);
  }
  if (opts.help || (!opts.list && !opts.port)) {
    console.error('usage: node client_cases.js --port PORT [--host 127.0.0.1] [--tls CERTDIR] [--case ID]... [--list] [--verbose] [--seed N]');
    process.exit(2);
  }
  const host = opts.host || '127.0.0.1';
  const port = Number(opts.port);
  const ca = opts.tls ? fs.readFileSync(path.join(opts.tls, 'ca.pem')) : null;
  if (ca) console.log(`# over TLS: wss://${host}:${port}/, verified against ${path.join(opts.tls, 'ca.pem')}`);
  let n = 0;
  if (!opts.list && cases.some((c) => c.id === 'H.21' && W.selected(opts, c))) startIdle(host, port, ca);
  const code = await W.runCases('client_cases', cases, CATEGORIES, opts, () => ({
    host,
    port,
    ca,
    rng: W.makeRng(opts.seed + n++),
  }));
  process.exit(code);
}

main().catch((e) => {
  console.error(e);
  console.log('client_cases: 0 passed, 1 failed');
  process.exit(1);
});
