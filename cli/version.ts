/** The version of the installed package: read at run time from the package.json that declares the `agentbus` command. */
import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

/**
 * The `version` of the nearest package.json above this module that
 * declares the `agentbus` bin: the repository's when run from source
 * (`cli/`) or from a build (`dist/cli/`), the installed package's when
 * installed. Undefined when there is none.
 */
export function packageVersion(from = dirname(fileURLToPath(import.meta.url))): string | undefined {
  for (let dir = from; ; dir = dirname(dir)) {
    const file = join(dir, "package.json");
    if (existsSync(file)) {
      try {
        const pkg = JSON.parse(readFileSync(file, "utf8")) as { version?: unknown; bin?: Record<string, unknown> };
        if (typeof pkg.version === "string" && pkg.bin && typeof pkg.bin === "object" && "agentbus" in pkg.bin) return pkg.version;
      } catch {
        /* not ours: keep looking above */
      }
    }
    if (dirname(dir) === dir) return undefined;
  }
}
