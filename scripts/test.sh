#!/usr/bin/env bash
# Runs every test of the workspace. Installs what the tests need first: redis-server (Debian's package),
# which the Redis tests start themselves on free loopback ports, and openssl (the TLS test's certificates).
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=()
command -v redis-server >/dev/null 2>&1 || need_pkgs+=(redis-server)
command -v openssl >/dev/null 2>&1 || need_pkgs+=(openssl)   # certificates for the rediss:// test
if [ ${#need_pkgs[@]} -gt 0 ]; then
  echo "installing: ${need_pkgs[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}"
fi
# Debian's package may start a system redis on 6379; the tests never use it (they start their own).

cargo test --workspace --all-features "$@"
