#!/bin/sh
# TLS against real peers, on loopback: sh tests/tls/interop.sh BUILD CERTDIR
# CERTDIR holds ca.pem, srv.pem, srv.key (tests/test_tls.c makes them).
#  - openssl s_client: the raw TLS layer of build/echo_server --cert/--key
#    (verified against the CA, SNI localhost) answers an upgrade with 101
#  - build/wsc --cafile against build/echo_server (wss:// end to end)
#  - Node ws as a wss client (with the test CA) of build/echo_server
#  - Node ws over an https server, with build/wsc --cafile as the client
#  - openssl s_server: build/wsc gets through its TLS layer and is refused
#    cleanly (s_server speaks HTTP/1.0 200, not 101)
#  - Python websockets (Debian python3-websockets, /usr/bin/python3) with an
#    ssl context trusting the test CA: as a client of build/echo_server
#    (tests/tls/py_tls.py client), and as a wss:// server that
#    build/echo_client and build/wsc --cafile talk to (py_tls.py server)
# Prints "ok - ..." / "not ok - ..."; the exit status counts failures.
# A missing peer (Node ws, Python websockets) fails its steps when CI is set
# (CI=true), and is skipped with a message otherwise.
# Everything started here is killed on exit; every step is time-bounded.
build=${1:-build}
dir=$2
fails=0
pids=""
cleanup() { for p in $pids; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; }
trap cleanup EXIT INT TERM
ok() { echo "ok - $1"; }
bad() { echo "not ok - $1"; fails=$((fails + 1)); }
missing() { # what, how to install it
  if [ -n "${CI:-}" ] && [ "${CI:-}" != false ]; then bad "$1 is not installed (CI must have it: $2)"
  else echo "# skipped: $1 steps ($1 is not installed: $2)"; fi
}
T="timeout 10"

# waits for "... :PORT/" on the first line of a file; prints PORT
port_of() {
  i=0
  while [ $i -lt 50 ]; do
    p=$(sed -n '1s/.*:\([0-9][0-9]*\)\/*.*/\1/p' "$1" 2>/dev/null)
    [ -n "$p" ] && { echo "$p"; return 0; }
    sleep 0.1; i=$((i + 1))
  done
  return 1
}

out=$(mktemp -d)
"$build/echo_server" -p 0 --cert "$dir/srv.pem" --key "$dir/srv.key" >"$out/srv" 2>&1 &
pids="$pids $!"
port=$(port_of "$out/srv") || { bad "echo_server --cert/--key did not start: $(cat "$out/srv")"; exit 1; }
grep -q '^echo_server listening on wss://' "$out/srv" && ok "echo_server serves wss:// on $port" || bad "echo_server start line"

# 1. openssl s_client, verifying the chain and the host name
(printf 'GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n'; sleep 1) |
  $T openssl s_client -connect 127.0.0.1:"$port" -servername localhost -verify_hostname localhost \
    -CAfile "$dir/ca.pem" -verify_return_error -quiet -no_ign_eof >"$out/sc" 2>"$out/sc.err"
if grep -q '101 Switching Protocols' "$out/sc" && grep -q 's3pPLMBiTxaQ9kYGzzhZRbK+xOo=' "$out/sc"; then
  ok "openssl s_client: verified TLS, 101 with the RFC's accept key"
else
  bad "openssl s_client: $(head -c 300 "$out/sc.err")"
fi

# 1b. the key exchange uses a fast curve (X25519 or P-256), not the largest
#     one mbedTLS 2.x would otherwise prefer
$T openssl s_client -connect 127.0.0.1:"$port" -servername localhost </dev/null >"$out/kx" 2>&1
kx=$(grep -i 'temp key' "$out/kx" | head -1)
case $kx in
  *X25519*|*P-256*|*prime256v1*) ok "key exchange: $kx" ;;
  *) bad "key exchange not X25519/P-256: '$kx'" ;;
esac

# 2. our own client, end to end
r=$(printf 'hello over tls\n' | $T "$build/wsc" --cafile "$dir/ca.pem" --linger 300 "wss://localhost:$port/" 2>"$out/wsc.err")
[ "$r" = "hello over tls" ] && ok "wsc --cafile wss://localhost echoes" || bad "wsc: got '$r' $(cat "$out/wsc.err")"
r=$(printf 'x\n' | $T "$build/wsc" "wss://localhost:$port/" 2>&1)
case $r in *"verification failed"*) ok "wsc without the CA refuses: $r" ;; *) bad "wsc without the CA: $r" ;; esac

# 3. Node ws as a client, 4. Node ws over https with wsc as the client
nm=tests/interop/node_modules
if command -v node >/dev/null 2>&1 && [ -d "$nm/ws" ]; then
  cat >"$out/cli.js" <<'JS'
const fs = require('fs'), WebSocket = require('ws');
const [port, ca] = process.argv.slice(2);
const ws = new WebSocket('wss://localhost:' + port + '/', { ca: fs.readFileSync(ca) });
const big = Buffer.alloc(200000, 7);
let step = 0;
ws.on('open', () => ws.send('hello node'));
ws.on('message', (d, bin) => {
  if (step === 0 && !bin && d.toString() === 'hello node') { step = 1; ws.send(big); }
  else if (step === 1 && bin && Buffer.compare(d, big) === 0) { step = 2; ws.close(1000, 'bye'); }
  else { console.log('unexpected message'); process.exit(1); }
});
ws.on('close', (code) => { console.log('close ' + code + ' step ' + step); process.exit(code === 1000 && step === 2 ? 0 : 1); });
ws.on('error', (e) => { console.log('error ' + e.message); process.exit(1); });
setTimeout(() => { console.log('timeout'); process.exit(1); }, 8000);
JS
  r=$(NODE_PATH=$nm $T node "$out/cli.js" "$port" "$dir/ca.pem" 2>&1) && ok "node ws client (wss, test CA): $r" || bad "node ws client: $r"

  cat >"$out/srv.js" <<'JS'
const fs = require('fs'), https = require('https'), { WebSocketServer } = require('ws');
const [cert, key] = process.argv.slice(2);
const server = https.createServer({ cert: fs.readFileSync(cert), key: fs.readFileSync(key) });
const wss = new WebSocketServer({ server });
wss.on('connection', (ws) => ws.on('message', (d, bin) => ws.send(d, { binary: bin })));
server.listen(0, '127.0.0.1', () => console.log('node https listening on wss://127.0.0.1:' + server.address().port + '/'));
setTimeout(() => process.exit(0), 15000);
JS
  NODE_PATH=$nm node "$out/srv.js" "$dir/srv.pem" "$dir/srv.key" >"$out/nsrv" 2>&1 &
  pids="$pids $!"
  if nport=$(port_of "$out/nsrv"); then
    r=$(printf 'to node\n' | $T "$build/wsc" --cafile "$dir/ca.pem" --linger 300 "wss://127.0.0.1:$nport/" 2>"$out/wsc2.err")
    [ "$r" = "to node" ] && ok "wsc --cafile against Node ws over https" || bad "wsc vs node https: '$r' $(cat "$out/wsc2.err")"
  else
    bad "node https server did not start: $(cat "$out/nsrv")"
  fi
else
  missing "Node ws" "node, and sh tests/interop/install.sh for $nm/ws"
fi

# 5. openssl s_server: a TLS peer that is not a WebSocket server
openssl s_server -accept 0 -cert "$dir/srv.pem" -key "$dir/srv.key" -www >"$out/ss" 2>&1 &
pids="$pids $!"
i=0; sport=""
while [ $i -lt 50 ] && [ -z "$sport" ]; do
  sport=$(sed -n 's/^ACCEPT .*:\([0-9][0-9]*\)$/\1/p' "$out/ss" 2>/dev/null); sleep 0.1; i=$((i + 1))
done
if [ -n "$sport" ]; then
  r=$(printf 'x\n' | $T "$build/wsc" --cafile "$dir/ca.pem" "wss://localhost:$sport/" 2>&1); rc=$?
  if [ $rc -eq 1 ] && ! echo "$r" | grep -q 'verification failed'; then
    ok "openssl s_server: TLS verified, HTTP 200 refused cleanly ($r)"
  else
    bad "openssl s_server: rc $rc: $r"
  fi
else
  echo "# skipped: openssl s_server -accept 0 did not report its port"
fi

# 6. Python websockets over TLS, both ways (Debian's python3, where
# python3-websockets lives: not whatever python3 comes first in PATH)
PY=/usr/bin/python3
if [ -x $PY ] && $PY -c 'import websockets' 2>/dev/null; then
  here=$(dirname "$0")
  r=$($T $PY "$here/py_tls.py" client "$port" "$dir/ca.pem" 2>&1); rc=$?
  echo "$r" | grep '^not ok' | sed 's/^not ok - /#   /'
  n=$(echo "$r" | grep -c '^ok - ')
  if [ $rc -eq 0 ] && [ "$n" -ge 28 ] && ! echo "$r" | grep -q '^not ok'; then
    ok "python websockets client (wss, test CA) against echo_server: $n checks"
  else
    bad "python websockets client: exit $rc, $n checks passed: $(echo "$r" | grep -v '^ok' | tail -n 3 | tr '\n' ' ' | head -c 400)"
  fi

  $PY "$here/py_tls.py" server "$dir/srv.pem" "$dir/srv.key" >"$out/py" 2>&1 &
  pids="$pids $!"
  if pport=$(port_of "$out/py"); then
    r=$($T "$build/echo_client" --cafile "$dir/ca.pem" --timeout 8 "wss://localhost:$pport/drive" 2>&1); rc=$?
    i=0
    while [ $i -lt 50 ] && ! grep -q '^close path=/drive ' "$out/py"; do sleep 0.1; i=$((i + 1)); done
    n=$(grep -c '^ok - python server drive' "$out/py")
    if [ $rc -eq 0 ] && [ "$n" -ge 20 ] && grep -q '^drive done fail=0$' "$out/py" &&
       grep -q '^close path=/drive code=1000$' "$out/py" && ! grep -q '^not ok' "$out/py"; then
      ok "echo_client --cafile against a python websockets wss server: $n messages echoed, close 1000"
    else
      bad "echo_client vs python server: exit $rc $r; $(grep -E '^(not ok|drive|close)' "$out/py" | tr '\n' ' ' | head -c 400)"
    fi
    long=$(awk 'BEGIN { s = "0123456789"; while (length(s) < 70000) s = s s; print substr(s, 1, 70000) }')
    r=$(printf 'to python \303\251\n%s\n' "$long" | $T "$build/wsc" --cafile "$dir/ca.pem" --linger 300 "wss://127.0.0.1:$pport/wsc" 2>"$out/wsc3.err")
    if [ "$r" = "$(printf 'to python \303\251\n%s' "$long")" ]; then
      ok "wsc --cafile against a python websockets wss server (by IP; a 70000-byte line)"
    else
      bad "wsc vs python server: got $(echo "$r" | wc -c) bytes: $(head -c 200 "$out/wsc3.err")"
    fi
    r=$(printf 'x\n' | $T "$build/wsc" "wss://localhost:$pport/none" 2>&1)
    case $r in *"verification failed"*) ok "wsc without the CA refuses the python server" ;; *) bad "wsc without the CA vs python: $r" ;; esac
  else
    bad "python websockets wss server did not start: $(cat "$out/py")"
  fi
else
  missing "Python websockets" "apt-get install python3-websockets, or sh tests/interop/install.sh"
fi
echo "# headless Chromium against the TLS chat demo: make interop (row chromium-chat-demo-tls)"
rm -rf "$out"
exit $fails
