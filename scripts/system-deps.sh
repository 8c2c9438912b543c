#!/usr/bin/env bash
# Installs the system programs agentbus needs when they are missing, from
# Debian's packages: `nats-server` (tests, and `agentbus up` without a NATS
# server) and `chromium` (the monitor page's browser test). Without apt-get
# or root/sudo it says exactly what to install and fails.
#   scripts/system-deps.sh nats-server chromium
#
# agentbus targets the current nats-server line (2.15). When the system's
# server is older (Debian stable ships 2.9.10), the current one is fetched
# by name from Debian's package registry (the `sid` suite, without touching
# the system's apt sources) and unpacked into .agentbus/bin/nats-server,
# where the launcher looks first. NATS_SERVER_BIN overrides both.
set -euo pipefail
cd "$(dirname "$0")/.."
CURRENT_MINOR=15   # nats-server 2.<minor>: the line tests and `agentbus up` run on
LOCAL_BIN=.agentbus/bin/nats-server

minor_of() { "$1" --version 2>/dev/null | sed -nE 's/.*v?2\.([0-9]+)\..*/\1/p'; }

system_nats() {
  command -v nats-server 2>/dev/null || { [ -x /usr/sbin/nats-server ] && echo /usr/sbin/nats-server; } || true
}

# Fetches Debian sid's nats-server package and unpacks its binary into .agentbus/bin.
fetch_current_nats() {
  local work; work=$(mktemp -d)
  mkdir -p "$work/lists/partial" "$work/cache/archives/partial" .agentbus/bin
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian sid main" > "$work/sources.list"
  local opts=(-o "Dir::Etc::SourceList=$work/sources.list" -o Dir::Etc::SourceParts=/dev/null
              -o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work/cache" -o APT::Sandbox::User=root)
  apt-get "${opts[@]}" update -qq >/dev/null
  (cd "$work" && apt-get "${opts[@]}" download nats-server >/dev/null)
  dpkg-deb -x "$work"/nats-server_*.deb "$work/root"
  install -m 0755 "$work/root/usr/sbin/nats-server" "$LOCAL_BIN"
  rm -rf "$work"
  echo "agentbus: using $("$LOCAL_BIN" --version) in $LOCAL_BIN" >&2
}

current_nats() {
  [ -n "${NATS_SERVER_BIN:-}" ] && return 0
  [ -x "$LOCAL_BIN" ] && [ "$(minor_of "$LOCAL_BIN")" -ge "$CURRENT_MINOR" ] 2>/dev/null && return 0
  local sys; sys=$(system_nats)
  [ -n "$sys" ] && [ "$(minor_of "$sys")" -ge "$CURRENT_MINOR" ] 2>/dev/null && return 0
  if command -v apt-get >/dev/null 2>&1 && command -v dpkg-deb >/dev/null 2>&1; then
    if [ -n "$sys" ]; then state="older than 2.$CURRENT_MINOR ($sys)"; else state="missing"; fi
    echo "agentbus: the system's nats-server is $state; fetching the current one from Debian" >&2
    fetch_current_nats && return 0
  fi
  echo "agentbus: could not fetch nats-server 2.$CURRENT_MINOR; continuing with ${sys:-none}" >&2
}

have() {
  case "$1" in
    nats-server) [ -n "${NATS_SERVER_BIN:-}" ] || [ -x "$LOCAL_BIN" ] || command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] ;;
    chromium) [ -n "${AGENTBUS_SKIP_BROWSER:-}" ] || command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ] ;;
    *) echo "system-deps: unknown program $1" >&2; exit 2 ;;
  esac
}

missing=()
for program in "$@"; do
  [ "$program" = nats-server ] && current_nats
  have "$program" || missing+=("$program")
done
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
