#!/usr/bin/env bash
# Runs every test: the Rust unit tests, then the over-the-wire suites, which start the real
# gateway binary and drive it with real Socket.IO clients from npm.
#
# Installs what is missing first: Node.js, npm, Chromium, nginx, openssl and systemd (Debian
# packages; the last three for tests/deploy.test.mjs) and the npm packages pinned in
# tests/package-lock.json. Needs cargo (the Rust toolchain) on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_install() {
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@"
}

missing=()
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
# tests/deploy.test.mjs: the shipped nginx configuration, certificates, the systemd unit.
command -v nginx >/dev/null 2>&1 || missing+=(nginx)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "== installing ${missing[*]}"
  apt_install "${missing[@]}"
fi

# The browser tests (tests/browser-*.test.mjs) drive Debian's Chromium with playwright-core;
# playwright's own browser download is not used.
if [ ! -x /usr/bin/chromium ]; then
  echo "== installing chromium (for the browser tests)"
  apt_install chromium
fi

# The TURN test (tests/access.test.mjs) runs a real coturn (turnserver, turnutils_uclient).
if ! command -v turnserver >/dev/null 2>&1 || ! command -v turnutils_uclient >/dev/null 2>&1; then
  echo "== installing coturn (for the TURN credentials test)"
  apt_install coturn
fi

# The cluster store tests (tests/cluster_store.rs) start their own redis-server on a free
# loopback port.
if ! command -v redis-server >/dev/null 2>&1; then
  echo "== installing redis-server (for the cluster store tests)"
  apt_install redis-server
fi

echo "== npm packages for the real clients"
if ! (cd tests && npm ls --silent >/dev/null 2>&1); then
  (cd tests && npm ci --no-audit --no-fund)
fi

echo "== build"
cargo build --locked

echo "== Rust unit tests"
cargo test --locked

echo "== over-the-wire tests (real Socket.IO clients)"
node --test --test-concurrency=1 tests/
