#!/usr/bin/env bash
# Installs the Debian packages the test suite needs beyond Python: openssh-server, whose sshd
# plays the worker hosts of tests/fleet.py, and chromium, which renders the HTML job report.
# Idempotent and quick once installed; a machine without apt (or not root) just skips, and the
# fleet and browser tests then skip with the reason.
set -euo pipefail

need=()
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh-keygen >/dev/null 2>&1 || need+=(openssh-client)
command -v nsenter >/dev/null 2>&1 || need+=(util-linux)
# Headless Chromium renders the HTML job report in tests/test_report.py; a font to draw its text.
command -v chromium >/dev/null 2>&1 || need+=(chromium)
[ -d /usr/share/fonts/truetype/dejavu ] || need+=(fonts-dejavu-core)

if [ "${#need[@]}" -gt 0 ]; then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "setup_system: cannot install ${need[*]} (needs root and apt-get); the SSH fleet and browser tests will skip" >&2
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
