import { spawn, type ChildProcess } from "node:child_process";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

/** A TypeScript fixture running in its own Node process (through tsx). */
export interface FixtureProcess {
  child: ChildProcess;
  /** The first JSON line the fixture printed. */
  hello: Record<string, unknown>;
  kill(signal?: NodeJS.Signals): Promise<void>;
}

const running = new Set<ChildProcess>();
process.on("exit", () => {
  for (const c of running) c.kill("SIGKILL");
});

/** Starts `test/fixtures/<name>.ts` with `args`; resolves on its first stdout line. */
export async function startFixture(name: string, args: string[], timeoutMs = 20_000): Promise<FixtureProcess> {
  const file = fileURLToPath(new URL(`../fixtures/${name}.ts`, import.meta.url));
  const child = spawn(process.execPath, ["--import", "tsx", file, ...args], { stdio: ["ignore", "pipe", "pipe"] });
  running.add(child);
  child.on("exit", () => running.delete(child));
  let stderr = "";
  child.stderr!.on("data", (d) => (stderr += String(d)));
  const lines = createInterface({ input: child.stdout! });
  const hello = await new Promise<Record<string, unknown>>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`fixture ${name} did not start: ${stderr}`)), timeoutMs);
    lines.once("line", (line) => {
      clearTimeout(timer);
      resolve(JSON.parse(line) as Record<string, unknown>);
    });
    child.once("exit", (code) => reject(new Error(`fixture ${name} exited with ${code}: ${stderr}`)));
  });
  return {
    child,
    hello,
    kill: (signal = "SIGTERM") =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null || child.signalCode !== null) return resolve();
        child.once("exit", () => resolve());
        child.kill(signal);
      }),
  };
}
