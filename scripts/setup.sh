#!/usr/bin/env bash
# setup.sh — installs what building and testing ctxgate needs on Debian bookworm, idempotently:
# the Debian packages that are missing (one apt-get run, only when something is missing), then the
# npm test clients at the repo root when node_modules is missing or older than the lock file.
# Run as root (or with sudo available). Safe to run again and again; `make run` / `make test` do.
set -euo pipefail

cd "$(dirname "$0")/.."

PACKAGES=(
  build-essential cmake pkg-config
  libuv1-dev libhttp-parser-dev libcurl4-openssl-dev libjansson-dev libyaml-dev libssl-dev
  libhiredis-dev libpq-dev libsqlite3-dev libpcre2-dev libyajl-dev libcmocka-dev zlib1g-dev
  redis-server postgresql nginx-light wrk
  curl ca-certificates openssl
  clang-format cppcheck
  clang libclang-rt-dev
)

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO=(sudo); else
    echo "setup.sh: not root and no sudo; install these packages by hand: ${PACKAGES[*]} nodejs npm" >&2
  fi
fi

installed() { [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true)" = "installed" ]; }

missing=()
for p in "${PACKAGES[@]}"; do
  installed "$p" || missing+=("$p")
done
# Node.js: any node >= 20.19 on PATH will do (a machine may carry a newer one than Debian's, with its
# own npm); install Debian's nodejs and npm only when there is none.
if ! command -v node >/dev/null 2>&1; then missing+=(nodejs); fi
if ! command -v npm >/dev/null 2>&1; then missing+=(npm); fi

if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup.sh: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  "${SUDO[@]}" apt-get update -q
  "${SUDO[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# the test API server's CEL package (@marcbachmann/cel-js) needs Node.js 20.19 or newer
if ! node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>20||(a===20&&b>=19)?0:1)'; then
  echo "setup.sh: node $(node --version) is too old; the test tools need Node.js 20.19 or newer" >&2
  exit 1
fi

# npm test clients (openai, @anthropic-ai/sdk, @modelcontextprotocol/sdk, yaml): reinstall when
# node_modules is missing or older than package.json / package-lock.json.
stamp=node_modules/.package-lock.json
if [ ! -f "$stamp" ] || [ package.json -nt "$stamp" ] || { [ -f package-lock.json ] && [ package-lock.json -nt "$stamp" ]; }; then
  echo "setup.sh: installing npm test clients"
  if [ -f package-lock.json ]; then
    npm ci --no-audit --no-fund --loglevel=error
  else
    npm install --no-audit --no-fund --loglevel=error
  fi
  touch "$stamp"
fi
