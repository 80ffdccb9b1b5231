#!/bin/sh
# Runs the conformance suites against the examples:
#   sh tests/conformance/run.sh BUILD_DIR
# Starts BUILD_DIR/echo_server on an ephemeral loopback port, runs
# client_cases.js against it and server_cases.js with BUILD_DIR/echo_client,
# then stops the server with SIGTERM (it must exit 0). Prints each failing
# case with its reason and one summary line per category; the last line is
# "conformance: N passed, M failed" (exit status 0 only when M is 0).
# The whole run is bounded by CONFORMANCE_TIMEOUT seconds (300); set
# CONFORMANCE_SEED to replay a run's chop sizes and payloads.
# CONFORMANCE_TLS=1 runs both suites over TLS (needs a build with TLS and
# the openssl command): tests/tls/certs.sh makes a CA and a server
# certificate for 127.0.0.1, echo_server serves wss:// with --cert/--key,
# client_cases connects with Node's tls module trusting the CA, and
# server_cases is a TLS server that echo_client reaches with --cafile.
build=${1:-build}
here=$(cd "$(dirname "$0")" && pwd)
limit=${CONFORMANCE_TIMEOUT:-300}
seed=${CONFORMANCE_SEED:-$(( $(date +%s) % 1000000 ))}
begin=$(date +%s)
tls=
case ${CONFORMANCE_TLS:-} in 1 | yes | true) tls=1 ;; esac
passed=0
failed=0
server_pid=
tmp=$(mktemp -d "${TMPDIR:-/tmp}/ws-conformance.XXXXXX")

cleanup() {
  if [ -n "$server_pid" ]; then
    kill "$server_pid" 2>/dev/null
    wait "$server_pid" 2>/dev/null
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

finish() {
  echo "conformance: $passed passed, $failed failed"
  [ "$failed" -eq 0 ]
  exit
}

problem() { # a failure outside the suites: counted and explained
  echo "not ok conformance: $*"
  failed=$((failed + 1))
}

remaining() { echo $((limit - ($(date +%s) - begin))); }

# Each suite runs under timeout(1) with what is left of the budget (the
# suites also bound every case themselves).
if command -v timeout >/dev/null 2>&1; then
  bounded() { timeout "$@"; }
else
  bounded() { shift; "$@"; }
fi

if ! command -v node >/dev/null 2>&1; then
  # In CI a missing peer is a failure; by hand, a clear skip.
  if [ -n "${CI:-}" ] && [ "${CI:-}" != false ]; then
    problem "node is not installed"
  else
    echo "# conformance skipped: node is not installed (apt-get install nodejs)"
  fi
  finish
fi
for b in echo_server echo_client; do
  if [ ! -x "$build/$b" ]; then
    problem "$build/$b is missing (run make first)"
    finish
  fi
done

# Over TLS: certificates first; the suites get --tls CERTDIR.
scheme=ws
set --
if [ -n "$tls" ]; then
  if ! command -v openssl >/dev/null 2>&1; then
    problem "CONFORMANCE_TLS=1 needs the openssl command (apt-get install openssl)"
    finish
  fi
  if ! sh "$here/../tls/certs.sh" "$tmp/certs"; then
    problem "tests/tls/certs.sh failed: $(tail -c 300 "$tmp/certs/openssl.log")"
    finish
  fi
  scheme=wss
  set -- --tls "$tmp/certs"
  echo "# over TLS: echo_server --cert/--key, echo_client --cafile (certificates in $tmp/certs)"
fi

# The server prints "echo_server listening on ws[s]://127.0.0.1:PORT/" first.
if [ -n "$tls" ]; then
  "$build/echo_server" -p 0 --cert "$tmp/certs/srv.pem" --key "$tmp/certs/srv.key" >"$tmp/server.out" 2>"$tmp/server.err" &
else
  "$build/echo_server" -p 0 >"$tmp/server.out" 2>"$tmp/server.err" &
fi
server_pid=$!
port=
i=0
while [ $i -lt 50 ]; do
  port=$(sed -n "s|^echo_server listening on $scheme://127\\.0\\.0\\.1:\\([0-9][0-9]*\\)/\$|\\1|p" "$tmp/server.out")
  [ -n "$port" ] && break
  kill -0 "$server_pid" 2>/dev/null || break
  sleep 0.1
  i=$((i + 1))
done
if [ -z "$port" ]; then
  problem "echo_server did not start: $(cat "$tmp/server.out" "$tmp/server.err" | head -c 300)"
  finish
fi
echo "# echo_server pid $server_pid on port $port, seed $seed"

suite() { # name, command...
  name=$1
  shift
  left=$(remaining)
  if [ "$left" -le 0 ]; then
    problem "$name not run: the ${limit} s budget is spent"
    return
  fi
  bounded "$left" "$@" --seed "$seed" --verbose >"$tmp/$name.log" 2>&1
  rc=$?
  grep -E '^(not ok|# )' "$tmp/$name.log"
  line=$(grep -E "^$name: [0-9]+ passed, [0-9]+ failed$" "$tmp/$name.log" | tail -n 1)
  if [ -z "$line" ]; then
    if [ "$rc" -eq 124 ]; then
      problem "$name timed out (the run is bounded to ${limit} s)"
    else
      problem "$name exited with status $rc without a summary: $(tail -n 5 "$tmp/$name.log" | tr '\n' ' ' | head -c 400)"
    fi
    # Count the cases it finished.
    passed=$((passed + $(grep -c '^ok ' "$tmp/$name.log")))
    failed=$((failed + $(grep -c '^not ok ' "$tmp/$name.log")))
    return
  fi
  echo "$line"
  p=$(echo "$line" | sed 's/^[^:]*: \([0-9]*\) passed.*/\1/')
  f=$(echo "$line" | sed 's/.* passed, \([0-9]*\) failed$/\1/')
  passed=$((passed + p))
  failed=$((failed + f))
}

suite client_cases node "$here/client_cases.js" --port "$port" "$@"
if ! kill -0 "$server_pid" 2>/dev/null; then
  wait "$server_pid"
  problem "echo_server died during the run (status $?): $(tail -c 300 "$tmp/server.err")"
  server_pid=
fi
suite server_cases node "$here/server_cases.js" --client "$build/echo_client" "$@"

# The server must still be alive, and exit 0 on SIGTERM.
if [ -n "$server_pid" ]; then
  if kill -0 "$server_pid" 2>/dev/null && kill -TERM "$server_pid" 2>/dev/null; then
    i=0
    while kill -0 "$server_pid" 2>/dev/null && [ $i -lt 30 ]; do
      sleep 0.1
      i=$((i + 1))
    done
    if kill -0 "$server_pid" 2>/dev/null; then
      problem "echo_server did not exit within 3 s of SIGTERM"
    else
      wait "$server_pid"
      rc=$?
      server_pid=
      if [ "$rc" -eq 0 ]; then
        passed=$((passed + 1))
      else
        problem "echo_server exited with status $rc on SIGTERM: $(tail -c 300 "$tmp/server.err")"
      fi
    fi
  else
    wait "$server_pid"
    problem "echo_server died during the run (status $?): $(tail -c 300 "$tmp/server.err")"
    server_pid=
  fi
fi
finish
