import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { loadUpConfig } from "../../cli/config.js";

const deploy = fileURLToPath(new URL("../../deploy/", import.meta.url));

describe("deploy/agentbus.config.yaml", () => {
  it("is a valid agentbus up configuration", () => {
    const { config } = loadUpConfig({ config: "agentbus.config.yaml" }, {}, deploy);
    expect(config.nats.url).toBe("nats://nats.internal:4222");
    expect(config.gateway).toMatchObject({ open: false, keysFile: "/etc/agentbus/keys.json", port: 8080 });
    expect(Object.keys(config.mcp?.servers ?? {})).toEqual(["everything"]);
  });
});
