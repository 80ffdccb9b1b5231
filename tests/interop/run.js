'use strict';
// run.js - the interoperability matrix (make interop): real peers against
// ws, both ways, direct, through nginx, and through squid (CONNECT). See
// docs/interop.md.
//
//   node tests/interop/run.js [--build DIR] [--only WORD]...
//
// Every server runs on 127.0.0.1, started here and stopped by PID at the
// end; every wait is bounded, and the whole run by INTEROP_TIMEOUT seconds
// (600). Each case prints "ok - ROW: CASE" or "not ok - ROW: CASE: WHY";
// the end prints a table (peer, direction, passed, failed) and the line
// "interop: N passed, M failed". Exit status 0 only when nothing failed.
// A peer that is not installed fails its row when CI is set; by hand its
// row is skipped with a message saying how to install it.

const { spawn, spawnSync } = require('child_process');
const fs = require('fs');
const net = require('net');
const os = require('os');
const path = require('path');

const here = __dirname;
const root = path.resolve(here, '..', '..');
const PY = '/usr/bin/python3';   // Debian's, where python3-websockets lives
const CHROMIUM = '/usr/bin/chromium';
const SQUID = '/usr/sbin/squid';
const CI = !!process.env.CI && process.env.CI !== 'false';
const LIMIT = Number(process.env.INTEROP_TIMEOUT || 600) * 1000;
const begin = Date.now();

const args = process.argv.slice(2);
let build = path.join(root, 'build');
const only = [];
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--build') build = path.resolve(args[++i]);
  else if (args[i] === '--only') only.push(args[++i]);
  else { console.error('usage: run.js [--build DIR] [--only WORD]...'); process.exit(2); }
}
const bin = (name) => path.join(build, name);
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ws-interop-'));
// The programs reach servers on loopback: a proxy from the environment
// (which wsc honours, as curl does) must not carry them. The proxy rows
// set their own.
for (const v of ['http_proxy', 'HTTP_PROXY', 'https_proxy', 'HTTPS_PROXY', 'ws_proxy', 'WS_PROXY',
  'wss_proxy', 'WSS_PROXY', 'all_proxy', 'ALL_PROXY', 'no_proxy', 'NO_PROXY']) delete process.env[v];

// Node packages come from tests/interop/node_modules (npm ci).
function tryRequire(name) {
  try { return require(require.resolve(name, { paths: [here] })); } catch (e) { return null; }
}
const common = require('./common');
const { SIZES, UTF8, text, binary, sizeName, split, withTimeout } = common;

// ------------------------------------------------------------ processes

const procs = new Set();

function track(child, name) {
  child.interopName = name;
  procs.add(child);
  child.on('exit', () => procs.delete(child));
  return child;
}

function stop(child, ms = 3000) {
  return new Promise((resolve) => {
    if (!child || child.exitCode !== null || child.signalCode !== null) return resolve();
    const t = setTimeout(() => { try { process.kill(child.pid, 'SIGKILL'); } catch (e) { /* gone */ } }, ms);
    child.once('exit', () => { clearTimeout(t); resolve(); });
    try { process.kill(child.pid, 'SIGTERM'); } catch (e) { clearTimeout(t); resolve(); }
  });
}

async function stopAll() {
  await Promise.all([...procs].map((p) => stop(p)));
}

process.on('exit', () => {
  for (const p of procs) { try { process.kill(p.pid, 'SIGKILL'); } catch (e) { /* gone */ } }
  try { fs.rmSync(tmp, { recursive: true, force: true }); } catch (e) { /* best effort */ }
});
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => { stopAll().then(() => process.exit(130)); });
}

// A server that prints "... listening on ws://127.0.0.1:PORT/ ..." first
// and then one event per line; waitFor() finds an event line.
class Server {
  constructor(name, child) {
    this.name = name;
    this.child = child;
    this.lines = [];
    this.stderr = '';
    this.waiters = [];
    let partial = '';
    child.stdout.setEncoding('utf8'); // a UTF-8 sequence may straddle two reads
    child.stdout.on('data', (d) => {
      const parts = (partial + d).split('\n');
      partial = parts.pop();
      for (const line of parts) {
        this.lines.push(line);
        for (const w of this.waiters.slice()) w();
      }
    });
    child.stderr.on('data', (d) => { this.stderr = (this.stderr + d).slice(-4000); });
    child.on('exit', () => { for (const w of this.waiters.slice()) w(); });
  }
  alive() { return this.child.exitCode === null && this.child.signalCode === null; }
  mark() { return this.lines.length; }
  // The first line at or after index `from` matching re, or null after ms.
  waitFor(re, ms, from = 0) {
    return new Promise((resolve) => {
      const check = () => {
        for (let i = from; i < this.lines.length; i++) {
          const m = re.exec(this.lines[i]);
          if (m) { done(m); return true; }
        }
        if (!this.alive()) { done(null); return true; }
        return false;
      };
      const done = (m) => {
        clearTimeout(timer);
        const k = this.waiters.indexOf(check);
        if (k >= 0) this.waiters.splice(k, 1);
        resolve(m);
      };
      const timer = setTimeout(() => done(null), ms);
      if (!check()) this.waiters.push(check);
    });
  }
  since(from) { return this.lines.slice(from); }
}

async function startServer(name, cmd, argv, opts = {}) {
  const child = track(spawn(cmd, argv, { cwd: opts.cwd || root, stdio: ['ignore', 'pipe', 'pipe'] }), name);
  const s = new Server(name, child);
  const m = await s.waitFor(/listening on ws:\/\/127\.0\.0\.1:(\d+)\/(?: \((.*)\))?/, 15000);
  if (!m) {
    await stop(child);
    throw new Error(`${name} did not start: ${s.stderr.trim().slice(-300) || 'no output'}`);
  }
  s.port = Number(m[1]);
  s.version = m[2] || '';
  s.url = `ws://127.0.0.1:${s.port}/`;
  return s;
}

// Runs a program to its end (bounded): { code, signal, stdout, stderr, timedOut }.
// input: a Buffer/string written to stdin, or a function (stdin) => void.
// env: variables added to this process's environment.
function runProgram(cmd, argv, { input = '', timeout = 60000, env = null } = {}) {
  return new Promise((resolve) => {
    const child = track(spawn(cmd, argv, { cwd: root, stdio: ['pipe', 'pipe', 'pipe'],
      env: env ? Object.assign({}, process.env, env) : process.env }), path.basename(cmd));
    const out = [], err = [];
    let timedOut = false;
    child.stdout.on('data', (d) => out.push(d));
    child.stderr.on('data', (d) => err.push(d));
    child.stdin.on('error', () => { /* the program may exit before reading it all */ });
    const t = setTimeout(() => { timedOut = true; stop(child, 1000); }, timeout);
    child.on('close', (code, signal) => {
      clearTimeout(t);
      resolve({ code, signal, timedOut, stdout: Buffer.concat(out), stderr: Buffer.concat(err).toString('utf8') });
    });
    if (typeof input === 'function') input(child.stdin);
    else child.stdin.end(input);
  });
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => resolve(p)); });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const oneLine = (s) => String(s).replace(/\s+/g, ' ').trim().slice(0, 300);

// ------------------------------------------------------------ reporting

const rows = [];

class Row {
  constructor(name, peer, direction) {
    Object.assign(this, { name, peer, direction, passed: 0, failed: 0, skipped: null, t0: Date.now(), t1: Date.now() });
    rows.push(this);
    console.log(`# ${name}: ${direction} (${peer.replace(' {v}', '')})`);
  }
  ok(cas) { this.passed++; this.t1 = Date.now(); console.log(`ok - ${this.name}: ${cas}`); }
  fail(cas, why) { this.failed++; this.t1 = Date.now(); console.log(`not ok - ${this.name}: ${cas}: ${oneLine(why)}`); }
  check(cas, good, why) { if (good) this.ok(cas); else this.fail(cas, why); return good; }
  // A peer that is not there: a failure in CI, a skip by hand.
  missing(what, how) {
    if (CI) this.fail('peer available', `${what} is not installed (CI must have it: ${how})`);
    else {
      this.skipped = `missing ${what}`;
      console.log(`# SKIP ${this.name}: ${what} is not installed; ${how}`);
    }
  }
}

// Failures outside any peer's row (a test server that died, the time limit).
let setup = null;
const setupRow = () => setup || (setup = new Row('setup', 'ws test servers', 'harness'));

const selected = (name) => only.length === 0 || only.some((w) => name.includes(w));
const INSTALL_HINT = 'run `sh tests/interop/install.sh` as root (or `make interop` as root)';

// ------------------------------------------------------------ peers

const versions = {};

function detectPeers() {
  const peers = {};
  const ws = tryRequire('ws');
  peers.nodeWs = ws ? { ws, version: tryRequire('ws/package.json').version } : null;
  const pw = tryRequire('playwright-core');
  peers.chromium = pw && fs.existsSync(CHROMIUM)
    ? { pw, playwright: tryRequire('playwright-core/package.json').version } : null;
  peers.chromiumWhy = !fs.existsSync(CHROMIUM) ? `${CHROMIUM} (Debian package chromium)`
    : 'playwright-core (npm ci in tests/interop)';
  const py = fs.existsSync(PY) && spawnSync(PY, ['-c', 'import websockets; print(websockets.__version__)'], { encoding: 'utf8' });
  peers.python = py && py.status === 0 ? { version: py.stdout.trim() } : null;
  peers.lws = fs.existsSync(bin('interop/lws_peer')) ? {} : null;
  let nginx = null;
  for (const p of ['/usr/sbin/nginx', '/usr/bin/nginx']) if (fs.existsSync(p)) { nginx = p; break; }
  if (nginx) {
    const v = spawnSync(nginx, ['-v'], { encoding: 'utf8' });
    peers.nginx = { path: nginx, version: (/nginx\/(\S+)/.exec(v.stderr || '') || [])[1] || '?' };
  }
  if (fs.existsSync(SQUID)) {
    const v = spawnSync(SQUID, ['-v'], { encoding: 'utf8' });
    peers.squid = { path: SQUID, version: (/Version (\S+)/.exec(v.stdout || '') || [])[1] || '?' };
  }
  for (const [key, prog, flag] of [['redis', 'redis-server', '--version'], ['nats', 'nats-server', '--version']]) {
    const v = spawnSync(prog, [flag], { encoding: 'utf8' });
    peers[key] = v.status === 0 ? { path: prog, version: (/v=(\S+)|v(\d+\.\S+)/.exec(v.stdout + v.stderr) || []).slice(1).find(Boolean) || '?' } : null;
  }
  return peers;
}

// ------------------------------------------------------------ Node's ws client

async function nodeClientCases(row, WebSocket, base, server, tag) {
  const mark = server.mark();
  const T = 20000;
  const open = (name, protocols) => new Promise((resolve, reject) => {
    const ws = new WebSocket(base + tag + '/' + name, protocols, { maxPayload: 64 << 20, handshakeTimeout: T });
    const inbox = [], waiters = [];
    let closed = null;
    const closeWaiters = [];
    ws.on('message', (data, isBinary) => {
      const m = { data: Buffer.isBuffer(data) ? data : Buffer.concat(data), binary: isBinary };
      const w = waiters.shift(); if (w) w(m); else inbox.push(m);
    });
    ws.on('close', (code, reason) => {
      closed = { code, reason: reason.toString() };
      for (const w of closeWaiters.splice(0)) w(closed);
      for (const w of waiters.splice(0)) w(null);
    });
    ws.on('error', (e) => reject(e));
    ws.on('open', () => resolve({
      ws,
      next: () => (inbox.length ? Promise.resolve(inbox.shift())
        : closed ? Promise.resolve(null) : withTimeout(new Promise((r) => waiters.push(r)), T)),
      closed: () => (closed ? Promise.resolve(closed) : withTimeout(new Promise((r) => closeWaiters.push(r)), T)),
    }));
  });
  const echo = (payload, isBinary) => async (c) => {
    c.ws.send(payload, { binary: isBinary });
    const m = await c.next();
    if (!m) return 'no echo within 20 s';
    if (m.binary !== isBinary) return `echo came back as ${m.binary ? 'binary' : 'text'}`;
    return m.data.equals(Buffer.from(payload)) ? null : `echo differs (${m.data.length} bytes, want ${payload.length})`;
  };
  const reply = (send, want, isBinary = false) => async (c) => {
    c.ws.send(send);
    const m = await c.next();
    if (!m) return 'no reply within 20 s';
    if (m.binary !== isBinary || !m.data.equals(Buffer.from(want))) return `got ${m.binary ? 'binary' : 'text'} "${m.data.toString().slice(0, 80)}"`;
    return null;
  };
  const cases = [];
  const add = (name, fn, protocols) => cases.push({ name, fn, protocols });
  for (const n of SIZES) add(`text-${sizeName(n)}`, echo(text(n), false));
  add('text-utf8', echo(UTF8, false));
  for (const n of SIZES) add(`binary-${sizeName(n)}`, echo(binary(n), true));
  add('fragmented-text-utf8', async (c) => {
    for (const [i, p] of split(Buffer.from(UTF8), 5).entries()) c.ws.send(p, { binary: false, fin: i === 4 });
    const m = await c.next();
    return m && !m.binary && m.data.toString() === UTF8 ? null : 'echo differs or missing';
  });
  add('fragmented-binary-ping-between', async (c) => {
    const big = binary(256 * 1024);
    let pong = false;
    c.ws.once('pong', (d) => { pong = d.toString() === 'between'; });
    split(big, 4).forEach((p, i) => {
      c.ws.send(p, { binary: true, fin: i === 3 });
      if (i === 0) c.ws.ping('between');
    });
    const m = await c.next();
    if (!m || !m.binary || !m.data.equals(big)) return 'echo differs or missing';
    return pong ? null : 'no pong for the ping between the fragments';
  });
  add('server-fragmented-text-utf8', reply('!frag 5 ' + UTF8, UTF8));
  add('server-fragmented-binary-ping-between', async (c) => {
    let ping = false;
    c.ws.on('ping', (d) => { if (d.toString() === 'between') ping = true; });
    const why = await reply('!fragb 4 262144', binary(262144), true)(c);
    return why || (ping ? null : 'the ping between the fragments was not seen');
  });
  add('client-ping-pong', (c) => new Promise((resolve) => {
    const t = setTimeout(() => resolve('no pong within 20 s'), T);
    c.ws.on('pong', (d) => { if (d.toString() === 'node-ping') { clearTimeout(t); resolve(null); } });
    c.ws.ping('node-ping');
  }));
  add('server-ping-pong', reply('!ping node-ping', 'pong:node-ping'));
  add('keepalive-pings-answered', async (c) => {
    let pings = 0;
    c.ws.on('ping', () => pings++);
    await sleep(1500); // quiet: the server's keepalive pings go on
    c.ws.send('!stats');
    const m = await c.next();
    const pongs = m ? Number((/pongs=(\d+)/.exec(m.data.toString()) || [])[1]) : 0;
    if (pings < 2 || pongs < 2) return `${pings} pings seen, ${pongs} pongs at the server in 1.5 s`;
    return echo('still open', false)(c);
  });
  add('subprotocol', async (c) => (c.ws.protocol === 'interop.v2'
    ? reply('!proto', 'proto:interop.v2')(c) : `negotiated "${c.ws.protocol}"`), ['nope', 'interop.v2', 'interop.v1']);
  add('subprotocol-none', async (c) => (c.ws.protocol === '' ? reply('!proto', 'proto:')(c) : `negotiated "${c.ws.protocol}"`));
  add('extension-declined', async (c) => (c.ws.extensions === ''
    ? echo('x'.repeat(1000), false)(c) : `extensions accepted: ${c.ws.extensions}`));
  add('close-from-client-4000', async (c) => {
    c.ws.close(4000, 'client-bye \u2713');
    const e = await c.closed();
    return e && e.code === 4000 ? null : `closed with ${JSON.stringify(e)}`;
  });
  add('close-from-server-4001', async (c) => {
    c.ws.send('!close 4001 server-bye \u2713');
    const e = await c.closed();
    return e && e.code === 4001 && e.reason === 'server-bye \u2713' ? null : `closed with ${JSON.stringify(e)}`;
  });
  for (const k of cases) {
    let why;
    try {
      const c = await withTimeout(open(k.name, k.protocols), T);
      if (!c) why = 'no open within 20 s';
      else {
        why = await withTimeout(k.fn(c).then((x) => x || 'passed'), 60000);
        why = why === null ? 'timed out after 60 s' : why === 'passed' ? null : why;
        if (c.ws.readyState === WebSocket.OPEN) c.ws.close(1000);
      }
    } catch (e) {
      why = `${e.name}: ${e.message}`;
    }
    row.check(k.name, !why, why);
  }
  await closeSeen(row, server, tag, mark);
}

// The server's side of the client-initiated close: it got the code and
// the reason the client sent.
async function closeSeen(row, server, tag, mark) {
  const m = await server.waitFor(new RegExp(`^close id=\\d+ path=/${tag}/close-from-client-4000 code=(\\d+) reason=(.*)$`), 5000, mark);
  row.check('close-from-client-4000 seen by the server', m && m[1] === '4000' && m[2] === 'client-bye \u2713',
    m ? `the server logged code ${m[1]} reason "${m[2]}"` : 'the server logged no close');
}

// ------------------------------------------------------------ Python client

async function pythonClientCases(row, base, server, tag) {
  const mark = server.mark();
  const r = await runProgram(PY, [path.join(here, 'py_peer.py'), 'client', base + (tag === 'python' ? '' : tag + '/')], { timeout: 180000 });
  relayCases(row, r, 'py_peer.py client');
  // py_peer.py names its paths /python/CASE under the base.
  await closeSeen(row, server, tag === 'python' ? 'python' : `${tag}/python`, mark);
}

// Turns "ok - NAME" / "not ok - NAME: WHY" lines of a program into cases.
function relayCases(row, r, what, prefix = '') {
  let n = 0;
  for (const line of r.stdout.toString('utf8').split('\n')) {
    let m;
    if ((m = /^ok - (.*)$/.exec(line))) { row.ok(prefix + m[1]); n++; }
    else if ((m = /^not ok - ([^:]*): (.*)$/.exec(line))) { row.fail(prefix + m[1], m[2]); n++; }
  }
  if (r.timedOut) row.fail(`${prefix}${what} finished`, 'timed out');
  else if (n === 0 || (r.code !== 0 && row.failed === 0)) {
    row.fail(`${prefix}${what} ran`, `exit ${r.code}${r.signal ? ' ' + r.signal : ''}: ${r.stderr.slice(-300)}`);
  }
}

// ------------------------------------------------------------ Chromium

// extraArgs: more Chromium flags, for this profile only.
async function withBrowser(peer, fn, extraArgs = []) {
  const dir = fs.mkdtempSync(path.join(tmp, 'chromium-profile-'));
  const ctx = await peer.pw.chromium.launchPersistentContext(dir, {
    executablePath: CHROMIUM,
    headless: true,
    timeout: 60000,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--no-first-run', '--disable-quic', '--disable-component-update', '--disable-sync', ...extraArgs],
  });
  try {
    versions.chromium = ctx.browser() ? ctx.browser().version() : versions.chromium;
    return await fn(ctx);
  } finally {
    await withTimeout(ctx.close(), 10000);
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

async function chromiumCases(row, ctx, pageUrl, server, tag) {
  const mark = server.mark();
  const page = ctx.pages()[0] || await ctx.newPage();
  await page.goto(pageUrl, { timeout: 20000 });
  const ua = await page.evaluate(() => navigator.userAgent);
  row.check('page served by ws (on_http)', /HeadlessChrome\//.test(ua), `user agent ${ua}`);
  const results = await withTimeout(page.evaluate(() => window.interop.run()), 240000);
  if (!results) row.fail('browser cases finished', 'timed out after 240 s');
  else for (const r of results) row.check(r.name, r.ok, r.why);
  await closeSeen(row, server, tag, mark);
}

// tls: { cert, key } runs build/chat --cert/--key (an https:// page and a
// wss:// socket); the browser must trust the certificate (chatTlsRow).
async function chatDemo(row, ctx, tls = null) {
  const argv = ['-p', '0', ...(tls ? ['--cert', tls.cert, '--key', tls.key] : [])];
  const child = track(spawn(bin('chat'), argv, { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] }), 'chat');
  const scheme = tls ? 'https' : 'http';
  let out = '';
  child.stdout.on('data', (d) => { out += d; });
  child.stderr.on('data', (d) => { out += d; });
  let port = null;
  for (let i = 0; i < 100 && !port && child.exitCode === null; i++) {
    const m = new RegExp(`${scheme}://127\\.0\\.0\\.1:(\\d+)/`).exec(out);
    if (m) port = Number(m[1]);
    else await sleep(100);
  }
  if (!port) {
    if (tls && /built without TLS/.test(out)) row.missing('TLS in this build (build/chat)', 'apt-get install libmbedtls-dev, then make WS_TLS=1');
    else row.fail('chat demo started', `no ${scheme}:// URL printed: ${out.trim()}`);
    await stop(child);
    return;
  }
  try {
    const url = `${scheme}://127.0.0.1:${port}/`;
    const a = await ctx.newPage(), b = await ctx.newPage();
    const sockets = [];
    for (const p of [a, b]) p.on('websocket', (w) => sockets.push(w.url()));
    for (const p of [a, b]) {
      await p.goto(url, { timeout: 20000 });
      await p.waitForFunction(() => document.getElementById('status').textContent === 'connected', null, { timeout: 20000 });
    }
    row.ok(`two pages load the chat page (${url}) and connect to /ws`);
    if (tls) {
      const wss = `wss://127.0.0.1:${port}/ws`;
      row.check(`both pages' WebSockets are ${wss}`, sockets.length === 2 && sockets.every((u) => u === wss),
        `sockets: ${JSON.stringify(sockets)}`);
      const proto = await Promise.all([a, b].map((p) => p.evaluate(() => location.protocol)));
      row.check('both pages were loaded over https:', proto.every((x) => x === 'https:'), JSON.stringify(proto));
    }
    const join = async (p, name) => {
      await p.fill('#name', name);
      await p.fill('#room', 'interop');
      await p.click('#joinf button');
    };
    const members = (p, names) => p.waitForFunction((want) => {
      const have = [...document.querySelectorAll('#members li')].map((li) => li.textContent).sort();
      return JSON.stringify(have) === JSON.stringify(want);
    }, names.slice().sort(), { timeout: 20000 }).then(() => true, () => false);
    await join(a, 'alice');
    await join(b, 'bob');
    row.check('both join room interop; each member list shows alice and bob',
      (await members(a, ['alice', 'bob'])) && (await members(b, ['alice', 'bob'])),
      'member lists: ' + JSON.stringify(await Promise.all([a, b].map((p) => p.evaluate(() => document.getElementById('members').textContent)))));
    const say = async (p, textValue) => { await p.fill('#text', textValue); await p.click('#sayf button'); };
    const sees = (p, who, textValue) => p.waitForFunction(([w, t]) => [...document.querySelectorAll('#log .m')]
      .some((d) => d.querySelector('b') && d.querySelector('b').textContent === w && d.textContent === w + t),
    [who, textValue], { timeout: 20000 }).then(() => true, () => false);
    const t1 = 'hello from alice \u2713 \ud83c\udf89';
    await say(a, t1);
    row.check("bob's page shows alice's message", await sees(b, 'alice', t1), 'not shown within 20 s');
    const t2 = 'hi alice, bob here \u65e5\u672c';
    await say(b, t2);
    row.check("alice's page shows bob's message", await sees(a, 'bob', t2), 'not shown within 20 s');
    await b.close();
    row.check("alice's member list drops bob when his page closes", await members(a, ['alice']), 'bob still listed');
    await a.close();
  } catch (e) {
    row.fail('chat demo', e.message);
  } finally {
    await stop(child);
  }
}

// The chat demo over TLS: certificates from tests/tls/certs.sh, and a
// browser profile that trusts exactly the server's key (Chromium's
// --ignore-certificate-errors-spki-list, honoured with a user data dir,
// which a persistent context has): no other certificate error is ignored.
async function chatTlsRow(row, peer) {
  const dir = fs.mkdtempSync(path.join(tmp, 'chat-tls-'));
  const mk = await runProgram('sh', [path.join(here, '..', 'tls', 'certs.sh'), dir], { timeout: 30000 });
  if (mk.code !== 0) { row.fail('test certificates made (tests/tls/certs.sh)', `exit ${mk.code}: ${mk.stderr}`); return; }
  const spki = spawnSync('sh', ['-c', 'openssl x509 -pubkey -noout -in "$1" | openssl pkey -pubin -outform der | ' +
    'openssl dgst -sha256 -binary | base64', 'sh', path.join(dir, 'srv.pem')], { encoding: 'utf8' });
  const hash = (spki.stdout || '').trim();
  if (spki.status !== 0 || !/^[A-Za-z0-9+/]{43}=$/.test(hash)) {
    row.fail('SPKI hash of the test certificate', `${spki.stderr || hash}`);
    return;
  }
  const tls = { cert: path.join(dir, 'srv.pem'), key: path.join(dir, 'srv.key') };
  await withBrowser(peer, (ctx) => chatDemo(row, ctx, tls), [`--ignore-certificate-errors-spki-list=${hash}`]);
}

// ------------------------------------------------------------ ws as the client

const SAFE = (n) => { // binary without \n or \r, for wsc --binary lines
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = 0x0e + (i % 241);
  return b;
};

async function wsClientCases(row, server, opts = {}) {
  const url = server.url;
  const wsc = bin('wsc');
  // echo_client: the server drives (common.js drive()).
  if (!opts.noDrive) {
    const mark = server.mark();
    const r = await runProgram(bin('echo_client'), ['-v', '--timeout', '120', url + 'drive'], { timeout: 150000 });
    const done = await server.waitFor(/^drive done ok=(\d+) fail=(\d+)$/, 5000, mark);
    let n = 0;
    for (const line of server.since(mark)) {
      const m = /^drive case=(\S+) (ok|fail)(?: (.*))?$/.exec(line);
      if (m) { n++; row.check(`echo_client: ${m[1]}`, m[2] === 'ok', m[3]); }
    }
    if (!done) row.fail('echo_client: every drive case ran', `${n} cases ran; echo_client: ${r.stderr}`);
    row.check('echo_client: server closed with 1000 "drive ok", exit 0',
      r.code === 0 && /closed by the server: 1000 drive ok/.test(r.stderr), `exit ${r.code}: ${r.stderr}`);
  }

  // ws_client: fragmented sends, a ping between fragments, close 4000.
  {
    const mark = server.mark();
    const r = await runProgram(bin('interop/ws_client'), [url + 'ws_client'], { timeout: 60000 });
    relayCases(row, r, 'ws_client', 'ws_client: ');
    const m = await server.waitFor(/^close id=\d+ path=\/ws_client code=(\d+) reason=(.*)$/, 5000, mark);
    row.check('ws_client: the server got close 4000 with its reason', m && m[1] === '4000' && m[2] === 'client-bye \u2713',
      m ? `server logged ${m[1]} "${m[2]}"` : 'no close logged');
  }

  // wsc: stdin lines out, messages in, at every size.
  {
    const payloads = SIZES.map((n) => [`text-${sizeName(n)}`, text(n)]).concat([['text-utf8', UTF8]]);
    const mark = server.mark();
    const r = await runProgram(wsc, ['--linger', '3000', url + 'wsc-text'],
      { input: payloads.map((p) => p[1] + '\n').join(''), timeout: 90000 });
    const got = r.stdout.toString('utf8').split('\n');
    payloads.forEach(([name, p], i) => row.check(`wsc: ${name}`, got[i] === p,
      got[i] === undefined ? `no line ${i + 1} (exit ${r.code}: ${r.stderr})` : `line ${i + 1} differs (${Buffer.byteLength(got[i])} bytes, want ${Buffer.byteLength(p)})`));
    row.check('wsc: closes with 1000 at the end of input, exit 0', r.code === 0, `exit ${r.code}: ${r.stderr}`);
    const m = await server.waitFor(/^close id=\d+ path=\/wsc-text code=(\d+)/, 5000, mark);
    row.check('wsc: the server got close 1000', m && m[1] === '1000', m ? `server logged ${m[1]}` : 'no close logged');
  }
  {
    const sizes = [1, 125, 126, 127, 65535, 65536, 65537, 1 << 20];
    const r = await runProgram(wsc, ['--binary', '--linger', '3000', url + 'wsc-binary'],
      { input: Buffer.concat(sizes.map((n) => Buffer.concat([SAFE(n), Buffer.from('\n')]))), timeout: 60000 });
    let at = 0;
    for (const n of sizes) {
      const piece = r.stdout.subarray(at, at + n);
      row.check(`wsc --binary: binary-${sizeName(n)}`, piece.equals(SAFE(n)), `bytes ${at}..${at + n} differ (got ${r.stdout.length} bytes in all; exit ${r.code})`);
      at += n;
    }
    row.check('wsc --binary: nothing more, exit 0', r.stdout.length === at && r.code === 0, `${r.stdout.length} bytes, exit ${r.code}: ${r.stderr}`);
  }
  {
    const r = await runProgram(wsc, ['-v', '--linger', '2000', '--subprotocol', 'nope', '--subprotocol', 'interop.v2', url + 'wsc-commands'],
      { input: `!proto\n!ping wsc-ping\n!frag 5 ${UTF8}\n`, timeout: 60000 });
    // The pong reply waits for the pong, so it may come after the others.
    const got = r.stdout.toString('utf8').split('\n');
    row.check('wsc: subprotocol interop.v2 negotiated', /connected, subprotocol interop\.v2/.test(r.stderr) && got[0] === 'proto:interop.v2',
      `stderr: ${r.stderr} stdout: ${got[0]}`);
    row.check('wsc: server ping answered with its payload', got.includes('pong:wsc-ping') && /wsc: ping \(8 bytes\)/.test(r.stderr),
      `stdout: ${JSON.stringify(got)} stderr: ${r.stderr}`);
    row.check('wsc: server-fragmented-text-utf8', got.includes(UTF8), `got ${JSON.stringify(got)}`);
  }
  {
    const r = await runProgram(wsc, ['--linger', '2000', url + 'wsc-proto-none'], { input: '!proto\n', timeout: 30000 });
    row.check('wsc: no subprotocol offered, none chosen', r.stdout.toString() === 'proto:\n', `got ${JSON.stringify(r.stdout.toString())}`);
  }
  {
    const r = await runProgram(wsc, ['--linger', '2000', url + 'wsc-fragb'], { input: '!fragb 4 262144\n', timeout: 30000 });
    row.check('wsc: server-fragmented-binary-ping-between', r.stdout.equals(binary(262144)), `${r.stdout.length} bytes, exit ${r.code}`);
  }
  {
    // Client pings on a quiet connection: the server's pongs come back.
    const mark = server.mark();
    const r = await runProgram(wsc, ['-v', '--ping', '1', url + 'wsc-ping'], {
      input: (stdin) => setTimeout(() => stdin.end('after pings\n'), 2500), timeout: 30000 });
    const pongs = (r.stderr.match(/wsc: pong/g) || []).length;
    row.check('wsc --ping 1: the server answers client pings', pongs >= 2 && r.stdout.toString() === 'after pings\n' && r.code === 0,
      `${pongs} pongs, exit ${r.code}: ${r.stderr}`);
    if (!opts.noPingLog) {
      const m = await server.waitFor(/^ping id=\d+ len=0$/, 2000, mark);
      row.check('wsc --ping 1: the server saw the pings', !!m, 'no ping logged');
    }
  }
  {
    const r = await runProgram(wsc, ['--linger', '5000', url + 'wsc-close'], { input: '!close 4002 server-bye \u2713\n', timeout: 30000 });
    row.check('wsc: close-from-server-4002 (exit 3, code and reason shown)',
      r.code === 3 && r.stderr.includes('wsc: closed 4002: server-bye \u2713'), `exit ${r.code}: ${r.stderr}`);
  }
}

// ------------------------------------------------------------ nginx

// docs/nginx.conf is the recommended configuration: the test uses it as
// it is, with the listen address and the backend replaced, and for the
// idle cases proxy_read_timeout too. A line not found means the doc
// changed: the row fails.
function nginxSite(listenPort, backendPort, readTimeout) {
  const doc = fs.readFileSync(path.join(root, 'docs', 'nginx.conf'), 'utf8');
  const edits = [
    [/^(\s*)listen 80;$/m, `$1listen 127.0.0.1:${listenPort};`],
    [/^(\s*)server 127\.0\.0\.1:9001;$/m, `$1server 127.0.0.1:${backendPort};`],
  ];
  if (readTimeout) edits.push([/^(\s*)proxy_read_timeout \d+s;$/m, `$1proxy_read_timeout ${readTimeout};`]);
  let conf = doc;
  for (const [re, to] of edits) {
    if (!re.test(conf)) throw new Error(`docs/nginx.conf has no line matching ${re}: update tests/interop/run.js with it`);
    conf = conf.replace(re, to);
  }
  return conf;
}

async function startNginx(peer, name, backendPort, readTimeout, site = null, sitePorts = null) {
  const dir = fs.mkdtempSync(path.join(tmp, `nginx-${name}-`));
  const port = await freePort();
  for (const d of ['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi']) fs.mkdirSync(path.join(dir, d));
  fs.writeFileSync(path.join(dir, 'ws.conf'), site ? site(port, sitePorts) : nginxSite(port, backendPort, readTimeout));
  fs.writeFileSync(path.join(dir, 'nginx.conf'), [
    'worker_processes 1;',
    `pid ${dir}/nginx.pid;`,
    `error_log ${dir}/error.log warn;`,
    'events { worker_connections 256; }',
    'http {',
    `  access_log ${dir}/access.log;`,
    `  client_body_temp_path ${dir}/client_body;`,
    `  proxy_temp_path ${dir}/proxy;`,
    `  fastcgi_temp_path ${dir}/fastcgi;`,
    `  uwsgi_temp_path ${dir}/uwsgi;`,
    `  scgi_temp_path ${dir}/scgi;`,
    `  include ${dir}/ws.conf;`,
    '}', ''].join('\n'));
  // One process (no master), in the foreground, so its PID is all there is
  // to stop.
  const child = track(spawn(peer.path, ['-e', `${dir}/error.log`, '-p', dir + '/', '-c', `${dir}/nginx.conf`,
    '-g', 'daemon off; master_process off;'], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] }), `nginx-${name}`);
  let err = '';
  child.stderr.on('data', (d) => { err += d; });
  for (let i = 0; i < 100; i++) {
    if (child.exitCode !== null) break;
    const ok = await new Promise((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => { s.destroy(); resolve(true); });
      s.on('error', () => resolve(false));
    });
    if (ok) return { child, port, url: `ws://127.0.0.1:${port}/`, http: `http://127.0.0.1:${port}/`, dir };
    await sleep(100);
  }
  let log = '';
  try { log = fs.readFileSync(`${dir}/error.log`, 'utf8'); } catch (e) { /* none */ }
  await stop(child);
  throw new Error(`nginx did not start: ${err} ${log}`.slice(0, 400));
}

async function idleCases(row, WebSocket, viaPings, backendPings, viaNoPings, backendNoPings) {
  const QUIET = 8000;
  const connect = (url) => new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { handshakeTimeout: 10000 });
    ws.on('open', () => resolve(ws));
    ws.on('error', reject);
  });
  // Server pings every second: nginx sees traffic and keeps the tunnel.
  try {
    const mark = backendPings.mark();
    const ws = await connect(viaPings.url + 'nginx-idle/pings');
    let closedAt = null;
    let pings = 0;
    ws.on('ping', () => pings++);
    ws.on('close', () => { closedAt = Date.now(); });
    await sleep(QUIET);
    const alive = closedAt === null && ws.readyState === WebSocket.OPEN;
    let echoed = false;
    if (alive) {
      echoed = await withTimeout(new Promise((r) => { ws.once('message', (d) => r(d.toString() === 'after quiet')); ws.send('after quiet'); }), 5000);
    }
    row.check(`quiet ${QUIET / 1000} s with ws pinging every 1 s stays open (proxy_read_timeout 3s)`,
      alive && echoed && pings >= 5, `open ${alive}, echo ${echoed}, ${pings} pings seen`);
    ws.close(1000);
    const m = await backendPings.waitFor(/^close id=\d+ path=\/nginx-idle\/pings code=(\d+)/, 5000, mark);
    row.check('the backend saw the client close it with 1000', m && m[1] === '1000', m ? `code ${m[1]}` : 'no close logged');
  } catch (e) { row.fail('quiet connection with server pings', e.message); }
  // No pings: nginx cuts the tunnel after proxy_read_timeout.
  try {
    const mark = backendNoPings.mark();
    const t0 = Date.now();
    const ws = await connect(viaNoPings.url + 'nginx-idle/none');
    const closed = await withTimeout(new Promise((r) => ws.on('close', (code) => r({ code, after: Date.now() - t0 }))), 15000);
    if (closed) console.log(`# nginx closed the quiet connection after ${closed.after} ms (code ${closed.code} at the client)`);
    row.check('quiet without pings (ping_interval_ms 0) is cut by nginx after proxy_read_timeout (3 s)',
      closed && closed.code === 1006 && closed.after >= 2500 && closed.after < 8000,
      closed ? `closed with ${closed.code} after ${closed.after} ms` : 'still open after 15 s');
    const m = await backendNoPings.waitFor(/^close id=\d+ path=\/nginx-idle\/none code=(\d+)/, 5000, mark);
    row.check('the backend saw the cut as 1006 (no closing handshake)', m && m[1] === '1006', m ? `code ${m[1]}` : 'no close logged');
  } catch (e) { row.fail('quiet connection without pings', e.message); }
  // Client pings (wsc --ping 1) keep it open too, with no server pings.
  {
    const r = await runProgram(bin('wsc'), ['--ping', '1', viaNoPings.url + 'nginx-idle/wsc'], {
      input: (stdin) => setTimeout(() => stdin.end('after quiet\n'), QUIET), timeout: 30000 });
    row.check(`wsc --ping 1 (client pings): quiet ${QUIET / 1000} s through nginx without server pings stays open`,
      r.code === 0 && r.stdout.toString() === 'after quiet\n', `exit ${r.code}: ${r.stderr}`);
  }
}

// ------------------------------------------------------------ a chat cluster

// A broker on a free loopback port, nothing persisted: { child, port, url }.
async function startBroker(kind) {
  const port = await freePort();
  const argv = kind === 'redis'
    ? ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no']
    : ['-a', '127.0.0.1', '-p', String(port)];
  const child = track(spawn(kind === 'redis' ? 'redis-server' : 'nats-server', argv,
    { cwd: tmp, stdio: ['ignore', 'ignore', 'ignore'] }), kind);
  for (let i = 0; i < 100; i++) {
    if (child.exitCode !== null) break;
    const ok = await new Promise((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => { s.destroy(); resolve(true); });
      s.on('error', () => resolve(false));
    });
    if (ok) return { child, port, url: `${kind}://127.0.0.1:${port}` };
    await sleep(100);
  }
  await stop(child);
  throw new Error(`${kind} did not start on port ${port}`);
}

// build/chat joined to the broker: { child, port, out }.
async function startChatNode(kind, brokerUrl, port = 0) {
  const child = track(spawn(bin('chat'), ['-p', String(port), `--${kind}`, brokerUrl],
    { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] }), 'chat');
  const node = { child, out: '', port: null };
  child.stdout.on('data', (d) => { node.out += d; });
  child.stderr.on('data', (d) => { node.out += d; });
  for (let i = 0; i < 100 && !node.port && child.exitCode === null; i++) {
    const m = /http:\/\/127\.0\.0\.1:(\d+)\//.exec(node.out);
    if (m) node.port = Number(m[1]);
    else await sleep(100);
  }
  if (!node.port) {
    await stop(child);
    throw new Error(`build/chat --${kind} did not start: ${node.out.trim().slice(-300)}`);
  }
  return node;
}

// A Node ws client of the chat: every event parsed, waits on a predicate.
function chatClient(WebSocket, url, opts = {}) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, opts);
    const c = { ws, events: [], waiters: [] };
    ws.on('message', (data) => {
      let ev;
      try { ev = JSON.parse(data.toString()); } catch (e) { ev = { type: 'unparsable', raw: data.toString() }; }
      c.events.push(ev);
      for (const w of c.waiters.slice()) w();
    });
    c.until = (pred, ms = 20000) => new Promise((res) => {
      const check = () => {
        const hit = pred(c.events);
        if (!hit) return false;
        clearTimeout(t);
        c.waiters.splice(c.waiters.indexOf(check), 1);
        res(true);
        return true;
      };
      const t = setTimeout(() => { c.waiters.splice(c.waiters.indexOf(check), 1); res(false); }, ms);
      c.waiters.push(check);
      check();
    });
    c.say = (line) => ws.send(line);
    ws.on('error', reject);
    ws.on('open', () => resolve(c));
  });
}

const msgs = (events, from) => events.filter((e) => e.type === 'msg' && (!from || e.name === from)).map((e) => e.text);

// Sends "say TAG-k" from c every 300 ms until every client in `to` has one.
async function untilAcross(c, to, tag, ms = 20000) {
  const end = Date.now() + ms;
  for (let k = 0; Date.now() < end; k++) {
    c.say(`say ${tag}-${k}`);
    const all = await Promise.all(to.map((x) => x.until((ev) => msgs(ev).some((t) => t.startsWith(`${tag}-`)), 300)));
    if (all.every(Boolean)) return true;
  }
  return false;
}

// Lines "N-k" from each sender, each sender's in order, none twice.
function orderedOnce(texts, senders, count) {
  for (const who of senders) {
    const mine = texts.filter((t) => t.startsWith(`${who}:`)).map((t) => Number(t.split(':')[1]));
    if (mine.length !== count) return `${who}: ${mine.length} of ${count}`;
    for (let i = 0; i < count; i++) if (mine[i] !== i) return `${who}: line ${i} is ${mine[i]}`;
  }
  return null;
}

// Three chat processes through a real broker: a Chromium page on the
// first, Node ws clients on the other two; messages cross every way, each
// sender's in order, none twice.
async function clusterRow(row, kind, peers) {
  const WebSocket = peers.nodeWs.ws.WebSocket;
  const broker = await startBroker(kind);
  const nodes = [];
  try {
    row.ok(`${kind} ${peers[kind].version} started on ${broker.url}`);
    for (let i = 0; i < 3; i++) nodes.push(await startChatNode(kind, broker.url));
    row.ok(`three chat processes on ports ${nodes.map((n) => n.port).join(', ')}, --${kind} ${broker.url}`);
    const bob = await chatClient(WebSocket, `ws://127.0.0.1:${nodes[1].port}/ws`);
    const carol = await chatClient(WebSocket, `ws://127.0.0.1:${nodes[2].port}/ws`);
    bob.say('join interop bob');
    carol.say('join interop carol');
    row.check('Node ws clients on processes 2 and 3 joined', (await bob.until((e) => e.some((x) => x.type === 'joined')))
      && (await carol.until((e) => e.some((x) => x.type === 'joined'))), 'no "joined"');
    await withBrowser(peers.chromium, async (ctx) => {
      const page = await ctx.newPage();
      await page.goto(`http://127.0.0.1:${nodes[0].port}/`, { timeout: 20000 });
      await page.waitForFunction(() => document.getElementById('status').textContent === 'connected', null, { timeout: 20000 });
      await page.fill('#name', 'alice');
      await page.fill('#room', 'interop');
      await page.click('#joinf button');
      const pageTexts = () => page.evaluate(() => [...document.querySelectorAll('#log .m')].map((d) => d.textContent));
      const pageSay = async (t) => { await page.fill('#text', t); await page.click('#sayf button'); };
      // Subscriptions are made in the background: wait until the way is open.
      row.check("bob's messages reach carol (process 2 -> 3)", await untilAcross(bob, [carol], 'sync-b'), 'not within 20 s');
      row.check("carol's messages reach bob (process 3 -> 2)", await untilAcross(carol, [bob], 'sync-c'), 'not within 20 s');
      const seen = await page.waitForFunction(() => [...document.querySelectorAll('#log .m')]
        .some((d) => /^carolsync-c-/.test(d.textContent)), null, { timeout: 20000 }).then(() => true, () => false);
      row.check("the page on process 1 shows carol's messages", seen, 'not within 20 s');
      const hello = 'hello from the page \u2713';
      await pageSay(hello);
      const both = await Promise.all([bob, carol].map((c) => c.until((e) => msgs(e, 'alice').includes(hello))));
      row.check("the page's message reaches Node ws clients on processes 2 and 3", both.every(Boolean), JSON.stringify(both));
      await sleep(300);
      row.check('...once each', [bob, carol].every((c) => msgs(c.events, 'alice').filter((t) => t === hello).length === 1),
        JSON.stringify([bob, carol].map((c) => msgs(c.events, 'alice'))));
      const N = 30;
      for (let i = 0; i < N; i++) { bob.say(`say bob:${i}`); carol.say(`say carol:${i}`); }
      const done = (c) => c.until((e) => msgs(e).filter((t) => /^(bob|carol):\d+$/.test(t)).length >= 2 * N);
      row.check(`${N} lines each from bob and carol reach both`, (await done(bob)) && (await done(carol)), 'not within 20 s');
      const ok = await page.waitForFunction((n) => [...document.querySelectorAll('#log .m')]
        .filter((d) => /^(bob|carol)(bob|carol):\d+$/.test(d.textContent)).length >= 2 * n, N, { timeout: 20000 }).then(() => true, () => false);
      row.check(`... and the page (${2 * N} lines)`, ok, 'not within 20 s');
      await sleep(300);
      for (const [who, c] of [['bob', bob], ['carol', carol]]) {
        const bad = orderedOnce(msgs(c.events).filter((t) => /^(bob|carol):\d+$/.test(t)), ['bob', 'carol'], N);
        row.check(`${who} sees each sender's lines in order, once`, !bad, bad);
      }
      const texts = (await pageTexts()).filter((t) => /^(bob|carol)(bob|carol):\d+$/.test(t)).map((t) => t.replace(/^(bob|carol)/, ''));
      const bad = orderedOnce(texts, ['bob', 'carol'], N);
      row.check("the page shows each sender's lines in order, once", !bad, bad);
      await page.close();
    });
    bob.ws.close();
    carol.ws.close();
    row.check('every process still runs', nodes.every((n) => n.child.exitCode === null), nodes.map((n) => n.out).join(' | '));
  } finally {
    for (const n of nodes) await stop(n.child);
    await stop(broker.child);
  }
}

// docs/nginx.conf's cluster upstream (hash $remote_addr consistent) in
// front of three chat processes: clients from eight source addresses are
// routed by address, stick to their process, and all talk to each other.
function nginxClusterSite(listenPort, ports) {
  let conf = nginxSite(listenPort, 9001, null);
  const edits = [
    [/^(\s*)proxy_pass http:\/\/ws_backend;$/m, '$1proxy_pass http://ws_cluster;'],
    [/^(\s*)server 127\.0\.0\.1:8081;$/m, `$1server 127.0.0.1:${ports[0]};`],
    [/^(\s*)server 127\.0\.0\.1:8082;$/m, `$1server 127.0.0.1:${ports[1]};`],
    [/^(\s*)server 127\.0\.0\.1:8083;$/m, `$1server 127.0.0.1:${ports[2]};`],
  ];
  for (const [re, to] of edits) {
    if (!re.test(conf)) throw new Error(`docs/nginx.conf has no line matching ${re}: update tests/interop/run.js with it`);
    conf = conf.replace(re, to);
  }
  return conf;
}

async function nginxClusterRow(row, peers) {
  const WebSocket = peers.nodeWs.ws.WebSocket;
  const broker = await startBroker('redis');
  const nodes = [];
  let front = null;
  try {
    for (let i = 0; i < 3; i++) nodes.push(await startChatNode('redis', broker.url));
    front = await startNginx(peers.nginx, 'cluster', 0, null, nginxClusterSite, nodes.map((n) => n.port));
    row.ok(`nginx on ${front.url} -> chat on ${nodes.map((n) => n.port).join(', ')} (docs/nginx.conf, upstream ws_cluster), Redis between them`);
    const clients = [];
    for (let i = 0; i < 8; i++) {
      const c = await chatClient(WebSocket, `${front.url}ws`, { localAddress: `127.0.0.${i + 2}` });
      c.name = `u${i}`;
      c.say(`join room ${c.name}`);
      clients.push(c);
    }
    const joined = await Promise.all(clients.map((c) => c.until((e) => e.some((x) => x.type === 'joined'))));
    row.check('eight clients from 127.0.0.2-9 joined through nginx', joined.every(Boolean), JSON.stringify(joined));
    for (const c of clients) row.check(`${c.name} reaches everyone`, await untilAcross(c, clients, `from-${c.name}`), 'not within 20 s');
    // Where each address landed: a probe from the same address joins the
    // room, and its "joined" lists the members of its process. Sticky: the
    // probe from 127.0.0.2 finds u0 there.
    const groups = [];
    let again = null;
    for (let i = 0; i < clients.length; i++) {
      const probe = await chatClient(WebSocket, `${front.url}ws`, { localAddress: `127.0.0.${i + 2}` });
      probe.say(`join room p${i}`);
      await probe.until((e) => e.some((x) => x.type === 'joined'));
      const members = ((probe.events.find((x) => x.type === 'joined') || {}).members || []).filter((m) => /^u\d$/.test(m)).sort();
      row.check(`a second connection from 127.0.0.${i + 2} reaches the same process as the first (u${i} in its member list)`,
        members.includes(`u${i}`), JSON.stringify(members));
      groups.push(JSON.stringify(members));
      if (i === 0) again = probe; else probe.ws.close();
    }
    const distinct = new Set(groups);
    row.check('the addresses are spread over more than one process', distinct.size > 1, [...distinct].join(' '));
    for (const c of clients.concat([again])) c.ws.close();
    const log = fs.readFileSync(path.join(front.dir, 'access.log'), 'utf8');
    row.check('nginx proxied the upgrades (101 in its access log)', / 101 /.test(log), 'no 101 in the access log');
  } finally {
    if (front) await stop(front.child);
    for (const n of nodes) await stop(n.child);
    await stop(broker.child);
  }
}

// ------------------------------------------------------------ permessage-deflate

// JSON chat messages of about 200 bytes, as the issue's benchmark uses.
const chatJson = (i) => JSON.stringify({ type: 'msg', room: 'lobby', from: `user${i % 17}`,
  text: `hello everyone, this is message number ${i} of the interop run`, ts: 1700000000 + i,
  tags: ['a', 'b', 'c'] });

// Node's ws client with perMessageDeflate against ws_peer --deflate: both
// directions, with and without context takeover, window bits 8 to 15.
async function deflateNodeCases(row, WebSocket, server, tag) {
  const T = 20000;
  for (const nct of [false, true]) {
    for (let bits = 8; bits <= 15; bits++) {
      const name = `${nct ? 'no-context' : 'context'}-bits-${bits}`;
      let why = null;
      const mark = server.mark();
      try {
        why = await withTimeout(new Promise((resolve) => {
          const ws = new WebSocket(`${server.url}${tag}/${name}`, {
            maxPayload: 64 << 20, handshakeTimeout: T,
            // Without nct the client neither asks nor refuses (ws refuses a
            // server's client_no_context_takeover when the option is false).
            perMessageDeflate: { threshold: 0, serverNoContextTakeover: nct || undefined, clientNoContextTakeover: nct || undefined,
              serverMaxWindowBits: bits, clientMaxWindowBits: bits },
          });
          const msgs = [];
          for (let i = 0; i < 40; i++) msgs.push(chatJson(i));
          msgs.push(chatJson(99).repeat(20)); // about 4 KB
          const big = text(1 << 20);
          let k = 0, read0 = 0;
          ws.on('error', (e) => resolve(`error: ${e.message}`));
          ws.on('open', () => {
            if (!/permessage-deflate/.test(ws.extensions)) { resolve(`extensions "${ws.extensions}"`); return; }
            ws.send(msgs[0]);
          });
          ws.on('message', (data, isBinary) => {
            const got = isBinary ? data : data.toString();
            if (k < msgs.length) {
              if (got !== msgs[k]) { resolve(`message ${k} differs`); return; }
              k++;
              if (k < msgs.length) ws.send(msgs[k]);
              else { read0 = ws._socket.bytesRead; ws.send(big); }
            } else if (k === msgs.length) {
              if (got !== big) { resolve('1 MiB text differs'); return; }
              const wire = ws._socket.bytesRead - read0;
              // The server compresses (but with an 8-bit window, which it
              // may not use: then it sends plain).
              if (bits > 8 && wire > big.length / 8) { resolve(`1 MiB came back in ${wire} bytes: not compressed`); return; }
              k++;
              // A compressed message in fragments, then binary.
              const pieces = split(Buffer.from(UTF8.repeat(100)), 3);
              pieces.forEach((p, i) => ws.send(p, { binary: false, fin: i === 2, compress: true }));
            } else if (k === msgs.length + 1) {
              if (got !== UTF8.repeat(100)) { resolve('fragmented compressed text differs'); return; }
              k++;
              ws.send(binary(70000), { binary: true });
            } else {
              if (!isBinary || !data.equals(binary(70000))) { resolve('binary differs'); return; }
              ws.close(1000);
              resolve('passed');
            }
          });
        }), 60000);
        why = why === 'passed' ? null : why === null ? 'timed out after 60 s' : why;
        if (why === null && !(await server.waitFor(new RegExp(`^open id=\\d+ path=/${tag}/${name} .*deflate=1$`), 5000, mark)))
          why = 'ws_peer did not log deflate=1 for it';
      } catch (e) { why = `${e.name}: ${e.message}`; }
      row.check(name, why === null, why);
    }
  }
}

// Chromium offers permessage-deflate; the page's socket must name it in
// ws.extensions and echo through it.
async function deflateChromiumCases(row, ctx, http) {
  const page = ctx.pages()[0] || await ctx.newPage();
  await page.goto(http, { timeout: 20000 });
  const results = await withTimeout(page.evaluate(async (msgs) => {
    const out = [];
    const url = 'ws://' + location.host + '/chromium-deflate/';
    const ws = new WebSocket(url + 'echo');
    ws.binaryType = 'arraybuffer';
    const inbox = [], waiters = [];
    ws.onmessage = (e) => { const w = waiters.shift(); if (w) w(e.data); else inbox.push(e.data); };
    const next = () => new Promise((res) => {
      if (inbox.length) return res(inbox.shift());
      waiters.push(res);
      setTimeout(() => res(undefined), 20000);
    });
    const opened = await new Promise((res) => { ws.onopen = () => res(true); ws.onerror = () => res(false); setTimeout(() => res(false), 20000); });
    if (!opened) return [{ name: 'open', ok: false, why: 'no open' }];
    out.push({ name: 'ws.extensions names permessage-deflate', ok: /permessage-deflate/.test(ws.extensions), why: `"${ws.extensions}"` });
    let bad = null;
    for (const m of msgs) { ws.send(m); if ((await next()) !== m) { bad = m.length; break; } }
    out.push({ name: `${msgs.length} JSON chat messages echo`, ok: bad === null, why: `message of ${bad} bytes differs` });
    const big = 'abcdefghij'.repeat(1 << 17) + '\u2713';
    ws.send(big);
    out.push({ name: '1 MiB text echoes', ok: (await next()) === big, why: 'differs' });
    const bin = new Uint8Array(1 << 20);
    for (let i = 0; i < bin.length; i++) bin[i] = i % 251;
    ws.send(bin);
    const got = await next();
    let same = got instanceof ArrayBuffer && got.byteLength === bin.length;
    if (same) { const a = new Uint8Array(got); for (let i = 0; i < a.length && same; i++) same = a[i] === bin[i]; }
    out.push({ name: '1 MiB binary echoes', ok: same, why: 'differs' });
    ws.send('');
    out.push({ name: 'empty text echoes', ok: (await next()) === '', why: 'differs' });
    ws.close(1000);
    return out;
  }, Array.from({ length: 50 }, (_, i) => chatJson(i))), 120000);
  if (!results) row.fail('browser cases finished', 'timed out after 120 s');
  else for (const r of results) row.check(r.name, r.ok, r.why);
}

// ws's own client (wsc --deflate) against a server with deflate on.
async function deflateWscCases(row, server) {
  const lines = Array.from({ length: 50 }, (_, i) => chatJson(i)).concat([text(65537), text(1 << 20), UTF8]);
  const r = await runProgram(bin('wsc'), ['--deflate', '-v', '--linger', '3000', server.url + 'wsc-deflate'],
    { input: lines.map((l) => l + '\n').join(''), timeout: 90000 });
  row.check('wsc --deflate: permessage-deflate agreed', /connected.*permessage-deflate/.test(r.stderr), `stderr: ${r.stderr}`);
  const got = r.stdout.toString('utf8').split('\n');
  let bad = -1;
  lines.forEach((l, i) => { if (bad < 0 && got[i] !== l) bad = i; });
  row.check(`wsc --deflate: ${lines.length} messages (JSON chat, 64 KiB, 1 MiB, UTF-8) echo`, bad < 0,
    bad >= 0 ? `line ${bad + 1} differs (exit ${r.code}: ${r.stderr})` : '');
  row.check('wsc --deflate: closes with 1000, exit 0', r.code === 0, `exit ${r.code}: ${r.stderr}`);
  const sizes = [1, 200, 65536, 1 << 20];
  const b = await runProgram(bin('wsc'), ['--deflate', '--binary', '--linger', '3000', server.url + 'wsc-deflate-binary'],
    { input: Buffer.concat(sizes.map((n) => Buffer.concat([SAFE(n), Buffer.from('\n')]))), timeout: 60000 });
  const want = Buffer.concat(sizes.map((n) => SAFE(n)));
  row.check('wsc --deflate --binary: binary messages echo', b.stdout.equals(want) && b.code === 0,
    `${b.stdout.length} bytes (want ${want.length}), exit ${b.code}: ${b.stderr}`);
}

async function deflateRows(peers, WebSocket) {
  const need = ['dNode', 'dNodeNoCtx', 'dPython', 'dChromium', 'dWsNode', 'dWsPython', 'dWsLws'].filter(want);
  if (!need.length) return;
  const page = path.join(here, 'page.html');
  const started = [];
  try {
    const srv = await startServer('ws_peer-deflate', bin('interop/ws_peer'), ['-p', '0', '--deflate', '--page', page]);
    started.push(srv.child);
    const srvNc = await startServer('ws_peer-deflate-nc', bin('interop/ws_peer'), ['-p', '0', '--deflate=no-context']);
    started.push(srvNc.child);
    if (want('dNode')) {
      const row = newRow('dNode');
      if (!WebSocket) row.missing('the npm package ws', 'run `npm ci` in tests/interop');
      else await guard(row, () => deflateNodeCases(row, WebSocket, srv, 'node-deflate'));
    }
    if (want('dNodeNoCtx')) {
      const row = newRow('dNodeNoCtx');
      if (!WebSocket) row.missing('the npm package ws', 'run `npm ci` in tests/interop');
      else await guard(row, () => deflateNodeCases(row, WebSocket, srvNc, 'node-deflate-nc'));
    }
    if (want('dPython')) {
      const row = newRow('dPython');
      if (!peers.python) row.missing('python3-websockets', INSTALL_HINT);
      else await guard(row, async () => {
        const r = await runProgram(PY, [path.join(here, 'py_peer.py'), 'deflate-client', srv.url], { timeout: 120000 });
        relayCases(row, r, 'py_peer.py deflate-client');
      });
    }
    if (want('dChromium')) {
      const row = newRow('dChromium');
      if (!peers.chromium) row.missing(peers.chromiumWhy, INSTALL_HINT);
      else await guard(row, () => withBrowser(peers.chromium, (ctx) => deflateChromiumCases(row, ctx, `http://127.0.0.1:${srv.port}/`)));
    }
    const serverDeflateRow = async (key, available, why, startFn) => {
      if (!want(key)) return;
      const row = newRow(key);
      if (!available) { row.missing(why, INSTALL_HINT); return; }
      await guard(row, async () => {
        const s = await startFn();
        row.ok(`${s.name} started: ${s.version}`);
        try { await deflateWscCases(row, s); } finally { await stop(s.child); }
      });
    };
    await serverDeflateRow('dWsNode', peers.nodeWs, 'the npm package ws',
      () => startServer('node_peer-deflate', process.execPath, [path.join(here, 'node_peer.js'), '--deflate']));
    await serverDeflateRow('dWsPython', peers.python, 'python3-websockets',
      () => startServer('py_peer-deflate', PY, [path.join(here, 'py_peer.py'), 'server', '--deflate']));
    await serverDeflateRow('dWsLws', peers.lws, 'libwebsockets-dev (build/interop/lws_peer was not built)',
      () => startServer('lws_peer-deflate', bin('interop/lws_peer'), ['--deflate']));
  } finally {
    for (const c of started) await stop(c);
  }
}


// ------------------------------------------------------------ HTTP proxies

// squid (Debian's) as the HTTP proxy clients tunnel through with CONNECT:
// on a free loopback port, with its files in a temp dir, Basic auth
// (alice / s3cret, checked by squid's basic_ncsa_auth), CONNECT refused
// (403) to port 9. Started as the user running the tests; as root squid
// drops to cache_effective_user, so the dir is opened to it.
const PROXY_USER = 'alice';
const PROXY_PASS = 's3cret';

async function startSquid(peer) {
  const dir = fs.mkdtempSync(path.join(tmp, 'squid-'));
  const port = await freePort();
  const hash = spawnSync('openssl', ['passwd', '-1', PROXY_PASS], { encoding: 'utf8' });
  if (hash.status !== 0) throw new Error(`openssl passwd failed: ${hash.stderr}`);
  fs.writeFileSync(path.join(dir, 'passwd'), `${PROXY_USER}:${hash.stdout.trim()}\n`, { mode: 0o644 });
  const ncsa = ['/usr/lib/squid/basic_ncsa_auth', '/usr/lib64/squid/basic_ncsa_auth'].find((f) => fs.existsSync(f));
  if (!ncsa) throw new Error('squid has no basic_ncsa_auth helper');
  const conf = [
    `http_port 127.0.0.1:${port}`,
    `pid_filename ${dir}/squid.pid`,
    `cache_log ${dir}/cache.log`,
    `access_log stdio:${dir}/access.log`,
    'cache deny all',
    'cache_mem 4 MB',
    `coredump_dir ${dir}`,
    'netdb_filename none',
    'pinger_enable off',
    'icp_port 0',
    'shutdown_lifetime 1 seconds',
    ...(process.getuid && process.getuid() === 0 ? ['cache_effective_user nobody'] : []),
    `auth_param basic program ${ncsa} ${dir}/passwd`,
    'auth_param basic realm ws-interop',
    'acl blocked port 9',
    'acl CONNECT method CONNECT',
    'acl authed proxy_auth REQUIRED',
    'http_access deny CONNECT blocked',
    'http_access allow authed',
    'http_access deny all',
    ''].join('\n');
  fs.writeFileSync(path.join(dir, 'squid.conf'), conf);
  if (process.getuid && process.getuid() === 0) { // squid runs as nobody
    fs.chmodSync(tmp, 0o711); // through the run's dir (not listable)
    fs.chmodSync(dir, 0o777);
  }
  // -N: in the foreground, no daemon: its PID is the one to stop.
  const child = track(spawn(peer.path, ['-N', '-f', path.join(dir, 'squid.conf')],
    { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] }), 'squid');
  let err = '';
  child.stderr.on('data', (d) => { err += d; });
  child.stdout.on('data', (d) => { err += d; });
  for (let i = 0; i < 150; i++) {
    if (child.exitCode !== null) break;
    const ok = await new Promise((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => { s.destroy(); resolve(true); });
      s.on('error', () => resolve(false));
    });
    if (ok) {
      const log = () => { try { return fs.readFileSync(path.join(dir, 'access.log'), 'utf8'); } catch (e) { return ''; } };
      return { child, port, dir, log, url: (user) => `http://${user ? user + '@' : ''}127.0.0.1:${port}` };
    }
    await sleep(100);
  }
  let log = '';
  try { log = fs.readFileSync(path.join(dir, 'cache.log'), 'utf8'); } catch (e) { /* none */ }
  await stop(child);
  throw new Error(`squid did not start: ${err} ${log}`.slice(-600));
}

// squid writes its access log line when a tunnel ends: wait for it.
async function squidLogged(sq, re, ms = 5000) {
  for (let t = 0; t < ms; t += 100) {
    if (sq.log().split('\n').some((l) => re.test(l))) return true;
    await sleep(100);
  }
  return false;
}

const LINES = `proxy hello\n${UTF8}\n${'x'.repeat(65536)}\n`;
const echoed = (r) => r.code === 0 && r.stdout.toString('utf8') === LINES;
const why = (r) => `exit ${r.code}${r.timedOut ? ' (timed out)' : ''}: ${oneLine(r.stderr)}`;

// A TLS echo server (build/echo_server --cert) with certificates from
// tests/tls/certs.sh: { child, port, dir }; cert 'srv' (localhost,
// 127.0.0.1) or 'other' (other.example).
async function startTlsEcho(cert, dir) {
  const child = track(spawn(bin('echo_server'), ['-p', '0', '--cert', path.join(dir, `${cert}.pem`), '--key', path.join(dir, 'srv.key')],
    { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] }), `echo_server-tls-${cert}`);
  const s = new Server(`echo_server-tls-${cert}`, child);
  const m = await s.waitFor(/listening on wss:\/\/127\.0\.0\.1:(\d+)\//, 15000);
  if (!m) { await stop(child); throw new Error(`echo_server --cert did not start: ${s.stderr}`); }
  return { child, port: Number(m[1]) };
}

async function makeCerts() {
  const dir = fs.mkdtempSync(path.join(tmp, 'proxy-tls-'));
  const mk = await runProgram('sh', [path.join(here, '..', 'tls', 'certs.sh'), dir], { timeout: 30000 });
  if (mk.code !== 0) throw new Error(`tests/tls/certs.sh: exit ${mk.code}: ${mk.stderr}`);
  return dir;
}

async function proxyRows(peers, main) {
  const keys = ['pxWs', 'pxWss', 'pxAuth', 'pxNoProxy'].filter(want);
  if (!keys.length) return;
  if (!peers.squid) { for (const k of keys) newRow(k).missing('squid', 'apt-get install squid (.ci/run installs it)'); return; }
  const started = [];
  let sq = null;
  const first = newRow(keys[0]);
  await guard(first, async () => {
    sq = await startSquid(peers.squid);
    started.push(sq.child);
    console.log(`# squid ${peers.squid.version} on 127.0.0.1:${sq.port} (Basic auth), ws_peer on ${main.port}`);
  });
  const good = () => sq.url(`${PROXY_USER}:${PROXY_PASS}`);
  const wsc = (argv, env = null, input = LINES) => runProgram(bin('wsc'), argv, { input, env, timeout: 30000 });
  try {
    for (const k of keys) {
      const row = k === keys[0] ? first : newRow(k);
      if (!sq) { row.fail('squid started', 'see the first proxy row'); continue; }
      if (k === 'pxWs') await guard(row, async () => {
        let r = await wsc(['--proxy', good(), `ws://127.0.0.1:${main.port}/proxy-ws`]);
        row.check('ws:// through squid (--proxy with user:password): lines at 11 B, UTF-8, 64 KiB echoed', echoed(r), why(r));
        row.check('squid tunnelled it: CONNECT 127.0.0.1:port as alice (access log)',
          await squidLogged(sq, new RegExp(`TCP_TUNNEL/200 .*CONNECT 127\\.0\\.0\\.1:${main.port} ${PROXY_USER} `)), sq.log().slice(-300));
        const m = await main.waitFor(/^open id=\d+ path=\/proxy-ws /, 5000);
        row.check('ws_peer saw the upgrade come through the tunnel', !!m, 'no open logged');
        r = await wsc([`ws://localhost:${main.port}/proxy-env`], { http_proxy: good() });
        row.check('ws:// with http_proxy from the environment (no --proxy), a name squid resolves', echoed(r), why(r));
        row.check('squid tunnelled it: CONNECT localhost:port',
          await squidLogged(sq, new RegExp(`TCP_TUNNEL/200 .*CONNECT localhost:${main.port} ${PROXY_USER} `)), sq.log().slice(-300));
        r = await wsc([`ws://127.0.0.1:${main.port}/proxy-all`], { ALL_PROXY: good() });
        row.check('ws:// with ALL_PROXY (upper case)', echoed(r), why(r));
      });
      if (k === 'pxWss') await guard(row, async () => {
        const certs = await makeCerts();
        const srv = await startTlsEcho('srv', certs);
        started.push(srv.child);
        const other = await startTlsEcho('other', certs);
        started.push(other.child);
        const ca = path.join(certs, 'ca.pem');
        let r = await wsc(['--cafile', ca, '--proxy', good(), `wss://localhost:${srv.port}/`]);
        row.check('wss:// through squid: TLS inside the tunnel, certificate checked for localhost, lines echoed', echoed(r), why(r));
        row.check('squid saw only CONNECT localhost:port (access log)',
          await squidLogged(sq, new RegExp(`TCP_TUNNEL/200 .*CONNECT localhost:${srv.port} ${PROXY_USER} `)), sq.log().slice(-300));
        r = await wsc(['--cafile', ca, `wss://localhost:${srv.port}/`], { https_proxy: good(), http_proxy: 'http://127.0.0.1:1' });
        row.check('wss:// with https_proxy from the environment (http_proxy, dead, is not used for wss://)', echoed(r), why(r));
        r = await wsc(['--cafile', ca, '--proxy', good(), `wss://localhost:${other.port}/`]);
        row.check('wss:// through squid to a server whose certificate names other.example: refused (exit 1, verification failed)',
          r.code === 1 && /verif/i.test(r.stderr), why(r));
      });
      if (k === 'pxAuth') await guard(row, async () => {
        const url = `ws://127.0.0.1:${main.port}/proxy-auth`;
        let r = await wsc(['--proxy', sq.url(`${PROXY_USER}:wrong`), url]);
        row.check('wrong password: exit 1, "proxy refused the tunnel: HTTP 407 Proxy Authentication Required"',
          r.code === 1 && r.stderr.includes('proxy refused the tunnel: HTTP 407 Proxy Authentication Required'), why(r));
        r = await wsc(['--proxy', sq.url(null), url]);
        row.check('no credentials: 407', r.code === 1 && r.stderr.includes('HTTP 407'), why(r));
        r = await wsc(['--proxy', sq.url(`${PROXY_USER}:s3%63ret`), url]);
        row.check('percent-encoded password (s3%63ret is s3cret): through', echoed(r), why(r));
        r = await wsc(['--proxy', good(), 'ws://127.0.0.1:9/']);
        row.check('CONNECT to a port squid forbids: exit 1, "HTTP 403 Forbidden"',
          r.code === 1 && r.stderr.includes('proxy refused the tunnel: HTTP 403 Forbidden'), why(r));
        r = await wsc(['-v', '--reconnect', '--backoff', '100', '--proxy', sq.url(`${PROXY_USER}:wrong`), url], null, '');
        row.check('wsc --reconnect: a 407 is final, no retry (gave up, exit 1)',
          r.code === 1 && /gave up \(HTTP proxy did not open the tunnel, HTTP 407\)/.test(r.stderr) && !/attempt \d/.test(r.stderr), why(r));
        row.check('squid denied them (TCP_DENIED/407 and /403 in its access log)',
          await squidLogged(sq, /TCP_DENIED\/407 /) && await squidLogged(sq, /TCP_DENIED\/403 .*CONNECT 127\.0\.0\.1:9 /), sq.log().slice(-300));
      });
      if (k === 'pxNoProxy') await guard(row, async () => {
        // http_proxy names squid with a wrong password: through it, 407.
        const bad = sq.url(`${PROXY_USER}:wrong`);
        const before = sq.log().split('\n').length;
        let r = await wsc([`ws://127.0.0.1:${main.port}/proxy-direct`], { http_proxy: bad, no_proxy: 'localhost,127.0.0.1' });
        row.check('no_proxy=localhost,127.0.0.1: direct, lines echoed', echoed(r), why(r));
        r = await wsc([`ws://localhost:${main.port}/proxy-direct`], { http_proxy: bad, NO_PROXY: '.localhost' });
        row.check('NO_PROXY=.localhost (a domain: matches localhost itself): direct', echoed(r), why(r));
        r = await wsc([`ws://127.0.0.1:${main.port}/proxy-direct`], { http_proxy: bad, no_proxy: '*' });
        row.check('no_proxy=*: direct', echoed(r), why(r));
        await sleep(500);
        const after = sq.log().split('\n').length;
        row.check('squid saw none of them', after === before, sq.log().split('\n').slice(before - 1).join(' | '));
        r = await wsc([`ws://127.0.0.1:${main.port}/proxy-direct`], { http_proxy: bad, no_proxy: '.example.org,127.0.0.2' });
        row.check('no_proxy=.example.org,127.0.0.2 does not match 127.0.0.1: through squid, 407', r.code === 1 && r.stderr.includes('HTTP 407'), why(r));
        r = await wsc(['--proxy', good(), `ws://127.0.0.1:${main.port}/proxy-explicit`], { no_proxy: '*' });
        row.check('an explicit --proxy is not subject to no_proxy', echoed(r), why(r));
      });
    }
  } finally {
    for (const c of started) await stop(c);
  }
}

// nginx in front of ws_peer with docs/nginx.conf's WebSocket lines left
// out (proxy_set_header Upgrade and Connection): the Upgrade header is
// dropped on the way and ws_peer answers a plain GET.
function nginxStrippedSite(listenPort, backendPort) {
  let conf = nginxSite(listenPort, backendPort, null);
  for (const re of [/^\s*proxy_set_header Upgrade \$http_upgrade;\n/m, /^\s*proxy_set_header Connection \$connection_upgrade;\n/m]) {
    if (!re.test(conf)) throw new Error(`docs/nginx.conf has no line matching ${re}: update tests/interop/run.js with it`);
    conf = conf.replace(re, '');
  }
  return conf;
}

async function strippedRow(row, peers, main) {
  const started = [];
  try {
    const ng = await startNginx(peers.nginx, 'stripped', 0, null, (port) => nginxStrippedSite(port, main.port));
    started.push(ng.child);
    row.ok(`nginx without the Upgrade/Connection lines on ${ng.url} -> ws_peer ${main.port}`);
    let r = await runProgram(bin('wsc'), [ng.url], { input: 'x\n', timeout: 30000 });
    row.check('ws:// to / through it: exit 1, "no 101 ... (HTTP 200)" (ws_peer served its page to a plain GET)',
      r.code === 1 && /no 101 Switching Protocols.*\(HTTP 200\)/.test(r.stderr), why(r));
    r = await runProgram(bin('wsc'), [ng.url + 'chat'], { input: 'x\n', timeout: 30000 });
    row.check('ws:// to /chat through it: exit 1, "no 101 ... (HTTP 404)"',
      r.code === 1 && /no 101 Switching Protocols.*\(HTTP 404\)/.test(r.stderr), why(r));
    const log = fs.readFileSync(path.join(ng.dir, 'access.log'), 'utf8');
    row.check('nginx passed them on as plain GETs (200 and 404, no 101, in its access log)',
      /GET \/ HTTP\/1\.1" 200 /.test(log) && /GET \/chat HTTP\/1\.1" 404 /.test(log) && !/ 101 /.test(log), oneLine(log));
    // The way around it: a tunnel. wss:// through a CONNECT proxy (squid):
    // the proxy sees only CONNECT and TLS, so nothing can strip Upgrade.
    if (!peers.squid) { row.fail('wss:// through a CONNECT proxy', 'squid is not installed (apt-get install squid)'); return; }
    const sq = await startSquid(peers.squid);
    started.push(sq.child);
    const certs = await makeCerts();
    const srv = await startTlsEcho('srv', certs);
    started.push(srv.child);
    r = await runProgram(bin('wsc'), ['--cafile', path.join(certs, 'ca.pem'), '--proxy', sq.url(`${PROXY_USER}:${PROXY_PASS}`),
      `wss://localhost:${srv.port}/`], { input: LINES, timeout: 30000 });
    row.check('wss:// through squid (CONNECT, TLS inside): the upgrade gets through, lines echoed', echoed(r), why(r));
  } finally {
    for (const c of started) await stop(c);
  }
}

// ------------------------------------------------------------ main

// The rows, in order: name, peer (with the version key shown in the
// table), direction.
const ROWS = {
  chromium: ['chromium', 'Chromium', 'chromium', 'browser -> ws server'],
  chat: ['chromium-chat-demo', 'Chromium', 'chromium', 'browser -> build/chat'],
  chatTls: ['chromium-chat-demo-tls', 'Chromium', 'chromium', 'browser -> build/chat (https, wss)'],
  node: ['node-ws-client', 'Node ws', 'ws', 'client -> ws server'],
  python: ['python-websockets-client', 'Python websockets', 'websockets', 'client -> ws server'],
  wsNode: ['ws-client/node-ws-server', 'Node ws', 'ws', 'ws client -> server'],
  wsPython: ['ws-client/python-websockets-server', 'Python websockets', 'websockets', 'ws client -> server'],
  wsLws: ['ws-client/libwebsockets-server', 'libwebsockets', 'libwebsockets', 'ws client -> server'],
  ngNode: ['nginx/node-ws-client', 'nginx {v} + Node ws', 'nginx', 'client -> nginx -> ws server'],
  ngChromium: ['nginx/chromium', 'nginx {v} + Chromium', 'nginx', 'browser -> nginx -> ws server'],
  ngWsc: ['nginx/ws-client', 'nginx {v}', 'nginx', 'ws client -> nginx -> ws server'],
  ngIdle: ['nginx/idle-timeout', 'nginx {v} + Node ws', 'nginx', 'quiet tunnel: pings vs proxy_read_timeout'],
  clRedis: ['cluster/redis', 'Redis {v} + Chromium + Node ws', 'redis', 'clients -> 3 chat processes -> Redis'],
  clNats: ['cluster/nats', 'NATS {v} + Chromium + Node ws', 'nats', 'clients -> 3 chat processes -> NATS'],
  ngCluster: ['nginx/chat-cluster', 'nginx {v} + Redis + Node ws', 'nginx', 'clients -> nginx (sticky) -> 3 chat processes'],
  dNode: ['deflate/node-ws-client', 'Node ws', 'ws', 'client -> ws server, permessage-deflate'],
  dNodeNoCtx: ['deflate/node-ws-client-no-context', 'Node ws', 'ws', 'client -> ws server, deflate, no context'],
  dPython: ['deflate/python-websockets-client', 'Python websockets', 'websockets', 'client -> ws server, permessage-deflate'],
  dChromium: ['deflate/chromium', 'Chromium', 'chromium', 'browser -> ws server, permessage-deflate'],
  dWsNode: ['deflate/ws-client/node-ws-server', 'Node ws', 'ws', 'wsc --deflate -> server'],
  dWsPython: ['deflate/ws-client/python-websockets-server', 'Python websockets', 'websockets', 'wsc --deflate -> server'],
  dWsLws: ['deflate/ws-client/libwebsockets-server', 'libwebsockets', 'libwebsockets', 'wsc --deflate -> server'],
  pxWs: ['proxy/squid-ws', 'squid', 'squid', 'wsc -> squid (CONNECT) -> ws server'],
  pxWss: ['proxy/squid-wss', 'squid', 'squid', 'wsc -> squid (CONNECT, TLS inside) -> server'],
  pxAuth: ['proxy/squid-auth', 'squid', 'squid', 'wsc -> squid: Basic auth, 407, 403'],
  pxNoProxy: ['proxy/squid-no-proxy', 'squid', 'squid', 'wsc with http_proxy and no_proxy'],
  ngStrip: ['nginx/upgrade-stripped', 'nginx {v} + squid', 'nginx', 'wsc -> nginx dropping Upgrade -> ws server'],
};
const newRow = (key) => {
  const [name, peer, vkey, direction] = ROWS[key];
  const r = new Row(name, peer, direction);
  r.versionKey = vkey;
  return r;
};
const want = (key) => selected(ROWS[key][0]);

async function guard(row, fn) {
  try { await fn(); } catch (e) { row.fail('row completed', e.stack || e.message); }
}

async function main() {
  for (const b of ['echo_client', 'wsc', 'chat', 'interop/ws_peer', 'interop/ws_client']) {
    if (!fs.existsSync(bin(b))) throw new Error(`${bin(b)} is missing (make interop builds it)`);
  }
  const peers = detectPeers();
  versions.node = process.version.replace(/^v/, '');
  if (peers.nodeWs) versions.ws = peers.nodeWs.version;
  if (peers.python) versions.websockets = peers.python.version;
  if (peers.nginx) versions.nginx = peers.nginx.version;
  if (peers.squid) versions.squid = peers.squid.version;
  if (peers.redis) versions.redis = peers.redis.version;
  if (peers.nats) versions.nats = peers.nats.version;
  if (peers.chromium) versions.playwright = peers.chromium.playwright;
  console.log(`# ws interop matrix; build ${build}; ${CI ? 'CI: a missing peer fails its row' : 'by hand: a missing peer skips its row'}`);

  const page = path.join(here, 'page.html');
  const main = await startServer('ws_peer', bin('interop/ws_peer'), ['-p', '0', '--ping-ms', '250', '--page', page]);
  console.log(`# ws_peer (pings every 250 ms) on ${main.url}`);
  const http = `http://127.0.0.1:${main.port}/`;
  const WebSocket = peers.nodeWs && peers.nodeWs.ws.WebSocket;

  // ws as the server: a browser, Node's ws, Python's websockets.
  if (want('chromium') || want('chat')) {
    const r1 = want('chromium') ? newRow('chromium') : null;
    const r2 = want('chat') ? newRow('chat') : null;
    if (!peers.chromium) { for (const r of [r1, r2]) if (r) r.missing(peers.chromiumWhy, INSTALL_HINT); }
    else {
      await guard(r1 || r2, () => withBrowser(peers.chromium, async (ctx) => {
        if (r1) await guard(r1, () => chromiumCases(r1, ctx, http, main, 'chromium'));
        if (r2) { r2.t0 = Date.now(); await guard(r2, () => chatDemo(r2, ctx)); }
      }));
    }
  }
  if (want('chatTls')) {
    const row = newRow('chatTls');
    if (!peers.chromium) row.missing(peers.chromiumWhy, INSTALL_HINT);
    else await guard(row, () => chatTlsRow(row, peers.chromium));
  }
  if (want('node')) {
    const row = newRow('node');
    if (!WebSocket) row.missing('the npm package ws', 'run `npm ci` in tests/interop');
    else await guard(row, () => nodeClientCases(row, WebSocket, main.url, main, 'node'));
  }
  if (want('python')) {
    const row = newRow('python');
    if (!peers.python) row.missing('python3-websockets', INSTALL_HINT);
    else await guard(row, () => pythonClientCases(row, main.url, main, 'python'));
  }

  // ws as the client: echo_client, wsc and ws_client against each server.
  const serverRow = async (key, available, why, startFn, opts) => {
    if (!want(key)) return;
    const row = newRow(key);
    if (!available) { row.missing(why, why.startsWith('the npm') ? 'run `npm ci` in tests/interop' : INSTALL_HINT); return; }
    await guard(row, async () => {
      const s = await startFn();
      row.ok(`${s.name} started: ${s.version}`);
      try { await wsClientCases(row, s, opts); } finally { await stop(s.child); }
    });
  };
  await serverRow('wsNode', peers.nodeWs, 'the npm package ws',
    () => startServer('node_peer', process.execPath, [path.join(here, 'node_peer.js')]), {});
  await serverRow('wsPython', peers.python, 'python3-websockets',
    () => startServer('py_peer', PY, [path.join(here, 'py_peer.py'), 'server']), {});
  await serverRow('wsLws', peers.lws, 'libwebsockets-dev (build/interop/lws_peer was not built)',
    async () => {
      const s = await startServer('lws_peer', bin('interop/lws_peer'), []);
      versions.libwebsockets = s.version.replace(/^libwebsockets /, '').replace(/-$/, '');
      return s;
    }, { noPingLog: true });

  // Through nginx: the recommended docs/nginx.conf in front of ws_peer.
  const ng = ['ngNode', 'ngChromium', 'ngWsc', 'ngIdle'].filter(want);
  if (ng.length && !peers.nginx) {
    for (const k of ng) newRow(k).missing('nginx', INSTALL_HINT);
  } else if (ng.length) {
    const started = [];
    const proxy = async (name, backend, timeout) => {
      const n = await startNginx(peers.nginx, name, backend.port, timeout);
      started.push(n.child);
      return n;
    };
    try {
      let front = null;
      const needFront = ng.filter((k) => k !== 'ngIdle');
      if (needFront.length) {
        const first = newRow(needFront[0]);
        await guard(first, async () => {
          front = await proxy('front', main, null);
          console.log(`# nginx ${peers.nginx.version} (docs/nginx.conf as it is) on ${front.url} -> ws_peer ${main.port}`);
        });
        for (const k of needFront) {
          const row = k === needFront[0] ? first : newRow(k);
          if (!front) { row.fail('nginx started', 'see the first nginx row'); continue; }
          if (k === 'ngNode') {
            if (!WebSocket) row.missing('the npm package ws', 'run `npm ci` in tests/interop');
            else await guard(row, () => nodeClientCases(row, WebSocket, front.url, main, 'nginx-node'));
          } else if (k === 'ngChromium') {
            if (!peers.chromium) row.missing(peers.chromiumWhy, INSTALL_HINT);
            else await guard(row, () => withBrowser(peers.chromium, (ctx) => chromiumCases(row, ctx, front.http, main, 'chromium')));
          } else if (k === 'ngWsc') {
            // The cases check ws_peer's log, reached through nginx.
            const via = Object.assign(Object.create(main), { url: front.url });
            await guard(row, () => wsClientCases(row, via, { noDrive: true }));
          }
          if (row.passed && !row.skipped) {
            const tag = { ngNode: '/nginx-node/', ngChromium: '/chromium/', ngWsc: '/wsc-text' }[k];
            const log = fs.readFileSync(path.join(front.dir, 'access.log'), 'utf8');
            row.check('nginx proxied the upgrades (101 in its access log)',
              log.split('\n').some((l) => l.includes(`GET ${tag}`) && / 101 /.test(l)), 'no such line in the access log');
          }
        }
      }
      if (ng.includes('ngIdle')) {
        const row = newRow('ngIdle');
        if (!WebSocket) row.missing('the npm package ws', 'run `npm ci` in tests/interop');
        else {
          await guard(row, async () => {
            // proxy_read_timeout 3s; one backend pings every second, one never.
            const pinging = await startServer('ws_peer-ping1s', bin('interop/ws_peer'), ['-p', '0', '--ping-ms', '1000']);
            started.push(pinging.child);
            const quiet = await startServer('ws_peer-noping', bin('interop/ws_peer'), ['-p', '0', '--ping-ms', '0']);
            started.push(quiet.child);
            const viaPings = await proxy('ping1s', pinging, '3s');
            const viaQuiet = await proxy('noping', quiet, '3s');
            await idleCases(row, WebSocket, viaPings, pinging, viaQuiet, quiet);
          });
        }
      }
    } finally {
      for (const c of started) await stop(c);
    }
  }

  // A chat cluster: three processes through a real broker.
  const BROKER_HINT = 'apt-get install redis-server nats-server (.ci/run installs them)';
  for (const [key, kind] of [['clRedis', 'redis'], ['clNats', 'nats']]) {
    if (!want(key)) continue;
    const row = newRow(key);
    if (!peers[kind]) row.missing(`${kind}-server`, BROKER_HINT);
    else if (!WebSocket) row.missing('the npm package ws', 'run `npm ci` in tests/interop');
    else if (!peers.chromium) row.missing(peers.chromiumWhy, INSTALL_HINT);
    else await guard(row, () => clusterRow(row, kind, peers));
  }
  if (want('ngCluster')) {
    const row = newRow('ngCluster');
    if (!peers.nginx) row.missing('nginx', INSTALL_HINT);
    else if (!peers.redis) row.missing('redis-server', BROKER_HINT);
    else if (!WebSocket) row.missing('the npm package ws', 'run `npm ci` in tests/interop');
    else await guard(row, () => nginxClusterRow(row, peers));
  }
  // permessage-deflate: ws_peer --deflate against the peers, and
  // wsc --deflate against theirs.
  await deflateRows(peers, WebSocket);

  // HTTP proxies: wsc through squid with CONNECT; nginx dropping Upgrade.
  await proxyRows(peers, main);
  if (want('ngStrip')) {
    const row = newRow('ngStrip');
    if (!peers.nginx) row.missing('nginx', INSTALL_HINT);
    else await guard(row, () => strippedRow(row, peers, main));
  }

  // ws_peer must still be alive, and exit 0 on SIGTERM.
  if (!main.alive()) setupRow().fail('ws_peer survived the run', `it exited: ${main.stderr}`);
  else {
    await stop(main.child, 5000);
    if (main.child.exitCode !== 0) setupRow().fail('ws_peer exits 0 on SIGTERM', `exit ${main.child.exitCode} ${main.child.signalCode || ''}`);
  }
}

function summary() {
  const w = [35, 34, 41, 6, 6, 6];
  const pad = (s, n) => String(s).padEnd(n);
  const line = (cells) => console.log(cells.map((c, i) => pad(c, w[i])).join(' ').trimEnd());
  console.log('');
  line(['row', 'peer', 'direction', 'passed', 'failed', 'time']);
  line(w.map((n) => '-'.repeat(n)));
  let p = 0, f = 0;
  for (const r of rows) {
    const v = r.versionKey && versions[r.versionKey];
    const peer = r.peer.includes('{v}') ? r.peer.replace('{v}', v || '') : v ? `${r.peer} ${v}` : r.peer;
    line([r.name, peer, r.direction, r.passed, r.skipped ? `skipped (${r.skipped})` : r.failed,
      r.skipped ? '' : `${Math.round((r.t1 - r.t0) / 1000)} s`]);
    p += r.passed; f += r.failed;
  }
  const v = Object.entries(versions).map(([k, x]) => `${k} ${x}`).join(', ');
  console.log(`\n# versions: ${v}`);
  console.log(`# ${((Date.now() - begin) / 1000).toFixed(1)} s`);
  const k = rows.filter((r) => r.skipped).length;
  console.log(`interop: ${p} passed, ${f} failed${k ? `, ${k} skipped` : ''}`);
  return f;
}

const overall = setTimeout(() => {
  setupRow().fail('the run finished in time', `it exceeded INTEROP_TIMEOUT (${LIMIT / 1000} s)`);
  summary();
  stopAll().then(() => process.exit(1));
}, LIMIT);

main().then(async () => {
  clearTimeout(overall);
  await stopAll();
  process.exit(summary() ? 1 : 0);
}, async (e) => {
  clearTimeout(overall);
  setupRow().fail('the run completed', e.stack || e.message);
  await stopAll();
  summary();
  process.exit(1);
});
