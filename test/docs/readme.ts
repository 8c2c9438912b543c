/**
 * Running README.md's code blocks (readme.test.ts and
 * readme-sessions.test.ts): every code block runs, as written. A block names its
 * runner in the comment line above it (`<!-- readme-test: <name> -->`); a
 * block without one, or a runner without its block, fails the first test.
 *
 * What the runners change, and only that: the addresses a reader's machine
 * has and a test machine must not use (`nats://127.0.0.1:4222`, the port
 * 8080, fixed listen ports) become the test's own servers and free ports;
 * `<placeholders>` are filled in from what the commands before them printed;
 * a block that continues an earlier one ("with the agent and caller above")
 * runs inside it. TypeScript blocks run from `.agentbus/readme/` in this
 * checkout, so `agentbus-nats` imports the package itself (`dist/`, built by
 * test/setup/build.ts as `npm ci` builds it); shell blocks run in bash with
 * `agentbus` on the PATH (the package's bin, `dist/cli/main.js`).
 */
import { spawn, type ChildProcess } from "node:child_process";
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { createServer, type AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll } from "vitest";

export const root = fileURLToPath(new URL("../../", import.meta.url));
export const readme = readFileSync(join(root, "README.md"), "utf8");
export const LOCAL_NATS = "nats://127.0.0.1:4222";

/** One fenced block with a language. */
export interface Block {
  name: string;
  lang: string;
  code: string;
  line: number;
}

/** The README's code blocks (fences with a language; a fence without one is a figure), each with its runner's name. */
export function parseBlocks(md: string): Block[] {
  const lines = md.split("\n");
  const out: Block[] = [];
  for (let i = 0; i < lines.length; i++) {
    const open = /^```(\S*)\s*$/.exec(lines[i]!);
    if (!open) continue;
    const end = lines.findIndex((l, j) => j > i && l.startsWith("```"));
    if (!open[1]) {
      i = end;
      continue;
    }
    const marker = /^<!-- readme-test: ([a-z0-9-]+) -->$/.exec(lines[i - 1] ?? "");
    out.push({ name: marker?.[1] ?? `(unnamed, line ${i + 1})`, lang: open[1], code: lines.slice(i + 1, end).join("\n") + "\n", line: i + 1 });
    i = end;
  }
  return out;
}

export const blocks = parseBlocks(readme);
export const block = (name: string): string => {
  const found = blocks.filter((b) => b.name === name);
  if (found.length !== 1) throw new Error(`README.md has ${found.length} blocks named ${name}`);
  return found[0]!.code;
};

/** A free loopback TCP port. */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const { port } = server.address() as AddressInfo;
  await new Promise((r) => server.close(r));
  return port;
}

/** A process started by a runner, with its output so far; stopped (with its process group) at the end of the file. */
export interface Started {
  child: ChildProcess;
  stdout(): string;
  stderr(): string;
  exited: Promise<number | null>;
}
const running = new Set<ChildProcess>();
export function start(command: string, args: string[], options: { cwd: string; env?: NodeJS.ProcessEnv; stdin?: string }): Started {
  const child = spawn(command, args, { cwd: options.cwd, env: { ...process.env, ...options.env }, detached: true, stdio: ["pipe", "pipe", "pipe"] });
  running.add(child);
  let out = "";
  let err = "";
  child.stdout!.on("data", (d) => (out += String(d)));
  child.stderr!.on("data", (d) => (err += String(d)));
  child.stdin!.end(options.stdin ?? "");
  const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => {
    running.delete(child);
    resolve(code);
  }));
  return { child, stdout: () => out, stderr: () => err, exited };
}
export const stopGroup = (child: ChildProcess, signal: NodeJS.Signals = "SIGTERM") => {
  try {
    process.kill(-child.pid!, signal);
  } catch {
    /* gone */
  }
};
afterAll(async () => {
  for (const child of running) stopGroup(child);
  await new Promise((r) => setTimeout(r, 500));
  for (const child of running) stopGroup(child, "SIGKILL");
});

/** Resolves once `test` holds for the output, or fails with the output so far. */
export async function waitFor(p: Started, test: (out: string) => boolean, what: string, timeoutMs = 60_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!test(p.stdout())) {
    if (Date.now() > until || p.child.exitCode !== null) throw new Error(`no ${what}: exit ${p.child.exitCode}\nstdout: ${p.stdout()}\nstderr: ${p.stderr()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Runs TypeScript as a module of this checkout (it imports `agentbus-nats` by name); its exit code and output. */
export async function runTs(name: string, code: string, env: NodeJS.ProcessEnv = {}, timeoutMs = 60_000): Promise<{ exit: number | null; stdout: string; stderr: string }> {
  const p = startTs(name, code, env);
  const timer = setTimeout(() => stopGroup(p.child, "SIGKILL"), timeoutMs);
  const exit = await p.exited;
  clearTimeout(timer);
  return { exit, stdout: p.stdout(), stderr: p.stderr() };
}
export function startTs(name: string, code: string, env: NodeJS.ProcessEnv = {}): Started {
  const dir = join(root, ".agentbus", "readme");
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `${name}-${process.pid}.mts`);
  writeFileSync(file, code);
  return start(process.execPath, ["--import", "tsx", file], { cwd: root, env });
}

/** A directory with `agentbus` (this checkout's bin) first on the PATH. */
export function binDir(): string {
  const dir = mkdtempSync(join(tmpdir(), "agentbus-bin-"));
  writeFileSync(join(dir, "agentbus"), `#!/bin/sh\nexec "${process.execPath}" "${join(root, "dist/cli/main.js")}" "$@"\n`);
  chmodSync(join(dir, "agentbus"), 0o755);
  return dir;
}
export const PATH = `${binDir()}:${join(root, ".agentbus/bin")}:${process.env.PATH}`;

/** Runs a shell block in bash (errors stop it), `agentbus` on the PATH. */
export async function runSh(code: string, cwd: string, env: NodeJS.ProcessEnv = {}, timeoutMs = 120_000): Promise<{ exit: number | null; stdout: string; stderr: string }> {
  const p = start("bash", ["-e", "-c", code], { cwd, env: { PATH, ...env } });
  const timer = setTimeout(() => stopGroup(p.child, "SIGKILL"), timeoutMs);
  const exit = await p.exited;
  clearTimeout(timer);
  return { exit, stdout: p.stdout(), stderr: p.stderr() };
}

/** The library block with `extra` run before its last line (the closes): a block that continues it. */
export function insideLibrary(extra: string): string {
  const lib = block("library");
  const closing = lib.indexOf("await Promise.all([caller.close()");
  return lib.slice(0, closing) + extra + lib.slice(closing);
}

/** Output lines that are the example's own (the library logs JSON to stderr, never to stdout). */
export const lines = (stdout: string) => stdout.split("\n").filter(Boolean);

/** Every runner, by block name: readme.test.ts and readme-sessions.test.ts run them. */
export const RUNNERS = [
  "library",
  "library-schemas",
  "library-tasks",
  "scheduling",
  "testing",
  "a2a-bridge",
  "a2a-bridge-curl",
  "a2a-over-nats",
  "federation-library",
  "start",
  "try",
  "ci",
  "a2a-client",
  "mcp-client",
  "nats-cli",
  "mcp-stdio-config",
  "mcp-gateway-config",
  "cli-session",
  "http-and-command-agents",
  "secure-deployment",
  "federation-up",
];
