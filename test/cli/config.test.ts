import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { ConfigError, loadUpConfig } from "../../cli/config.js";

const dirWith = (files: Record<string, string>) => {
  const dir = mkdtempSync(join(tmpdir(), "agentbus-config-"));
  for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text);
  return dir;
};

describe("agentbus up configuration", () => {
  it("layers defaults, file, environment and flags, in that order", () => {
    const dir = dirWith({ "agentbus.config.json": JSON.stringify({ tenant: "fromfile", gateway: { port: 9000, open: true }, logLevel: "debug" }) });
    expect(loadUpConfig({}, {}, dir).config).toMatchObject({ tenant: "fromfile", logLevel: "debug", gateway: { port: 9000, host: "127.0.0.1", open: true }, dataDir: join(dir, ".agentbus") });
    expect(loadUpConfig({}, { AGENTBUS_TENANT: "fromenv", AGENTBUS_PORT: "9100" }, dir).config).toMatchObject({ tenant: "fromenv", gateway: { port: 9100 } });
    expect(loadUpConfig({ tenant: "fromflag", port: "9200" }, { AGENTBUS_TENANT: "fromenv", AGENTBUS_PORT: "9100" }, dir).config).toMatchObject({ tenant: "fromflag", gateway: { port: 9200 } });
  });

  it("reads YAML, and names the file and every problem", () => {
    const dir = dirWith({ "agentbus.config.yml": "gateway:\n  port: 99999\nagents: nope\n" });
    let error: unknown;
    try {
      loadUpConfig({}, { AGENTBUS_OPEN: "maybe" }, dir);
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(ConfigError);
    const e = error as ConfigError;
    expect(e.source).toBe(join(dir, "agentbus.config.yml"));
    expect(e.problems).toEqual(expect.arrayContaining(["/gateway/port must be <= 65535", "/agents must be array", "/gateway/open must be boolean"]));
    expect(e.code).toBe("INVALID_INPUT");
  });

  it("the demo is open unless keys are given; otherwise the gateway needs keys or open", () => {
    const dir = dirWith({});
    expect(loadUpConfig({ demo: true }, {}, dir).config.gateway.open).toBe(true);
    expect(loadUpConfig({ demo: true, keys: "keys.json" }, {}, dir).config.gateway.open).toBe(false);
    expect(() => loadUpConfig({}, {}, dir)).toThrow(/keysFile .* or open: true/);
  });
});
