import { existsSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { NatsServerNotFoundError, PROJECT_LOCATIONS, findNatsServer, natsServerVersion } from "../../nats/index.js";

describe("findNatsServer", () => {
  it("explains how to install when NATS_SERVER_BIN points at a missing file", () => {
    const find = () => findNatsServer({ PATH: process.env["PATH"], NATS_SERVER_BIN: "/nonexistent/nats-server" });
    expect(find).toThrow(NatsServerNotFoundError);
    try {
      find();
    } catch (err) {
      const msg = (err as Error).message;
      expect(msg).toContain("NATS_SERVER_BIN is set to /nonexistent/nats-server");
      expect(msg).toContain("sudo apt-get install nats-server");
      expect(msg).toContain("/usr/sbin");
      expect(msg).toContain("https://github.com/nats-io/nats-server/releases");
    }
  });

  it("finds /usr/sbin/nats-server when it is not on PATH and NATS_SERVER_BIN is unset", () => {
    expect(findNatsServer({ PATH: "/nonexistent" }, undefined, [])).toBe("/usr/sbin/nats-server");
  });

  it("prefers the current server that scripts/system-deps.sh put in the project", () => {
    const local = PROJECT_LOCATIONS.find((p) => existsSync(p));
    if (!local) return; // the system's own server is current: nothing was fetched
    expect(findNatsServer({ PATH: "/usr/sbin" })).toBe(local);
    expect(Number(natsServerVersion(local).split(".")[1])).toBeGreaterThanOrEqual(15);
  });

  it("uses NATS_SERVER_BIN when it is valid", () => {
    expect(findNatsServer({ NATS_SERVER_BIN: "/usr/sbin/nats-server", PATH: "" })).toBe("/usr/sbin/nats-server");
  });

  it("lists what it searched when nothing is found", () => {
    expect(() => findNatsServer({ PATH: "/nonexistent" }, ["/also/missing"], [])).toThrow(
      /nats-server was not found\..*apt-get install nats-server.*Searched: \/nonexistent\/nats-server, \/also\/missing\./,
    );
  });
});

describe("natsServerVersion", () => {
  it("parses `nats-server --version`", () => {
    expect(natsServerVersion(findNatsServer())).toMatch(/^2\.\d+\.\d+$/);
  });
});
