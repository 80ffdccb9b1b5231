#!/bin/sh
# tests/bench/install.sh - installs the benchmark peers (idempotent):
# libwebsockets and wslay from Debian, Node's ws (pinned by package.json and
# package-lock.json) with npm ci into tests/bench/node_modules.
set -eu
cd "$(dirname "$0")"
need=""
dpkg -s libwebsockets-dev >/dev/null 2>&1 || need="$need libwebsockets-dev"
dpkg -s libwslay-dev >/dev/null 2>&1 || need="$need libwslay-dev"
command -v taskset >/dev/null 2>&1 || need="$need util-linux"
command -v pkg-config >/dev/null 2>&1 || need="$need pkg-config"
command -v node >/dev/null 2>&1 || need="$need nodejs"
command -v npm >/dev/null 2>&1 || need="$need npm"
if [ -n "$need" ]; then
  echo "bench install:$need"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  # shellcheck disable=SC2086
  apt-get install -y -q --no-install-recommends $need >/dev/null
fi
# npm ci again only when what is installed is not what package.json pins.
want=$(node -p "const d=require('./package.json').dependencies; Object.keys(d).sort().map(k=>k+'@'+d[k]).join(' ')")
have=$(node -p "const d=require('./package.json').dependencies; Object.keys(d).sort().map(k=>{try{return k+'@'+require('./node_modules/'+k+'/package.json').version}catch(e){return k+'@none'}}).join(' ')")
if [ "$want" != "$have" ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
echo "bench install: ok (libwebsockets $(dpkg-query -W -f '${Version}' libwebsockets-dev), wslay $(dpkg-query -W -f '${Version}' libwslay-dev), ws $(node -p "require('./node_modules/ws/package.json').version"))"
