// node_server.js - the Node `ws` peer of the ws benchmarks.
//
//   node tests/bench/node_server.js PORT [echo|broadcast] [--deflate]
//
// echo: every text or binary message goes back to its sender unchanged.
// broadcast: every message goes to every open connection (the sender too),
// the way the `ws` README does it: iterate wss.clients and send.
// Listens on 127.0.0.1 only; permessage-deflate off (as in ws's peers),
// or with --deflate on with ws's default zlib settings and threshold 64 (as
// ws's own default threshold), for the compressed echo of
// tests/bench/deflate_run.sh.
'use strict';
const path = require('path');
const { WebSocketServer } = require(path.join(__dirname, 'node_modules', 'ws'));

const port = Number(process.argv[2] || 9003);
const broadcast = process.argv[3] === 'broadcast';
const deflate = process.argv.includes('--deflate');
const wss = new WebSocketServer({
  host: '127.0.0.1',
  port,
  perMessageDeflate: deflate ? { threshold: 64 } : false,
  maxPayload: 16 * 1024 * 1024,
});

wss.on('connection', (sock) => {
  sock.on('error', () => {});
  if (broadcast) {
    sock.on('message', (data, isBinary) => {
      for (const c of wss.clients) if (c.readyState === 1) c.send(data, { binary: isBinary });
    });
  } else {
    sock.on('message', (data, isBinary) => sock.send(data, { binary: isBinary }));
  }
});
wss.on('listening', () => {
  console.log(`node_server (ws ${require(path.join(__dirname, 'node_modules', 'ws', 'package.json')).version}) listening on ws://127.0.0.1:${wss.address().port}/`);
});
const stop = () => { for (const c of wss.clients) c.terminate(); wss.close(() => process.exit(0)); setTimeout(() => process.exit(0), 1000).unref(); };
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
