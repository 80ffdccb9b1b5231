#!/bin/sh
# tests/examples.sh BUILD_DIR: the command-line examples as a user runs
# them: build/wsc in shell pipes against build/echo_server, and
# build/existing_server handing upgrades to ws. Servers run on loopback
# ports they pick themselves and are stopped by PID at the end.
build=${1:-build}
pass=0
fail=0
pids=""
tmp=$(mktemp -d)
cleanup() {
  for p in $pids; do kill "$p" 2>/dev/null; done
  rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

ok() { pass=$((pass + 1)); echo "ok - $1"; }
bad() { fail=$((fail + 1)); echo "not ok - $1"; }
check() { # name, condition command...
  name=$1; shift
  if "$@"; then ok "$name"; else bad "$name"; fi
}

# Starts a server that prints its URL with the port on its first line,
# and records its PID for the cleanup (so not inside $(...): a subshell's
# variables are lost). port_of then reads the port.
start() { # outfile, command...
  out=$1; shift
  "$@" >"$out" 2>&1 8>&- & # not holding a test's fifo (fd 8) open
  pids="$pids $!"
  i=0
  while [ $i -lt 50 ] && ! grep -q '127.0.0.1:[0-9]' "$out" 2>/dev/null; do
    sleep 0.1; i=$((i + 1))
  done
}
port_of() { sed -n 's/.*127\.0\.0\.1:\([0-9][0-9]*\).*/\1/p' "$1" | head -n 1; }

start "$tmp/echo.out" "$build/echo_server" -p 0
eport=$(port_of "$tmp/echo.out")
[ -n "$eport" ] || { bad "echo_server started"; echo "examples: $pass passed, $fail failed"; exit 1; }

# wsc: lines in, echoes out, clean exit.
printf 'hello\nw\303\266rld\n\nlast line without newline' |
  timeout 20 "$build/wsc" "ws://127.0.0.1:$eport/" >"$tmp/out1"
rc=$?
check "wsc pipe exits 0 after a clean close" [ "$rc" -eq 0 ]
printf 'hello\nw\303\266rld\n\nlast line without newline\n' >"$tmp/want1"
check "wsc pipe output is every line echoed, in order" cmp -s "$tmp/out1" "$tmp/want1"

# --binary: bytes come back as bytes, no newline added.
printf 'bin\n' | timeout 20 "$build/wsc" --binary "ws://127.0.0.1:$eport/" >"$tmp/out2"
check "wsc --binary round trip" [ "$(od -An -c "$tmp/out2" | tr -d ' ')" = "bin" ]

# Many lines through one connection.
seq 1 2000 | timeout 30 "$build/wsc" "ws://127.0.0.1:$eport/" >"$tmp/out3"
check "wsc 2000 lines in order" sh -c "seq 1 2000 | cmp -s - '$tmp/out3'"

# Failure exit codes.
timeout 20 "$build/wsc" "ws://127.0.0.1:1/" </dev/null >/dev/null 2>"$tmp/err"
check "wsc exit 1 when nothing listens" [ $? -eq 1 ]
timeout 20 "$build/wsc" "http://127.0.0.1:$eport/" </dev/null >/dev/null 2>&1
check "wsc exit 2 for a non-ws URL" [ $? -eq 2 ]

# --ping with -v reports pongs.
(sleep 2.5; echo done) | timeout 20 "$build/wsc" -v --ping 1 "ws://127.0.0.1:$eport/" >/dev/null 2>"$tmp/err2"
check "wsc --ping sees pongs" grep -q "pong" "$tmp/err2"

# --deflate both ends (builds with zlib): agreed, and every line echoed.
if "$build/wsc" --deflate not-a-url 2>&1 | grep -q "no zlib"; then
  echo "# no zlib in this build: the --deflate cases are skipped"
else
  start "$tmp/dz.out" "$build/echo_server" -p 0 --deflate
  dport=$(port_of "$tmp/dz.out")
  seq 1 500 | sed 's/.*/{"n":&,"text":"hello hello hello"}/' >"$tmp/want5"
  timeout 30 "$build/wsc" --deflate -v "ws://127.0.0.1:$dport/" <"$tmp/want5" >"$tmp/out5" 2>"$tmp/err5"
  check "wsc --deflate to echo_server --deflate: agreed" grep -q "permessage-deflate" "$tmp/err5"
  check "wsc --deflate: 500 JSON lines echoed in order" cmp -s "$tmp/out5" "$tmp/want5"
fi

# Proxies from the environment, as curl reads them: http_proxy names a
# port where nothing listens, so a connection that honours it fails;
# --proxy "" and no_proxy send it direct.
printf 'direct\n' | http_proxy=http://127.0.0.1:1 timeout 20 "$build/wsc" "ws://127.0.0.1:$eport/" >/dev/null 2>"$tmp/err6"
check "wsc honours http_proxy (a dead proxy: exit 1)" [ $? -eq 1 ]
printf 'direct\n' | http_proxy=http://127.0.0.1:1 timeout 20 "$build/wsc" --proxy "" "ws://127.0.0.1:$eport/" >"$tmp/out6"
check "wsc --proxy \"\" ignores http_proxy" [ "$(cat "$tmp/out6")" = "direct" ]
printf 'direct\n' | http_proxy=http://127.0.0.1:1 no_proxy=localhost,127.0.0.1 timeout 20 "$build/wsc" "ws://127.0.0.1:$eport/" >"$tmp/out7"
check "wsc: no_proxy exempts 127.0.0.1" [ "$(cat "$tmp/out7")" = "direct" ]
printf 'x\n' | timeout 20 "$build/wsc" --proxy socks5://127.0.0.1:1 "ws://127.0.0.1:$eport/" >/dev/null 2>&1
check "wsc --proxy with a scheme other than http:// is a usage error (exit 2)" [ $? -eq 2 ]

# --reconnect: a port that is free now (a server's, stopped).
start "$tmp/r0.out" "$build/echo_server" -p 0
rport=$(port_of "$tmp/r0.out")
kill "$(echo $pids | awk '{print $NF}')" 2>/dev/null
wait_for() { # file, pattern[, lines to skip]: up to 15 s
  i=0
  while [ $i -lt 150 ] && ! tail -n +"$((${3:-0} + 1))" "$1" 2>/dev/null | grep -q "$2"; do
    sleep 0.1; i=$((i + 1))
  done
  tail -n +"$((${3:-0} + 1))" "$1" 2>/dev/null | grep -q "$2"
}
# Nothing listens: attempts with their delays (-v), under the first bound
# (--backoff 300); the server comes; the lines go through; exit 0.
mkfifo "$tmp/in8"
timeout 60 "$build/wsc" -v --reconnect --backoff 300 "ws://127.0.0.1:$rport/" <"$tmp/in8" >"$tmp/out8" 2>"$tmp/err8" &
wscpid=$!
pids="$pids $wscpid"
exec 8>"$tmp/in8"
check "wsc --reconnect -v logs attempts while nothing listens" wait_for "$tmp/err8" "attempt 2 in"
check "wsc --reconnect: the first delay is under --backoff (300 ms)" \
  sh -c "sed -n 's/.*attempt 1 in \([0-9]*\) ms.*/\1/p' '$tmp/err8' | awk '{exit !(\$1 < 300)}'"
start "$tmp/r1.out" "$build/echo_server" -p "$rport"
check "wsc --reconnect connects once the server is up" wait_for "$tmp/err8" "wsc: connected"
echo "first" >&8
check "wsc --reconnect: a line echoed" wait_for "$tmp/out8" "first"
# The server goes and comes back: reconnected, and lines flow again.
seen=$(wc -l <"$tmp/err8")
kill "$(echo $pids | awk '{print $NF}')" 2>/dev/null
check "wsc --reconnect retries after the server went" wait_for "$tmp/err8" "attempt [0-9]* in [0-9]* ms" "$seen"
start "$tmp/r2.out" "$build/echo_server" -p "$rport"
check "wsc --reconnect: on_open tells the reconnect" wait_for "$tmp/err8" "connected (reconnected)"
echo "second" >&8
check "wsc --reconnect: a line echoed after the reconnect" wait_for "$tmp/out8" "second"
exec 8>&-
wait "$wscpid"
rc=$?
check "wsc --reconnect exits 0 after stdin ends (close 1000)" [ $rc -eq 0 ]
check "wsc --reconnect -v: the close at the end is 1000" grep -q "closed 1000" "$tmp/err8"
# --max-attempts: gives up, exit 1.
kill "$(echo $pids | awk '{print $NF}')" 2>/dev/null
timeout 30 "$build/wsc" --reconnect --backoff 50 --max-attempts 2 "ws://127.0.0.1:$rport/" </dev/null >/dev/null 2>"$tmp/err9"
rc=$?
check "wsc --reconnect --max-attempts 2 gives up: exit 1" [ $rc -eq 1 ]
check "wsc --reconnect says it gave up" grep -q "gave up" "$tmp/err9"

if [ -x "$build/existing_server" ]; then
  start "$tmp/ex.out" "$build/existing_server" -p 0
  xport=$(port_of "$tmp/ex.out")
  if command -v curl >/dev/null 2>&1; then
    check "existing_server answers plain HTTP itself" \
      [ "$(curl -s --max-time 5 "http://127.0.0.1:$xport/")" = "hello from the host server" ]
  fi
  printf 'through the host\n' | timeout 20 "$build/wsc" "ws://127.0.0.1:$xport/ws" >"$tmp/out4"
  check "existing_server hands upgrades to ws (echo via wsc)" \
    [ "$(cat "$tmp/out4")" = "through the host" ]
fi

echo "examples: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
