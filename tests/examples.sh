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
  "$@" >"$out" 2>&1 &
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

# The firmware example (static buffers, no OS, no malloc, client only)
# over a socket: the echo comes back, then a clean close (1000).
if [ -x "$build/firmware_client" ]; then
  timeout 20 "$build/firmware_client" 127.0.0.1 "$eport" >"$tmp/fw1" 2>&1
  rc=$?
  check "firmware_client: echo matched and closed with 1000, exit 0" \
    sh -c "[ $rc -eq 0 ] && grep -q 'echo matched, closed with 1000' '$tmp/fw1'"
  # 500 bytes fit its 640-byte output buffer (548 do on 64-bit hosts: 640
  # less WS_BUFFER_OVERHEAD 84, less an 8-byte header); 700 never can:
  # WS_ETOOBIG, nothing is sent, it closes and exits 1.
  long=$(head -c 500 /dev/zero | tr '\0' x)
  timeout 20 "$build/firmware_client" 127.0.0.1 "$eport" "$long" >/dev/null 2>&1
  check "firmware_client: 500 bytes echoed through its fixed buffers" [ $? -eq 0 ]
  long=$(head -c 700 /dev/zero | tr '\0' x)
  timeout 20 "$build/firmware_client" 127.0.0.1 "$eport" "$long" >"$tmp/fw2" 2>&1
  rc=$?
  check "firmware_client: 700 bytes over its output buffer are refused, exit 1" \
    sh -c "[ $rc -eq 1 ] && grep -q 'echo DIFFERED' '$tmp/fw2'"
fi

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
