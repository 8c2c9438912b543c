import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { describe, expect, it } from "vitest";
import { useNatsServer, useNatsSupercluster } from "../helpers/nats.js";
import { compareVersions } from "../../core/index.js";

const readme = readFileSync(fileURLToPath(new URL("../../README.md", import.meta.url)), "utf8");
const core = pathToFileURL(fileURLToPath(new URL("../../core/index.ts", import.meta.url))).href;
const a2a = pathToFileURL(fileURLToPath(new URL("../../bridges/a2a/index.ts", import.meta.url))).href;
const testing = pathToFileURL(fileURLToPath(new URL("../../core/testing.ts", import.meta.url))).href;

/** Runs TypeScript source as a file of its own (tsx); its exit code and output. */
async function runExample(code: string): Promise<{ exit: number | null; stdout: string; stderr: string }> {
  const file = join(mkdtempSync(join(tmpdir(), "agentbus-readme-")), "example.mts");
  writeFileSync(file, code);
  const child = spawn(process.execPath, ["--import", import.meta.resolve("tsx"), file], { env: { ...process.env, AGENTBUS_LOG_LEVEL: "warn" } });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (d) => (stdout += String(d)));
  child.stderr.on("data", (d) => (stderr += String(d)));
  const exit = await new Promise<number | null>((resolve) => child.on("exit", resolve));
  return { exit, stdout, stderr };
}

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
  const federation = useNatsSupercluster({ regions: ["east", "west"], nodesPerRegion: 1 });

  it("the library example runs as written (against a test server)", async () => {
    const code = exampleAfter("An agent and a caller, in one file:")
      .replace('from "agentbus"', `from ${JSON.stringify(core)}`)
      .replace('"nats://127.0.0.1:4222"', JSON.stringify(nats.server.url));
    const { exit, stdout, stderr } = await runExample(code);
    expect(exit, stderr).toBe(0);
    expect(stdout).toContain("hello, Ada");
    expect(stdout).toContain("hello, Grace");
    expect(stdout).toContain("TASK_STATE_COMPLETED");
  }, 60_000);

  it("the scheduling example runs as written", async () => {
    const code = exampleAfter("### Scheduling work")
      .replace('from "agentbus"', `from ${JSON.stringify(core)}`)
      .replace('"nats://127.0.0.1:4222"', JSON.stringify(nats.server.url));
    const { exit, stdout, stderr } = await runExample(code);
    expect(exit, stderr).toBe(0);
    // (The library's warnings are JSON lines on stdout: not the example's output.)
    expect(stdout.split("\n").filter((l) => !l.startsWith("{")).slice(0, 4)).toEqual([
      "report on outage",
      "report on weekly",
      "report on red; report on blue",
      expect.stringMatching(/^nightly runs next at \d{4}-\d\d-\d\dT0[01]:30:00\.000Z$/),
    ]);
  }, 60_000);

  it("the federation example runs as written (against a test supercluster)", async () => {
    if (compareVersions(federation.supercluster.servers[0]!.version, "2.10.0") < 0) return; // a registry per region needs 2.10
    const code = exampleAfter("## Federation: one bus across regions")
      .replace('from "agentbus"', `from ${JSON.stringify(core)}`)
      .replace('"nats://127.0.0.1:4222"', JSON.stringify(federation.supercluster.clusters["east"]!.urls[0]))
      .replace('"nats://127.0.0.1:5222"', JSON.stringify(federation.supercluster.clusters["west"]!.urls[0]))
      .replaceAll("insecureAllowAll: true", `insecureAllowAll: true, auth: ${JSON.stringify(federation.supercluster.auth)}`);
    const { exit, stdout, stderr } = await runExample(code);
    expect(exit, stderr).toBe(0);
    expect(stdout.split("\n").filter((l) => !l.startsWith("{")).slice(0, 3)).toEqual(["west ran in west", "TASK_STATE_SUBMITTED", "east:0 west:1"]);
  }, 90_000);

  it("the A2A over NATS example runs as written: a verified card, a task through the SDK client", async () => {
    const code = exampleAfter("A2A over NATS: an A2A client inside the network")
      .replace('from "agentbus"', `from ${JSON.stringify(core)}`)
      .replace('from "agentbus/bridges/a2a"', `from ${JSON.stringify(a2a)}`)
      .replace('from "@a2a-js/sdk/client"', `from ${JSON.stringify(import.meta.resolve("@a2a-js/sdk/client"))}`)
      .replaceAll('"nats://127.0.0.1:4222"', JSON.stringify(nats.server.url));
    const { exit, stdout, stderr } = await runExample(code);
    expect(exit, stderr).toBe(0);
    expect(stdout.split("\n").filter((l) => !l.startsWith("{"))[0]).toBe("true");
  }, 60_000);

  it("the testing example runs as written and prints what its comments say", async () => {
    const code = exampleAfter("### Testing a handler without NATS").replace('from "agentbus/testing"', `from ${JSON.stringify(testing)}`);
    const { exit, stdout, stderr } = await runExample(code);
    expect(exit, stderr).toBe(0);
    expect(stdout).toContain("TASK_STATE_COMPLETED summary of dragons: 3 facts about dragons");
    expect(stdout).toContain("3 [ 'lookup' ]");
  }, 60_000);
});
