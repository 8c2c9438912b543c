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
    // The region: none by default, else from the environment, a flag over it.
    expect(loadUpConfig({}, {}, dir).config.region).toBeUndefined();
    expect(loadUpConfig({}, { AGENTBUS_REGION: "eu-west" }, dir).config.region).toBe("eu-west");
    expect(loadUpConfig({ region: "us-east" }, { AGENTBUS_REGION: "eu-west" }, dir).config.region).toBe("us-east");
    expect(() => loadUpConfig({ region: "not a name" }, {}, dir)).toThrow(/region/);
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

  it("allowed hosts and origins from the file, the environment (comma lists) and flags; OIDC from the file or the environment", () => {
    const dir = dirWith({ "agentbus.config.json": JSON.stringify({ gateway: { open: true, allowedHosts: ["file.example"], oidc: { issuer: "https://id.example", audience: ["a", "b"] } } }) });
    expect(loadUpConfig({}, {}, dir).config.gateway).toMatchObject({ allowedHosts: ["file.example"], oidc: { issuer: "https://id.example", audience: ["a", "b"] } });
    const env = { AGENTBUS_ALLOWED_HOSTS: "env.example, *.corp.example:8443", AGENTBUS_ALLOWED_ORIGINS: "https://app.example.com" };
    expect(loadUpConfig({}, env, dir).config.gateway).toMatchObject({ allowedHosts: ["env.example", "*.corp.example:8443"], allowedOrigins: ["https://app.example.com"] });
    expect(loadUpConfig({ allowedHosts: "flag.example", allowedOrigins: "*" }, env, dir).config.gateway).toMatchObject({ allowedHosts: ["flag.example"], allowedOrigins: ["*"] });
    const oidc = loadUpConfig({}, { AGENTBUS_OIDC_ISSUER: "https://login.example", AGENTBUS_OIDC_AUDIENCE: "agentbus", AGENTBUS_OIDC_JWKS_URL: "https://login.example/keys" }, dirWith({})).config.gateway;
    expect(oidc).toMatchObject({ open: false, oidc: { issuer: "https://login.example", audience: "agentbus", jwksUrl: "https://login.example/keys" } });
    expect(() => loadUpConfig({ allowedHosts: "bad/host", allowedOrigins: "ftp://x" }, {}, dir)).toThrow(/allowedHosts\/0 must match pattern[\s\S]*allowedOrigins\/0 must match pattern/);
    expect(() => loadUpConfig({}, { AGENTBUS_OIDC_AUDIENCE: "agentbus" }, dirWith({}))).toThrow(/\/gateway\/oidc must have required property 'issuer'/);
  });

  it("open mode (and the demo without keys) listens on loopback only", () => {
    const dir = dirWith({});
    for (const host of ["127.0.0.1", "::1", "localhost", "127.0.0.2"]) expect(loadUpConfig({ open: true, host }, {}, dir).config.gateway.host).toBe(host);
    for (const flags of [{ open: true, host: "0.0.0.0" }, { demo: true, host: "192.0.2.1" }, { open: true, host: "::" }]) {
      expect(() => loadUpConfig(flags, {}, dir), JSON.stringify(flags)).toThrow(/is not a loopback address: open mode/);
    }
    // With keys or OIDC, any address.
    expect(loadUpConfig({ demo: true, keys: "keys.json", host: "0.0.0.0" }, {}, dir).config.gateway.open).toBe(false);
    expect(loadUpConfig({ host: "0.0.0.0" }, { AGENTBUS_OIDC_ISSUER: "https://login.example", AGENTBUS_OIDC_AUDIENCE: "x" }, dir).config.gateway.host).toBe("0.0.0.0");
  });
});
