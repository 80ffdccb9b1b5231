'use strict';
/*
 * wire.js - an independent implementation of the RFC 6455 wire protocol for
 * the conformance suites: a frame encoder, a byte-stream reader with a
 * strict frame decoder, a UTF-8 validator, an HTTP head reader, a peer that
 * turns a socket into awaitable expectations, and the case runner.
 *
 * Only Node's built-in modules are used, and nothing here is derived from
 * src/ws.c: the suites must catch the library's mistakes, not repeat them.
 */
const crypto = require('crypto');

const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';
const OP = { CONT: 0x0, TEXT: 0x1, BINARY: 0x2, CLOSE: 0x8, PING: 0x9, PONG: 0xA };
const OPNAME = { 0: 'continuation', 1: 'text', 2: 'binary', 8: 'close', 9: 'ping', 10: 'pong' };
const EMPTY = Buffer.alloc(0);

/* A case fails by throwing this; the message is the reason shown. */
class CaseFail extends Error {}
function fail(msg) {
  throw new CaseFail(msg);
}

/* ---------------------------------------------------------------------
 * Small utilities
 * ------------------------------------------------------------------- */

/* A seeded PRNG (mulberry32), so chop sizes and payloads are reproducible. */
function makeRng(seed) {
  let s = seed >>> 0;
  const next = () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return {
    next,
    int: (lo, hi) => lo + Math.floor(next() * (hi - lo + 1)), // inclusive
    bytes: (n) => {
      const b = Buffer.allocUnsafe(n);
      let i = 0;
      for (; i + 4 <= n; i += 4) b.writeUInt32LE((next() * 4294967296) >>> 0, i);
      for (; i < n; i++) b[i] = (next() * 256) | 0;
      return b;
    },
  };
}

/* Valid UTF-8 text of exactly n bytes, with 2-, 3- and 4-byte characters. */
function textPayload(n) {
  const unit = Buffer.from('Hello, κόσμε! € 𝄞 ascii and ütf-8 ', 'utf8');
  const out = Buffer.alloc(n, 0x2a); // '*'
  let i = 0;
  while (i + unit.length <= n) {
    unit.copy(out, i);
    i += unit.length;
  }
  return out; // the tail stays '*', so no character is cut
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function hex(buf, max = 24) {
  const s = buf.subarray(0, max).toString('hex').replace(/(..)/g, '$1 ').trim();
  return buf.length > max ? `${s} ... (${buf.length} bytes)` : s;
}

/* Where two buffers first differ, for a useful failure message. */
function diffAt(got, want) {
  const n = Math.min(got.length, want.length);
  for (let i = 0; i < n; i++) if (got[i] !== want[i]) return i;
  return n;
}

/* ---------------------------------------------------------------------
 * UTF-8 (Unicode 15, table 3-7): well-formed byte sequences only.
 * ------------------------------------------------------------------- */

/*
 * Returns -1 when buf is valid UTF-8; otherwise the index of the first byte
 * that cannot belong to a well-formed sequence (the byte at which a strict
 * incremental validator must fail). When `final` is false a sequence cut
 * off at the end is fine; when true it fails at buf.length.
 */
function utf8FirstInvalid(buf, final = true) {
  const n = buf.length;
  let i = 0;
  while (i < n) {
    const b = buf[i];
    if (b < 0x80) {
      i++;
      continue;
    }
    let need;
    let lo = 0x80;
    let hi = 0xbf;
    if (b >= 0xc2 && b <= 0xdf) need = 1;
    else if (b === 0xe0) (need = 2), (lo = 0xa0);
    else if ((b >= 0xe1 && b <= 0xec) || b === 0xee || b === 0xef) need = 2;
    else if (b === 0xed) (need = 2), (hi = 0x9f); // no surrogates
    else if (b === 0xf0) (need = 3), (lo = 0x90); // no overlongs
    else if (b >= 0xf1 && b <= 0xf3) need = 3;
    else if (b === 0xf4) (need = 3), (hi = 0x8f); // nothing above U+10FFFF
    else return i; // 0x80..0xC1, 0xF5..0xFF never start a sequence
    i++;
    for (let k = 0; k < need; k++, i++) {
      if (i >= n) return final ? n : -1;
      if (buf[i] < lo || buf[i] > hi) return i;
      lo = 0x80;
      hi = 0xbf;
    }
  }
  return -1;
}

/* A second opinion from the WHATWG decoder, to keep the case tables honest. */
const strictDecoder = new TextDecoder('utf-8', { fatal: true });
function utf8ValidWhatwg(buf) {
  try {
    strictDecoder.decode(buf);
    return true;
  } catch (e) {
    return false;
  }
}

/* ---------------------------------------------------------------------
 * Frame encoder
 * ------------------------------------------------------------------- */

function maskInPlace(buf, key, offset = 0) {
  for (let i = 0; i < buf.length; i++) buf[i] ^= key[(offset + i) & 3];
  return buf;
}

/*
 * The header of one frame. len is the declared payload length; `form`
 * forces a length encoding (7, 16 or 64 bits) to build non-minimal frames;
 * key (4 bytes) sets the mask bit.
 */
function encodeHeader({ opcode, len, fin = true, rsv = 0, key = null, form = 0 }) {
  if (!form) form = len < 126 ? 7 : len <= 0xffff ? 16 : 64;
  const h = Buffer.alloc(2 + (form === 16 ? 2 : form === 64 ? 8 : 0) + (key ? 4 : 0));
  h[0] = (fin ? 0x80 : 0) | ((rsv & 7) << 4) | (opcode & 0x0f);
  let off = 2;
  if (form === 7) {
    h[1] = len;
  } else if (form === 16) {
    h[1] = 126;
    h.writeUInt16BE(len, 2);
    off = 4;
  } else {
    h[1] = 127;
    h.writeUInt32BE(Math.floor(len / 4294967296), 2);
    h.writeUInt32BE(len >>> 0, 6);
    off = 10;
  }
  if (key) {
    h[1] |= 0x80;
    key.copy(h, off);
  }
  return h;
}

/*
 * A whole frame. mask: true (a fresh random key), false (unmasked) or a
 * 4-byte Buffer (that key).
 */
function encodeFrame({ opcode, payload = EMPTY, fin = true, rsv = 0, mask = false, form = 0 }) {
  if (typeof payload === 'string') payload = Buffer.from(payload, 'utf8');
  const key = mask === true ? crypto.randomBytes(4) : mask || null;
  const h = encodeHeader({ opcode, len: payload.length, fin, rsv, key, form });
  const body = Buffer.from(payload);
  if (key) maskInPlace(body, key);
  return Buffer.concat([h, body]);
}

/* A close frame's payload: code (omitted when null) + reason. */
function closePayload(code, reason = '') {
  if (code === null || code === undefined) return EMPTY;
  const r = Buffer.isBuffer(reason) ? reason : Buffer.from(reason, 'utf8');
  const b = Buffer.alloc(2 + r.length);
  b.writeUInt16BE(code, 0);
  r.copy(b, 2);
  return b;
}

/* ---------------------------------------------------------------------
 * Byte-stream reader and strict frame decoder
 * ------------------------------------------------------------------- */

class ByteQueue {
  constructor() {
    this.chunks = [];
    this.length = 0;
  }
  push(b) {
    if (b.length) {
      this.chunks.push(b);
      this.length += b.length;
    }
  }
  /* The first n bytes (n <= length), without consuming them. */
  peek(n) {
    if (this.chunks[0].length >= n) return this.chunks[0].subarray(0, n);
    const parts = [];
    let have = 0;
    for (const c of this.chunks) {
      parts.push(c.subarray(0, Math.min(c.length, n - have)));
      have += parts[parts.length - 1].length;
      if (have === n) break;
    }
    return Buffer.concat(parts, n);
  }
  /* Consumes and returns the first n bytes (n <= length). */
  take(n) {
    if (n === 0) return EMPTY;
    const first = this.chunks[0];
    if (first.length >= n) {
      const out = first.subarray(0, n);
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
      this.length -= n;
      return out;
    }
    const parts = [];
    let have = 0;
    while (have < n) {
      const c = this.chunks[0];
      const want = n - have;
      if (c.length <= want) {
        parts.push(c);
        have += c.length;
        this.chunks.shift();
      } else {
        parts.push(c.subarray(0, want));
        this.chunks[0] = c.subarray(want);
        have = n;
      }
    }
    this.length -= n;
    return Buffer.concat(parts, n);
  }
}

const MAX_FRAME = 64 * 1024 * 1024; // anything bigger is a broken stream here

/*
 * Decodes one frame from q, or returns null when more bytes are needed.
 * `expectMasked` is the rule for the sender's role. Every rule of RFC 6455
 * section 5 that a single frame can break is checked and listed in
 * frame.problems; a header that makes the rest of the stream meaningless
 * comes back as { broken: reason }.
 */
function decodeFrame(q, expectMasked) {
  if (q.length < 2) return null;
  const h = q.peek(Math.min(q.length, 14));
  const fin = (h[0] & 0x80) !== 0;
  const rsv = (h[0] >> 4) & 7;
  const opcode = h[0] & 0x0f;
  const masked = (h[1] & 0x80) !== 0;
  let len = h[1] & 0x7f;
  let off = 2;
  const problems = [];
  if (len === 126) {
    if (h.length < 4) return null;
    len = h.readUInt16BE(2);
    off = 4;
    if (len < 126) problems.push(`length ${len} sent in 16-bit form (not minimal)`);
  } else if (len === 127) {
    if (h.length < 10) return null;
    const hi = h.readUInt32BE(2);
    if (hi & 0x80000000) return { broken: '64-bit payload length with the most significant bit set' };
    len = hi * 4294967296 + h.readUInt32BE(6);
    off = 10;
    if (len <= 0xffff) problems.push(`length ${len} sent in 64-bit form (not minimal)`);
  }
  if (len > MAX_FRAME) return { broken: `frame length ${len} is absurd (stream out of sync?)` };
  let key = null;
  if (masked) {
    if (h.length < off + 4) return null;
    key = Buffer.from(h.subarray(off, off + 4));
    off += 4;
  }
  if (q.length < off + len) return null;
  q.take(off);
  let payload = q.take(len);
  if (key) payload = maskInPlace(Buffer.from(payload), key);
  if (masked !== expectMasked)
    problems.push(expectMasked ? 'frame from the client is not masked' : 'frame from the server is masked');
  if (rsv) problems.push(`RSV bits set (${rsv.toString(2).padStart(3, '0')}) without an extension`);
  if (!(opcode in OPNAME)) problems.push(`reserved opcode ${opcode}`);
  if (opcode >= 8 && !fin) problems.push('fragmented control frame');
  if (opcode >= 8 && len > 125) problems.push(`control frame with ${len}-byte payload`);
  return { fin, rsv, opcode, masked, key, payload, problems };
}

function describeFrame(f) {
  const name = OPNAME[f.opcode] || `opcode ${f.opcode}`;
  let s = `${name}${f.fin ? '' : ' (fin=0)'} frame, ${f.payload.length} bytes`;
  if (f.opcode === OP.CLOSE) {
    const c = parseClose(f.payload);
    s = c.code === null ? 'close frame without code' : `close frame with code ${c.code}`;
  } else if (f.payload.length && f.payload.length <= 32) {
    s += ` [${hex(f.payload)}]`;
  }
  return s;
}

/* A close payload: { code (null if none), reason, error (string|null) }. */
function parseClose(p) {
  if (p.length === 0) return { code: null, reason: EMPTY, error: null };
  if (p.length === 1) return { code: null, reason: EMPTY, error: '1-byte close payload' };
  const code = p.readUInt16BE(0);
  const reason = p.subarray(2);
  let error = null;
  const valid = (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) || (code >= 3000 && code <= 4999);
  if (!valid) error = `close code ${code} may not be sent`;
  else if (utf8FirstInvalid(reason) !== -1) error = 'close reason is not valid UTF-8';
  return { code, reason, error };
}

/* ---------------------------------------------------------------------
 * HTTP heads
 * ------------------------------------------------------------------- */

/* Splits "start line + headers" text. Header names are lower-cased. */
function parseHead(text) {
  const lines = text.split('\r\n');
  const start = lines.shift();
  const headers = [];
  for (const l of lines) {
    if (l === '') continue;
    const i = l.indexOf(':');
    if (i <= 0) return { start, headers, error: `malformed header line '${l}'` };
    headers.push([l.slice(0, i).trim().toLowerCase(), l.slice(i + 1).trim()]);
  }
  const get = (name) => headers.filter(([n]) => n === name).map(([, v]) => v);
  const tokens = (name) =>
    get(name)
      .join(',')
      .split(',')
      .map((t) => t.trim().toLowerCase())
      .filter(Boolean);
  return { start, headers, get, tokens, error: null };
}

function acceptFor(key) {
  return crypto.createHash('sha1').update(key + GUID).digest('base64');
}

/*
 * Reads an HTTP head (through the blank line) from a socket. Resolves with
 * { head (parsed), raw, rest (bytes after it) }; leaves the socket paused
 * so no byte is lost before the next reader attaches. maxBytes bounds it.
 */
function readHead(sock, what, maxBytes = 65536) {
  return new Promise((resolve, reject) => {
    let buf = EMPTY;
    const done = (err, val) => {
      sock.removeListener('data', onData);
      sock.removeListener('end', onEnd);
      sock.removeListener('close', onEnd);
      sock.removeListener('error', onErr);
      if (err) reject(err);
      else resolve(val);
    };
    const onData = (d) => {
      buf = Buffer.concat([buf, d]);
      const i = buf.indexOf('\r\n\r\n');
      if (i >= 0) {
        sock.pause();
        const raw = buf.subarray(0, i + 4).toString('latin1');
        done(null, { head: parseHead(raw.slice(0, -4)), raw, rest: buf.subarray(i + 4) });
      } else if (buf.length > maxBytes) {
        done(new CaseFail(`${what}: no end of the HTTP head in ${buf.length} bytes`));
      }
    };
    const onEnd = () =>
      done(new CaseFail(`${what}: connection closed before a complete HTTP head` +
        (buf.length ? ` (got ${JSON.stringify(buf.toString('latin1').slice(0, 80))})` : ' (no bytes)')));
    const onErr = (e) => done(new CaseFail(`${what}: socket error ${e.code || e.message}`));
    sock.on('data', onData);
    sock.on('end', onEnd);
    sock.on('close', onEnd);
    sock.on('error', onErr);
    sock.resume();
  });
}

/* ---------------------------------------------------------------------
 * Peer: one WebSocket connection as a sequence of expectations
 * ------------------------------------------------------------------- */

/*
 * role 'client': we are the client (we mask; the server must not).
 * role 'server': we are the server (we do not mask; the client must).
 */
class Peer {
  constructor(ctx, sock, role, leftover) {
    this.ctx = ctx;
    this.sock = sock;
    this.role = role;
    this.them = role === 'client' ? 'server' : 'client';
    this.q = new ByteQueue();
    this.frames = [];
    this.broken = null;
    this.cleanEnd = false; // FIN seen before any error
    this.ended = false;
    this.err = null;
    this.gone = false;
    this.waiters = new Set();
    this.maskKeys = []; // keys of the client's frames (role 'server')
    this.bytesIn = 0;
    sock.setNoDelay(true);
    sock.on('data', (d) => {
      this.bytesIn += d.length;
      this.q.push(d);
      this._decode();
      this._wake();
    });
    sock.on('end', () => {
      this.ended = true;
      if (!this.err) this.cleanEnd = true;
      this._wake();
    });
    sock.on('error', (e) => {
      if (!this.err) this.err = e;
      this._wake();
    });
    sock.on('close', () => {
      this.gone = true;
      this._wake();
    });
    if (leftover && leftover.length) {
      this.bytesIn += leftover.length;
      this.q.push(leftover);
      this._decode();
    }
    // The end may have come before these listeners: over TLS, a peer's
    // last bytes and its close arrive in one read, and 'end' follows the
    // 'data' that completed readHead() in the same tick.
    if (sock.readableEnded) {
      this.ended = true;
      this.cleanEnd = true;
    }
    if (sock.destroyed) this.gone = true;
    sock.resume();
  }

  _decode() {
    while (!this.broken) {
      const f = decodeFrame(this.q, this.role === 'server');
      if (!f) break;
      if (f.broken) {
        this.broken = `${this.them} sent an invalid frame header: ${f.broken}`;
        break;
      }
      if (f.key) this.maskKeys.push(f.key.toString('hex'));
      this.frames.push(f);
    }
  }

  _wake() {
    for (const w of [...this.waiters]) w();
  }

  /*
   * Waits until check() returns something other than undefined (or
   * throws). ms bounds this wait on top of the case's own time bound.
   */
  waitFor(what, check, ms = 0) {
    this.ctx.waiting = what;
    return new Promise((resolve, reject) => {
      let timer = null;
      const w = () => {
        let r;
        try {
          r = check();
        } catch (e) {
          finish();
          reject(e);
          return;
        }
        if (r !== undefined) {
          finish();
          resolve(r);
        }
      };
      const finish = () => {
        this.waiters.delete(w);
        if (timer) clearTimeout(timer);
      };
      this.waiters.add(w);
      if (ms) timer = setTimeout(() => {
        finish();
        reject(new CaseFail(`timed out after ${ms} ms waiting for ${what}`));
      }, ms);
      w();
    });
  }

  /* Writes bytes; resolves once the socket has taken them. */
  send(buf) {
    return new Promise((resolve) => {
      if (this.sock.destroyed || this.sock.writableEnded) return resolve();
      this.sock.write(buf, () => resolve());
    });
  }

  /* Writes buf in pieces: chop is a size, or a function giving each size. */
  async sendChopped(buf, chop) {
    const size = typeof chop === 'function' ? chop : () => chop;
    for (let i = 0; i < buf.length; ) {
      const n = Math.max(1, Math.min(size(), buf.length - i));
      await this.send(buf.subarray(i, i + n));
      i += n;
    }
  }

  /* Encodes a frame with this side's masking rule (unless overridden). */
  frame(opts) {
    return encodeFrame({ mask: this.role === 'client', ...opts });
  }

  sendFrame(opts) {
    return this.send(this.frame(opts));
  }

  sendClose(code, reason = '') {
    return this.sendFrame({ opcode: OP.CLOSE, payload: closePayload(code, reason) });
  }

  _endReason(what) {
    if (this.err) return `connection error (${this.err.code || this.err.message}) while waiting for ${what}`;
    return `${this.them} closed the connection while waiting for ${what}`;
  }

  /* The next frame, valid by every single-frame rule. */
  nextFrame(what = 'a frame', ms = 0) {
    return this.waitFor(what, () => {
      if (this.frames.length) {
        const f = this.frames.shift();
        if (f.problems.length)
          fail(`${this.them} sent an invalid frame (${describeFrame(f)}) while we waited for ${what}: ${f.problems.join('; ')}`);
        return f;
      }
      if (this.broken) fail(this.broken);
      if (this.ended || this.err || this.gone) fail(this._endReason(what));
      return undefined;
    }, ms);
  }

  /*
   * Expects the next message to be `payload` with opcode `op`, fragmented or
   * not. Any control frame before the message is complete fails the case
   * (expect pongs explicitly before calling this).
   */
  async expectMessage(op, payload, what) {
    if (typeof payload === 'string') payload = Buffer.from(payload, 'utf8');
    what = what || `the echo of a ${payload.length}-byte ${OPNAME[op]} message`;
    const parts = [];
    let first = true;
    for (;;) {
      const f = await this.nextFrame(what);
      if (f.opcode >= 8) fail(`got a ${describeFrame(f)} while waiting for ${what}`);
      if (first && f.opcode !== op)
        fail(`got a ${describeFrame(f)} while waiting for ${what}`);
      if (!first && f.opcode !== OP.CONT)
        fail(`got a ${describeFrame(f)} inside a fragmented message (want continuation) while waiting for ${what}`);
      first = false;
      parts.push(f.payload);
      if (f.fin) break;
    }
    const got = parts.length === 1 ? parts[0] : Buffer.concat(parts);
    if (op === OP.TEXT && utf8FirstInvalid(got) !== -1)
      fail(`${this.them} sent a text message that is not valid UTF-8 (${what})`);
    if (!got.equals(payload)) {
      const at = diffAt(got, payload);
      fail(`${what}: got ${got.length} bytes, want ${payload.length}; first difference at byte ${at}` +
        (got.length <= 64 && payload.length <= 64 ? ` (got [${hex(got, 64)}], want [${hex(payload, 64)}])` : ''));
    }
    return got;
  }

  async expectPong(payload, what) {
    if (typeof payload === 'string') payload = Buffer.from(payload, 'utf8');
    what = what || `a pong with the ping's ${payload.length}-byte payload`;
    const f = await this.nextFrame(what);
    if (f.opcode !== OP.PONG) fail(`got a ${describeFrame(f)} while waiting for ${what}`);
    if (!f.payload.equals(payload))
      fail(`pong payload differs from the ping's: got [${hex(f.payload)}], want [${hex(payload)}]`);
  }

  /*
   * A run of pongs with nothing between them, in order. RFC 6455 5.5.3
   * lets an endpoint that has not yet answered earlier pings answer only
   * the most recent one, and ws does so while its peer is not reading (an
   * unsent pong at the end of its queue gives way to the next): any pong
   * of the run may stand for those before it, and the run's last pong
   * must come. Returns how many were answered by a later one.
   */
  async expectPongs(payloads, whatFn) {
    const want = payloads.map((p) => (typeof p === 'string' ? Buffer.from(p, 'utf8') : p));
    let skipped = 0;
    for (let i = 0; i < want.length; i++) {
      const what = whatFn ? whatFn(i) : `pong ${i + 1} of ${want.length}`;
      const f = await this.nextFrame(what);
      if (f.opcode !== OP.PONG) fail(`got a ${describeFrame(f)} while waiting for ${what}`);
      let k = i;
      while (k < want.length && !f.payload.equals(want[k])) k++;
      if (k === want.length)
        fail(`pong payload differs from the pings': got [${hex(f.payload)}], want [${hex(want[i])}] (${what}) or a later one of the run`);
      skipped += k - i;
      i = k;
    }
    return skipped;
  }

  async expectPing(what = 'a ping') {
    const f = await this.nextFrame(what);
    if (f.opcode !== OP.PING) fail(`got a ${describeFrame(f)} while waiting for ${what}`);
    return f.payload;
  }

  /*
   * Expects a close frame. code: the exact code, or null for a close frame
   * without payload. Returns the parsed close payload.
   */
  async expectClose(code, what) {
    what = what || (code === null ? 'a close frame without code' : `a close frame with code ${code}`);
    const f = await this.nextFrame(what);
    if (f.opcode !== OP.CLOSE) fail(`got a ${describeFrame(f)} while waiting for ${what}`);
    const c = parseClose(f.payload);
    if (c.error) fail(`${this.them}'s close frame is invalid: ${c.error}`);
    if (code === null && f.payload.length !== 0)
      fail(`got a close frame with code ${c.code}, want one without payload`);
    if (code !== null && c.code !== code)
      fail(`got a close frame with ${c.code === null ? 'no code' : `code ${c.code}`}, want ${code}`);
    return c;
  }

  /* Expects the peer to close TCP cleanly (FIN, not RST) within ms, with no
   * more frames or bytes before it. */
  expectEnd(ms = 2000, what = `the ${this.role === 'client' ? 'server' : 'client'} to close TCP (FIN)`) {
    return this.waitFor(what, () => {
      if (this.frames.length) fail(`unexpected ${describeFrame(this.frames[0])} after the closing handshake`);
      if (this.broken) fail(this.broken);
      if (this.err && !this.cleanEnd) fail(`connection reset (${this.err.code || this.err.message}) instead of a clean TCP close`);
      if (this.cleanEnd) {
        if (this.q.length) fail(`${this.q.length} stray bytes before the TCP close`);
        return true;
      }
      return undefined;
    }, ms);
  }

  /* Expects no frame and no close for ms milliseconds. */
  async expectSilence(ms, what = 'silence') {
    await sleep(ms);
    if (this.frames.length) fail(`unexpected ${describeFrame(this.frames[0])} during ${what}`);
    if (this.broken) fail(this.broken);
    if (this.ended || this.err) fail(`${this.them} closed the connection during ${what}`);
  }

  /* The whole ending of a failed connection: the exact close code, then our
   * close reply, then a clean TCP close by the other side. */
  async expectFail(code) {
    await this.expectClose(code);
    await this.sendClose(code);
    await this.expectEnd(2000);
  }

  /* A normal closing handshake started by us, then TCP closed by them. */
  async closeNormally(code = 1000, reason = 'bye') {
    await this.sendClose(code, reason);
    await this.expectClose(code, `the echo of our close frame (${code})`);
    await this.expectEnd(2000);
  }

  destroy() {
    for (const w of [...this.waiters]) this.waiters.delete(w);
    this.sock.destroy();
  }
}

/*
 * A random stream of `count` frames of every valid kind (whole and
 * fragmented text and binary, pings between fragments, unsolicited pongs),
 * framed by peer's role. Returns { bytes, expect }: the events an echo
 * peer must produce, in order: ['pong', payload] or [opcode, message].
 */
function randomStream(peer, rng, count) {
  const frames = [];
  const expect = [];
  let msg = null; // [opcode, parts] of the message being fragmented
  for (let i = 0; i < count; i++) {
    const r = rng.next();
    if (r < 0.15) {
      const pl = rng.bytes(rng.int(0, 125));
      frames.push(peer.frame({ opcode: OP.PING, payload: pl }));
      expect.push(['pong', pl]);
    } else if (r < 0.2) {
      frames.push(peer.frame({ opcode: OP.PONG, payload: rng.bytes(rng.int(0, 125)) }));
    } else if (!msg) {
      const op = rng.next() < 0.5 ? OP.TEXT : OP.BINARY;
      const len = rng.next() < 0.1 ? rng.int(126, 70000) : rng.int(0, 200);
      const pl = op === OP.TEXT ? textPayload(len) : rng.bytes(len);
      const fin = rng.next() < 0.6;
      frames.push(peer.frame({ opcode: op, payload: pl, fin }));
      if (fin) expect.push([op, pl]);
      else msg = [op, [pl]];
    } else {
      // Continuations of text are multi-byte text cut between characters.
      const len = rng.int(0, 3000);
      const pl = msg[0] === OP.TEXT ? Buffer.from('é€'.repeat(len / 5 + 1), 'utf8') : rng.bytes(len);
      const fin = rng.next() < 0.3;
      frames.push(peer.frame({ opcode: OP.CONT, payload: pl, fin }));
      msg[1].push(pl);
      if (fin) {
        expect.push([msg[0], Buffer.concat(msg[1])]);
        msg = null;
      }
    }
  }
  if (msg) {
    frames.push(peer.frame({ opcode: OP.CONT, payload: EMPTY }));
    expect.push([msg[0], Buffer.concat(msg[1])]);
  }
  return { bytes: Buffer.concat(frames), expect };
}

/* Expects the events of randomStream() in order. */
async function expectEvents(peer, expect) {
  for (let i = 0; i < expect.length; i++) {
    const [what, pl] = expect[i];
    if (what === 'pong') { /* a run of pongs: see expectPongs */
      let j = i;
      while (j + 1 < expect.length && expect[j + 1][0] === 'pong') j++;
      const first = i;
      await peer.expectPongs(expect.slice(i, j + 1).map((e) => e[1]),
        (k) => `event ${first + k + 1} of ${expect.length}: a pong`);
      i = j;
    } else {
      await peer.expectMessage(what, pl, `event ${i + 1} of ${expect.length}: an echo of ${pl.length} bytes`);
    }
  }
}

/* ---------------------------------------------------------------------
 * Case runner
 * ------------------------------------------------------------------- */

/*
 * Each case: { id, name, timeout (ms), run: async (ctx) => {} }. The
 * category is the part of the id before the first dot. ctx gets
 * `waiting`, `defer(fn)` for clean-up, and what makeCtx adds.
 */
function selected(opts, c) {
  return !opts.only.length || opts.only.some((p) => c.id === p || c.id.startsWith(p + '.') || matchGlob(p, c.id));
}

async function runCases(suite, cases, categories, opts, makeCtx) {
  const pick = cases.filter((c) => selected(opts, c));
  if (opts.list) {
    for (const c of pick) console.log(`${c.id}\t${c.name}`);
    return 0;
  }
  const byCat = new Map();
  let passed = 0;
  let failed = 0;
  const t0 = Date.now();
  for (const c of pick) {
    const ctx = makeCtx(c);
    ctx.waiting = 'the case to start';
    const cleanups = [];
    ctx.defer = (fn) => cleanups.push(fn);
    const started = Date.now();
    let reason = null;
    let timer;
    const limit = c.timeout || 4000;
    const run = Promise.resolve().then(() => c.run(ctx));
    run.catch(() => {});
    try {
      await Promise.race([
        run,
        new Promise((_, rej) => {
          timer = setTimeout(() => rej(new CaseFail(`timed out after ${limit} ms waiting for ${ctx.waiting}`)), limit);
        }),
      ]);
    } catch (e) {
      reason = e instanceof CaseFail ? e.message : `exception: ${e && e.stack ? e.stack : e}`;
    }
    clearTimeout(timer);
    for (const fn of cleanups.reverse()) {
      try {
        await fn(reason);
      } catch (e) {
        /* clean-up is best effort */
      }
    }
    if (reason && ctx.extraReason) reason += ctx.extraReason();
    const ms = Date.now() - started;
    const cat = c.id.split('.')[0];
    const s = byCat.get(cat) || { passed: 0, failed: 0 };
    byCat.set(cat, s);
    if (reason === null) {
      passed++;
      s.passed++;
      if (opts.verbose) console.log(`ok ${c.id} ${c.name} (${ms} ms)`);
    } else {
      failed++;
      s.failed++;
      console.log(`not ok ${c.id} ${c.name}: ${reason}`);
    }
  }
  for (const [cat, s] of byCat)
    console.log(`# ${suite} category ${cat} (${categories[cat] || cat}): ${s.passed} passed, ${s.failed} failed`);
  console.log(`# ${suite}: ${((Date.now() - t0) / 1000).toFixed(1)} s, seed ${opts.seed}`);
  console.log(`${suite}: ${passed} passed, ${failed} failed`);
  return failed === 0 ? 0 : 1;
}

function matchGlob(pattern, s) {
  if (!pattern.includes('*')) return false;
  const re = new RegExp('^' + pattern.split('*').map((p) => p.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('.*') + '$');
  return re.test(s);
}

/* Common command-line options: --case ID (repeatable; a prefix or a glob),
 * --list, --verbose, --seed N; `extra` names options taking a value. */
function parseArgs(argv, extra) {
  const opts = { only: [], list: false, verbose: false, seed: Date.now() % 1000000 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--case' || a === '-c') opts.only.push(argv[++i]);
    else if (a === '--list') opts.list = true;
    else if (a === '--verbose' || a === '-v') opts.verbose = true;
    else if (a === '--seed') opts.seed = Number(argv[++i]);
    else if (a in extra) opts[extra[a]] = argv[++i];
    else if (a === '--help' || a === '-h') opts.help = true;
    else throw new Error(`unknown argument '${a}'`);
  }
  return opts;
}

module.exports = {
  GUID, OP, OPNAME, EMPTY, CaseFail, fail, makeRng, textPayload, sleep, hex, diffAt,
  utf8FirstInvalid, utf8ValidWhatwg, maskInPlace, encodeHeader, encodeFrame, closePayload,
  ByteQueue, decodeFrame, describeFrame, parseClose, parseHead, acceptFor, readHead, Peer,
  randomStream, expectEvents, runCases, parseArgs, selected,
};
