#!/bin/sh
# tests/interop/install.sh - installs the interoperability peers that are
# missing (docs/interop.md), and nothing that is already there:
#   Debian: chromium, python3-websockets, libwebsockets-dev (+ pkg-config),
#           nginx, squid, redis-server, nats-server
#   npm:    ws and playwright-core, from tests/interop/package-lock.json
#           (npm ci), into tests/interop/node_modules
# Idempotent. apt-get needs root: as another user it prints what is missing
# and leaves it (run.js then skips those rows by hand, and fails them in CI).
# No browser is downloaded: playwright-core drives Debian's /usr/bin/chromium.
# Installing nginx or squid does not start the system's service.
set -eu
here=$(cd "$(dirname "$0")" && pwd)

need=""
[ -x /usr/bin/chromium ] || need="$need chromium"
/usr/bin/python3 -c 'import websockets' 2>/dev/null || need="$need python3-websockets"
command -v pkg-config >/dev/null 2>&1 || need="$need pkg-config"
pkg-config --exists libwebsockets 2>/dev/null || need="$need libwebsockets-dev"
[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null 2>&1 || need="$need nginx"
# the HTTP proxy of the proxy rows (they start their own squid)
[ -x /usr/sbin/squid ] || need="$need squid"
# the brokers of the chat-cluster rows (the rows start their own)
command -v redis-server >/dev/null 2>&1 || need="$need redis-server"
command -v nats-server >/dev/null 2>&1 || need="$need nats-server"
# /usr/bin/python3 itself, for python3-websockets
[ -x /usr/bin/python3 ] || need="$need python3"

if [ -n "$need" ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "install.sh: missing:$need (run as root to install them: sh tests/interop/install.sh)"
  else
    echo "install.sh: installing:$need"
    export DEBIAN_FRONTEND=noninteractive
    # Keep package scripts from starting services (nginx would take port 80):
    # the standard policy-rc.d "deny", only for this install and only if the
    # machine has none of its own.
    policy=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      policy=/usr/sbin/policy-rc.d
      printf '#!/bin/sh\nexit 101\n' >"$policy"
      chmod 755 "$policy"
      trap 'rm -f "$policy"' EXIT
    fi
    apt-get -o DPkg::Lock::Timeout=300 update -q >/dev/null
    # shellcheck disable=SC2086
    apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends $need >/dev/null
    if [ -n "$policy" ]; then rm -f "$policy"; trap - EXIT; fi
  fi
fi

# npm packages, exactly as locked. npm ci replaces node_modules, so only
# when it is missing or older than the lockfile.
if ! command -v npm >/dev/null 2>&1; then
  echo "install.sh: npm is not installed: cannot install the npm packages ws and playwright-core"
elif [ ! -f "$here/node_modules/.package-lock.json" ] ||
     [ -n "$(find "$here/package-lock.json" -newer "$here/node_modules/.package-lock.json")" ]; then
  echo "install.sh: npm ci in tests/interop"
  (cd "$here" && npm ci --no-audit --no-fund --loglevel=error)
fi
