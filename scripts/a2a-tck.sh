#!/usr/bin/env bash
# Runs the A2A conformance kit (a2aproject/a2a-tck, vendored in
# test/conformance/a2a-tck) against the A2A bridge: installs what the kit
# needs from Debian's packages when it is missing (Python 3 with pytest,
# httpx, grpcio, protobuf...; protoc and the gRPC Python plugin, which
# regenerate the kit's gRPC stubs for Debian's protobuf), then runs
# test/conformance/a2a-tck.test.ts. No PyPI, no network but Debian's.
#   scripts/a2a-tck.sh            install if needed, then run the kit
#   scripts/a2a-tck.sh --install  install if needed, run nothing
# Without apt-get or root/sudo it says exactly what to install and fails.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian bookworm packages: python3-pytest 7.2, python3-pytest-asyncio 0.20,
# python3-httpx 0.23, python3-grpcio 1.51, python3-protobuf 3.21, ...
PACKAGES=(
  python3 python3-pytest python3-pytest-asyncio python3-httpx python3-requests python3-responses
  python3-openssl python3-aiohttp python3-grpcio python3-protobuf
  protobuf-compiler protobuf-compiler-grpc libprotobuf-dev
)
PYTHON=${A2A_TCK_PYTHON:-/usr/bin/python3}
MODULES="pytest pytest_asyncio httpx requests responses OpenSSL aiohttp grpc google.protobuf"

have_all() {
  [ -x "$PYTHON" ] || command -v "$PYTHON" >/dev/null 2>&1 || return 1
  "$PYTHON" -c "import importlib.util as u, sys; sys.exit(any(u.find_spec(m) is None for m in '$MODULES'.split()))" 2>/dev/null || return 1
  command -v protoc >/dev/null 2>&1 && command -v grpc_python_plugin >/dev/null 2>&1 || return 1
  # The well-known types the kit's proto imports (google/protobuf/struct.proto, …): libprotobuf-dev, which protoc only recommends.
  [ -f /usr/include/google/protobuf/struct.proto ]
}

install() {
  have_all && return 0
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo="sudo"; else sudo="none"; fi
  fi
  if ! command -v apt-get >/dev/null 2>&1 || [ "$sudo" = "none" ]; then
    echo "the A2A TCK needs these Debian packages; install them, e.g.:" >&2
    echo "  sudo apt-get install -y ${PACKAGES[*]}" >&2
    exit 1
  fi
  echo "agentbus: installing the A2A TCK's Debian packages" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null
  have_all || { echo "agentbus: $PYTHON still lacks one of: $MODULES (or protoc / grpc_python_plugin)" >&2; exit 1; }
}

install
[ "${1:-}" = "--install" ] && exit 0
bash scripts/system-deps.sh nats-server
exec npx vitest run test/conformance/a2a-tck.test.ts
