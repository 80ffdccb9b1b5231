#!/usr/bin/env bash
# tests/bench/deflate_run.sh - compressed echo (permessage-deflate) against
# ws and Node's ws: messages per server CPU-second and bytes on the wire
# (make bench-deflate runs it after build/bench/deflate_mem).
#
#   bash tests/bench/deflate_run.sh [BUILD_DIR] [SECS]
#
# Servers: build/echo_server --deflate (ws's defaults: 13-bit windows,
# memLevel 3, context takeover, threshold 64) and tests/bench/node_server.js
# --deflate (ws 8.23.0's defaults: 15-bit windows, memLevel 8, context
# takeover; threshold 64), when tests/bench/node_modules is installed
# (tests/bench/install.sh). The load generator (build/bench/loadgen
# --deflate) offers permessage-deflate as a browser does, compresses every
# message with context takeover and checks every echo after inflating it;
# its messages are slices of 1 MiB of JSON chat. Echo: 16 connections, one
# message in flight each, 200-byte and 4 KiB messages. Broadcast: SUBS
# (200) subscribers and one publisher, the same sizes; ws without context
# takeover (one compression per publish) and with it (one per subscriber). The server is pinned
# to CPU 0 and the load generator to CPU 1 when taskset exists. Every
# process started here is killed by PID on exit; each run is bounded.
#
# BENCH_EXTRA adds servers built elsewhere (never by this script), as in
# run.sh: entries NAME=ECHO[,BROADCAST] separated by spaces, e.g.
#   BENCH_EXTRA="uws_ded=/tmp/uws/ded_echo,/tmp/uws/ded_bcast"
# ECHO is run as "ECHO -p 0", BROADCAST as "BROADCAST -p 0" (or as
# "ECHO -p 0 --broadcast" when BROADCAST is the word --broadcast). Each
# must speak permessage-deflate, print 127.0.0.1:PORT once it listens, be
# an executable (its PID is the one whose CPU time is measured) and end on
# SIGTERM. The echo server sends every message back; the broadcast server
# sends every message to every connection, the sender included. Without
# BROADCAST, NAME has no broadcast row.
set -u
B=${1:-build}
SECS=${2:-5}
here=$(cd "$(dirname "$0")" && pwd)
LG=$B/bench/loadgen
PIN_S="" PIN_L=""
if command -v taskset >/dev/null 2>&1 && [ "$(nproc)" -ge 2 ]; then
  PIN_S="taskset -c 0" PIN_L="taskset -c 1"
fi
pids=""
cleanup() { for p in $pids; do kill "$p" 2>/dev/null; done; }
trap cleanup EXIT INT TERM
XNAMES=() XECHO=() XBCAST=()
for e in ${BENCH_EXTRA:-}; do
  name=${e%%=*} spec=${e#*=}
  if [ "$name" = "$e" ] || ! [[ "$name" =~ ^[a-z0-9_]+$ ]] || [ "$name" = ws ] || [ "$name" = node ]; then
    echo "deflate_run: BENCH_EXTRA: '$e' is not NAME=ECHO[,BROADCAST] (NAME: a-z 0-9 _, not ws or node)" >&2
    exit 2
  fi
  echo_bin=${spec%%,*} bcast_bin=""
  [ "$spec" != "${spec#*,}" ] && bcast_bin=${spec#*,}
  [ -x "$echo_bin" ] || { echo "deflate_run: BENCH_EXTRA: $echo_bin is not an executable" >&2; exit 2; }
  if [ -n "$bcast_bin" ] && [ "$bcast_bin" != --broadcast ] && ! [ -x "$bcast_bin" ]; then
    echo "deflate_run: BENCH_EXTRA: $bcast_bin is not an executable" >&2; exit 2
  fi
  XNAMES+=("$name") XECHO+=("$echo_bin") XBCAST+=("$bcast_bin")
done
[ -x "$LG" ] && [ -x "$B/echo_server" ] || { echo "deflate_run: build $LG and $B/echo_server first"; exit 1; }
"$LG" echo -p 1 --deflate -d 0.1 2>&1 | grep -q "needs a build" &&
  { echo "deflate_run: $LG was built without zlib"; exit 1; }

# run NAME CMD...: starts the server, prints one table row per size.
run() {
  name=$1; shift
  out=$(mktemp)
  $PIN_S "$@" >"$out" 2>&1 &
  pid=$!
  pids="$pids $pid"
  i=0
  while [ $i -lt 50 ] && ! grep -q '127.0.0.1:[0-9]' "$out"; do sleep 0.1; i=$((i + 1)); done
  port=$(sed -n 's/.*127\.0\.0\.1:\([0-9][0-9]*\).*/\1/p' "$out" | head -n 1)
  if [ -z "$port" ]; then echo "| $name | - | did not start | | |"; kill "$pid" 2>/dev/null; return; fi
  for size in 200 4096; do
    r=$(timeout $((SECS + 60)) $PIN_L "$LG" echo -p "$port" -c 16 -k 1 -s "$size" -d "$SECS" -w 1 \
          --deflate --pid "$pid" 2>/dev/null | grep '^RESULT')
    get() { printf '%s\n' "$r" | tr ' ' '\n' | sed -n "s/^$1=//p"; }
    if [ -z "$r" ] || [ "$(get errors)" != 0 ]; then
      echo "| $name | $size | FAILED | | |"
    else
      echo "| $name | $size | $(get msgs_per_s) | $(get msgs_per_cpu_s) | $(get wire_in_per_msg) |"
    fi
  done
  kill "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  rm -f "$out"
}

echo "| server | message bytes | echoes/s | echoes per server CPU-second | bytes on the wire per echo (server to client) |"
echo "| --- | --- | --- | --- | --- |"
run "ws (echo_server --deflate)" "$B/echo_server" -p 0 --deflate
if [ -d "$here/node_modules/ws" ]; then
  run "Node ws $(node -p "require('$here/node_modules/ws/package.json').version") (perMessageDeflate)" \
    node "$here/node_server.js" 0 echo --deflate
else
  echo "| Node ws | - | not installed (tests/bench/install.sh) | | |"
fi
for i in "${!XNAMES[@]}"; do
  run "${XNAMES[$i]} (${XECHO[$i]})" "${XECHO[$i]}" -p 0
done

# Broadcast: SUBS subscribers and one publisher; every message goes to all.
SUBS=${SUBS:-200}
brun() {
  name=$1; shift
  out=$(mktemp)
  $PIN_S "$@" >"$out" 2>&1 &
  pid=$!
  pids="$pids $pid"
  i=0
  while [ $i -lt 50 ] && ! grep -q '127.0.0.1:[0-9]' "$out"; do sleep 0.1; i=$((i + 1)); done
  port=$(sed -n 's/.*127\.0\.0\.1:\([0-9][0-9]*\).*/\1/p' "$out" | head -n 1)
  if [ -z "$port" ]; then echo "| $name | - | did not start | | |"; kill "$pid" 2>/dev/null; return; fi
  for size in 200 4096; do
    r=$(timeout $((SECS + 90)) $PIN_L "$LG" broadcast -p "$port" -n "$SUBS" -s "$size" -d "$SECS" -w 1 \
          --deflate --pid "$pid" 2>/dev/null | grep '^RESULT')
    get() { printf '%s\n' "$r" | tr ' ' '\n' | sed -n "s/^$1=//p"; }
    if [ -z "$r" ] || [ "$(get errors)" != 0 ]; then
      echo "| $name | $size | FAILED | | |"
    else
      cpu=$(get server_cpu) del=$(get deliveries_per_s)
      echo "| $name | $size | $del | $(awk -v d="$del" -v c="$cpu" 'BEGIN { printf "%.0f", (c > 0 ? d / c : 0) }') | $(get wire_in_per_delivery) |"
    fi
  done
  kill "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  rm -f "$out"
}
echo
echo "| broadcast server, $SUBS subscribers | message bytes | deliveries/s | deliveries per server CPU-second | bytes on the wire per delivery |"
echo "| --- | --- | --- | --- | --- |"
if [ -x "$B/bench/ws_bcast_server" ]; then
  brun "ws, no context takeover (one compression per publish)" "$B/bench/ws_bcast_server" -p 0 --deflate
  brun "ws, context takeover (one per subscriber)" "$B/bench/ws_bcast_server" -p 0 --deflate=context
else
  echo "| ws | - | build $B/bench/ws_bcast_server first | | |"
fi
if [ -d "$here/node_modules/ws" ]; then
  brun "Node ws (perMessageDeflate, one per subscriber)" node "$here/node_server.js" 0 broadcast --deflate
fi
for i in "${!XNAMES[@]}"; do
  case "${XBCAST[$i]}" in
    '') ;;
    --broadcast) brun "${XNAMES[$i]} (${XECHO[$i]} --broadcast)" "${XECHO[$i]}" -p 0 --broadcast ;;
    *) brun "${XNAMES[$i]} (${XBCAST[$i]})" "${XBCAST[$i]}" -p 0 ;;
  esac
done
