#!/bin/sh
# tests/check_layers.sh - `make check-layers`: the layering of src/ws/ holds.
#   sh tests/check_layers.sh BUILD_DIR "TLS_CPPFLAGS" PART...
# 1. Every part named in the Makefile exists and defines something.
# 2. The TLS part and the loop (with each backend) compile alone with only
#    include/ on the include path and the feature macros ws.c ships with
#    (config.h), warning-free: they use the public API and nothing else.
#    TLS compiles both ways (mbedTLS on when installed, and off); kqueue on
#    a system without it compiles against tests/shim/sys/event.h.
# 3. They include no private header and name no private identifier that
#    the core's parts define (which a branch left out by the preprocessor
#    could otherwise hide).
set -eu
B=$1; TLS=$2; shift 2
CC=${CC:-cc}
FLAGS="-std=c99 -Wall -Wextra -Wpedantic -Werror -Wshadow -Iinclude"
mkdir -p "$B/layers"
fail() { echo "check-layers: $*"; exit 1; }

core=""; alone=""
for f in "$@"; do
  [ -s "$f" ] || fail "missing or empty part: $f"
  # something beyond comments, blank lines and includes
  code=$(sed -e 's#/\*.*\*/##' "$f" | grep -cvE '^[[:space:]]*($|\*|/\*|#include|#if|#endif|#define WS__[A-Z_]*_H)' || true)
  [ "$code" -gt 3 ] || fail "part $f holds no code"
  case ${f##*/} in
    tls.c|loop*.c) alone="$alone $f" ;;
    *) core="$core $f" ;;
  esac
done
for p in tls.c loop_win.c loop.c loop_epoll.c loop_kqueue.c loop_poll.c; do
  case " $alone " in *"/$p "*) ;; *) fail "part src/ws/$p is not in the parts list" ;; esac
done

n=0
compile() { # name, extra flags, files...
  name=$1 extra=$2; shift 2
  : > "$B/layers/$name.c"
  for f in "$@"; do echo "#include \"../../$f\"" >> "$B/layers/$name.c"; done
  # shellcheck disable=SC2086
  ${XCC:-$CC} $FLAGS $extra -c "$B/layers/$name.c" -o "$B/layers/$name.o" ||
    fail "$name does not build alone against ws.h"
  n=$((n + 1))
}
dir=${1%/*}
compile tls_off "-DWS_ENABLE_MBEDTLS=0" "$dir/tls.c"
[ -z "$TLS" ] || compile tls_on "$TLS" "$dir/tls.c"
compile loop_epoll "-DWS_LOOP_EPOLL $TLS" "$dir/loop_win.c" "$dir/loop.c" "$dir/loop_epoll.c"
compile loop_poll "-DWS_LOOP_POLL $TLS" "$dir/loop_win.c" "$dir/loop.c" "$dir/loop_poll.c"
kq=""
printf '#include <sys/event.h>\n' | $CC -E -x c - >/dev/null 2>&1 || kq="-Itests/shim"
compile loop_kqueue "-DWS_LOOP_KQUEUE $kq $TLS" "$dir/loop_win.c" "$dir/loop.c" "$dir/loop_kqueue.c"
# WSAPoll with mingw-w64 where installed (make cross installs it); TLS is
# not ported to Windows.
win=""
if command -v x86_64-w64-mingw32-gcc >/dev/null 2>&1; then
  XCC=x86_64-w64-mingw32-gcc compile loop_wsapoll "" "$dir/loop_win.c" "$dir/loop.c" "$dir/loop_poll.c"
  win=", WSAPoll with mingw-w64"
fi

# shellcheck disable=SC2086
if grep -n '#include "private.h"' $alone; then fail "a part that must stand alone includes private.h"; fi
# shellcheck disable=SC2086
cat $core | grep -o 'ws__[A-Za-z0-9_]*' | sort -u > "$B/layers/core_private.txt"
# shellcheck disable=SC2086
cat $alone | grep -o 'ws__[A-Za-z0-9_]*' | sort -u > "$B/layers/alone_private.txt"
used=$(comm -12 "$B/layers/core_private.txt" "$B/layers/alone_private.txt")
[ -z "$used" ] || fail "TLS or the loop names core internals: $used"
echo "check-layers: ok ($# parts; TLS and the loop with each backend built alone against ws.h: $n builds${kq:+, kqueue against tests/shim}$win)"
