#!/usr/bin/env node
'use strict';
/*
 * server_cases.js - a raw-TCP fuzzing server that checks a WebSocket
 * client (build/echo_client), in the spirit of the Autobahn|Testsuite
 * fuzzing server but strict. For every case it starts the client once with
 * ws://127.0.0.1:PORT/case/ID, checks its opening handshake request, answers
 * it (or deliberately does not), sends frames and checks what comes back:
 * echoes masked with fresh keys, pongs, the exact close code, and the
 * client's exit status (0 after a clean close, non-zero after a failure).
 *
 *   node tests/conformance/server_cases.js [--client PATH] [--tls CERTDIR]
 *        [--case ID]... [--list] [--verbose] [--seed N]
 *
 * --tls: the suite's server is a TLS server (Node's tls module) with
 * CERTDIR/srv.pem and srv.key (tests/tls/certs.sh makes them), and the
 * client is started with --cafile CERTDIR/ca.pem and a wss:// URL; the
 * cases run unchanged on the plaintext inside TLS.
 *
 * The last line is "server_cases: N passed, M failed".
 */
const fs = require('fs');
const net = require('net');
const path = require('path');
const tls = require('tls');
const crypto = require('crypto');
const { spawn } = require('child_process');
const W = require('./wire');

const { OP, EMPTY, fail, textPayload, closePayload, encodeHeader, maskInPlace } = W;

const CATEGORIES = {
  1: 'framing and masking of client frames',
  2: 'pings and pongs',
  3: 'reserved bits',
  4: 'opcodes',
  5: 'fragmentation',
  6: 'UTF-8',
  7: 'closing',
  9: 'limits and performance',
  10: 'masked frames from the server',
  H: 'opening handshake',
};

const KiB = 1024;
const MiB = 1024 * 1024;
const BIG = 20000;

/* ---------------------------------------------------------------------
 * The listening side and the client process
 * ------------------------------------------------------------------- */

class Listener {
  /* certs: { cert, key } (PEM) for a TLS server; null for plain TCP. A TLS
   * connection is handed over once its handshake is done. */
  constructor(certs) {
    this.server = certs ? tls.createServer(certs) : net.createServer();
    this.queue = [];
    this.waiter = null;
    if (certs) this.server.on('tlsClientError', () => {}); // the case sees no connection
    this.server.on(certs ? 'secureConnection' : 'connection', (s) => {
      s.on('error', () => {}); // readers install their own
      s.pause();
      if (this.waiter) {
        const w = this.waiter;
        this.waiter = null;
        w(s);
      } else {
        this.queue.push(s);
      }
    });
  }
  listen() {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(0, '127.0.0.1', () => resolve(this.server.address().port));
    });
  }
  /* The next incoming connection; stale ones from earlier cases are dropped
   * by the caller when their request names another case. */
  next() {
    if (this.queue.length) return Promise.resolve(this.queue.shift());
    return new Promise((resolve) => (this.waiter = resolve));
  }
  close() {
    this.server.close();
  }
}

/* Starts the client under test; ctx.proc tracks it for the clean-up. */
function spawnClient(ctx, extraArgs = []) {
  const url = `${ctx.cafile ? 'wss' : 'ws'}://127.0.0.1:${ctx.port}/case/${ctx.id}`;
  const tlsArgs = ctx.cafile ? ['--cafile', ctx.cafile] : [];
  const child = spawn(ctx.clientPath, [...tlsArgs, url, ...extraArgs], { stdio: ['ignore', 'pipe', 'pipe'] });
  const proc = { child, out: '', exit: null };
  const keep = (s, d) => (s + d.toString()).slice(-2000);
  child.stdout.on('data', (d) => (proc.out = keep(proc.out, d)));
  child.stderr.on('data', (d) => (proc.out = keep(proc.out, d)));
  proc.exited = new Promise((resolve) => {
    child.on('exit', (code, signal) => {
      proc.exit = { code, signal };
      resolve(proc.exit);
    });
    child.on('error', (e) => {
      proc.exit = { code: null, signal: null, error: e };
      resolve(proc.exit);
    });
  });
  ctx.proc = proc;
  ctx.defer(async () => {
    if (!proc.exit) {
      proc.killed = true;
      child.kill('SIGKILL'); // our own child, by its pid
      await proc.exited;
    }
  });
  return proc;
}

/* Waits for the client to exit; returns its status. */
async function waitExit(ctx, ms = 3000) {
  const proc = ctx.proc;
  ctx.waiting = 'the client to exit';
  const r = await Promise.race([proc.exited, W.sleep(ms).then(() => null)]);
  if (!r) fail(`client did not exit within ${ms} ms`);
  if (r.error) fail(`cannot run the client: ${r.error.message}`);
  return r;
}

async function expectExit(ctx, wantZero, ms = 3000) {
  const r = await waitExit(ctx, ms);
  if (r.signal) fail(`client was killed by ${r.signal}`);
  if (wantZero && r.code !== 0) fail(`client exited with ${r.code}, want 0`);
  if (!wantZero && r.code === 0) fail('client exited with 0, want a failure status');
}

/* ---------------------------------------------------------------------
 * Handshake
 * ------------------------------------------------------------------- */

const seenKeys = new Set();

/* Accepts the client's connection and checks its request strictly. */
async function acceptRequest(ctx) {
  for (;;) {
    ctx.waiting = 'the client to connect';
    const sock = await ctx.listener.next();
    ctx.defer(() => sock.destroy());
    ctx.waiting = "the client's opening handshake";
    const { head, rest } = await W.readHead(sock, "client's request", 16 * KiB);
    const want = `GET /case/${ctx.id} HTTP/1.1`;
    if (head.start !== want && /^GET \/case\//.test(head.start)) {
      sock.destroy(); // a leftover from an earlier case
      continue;
    }
    if (head.error) fail(`malformed request: ${head.error}`);
    if (head.start !== want) fail(`request line "${head.start}", want "${want}"`);
    const host = head.get('host');
    if (host.length !== 1 || host[0] !== `127.0.0.1:${ctx.port}`)
      fail(`Host ${JSON.stringify(host)}, want "127.0.0.1:${ctx.port}"`);
    if (!head.tokens('upgrade').includes('websocket')) fail('request without "Upgrade: websocket"');
    if (!head.tokens('connection').includes('upgrade')) fail('request without "Connection: Upgrade"');
    const ver = head.get('sec-websocket-version');
    if (ver.length !== 1 || ver[0] !== '13') fail(`Sec-WebSocket-Version ${JSON.stringify(ver)}, want "13"`);
    const keys = head.get('sec-websocket-key');
    if (keys.length !== 1) fail(`${keys.length} Sec-WebSocket-Key headers`);
    const key = keys[0];
    if (!/^[A-Za-z0-9+/]{22}==$/.test(key) || Buffer.from(key, 'base64').length !== 16)
      fail(`Sec-WebSocket-Key "${key}" is not the base64 of 16 bytes`);
    if (seenKeys.has(key)) fail(`Sec-WebSocket-Key "${key}" was used before: the nonce is not fresh`);
    seenKeys.add(key);
    if (rest.length) fail(`client sent ${rest.length} bytes after its request, before the response`);
    return { sock, head, key };
  }
}

function response101(key, extra = []) {
  const lines = [
    'HTTP/1.1 101 Switching Protocols',
    'Upgrade: websocket',
    'Connection: Upgrade',
    `Sec-WebSocket-Accept: ${W.acceptFor(key)}`,
    ...extra,
  ];
  return Buffer.from(lines.join('\r\n') + '\r\n\r\n', 'latin1');
}

/*
 * Starts the client and completes the handshake. `trailing` follows the
 * response in the same write; chop sends the response in pieces.
 */
async function start(ctx, { args = [], chop = 0, trailing = EMPTY, response = null } = {}) {
  spawnClient(ctx, args);
  const { sock, key } = await acceptRequest(ctx);
  const resp = Buffer.concat([response ? response(key) : response101(key), trailing]);
  const peer = new W.Peer(ctx, sock, 'server', EMPTY);
  ctx.defer(() => peer.destroy());
  if (chop) await peer.sendChopped(resp, chop);
  else await peer.send(resp);
  ctx.peer = peer;
  return peer;
}

/* Every client frame so far was masked with a fresh key. */
function checkMaskKeys(peer) {
  const keys = peer.maskKeys;
  for (let i = 1; i < keys.length; i++)
    if (keys[i] === keys[i - 1]) fail(`two consecutive client frames use the same mask key ${keys[i]}`);
  const distinct = new Set(keys).size;
  if (keys.length >= 2 && distinct < keys.length * 0.99)
    fail(`only ${distinct} distinct mask keys in ${keys.length} client frames`);
  if (keys.length >= 4 && keys.every((k) => k === '00000000')) fail('client masks with an all-zero key');
}

/* A normal close started by us: the client echoes 1000, we close TCP
 * first, the client exits 0. */
async function endClean(ctx, peer, code = 1000, reason = 'done') {
  await peer.sendClose(code, reason);
  await peer.expectClose(code, `the client's echo of our close frame (${code})`);
  checkMaskKeys(peer);
  peer.sock.end();
  await peer.expectEnd(2000, 'the client to close TCP after ours');
  await expectExit(ctx, true);
}

/* The client must fail the connection with `code`, close TCP and exit
 * non-zero. */
async function expectClientFail(ctx, peer, code) {
  await peer.expectClose(code);
  checkMaskKeys(peer);
  await peer.sendClose(code);
  peer.sock.end();
  await peer.expectEnd(2000, 'the client to close TCP');
  await expectExit(ctx, false);
}

/* After a handshake the client must refuse: no bytes, TCP closed, exit
 * non-zero. */
async function expectHandshakeRefused(ctx, peer, ms = 3000) {
  await peer.waitFor('the client to close TCP after the bad response', () => {
    if (peer.bytesIn) fail(`client sent ${peer.bytesIn} bytes after a handshake response it should reject`);
    if (peer.ended || peer.err || peer.gone) return true;
    return undefined;
  }, ms);
  await expectExit(ctx, false);
}

/* ---------------------------------------------------------------------
 * The cases
 * ------------------------------------------------------------------- */

const cases = [];
function add(id, name, run, timeout = 5000) {
  cases.push({ id, name, run, timeout });
}
const text = (s) => Buffer.from(s, 'utf8');
const bytes = (h) => Buffer.from(h.replace(/\s+/g, ''), 'hex');

async function echoCheck(peer, s = 'still echoing') {
  await peer.sendFrame({ opcode: OP.TEXT, payload: s });
  await peer.expectMessage(OP.TEXT, s);
}

function fragments(peer, op, parts, { pingBetween = false } = {}) {
  const out = [];
  parts.forEach((part, i) => {
    if (pingBetween && i > 0) out.push(peer.frame({ opcode: OP.PING, payload: `ping-${i}` }));
    out.push(peer.frame({ opcode: i === 0 ? op : OP.CONT, payload: part, fin: i === parts.length - 1 }));
  });
  return Buffer.concat(out);
}

/* 1. Framing ---------------------------------------------------------- */
{
  const lengths = [0, 125, 126, 127, 128, 65535, 65536, 1 * MiB, 8 * MiB];
  const groups = [
    ['text', OP.TEXT, 'in one write', 0, lengths],
    ['binary', OP.BINARY, 'in one write', 0, lengths],
    ['text', OP.TEXT, 'in 1-byte chops', 1, lengths.filter((n) => n <= 65536)],
    ['binary', OP.BINARY, 'in random small chops', -1, lengths],
  ];
  groups.forEach(([opName, op, modeName, chop, lens], g) => {
    lens.forEach((len, i) => {
      const big = len >= MiB || (chop === 1 && len >= 65535);
      add(`1.${g + 1}.${i + 1}`, `${opName} message of ${len} bytes, sent ${modeName}`, async (ctx) => {
        const peer = await start(ctx);
        const payload = op === OP.TEXT ? textPayload(len) : ctx.rng.bytes(len);
        const f = peer.frame({ opcode: op, payload });
        if (chop === 0) await peer.send(f);
        else if (chop === 1) await peer.sendChopped(f, 1);
        else await peer.sendChopped(f, () => ctx.rng.int(1, len > MiB ? 65536 : 1500));
        await peer.expectMessage(op, payload);
        await endClean(ctx, peer);
      }, big ? BIG : 5000);
    });
  });
  add('1.5.1', '200 messages: every client frame masked with a fresh key', async (ctx) => {
    const peer = await start(ctx);
    const msgs = Array.from({ length: 200 }, (_, i) => text(`m${i}`));
    await peer.send(Buffer.concat(msgs.map((m) => peer.frame({ opcode: OP.TEXT, payload: m }))));
    for (const m of msgs) await peer.expectMessage(OP.TEXT, m);
    if (peer.maskKeys.length < 200) fail(`saw ${peer.maskKeys.length} mask keys for 200 echoes`);
    if (new Set(peer.maskKeys).size < 198) fail(`only ${new Set(peer.maskKeys).size} distinct mask keys in 200 frames`);
    await endClean(ctx, peer);
  });
  add('1.5.2', 'a server frame with a non-minimal length -> 1002', async (ctx) => {
    const peer = await start(ctx);
    await peer.sendFrame({ opcode: OP.TEXT, payload: 'Hello', form: 16 });
    await expectClientFail(ctx, peer, 1002);
  });
}

/* 2. Pings and pongs -------------------------------------------------- */
add('2.1', 'ping without payload -> pong without payload', async (ctx) => {
  const peer = await start(ctx);
  await peer.sendFrame({ opcode: OP.PING });
  await peer.expectPong(EMPTY);
  await endClean(ctx, peer);
});
add('2.2', 'ping with 125 bytes -> pong with the same payload', async (ctx) => {
  const peer = await start(ctx);
  const pl = ctx.rng.bytes(125);
  await peer.sendFrame({ opcode: OP.PING, payload: pl });
  await peer.expectPong(pl);
  await endClean(ctx, peer);
});
add('2.3', '10 pings in one write -> 10 pongs in order', async (ctx) => {
  const peer = await start(ctx);
  const pls = Array.from({ length: 10 }, (_, i) => text(`payload-${i}`));
  await peer.send(Buffer.concat(pls.map((pl) => peer.frame({ opcode: OP.PING, payload: pl }))));
  for (const pl of pls) await peer.expectPong(pl, `the pong for ping "${pl}"`);
  await endClean(ctx, peer);
});
add('2.4', 'ping with a 126-byte payload -> client closes with 1002', async (ctx) => {
  const peer = await start(ctx);
  await peer.sendFrame({ opcode: OP.PING, payload: Buffer.alloc(126, 'x') });
  await expectClientFail(ctx, peer, 1002);
});
add('2.5', 'unsolicited pong is ignored', async (ctx) => {
  const peer = await start(ctx);
  await peer.sendFrame({ opcode: OP.PONG, payload: 'unsolicited' });
  await echoCheck(peer);
  await endClean(ctx, peer);
});
add('2.6', 'fragmented ping -> 1002', async (ctx) => {
  const peer = await start(ctx);
  await peer.send(Buffer.concat([
    peer.frame({ opcode: OP.PING, payload: 'frag1', fin: false }),
    peer.frame({ opcode: OP.CONT, payload: 'frag2' }),
  ]));
  await expectClientFail(ctx, peer, 1002);
});
add('2.7', 'ping in 1-byte chops -> pong', async (ctx) => {
  const peer = await start(ctx);
  const pl = ctx.rng.bytes(125);
  await peer.sendChopped(peer.frame({ opcode: OP.PING, payload: pl }), 1);
  await peer.expectPong(pl);
  await endClean(ctx, peer);
});
add('2.8', 'pong with a 126-byte payload -> 1002', async (ctx) => {
  const peer = await start(ctx);
  await peer.sendFrame({ opcode: OP.PONG, payload: Buffer.alloc(126, 'x') });
  await expectClientFail(ctx, peer, 1002);
});

/* 3. Reserved bits ---------------------------------------------------- */
add('3.1', 'text with RSV1 -> 1002', async (ctx) => {
  const peer = await start(ctx);
  await peer.sendFrame({ opcode: OP.TEXT, payload: 'Hello', rsv: 4 });
  await expectClientFail(ctx, peer, 1002);
});
add('3.2', 'valid text, then binary with RSV2 -> echo, then 1002', async (ctx) => {
  const peer = await start(ctx);
  await peer.send(Buffer.concat([
    peer.frame({ opcode: OP.TEXT, payload: 'before' }),
    peer.frame({ opcode: OP.BINARY, payload: 'bad', rsv: 2 }),
    peer.frame({ opcode: OP.TEXT, payload: 'after' }),
  ]));
  await peer.expectMessage(OP.TEXT, 'before');
  await expectClientFail(ctx, peer, 1002);
});
add('3.3', 'ping with RSV3 -> 1002, no pong', async (ctx) => {
  const peer = await start(ctx);
  await peer.sendFrame({ opcode: OP.PING, payload: 'x', rsv: 1 });
  await expectClientFail(ctx, peer, 1002);
});
add('3.4', 'close with all RSV bits -> 1002', async (ctx) => {
  const peer = await start(ctx);
  await peer.sendFrame({ opcode: OP.CLOSE, payload: closePayload(1000), rsv: 7 });
  await expectClientFail(ctx, peer, 1002);
});

/* 4. Opcodes ---------------------------------------------------------- */
[3, 4, 5, 6, 7, 11, 12, 13, 14, 15].forEach((op, i) => {
  const id = op < 8 ? `4.1.${i + 1}` : `4.2.${i - 4}`;
  add(id, `text, reserved opcode ${op}, text -> echo, then 1002`, async (ctx) => {
    const peer = await start(ctx);
    await peer.send(Buffer.concat([
      peer.frame({ opcode: OP.TEXT, payload: 'before' }),
      peer.frame({ opcode: op, payload: i % 2 ? EMPTY : text('payload') }),
      peer.frame({ opcode: OP.TEXT, payload: 'after' }),
    ]));
    await peer.expectMessage(OP.TEXT, 'before');
    await expectClientFail(ctx, peer, 1002);
  });
});

/* 5. Fragmentation ---------------------------------------------------- */
add('5.1', 'text in 2 fragments -> whole message echoed', async (ctx) => {
  const peer = await start(ctx);
  await peer.send(fragments(peer, OP.TEXT, [text('fragment1'), text('fragment2')]));
  await peer.expectMessage(OP.TEXT, 'fragment1fragment2');
  await endClean(ctx, peer);
});
add('5.2', 'text in 2 fragments with a ping between -> pong, then the echo', async (ctx) => {
  const peer = await start(ctx);
  await peer.send(fragments(peer, OP.TEXT, [text('fragment1'), text('fragment2')], { pingBetween: true }));
  await peer.expectPong('ping-1');
  await peer.expectMessage(OP.TEXT, 'fragment1fragment2');
  await endClean(ctx, peer);
});
add('5.3', 'ping between fragments is answered before the message is complete', async (ctx) => {
  const peer = await start(ctx);
  await peer.sendFrame({ opcode: OP.TEXT, payload: 'fragment1', fin: false });
  await peer.sendFrame({ opcode: OP.PING, payload: 'mid-message' });
  await peer.expectPong('mid-message', 'a pong while the message is still open');
  await peer.sendFrame({ opcode: OP.CONT, payload: 'fragment2' });
  await peer.expectMessage(OP.TEXT, 'fragment1fragment2');
  await endClean(ctx, peer);
});
add('5.4', 'text in 100 fragments with a ping between each -> 99 pongs, then the echo', async (ctx) => {
  const peer = await start(ctx);
  const parts = Array.from({ length: 100 }, (_, i) => text(`<${i}>`));
  await peer.send(fragments(peer, OP.TEXT, parts, { pingBetween: true }));
  for (let i = 1; i < 100; i++) await peer.expectPong(`ping-${i}`, `pong ${i} of 99`);
  await peer.expectMessage(OP.TEXT, Buffer.concat(parts));
  await endClean(ctx, peer);
});
add('5.5', 'continuation without a message -> 1002', async (ctx) => {
  const peer = await start(ctx);
  await peer.sendFrame({ opcode: OP.CONT, payload: 'orphan' });
  await expectClientFail(ctx, peer, 1002);
});
add('5.6', 'new text frame inside a fragmented message -> 1002', async (ctx) => {
  const peer = await start(ctx);
  await peer.send(Buffer.concat([
    peer.frame({ opcode: OP.TEXT, payload: 'fragment1', fin: false }),
    peer.frame({ opcode: OP.TEXT, payload: 'fragment2' }),
  ]));
  await expectClientFail(ctx, peer, 1002);
});
add('5.7', 'fragmented close -> 1002', async (ctx) => {
  const peer = await start(ctx);
  await peer.send(Buffer.concat([
    peer.frame({ opcode: OP.CLOSE, payload: closePayload(1000), fin: false }),
    peer.frame({ opcode: OP.CONT, payload: 'x' }),
  ]));
  await expectClientFail(ctx, peer, 1002);
});
add('5.8', '1000 empty fragments, then a final "final" -> echo "final"', async (ctx) => {
  const peer = await start(ctx);
  const parts = Array.from({ length: 1000 }, () => EMPTY).concat([text('final')]);
  await peer.send(fragments(peer, OP.TEXT, parts));
  await peer.expectMessage(OP.TEXT, 'final');
  await endClean(ctx, peer);
}, 8000);
add('5.9', 'binary in 3 fragments, the last one empty', async (ctx) => {
  const peer = await start(ctx);
  const a = ctx.rng.bytes(100);
  const b = ctx.rng.bytes(70000);
  await peer.send(fragments(peer, OP.BINARY, [a, b, EMPTY]));
  await peer.expectMessage(OP.BINARY, Buffer.concat([a, b]));
  await endClean(ctx, peer);
});

/* 6. UTF-8 ------------------------------------------------------------ */
{
  const VALID = [
    ['Greek "kosme"', 'κόσμε'],
    ['U+0080 and U+07FF', '\u0080\u07ff'],
    ['U+0800 and U+FFFF', '\u0800\uffff'],
    ['U+10000 and U+10FFFF', '\u{10000}\u{10ffff}'],
    ['U+D7FF, U+E000, U+FFFE', '\ud7ff\ue000\ufffe'],
  ];
  VALID.forEach(([name, s], i) => {
    const msg = text(s);
    add(`6.1.${i + 1}`, `valid UTF-8 ${name}, one frame`, async (ctx) => {
      const peer = await start(ctx);
      await peer.sendFrame({ opcode: OP.TEXT, payload: msg });
      await peer.expectMessage(OP.TEXT, msg);
      await endClean(ctx, peer);
    });
    add(`6.2.${i + 1}`, `valid UTF-8 ${name}, one fragment per byte`, async (ctx) => {
      const peer = await start(ctx);
      await peer.send(fragments(peer, OP.TEXT, Array.from(msg, (b) => Buffer.from([b]))));
      await peer.expectMessage(OP.TEXT, msg);
      await endClean(ctx, peer);
    });
  });
  const INVALID = [
    ['"kosme", U+D800, "edited"', 'ceba e1bdb9 cf83 cebc ceb5 eda080 656469746564'],
    ['lone continuation 80', '80'],
    ['overlong "/" C0 AF', 'c0af'],
    ['overlong "/" E0 80 AF', 'e080af'],
    ['overlong U+FFFF F0 8F BF BF', 'f08fbfbf'],
    ['surrogate U+DFFF', 'edbfbf'],
    ['U+110000 (F4 90 80 80)', 'f4908080'],
    ['F5 80 80 80', 'f5808080'],
    ['FE', 'fe'],
    ['C2 then ASCII', 'c241'],
  ];
  INVALID.forEach(([name, h], i) => {
    const msg = Buffer.concat([text('valid prefix κόσμε '), bytes(h), text(' valid suffix')]);
    const bad = W.utf8FirstInvalid(msg);
    if (W.utf8ValidWhatwg(msg) || bad < 0 || bad >= msg.length) throw new Error(`bad table entry ${name}`);
    add(`6.3.${i + 1}`, `invalid UTF-8 ${name}, one frame -> 1007`, async (ctx) => {
      const peer = await start(ctx);
      await peer.sendFrame({ opcode: OP.TEXT, payload: msg });
      await expectClientFail(ctx, peer, 1007);
    });
    add(`6.4.${i + 1}`, `fail fast: ${name}, prefix through the bad byte as a non-final fragment -> 1007`, async (ctx) => {
      const peer = await start(ctx);
      await peer.sendFrame({ opcode: OP.TEXT, payload: msg.subarray(0, bad + 1), fin: false });
      await expectClientFail(ctx, peer, 1007);
    });
    add(`6.5.${i + 1}`, `fail fast: ${name}, a frame cut off right after the bad byte -> 1007`, async (ctx) => {
      const peer = await start(ctx);
      await peer.send(Buffer.concat([encodeHeader({ opcode: OP.TEXT, len: msg.length }), msg.subarray(0, bad + 1)]));
      await expectClientFail(ctx, peer, 1007);
    });
  });
  add('6.6.1', 'message ending inside a character -> 1007', async (ctx) => {
    const peer = await start(ctx);
    await peer.sendFrame({ opcode: OP.TEXT, payload: bytes('ceba e1bdb9 ce') });
    await expectClientFail(ctx, peer, 1007);
  });
  add('6.6.2', 'message ending inside a character, per-byte fragments -> 1007', async (ctx) => {
    const peer = await start(ctx);
    await peer.send(fragments(peer, OP.TEXT, Array.from(bytes('41 f09080'), (b) => Buffer.from([b]))));
    await expectClientFail(ctx, peer, 1007);
  });
}

/* 7. Closing ---------------------------------------------------------- */
add('7.1', 'close 1000 with a reason -> echoed 1000, client exits 0', async (ctx) => {
  const peer = await start(ctx);
  await echoCheck(peer);
  await endClean(ctx, peer, 1000, 'Normal closure, goodbye');
});
add('7.2', 'close without payload -> close without payload, exit 0', async (ctx) => {
  const peer = await start(ctx);
  await peer.sendFrame({ opcode: OP.CLOSE });
  await peer.expectClose(null);
  peer.sock.end();
  await peer.expectEnd(2000, 'the client to close TCP after ours');
  await expectExit(ctx, true);
});
add('7.3', 'close with a 1-byte payload -> 1002', async (ctx) => {
  const peer = await start(ctx);
  await peer.sendFrame({ opcode: OP.CLOSE, payload: Buffer.from([0x03]) });
  await expectClientFail(ctx, peer, 1002);
});
[0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535].forEach((code, i) => {
  add(`7.4.${i + 1}`, `close with invalid code ${code} -> 1002`, async (ctx) => {
    const peer = await start(ctx);
    await peer.sendClose(code);
    await expectClientFail(ctx, peer, 1002);
  });
});
add('7.5', 'close reason with invalid UTF-8 -> 1007', async (ctx) => {
  const peer = await start(ctx);
  await peer.sendFrame({ opcode: OP.CLOSE, payload: closePayload(1000, bytes('ceba eda080')) });
  await expectClientFail(ctx, peer, 1007);
});
add('7.6', 'close with a 126-byte payload -> 1002', async (ctx) => {
  const peer = await start(ctx);
  await peer.sendFrame({ opcode: OP.CLOSE, payload: closePayload(1000, '*'.repeat(124)) });
  await expectClientFail(ctx, peer, 1002);
});
[1001, 1002, 1011, 3000, 4999].forEach((code, i) => {
  add(`7.7.${i + 1}`, `close with valid code ${code} -> echoed, exit 0`, async (ctx) => {
    const peer = await start(ctx);
    await endClean(ctx, peer, code, 'reason');
  });
});
add('7.8', 'after the closing handshake the client waits for the server to close TCP', async (ctx) => {
  const peer = await start(ctx);
  await peer.sendClose(1000);
  await peer.expectClose(1000);
  await peer.expectSilence(300, 'the wait for the server to close TCP');
  peer.sock.end();
  await peer.expectEnd(2000, 'the client to close TCP after ours');
  await expectExit(ctx, true);
});
add('7.9', 'close, then text and a ping in one write -> only the close echo', async (ctx) => {
  const peer = await start(ctx);
  await peer.send(Buffer.concat([
    peer.frame({ opcode: OP.CLOSE, payload: closePayload(1000) }),
    peer.frame({ opcode: OP.TEXT, payload: 'after close' }),
    peer.frame({ opcode: OP.PING, payload: 'after close' }),
  ]));
  await peer.expectClose(1000);
  peer.sock.end();
  await peer.expectEnd(2000, 'the client to close TCP after ours');
  await expectExit(ctx, true);
});
add('7.10', 'server drops TCP without a close frame -> client exits non-zero', async (ctx) => {
  const peer = await start(ctx);
  await echoCheck(peer);
  peer.sock.end();
  await peer.expectEnd(2000, 'the client to close TCP');
  await expectExit(ctx, false);
});
add('7.11', 'server drops TCP in the middle of a frame -> client exits non-zero', async (ctx) => {
  const peer = await start(ctx);
  await peer.send(encodeHeader({ opcode: OP.BINARY, len: 1000 }));
  await peer.send(Buffer.alloc(10));
  peer.sock.end();
  await peer.expectEnd(2000, 'the client to close TCP');
  await expectExit(ctx, false);
});

/* 9. Limits and performance ------------------------------------------- */
add('9.1', '16 MiB text message round trip', async (ctx) => {
  const peer = await start(ctx);
  const msg = textPayload(16 * MiB);
  await peer.sendFrame({ opcode: OP.TEXT, payload: msg });
  await peer.expectMessage(OP.TEXT, msg);
  await endClean(ctx, peer);
}, BIG);
add('9.2', '16 MiB binary message in 64 KiB fragments', async (ctx) => {
  const peer = await start(ctx);
  const msg = ctx.rng.bytes(16 * MiB);
  const parts = [];
  for (let i = 0; i < msg.length; i += 64 * KiB) parts.push(msg.subarray(i, i + 64 * KiB));
  await peer.send(fragments(peer, OP.BINARY, parts));
  await peer.expectMessage(OP.BINARY, msg);
  await endClean(ctx, peer);
}, BIG);
add('9.3', '1000 small messages pipelined in one write, echoed in order', async (ctx) => {
  const peer = await start(ctx);
  const msgs = Array.from({ length: 1000 }, (_, i) => text(`message #${i}`));
  await peer.send(Buffer.concat(msgs.map((m) => peer.frame({ opcode: OP.TEXT, payload: m }))));
  for (let i = 0; i < msgs.length; i++) await peer.expectMessage(OP.TEXT, msgs[i], `echo ${i + 1} of 1000`);
  await endClean(ctx, peer);
}, 10000);
add('9.4', 'a frame declaring 16 MiB + 1 bytes (over the limit) -> 1009', async (ctx) => {
  const peer = await start(ctx);
  await peer.send(encodeHeader({ opcode: OP.BINARY, len: 16 * MiB + 1 }));
  await expectClientFail(ctx, peer, 1009);
});

add('9.5', 'binary 1 MiB in 300 fragments with a ping after each, in random chops', async (ctx) => {
  const peer = await start(ctx);
  const msg = ctx.rng.bytes(MiB);
  const cuts = Array.from({ length: 299 }, () => ctx.rng.int(0, msg.length)).sort((a, b) => a - b);
  const parts = [0, ...cuts].map((c, i, a) => msg.subarray(c, i + 1 < a.length ? a[i + 1] : msg.length));
  await peer.sendChopped(fragments(peer, OP.BINARY, parts, { pingBetween: true }), () => ctx.rng.int(1, 5000));
  await peer.expectPongs(parts.slice(1).map((_, i) => `ping-${i + 1}`), (i) => `pong ${i + 1} of ${parts.length - 1}`);
  await peer.expectMessage(OP.BINARY, msg);
  await endClean(ctx, peer);
}, BIG);
add('9.6', 'random stream: 400 frames of every kind in random chops, events in order', async (ctx) => {
  const peer = await start(ctx);
  const { bytes: stream, expect } = W.randomStream(peer, ctx.rng, 400);
  await peer.sendChopped(stream, () => (ctx.rng.next() < 0.3 ? ctx.rng.int(1, 10) : ctx.rng.int(1, 20000)));
  await W.expectEvents(peer, expect);
  await endClean(ctx, peer);
}, BIG);

/* 10. Masked frames from the server ----------------------------------- */
add('10.1', 'masked text frame from the server -> 1002', async (ctx) => {
  const peer = await start(ctx);
  await peer.sendFrame({ opcode: OP.TEXT, payload: 'masked', mask: true });
  await expectClientFail(ctx, peer, 1002);
});
add('10.2', 'valid text, then a masked one -> echo, then 1002', async (ctx) => {
  const peer = await start(ctx);
  await peer.send(Buffer.concat([
    peer.frame({ opcode: OP.TEXT, payload: 'unmasked' }),
    peer.frame({ opcode: OP.TEXT, payload: 'masked', mask: true }),
  ]));
  await peer.expectMessage(OP.TEXT, 'unmasked');
  await expectClientFail(ctx, peer, 1002);
});
add('10.3', 'masked ping from the server -> 1002, no pong', async (ctx) => {
  const peer = await start(ctx);
  await peer.sendFrame({ opcode: OP.PING, payload: 'masked', mask: true });
  await expectClientFail(ctx, peer, 1002);
});
add('10.4', 'masked close from the server -> 1002', async (ctx) => {
  const peer = await start(ctx);
  await peer.sendFrame({ opcode: OP.CLOSE, payload: closePayload(1000), mask: true });
  await expectClientFail(ctx, peer, 1002);
});

/* H. Opening handshake ------------------------------------------------ */
add('H.1', 'response in 1-byte chops -> open, echo, clean close', async (ctx) => {
  const peer = await start(ctx, { chop: 1 });
  await echoCheck(peer);
  await endClean(ctx, peer);
});
add('H.2', 'a frame in the same write as the response -> echoed', async (ctx) => {
  const f = W.encodeFrame({ opcode: OP.TEXT, payload: 'pipelined' });
  const peer = await start(ctx, { trailing: f });
  await peer.expectMessage(OP.TEXT, 'pipelined');
  await endClean(ctx, peer);
});
add('H.3', 'wrong Sec-WebSocket-Accept -> no frames, exit non-zero', async (ctx) => {
  const peer = await start(ctx, {
    response: () => response101(crypto.randomBytes(16).toString('base64')), // another key's accept
    trailing: W.encodeFrame({ opcode: OP.TEXT, payload: 'must not be echoed' }),
  });
  await expectHandshakeRefused(ctx, peer);
});
add('H.4', 'a subprotocol that was not offered -> exit non-zero', async (ctx) => {
  const peer = await start(ctx, { response: (key) => response101(key, ['Sec-WebSocket-Protocol: chat']) });
  await expectHandshakeRefused(ctx, peer);
});
add('H.5', 'status 200 -> exit non-zero', async (ctx) => {
  const peer = await start(ctx, {
    response: () => Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello', 'latin1'),
  });
  await expectHandshakeRefused(ctx, peer);
});
add('H.6', 'status 401 -> exit non-zero', async (ctx) => {
  const peer = await start(ctx, {
    response: () => Buffer.from('HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n', 'latin1'),
  });
  await expectHandshakeRefused(ctx, peer);
});
add('H.7', '101 without Upgrade: websocket -> exit non-zero', async (ctx) => {
  const peer = await start(ctx, {
    response: (key) => Buffer.from(`HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${W.acceptFor(key)}\r\n\r\n`, 'latin1'),
  });
  await expectHandshakeRefused(ctx, peer);
});
add('H.8', '101 without Connection: Upgrade -> exit non-zero', async (ctx) => {
  const peer = await start(ctx, {
    response: (key) => Buffer.from(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: ${W.acceptFor(key)}\r\n\r\n`, 'latin1'),
  });
  await expectHandshakeRefused(ctx, peer);
});
add('H.9', 'an extension the client did not offer -> exit non-zero', async (ctx) => {
  const peer = await start(ctx, { response: (key) => response101(key, ['Sec-WebSocket-Extensions: permessage-deflate']) });
  await expectHandshakeRefused(ctx, peer);
});
add('H.10', 'garbage instead of a response -> exit non-zero', async (ctx) => {
  const peer = await start(ctx, { response: () => Buffer.from('SSH-2.0-OpenSSH_9.2\r\n', 'latin1') });
  await expectHandshakeRefused(ctx, peer);
});
add('H.11', 'server closes TCP before responding -> exit non-zero', async (ctx) => {
  spawnClient(ctx);
  const { sock } = await acceptRequest(ctx);
  sock.end();
  await expectExit(ctx, false);
});
add('H.12', 'no response at all, --timeout 1 -> exit non-zero in time', async (ctx) => {
  spawnClient(ctx, ['--timeout', '1']);
  await acceptRequest(ctx);
  const t0 = Date.now();
  await expectExit(ctx, false, 3000);
  if (Date.now() - t0 < 500) fail(`client gave up after ${Date.now() - t0} ms, before its 1 s timeout`);
});
add('H.13', 'Upgrade: WebSocket and Connection: keep-alive, Upgrade -> accepted', async (ctx) => {
  const peer = await start(ctx, {
    response: (key) => Buffer.from(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Accept: ${W.acceptFor(key)}\r\nX-Extra: something\r\n\r\n`, 'latin1'),
  });
  await echoCheck(peer);
  await endClean(ctx, peer);
});
add('H.14', 'a second Sec-WebSocket-Accept header -> exit non-zero', async (ctx) => {
  const peer = await start(ctx, { response: (key) => response101(key, [`Sec-WebSocket-Accept: ${W.acceptFor(key)}`]) });
  await expectHandshakeRefused(ctx, peer);
});
add('H.15', 'HTTP/1.0 101 -> exit non-zero', async (ctx) => {
  const peer = await start(ctx, {
    response: (key) => Buffer.from(response101(key).toString('latin1').replace('HTTP/1.1', 'HTTP/1.0'), 'latin1'),
  });
  await expectHandshakeRefused(ctx, peer);
});

/* ---------------------------------------------------------------------
 * Main
 * ------------------------------------------------------------------- */

async function main() {
  let opts;
  try {
    opts = W.parseArgs(process.argv.slice(2), { '--client': 'client', '--tls': 'tls' });
  } catch (e) {
    console.error(`server_cases: ${e.message}`);
    process.exit(2);
  }
  if (opts.help) {
    console.error('usage: node server_cases.js [--client build/echo_client] [--tls CERTDIR] [--case ID]... [--list] [--verbose] [--seed N]');
    process.exit(2);
  }
  const clientPath = path.resolve(opts.client || path.join(__dirname, '..', '..', 'build', 'echo_client'));
  const certs = opts.tls
    ? { cert: fs.readFileSync(path.join(opts.tls, 'srv.pem')), key: fs.readFileSync(path.join(opts.tls, 'srv.key')) }
    : null;
  const cafile = opts.tls ? path.resolve(opts.tls, 'ca.pem') : null;
  const listener = new Listener(certs);
  const port = opts.list ? 0 : await listener.listen();
  if (certs && !opts.list) console.log(`# over TLS: wss://127.0.0.1:${port}/, the client trusts ${cafile}`);
  let n = 0;
  const code = await W.runCases('server_cases', cases, CATEGORIES, opts, (c) => {
    const ctx = {
      id: c.id,
      port,
      clientPath,
      cafile,
      listener,
      rng: W.makeRng(opts.seed + n++),
      proc: null,
    };
    ctx.extraReason = () => {
      if (!ctx.proc) return '';
      const out = ctx.proc.out.trim().split('\n').slice(-2).join(' | ');
      const e = ctx.proc.exit;
      const st = ctx.proc.killed ? ' [client still running at the end of the case: killed]'
        : e ? ` [client exit ${e.code ?? e.signal}]` : '';
      return out ? ` [client said: ${out}]${st}` : st;
    };
    return ctx;
  });
  listener.close();
  process.exit(code);
}

main().catch((e) => {
  console.error(e);
  console.log('server_cases: 0 passed, 1 failed');
  process.exit(1);
});
