import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { useNatsServer } from "../helpers/nats.js";
import { cleanEnv } from "./helpers.js";

const program = fileURLToPath(new URL("./programs/library-program.ts", import.meta.url));

function runProgram(args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ["--import", "tsx", program, ...args], { env: cleanEnv(env) });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += String(d)));
    child.stderr.on("data", (d) => (stderr += String(d)));
    child.on("exit", (code) => resolve({ code, stdout, stderr }));
  });
}

/** The JSON log lines of a stream, with their level. */
const logLines = (text: string) => text.split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l) as { level: number; msg: string; name: string });

describe("the library's logs", { timeout: 60_000 }, () => {
  const nats = useNatsServer();

  it("go to stderr at level warn by default: a program's stdout holds only its own output", async () => {
    const r = await runProgram([nats.server.url, "liblog"]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe("echo: hi\n");
    const logs = logLines(r.stderr);
    // The open server and the disabled ACL are warned about; info lines ("connected", "agent started") are not shown.
    expect(logs.map((l) => l.msg)).toEqual(expect.arrayContaining([expect.stringContaining("requires no authentication"), expect.stringContaining("ACL DISABLED")]));
    expect(logs.every((l) => l.level >= 40 && l.name === "agentbus")).toBe(true);
  });

  it("AGENTBUS_LOG_LEVEL sets the level, still on stderr", async () => {
    const info = await runProgram([nats.server.url, "liblog-info"], { AGENTBUS_LOG_LEVEL: "info" });
    expect(info.code, info.stderr).toBe(0);
    expect(info.stdout).toBe("echo: hi\n");
    expect(logLines(info.stderr).map((l) => l.msg)).toEqual(expect.arrayContaining(["connected", "agent started"]));
    const silent = await runProgram([nats.server.url, "liblog-silent"], { AGENTBUS_LOG_LEVEL: "silent" });
    expect(silent.code, silent.stderr).toBe(0);
    expect(silent.stdout).toBe("echo: hi\n");
    expect(silent.stderr).toBe("");
  });
});
