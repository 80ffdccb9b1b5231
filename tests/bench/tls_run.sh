#!/usr/bin/env bash
# tests/bench/tls_run.sh - what wss:// costs, written to build/bench/tls_report.md
# (make bench-tls; see docs/tls.md):
#  - server RSS per idle upgraded wss:// connection (N held open), and per
#    ws:// connection with the same client, for the difference;
#  - handshakes per second, C at once, connect + TLS handshake + upgrade +
#    close, against connect + upgrade + close on ws:// in the same run
#    (rounds interleaved), and server CPU per handshake;
#  - the size of ws.o with and without WS_ENABLE_MBEDTLS (-O2 and -Os).
#
#   bash tests/bench/tls_run.sh [--smoke] [--rounds N] [--secs S] [--conc C]
#                               [--idle "1000 2000"]
# TLS_SERVER=path picks another echo_server binary (same flags), e.g. one
# linked against another mbedTLS; TLSBENCH=path another tlsbench. The
# server runs on CPU 0, tlsbench on CPU 1. Certificates (EC P-256) are made with openssl in a temporary
# directory. Every process started here is killed by PID; every run is
# bounded in time; traffic stays on 127.0.0.x.
set -u
cd "$(dirname "$0")/../.."
B=build/bench
ROUNDS=3 SECS=3 CONC=32 IDLE="1000 2000" SMOKE=0
SERVER=${TLS_SERVER:-build/echo_server}
TOOL=${TLSBENCH:-$B/tlsbench}
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) SMOKE=1 ;;
    --rounds) ROUNDS=$2; shift ;;
    --secs) SECS=$2; shift ;;
    --conc) CONC=$2; shift ;;
    --idle) IDLE=$2; shift ;;
    *) echo "usage: $0 [--smoke] [--rounds N] [--secs S] [--conc C] [--idle \"N ...\"]" >&2; exit 2 ;;
  esac
  shift
done
[ "$SMOKE" = 1 ] && ROUNDS=1 SECS=0.5 CONC=4 IDLE=50
for f in "$SERVER" "$TOOL" $B/loadgen; do
  [ -x "$f" ] || { echo "bench-tls: $f missing: make WS_TLS=1 bench-tls" >&2; exit 1; }
done
command -v openssl >/dev/null 2>&1 || { echo "bench-tls: openssl needed for certificates" >&2; exit 1; }

mkdir -p $B/logs
CERTS=$(mktemp -d /tmp/ws_tlsbench_XXXXXX)
RES=$B/tls_results.tsv
: > "$RES"
SPID=""
FAILED=0
RUN_NO=0
cleanup() {
  if [ -n "$SPID" ] && kill -0 "$SPID" 2>/dev/null; then
    kill "$SPID" 2>/dev/null; sleep 0.2; kill -9 "$SPID" 2>/dev/null
  fi
  wait 2>/dev/null
  rm -rf "$CERTS"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
PIN_S="taskset -c 0" PIN_L="taskset -c 1"
if ! command -v taskset >/dev/null 2>&1 || [ "$(nproc)" -lt 2 ]; then PIN_S="" PIN_L=""; fi

(cd "$CERTS" && K='openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256' &&
 printf '[req]\ndistinguished_name=dn\n[dn]\n[ca]\nbasicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign\n[srv]\nbasicConstraints=CA:FALSE\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n' > t.cnf &&
 $K -out ca.key && $K -out srv.key &&
 openssl req -x509 -new -key ca.key -subj /CN=bench-ca -days 2 -config t.cnf -extensions ca -out ca.pem &&
 openssl req -new -key srv.key -subj /CN=localhost -config t.cnf -out srv.csr &&
 openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -set_serial 2 -days 2 \
   -extfile t.cnf -extensions srv -out srv.pem) > $B/logs/tls-openssl.log 2>&1 ||
  { echo "bench-tls: openssl failed: $B/logs/tls-openssl.log" >&2; exit 1; }

# run KIND(tls|plain) TOOL-ARGS...: starts a server, runs tlsbench, stops it.
run() {
  local kind=$1 port log out rc extra=""
  shift
  port=$($B/loadgen freeport) || return 1
  RUN_NO=$((RUN_NO + 1))
  log=$B/logs/tls-$RUN_NO-$kind-$1
  if [ "$kind" = tls ]; then
    # shellcheck disable=SC2086
    $PIN_S "$SERVER" -p "$port" --cert "$CERTS/srv.pem" --key "$CERTS/srv.key" > "$log.server" 2>&1 &
  else
    # shellcheck disable=SC2086
    $PIN_S "$SERVER" -p "$port" > "$log.server" 2>&1 &
    extra=--plain
  fi
  SPID=$!
  if ! $B/loadgen wait -p "$port" 2>> "$log.server"; then
    echo "bench-tls: server did not start: $(tail -2 "$log.server")" >&2
    FAILED=$((FAILED + 1)); cleanup_server; return 1
  fi
  # shellcheck disable=SC2086
  out=$(timeout -k 5 300 $PIN_L "$TOOL" "$@" -p "$port" --pid "$SPID" $extra 2> "$log.tool")
  rc=$?
  if [ $rc -ne 0 ] || ! kill -0 "$SPID" 2>/dev/null; then
    echo "bench-tls: FAILED: $kind $* (exit $rc):" >&2
    tail -3 "$log.tool" "$log.server" >&2
    FAILED=$((FAILED + 1))
  else
    printf '%s\t%s\n' "$kind" "${out#RESULT }" >> "$RES"
    echo "  $(tail -1 "$log.tool")" >&2
  fi
  cleanup_server
}
cleanup_server() {
  kill "$SPID" 2>/dev/null
  for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$SPID" 2>/dev/null || break; sleep 0.2; done
  kill -9 "$SPID" 2>/dev/null
  wait "$SPID" 2>/dev/null
  SPID=""
}

START=$(date -u '+%Y-%m-%d %H:%M UTC')
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
echo "bench-tls: server $SERVER; idle $IDLE; $ROUNDS rounds of ${SECS}s handshakes, $CONC at once" >&2
# Idle first, before the handshake runs leave sockets in TIME_WAIT.
for n in $IDLE; do
  run tls idle -n "$n"
  run plain idle -n "$n"
done
for r in $(seq 1 "$ROUNDS"); do
  run tls handshake -c "$CONC" -d "$SECS"
  run plain handshake -c "$CONC" -d "$SECS"
done
LOAD1=$(cut -d' ' -f1-3 /proc/loadavg)

# Code size of the library object, with and without TLS.
SIZES=""
for opt in -O2 -Os; do
  for tls in 0 1; do
    cc -std=c99 $opt -Iinclude -DWS_ENABLE_MBEDTLS=$tls -c src/ws.c -o $B/ws-size.o 2>> $B/logs/tls-size.log || FAILED=$((FAILED + 1))
    t=$(size $B/ws-size.o | awk 'NR == 2 {print $1, $2, $3, $4}')
    sym=$(nm -S --defined-only $B/ws-size.o | awk '
      function hex(h,   i, v) { v = 0; for (i = 1; i <= length(h); i++) v = v * 16 + index("0123456789abcdef", substr(h, i, 1)) - 1; return v }
      $4 ~ /tls/ && NF == 4 {s += hex($2)} END {print s + 0}')
    SIZES="$SIZES$opt $tls $t $sym
"
  done
done

{
  echo "# wss:// costs"
  echo
  echo "- date: $START; command: \`make bench-tls\` (bash tests/bench/tls_run.sh); server: \`$SERVER\`, client: \`$TOOL\`"
  echo "- mbedTLS: $(dpkg-query -W -f '${Version}' libmbedtls-dev 2>/dev/null || echo '?') (system; what the default server and client link; TLS_SERVER/TLSBENCH may differ); EC P-256 certificate, mbedTLS default suites"
  echo "- machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); load average before / after: $LOAD0 / $LOAD1 (shared: other work ran too)"
  echo "- server on CPU 0, tlsbench on CPU 1; handshake rounds interleaved TLS / plain; medians over $ROUNDS rounds"
  echo
  awk -F'\t' '
    function med(a, n,   i, j, t) {
      for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
      return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    {
      n = split($2, kv, " ")
      for (i = 1; i <= n; i++) { split(kv[i], p, "="); v[p[1]] = p[2] }
      if (v["mode"] == "idle") {
        idle[$1, v["conns"]] = v["rss_per_conn"]; cli[$1, v["conns"]] = v["client_rss_per_conn"]
        if (!(v["conns"] in seen)) { seen[v["conns"]] = 1; order[++no] = v["conns"] }
      } else {
        k = ++nh[$1]; hs[$1, k] = v["hs_per_s"]; us[$1, k] = v["server_us_per_hs"]
        cpu[$1, k] = v["server_cpu"]; lg[$1, k] = v["lg_cpu"]
      }
    }
    END {
      print "| idle connections held open | server RSS per wss:// conn (B) | per ws:// conn (B) | TLS extra (B) | client RSS per wss:// conn (B) |"
      print "| ---: | ---: | ---: | ---: | ---: |"
      for (i = 1; i <= no; i++) { c = order[i]
        printf "| %s | %s | %s | %s | %s |\n", c, idle["tls", c], idle["plain", c],
          (("tls", c) in idle && ("plain", c) in idle) ? idle["tls", c] - idle["plain", c] : "-", cli["tls", c] }
      print ""
      print "| handshakes (connect, [TLS,] upgrade, close) | per s | server CPU (cores) | server CPU per handshake (us) | tlsbench CPU (cores) |"
      print "| --- | ---: | ---: | ---: | ---: |"
      split("tls plain", K, " ")
      for (j = 1; j <= 2; j++) { kk = K[j]; n = nh[kk]
        for (i = 1; i <= n; i++) { a[i] = hs[kk, i]; b[i] = us[kk, i]; c2[i] = cpu[kk, i]; d[i] = lg[kk, i] }
        m_hs[kk] = n ? med(a, n) : 0; m_us[kk] = n ? med(b, n) : 0
        printf "| %s | %.0f | %.2f | %.1f | %.2f |\n", kk == "tls" ? "wss://" : "ws://", m_hs[kk], n ? med(c2, n) : 0, m_us[kk], n ? med(d, n) : 0 }
      k = 0
      for (i = 1; i <= nh["tls"] && i <= nh["plain"]; i++) if (hs["plain", i] > 0) a[++k] = hs["tls", i] / hs["plain", i]
      x = m_us["plain"] > 0 ? m_us["tls"] / m_us["plain"] : 0
      if (k) printf "\nwss:// / ws:// handshake rate: %.4f (1/%.0f; median of the per-round ratios); server CPU per handshake: %.0fx\n", med(a, k), 1 / med(a, k), x
    }' "$RES"
  echo
  echo "Code size of ws.o (x86-64, cc $(cc -dumpversion), loop included; \`size\`; *tls* = sum of the symbols named *tls*):"
  echo
  echo "| flags | TLS | text | data | bss | total | *tls* symbols |"
  echo "| --- | --- | ---: | ---: | ---: | ---: | ---: |"
  printf '%s' "$SIZES" | awk '{printf "| %s | %s | %s | %s | %s | %s | %s |\n", $1, $2 ? "on" : "off", $3, $4, $5, $6, $7; tot[$1, $2] = $6; txt[$1, $2] = $3}
    END {printf "\nTLS on adds: -O2 %+d B text (%+d B total), -Os %+d B text (%+d B total)\n", txt["-O2", 1] - txt["-O2", 0], tot["-O2", 1] - tot["-O2", 0], txt["-Os", 1] - txt["-Os", 0], tot["-Os", 1] - tot["-Os", 0]}'
  echo
  echo "Raw results: $RES; logs: $B/logs/tls-*."
  [ "$FAILED" -ne 0 ] && echo && echo "**$FAILED run(s) FAILED**"
} > $B/tls_report.md
echo
cat $B/tls_report.md
[ "$FAILED" -eq 0 ]
