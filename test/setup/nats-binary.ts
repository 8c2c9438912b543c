/**
 * Vitest global setup: fail the whole run once, with the install hint, when
 * nats-server is missing, rather than once per test file.
 */
import { findNatsServer, natsServerVersion } from "../../nats/index.js";

export default function setup(): void {
  const bin = findNatsServer();
  process.stderr.write(`agentbus tests: using ${bin} (nats-server ${natsServerVersion(bin)})\n`);
}
