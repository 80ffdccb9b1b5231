#!/bin/sh
# tests/install.sh BUILD_DIR: the build as a packager and a user meet it.
# - The build notices its own configuration: BUILD_DIR, just built, is up
#   to date for the same configuration, and out of date for the other TLS
#   setting (make -q and make -n only: nothing is rebuilt or rewritten).
# - make install into a temporary PREFIX (the same BUILD_DIR: nothing is
#   rebuilt), then a program built through the installed ws.pc: linked
#   with libws.so (run with LD_LIBRARY_PATH), and with libws.a alone
#   (pkg-config --static, so Libs.private must name mbedTLS and -pthread in
#   a TLS build). Each run prints the version and the TLS setting and
#   completes a server handshake in memory through ws_conn_feed().
# Run by tests/run.sh (make test), which passes WS_TLS, WS_ZLIB and CC as make had
# them; prints "install: N passed, M failed" last.
build=${1:-build}
cc=${CC:-cc}
make=${MAKE:-make}
tls=${WS_TLS:-0}
zlib=${WS_ZLIB:-0}
pass=0
fail=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM

ok() { pass=$((pass + 1)); echo "ok - $1"; }
bad() { fail=$((fail + 1)); echo "not ok - $1"; }
check() { # name, condition command...
  name=$1; shift
  if "$@"; then ok "$name"; else bad "$name"; fi
}
# Runs a command quietly; on failure shows its output.
quiet() { # log name, command...
  log=$tmp/$1.log; shift
  if "$@" >"$log" 2>&1; then return 0; fi
  sed 's/^/    /' "$log" | tail -n 20
  return 1
}

# The configuration: unchanged, nothing to do; the other TLS setting
# rebuilds the library and the programs linked with it.
if ! quiet q-same "$make" -q BUILD="$build" all; then
  # make install would rebuild BUILD_DIR with this other configuration.
  bad "make -q: $build is not up to date for this configuration (run make first): the rest skipped"
  echo "install: $pass passed, $fail failed"
  exit 1
fi
ok "make -q: up to date for the configuration it was built with"
if [ "$tls" = 1 ]; then other=0; else other=1; fi
if [ "$other" = 0 ] || [ -f /usr/include/mbedtls/ssl.h ]; then
  check "make -q WS_TLS=$other: out of date" \
    sh -c '! "$@" >/dev/null 2>&1' sh "$make" -q BUILD="$build" WS_TLS=$other all
  "$make" -n BUILD="$build" WS_TLS=$other all >"$tmp/n.log" 2>&1
  for f in ws.o ws.pic.o libws.a libws.so echo_server chat; do
    check "make -n WS_TLS=$other rebuilds $f" grep -Eq "(-o|rcs) $build/$f( |\$)" "$tmp/n.log"
  done
  check "make -n WS_TLS=$other leaves src/ws.c alone" sh -c "! grep -q 'amalgamate' '$tmp/n.log'"
  check "make -q again: still up to date (make -n/-q wrote nothing)" \
    quiet q-again "$make" -q BUILD="$build" all
fi

prefix=$tmp/prefix
touch "$tmp/before"
check "make install PREFIX=<temporary>" \
  quiet install "$make" -s BUILD="$build" PREFIX="$prefix" install
check "installed: ws.h, libws.a, libws.so, ws.pc" \
  test -f "$prefix/include/ws.h" -a -f "$prefix/lib/libws.a" -a \
       -f "$prefix/lib/libws.so" -a -f "$prefix/lib/pkgconfig/ws.pc"
check "make install rebuilt nothing (only ws.pc, for the new prefix)" \
  test -z "$(find "$build" -maxdepth 2 -type f -newer "$tmp/before" ! -name ws.pc ! -name prefix.stamp)"
check "ws.pc points at the install prefix" \
  grep -qx "prefix=$prefix" "$prefix/lib/pkgconfig/ws.pc"
private="-pthread"
[ "$tls" = 1 ] && private="$private -lmbedtls -lmbedx509 -lmbedcrypto"
[ "$zlib" = 1 ] && private="$private -lz"
check "ws.pc: Libs.private is what the build links ($private)" \
  grep -qx "Libs.private: $private" "$prefix/lib/pkgconfig/ws.pc"

cat >"$tmp/app.c" <<'EOF'
/* A user's program: the version, the TLS setting, and a server handshake
 * in memory (a request fed in, the 101 response written out). */
#include <stdio.h>
#include <string.h>
#include "ws.h"

static char out[1024];
static size_t outlen;

static int out_write(ws_conn *c, const void *d, size_t n, size_t *w,
                     void *user) {
  (void)c, (void)user;
  if (n > sizeof out - 1 - outlen) n = sizeof out - 1 - outlen;
  memcpy(out + outlen, d, n);
  outlen += n;
  *w = n;
  return WS_OK;
}

int main(void) {
  static const char req[] =
      "GET /chat HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\n"
      "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
      "Sec-WebSocket-Version: 13\r\n\r\n";
  ws_callbacks cb;
  ws_config cfg;
  ws_conn c;
  int open;
  memset(&cb, 0, sizeof cb);
  cb.write = out_write;
  ws_config_init(&cfg, WS_SERVER);
  if (ws_conn_init(&c, &cfg, &cb, NULL) != WS_OK) return 1;
  ws_conn_feed(&c, req, sizeof req - 1);
  open = ws_conn_state(&c) == WS_STATE_OPEN &&
         strncmp(out, "HTTP/1.1 101 ", 13) == 0 &&
         strstr(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") != NULL;
  printf("ws %s tls %d handshake %s\n", ws_version(), ws_tls_available(),
         open ? "ok" : "failed");
  ws_conn_free(&c);
  return open ? 0 : 1;
}
EOF
version=$(sed -n 's/^#define WS_VERSION_\(MAJOR\|MINOR\|PATCH\) \([0-9]*\)/\2/p' include/ws.h | paste -sd.)
want="ws $version tls $tls handshake ok"
pc() { PKG_CONFIG_PATH="$prefix/lib/pkgconfig" pkg-config "$@" ws; }

if ! command -v pkg-config >/dev/null 2>&1; then
  bad "pkg-config is not installed (apt-get install pkg-config)"
else
  check "pkg-config --modversion ws: $version" test "$(pc --modversion)" = "$version"
  # Shared: the linker takes libws.so; the program needs it at run time.
  # shellcheck disable=SC2046
  check "cc app.c \$(pkg-config --cflags --libs ws): links" \
    quiet shared "$cc" -std=c99 -Wall -Wextra -Werror "$tmp/app.c" -o "$tmp/app_shared" $(pc --cflags --libs)
  check "the shared program needs libws.so" \
    sh -c "readelf -d '$tmp/app_shared' | grep -q 'NEEDED.*libws\\.so'"
  check "the shared program runs: $want" \
    test "$(LD_LIBRARY_PATH="$prefix/lib" "$tmp/app_shared")" = "$want"
  # Static: libws.a alone in the prefix (as a package of the static library
  # only), linked through pkg-config --static.
  rm -f "$prefix/lib/libws.so"
  # shellcheck disable=SC2046
  check "cc app.c \$(pkg-config --static --cflags --libs ws): links with libws.a" \
    quiet static "$cc" -std=c99 -Wall -Wextra -Werror "$tmp/app.c" -o "$tmp/app_static" $(pc --static --cflags --libs)
  check "the static program holds the library and needs no libws.so" \
    sh -c "nm '$tmp/app_static' 2>/dev/null | grep -q ' T ws_version\$' && ! readelf -d '$tmp/app_static' | grep -q 'libws\\.so'"
  check "the static program runs: $want" test "$("$tmp/app_static")" = "$want"
fi

echo "install: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
