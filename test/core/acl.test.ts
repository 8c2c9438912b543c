import { describe, expect, it } from "vitest";
import { capabilityMatches, isAllowed, type AclPolicy } from "../../core/index.js";

describe("ACL matching", () => {
  it("matches capability patterns with NATS wildcards", () => {
    expect(capabilityMatches("echo", "echo")).toBe(true);
    expect(capabilityMatches("echo", "echo.x")).toBe(false);
    expect(capabilityMatches("mcp.*", "mcp.fs")).toBe(true);
    expect(capabilityMatches("mcp.*", "mcp.fs.read")).toBe(false);
    expect(capabilityMatches("mcp.>", "mcp.fs.read")).toBe(true);
    expect(capabilityMatches("mcp.>", "mcp")).toBe(false);
    expect(capabilityMatches(">", "anything.at.all")).toBe(true);
    expect(capabilityMatches("*.read", "fs.read")).toBe(true);
  });

  it("is default-deny and grants by id, group and wildcard", () => {
    const policy: AclPolicy = { rules: new Map(), groups: new Map() };
    expect(isAllowed(policy, "UA", "UB", "echo")).toBe(false);
    policy.groups.set("ops", { members: ["UA"] });
    policy.rules.set("r1", { source: "group:ops", target: "UB", capabilities: ["echo"] });
    expect(isAllowed(policy, "UA", "UB", "echo")).toBe(true);
    expect(isAllowed(policy, "UA", "UC", "echo")).toBe(false);
    expect(isAllowed(policy, "UX", "UB", "echo")).toBe(false);
    policy.rules.set("r2", { source: "*", target: "*", capabilities: ["public.>"] });
    expect(isAllowed(policy, "UX", "UC", "public.read")).toBe(true);
    expect(isAllowed(policy, "UX", "UC", "private")).toBe(false);
  });
});
