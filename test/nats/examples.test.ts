import { execFile } from "node:child_process";
import { readFile } from "node:fs/promises";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";
import { exampleConfigs } from "../../nats/examples/generate.js";
import { findNatsServer } from "../../nats/index.js";

const run = promisify(execFile);
const dir = new URL("../../nats/examples/", import.meta.url);

describe("nats/examples", () => {
  for (const [name, text] of Object.entries(exampleConfigs())) {
    it(`${name} matches the generator (run \`npx tsx nats/examples/generate.ts\` to refresh)`, async () => {
      expect(await readFile(new URL(name, dir), "utf8")).toBe(text);
    });

    it(`${name} is accepted by nats-server -t`, async () => {
      const { stderr } = await run(findNatsServer(), ["-t", "-c", new URL(name, dir).pathname]);
      expect(stderr).toContain("is valid");
    });
  }
});
