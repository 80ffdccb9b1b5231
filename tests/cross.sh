#!/bin/sh
# tests/cross.sh - `make cross`: the core's tests built for other machines
# and run there under emulation, all from Debian packages:
#   sh tests/cross.sh BUILD_DIR
# - s390x, big-endian (s390x-linux-gnu-gcc, qemu-s390x);
# - i686, 32-bit (i686-linux-gnu-gcc, qemu-i386), once with the SSE2 paths
#   (-msse2), once with the portable ones (-DWS_NO_SIMD) and once as the
#   small build (-DWS_SMALL=1);
# - Windows x86-64 (x86_64-w64-mingw32-gcc, wine64 in a throwaway prefix),
#   where the loop (WSAPoll) is tested too, over loopback: echo_server.exe
#   answers BUILD_DIR/wsc and BUILD_DIR/slow_drain, wsc.exe talks to
#   BUILD_DIR/echo_server, and BUILD_DIR/test_chat drives chat.exe.
# test_codec and test_conn run on each: masking at every offset and
# alignment, 64-bit lengths, the UTF-8 fast paths against a reference
# decoder. The Linux binaries are static: qemu-i386 7.2 hangs in a
# dynamically linked i386 pthread_create(), and static binaries need no
# QEMU_LD_PREFIX. s390x has no vector path in the core, so it runs the
# portable code once. Missing tools skip their machine with the package to
# install; with CI=true a skipped machine fails.
set -u
B=$1
case $B in /*) ;; *) B=$PWD/$B ;; esac
D=$B/cross
mkdir -p "$D"
FLAGS="-std=c99 -Wall -Wextra -Wpedantic -Werror -O2 -Iinclude"
TESTS="test_codec test_conn"
TO=${CROSS_TIMEOUT:-300} # seconds per test binary under emulation
passed=0
failed=0
log=$D/run.log

count() { # label, rc of the run, its log
  line=$(grep -E '[0-9]+ passed, [0-9]+ failed' "$3" | tail -n 1)
  p=$(echo "$line" | awk '{for (i = 2; i <= NF; i++) if ($i == "passed,") print $(i-1)}')
  f=$(echo "$line" | awk '{for (i = 2; i <= NF; i++) if ($i == "failed") print $(i-1)}')
  [ -n "$p" ] || p=0
  [ -n "$f" ] || f=0
  grep -v -E '^ok |[0-9]+ passed, [0-9]+ failed|^wine: ' "$3" | head -40
  if [ "$2" -ne 0 ] && [ "$f" -eq 0 ]; then
    [ "$2" -eq 124 ] && echo "$1: timed out after ${TO}s" || echo "$1: exited with status $2"
    f=1
  fi
  echo "$1: $p passed, $f failed"
  passed=$((passed + p))
  failed=$((failed + f))
}

fail() { echo "$1"; failed=$((failed + 1)); }

skip() { # machine, package list
  if [ "${CI:-}" = true ]; then
    fail "cross $1: tools missing in CI (apt-get install $2)"
  else
    echo "cross $1: skipped (apt-get install $2)"
  fi
}

# 1 when "$@" (a compiler and flags) selects the SIMD UTF-8 path.
# shellcheck disable=SC2086
simd() { "$@" $FLAGS -dM -E src/ws.c 2>/dev/null | grep -q 'define WS__U8_SIMD'; }

linux() { # name, compiler, emulator, want SIMD (0/1), extra flags
  name=$1 cc=$2 emu=$3 want=$4 extra=$5
  # -DWS_NO_LOOP: the loop is not under test here, and a static glibc
  # warns about its getaddrinfo().
  # shellcheck disable=SC2086
  if [ "$(simd $cc $extra && echo 1 || echo 0)" != "$want" ]; then
    fail "cross $name: $cc $extra does not select the path it is meant to test (SIMD: want $want)"
    return
  fi
  for t in $TESTS; do
    echo "== $t ($name)"
    # shellcheck disable=SC2086
    if ! $cc $FLAGS $extra -DWS_NO_LOOP -static tests/$t.c -o "$D/$t-$name" -pthread; then
      fail "cross $name: $t does not build"
      continue
    fi
    timeout "$TO" "$emu" "$D/$t-$name" >"$log" 2>&1
    count "$t ($name)" $? "$log"
  done
}

have() { command -v "$1" >/dev/null 2>&1; }

if have s390x-linux-gnu-gcc && have qemu-s390x; then
  linux s390x s390x-linux-gnu-gcc qemu-s390x 0 ""
else
  skip s390x "gcc-s390x-linux-gnu libc6-dev-s390x-cross qemu-user"
fi
if have i686-linux-gnu-gcc && have qemu-i386; then
  linux i686-sse2 i686-linux-gnu-gcc qemu-i386 1 "-msse2"
  linux i686-nosimd i686-linux-gnu-gcc qemu-i386 0 "-DWS_NO_SIMD"
  # The small build where size_t has 32 bits: frame and message lengths
  # are counted in size_t there (ws__flen), and 2^32 is refused with 1009.
  linux i686-small i686-linux-gnu-gcc qemu-i386 0 "-DWS_SMALL=1"
else
  skip i686 "gcc-i686-linux-gnu libc6-dev-i386-cross qemu-user"
fi

# Windows: the core alone warning-free, then the tests under wine in a
# prefix of our own (made on first use, a few seconds), its wineserver
# ended and the prefix removed at the end.
WINE=$(command -v wine64 || { [ -x /usr/lib/wine/wine64 ] && echo /usr/lib/wine/wine64; })
MINGW=x86_64-w64-mingw32-gcc
if have $MINGW && [ -n "$WINE" ]; then
  WINEPREFIX=$(mktemp -d "${TMPDIR:-/tmp}/ws-wine.XXXXXX")
  export WINEPREFIX WINEDEBUG=-all
  trap 'wineserver -k >/dev/null 2>&1; rm -rf "$WINEPREFIX"' EXIT
  PATH=$PATH:/usr/lib/wine
  echo "== core (mingw-w64)"
  # shellcheck disable=SC2086
  if $MINGW $FLAGS -DWS_NO_LOOP -c src/ws.c -o "$D/ws-win.o"; then
    echo "core (mingw-w64): builds"
  else
    fail "cross windows: src/ws.c does not build with $MINGW"
  fi
  for v in "win64:" "win64-nosimd:-DWS_NO_SIMD"; do
    name=${v%%:*} extra=${v#*:}
    for t in $TESTS; do
      [ "$name" = win64-nosimd ] && [ "$t" != test_codec ] && continue
      echo "== $t ($name)"
      # shellcheck disable=SC2086
      if ! $MINGW $FLAGS $extra -DWS_NO_LOOP -static tests/$t.c -o "$D/$t-$name.exe"; then
        fail "cross $name: $t does not build"
        continue
      fi
      timeout "$TO" "$WINE" "$D/$t-$name.exe" >"$log" 2>&1
      count "$t ($name)" $? "$log"
    done
  done
  # The loop (WSAPoll): the whole of ws.c, then the echo example and the
  # chat demo under wine, answering Linux clients over loopback.
  echo "== loop (mingw-w64)"
  WL="-static -pthread -lws2_32"
  # shellcheck disable=SC2086
  if $MINGW $FLAGS -c src/ws.c -o "$D/ws-win-loop.o" &&
     $MINGW $FLAGS examples/echo_server.c src/ws.c -o "$D/echo_server.exe" $WL &&
     $MINGW $FLAGS examples/chat.c src/ws.c -o "$D/chat.exe" $WL &&
     $MINGW $FLAGS examples/wsc.c src/ws.c -o "$D/wsc.exe" $WL; then
    echo "loop (mingw-w64): ws.c, echo_server.exe, chat.exe and wsc.exe build"
    echo "== echo_server.exe (wine) <- $B/wsc (Linux)"
    timeout "$TO" "$WINE" "$D/echo_server.exe" -p 0 >"$D/es.out" 2>&1 &
    es=$!
    port=""
    for _ in $(seq 1 600); do # wine starts in a few seconds; at most 60
      port=$(sed -n 's#.*127\.0\.0\.1:\([0-9]*\)/.*#\1#p' "$D/es.out")
      [ -n "$port" ] && break
      sleep 0.1
    done
    # Short lines, an empty one, and 300 KB in one message (several
    # partial writes each way).
    { echo hello; echo; echo "wie geht's? ✓"; awk 'BEGIN { s = "0123456789"; while (length(s) < 300000) s = s s; print s }'; echo bye; } >"$D/echo.in"
    if [ -z "$port" ]; then
      fail "echo_server.exe (wine): no listening line: $(head -c 300 "$D/es.out")"
    elif timeout 60 "$B/wsc" "ws://127.0.0.1:$port/" <"$D/echo.in" >"$D/echo.out" 2>"$log" &&
         cmp -s "$D/echo.in" "$D/echo.out"; then
      echo "echo_server.exe (wine): $(wc -c <"$D/echo.in") bytes in 5 messages echoed"
      passed=$((passed + 1))
    else
      fail "echo_server.exe (wine): the echo differs or wsc failed: $(head -c 300 "$log")"
    fi
    # A write that only the socket can resume: 8 MB echoed to a client
    # that reads it slowly and sends nothing more, so no input wakes the
    # server between its short writes (a backend that lost POLLWRNORM
    # passes the echo above, and stalls here).
    echo "== echo_server.exe (wine) <- $B/slow_drain (Linux)"
    if [ -n "$port" ] && timeout 30 "$B/slow_drain" "$port" >"$log" 2>&1; then
      cat "$log"
      passed=$((passed + 1))
    else
      fail "echo_server.exe (wine): the slow drain failed: $(head -c 300 "$log")"
    fi
    kill "$es" 2>/dev/null
    wait "$es" 2>/dev/null
    # The other way: the client on Windows (a name to resolve, the OS
    # random source, a thread posting stdin's lines to the loop).
    echo "== wsc.exe (wine) -> $B/echo_server (Linux)"
    timeout "$TO" "$B/echo_server" -p 0 >"$D/es.out" 2>&1 &
    es=$!
    port=""
    for _ in $(seq 1 100); do
      port=$(sed -n 's#.*127\.0\.0\.1:\([0-9]*\)/.*#\1#p' "$D/es.out")
      [ -n "$port" ] && break
      sleep 0.1
    done
    if [ -z "$port" ]; then
      fail "echo_server (Linux): no listening line: $(head -c 300 "$D/es.out")"
    elif timeout 60 "$WINE" "$D/wsc.exe" "ws://localhost:$port/" <"$D/echo.in" >"$D/echo.out" 2>"$log" &&
         cmp -s "$D/echo.in" "$D/echo.out"; then
      echo "wsc.exe (wine): $(wc -c <"$D/echo.in") bytes in 5 messages sent and received back"
      passed=$((passed + 1))
    else
      fail "wsc.exe (wine): the echo differs or wsc.exe failed: $(grep -v '^wine: ' "$log" | head -c 300)"
    fi
    kill "$es" 2>/dev/null
    wait "$es" 2>/dev/null
    echo "== test_chat (Linux) -> chat.exe (wine)"
    printf '#!/bin/sh\nexec "%s" "%s" "$@"\n' "$WINE" "$D/chat.exe" >"$D/chat-wine"
    chmod +x "$D/chat-wine"
    timeout "$TO" "$B/test_chat" "$D/chat-wine" basic >"$log" 2>&1
    count "test_chat (chat.exe under wine)" $? "$log"
  else
    fail "cross windows: the loop or an example does not build with $MINGW"
  fi
else
  skip windows "gcc-mingw-w64-x86-64 wine64"
fi

echo "cross: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
