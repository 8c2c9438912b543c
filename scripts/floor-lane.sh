#!/usr/bin/env bash
# The second test lane: the core and task suites on the oldest supported
# nats-server (2.9.10, Debian stable's package), which agentbus supports as a
# single server. Everything newer is feature-detected; this lane proves it.
# Uses AGENTBUS_FLOOR_NATS_BIN, else the system's nats-server when it is 2.9.x.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${AGENTBUS_FLOOR_NATS_BIN:-}
if [ -z "$bin" ]; then
  for candidate in "$(command -v nats-server 2>/dev/null || true)" /usr/sbin/nats-server; do
    [ -n "$candidate" ] && [ -x "$candidate" ] && "$candidate" --version 2>/dev/null | grep -q 'v2\.9\.' && { bin=$candidate; break; }
  done
fi
if [ -z "$bin" ]; then
  echo "floor lane: no nats-server 2.9.x on this machine (set AGENTBUS_FLOOR_NATS_BIN); skipped" >&2
  exit 0
fi
echo "floor lane: core and task suites and static permissions on $("$bin" --version)" >&2
NATS_SERVER_BIN=$bin npx vitest run test/core test/authority/static.test.ts --exclude 'test/core/cluster.test.ts' --exclude 'test/core/task-cluster.test.ts'
