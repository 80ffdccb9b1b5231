'use strict';
// node_peer.js - Node's `ws` as the server of the interoperability matrix
// (tests/interop): the peer protocol of docs/interop.md on
// ws.WebSocketServer, so build/echo_client and build/wsc can be tested
// against it.
//
//   node tests/interop/node_peer.js [--port PORT] [--deflate]
//
// --deflate accepts permessage-deflate (threshold 0: every message is
// compressed); without it the server declines it.
//
// Prints "node_peer listening on ws://127.0.0.1:PORT/ (ws VERSION)" first,
// then one line per event (open, ping, close, drive). The path /drive makes
// it drive the client: see common.js driveCases().

const { WebSocketServer } = require('ws');
const common = require('./common');

const args = process.argv.slice(2);
let port = 0;
let deflate = false;
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--port') port = Number(args[++i]);
  else if (args[i] === '--deflate') deflate = true;
  else { console.error('usage: node_peer.js [--port PORT] [--deflate]'); process.exit(2); }
}

const log = (line) => process.stdout.write(line + '\n');
let nextId = 0;

const wss = new WebSocketServer({
  host: '127.0.0.1',
  port,
  maxPayload: 64 << 20,
  perMessageDeflate: deflate ? { threshold: 0 } : false,
  handleProtocols: (offered) => {
    for (const p of offered) if (common.PROTOCOLS.includes(p)) return p;
    return false;
  },
});

wss.on('listening', () => {
  log(`node_peer listening on ws://127.0.0.1:${wss.address().port}/ (ws ${common.wsVersion()})`);
});

wss.on('connection', (ws, req) => {
  const id = ++nextId;
  const path = req.url;
  let pings = 0, pongs = 0;
  const pongWaiters = [];
  log(`open id=${id} path=${path} proto=${ws.protocol}`);
  ws.on('ping', (data) => { pings++; log(`ping id=${id} len=${data.length}`); });
  ws.on('pong', (data) => {
    pongs++;
    for (const w of pongWaiters.splice(0)) w(data);
  });
  ws.on('close', (code, reason) => {
    log(`close id=${id} path=${path} code=${code} reason=${reason.toString()}`);
  });
  ws.on('error', (err) => log(`error id=${id} ${err.message}`));

  const peer = {
    sendText: (s) => new Promise((res, rej) => ws.send(s, { binary: false }, (e) => (e ? rej(e) : res()))),
    sendBinary: (b) => new Promise((res, rej) => ws.send(b, { binary: true }, (e) => (e ? rej(e) : res()))),
    // pieces: Buffers; the first carries the opcode, the rest are continuations.
    sendFragments: async (pieces, binary, pingBetween) => {
      for (let i = 0; i < pieces.length; i++) {
        ws.send(pieces[i], { binary, fin: i === pieces.length - 1 });
        if (i === 0 && pingBetween && pieces.length > 1) ws.ping(Buffer.from('between'));
      }
    },
    ping: (payload) => new Promise((res) => {
      pongWaiters.push(res);
      ws.ping(payload);
    }),
    close: (code, reason) => ws.close(code, reason),
    log,
  };

  if (path === '/drive') {
    // The server leads: every case is a message the client must echo.
    const inbox = [];
    let want = null;
    ws.on('message', (data, isBinary) => {
      const m = { data: Buffer.from(data), binary: isBinary };
      if (want) { const w = want; want = null; w(m); } else inbox.push(m);
    });
    const next = (ms) => new Promise((res) => {
      if (inbox.length) return res(inbox.shift());
      const t = setTimeout(() => { want = null; res(null); }, ms);
      want = (m) => { clearTimeout(t); res(m); };
    });
    common.drive(peer, next, { byteFragments: true, pingBetween: true });
    return;
  }

  ws.on('message', (data, isBinary) => {
    data = Buffer.from(data);
    if (isBinary || data.length === 0 || data[0] !== 0x21 /* ! */) {
      ws.send(data, { binary: isBinary });
      return;
    }
    const s = data.toString('utf8');
    const m = /^(!\w+)(?: ([\s\S]*))?$/.exec(s);
    const cmd = m[1], arg = m[2] || '';
    if (cmd === '!close') {
      const sp = arg.indexOf(' ');
      const code = Number(sp < 0 ? arg : arg.slice(0, sp));
      ws.close(code, sp < 0 ? '' : arg.slice(sp + 1));
    } else if (cmd === '!ping') {
      const payload = Buffer.from(arg);
      peer.ping(payload).then((got) => {
        if (got.equals(payload)) ws.send('pong:' + arg);
      });
    } else if (cmd === '!frag') {
      const sp = arg.indexOf(' ');
      const n = Number(arg.slice(0, sp));
      peer.sendFragments(common.split(Buffer.from(arg.slice(sp + 1)), n), false, false);
    } else if (cmd === '!fragb') {
      const [n, size] = arg.split(' ').map(Number);
      peer.sendFragments(common.split(common.binary(size), n), true, true);
    } else if (cmd === '!stats') {
      ws.send(`stats pings=${pings} pongs=${pongs}`);
    } else if (cmd === '!proto') {
      ws.send('proto:' + ws.protocol);
    } else {
      ws.send(data, { binary: false });
    }
  });
});

const stop = () => {
  for (const c of wss.clients) c.close(1001);
  wss.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 2000).unref();
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
