#!/bin/sh
# Runs the test binaries in every mode and prints the grand total last:
#   [WS_TLS=1] sh tests/run.sh BUILD_DIR "test_a test_b" [conformance-only]
# WS_TLS=1 (make sets it from its TLS: on/off) adds the conformance suites
# over TLS.
# Each suite prints "name: N passed, M failed"; a suite that crashes or
# exits non-zero without failures counts as one failure.
build=$1
tests=$2
only=$3
# The tests reach servers of their own on loopback: a proxy from the
# environment (ws_loop_connect() honours it, as curl does) must not carry
# them.
unset http_proxy https_proxy HTTPS_PROXY ws_proxy WS_PROXY wss_proxy WSS_PROXY \
  all_proxy ALL_PROXY no_proxy NO_PROXY
passed=0
failed=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT

run() { # label, command...
  label=$1; shift
  echo "== $label"
  "$@" >"$log" 2>&1
  rc=$?
  grep -v '^ok ' "$log"
  line=$(grep -E '[0-9]+ passed, [0-9]+ failed' "$log" | tail -n 1)
  p=$(echo "$line" | awk '{for (i = 2; i <= NF; i++) if ($i == "passed,") print $(i-1)}')
  f=$(echo "$line" | awk '{for (i = 2; i <= NF; i++) if ($i == "failed" || $i == "failed,") print $(i-1)}')
  [ -n "$p" ] || p=0
  [ -n "$f" ] || f=0
  if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
    echo "$label: exited with status $rc"
    f=1
  elif [ -z "$line" ] && [ "$rc" -eq 0 ]; then
    p=1 # a step with no summary of its own counts once
  fi
  passed=$((passed + p))
  failed=$((failed + f))
}

if [ "$only" != conformance-only ]; then
  for t in $tests; do run "$t" "$build/$t"; done
  for t in $tests; do
    run "$t (asan+ubsan)" env ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 \
      UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 "$build/asan/$t"
  done
  if command -v valgrind >/dev/null 2>&1; then
    for t in $tests; do
      run "$t (valgrind)" env WS_TEST_CONNS=500 valgrind -q --error-exitcode=99 --leak-check=full --child-silent-after-fork=yes \
        --errors-for-leak-kinds=definite "$build/$t"
    done
  else
    echo "== valgrind not installed: valgrind runs skipped"
  fi
fi

if [ "$only" != conformance-only ]; then
  run "examples" sh tests/examples.sh "$build"
  # make install into a temporary prefix; programs built through ws.pc.
  run "install" sh tests/install.sh "$build"
  # Every fuzzing regression and seed, replayed with ASan+UBSan (gcc).
  run "fuzz-replay" make -s fuzz-replay
fi

# The conformance suites against every server/client build: the loop on
# the default backend, the loop on poll, and the core over its own loop.
if [ -f tests/conformance/run.sh ]; then
  for dir in "$build" "$build/poll" "$build/core"; do
    [ -x "$dir/echo_server" ] || continue
    run "conformance ($dir)" sh tests/conformance/run.sh "$dir"
  done
fi

# The same suites over TLS when the build has it (the Makefile passes
# WS_TLS): the loop's examples take --cert/--key and --cafile; the core
# examples have no TLS.
if [ -f tests/conformance/run.sh ]; then
  if [ "${WS_TLS:-0}" = 1 ]; then
    for dir in "$build" "$build/poll"; do
      [ -x "$dir/echo_server" ] || continue
      run "conformance over TLS ($dir)" env CONFORMANCE_TLS=1 sh tests/conformance/run.sh "$dir"
    done
  else
    echo "== conformance over TLS: skipped (built without TLS)"
  fi
fi

echo "total: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
