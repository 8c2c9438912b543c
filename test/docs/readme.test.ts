import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { describe, expect, it } from "vitest";
import { useNatsServer } from "../helpers/nats.js";

const readme = readFileSync(fileURLToPath(new URL("../../README.md", import.meta.url)), "utf8");
const core = pathToFileURL(fileURLToPath(new URL("../../core/index.ts", import.meta.url))).href;

/** The first TypeScript block after `marker` in README.md. */
function exampleAfter(marker: string): string {
  const at = readme.indexOf(marker);
  if (at < 0) throw new Error(`README.md has no "${marker}"`);
  const match = /```ts\n([\s\S]*?)```/.exec(readme.slice(at));
  if (!match) throw new Error(`no ts block after "${marker}"`);
  return match[1]!;
}

describe("README.md", () => {
  const nats = useNatsServer();

  it("the library example runs as written (against a test server)", async () => {
    const code = exampleAfter("An agent and a caller, in one file:")
      .replace('from "agentbus"', `from ${JSON.stringify(core)}`)
      .replace('"nats://127.0.0.1:4222"', JSON.stringify(nats.server.url));
    const file = join(mkdtempSync(join(tmpdir(), "agentbus-readme-")), "example.mts");
    writeFileSync(file, code);
    const tsx = import.meta.resolve("tsx");
    const child = spawn(process.execPath, ["--import", tsx, file], { env: { ...process.env, AGENTBUS_LOG_LEVEL: "warn" } });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += String(d)));
    child.stderr.on("data", (d) => (stderr += String(d)));
    const code_ = await new Promise<number | null>((resolve) => child.on("exit", resolve));
    expect(code_, stderr).toBe(0);
    expect(stdout).toContain("hello, Ada");
    expect(stdout).toContain("hello, Grace");
    expect(stdout).toContain("TASK_STATE_COMPLETED");
  }, 60_000);
});
