/**
 * Where a running `agentbus up` is: `<data-dir>/up.json`, written (0600)
 * when it is ready and removed when it stops cleanly. The other commands
 * read it when no NATS server is named (`--nats`, `NATS_URL`), so after
 * `agentbus up --demo` a plain `agentbus send write "the sea"` reaches its
 * server, in its tenant, as its demo user.
 */
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { processAlive } from "../authority/index.js";

/** The file name of the record in a data dir. */
export const UP_RECORD_FILE = "up.json";

/** The data dir when neither `--data-dir` nor `AGENTBUS_DATA_DIR` is given. */
export const DEFAULT_DATA_DIR = ".agentbus";

/** What `<data-dir>/up.json` holds. */
export interface UpRecord {
  /** The NATS server up uses (with regions: a node of its gateway's region). */
  nats: string;
  /** Federated: the region `nats` is in, and every region of the bus (the commands connect federated, in that region). */
  region?: string;
  regions?: string[];
  /** The gateway's base URL (A2A, MCP, the monitor). */
  url: string;
  tenant: string;
  /** The `agentbus up` process. */
  pid: number;
  /** Its NATS server authenticates identities (the embedded, secured one). */
  secure: boolean;
  /** With `--demo`: the demo user, the identity the CLI acts as by default (its seed file, absolute, and its id). */
  demo?: { seed: string; id: string };
  /** When up became ready, ISO 8601. */
  started: string;
}

/** The data dir of a command: `--data-dir`, else `AGENTBUS_DATA_DIR`, else `./.agentbus`. */
export function dataDirOf(o: { dataDir?: string }, env: NodeJS.ProcessEnv = process.env): string {
  return o.dataDir || env.AGENTBUS_DATA_DIR || DEFAULT_DATA_DIR;
}

/** The path of the record in `dataDir`. */
export const upRecordPath = (dataDir: string): string => join(dataDir, UP_RECORD_FILE);

/** Writes the record (mode 0600; replaced whole, so a reader never sees half of it). */
export function writeUpRecord(dataDir: string, record: UpRecord): void {
  mkdirSync(dataDir, { recursive: true });
  const file = upRecordPath(dataDir);
  const partial = `${file}.${process.pid}.tmp`;
  writeFileSync(partial, `${JSON.stringify(record, null, 2)}\n`, { mode: 0o600 });
  chmodSync(partial, 0o600);
  renameSync(partial, file);
}

/** Removes the record if it is the one process `pid` wrote (another up may have replaced it). */
export function removeUpRecord(dataDir: string, pid = process.pid): void {
  if (readUpRecord(dataDir)?.pid === pid) rmSync(upRecordPath(dataDir), { force: true });
}

/** The record in `dataDir`, whether its process runs or not; undefined when there is none (or it is not one). */
export function readUpRecord(dataDir: string): UpRecord | undefined {
  const file = upRecordPath(dataDir);
  if (!existsSync(file)) return undefined;
  let value: Partial<UpRecord>;
  try {
    value = JSON.parse(readFileSync(file, "utf8")) as Partial<UpRecord>;
  } catch {
    return undefined;
  }
  if (typeof value?.nats !== "string" || typeof value.tenant !== "string" || !Number.isInteger(value.pid)) return undefined;
  const demo = value.demo && typeof value.demo.seed === "string" ? { ...value.demo, seed: resolve(dataDir, value.demo.seed) } : undefined;
  return { ...(value as UpRecord), demo };
}

/** The record in `dataDir` when its `agentbus up` is still running; undefined otherwise (none, or left by one that was killed). */
export function liveUpRecord(dataDir: string): UpRecord | undefined {
  const record = readUpRecord(dataDir);
  return record && processAlive(record.pid) ? record : undefined;
}
