import { execFile } from "node:child_process";
import { mkdirSync, readFileSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";
import { Identity } from "../../core/index.js";
import { cleanEnv, scratch } from "./helpers.js";

const exec = promisify(execFile);
const repo = fileURLToPath(new URL("../..", import.meta.url));

/** Runs a program directly (its shebang picks the interpreter); resolves with its exit code and output. */
async function runProgram(file: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  // `#!/usr/bin/env node` finds the node running these tests first.
  const env = cleanEnv({ PATH: `${dirname(process.execPath)}:${process.env.PATH ?? ""}` });
  try {
    const { stdout, stderr } = await exec(file, args, { env });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

describe("the built command", () => {
  it("scripts/build.sh <dir> makes <dir>/cli/main.js a program: a shebang, executable, the version read from package.json when it runs, id", async () => {
    // Laid out as an installed package: <pkg>/package.json, <pkg>/dist, <pkg>/node_modules; npm links the bin from <prefix>/bin.
    const root = scratch("agentbus-build-");
    const pkgDir = join(root, "pkg");
    mkdirSync(pkgDir);
    await exec("bash", [join(repo, "scripts", "build.sh"), join(pkgDir, "dist")], { cwd: repo });
    const pkg = JSON.parse(readFileSync(join(repo, "package.json"), "utf8")) as { version: string; bin: Record<string, string> };
    expect(pkg.bin.agentbus).toBe("dist/cli/main.js");
    // Another version than the repository's: what is printed is read when the program runs.
    writeFileSync(join(pkgDir, "package.json"), JSON.stringify({ ...pkg, version: "0.0.0-build-test" }));
    symlinkSync(join(repo, "node_modules"), join(pkgDir, "node_modules"), "dir");
    const main = join(pkgDir, "dist", "cli", "main.js");
    expect(readFileSync(main, "utf8").split("\n")[0]).toBe("#!/usr/bin/env node");
    expect(statSync(main).mode & 0o111).toBe(0o111);

    const version = await runProgram(main, ["--version"]);
    expect(version.code, version.stderr).toBe(0);
    expect(version.stdout).toBe("0.0.0-build-test\n");
    mkdirSync(join(root, "bin"));
    symlinkSync(join("..", "pkg", "dist", "cli", "main.js"), join(root, "bin", "agentbus"));
    expect((await runProgram(join(root, "bin", "agentbus"), ["-V"])).stdout).toBe("0.0.0-build-test\n");

    const identity = Identity.generate();
    identity.writeSeed(join(root, "me.nk"));
    const id = await runProgram(join(root, "bin", "agentbus"), ["id", join(root, "me.nk")]);
    expect(id.code, id.stderr).toBe(0);
    expect(id.stdout).toBe(`${identity.id}\n`);
    const missing = await runProgram(main, ["id", join(root, "none.nk")]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain("no such file");
  }, 180_000);
});
