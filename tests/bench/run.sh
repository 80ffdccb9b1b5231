#!/usr/bin/env bash
# tests/bench/run.sh - runs the ws benchmarks against ws and its peers and
# writes build/bench/report.md (see docs/performance.md).
#
#   bash tests/bench/run.sh [--smoke] [--rounds N] [--secs S] [--idle N]
#                           [--servers "ws ws-2loops lws wslay node floor floor_uring"]
#                           [--modes "..."]
#   BENCH_EXTRA="NAME=ECHO[,BROADCAST] ..." bash tests/bench/run.sh ...
#
# Each round runs every mode against every server in turn (ws lws wslay
# node ws lws wslay node ...), the server pinned to CPU 0 and the load
# generator to CPU 1. The report gives each server's median over the rounds
# and, per peer, the median of the per-round ratios ws/peer. --smoke runs
# each mode once, briefly, against ws, and one short echo against each peer
# (floor and floor_uring: also 64 KiB text, 256 KiB and handshakes): it
# fails only when a tool fails (a refused connection, a wrong byte, a
# crash), never because of a number. Every process started here is killed
# by PID on exit; every run is bounded in time; traffic stays on 127.0.0.x.
#
# ws-2loops is ws on two loops on two threads, one port (ws_bcast_server
# --threads 2 [--echo]: a ws_loop_group; broadcast through
# ws_loop_group_publish). It is not pinned: its two threads share both
# CPUs with the load generator, so on a 2-CPU machine it shows what a
# second core buys when the load generator takes one of them.
#
# floor and floor_uring are no library: tests/bench/floor_server.c (epoll;
# --uring: io_uring), the least user-space work an echo server can do, to
# show what the kernel alone costs. They have no broadcast server (that
# mode skips them); floor_uring is skipped when this kernel does not give
# floor_server the io_uring it needs (floor_server --uring --probe).
#
# BENCH_EXTRA adds peers built elsewhere (never by this script), e.g.
#   BENCH_EXTRA="uws=/tmp/uws/uws_server,--broadcast"
# Each entry (entries separated by spaces) is NAME=ECHO[,BROADCAST]: the
# echo server is run as "ECHO -p PORT", the broadcast server as
# "BROADCAST -p PORT", or as "ECHO -p PORT --broadcast" when BROADCAST is
# the word --broadcast; without BROADCAST the broadcast mode skips NAME.
# ECHO and BROADCAST must be executables (not shell wrappers: their PID is
# the one whose CPU time and memory are measured), listening on 127.0.0.1.
# NAME joins the default server list (name it in --servers otherwise).
set -u
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
B=build/bench
SMOKE=0
REPORT_ONLY=0
ROUNDS=3
SECS=3
IDLE_N=10000
BCAST_N=10000
SERVERS="ws ws-2loops lws wslay node floor floor_uring"
MODES=""
ARGS="$*"   # for the report (the loop below shifts them away)
declare -A XECHO=() XBCAST=()
XNAMES=""
for e in ${BENCH_EXTRA:-}; do
  name=${e%%=*} spec=${e#*=}
  case "$name" in
    ws|lws|wslay|node|floor|floor_uring|'') echo "bench: BENCH_EXTRA: bad or reserved name in '$e'" >&2; exit 2 ;;
  esac
  if [ "$name" = "$e" ] || ! [[ "$name" =~ ^[a-z0-9_]+$ ]]; then
    echo "bench: BENCH_EXTRA: '$e' is not NAME=ECHO[,BROADCAST] (NAME: a-z 0-9 _)" >&2; exit 2
  fi
  XECHO[$name]=${spec%%,*}
  XBCAST[$name]=""
  [ "$spec" != "${spec#*,}" ] && XBCAST[$name]=${spec#*,}
  XNAMES="$XNAMES $name"
done
SERVERS="$SERVERS$XNAMES"
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) SMOKE=1 ;;
    --report-only) REPORT_ONLY=1 ;;   # rewrite report.md from results.tsv
    --rounds) ROUNDS=$2; shift ;;
    --secs) SECS=$2; shift ;;
    --idle) IDLE_N=$2; shift ;;
    --bcast) BCAST_N=$2; shift ;;  # subscribers in the broadcast mode
    --servers) SERVERS=$2; shift ;;
    --modes) MODES=$2; shift ;;
    *) echo "usage: $0 [--smoke] [--rounds N] [--secs S] [--idle N] [--bcast N] [--servers LIST] [--modes LIST]" >&2; exit 2 ;;
  esac
  shift
done

ALL_MODES="idle echo_small echo_conc echo_pipe echo_text echo_large echo_64k echo_64k_text echo_64k_utf8 echo_rtt handshake broadcast"
if [ "$SMOKE" = 1 ]; then
  ROUNDS=1 SECS=0.5 IDLE_N=200
fi
[ -n "$MODES" ] || MODES=$ALL_MODES

mkdir -p "$B/logs"
RES=$B/results.tsv
FAILED=0
if [ "$REPORT_ONLY" = 0 ]; then
  : > "$RES"
  : > $B/warnings.txt
fi
SPID=""
trap 'cleanup' EXIT
trap 'exit 130' INT TERM

cleanup() {
  if [ -n "$SPID" ] && kill -0 "$SPID" 2>/dev/null; then
    kill "$SPID" 2>/dev/null
    sleep 0.2
    kill -9 "$SPID" 2>/dev/null
  fi
  wait 2>/dev/null
}

# The hard limit is ~20,000 here; the idle mode needs N fds in each process.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

PIN_S="taskset -c 0"
PIN_L="taskset -c 1"
if ! command -v taskset >/dev/null 2>&1 || [ "$(nproc)" -lt 2 ]; then
  echo "bench: taskset or a second CPU missing: not pinning" >&2
  PIN_S="" PIN_L=""
fi

# Which servers can run here.
have() {
  case "$1" in
    ws) [ -x build/echo_server ] && [ -x $B/ws_bcast_server ] ;;
    ws-2loops) [ -x $B/ws_bcast_server ] ;;
    lws) [ -x $B/lws_server ] ;;
    wslay) [ -x $B/wslay_server ] ;;
    node) command -v node >/dev/null 2>&1 && [ -d tests/bench/node_modules/ws ] ;;
    floor) [ -x $B/floor_server ] ;;
    floor_uring) [ -x $B/floor_server ] && $B/floor_server --uring --probe 2> $B/logs/floor_uring.probe ;;
    *) [ -n "${XECHO[$1]:-}" ] && [ -x "${XECHO[$1]}" ] &&
       case "${XBCAST[$1]}" in ''|--broadcast) true ;; *) [ -x "${XBCAST[$1]}" ] ;; esac ;;
  esac
}
AVAIL=""
for s in $SERVERS; do
  if have "$s"; then AVAIL="$AVAIL $s"; continue; fi
  case "$s" in
    ws|ws-2loops|lws|wslay|node|floor) echo "bench: $s not available (run tests/bench/install.sh, then make bench-tools): skipped" >&2 ;;
    floor_uring)
      if [ -x $B/floor_server ]; then echo "bench: floor_uring not available (no io_uring here: $(tail -1 $B/logs/floor_uring.probe)): skipped" >&2
      else echo "bench: floor_uring not available (make bench-tools): skipped" >&2; fi ;;
    *) if [ -n "${XECHO[$s]+x}" ]; then echo "bench: $s (BENCH_EXTRA) not executable: ${XECHO[$s]} ${XBCAST[$s]}: skipped" >&2
       else echo "bench: unknown server $s (not in BENCH_EXTRA): skipped" >&2; fi ;;
  esac
done
# ws first: the report's ratios are ws/each of the others.
case " $AVAIL " in *" ws "*) AVAIL="ws $(echo " $AVAIL " | sed 's/ ws / /')" ;; esac
AVAIL=$(echo $AVAIL)
[ -x $B/loadgen ] || { echo "bench: $B/loadgen missing: make bench-tools" >&2; exit 1; }

# server_cmd SERVER KIND PORT: the command line (KIND: echo or broadcast).
server_cmd() {
  case "$1:$2" in
    ws:echo) echo "build/echo_server -p $3" ;;
    ws:broadcast) echo "$B/ws_bcast_server -p $3" ;;
    ws-2loops:echo) echo "$B/ws_bcast_server -p $3 --threads 2 --echo" ;;
    ws-2loops:broadcast) echo "$B/ws_bcast_server -p $3 --threads 2" ;;
    lws:echo) echo "$B/lws_server -p $3" ;;
    lws:broadcast) echo "$B/lws_server -p $3 --broadcast" ;;
    wslay:echo) echo "$B/wslay_server -p $3" ;;
    wslay:broadcast) echo "$B/wslay_server -p $3 --broadcast" ;;
    node:echo) echo "node tests/bench/node_server.js $3 echo" ;;
    node:broadcast) echo "node tests/bench/node_server.js $3 broadcast" ;;
    floor:echo) echo "$B/floor_server -p $3" ;;
    floor_uring:echo) echo "$B/floor_server -p $3 --uring" ;;
    floor:broadcast|floor_uring:broadcast) ;;   # no broadcast server: skipped
    *:echo) echo "${XECHO[$1]} -p $3" ;;
    *:broadcast)
      case "${XBCAST[$1]}" in
        '') ;;   # no broadcast server: the mode skips it
        --broadcast) echo "${XECHO[$1]} -p $3 --broadcast" ;;
        *) echo "${XBCAST[$1]} -p $3" ;;
      esac ;;
  esac
}

# loadgen arguments per mode.
mode_args() {
  local d=$SECS
  if [ "$SMOKE" = 1 ]; then
    case "$1" in
      idle) echo "idle -n $IDLE_N" ;;
      echo_small) echo "echo -c 8 -k 4 -s 32 -b -d $d" ;;
      echo_conc) echo "echo -c 32 -k 1 -s 32 -b -d $d" ;;
      echo_pipe) echo "echo -c 4 -k 16 -s 32 -b -d $d" ;;
      echo_64k) echo "echo -c 2 -k 2 -s 65536 -b -d $d" ;;
      echo_64k_text) echo "echo -c 2 -k 2 -s 65536 -t -d $d" ;;
      echo_64k_utf8) echo "echo -c 2 -k 2 -s 65536 -u -d $d" ;;
      echo_text) echo "echo -c 8 -k 4 -s 1024 -t -d $d" ;;
      echo_large) echo "echo -c 2 -k 2 -s 262144 -b -d $d" ;;
      echo_rtt) echo "echo -c 1 -k 1 -s 32 -b -d $d" ;;
      handshake) echo "handshake -c 8 -d $d" ;;
      broadcast) echo "broadcast -n 50 -s 64 -d $d" ;;
    esac
    return
  fi
  case "$1" in
    idle) echo "idle -n $IDLE_N" ;;
    echo_small) echo "echo -c 50 -k 4 -s 32 -b -d $d" ;;
    echo_conc) echo "echo -c 200 -k 1 -s 32 -b -d $d" ;;
    echo_pipe) echo "echo -c 16 -k 16 -s 32 -b -d $d" ;;
    echo_64k) echo "echo -c 8 -k 2 -s 65536 -b -d $d" ;;
    echo_64k_text) echo "echo -c 8 -k 2 -s 65536 -t -d $d" ;;
    echo_64k_utf8) echo "echo -c 8 -k 2 -s 65536 -u -d $d" ;;
    echo_text) echo "echo -c 50 -k 4 -s 1024 -t -d $d" ;;
    echo_large) echo "echo -c 4 -k 2 -s 262144 -b -d $d" ;;
    echo_rtt) echo "echo -c 1 -k 1 -s 32 -b -d $d" ;;
    handshake) echo "handshake -c 32 -d $d" ;;
    broadcast) echo "broadcast -n $BCAST_N -s 64 -d $d" ;;
  esac
}

# run_one ROUND MODE SERVER: starts the server, runs the load, stops it.
run_one() {
  local round=$1 mode=$2 srv=$3 kind=echo port cmd log out rc limit
  [ "$mode" = broadcast ] && kind=broadcast
  port=$($B/loadgen freeport) || return 1
  cmd=$(server_cmd "$srv" "$kind" "$port")
  if [ -z "$cmd" ]; then
    [ "$round" = 1 ] && echo "bench: $srv has no $kind server: $mode skipped" >&2
    return 0
  fi
  log=$B/logs/r$round-$mode-$srv
  # shellcheck disable=SC2086
  case "$srv" in
    ws-2loops) $cmd > "$log.server" 2>&1 & ;;   # both CPUs: see the top
    *) $PIN_S $cmd > "$log.server" 2>&1 & ;;
  esac
  SPID=$!
  if ! $B/loadgen wait -p "$port" 2>> "$log.server"; then
    echo "bench: $srv did not start: $(tail -3 "$log.server")" >&2
    printf '%s\t%s\t%s\tFAILED\n' "$round" "$mode" "$srv" >> "$RES"
    FAILED=$((FAILED + 1))
    cleanup; SPID=""
    return 1
  fi
  limit=$(awk -v s="$SECS" 'BEGIN { printf "%d", s + 150 }')
  # shellcheck disable=SC2046
  out=$(timeout -k 5 "$limit" $PIN_L $B/loadgen $(mode_args "$mode") -p "$port" \
        --pid "$SPID" 2> "$log.loadgen")
  rc=$?
  if [ $rc -ne 0 ] || ! kill -0 "$SPID" 2>/dev/null; then
    echo "bench: FAILED: round $round $mode against $srv (exit $rc):" >&2
    tail -5 "$log.loadgen" >&2
    tail -5 "$log.server" >&2
    printf '%s\t%s\t%s\tFAILED\n' "$round" "$mode" "$srv" >> "$RES"
    FAILED=$((FAILED + 1))
  else
    printf '%s\t%s\t%s\t%s\n' "$round" "$mode" "$srv" "${out#RESULT }" >> "$RES"
    printf '  r%s %-10s %-6s %s\n' "$round" "$mode" "$srv" "$(tail -1 "$log.loadgen")" >&2
  fi
  kill "$SPID" 2>/dev/null
  for _ in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15; do
    kill -0 "$SPID" 2>/dev/null || break
    sleep 0.2
  done
  kill -9 "$SPID" 2>/dev/null
  wait "$SPID" 2>/dev/null
  rc=$?
  # A server that dies on SIGTERM (rather than exiting or being killed) is
  # worth knowing about, but it is not the benchmark's failure.
  if [ $rc -gt 128 ] && [ $rc -ne 143 ] && [ $rc -ne 137 ]; then
    echo "bench: warning: $srv exited with status $rc after SIGTERM: $(tail -1 "$log.server")" >&2
    echo "$srv ($mode, round $round): status $rc after SIGTERM: $(tail -1 "$log.server")" >> $B/warnings.txt
  fi
  SPID=""
  return 0
}

if [ "$REPORT_ONLY" = 0 ]; then
START=$(date -u '+%Y-%m-%d %H:%M UTC')
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
CMDLINE="bash tests/bench/run.sh $ARGS"
[ -n "${BENCH_EXTRA:-}" ] && CMDLINE="BENCH_EXTRA=\"$BENCH_EXTRA\" $CMDLINE"
echo "bench: servers: $AVAIL; modes: $MODES; rounds: $ROUNDS; ${SECS}s each" >&2

if [ "$SMOKE" = 1 ]; then
  for mode in $MODES; do run_one 1 "$mode" ws; done
  for srv in $AVAIL; do
    [ "$srv" = ws ] && continue
    run_one 1 echo_small "$srv"
    run_one 1 broadcast "$srv"   # skipped for a peer without one
    # the floor is our own code: every frame length and the close too
    case "$srv" in floor|floor_uring)
      for mode in echo_64k_text echo_large handshake; do run_one 1 "$mode" "$srv"; done ;;
    esac
  done
  $PIN_L $B/micro --quick > $B/micro.md 2> $B/logs/micro || { echo "bench: micro failed" >&2; FAILED=$((FAILED + 1)); }
  if [ -x $B/deflate_mem ]; then
    $PIN_L $B/deflate_mem --messages 200 > $B/deflate.md 2> $B/logs/deflate || { echo "bench: deflate_mem failed" >&2; FAILED=$((FAILED + 1)); }
  fi
  if [ "$FAILED" -ne 0 ]; then echo "bench-smoke: $FAILED run(s) failed" >&2; exit 1; fi
  n=$(grep -vc FAILED "$RES")
  echo "bench-smoke: $n runs ok, micro ok"
  exit 0
fi

# The idle rounds first, before the handshake mode leaves thousands of
# sockets in TIME_WAIT (kernel memory the idle mode would count).
for mode in $MODES; do
  [ "$mode" = idle ] || continue
  for r in $(seq 1 "$ROUNDS"); do
    for srv in $AVAIL; do run_one "$r" idle "$srv"; done
  done
done
for r in $(seq 1 "$ROUNDS"); do
  for mode in $MODES; do
    [ "$mode" = idle ] && continue
    for srv in $AVAIL; do run_one "$r" "$mode" "$srv"; done
  done
done
echo "bench: micro benchmarks" >&2
$PIN_L $B/micro > $B/micro.md 2> $B/logs/micro || FAILED=$((FAILED + 1))
# permessage-deflate's ratio, memory and CPU per setting (a build with zlib).
rm -f $B/deflate.md
if [ -x $B/deflate_mem ]; then
  echo "bench: permessage-deflate costs" >&2
  $PIN_L $B/deflate_mem > $B/deflate.md 2> $B/logs/deflate || FAILED=$((FAILED + 1))
fi
LOAD1=$(cut -d' ' -f1-3 /proc/loadavg)
XDESC=""
for s in $AVAIL; do
  [ -n "${XECHO[$s]+x}" ] || continue
  XDESC="$XDESC$s: built elsewhere, \`${XECHO[$s]}\`$([ -n "${XBCAST[$s]}" ] && printf ' (broadcast: `%s`)' "${XBCAST[$s]}"); "
done
printf 'START=%q\nLOAD0=%q\nLOAD1=%q\nCMDLINE=%q\nROUNDS=%q\nSECS=%q\nAVAIL=%q\nXDESC=%q\n' \
  "$START" "$LOAD0" "$LOAD1" "$CMDLINE" "$ROUNDS" "$SECS" "$AVAIL" "$XDESC" > $B/meta.sh
else
  # shellcheck disable=SC1090
  . ./$B/meta.sh
  XDESC=${XDESC:-}
  FAILED=$(grep -c FAILED "$RES")
fi


# ---- the report ----------------------------------------------------------
{
  echo "# ws benchmark report"
  echo
  echo "- date: $START; command: \`make bench\` ($CMDLINE)"
  echo "- machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr)"
  echo "- load average before / after: $LOAD0 / $LOAD1 (a shared machine: other work ran at the same time)"
  echo "- peers: $(for s in $AVAIL; do case $s in
        lws) printf 'libwebsockets %s; ' "$(dpkg-query -W -f '${Version}' libwebsockets-dev 2>/dev/null)";;
        wslay) printf 'wslay %s; ' "$(dpkg-query -W -f '${Version}' libwslay-dev 2>/dev/null)";;
        node) printf 'Node %s with ws %s; ' "$(node --version)" "$(node -p "require('./tests/bench/node_modules/ws/package.json').version")";;
        floor) printf "floor: library-free echo server (tests/bench/floor_server.c): the kernel's cost alone; ";;
        floor_uring) printf 'floor_uring: the same over io_uring (`floor_server --uring`); ';;
      esac; done)$XDESC"
  echo "- $ROUNDS rounds, servers interleaved in each; server on CPU 0, load generator on CPU 1; ${SECS} s per timed run"
  case " $AVAIL " in *" ws-2loops "*)
    echo "- ws-2loops: ws on two loops on two threads, one port (a ws_loop_group), not pinned: it shares both CPUs with the load generator" ;;
  esac
  echo "- each cell: the median over the rounds; ws/peer: the median of the per-round ratios"
  echo "  (ratio > 1 means ws is ahead for \"higher\" metrics, < 1 for \"lower\" ones)"
  echo "- user-space / kernel CPU per message: the server's utime / stime (/proc/PID/stat) over the"
  echo "  window; the kernel splits the total between them at the timer tick, so a small share is rough"
  echo
  awk -F'\t' -v servers="$AVAIL" -v bcast_n="$BCAST_N" '
    function med(a, n,   i, j, t) {
      for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
      return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    function fmt(v) {
      if (v == "") return "-"
      if (v >= 100) return sprintf("%.0f", v)
      if (v >= 10) return sprintf("%.1f", v)
      return sprintf("%.2f", v)
    }
    {
      if ($4 == "FAILED") { failed[$2 "," $3]++; next }
      n = split($4, kv, " ")
      for (i = 1; i <= n; i++) { split(kv[i], p, "="); val[$1, $2, $3, p[1]] = p[2] }
      if ($1 > maxr) maxr = $1
      seen[$2] = 1
    }
    END {
      ns = split(servers, S, " ")
      nm = split("idle:rss_per_conn:lower:idle, server RSS per connection (B) " \
        "|idle:rss_per_conn_used:lower:idle after one message each, RSS per connection (B) " \
        "|idle:slab_per_pair:lower:idle, kernel slab per client+server socket pair (B) " \
        "|echo_small:msgs_per_s:higher:echo 50 conns x 4 in flight, 32 B binary: msg/s " \
        "|echo_small:msgs_per_cpu_s:higher:  same, msg per server CPU-second " \
        "|echo_small:usr_ns_per_msg:lower:  same, user-space CPU per message (ns) " \
        "|echo_small:sys_ns_per_msg:lower:  same, kernel CPU per message (ns) " \
        "|echo_small:p99_us:lower:  same, round trip p99 (us) " \
        "|echo_conc:msgs_per_s:higher:echo 200 conns x 1 in flight, 32 B binary: msg/s " \
        "|echo_conc:msgs_per_cpu_s:higher:  same, msg per server CPU-second " \
        "|echo_conc:usr_ns_per_msg:lower:  same, user-space CPU per message (ns) " \
        "|echo_conc:sys_ns_per_msg:lower:  same, kernel CPU per message (ns) " \
        "|echo_conc:p99_us:lower:  same, round trip p99 (us) " \
        "|echo_pipe:msgs_per_s:higher:echo 16 conns x 16 in flight (pipelined), 32 B binary: msg/s " \
        "|echo_pipe:msgs_per_cpu_s:higher:  same, msg per server CPU-second " \
        "|echo_pipe:usr_ns_per_msg:lower:  same, user-space CPU per message (ns) " \
        "|echo_pipe:sys_ns_per_msg:lower:  same, kernel CPU per message (ns) " \
        "|echo_pipe:p99_us:lower:  same, round trip p99 (us) " \
        "|echo_text:msgs_per_s:higher:echo 50 x 4, 1 KiB text: msg/s " \
        "|echo_text:msgs_per_cpu_s:higher:  same, msg per server CPU-second " \
        "|echo_text:usr_ns_per_msg:lower:  same, user-space CPU per message (ns) " \
        "|echo_text:sys_ns_per_msg:lower:  same, kernel CPU per message (ns) " \
        "|echo_large:mb_per_s:higher:echo 4 x 2, 256 KiB binary: MB/s " \
        "|echo_large:msgs_per_cpu_s:higher:  same, msg per server CPU-second " \
        "|echo_large:usr_ns_per_msg:lower:  same, user-space CPU per message (ns) " \
        "|echo_large:sys_ns_per_msg:lower:  same, kernel CPU per message (ns) " \
        "|echo_64k:mb_per_s:higher:echo 8 x 2, 64 KiB binary: MB/s " \
        "|echo_64k:msgs_per_cpu_s:higher:  same, msg per server CPU-second " \
        "|echo_64k:usr_ns_per_msg:lower:  same, user-space CPU per message (ns) " \
        "|echo_64k:sys_ns_per_msg:lower:  same, kernel CPU per message (ns) " \
        "|echo_64k_text:mb_per_s:higher:echo 8 x 2, 64 KiB ASCII text (UTF-8 checked): MB/s " \
        "|echo_64k_text:msgs_per_cpu_s:higher:  same, msg per server CPU-second " \
        "|echo_64k_text:usr_ns_per_msg:lower:  same, user-space CPU per message (ns) " \
        "|echo_64k_text:sys_ns_per_msg:lower:  same, kernel CPU per message (ns) " \
        "|echo_64k_utf8:mb_per_s:higher:echo 8 x 2, 64 KiB text of 2- to 4-byte UTF-8: MB/s " \
        "|echo_64k_utf8:msgs_per_cpu_s:higher:  same, msg per server CPU-second " \
        "|echo_64k_utf8:usr_ns_per_msg:lower:  same, user-space CPU per message (ns) " \
        "|echo_64k_utf8:sys_ns_per_msg:lower:  same, kernel CPU per message (ns) " \
        "|echo_rtt:p50_us:lower:echo 1 conn, 1 in flight, 32 B: round trip p50 (us) " \
        "|echo_rtt:p99_us:lower:  same, p99 (us) " \
        "|echo_rtt:usr_ns_per_msg:lower:  same, user-space CPU per message (ns) " \
        "|echo_rtt:sys_ns_per_msg:lower:  same, kernel CPU per message (ns) " \
        "|handshake:hs_per_s:higher:handshakes (connect, upgrade, close; 32 at once)/s " \
        "|handshake:hs_per_cpu_s:higher:  same, per server CPU-second " \
        "|broadcast:all_p50_us:lower:broadcast to " bcast_n ", 64 B: until all have it, p50 (us) " \
        "|broadcast:ns_per_recipient:lower:  same, per recipient (ns) " \
        "|broadcast:cpu_ns_per_delivery:lower:  server CPU per delivery (ns)", M, "|")
      printf "| metric | better |"
      for (s = 1; s <= ns; s++) printf " %s |", S[s]
      for (s = 2; s <= ns; s++) printf " ws/%s |", S[s]
      printf "\n| --- | --- |"
      for (s = 1; s <= 2 * ns - 1; s++) printf " ---: |"
      printf "\n"
      for (m = 1; m <= nm; m++) {
        nf = split(M[m], f, ":")
        mode = f[1]; key = f[2]; dir = f[3]; label = f[4]
        for (j = 5; j <= nf; j++) label = label ":" f[j]
        sub(/ +$/, "", label)
        if (!(mode in seen)) continue
        printf "| %s | %s |", label, dir
        for (s = 1; s <= ns; s++) {
          k = 0
          for (r = 1; r <= maxr; r++) if ((r, mode, S[s], key) in val) a[++k] = val[r, mode, S[s], key]
          printf " %s |", k ? fmt(med(a, k)) : (failed[mode "," S[s]] ? "FAILED" : "-")
        }
        for (s = 2; s <= ns; s++) {
          k = 0
          for (r = 1; r <= maxr; r++)
            if ((r, mode, "ws", key) in val && (r, mode, S[s], key) in val && val[r, mode, S[s], key] > 0)
              a[++k] = val[r, mode, "ws", key] / val[r, mode, S[s], key]
          printf " %s |", k ? sprintf("%.2f", med(a, k)) : "-"
        }
        printf "\n"
      }
      # load generator and server saturation, for reading the table
      printf "\nCPU use during the timed runs (server / load generator, fraction of one CPU; medians):\n\n"
      printf "| mode |"
      for (s = 1; s <= ns; s++) printf " %s |", S[s]
      printf "\n| --- |"
      for (s = 1; s <= ns; s++) printf " --- |"
      printf "\n"
      nmm = split("echo_small echo_conc echo_pipe echo_text echo_large echo_64k echo_64k_text echo_64k_utf8 echo_rtt handshake broadcast", MM, " ")
      for (m = 1; m <= nmm; m++) {
        if (!(MM[m] in seen)) continue
        printf "| %s |", MM[m]
        for (s = 1; s <= ns; s++) {
          k = 0; k2 = 0
          for (r = 1; r <= maxr; r++) {
            if ((r, MM[m], S[s], "server_cpu") in val) a[++k] = val[r, MM[m], S[s], "server_cpu"]
            if ((r, MM[m], S[s], "lg_cpu") in val) b[++k2] = val[r, MM[m], S[s], "lg_cpu"]
          }
          printf " %s / %s |", k ? sprintf("%.2f", med(a, k)) : "-", k2 ? sprintf("%.2f", med(b, k2)) : "-"
        }
        printf "\n"
      }
    }' "$RES"
  echo
  echo "Micro benchmarks (build/bench/micro: median of 5 trials; \"x memcpy\" = time / memcpy time on the same buffer):"
  echo
  cat $B/micro.md
  if [ -s $B/deflate.md ]; then
    echo
    echo "permessage-deflate (build/bench/deflate_mem, docs/deflate.md): JSON chat messages over memory, then 400 idle connections on a loop:"
    echo
    cat $B/deflate.md
  fi
  echo
  echo "Raw results: build/bench/results.tsv; logs: build/bench/logs/."
  if [ -s $B/warnings.txt ]; then
    echo; echo "Warnings (servers that died on SIGTERM at the end of a run; the runs themselves completed):"; echo
    sort $B/warnings.txt | sed 's/^/- /'
  fi
  if [ "$FAILED" -ne 0 ]; then echo; echo "**$FAILED run(s) FAILED**: see build/bench/logs/."; fi
} > $B/report.md
echo
cat $B/report.md
[ "$FAILED" -eq 0 ]
