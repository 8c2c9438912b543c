import { execFile } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, describe, expect, it } from "vitest";
import { findNatsServer, mergeConfig, renderConfig } from "../../nats/index.js";

const run = promisify(execFile);
const dirs: string[] = [];
afterAll(async () => {
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

/** Runs `nats-server -t` (parse and validate, do not start) on `text`. */
async function checkConfig(text: string): Promise<{ ok: boolean; output: string }> {
  const dir = await mkdtemp(join(tmpdir(), "agentbus-nats-conf-"));
  dirs.push(dir);
  const file = join(dir, "test.conf");
  await writeFile(file, text);
  try {
    const { stdout, stderr } = await run(findNatsServer(), ["-t", "-c", file]);
    return { ok: true, output: stdout + stderr };
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string };
    return { ok: false, output: `${e.stdout ?? ""}${e.stderr ?? ""}` };
  }
}

describe("renderConfig", () => {
  it("renders nested blocks, arrays and scalars readably", () => {
    const text = renderConfig({
      port: 4222,
      debug: false,
      jetstream: { store_dir: "/data", max_mem: "1G" },
      cluster: { name: "c", routes: ["nats-route://a:6222", "nats-route://b:6222"] },
      empty: [],
    });
    expect(text).toBe(
      [
        "port: 4222",
        "debug: false",
        "jetstream {",
        '  store_dir: "/data"',
        '  max_mem: "1G"',
        "}",
        "cluster {",
        '  name: "c"',
        "  routes: [",
        '    "nats-route://a:6222",',
        '    "nats-route://b:6222"',
        "  ]",
        "}",
        "empty: []",
        "",
      ].join("\n"),
    );
  });

  it("renders objects inside arrays as braces blocks", () => {
    expect(renderConfig({ users: [{ user: "a", password: "b" }] })).toBe(
      ["users: [", "  {", '    user: "a"', '    password: "b"', "  }", "]", ""].join("\n"),
    );
  });

  it("escapes strings the way the parser expects and quotes odd keys", () => {
    expect(renderConfig({ s: 'a"b\\c\nd\te\x01' })).toBe('s: "a\\"b\\\\c\\nd\\te\\x01"\n');
    expect(renderConfig({ "foo.*": "$1", ok_key: "$VAR" })).toBe('"foo.*": "$1"\nok_key: "$VAR"\n');
  });

  it("spells numbers without exponents and rejects what it cannot express", () => {
    expect(renderConfig({ big: 1e21, f: 1.5, neg: -1 })).toBe("big: 1000000000000000000000\nf: 1.5\nneg: -1\n");
    expect(() => renderConfig({ x: Number.NaN })).toThrow(RangeError);
    expect(() => renderConfig({ x: 1e-9 })).toThrow(RangeError);
    expect(() => renderConfig({ x: () => 1 })).toThrow(TypeError);
  });

  it("skips null and undefined members", () => {
    expect(renderConfig({ a: undefined, b: null, c: [1, null], d: {} })).toBe("c: [\n  1\n]\nd {}\n");
  });

  it("produces a config nats-server accepts", async () => {
    const text = renderConfig({
      server_name: "render-test",
      listen: "127.0.0.1:4999",
      http: "127.0.0.1:8999",
      max_payload: 1048576,
      debug: false,
      jetstream: { store_dir: join(tmpdir(), "agentbus-nats-unused"), max_mem: "64M" },
      accounts: {
        SYS: { users: [{ user: "sys", password: "sys" }] },
        APP: { jetstream: "enabled", users: [{ user: "app", password: 'p"w\\d' }] },
      },
      system_account: "SYS",
      cluster: { name: "c", listen: "127.0.0.1:6999", routes: ["nats-route://127.0.0.1:6998"] },
      gateway: { name: "c", listen: "127.0.0.1:7999", gateways: [{ name: "d", urls: ["nats://127.0.0.1:7998"] }] },
    });
    const result = await checkConfig(text);
    expect(result.output).toContain("is valid");
    expect(result.ok).toBe(true);
  });

  it("renders arrays of numbers in a syntax the parser accepts", async () => {
    // nats-server 2.9.10 rejects the inline form `[1, 2]` (a number directly
    // before `]`); our multi-line form must get past the parser, which then
    // complains only about the made-up field name.
    expect((await checkConfig("numbers: [1, 2]\n")).output).toContain("Parse error");
    const result = await checkConfig(renderConfig({ numbers: [1, 2] }));
    expect(result.output).not.toContain("Parse error");
    expect(result.output).toContain('unknown field "numbers"');
  });
});

describe("mergeConfig", () => {
  it("merges objects deeply, replaces arrays and scalars, and deletes on null", () => {
    const merged = mergeConfig(
      { a: 1, b: { c: 2, d: [1, 2] }, e: "x" },
      { b: { d: [3], f: true }, e: null, g: "new" },
    );
    expect(merged).toEqual({ a: 1, b: { c: 2, d: [3], f: true }, g: "new" });
  });
});
