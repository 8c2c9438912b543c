#!/usr/bin/env bash
# Installs the system programs agentbus needs when they are missing, from
# Debian's packages: `nats-server` (tests, and `agentbus up` without a NATS
# server) and `chromium` (the monitor page's browser test). Without apt-get
# or root/sudo it says exactly what to install and fails.
#   scripts/system-deps.sh nats-server chromium
set -euo pipefail

have() {
  case "$1" in
    nats-server) [ -n "${NATS_SERVER_BIN:-}" ] || command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] ;;
    chromium) [ -n "${AGENTBUS_SKIP_BROWSER:-}" ] || command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ] ;;
    *) echo "system-deps: unknown program $1" >&2; exit 2 ;;
  esac
}

missing=()
for program in "$@"; do have "$program" || missing+=("$program"); done
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo"; else SUDO="none"; fi
fi
if ! command -v apt-get >/dev/null 2>&1 || [ "$SUDO" = "none" ]; then
  echo "agentbus needs: ${missing[*]}. Install them, e.g. on Debian/Ubuntu:" >&2
  echo "  sudo apt-get install -y ${missing[*]}" >&2
  echo "or set NATS_SERVER_BIN=/path/to/nats-server (https://github.com/nats-io/nats-server/releases)." >&2
  exit 1
fi
echo "agentbus: installing ${missing[*]} (Debian packages)" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
