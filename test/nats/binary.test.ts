import { describe, expect, it } from "vitest";
import { NatsServerNotFoundError, findNatsServer, natsServerVersion } from "../../nats/index.js";

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
    expect(findNatsServer({ PATH: "/nonexistent" })).toBe("/usr/sbin/nats-server");
  });

  it("uses NATS_SERVER_BIN when it is valid", () => {
    expect(findNatsServer({ NATS_SERVER_BIN: "/usr/sbin/nats-server", PATH: "" })).toBe("/usr/sbin/nats-server");
  });

  it("lists what it searched when nothing is found", () => {
    expect(() => findNatsServer({ PATH: "/nonexistent" }, ["/also/missing"])).toThrow(
      /nats-server was not found\..*apt-get install nats-server.*Searched: \/nonexistent\/nats-server, \/also\/missing\./,
    );
  });
});

describe("natsServerVersion", () => {
  it("parses `nats-server --version`", () => {
    expect(natsServerVersion(findNatsServer())).toMatch(/^2\.\d+\.\d+$/);
  });
});
