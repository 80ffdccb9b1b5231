#!/usr/bin/env bash
# tests/scale/run.sh - `make scale` and `make scale-smoke` (a benchmark, not
# a test): N idle WebSocket connections over P ws server processes sharing
# one port (SO_REUSEPORT), held for S seconds with pings on (30 s), every
# one subscribed to one topic; then broadcasts to all of them, carried
# across the processes by Redis or NATS (the bridges), each broker a real
# server started here. See tests/scale/README.
#
#   SCALE_CONNS=N        connections (1000000; smoke 2000)
#   SCALE_PROCS=P        ws server processes (enough to stay under the
#                        descriptor limit: N / (90 % of RLIMIT_NOFILE))
#   SCALE_HOLD=S         seconds held after the last one opened (60; smoke 3)
#   SCALE_BROKER=B       redis | nats | both (one run each) | local (no
#                        broker: each process is told to publish, and
#                        reaches its own connections) (both)
#   SCALE_BROADCASTS=K   broadcasts measured (20; smoke 5)
#   SCALE_IDLE=I         seconds of the idle measurement (min(30, S/2))
#   SCALE_SIZE=B         broadcast payload bytes (64)
# Environment from the Makefile: BUILD, SCALE_BRIDGES (the bridges built
# into build/scale/scale_server: "redis nats", or fewer).
# Exit status: 0 when every connection opened and was held, none dropped,
# every broadcast reached every connection intact; else 1 (2: refused to
# start, e.g. too little memory).
set -u
smoke=0
[ "${1:-}" = --smoke ] && smoke=1
BUILD=${BUILD:-build}
BIN=$BUILD/scale
OUT=$BUILD/scale/run
if [ $smoke = 1 ]; then
  CONNS=${SCALE_CONNS:-2000}; HOLD=${SCALE_HOLD:-3}; NB=${SCALE_BROADCASTS:-5}
else
  CONNS=${SCALE_CONNS:-1000000}; HOLD=${SCALE_HOLD:-60}; NB=${SCALE_BROADCASTS:-20}
fi
SIZE=${SCALE_SIZE:-64}
BROKER=${SCALE_BROKER:-both}
BRIDGES=" ${SCALE_BRIDGES:-} "
IDLE=${SCALE_IDLE:-$(( HOLD / 2 < 30 ? HOLD / 2 : 30 ))}
[ "$IDLE" -ge 1 ] || IDLE=1

say() { printf '%s\n' "$*"; }
# A sleep that a signal cuts short (bash runs a trap only between commands).
NAP=
nap() { sleep "$1" & NAP=$!; wait $NAP; NAP=; }
now() { date +%s.%N; }
fail=0

# ---- every process started here is ended by its PID, on every path -------
PIDS=()
cleanup() {
  local p alive
  [ -n "$NAP" ] && kill "$NAP" 2>/dev/null
  [ ${#PIDS[@]} -gt 0 ] || return 0
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for _ in $(seq 50); do
    alive=0
    for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break
    sleep 0.1
  done
  for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
  PIDS=()
}
trap cleanup EXIT
trap 'say "scale: interrupted"; exit 1' INT TERM

# ---- the machine: what it allows, said rather than changed ---------------
nofile=$(ulimit -Hn)
[ "$nofile" = unlimited ] && nofile=1048576
soft=$(ulimit -Sn)
[ "$soft" = unlimited ] && soft=$nofile
per_proc=$(( nofile * 9 / 10 ))   # room for the kernel's uneven spread
if [ -z "${SCALE_PROCS:-}" ]; then
  PROCS=$(( (CONNS + per_proc - 1) / per_proc ))
  [ $smoke = 1 ] && [ "$PROCS" -lt 2 ] && PROCS=2
else
  PROCS=$SCALE_PROCS
fi
GENS=$(( (CONNS + per_proc - 1) / per_proc ))
file_max=$(cat /proc/sys/fs/file-max)
read -r port_lo port_hi < /proc/sys/net/ipv4/ip_local_port_range
ports=$(( port_hi - port_lo + 1 ))
per_gen=$(( (CONNS + GENS - 1) / GENS ))
# each source address has the whole range to the server's port; use it
# at most half full so the kernel's search for a free port stays short
NSRC=$(( (per_gen + ports / 2 - 1) / (ports / 2) ))
mem_avail=$(awk '/^MemAvailable:/ {print $2}' /proc/meminfo)
# about 9 KB of kernel memory per loopback pair, and a few hundred bytes
# of user memory on each side: 10 KB per connection, with 25 % to spare
need_kb=$(( CONNS * 10 * 125 / 100 + 200000 ))
say "scale: $CONNS connections, $PROCS ws server processes, $GENS load generators x $NSRC source addresses, hold $HOLD s, $NB broadcasts of $SIZE bytes"
say "machine: $(nproc) cores, $(( $(awk '/^MemTotal:/ {print $2}' /proc/meminfo) / 1024 )) MiB, MemAvailable $(( mem_avail / 1024 )) MiB, kernel $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg)"
say "limits: RLIMIT_NOFILE $soft soft / $nofile hard per process (not raised: $per_proc connections per process at most, so $PROCS server and $GENS generator processes), fs.file-max $file_max, ip_local_port_range $port_lo-$port_hi ($ports ports per source address)"
if [ "$mem_avail" -lt "$need_kb" ]; then
  say "scale: refused: $CONNS connections need about $(( need_kb / 1024 )) MiB, MemAvailable is $(( mem_avail / 1024 )) MiB"
  exit 2
fi
if [ $(( CONNS * 2 + 10000 )) -gt "$file_max" ]; then
  say "scale: refused: fs.file-max $file_max is below the $(( CONNS * 2 )) descriptors needed (a kernel setting this script does not change)"
  exit 2
fi
if [ "$per_gen" -gt "$per_proc" ] || [ $(( (CONNS + PROCS - 1) / PROCS )) -gt "$per_proc" ]; then
  say "scale: refused: more than $per_proc connections per process with SCALE_PROCS=$PROCS (RLIMIT_NOFILE $nofile)"
  exit 2
fi
for b in "$BIN/scale_server" "$BIN/holdgen"; do
  [ -x "$b" ] || { say "scale: $b missing (make scale builds it)"; exit 2; }
done

# Which runs: a broker whose bridge was not built, or whose server is not
# installed, is skipped (with `both`) or refused (named alone).
runs=()
want=$BROKER
[ "$want" = both ] && want="redis nats"
for b in $want; do
  case $b in
    local) runs+=(local); continue ;;
    redis) srv=redis-server ;;
    nats) srv=nats-server ;;
    *) say "scale: SCALE_BROKER=$BROKER: redis, nats, both or local"; exit 2 ;;
  esac
  if [[ "$BRIDGES" != *" $b "* ]]; then
    say "scale: $b: bridge not built (src/ws_$b.c absent)"
  elif ! command -v $srv >/dev/null 2>&1; then
    say "scale: $b: $srv not installed"
  else
    runs+=("$b"); continue
  fi
  [ "$BROKER" = both ] || exit 2
done
if [ ${#runs[@]} = 0 ]; then
  say "scale: no broker run possible: --local instead (a broadcast reaches each process's own connections; every process is told to publish)"
  runs=(local)
  [ $smoke = 1 ] && [ -z "${SCALE_PROCS:-}" ] && PROCS=1
fi

mkdir -p "$OUT"
HG=$BIN/holdgen

# Waits (at most $2 s) until TCP port $1 on 127.0.0.1 accepts.
wait_port() {
  local end=$(( $(date +%s) + $2 ))
  while [ "$(date +%s)" -le $end ]; do
    (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0
    sleep 0.05
  done
  return 1
}

# Sums utime+stime (clock ticks) of the given PIDs.
cpu_ticks() {
  local p s=0 t
  for p in "$@"; do
    t=$(awk '{ sub(/^.*\) /, ""); print $12 + $13 }' /proc/"$p"/stat 2>/dev/null)
    s=$(( s + ${t:-0} ))
  done
  echo $s
}

# Sums a smaps_rollup field (kB) over the given PIDs.
smaps_kb() {
  local f=$1 p s=0 v
  shift
  for p in "$@"; do
    v=$(awk -v f="$f:" '$1 == f {print $2}' /proc/"$p"/smaps_rollup 2>/dev/null)
    s=$(( s + ${v:-0} ))
  done
  echo $s
}

slab_kb() { awk '/^Slab:/ {print $2}' /proc/meminfo; }
tcp_sockstat() { sed -n 's/^TCP: //p' /proc/net/sockstat; }
# Connection tracking, when the kernel tracks loopback connections at all
# (a table of nf_conntrack_max entries would refuse connections past it).
conntrack() {
  [ -r /proc/sys/net/netfilter/nf_conntrack_count ] || { echo "not loaded"; return; }
  echo "$(cat /proc/sys/net/netfilter/nf_conntrack_count) tracked of nf_conntrack_max $(cat /proc/sys/net/netfilter/nf_conntrack_max)"
}

# The sum of one key=value field over stats lines on stdin.
field_sum() { awk -v k="$1" '{ for (i = 1; i <= NF; i++) if (index($i, k "=") == 1) s += substr($i, length(k) + 2) } END { printf "%d\n", s }'; }

CLK=$(getconf CLK_TCK)
summary=()

run_one() {
  local mode=$1 dir=$OUT/$1 port bport="" url="" bpid="" i g t0 t1 deadline
  local spids=() admins=() gpids=() n_conn
  rm -rf "$dir"; mkdir -p "$dir"
  say ""
  say "== $mode: $CONNS connections over $PROCS processes"
  port=$($HG freeport)
  local budget=$(( 120 + CONNS / 2000 + IDLE + NB * 35 + HOLD ))
  case $mode in
    redis)
      bport=$($HG freeport)
      redis-server --port "$bport" --bind 127.0.0.1 --save "" --appendonly no \
        --protected-mode no > "$dir/broker.log" 2>&1 &
      bpid=$!; PIDS+=("$bpid"); url="redis://127.0.0.1:$bport" ;;
    nats)
      bport=$($HG freeport)
      nats-server -a 127.0.0.1 -p "$bport" > "$dir/broker.log" 2>&1 &
      bpid=$!; PIDS+=("$bpid"); url="nats://127.0.0.1:$bport" ;;
  esac
  if [ -n "$bpid" ] && ! wait_port "$bport" 10; then
    say "$mode: the broker did not start (see $dir/broker.log)"; fail=1; return
  fi
  for i in $(seq "$PROCS"); do
    if [ "$mode" = local ]; then
      "$BIN/scale_server" -p "$port" -s "$SIZE" --timeout "$budget" --local > "$dir/server.$i.log" 2>&1 &
    else
      "$BIN/scale_server" -p "$port" -s "$SIZE" --timeout "$budget" --"$mode" "$url" > "$dir/server.$i.log" 2>&1 &
    fi
    spids+=($!); PIDS+=($!)
  done
  deadline=$(( $(date +%s) + 15 ))
  for i in $(seq "$PROCS"); do
    while ! grep -q '^ready ' "$dir/server.$i.log" 2>/dev/null; do
      if [ "$(date +%s)" -gt $deadline ] || ! kill -0 "${spids[$((i - 1))]}" 2>/dev/null; then
        say "$mode: server $i did not start:"; cat "$dir/server.$i.log"; fail=1; return
      fi
      sleep 0.05
    done
    admins+=("$(sed -n 's/^ready .*admin=\([0-9]*\).*/\1/p' "$dir/server.$i.log")")
  done
  local all_admin one_admin
  all_admin=$(IFS=,; echo "${admins[*]}")
  one_admin=${admins[0]}
  sleep 0.5   # the bridges link up with the broker
  local slab0 rss0 pss0
  slab0=$(slab_kb); rss0=$(smaps_kb Rss "${spids[@]}"); pss0=$(smaps_kb Pss "${spids[@]}")

  # ---- connect --------------------------------------------------------
  t0=$(now)
  for g in $(seq 0 $(( GENS - 1 ))); do
    local n=$(( CONNS / GENS + (g < CONNS % GENS ? 1 : 0) ))
    local src="127.$(( 1 + g / 64 )).$(( (g % 64) * 4 )).1"
    "$HG" hold -p "$port" -n "$n" --src "$src" --nsrc "$NSRC" -s "$SIZE" \
      --connect-timeout $(( 60 + CONNS / 2000 )) --timeout "$budget" \
      > "$dir/gen.$g.log" 2> "$dir/gen.$g.err" &
    gpids+=($!); PIDS+=($!)
  done
  deadline=$(( $(date +%s) + 90 + CONNS / 2000 ))
  while [ "$(cat "$dir"/gen.*.log 2>/dev/null | grep -c '^connected ')" -lt "$GENS" ]; do
    if [ "$(date +%s)" -gt $deadline ]; then say "$mode: connecting timed out"; fail=1; break; fi
    for i in "${gpids[@]}"; do kill -0 "$i" 2>/dev/null || { say "$mode: a load generator died"; fail=1; break 2; }; done
    sleep 0.1
  done
  t1=$(now)
  n_conn=$(cat "$dir"/gen.*.log | sed -n 's/^connected n=\([0-9]*\).*/\1/p' | awk '{s += $1} END {print s + 0}')
  local conn_s rate
  conn_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f", b - a}')
  rate=$(awk -v n="$n_conn" -v s="$conn_s" 'BEGIN {printf "%.0f", (s > 0 ? n / s : 0)}')
  say "connect: $n_conn of $CONNS open in $conn_s s ($rate per s)"
  [ "$n_conn" = "$CONNS" ] || fail=1
  local held_t0; held_t0=$(now)

  # ---- memory, after the opens have settled ------------------------------
  nap 2
  local slab1 rss1 pss1
  slab1=$(slab_kb); rss1=$(smaps_kb Rss "${spids[@]}"); pss1=$(smaps_kb Pss "${spids[@]}")
  local kper uper_rss uper_pss drss
  kper=$(( (slab1 - slab0) * 1024 / (n_conn > 0 ? n_conn : 1) ))
  uper_rss=$(( rss1 * 1024 / (n_conn > 0 ? n_conn : 1) ))
  uper_pss=$(( pss1 * 1024 / (n_conn > 0 ? n_conn : 1) ))
  drss=$(( (rss1 - rss0) * 1024 / (n_conn > 0 ? n_conn : 1) ))
  say "kernel TCP (sockstat, mem in pages): $(tcp_sockstat); tcp_mem $(cat /proc/sys/net/ipv4/tcp_mem); conntrack: $(conntrack)"
  say "memory: ws servers RSS $rss0 -> $rss1 kB, PSS $pss0 -> $pss1 kB: $uper_rss B/conn RSS ($drss B/conn over the processes' start), $uper_pss B/conn PSS; kernel Slab +$(( slab1 - slab0 )) kB: $kper B/conn (both ends of the loopback pair)"

  # ---- idle: the pings ---------------------------------------------------
  local c0 c1 tu0 tu1 w0 w1 idle_cpu turns_s
  c0=$(cpu_ticks "${spids[@]}"); w0=$(now)
  tu0=$("$HG" admin -P "$all_admin" stats | field_sum turns)
  nap "$IDLE"
  c1=$(cpu_ticks "${spids[@]}"); w1=$(now)
  tu1=$("$HG" admin -P "$all_admin" stats | field_sum turns)
  idle_cpu=$(awk -v a="$c0" -v b="$c1" -v s0="$w0" -v s1="$w1" -v k="$CLK" 'BEGIN {printf "%.4f", (b - a) / k / (s1 - s0)}')
  turns_s=$(awk -v a="$tu0" -v b="$tu1" -v s0="$w0" -v s1="$w1" 'BEGIN {printf "%.1f", (b - a) / (s1 - s0)}')
  say "idle: $IDLE s: ws servers' CPU $idle_cpu s/s (pings every 30 s: $(( n_conn / 30 )) per s expected), $turns_s loop turns/s over $PROCS processes ($(awk -v t="$turns_s" -v p="$PROCS" 'BEGIN {printf "%.1f", t / p}') per process)"

  # ---- broadcasts ----------------------------------------------------------
  local b_admin=$one_admin s got bc0 bc1 bw0 bw1 bdead
  [ "$mode" = local ] && b_admin=$all_admin
  bc0=$(cpu_ticks "${spids[@]}"); bw0=$(now)
  local bbc0=0; [ -n "$bpid" ] && bbc0=$(cpu_ticks "$bpid")
  for s in $(seq "$NB"); do
    if ! "$HG" admin -P "$b_admin" "publish $s @now" > "$dir/publish.$s.log" 2>&1; then
      say "$mode: publish $s failed: $(cat "$dir/publish.$s.log")"; fail=1; break
    fi
    bdead=$(( $(date +%s) + 30 ))
    while :; do
      got=$(cat "$dir"/gen.*.log | grep -c "^GOT seq=$s ")
      [ "$got" -ge "$GENS" ] && break
      if [ "$(date +%s)" -gt $bdead ]; then say "$mode: broadcast $s reached $got of $GENS generators' connections in 30 s"; fail=1; break; fi
      sleep 0.02
    done
    sleep 0.1
  done
  bc1=$(cpu_ticks "${spids[@]}"); bw1=$(now)
  say "kernel TCP after the broadcasts: $(tcp_sockstat)"
  local bbc1=0; [ -n "$bpid" ] && bbc1=$(cpu_ticks "$bpid")

  # ---- hold to the end, then the generators' reports -----------------------
  local left
  left=$(awk -v a="$held_t0" -v b="$(now)" -v h="$HOLD" 'BEGIN {l = h - (b - a); printf "%.2f", (l > 0 ? l : 0)}')
  nap "$left"
  local stats_end held_srv
  stats_end=$("$HG" admin -P "$all_admin" stats)
  held_srv=$(printf '%s\n' "$stats_end" | field_sum conns)
  local spread
  spread=$(printf '%s\n' "$stats_end" | awk '{for (i = 1; i <= NF; i++) if ($i ~ /^conns=/) {v = substr($i, 7) + 0; if (!n++ || v < lo) lo = v; if (v > hi) hi = v}} END {printf "%d to %d", lo, hi}')
  [ "$mode" = local ] || say "bridges: $(printf '%s\n' "$stats_end" | field_sum links) links made by $PROCS, $(printf '%s\n' "$stats_end" | field_sum link_failures) lost or failed; publishes lost while a link was down $(printf '%s\n' "$stats_end" | field_sum lost_down), over the queue $(printf '%s\n' "$stats_end" | field_sum lost_full); junk $(printf '%s\n' "$stats_end" | field_sum junk)"
  local held_s
  held_s=$(awk -v a="$held_t0" -v b="$(now)" 'BEGIN {printf "%.0f", b - a}')
  for i in "${gpids[@]}"; do kill -USR1 "$i" 2>/dev/null; done
  deadline=$(( $(date +%s) + 30 ))
  for i in "${gpids[@]}"; do
    while kill -0 "$i" 2>/dev/null && [ "$(date +%s)" -le $deadline ]; do sleep 0.05; done
    wait "$i" || fail=1
  done
  cat "$dir"/gen.*.err | head -20
  local rep open dropped errors deliv pings gen_cpu
  rep=$(cat "$dir"/gen.*.log | grep '^REPORT ')
  open=$(printf '%s\n' "$rep" | field_sum open)
  dropped=$(printf '%s\n' "$rep" | field_sum dropped)
  errors=$(printf '%s\n' "$rep" | field_sum errors)
  deliv=$(printf '%s\n' "$rep" | field_sum deliveries)
  pings=$(printf '%s\n' "$rep" | field_sum pings)
  gen_cpu=$(printf '%s\n' "$rep" | awk '{for (i = 1; i <= NF; i++) if ($i ~ /^cpu_s=/) s += substr($i, 7)} END {printf "%.1f", s}')
  [ "$open" = "$CONNS" ] && [ "$dropped" = 0 ] && [ "$errors" = 0 ] || fail=1
  # per broadcast: deliveries, and the time to reach the last connection
  local per_seq p50 p99 dp50 dp99 incomplete
  per_seq=$(cat "$dir"/gen.*.log | grep '^SEQ ' | awk '{
      split($2, a, "="); split($3, b, "="); split($4, c, "=");
      n[a[2]] += b[2]; if (c[2] > m[a[2]]) m[a[2]] = c[2] }
    END { for (s in n) print s, n[s], m[s] }' | sort -n)
  incomplete=$(( NB - $(printf '%s\n' "$per_seq" | awk -v want="$CONNS" 'NF && $2 == want' | wc -l) ))
  [ "$incomplete" = 0 ] || fail=1
  read -r p50 p99 < <(printf '%s\n' "$per_seq" | awk 'NF {print $3}' | sort -n | awk '
    {v[NR] = $1} END { if (!NR) {print "0 0"; exit}
      i50 = int(0.5 * (NR - 1) + 0.5) + 1; i99 = int(0.99 * (NR - 1) + 0.5) + 1;
      printf "%.1f %.1f\n", v[i50] / 1000, v[i99] / 1000 }')
  read -r dp50 dp99 < <(cat "$dir"/gen.*.log | grep '^HIST ' | awk '{
      split($2, a, "="); split($3, b, "="); h[a[2]] += b[2]; t += b[2] }
    END { for (k in h) print k, h[k] }' | sort -n | awk '
    {u[NR] = $1; c[NR] = $2; t += $2} END { if (!t) {print "0 0"; exit}
      for (i = 1; i <= NR; i++) { s += c[i];
        if (!a && s >= 0.5 * t) a = u[i]; if (!b && s >= 0.99 * t) b = u[i] }
      printf "%.2f %.2f\n", a / 1000, b / 1000 }')
  local bcpu bel cpu_del bcpu_broker
  bel=$(awk -v a="$bw0" -v b="$bw1" 'BEGIN {printf "%.2f", b - a}')
  bcpu=$(awk -v a="$bc0" -v b="$bc1" -v k="$CLK" 'BEGIN {printf "%.2f", (b - a) / k}')
  cpu_del=$(awk -v c="$bcpu" -v i="$idle_cpu" -v e="$bel" -v n="$deliv" 'BEGIN {x = c - i * e; if (x < 0) x = 0; printf "%.0f", (n > 0 ? x * 1e9 / n : 0)}')
  bcpu_broker=$(awk -v a="$bbc0" -v b="$bbc1" -v k="$CLK" 'BEGIN {printf "%.2f", (b - a) / k}')
  say "broadcast: $NB of $SIZE bytes, $deliv deliveries ($incomplete of $NB did not reach every connection); time to reach every connection p50 $p50 ms p99 $p99 ms; one delivery's latency p50 $dp50 ms p99 $dp99 ms"
  say "broadcast CPU: ws servers $bcpu s in $bel s, $cpu_del ns per delivery over the idle rate$( [ -n "$bpid" ] && echo "; broker $bcpu_broker s")"
  say "held: $open of $CONNS open after $held_s s (servers count $held_srv, $spread per process), $dropped dropped, $errors errors, $pings pings answered; load generators' CPU $gen_cpu s"
  local line="scale: $open connections held for $held_s s, broadcast p50 $p50 ms p99 $p99 ms, user $uper_rss bytes/conn, kernel $kper bytes/conn"
  summary+=("[$mode] $CONNS conns, $PROCS procs: connect $rate/s, RSS $uper_rss B/conn, PSS $uper_pss B/conn, kernel $kper B/conn, idle CPU $idle_cpu s/s, $turns_s turns/s, bcast all p50 $p50 p99 $p99 ms, $cpu_del ns CPU/delivery" "$line")
  say "$line"
  cleanup
}

for r in "${runs[@]}"; do run_one "$r"; done
say ""
say "== summary ($(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, $(uname -r))"
for l in "${summary[@]}"; do say "$l"; done
[ $fail = 0 ] || say "scale: FAILED (see above and $OUT)"
exit $fail
