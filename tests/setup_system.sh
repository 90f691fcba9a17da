#!/usr/bin/env bash
# Installs the Debian packages the test suite needs beyond Python: openssh-server, whose sshd
# plays the worker hosts of tests/fleet.py. Idempotent and quick once installed; a machine
# without apt (or not root) just skips, and the fleet tests then skip with the reason.
set -euo pipefail

need=()
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh-keygen >/dev/null 2>&1 || need+=(openssh-client)
command -v nsenter >/dev/null 2>&1 || need+=(util-linux)

if [ "${#need[@]}" -gt 0 ]; then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "setup_system: cannot install ${need[*]} (needs root and apt-get); the SSH fleet tests will skip" >&2
    exit 0
  fi
  export DEBIAN_FRONTEND=noninteractive
  # The package lists may be absent on a fresh image; refresh them only then, or on a miss.
  if ! apt-get install -y --no-install-recommends "${need[@]}" >/dev/null 2>&1; then
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
fi

# sshd refuses to start without its privilege-separation directory.
if [ "$(id -u)" = 0 ]; then
  mkdir -p /run/sshd
  chmod 0755 /run/sshd
fi
