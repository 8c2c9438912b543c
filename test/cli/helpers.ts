/**
 * Running the `agentbus` command in tests: each run is a real Node process
 * running the built command (`dist/`, rebuilt for a test run when a source
 * is newer: test/setup/build.ts), in a directory of the test's choosing, with an
 * environment that names no NATS server, tenant, identity or data dir
 * unless the test gives one.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterEach } from "vitest";
import { eventually } from "../helpers/bus.js";

/** The command's entry point, built: the package's bin. */
export const main = fileURLToPath(new URL("../../dist/cli/main.js", import.meta.url));

/** The test process's environment without anything that would pick a server, tenant, identity, data dir or log level. */
export function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (k !== "NATS_URL" && !k.startsWith("AGENTBUS_")) env[k] = v;
  return { ...env, ...extra };
}

/** A new scratch directory. */
export const scratch = (prefix = "agentbus-cli-"): string => mkdtempSync(join(tmpdir(), prefix));

export interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
  /** Wall time from spawn to exit, ms. */
  ms: number;
}

/** Runs `agentbus <args>` to its end in `cwd` (default: a scratch directory). */
export function runCli(args: string[], o: { cwd?: string; env?: Record<string, string> } = {}): Promise<CliRun> {
  const started = Date.now();
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [main, ...args], { cwd: o.cwd ?? scratch(), env: cleanEnv(o.env) });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += String(d)));
    child.stderr.on("data", (d) => (stderr += String(d)));
    child.on("exit", (code, signal) => resolve({ code: code ?? (signal ? 128 : -1), stdout, stderr, ms: Date.now() - started }));
  });
}

/** A running `agentbus up`. */
export interface Up {
  child: ChildProcess;
  /** Its working directory; its data dir is `<dir>/.agentbus` unless told otherwise. */
  dir: string;
  stdout: () => string;
  stderr: () => string;
  exited: Promise<number | null>;
}

const ups: Up[] = [];
afterEach(() => {
  for (const up of ups.splice(0)) if (up.child.exitCode === null && up.child.signalCode === null) up.child.kill("SIGKILL");
});

/** Starts `agentbus up --port 0 --json --log-level warn <args>` in `dir` (default: a scratch directory), with `files` written there first. */
export function startUp(args: string[], o: { dir?: string; files?: Record<string, string>; env?: Record<string, string> } = {}): Up {
  const dir = o.dir ?? scratch("agentbus-up-");
  for (const [name, text] of Object.entries(o.files ?? {})) writeFileSync(join(dir, name), text);
  const child = spawn(process.execPath, [main, "up", "--port", "0", "--json", "--log-level", "warn", ...args], { cwd: dir, env: cleanEnv(o.env) });
  let stdout = "";
  let stderr = "";
  child.stdout!.on("data", (d) => (stdout += String(d)));
  child.stderr!.on("data", (d) => (stderr += String(d)));
  const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
  const up = { child, dir, stdout: () => stdout, stderr: () => stderr, exited };
  ups.push(up);
  return up;
}

/** What `up --json` prints when it is ready. */
export interface UpReady {
  url: string;
  nats: string;
  natsSource: string;
  secure: boolean;
  tenant: string;
  gateway: string;
  admin?: string;
  /** The bus identity of each API key, by name. */
  keys?: Record<string, string>;
}

/** The JSON line `up --json` prints when it is ready. */
export async function ready(up: Up): Promise<UpReady> {
  const line = await eventually(() => up.stdout().split("\n").find((l) => l.startsWith("{")), 60_000).catch((err: Error) => {
    throw new Error(`${err.message}\n--- stderr ---\n${up.stderr()}`);
  });
  return JSON.parse(line!) as UpReady;
}
