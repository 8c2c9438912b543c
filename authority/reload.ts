/**
 * Where the server configured from an authority's state lives, so that a
 * command run later (`agentbus tenant create`, `agentbus tenant export`)
 * can rewrite its configuration and have it reload: recorded in
 * `<authority dir>/server.json` by `agentbus up` (the embedded server it
 * launched: config file, pid, ports) or by `agentbus authority config` (the
 * include file written for an operator's own nats-server).
 */
import { existsSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { AgentBusError } from "../core/index.js";
import { configFileText, monitorJson, renderConfig, serverConfig } from "../nats/index.js";
import type { AuthorityState } from "./local.js";

/** A server launched by `agentbus up` with the authority's configuration. */
export interface LaunchedServerRecord {
  kind: "launched";
  /** Client URL. */
  url: string;
  /** The nats-server process (reloaded with SIGHUP). */
  pid: number;
  /** The config file it runs with (rewritten whole on a change). */
  configFile: string;
  port: number;
  httpPort: number;
  storeDir: string;
  root?: string;
}

/** An operator's own nats-server that includes the file `agentbus authority config` wrote. */
export interface IncludeRecord {
  kind: "include";
  /** The include file (absolute path). */
  file: string;
  root?: string;
}

/** See {@link recordServer}. */
export type ServerRecord = LaunchedServerRecord | IncludeRecord;

const recordFile = (dir: string) => join(dir, "server.json");

/** Records where the authority's server configuration lives (replacing the previous record). */
export function recordServer(dir: string, record: ServerRecord): void {
  writeFileSync(recordFile(dir), `${JSON.stringify(record, null, 2)}\n`, { mode: 0o600 });
}

/** The recorded server, if any. */
export function readServerRecord(dir: string): ServerRecord | undefined {
  const file = recordFile(dir);
  if (!existsSync(file)) return undefined;
  return JSON.parse(readFileSync(file, "utf8")) as ServerRecord;
}

/** Removes the record when it still names `pid` (a launched server that stopped). */
export function forgetServer(dir: string, pid: number): void {
  const record = readServerRecord(dir);
  if (record?.kind === "launched" && record.pid === pid) rmSync(recordFile(dir), { force: true });
}

/** True when a process with this pid exists (and may be signalled by us). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** The text of the include file: the `accounts`, `system_account` and `authorization` blocks. */
export function includeFileText(state: AuthorityState, root?: string): string {
  return [
    "# nats-server configuration blocks written by agentbus (agentbus authority config):",
    "# one account per tenant with JetStream, the AUTH and SYS accounts, and the",
    "# auth callout answered by `agentbus authority serve`. Include this file from",
    "# the server's config (`include <path relative to that file>`); the server",
    "# needs JetStream enabled and no other authorization block.",
    "",
    renderConfig(state.serverConfig(root) as never),
  ].join("\n");
}

/** The include file of a static configuration ({@link staticServerConfig}'s blocks). */
export function staticIncludeFileText(config: Record<string, unknown>): string {
  return [
    "# nats-server configuration blocks written by agentbus (agentbus authority config --static):",
    "# one account per tenant with JetStream, the AUTH and SYS accounts, and every",
    "# issued identity with its role's permissions, for a server without auth callout.",
    "# Generate it again and reload the server after issuing, revoking or granting.",
    "",
    renderConfig(config as never),
  ].join("\n");
}

/** What {@link reloadServer} did. */
export type ReloadOutcome =
  | { reloaded: true; pid: number; file: string }
  | { reloaded: false; file?: string; reason: string; command?: string };

/**
 * Writes the authority's current configuration where the recorded server
 * reads it and has the server reload it: a server launched by `agentbus
 * up` gets its whole config file rewritten and a SIGHUP (resolves once the
 * server reports the new load time); an operator's server gets its include
 * file rewritten, and a SIGHUP when `pid` is given, else the outcome says
 * which command reloads it.
 */
export async function reloadServer(state: AuthorityState, options: { pid?: number } = {}): Promise<ReloadOutcome> {
  const record = readServerRecord(state.dir);
  if (!record) {
    return { reloaded: false, reason: `no server is recorded for ${state.dir}: write the configuration with agentbus authority config (or start agentbus up), then start or reload nats-server` };
  }
  if (record.kind === "include") {
    writeFileSync(record.file, includeFileText(state, record.root));
    if (options.pid === undefined) {
      return { reloaded: false, file: record.file, reason: `rewrote ${record.file}; nats-server must reload it`, command: "nats-server --signal reload" };
    }
    signalReload(options.pid);
    return { reloaded: true, pid: options.pid, file: record.file };
  }
  if (!processAlive(record.pid)) {
    return { reloaded: false, file: record.configFile, reason: `the nats-server agentbus up started (pid ${record.pid}) is not running; the next agentbus up configures it` };
  }
  const monitorUrl = `http://127.0.0.1:${record.httpPort}`;
  const loaded = async () => (await monitorJson<{ config_load_time?: string }>(monitorUrl, "/varz")).config_load_time;
  const before = await loaded();
  writeFileSync(
    record.configFile,
    configFileText(serverConfig({ port: record.port, httpPort: record.httpPort, storeDir: record.storeDir, jetstream: true, config: state.serverConfig(record.root) })),
  );
  signalReload(record.pid);
  const deadline = Date.now() + 10_000;
  while ((await loaded()) === before) {
    if (Date.now() > deadline) throw new AgentBusError("TIMEOUT", `nats-server (pid ${record.pid}) did not reload ${record.configFile} within 10 s`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return { reloaded: true, pid: record.pid, file: record.configFile };
}

function signalReload(pid: number): void {
  try {
    process.kill(pid, "SIGHUP");
  } catch (cause) {
    throw new AgentBusError("UNAVAILABLE", `cannot signal nats-server (pid ${pid}) to reload: ${(cause as Error).message}`, { cause });
  }
}
