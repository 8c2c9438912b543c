/**
 * Vitest global setup: `dist/` (what `npm ci` builds, and what the package,
 * the `agentbus` command and the README's examples run) is rebuilt when a
 * source file is newer than the last build, once per run. Concurrent runs
 * take turns through a lock directory.
 */
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("../../", import.meta.url));
const stamp = join(root, "dist", ".build-stamp");
const lock = join(root, ".agentbus", "build.lock");

/** The sources `scripts/build.sh` compiles or copies, and the build's own configuration. */
function newestSource(): number {
  const { include } = JSON.parse(readFileSync(join(root, "tsconfig.build.json"), "utf8")) as { include: string[] };
  let newest = Math.max(...["tsconfig.json", "tsconfig.build.json", "package.json", "scripts/build.sh"].map((f) => statSync(join(root, f)).mtimeMs));
  const walk = (dir: string): void => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      if (e.name === "node_modules") continue;
      const path = join(dir, e.name);
      if (e.isDirectory()) walk(path);
      else newest = Math.max(newest, statSync(path).mtimeMs);
    }
  };
  for (const dir of include) walk(join(root, dir));
  return newest;
}

const built = (): boolean => existsSync(stamp) && Number(readFileSync(stamp, "utf8")) >= newestSource();

export default async function setup(): Promise<void> {
  if (built()) return;
  mkdirSync(join(root, ".agentbus"), { recursive: true });
  const deadline = Date.now() + 120_000;
  for (;;) {
    try {
      mkdirSync(lock);
      break;
    } catch {
      // Another run builds: wait for it, then look again. A lock older than two minutes is a run that died.
      if (Date.now() > deadline || Date.now() - (statSync(lock, { throwIfNoEntry: false })?.mtimeMs ?? Date.now()) > 120_000) rmSync(lock, { recursive: true, force: true });
      await new Promise((r) => setTimeout(r, 500));
    }
  }
  try {
    if (built()) return;
    const started = newestSource();
    try {
      execFileSync("bash", [join(root, "scripts/build.sh")], { cwd: root, stdio: ["ignore", "ignore", "pipe"] });
    } catch (err) {
      // Type errors are the typecheck's to report; tests that run dist/ then fail on their own.
      process.stderr.write(`agentbus tests: npm run build failed: ${String((err as { stderr?: Buffer }).stderr ?? err).slice(0, 2000)}\n`);
      return;
    }
    writeFileSync(stamp, String(started));
  } finally {
    rmSync(lock, { recursive: true, force: true });
  }
}
