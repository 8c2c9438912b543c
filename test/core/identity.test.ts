import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { inspect } from "node:util";
import { describe, expect, it } from "vitest";
import { AgentBusError, Identity, createLogger, isIdentityId, verifySignature } from "../../core/index.js";

describe("Identity", () => {
  it("ids are nkey user public keys and seeds round-trip", () => {
    const a = Identity.generate();
    expect(a.id).toMatch(/^U[A-Z2-7]{55}$/);
    expect(isIdentityId(a.id)).toBe(true);
    const seed = a.exportSeed();
    expect(seed).toMatch(/^SU[A-Z2-7]{56}$/);
    expect(Identity.fromSeed(seed).id).toBe(a.id);
  });

  it("loads from a seed file (.nk or .creds) and from the environment", () => {
    const a = Identity.generate();
    const dir = mkdtempSync(join(tmpdir(), "agentbus-id-"));
    writeFileSync(join(dir, "a.nk"), `${a.exportSeed()}\n`);
    writeFileSync(join(dir, "a.creds"), `-----BEGIN USER NKEY SEED-----\n${a.exportSeed()}\n------END USER NKEY SEED------\n`);
    expect(Identity.fromFile(join(dir, "a.nk")).id).toBe(a.id);
    expect(Identity.fromFile(join(dir, "a.creds")).id).toBe(a.id);
    process.env.AGENTBUS_TEST_SEED = a.exportSeed();
    expect(Identity.fromEnv("AGENTBUS_TEST_SEED").id).toBe(a.id);
    delete process.env.AGENTBUS_TEST_SEED;
    expect(() => Identity.fromEnv("AGENTBUS_TEST_SEED")).toThrow(AgentBusError);
    expect(() => Identity.fromSeed("SUNOTASEED")).toThrow(/not a valid nkey seed/);
  });

  it("signs and verifies; another key's signature fails", () => {
    const a = Identity.generate();
    const data = new TextEncoder().encode("hello");
    const sig = a.sign(data);
    expect(verifySignature(a.id, data, sig)).toBe(true);
    expect(verifySignature(Identity.generate().id, data, sig)).toBe(false);
    expect(verifySignature(a.id, new TextEncoder().encode("hellO"), sig)).toBe(false);
  });

  it("never shows the seed in JSON, inspect or logs", () => {
    const a = Identity.generate();
    const seed = a.exportSeed();
    let out = "";
    const sink = new Writable({ write: (chunk, _e, cb) => ((out += String(chunk)), cb()) });
    const log = createLogger({ level: "info" }, sink);
    log.info({ identity: a, options: { seed, auth: { pass: "hunter2", token: "tok" } } }, "connecting");
    expect(out).toContain(a.id);
    expect(out).not.toContain(seed);
    expect(out).not.toContain("hunter2");
    expect(out).not.toContain("tok\"");
    expect(JSON.stringify(a)).not.toContain(seed);
    expect(inspect(a)).not.toContain(seed);
  });
});
