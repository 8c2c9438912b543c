import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import { promisify } from "node:util";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

const run = promisify(execFile);
const root = fileURLToPath(new URL("..", import.meta.url));
const pkg = JSON.parse(readFileSync(`${root}/package.json`, "utf8")) as {
  name: string;
  files: string[];
  bin: Record<string, string>;
  exports: Record<string, string>;
  scripts: Record<string, string>;
};

/** What `npm pack` would publish, of the `dist/` the test run built (test/setup/build.ts; publishing builds it with `prepare`). */
async function packList(): Promise<string[]> {
  const { stdout } = await run("npm", ["pack", "--dry-run", "--json", "--ignore-scripts"], { cwd: root, maxBuffer: 64 * 1024 * 1024 });
  const [report] = JSON.parse(stdout.slice(stdout.indexOf("["))) as [{ files: { path: string }[] }];
  return report.files.map((f) => f.path);
}

describe("the npm package", () => {
  it("ships dist/, README.md, LICENSE and package.json only: no keys, sources or tests", async () => {
    const files = await packList();
    const outside = files.filter((f) => !f.startsWith("dist/") && !["README.md", "LICENSE", "package.json"].includes(f));
    expect(outside).toEqual([]);
    expect(files.filter((f) => /\.(nk|seed|creds)$|(^|\/)\.env$/.test(f))).toEqual([]);
    expect(files).toContain("LICENSE");
    expect(files).toContain("README.md");
    // The bin, every public entry with its types, and the console's page files.
    for (const target of [...Object.values(pkg.bin), ...Object.values(pkg.exports)]) {
      const path = target.replace(/^\.\//, "");
      expect(files).toContain(path);
      expect(files).toContain(path.replace(/\.js$/, ".d.ts"));
    }
    expect(files).toContain("dist/bridges/monitor/public/index.html");
  }, 120_000);

  it("is named for the registry (not the unrelated `agentbus` package), builds on install and says how it is licensed", () => {
    expect(pkg.name).toBe("agentbus-nats");
    expect(pkg.bin).toEqual({ agentbus: "dist/cli/main.js" });
    expect(pkg.scripts.prepare).toBe("npm run build");
    expect(readFileSync(`${root}/LICENSE`, "utf8")).toContain("Apache License");
    expect(pkg.files).toEqual(["dist/", "README.md", "LICENSE"]);
  });

  it("imports itself by its name in this checkout, as the README's examples do", async () => {
    const { stdout } = await run(process.execPath, ["--input-type=module", "-e", 'const m = await import("agentbus-nats"); const t = await import("agentbus-nats/testing"); console.log(typeof m.connect, typeof t.testHandler)'], { cwd: root });
    expect(stdout.trim()).toBe("function function");
  });

  it("keeps key files out of git", async () => {
    const { stdout } = await run("git", ["check-ignore", "--no-index", "me.nk", "demo-user.seed", "user.creds", ".env"], { cwd: root });
    expect(stdout.trim().split("\n")).toEqual(["me.nk", "demo-user.seed", "user.creds", ".env"]);
  });
});
