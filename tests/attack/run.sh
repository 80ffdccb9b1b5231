#!/usr/bin/env bash
# tests/attack/run.sh - `make attack` and `make attack-smoke` (a benchmark,
# not a timed test): build/echo_server with the library's defaults under
# one attack at a time, 100 honest echo clients beside it, one table row
# per attack. See tests/attack/README.
#
#   ATTACK_CONNS=N      hostile connections per attack (5000; smoke 100)
#   ATTACK_HS_CONNS=N   slow handshakes (10000; smoke 200)
#   ATTACK_HONEST=N     honest echo clients (100; smoke 20)
#   ATTACK_SECS=S       seconds each attack lasts (20; smoke 4)
#   ATTACK_BASE_SECS=S  seconds of the no-attack measurement (10; smoke 3)
#   ATTACK_ROWS="..."   which attacks, in order (all six)
#   ATTACK_BUDGET=B     --mem-budget B for the server (bytes; unset: the
#                       server's default; smoke: 64 MiB), when the server
#                       has that option
#   ATTACK_RSS_CAP_MB=M the server is killed past this RSS, a guard for the
#                       machine (min(8192, MemAvailable / 2); smoke 1024)
# Environment from the Makefile: BUILD.
# Exit status: 0 when after every attack the server was alive and
# answered, and no honest client was closed (and, in the full run, every
# peak RSS was within the budget plus the overhead); else 1 (2: refused to
# start, e.g. too little memory).
set -u
smoke=0
[ "${1:-}" = --smoke ] && smoke=1
BUILD=${BUILD:-build}
AG=$BUILD/attack/attackgen
SRV=$BUILD/echo_server
OUT=$BUILD/attack/run
if [ $smoke = 1 ]; then
  CONNS=${ATTACK_CONNS:-100}; HS_CONNS=${ATTACK_HS_CONNS:-200}; HONEST=${ATTACK_HONEST:-20}
  SECS=${ATTACK_SECS:-4}; BASE_SECS=${ATTACK_BASE_SECS:-3}; BUDGET=${ATTACK_BUDGET:-67108864}
  cap_max=1024
else
  CONNS=${ATTACK_CONNS:-5000}; HS_CONNS=${ATTACK_HS_CONNS:-10000}; HONEST=${ATTACK_HONEST:-100}
  SECS=${ATTACK_SECS:-20}; BASE_SECS=${ATTACK_BASE_SECS:-10}; BUDGET=${ATTACK_BUDGET:-}
  cap_max=8192
fi
ROWS=${ATTACK_ROWS:-slow-reader unfinished ping-flood slow-handshake fragment-flood mix}
DEFAULT_BUDGET=$(( 256 << 20 ))   # the library's documented default

say() { printf '%s\n' "$*"; }
# A sleep that a signal cuts short (bash runs a trap only between commands).
NAP=
nap() { sleep "$1" & NAP=$!; wait $NAP; NAP=; }
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
trap 'say "attack: interrupted"; exit 1' INT TERM

for b in "$AG" "$SRV"; do
  [ -x "$b" ] || { say "attack: $b missing (make attack builds it)"; exit 2; }
done

# ---- the machine: what it allows, said rather than changed ---------------
nofile=$(ulimit -Hn)
[ "$nofile" = unlimited ] && nofile=1048576
soft=$(ulimit -Sn)
[ "$soft" = unlimited ] && soft=$nofile
mem_avail=$(awk '/^MemAvailable:/ {print $2}' /proc/meminfo)
read -r _ _ tcp_mem_max < /proc/sys/net/ipv4/tcp_mem
page_kb=$(( $(getconf PAGESIZE) / 1024 ))
tcp_max_mb=$(( tcp_mem_max * page_kb / 1024 ))
CAP_MB=${ATTACK_RSS_CAP_MB:-$(( mem_avail / 2048 < cap_max ? mem_avail / 2048 : cap_max ))}
most=$(( HS_CONNS > CONNS ? HS_CONNS : CONNS ))
need_fd=$(( most + HONEST + 64 ))
say "attack: $CONNS hostile connections per attack ($HS_CONNS slow handshakes), $HONEST honest echo clients, $SECS s each; rows: $ROWS"
say "machine: $(nproc) cores, $(( $(awk '/^MemTotal:/ {print $2}' /proc/meminfo) / 1024 )) MiB, MemAvailable $(( mem_avail / 1024 )) MiB, kernel $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg)"
say "limits: RLIMIT_NOFILE $soft soft / $nofile hard (not raised past the hard limit; the server and attackgen take the hard one), somaxconn $(cat /proc/sys/net/core/somaxconn), tcp_mem max $tcp_max_mb MiB (the kernel's socket buffers, on top of the server's RSS), ip_local_port_range $(tr '\t' - < /proc/sys/net/ipv4/ip_local_port_range) per source address"
say "guard: the server is killed if its RSS passes $CAP_MB MiB (ATTACK_RSS_CAP_MB); that row then fails"
# the server up to the guard, the kernel's socket buffers (up to tcp_mem;
# about 900 MiB seen with 100 flooding connections, more with thousands:
# 2 GiB counted at most), and 512 MiB for the tools and the rest
tcp_need=$(( tcp_max_mb < 2048 ? tcp_max_mb : 2048 ))
need_kb=$(( (CAP_MB + tcp_need + 512) * 1024 ))
if [ "$mem_avail" -lt "$need_kb" ]; then
  say "attack: refused: needs about $(( need_kb / 1024 )) MiB ($CAP_MB for the guard, $tcp_need for the kernel's socket buffers, 512), MemAvailable is $(( mem_avail / 1024 )) MiB"
  exit 2
fi
if [ "$nofile" -lt "$need_fd" ]; then
  say "attack: refused: RLIMIT_NOFILE $nofile is below the $need_fd descriptors the server needs (lower ATTACK_HS_CONNS)"
  exit 2
fi

# The server's options: --mem-budget when asked for and when it has it.
SRV_ARGS=()
if [ -n "$BUDGET" ]; then
  # the option's name is in the binary when it has the option
  if grep -aq -- --mem-budget "$SRV"; then
    SRV_ARGS=(--mem-budget "$BUDGET")
  else
    say "attack: this echo_server has no --mem-budget: its defaults are measured"
    BUDGET=
  fi
fi
say "server: $SRV ${SRV_ARGS[*]:-(defaults)}"

rm -rf "$OUT"; mkdir -p "$OUT"

SPID=; SPORT=
# Starts a fresh server; sets SPID and SPORT. Its soft descriptor limit is
# raised to the hard one (what any server's start-up does).
start_server() {
  local log=$1 deadline
  bash -c 'ulimit -Sn "$(ulimit -Hn)"; exec "$@"' _ "$SRV" -p 0 "${SRV_ARGS[@]}" > "$log" 2>&1 &
  SPID=$!; PIDS+=("$SPID")
  deadline=$(( $(date +%s) + 10 ))
  while ! grep -q 'listening on' "$log" 2>/dev/null; do
    if [ "$(date +%s)" -gt $deadline ] || ! kill -0 "$SPID" 2>/dev/null; then
      say "attack: the server did not start:"; cat "$log"; return 1
    fi
    sleep 0.05
  done
  SPORT=$(sed -n 's/.*127\.0\.0\.1:\([0-9]*\).*/\1/p' "$log" | head -1)
}

# Ends one process started here, and forgets it: a PID the kernel may
# give to another process later is never signalled.
stop_pid() {
  local p=$1 q keep=()
  kill -TERM "$p" 2>/dev/null
  for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$p" 2>/dev/null
  wait "$p" 2>/dev/null
  for q in "${PIDS[@]}"; do [ "$q" = "$p" ] || keep+=("$q"); done
  PIDS=("${keep[@]}")
}

status_kb() { awk -v f="$2:" '$1 == f {print $2}' /proc/"$1"/status 2>/dev/null; }
tcp_pages() { awk '/^TCP:/ {for (i = 1; i < NF; i++) if ($i == "mem") print $(i + 1)}' /proc/net/sockstat; }
mib() { awk -v k="$1" 'BEGIN {printf "%.0f", k / 1024}'; }

# Waits (at most $3 s) until file $1 has a line starting with $2.
wait_line() {
  local end=$(( $(date +%s) + $3 ))
  while ! grep -q "^$2" "$1" 2>/dev/null; do
    [ "$(date +%s)" -le $end ] || return 1
    sleep 0.05
  done
}

field() { sed -n "s/.*[ {,\"]$1\"\{0,1\}[=:]\([0-9]*\).*/\1/p" | head -1; }

# ---- the honest clients with no attack -----------------------------------
say ""
say "== no attack: $HONEST honest clients, $BASE_SECS s"
start_server "$OUT/base.server.log" || exit 1
"$AG" honest -p "$SPORT" -n "$HONEST" -d "$BASE_SECS" > "$OUT/base.honest.log" 2>&1
base_rc=$?
cat "$OUT/base.honest.log" | grep -v '^connected'
B50=$(field p50_us < "$OUT/base.honest.log"); B99=$(field p99_us < "$OUT/base.honest.log")
stop_pid "$SPID"
if [ $base_rc != 0 ] || [ -z "$B99" ]; then
  say "attack: the honest clients failed with no attack"; exit 1
fi
[ "$B99" -gt 0 ] || B99=1

# ---- the fixed overhead: the server holding the connections at rest -----
# What the budget does not count: each connection's own structure, the
# kernel's view of it, the loop's tables, the program. Measured as the peak
# RSS of a server that opened as many connections as the largest row
# (slow handshakes, plus the honest clients) and holds them idle.
say ""
idle_n=$(( most + HONEST ))
say "== overhead: $idle_n idle connections"
start_server "$OUT/idle.server.log" || exit 1
"$AG" attack -p "$SPORT" -m idle -n "$idle_n" -d 60 > "$OUT/idle.attack.log" 2>&1 &
ipid=$!; PIDS+=("$ipid")
wait_line "$OUT/idle.attack.log" connected 40 || say "attack: the idle connections did not all open"
nap 1
idle_hwm=$(status_kb "$SPID" VmHWM); idle_rss=$(status_kb "$SPID" VmRSS)
stop_pid "$ipid"; stop_pid "$SPID"
grep -E '^(connected|END)' "$OUT/idle.attack.log"
# the allocator's slack on top: 16 MiB (freed memory glibc keeps mapped,
# arenas); fixed, the same for every row
OVER_KB=$(( idle_hwm + 16384 ))
say "server at rest with $idle_n connections: VmHWM $(mib "$idle_hwm") MiB, VmRSS $(mib "$idle_rss") MiB; overhead allowed: $(mib "$OVER_KB") MiB (that peak + 16 MiB for the allocator)"

# ---- one row per attack --------------------------------------------------
ROWS_OUT=()
row() {
  local name=$1 n=$CONNS dir=$OUT/$1 hpid apid peak=0 hwm cap_kb killed=0 tcp tcp_peak=0
  local deadline stats budget budget_s alive answers hrep h50 h99 hclosed hopen ended within goal sent v
  local ctl_pid ctl_port cpid crep c50 c99
  [ "$name" = slow-handshake ] && n=$HS_CONNS
  mkdir -p "$dir"
  say ""
  say "== $name: $n hostile connections, $SECS s"
  # The control: a second server that nobody attacks, with as many honest
  # clients of its own, at the same time on the same machine. What the
  # machine's load costs its clients, the attacked server's clients pay
  # too; the difference is the attacked server's.
  start_server "$dir/control.server.log" || { fail=1; ROWS_OUT+=("$(printf '%-15s control server did not start' "$name")"); return; }
  ctl_pid=$SPID; ctl_port=$SPORT
  start_server "$dir/server.log" || { fail=1; ROWS_OUT+=("$(printf '%-15s server did not start' "$name")"); return; }
  "$AG" honest -p "$SPORT" -n "$HONEST" -d "$SECS" > "$dir/honest.log" 2>&1 &
  hpid=$!; PIDS+=("$hpid")
  "$AG" honest -p "$ctl_port" -n "$HONEST" -d "$SECS" > "$dir/control.log" 2>&1 &
  cpid=$!; PIDS+=("$cpid")
  wait_line "$dir/honest.log" connected 15 || say "$name: the honest clients did not connect"
  # the attacker yields the CPU to the server and the honest clients: on a
  # real network it would be on machines of its own
  nice -n 10 "$AG" attack -p "$SPORT" -m "$name" -n "$n" -d "$SECS" > "$dir/attack.log" 2> "$dir/attack.err" &
  apid=$!; PIDS+=("$apid")
  cap_kb=$(( CAP_MB * 1024 ))
  deadline=$(( $(date +%s) + SECS + 30 ))
  while kill -0 "$apid" 2>/dev/null || kill -0 "$hpid" 2>/dev/null || kill -0 "$cpid" 2>/dev/null; do
    hwm=$(status_kb "$SPID" VmHWM)
    [ -n "$hwm" ] && peak=$hwm
    tcp=$(tcp_pages); [ "${tcp:-0}" -gt $tcp_peak ] && tcp_peak=$tcp
    if [ "${hwm:-0}" -gt "$cap_kb" ]; then
      say "$name: the server's RSS passed $CAP_MB MiB: killed (the guard)"
      kill -KILL "$SPID" 2>/dev/null; killed=1; break
    fi
    [ "$(date +%s)" -le $deadline ] || { say "$name: the tools did not end in time"; break; }
    sleep 0.2
  done
  stop_pid "$apid"; stop_pid "$hpid"; stop_pid "$cpid"; stop_pid "$ctl_pid"
  hwm=$(status_kb "$SPID" VmHWM); [ -n "$hwm" ] && peak=$hwm
  grep -E '^(connected|REPORT|END|DONE)' "$dir/attack.log"
  head -5 "$dir/attack.err"
  grep -v '^connected' "$dir/honest.log" | head -12
  # after the attack: is the server alive, and does it answer?
  alive=no; answers=no
  if [ $killed = 0 ] && kill -0 "$SPID" 2>/dev/null; then
    alive=yes
    # a new client, three tries a second apart: memory the attack held may
    # still be on its way out (a server above its budget refuses with 503)
    for _ in 1 2 3; do
      "$AG" honest -p "$SPORT" -n 1 -d 1 --interval-ms 100 >> "$dir/after.log" 2>&1 && { answers=yes; break; }
      sleep 1
    done
  fi
  [ $killed = 1 ] && alive="killed by the guard"
  stats="n/a"
  [ "$alive" = yes ] && stats=$("$AG" stats -p "$SPORT")
  say "stats: $stats"
  stop_pid "$SPID"
  budget=$(printf '%s\n' "$stats" | field mem_budget)
  [ -n "$budget" ] || budget=${BUDGET:-$DEFAULT_BUDGET}
  budget_s="$(( budget >> 20 ))"
  [ -z "$(printf '%s\n' "$stats" | field mem_budget)" ] && [ -z "$BUDGET" ] && budget_s="($budget_s)"
  within=no
  [ "$peak" -le $(( budget / 1024 + OVER_KB )) ] && within=yes
  ended=$(grep '^END ' "$dir/attack.log" | awk '{
      split($3, w, "="); split($4, c, "="); n[w[2]] += c[2] }
    END { for (k in n) printf "%s %d\n", k, n[k] }' | sort -k2,2nr | awk '{printf "%s%s=%d", (NR > 1 ? " " : ""), $1, $2}')
  sent=$(grep '^REPORT ' "$dir/attack.log" | awk '{split($4, s, "="); t += s[2]} END {printf "%.0f", t}')
  hrep=$(grep '^HONEST ' "$dir/honest.log")
  h50=$(printf '%s\n' "$hrep" | field p50_us); h99=$(printf '%s\n' "$hrep" | field p99_us)
  hclosed=$(printf '%s\n' "$hrep" | field closed)
  hopen=$(printf '%s\n' "$hrep" | field open)
  crep=$(grep '^HONEST ' "$dir/control.log")
  say "control (unattacked server, same time): ${crep:-none}"
  c50=$(printf '%s\n' "$crep" | field p50_us); c99=$(printf '%s\n' "$crep" | field p99_us)
  [ "${c50:-0}" -gt 0 ] || c50=1; [ "${c99:-0}" -gt 0 ] || c99=1
  [ -n "$hclosed" ] || hclosed="?"
  # the server's own account, when it gives one
  local srvc="n/a" f
  if [ -n "$(printf '%s\n' "$stats" | field mem_budget)" ]; then
    srvc=""
    for f in failed_budget_1009 failed_budget_1013 failed_slow_reader refused_503 failed_too_big failed_protocol failed_timeout; do
      v=$(printf '%s\n' "$stats" | field $f)
      [ "${v:-0}" = 0 ] || srvc="$srvc ${f#failed_}=$v"
    done
    srvc="${srvc# }${srvc:+; }held peak $(( $(printf '%s\n' "$stats" | field held_peak) >> 20 )) MiB"
  fi
  goal=missed
  [ -n "$h99" ] && [ "$h99" -le $(( 3 * B99 )) ] && goal=met
  say "$name: peak RSS $(mib "$peak") MiB (budget $budget_s MiB + overhead $(mib "$OVER_KB") MiB: $within), kernel TCP buffers peak $(( tcp_peak * page_kb / 1024 )) MiB (all sockets of the machine), attacker sent $sent MB; server alive $alive, answers $answers"
  [ "$alive" = yes ] && [ "$answers" = yes ] || fail=1
  [ "$hclosed" = 0 ] && [ "${hopen:-0}" = "$HONEST" ] || fail=1
  [ $smoke = 1 ] || [ $within = yes ] || fail=1
  ROWS_OUT+=("$(printf '| %s | %d | %s | %s + %s | %s | %s | %s | %s / %s (%sx / %sx) | %s | %s / %s (%sx / %sx) | %s | %s |' \
    "$name" "$n" "$(mib "$peak")" "$budget_s" "$(mib "$OVER_KB")" "$within" "${ended:-?}" "$srvc" \
    "$(awk -v v="${h50:-0}" 'BEGIN {printf "%.2f", v / 1000}')" \
    "$(awk -v v="${h99:-0}" 'BEGIN {printf "%.2f", v / 1000}')" \
    "$(awk -v v="${h50:-0}" -v b="$B50" 'BEGIN {printf "%.1f", (b > 0 ? v / b : 0)}')" \
    "$(awk -v v="${h99:-0}" -v b="$B99" 'BEGIN {printf "%.1f", v / b}')" \
    "$goal" \
    "$(awk -v v="$c50" 'BEGIN {printf "%.2f", v / 1000}')" \
    "$(awk -v v="$c99" 'BEGIN {printf "%.2f", v / 1000}')" \
    "$(awk -v v="${h50:-0}" -v b="$c50" 'BEGIN {printf "%.1f", v / b}')" \
    "$(awk -v v="${h99:-0}" -v b="$c99" 'BEGIN {printf "%.1f", v / b}')" \
    "$hclosed" "$alive$( [ "$alive" = yes ] && [ $answers = no ] && echo ', no answer')")")
}

for r in $ROWS; do row "$r"; done

say ""
say "== attack table ($(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, $(uname -r); server: echo_server ${SRV_ARGS[*]:-with its defaults})"
say "no attack: $HONEST honest clients, p50 $(awk -v v="$B50" 'BEGIN {printf "%.2f", v / 1000}') ms, p99 $(awk -v v="$B99" 'BEGIN {printf "%.2f", v / 1000}') ms (3x goal: p99 <= $(awk -v v="$B99" 'BEGIN {printf "%.2f", 3 * v / 1000}') ms)"
say "| attack | hostile | peak RSS MiB | budget + overhead MiB | within | hostile connections ended (as attackgen saw them) | server's count (/stats) | honest p50 / p99 ms (x no attack) | p99 3x goal | control p50 / p99 ms (honest x control) | honest closed | server after |"
say "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
for l in "${ROWS_OUT[@]}"; do say "$l"; done
say "(control: a second server, not attacked, with $HONEST honest clients of its own at the same time: what the machine's load alone costs)"
say "(budget in parentheses: the server did not say its budget (/stats n/a); the library's documented default is shown)"
[ $fail = 0 ] || say "attack: FAILED (see above and $OUT)"
exit $fail
