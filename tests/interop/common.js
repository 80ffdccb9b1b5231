'use strict';
// common.js - what every part of the interoperability matrix agrees on
// (tests/interop): payload sizes, payloads, and the "drive" script a peer
// server runs against a ws client. py_peer.py and lws_peer.c carry the same
// constants; keep them in step.

// Every boundary of the frame length encoding (7-bit, 16-bit, 64-bit), a
// large message and the library's default message limit (16 MiB).
const SIZES = [0, 1, 125, 126, 127, 65535, 65536, 65537, 1 << 20, 16 << 20];
const PROTOCOLS = ['interop.v1', 'interop.v2'];
// Two-, three- and four-byte UTF-8 sequences.
const UTF8 = 'h\u00e9llo w\u00f6rld \u2013 \u2713 \ud834\udd1e \u65e5\u672c\u8a9e \ud83c\udf89';
const ALPHABET = 'abcdefghijklmnopqrstuvwxyz0123456789';

function text(n) {
  return ALPHABET.repeat(Math.ceil(n / ALPHABET.length)).slice(0, n);
}

function binary(n) {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = i % 251;
  return b;
}

function sizeName(n) {
  if (n >= 1 << 20 && n % (1 << 20) === 0) return `${n >> 20}MiB`;
  return String(n);
}

// Cuts buf into n pieces at byte boundaries (inside UTF-8 sequences too).
function split(buf, n) {
  const out = [];
  for (let i = 0, at = 0; i < n; i++) {
    const end = Math.floor((buf.length * (i + 1)) / n);
    out.push(buf.subarray(at, end));
    at = end;
  }
  return out;
}

function wsVersion() {
  return require('ws/package.json').version;
}

const withTimeout = (p, ms) =>
  Promise.race([p, new Promise((res) => setTimeout(() => res(null), ms).unref())]);

// The server leads, the client echoes: sizes as text and binary, UTF-8,
// fragmented messages (with a ping between fragments when pingBetween), a
// ping that must come back as a pong with its payload, then a close with
// 1000 "drive ok" (or 4001 "drive failed: CASE"). Each case is logged as
// "drive case=NAME ok" or "drive case=NAME fail WHY" for the driver.
// peer: { sendText, sendBinary, sendFragments(pieces, binary, pingBetween),
// ping(payload) -> Promise<pong payload>, close(code, reason), log };
// next(ms) -> Promise<{ data: Buffer, binary } or null on timeout>.
async function drive(peer, next, opts) {
  const T = 20000;
  let ok = 0, fail = 0, first = null;
  const record = (name, good, why) => {
    if (good) ok++;
    else { fail++; if (!first) first = name; }
    peer.log(`drive case=${name} ${good ? 'ok' : 'fail ' + why}`);
  };
  const expect = async (name, wantBinary, want) => {
    const m = await next(T);
    if (!m) return record(name, false, 'no echo within 20 s');
    if (m.binary !== wantBinary) return record(name, false, `echo came back as ${m.binary ? 'binary' : 'text'}`);
    if (!m.data.equals(want)) return record(name, false, `echo differs (${m.data.length} bytes, want ${want.length})`);
    record(name, true);
  };
  try {
    for (const n of SIZES) {
      const s = text(n);
      await peer.sendText(s);
      await expect(`text-${sizeName(n)}`, false, Buffer.from(s));
    }
    await peer.sendText(UTF8);
    await expect('text-utf8', false, Buffer.from(UTF8));
    for (const n of SIZES) {
      const b = binary(n);
      await peer.sendBinary(b);
      await expect(`binary-${sizeName(n)}`, true, b);
    }
    await peer.sendFragments(split(Buffer.from(UTF8), 5), false, false);
    await expect('fragmented-text-utf8', false, Buffer.from(UTF8));
    const big = binary(256 * 1024);
    await peer.sendFragments(split(big, 4), true, !!opts.pingBetween);
    await expect(opts.pingBetween ? 'fragmented-binary-ping-between' : 'fragmented-binary', true, big);
    const payload = Buffer.from('drive-ping');
    const got = await withTimeout(peer.ping(payload), T);
    record('server-ping-pong', !!got && Buffer.from(got).equals(payload),
      got ? `pong payload "${Buffer.from(got)}"` : 'no pong within 20 s');
  } catch (e) {
    record('drive', false, e.message);
  }
  peer.log(`drive done ok=${ok} fail=${fail}`);
  if (fail) peer.close(4001, `drive failed: ${first}`.slice(0, 120));
  else peer.close(1000, 'drive ok');
}

module.exports = { SIZES, PROTOCOLS, UTF8, text, binary, sizeName, split, wsVersion, withTimeout, drive };
