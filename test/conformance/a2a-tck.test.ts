/**
 * The external A2A conformance kit (a2aproject/a2a-tck, vendored unchanged
 * in test/conformance/a2a-tck) against the A2A bridge, over each binding the
 * kit speaks: JSON-RPC, HTTP+JSON and gRPC, then its multi-transport
 * equivalence tests across the three.
 *
 * Every test the kit runs must pass (or be skipped by the kit itself),
 * except those listed in a2a-tck-expected-failures.json with the reason,
 * and every listed one must still fail: a fixed bridge (or a kit that
 * changed) shows as a failure here until the list says so.
 *
 * It runs the kit with Python and Debian's packages (bash scripts/a2a-tck.sh
 * installs them); without them it is skipped, saying what is missing. The
 * kit is run with pytest directly, with run_tck.py's selection of tests per
 * category (its own runner needs pytest-json-report, which Debian lacks).
 *
 * The bridge runs with API keys, one caller per concurrent kit run (each
 * sees its own tasks only), so the three bindings run at once; the kit's
 * push tests use a fixed webhook port (8888), so they run one binding after
 * the other, at the end. See test/conformance/README.md.
 */
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { useNatsServer } from "../helpers/nats.js";
import { startTckSut, tckApiKey, type TckSut } from "./tck-sut.js";

const HERE = dirname(fileURLToPath(import.meta.url));
const KIT = join(HERE, "a2a-tck");
const PUSH_TESTS = "tests/optional/capabilities/test_push_notification_config_methods.py";

/** The bindings the kit tests, by their `protocolBinding` names, with the kit's name and run_tck.py's markers of its mandatory category. */
const BINDINGS = [
  { binding: "JSONRPC", kit: "jsonrpc", mandatory: "mandatory or mandatory_protocol or mandatory_jsonrpc" },
  { binding: "HTTP+JSON", kit: "rest", mandatory: "mandatory or mandatory_protocol" },
  { binding: "GRPC", kit: "grpc", mandatory: "mandatory or mandatory_protocol" },
] as const;
/** The name of the multi-transport equivalence run in the expected failures file. */
const EQUIVALENCE = "ALL";
type Group = (typeof BINDINGS)[number]["binding"] | typeof EQUIVALENCE;

/** What the kit needs of Python (modules its tests and clients import) and of the system (the gRPC stubs' generator). */
const PYTHON_MODULES = ["pytest", "pytest_asyncio", "httpx", "requests", "responses", "OpenSSL", "aiohttp", "grpc", "google.protobuf"];
const PROGRAMS = ["protoc", "grpc_python_plugin"];
const INSTALL_HINT = "install the kit's Debian packages with: bash scripts/a2a-tck.sh --install";

/** The Python to run the kit with (A2A_TCK_PYTHON, else Debian's, else python3 on PATH), or what is missing. */
function findPython(): { python: string } | { missing: string } {
  const candidates = [process.env.A2A_TCK_PYTHON, "/usr/bin/python3", "python3"].filter((c): c is string => !!c);
  let firstMissing: string | undefined;
  for (const python of candidates) {
    const probe = spawnSync(python, ["-c", `import importlib.util as u, sys; print(" ".join(m for m in ${JSON.stringify(PYTHON_MODULES)} if u.find_spec(m) is None))`], { encoding: "utf8" });
    if (probe.error || probe.status !== 0) continue;
    const lacking = probe.stdout.trim();
    if (!lacking) return { python };
    firstMissing ??= `${python} lacks the Python modules ${lacking}`;
  }
  return { missing: firstMissing ?? "no python3" };
}

function prerequisites(): { python: string } | { missing: string } {
  const found = findPython();
  const programs = PROGRAMS.filter((p) => spawnSync("sh", ["-c", `command -v ${p}`]).status !== 0);
  if ("missing" in found) return { missing: [found.missing, ...(programs.length > 0 ? [`no ${programs.join(", ")}`] : [])].join("; ") };
  if (programs.length > 0) return { missing: `no ${programs.join(", ")}` };
  return found;
}

interface Outcome {
  nodeid: string;
  outcome: "passed" | "failed" | "error" | "skipped" | "xfailed" | "xpassed";
  message: string;
}
interface ExpectedFailure {
  test: string;
  bindings: Group[];
  kind: "bridge" | "kit";
  reason: string;
}
interface KitRun {
  /** Exit code of each pytest run (0: all passed, 1: some failed). */
  codes: number[];
  log: string;
  outcomes: Outcome[];
}

const expectedFile = JSON.parse(readFileSync(join(HERE, "a2a-tck-expected-failures.json"), "utf8")) as { expectedFailures: ExpectedFailure[] };
const FAILED = new Set(["failed", "error"]);

/** Runs pytest on the kit with `args`; outcomes come from the plugin's results file. */
function pytest(python: string, args: string[], env: Record<string, string>, results: string, timeoutMs: number): Promise<{ code: number; log: string }> {
  return new Promise((resolve) => {
    const child = spawn(python, ["-m", "pytest", ...args, "-q", "--tb=line", "-p", "agentbus_tck_plugin", "-p", "no:cacheprovider"], {
      cwd: KIT,
      env: { ...process.env, PYTHONDONTWRITEBYTECODE: "1", PYTHONPATH: join(HERE, "python"), AGENTBUS_TCK_RESULTS: results, ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let log = "";
    child.stdout.on("data", (d) => (log += String(d)));
    child.stderr.on("data", (d) => (log += String(d)));
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? (signal ? 128 : 1), log: signal ? `${log}\n(killed after ${timeoutMs} ms)` : log });
    });
  });
}

function readOutcomes(file: string): Outcome[] {
  if (!existsSync(file)) return [];
  return readFileSync(file, "utf8")
    .split("\n")
    .filter(Boolean)
    .map((l) => JSON.parse(l) as Outcome);
}

const found = prerequisites();

describe("A2A TCK (a2aproject/a2a-tck) against the A2A bridge", () => {
  if ("missing" in found) {
    const why = `A2A TCK skipped: ${found.missing}; ${INSTALL_HINT}`;
    process.stderr.write(`${why}\n`);
    it.skip(why, () => {});
    return;
  }
  const { python } = found;
  const nats = useNatsServer();
  let sut: TckSut;
  let work: string;
  const runs = new Map<Group, KitRun>();

  beforeAll(async () => {
    sut = await startTckSut(nats.server.url, { callers: [...BINDINGS.map((b) => b.kit), "equivalence"] });
    work = mkdtempSync(join(tmpdir(), "a2a-tck-"));
    const common = ["--sut-url", sut.sutUrl, "--test-scope=all"];
    const keyOf = (caller: string) => ({ A2A_AUTH_TYPE: "apikey", A2A_AUTH_HEADER: "x-api-key", A2A_AUTH_TOKEN: tckApiKey(caller) });
    const run = async (group: Group, caller: string, args: string[][]) => {
      const results = join(work, `${caller}.jsonl`);
      const entry = runs.get(group) ?? { codes: [], log: "", outcomes: [] };
      runs.set(group, entry);
      for (const a of args) {
        const { code, log } = await pytest(python, [...a, ...common], keyOf(caller), results, 240_000);
        entry.codes.push(code);
        entry.log += `$ pytest ${a.join(" ")}\n${log}\n`;
      }
      entry.outcomes = readOutcomes(results);
    };
    // Each binding's mandatory, capabilities, quality and features categories (as run_tck.py selects them), the bindings at once.
    await Promise.all(
      BINDINGS.map((b) =>
        run(b.binding, b.kit, [
          ["tests/mandatory/", "-m", b.mandatory, "--transports", b.kit],
          ["tests/optional/capabilities", "tests/optional/quality", "tests/optional/features", `--ignore=${PUSH_TESTS}`, "--transports", b.kit],
        ]),
      ),
    );
    // The push tests (one webhook port for all), then the equivalence tests across the three bindings.
    for (const b of BINDINGS) await run(b.binding, b.kit, [[PUSH_TESTS, "--transports", b.kit]]);
    await run(EQUIVALENCE, "equivalence", [["tests/optional/multi_transport/", "-m", "transport_equivalence", "--transports", BINDINGS.map((b) => b.kit).join(",")]]);
  }, 600_000);

  afterAll(async () => {
    await sut?.close();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  const groups: Array<{ group: Group; title: string }> = [
    ...BINDINGS.map((b) => ({ group: b.binding as Group, title: `over ${b.binding} (--transports ${b.kit})` })),
    { group: EQUIVALENCE, title: "multi-transport equivalence across JSON-RPC, HTTP+JSON and gRPC" },
  ];
  it.each(groups)("$title: every test passes but the expected failures, which still fail", ({ group }) => {
    const run = runs.get(group)!;
    const tail = run.log.split("\n").slice(-40).join("\n");
    // pytest: 0 all passed, 1 some failed; anything else (usage, collection, interrupted) is a broken run.
    expect(run.codes.every((c) => c === 0 || c === 1), `pytest did not run through:\n${tail}`).toBe(true);
    expect(run.outcomes.filter((o) => o.outcome === "passed").length, `no test passed:\n${tail}`).toBeGreaterThan(group === EQUIVALENCE ? 5 : 40);
    const expected = new Map(expectedFile.expectedFailures.filter((e) => e.bindings.includes(group)).map((e) => [e.test, e]));
    const failed = run.outcomes.filter((o) => FAILED.has(o.outcome));
    const unexpected = failed.filter((o) => !expected.has(o.nodeid)).map((o) => `${o.nodeid} (${o.outcome}): ${o.message}`);
    const byId = new Map(run.outcomes.map((o) => [o.nodeid, o]));
    const stale = [...expected.keys()]
      .filter((id) => !FAILED.has(byId.get(id)?.outcome ?? ""))
      .map((id) => `${id}: ${byId.get(id)?.outcome ?? "not run"} (listed: ${expected.get(id)!.reason.slice(0, 80)}…)`);
    const count = (o: string) => run.outcomes.filter((x) => x.outcome === o).length;
    process.stdout.write(
      `A2A TCK ${group}: ${count("passed") + count("xpassed")} passed, ${failed.length} failed (${failed.length - unexpected.length} expected), ${count("skipped") + count("xfailed")} skipped\n`,
    );
    expect(unexpected, "failures not in a2a-tck-expected-failures.json").toEqual([]);
    expect(stale, "listed in a2a-tck-expected-failures.json but no longer failing: remove them").toEqual([]);
  });
});
