import { defineConfig } from "vitest/config";

// Every test file starts its own nats-server processes; files run in parallel
// forks, so keep the pool small on 2-core machines.
export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    globalSetup: ["test/setup/nats-binary.ts", "test/setup/build.ts"],
    pool: "forks",
    maxWorkers: 2,
    testTimeout: 30_000,
    hookTimeout: 60_000,
  },
});
