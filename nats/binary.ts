/**
 * Locating the `nats-server` executable and asking it for its version.
 *
 * The binary is often installed outside `PATH` (Debian's package puts it in
 * /usr/sbin, which non-root shells usually do not search), so we also probe
 * the usual sbin/bin locations before giving up.
 */
import { execFileSync } from "node:child_process";
import { accessSync, constants, statSync } from "node:fs";
import { delimiter, dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));

/**
 * Where `scripts/system-deps.sh` puts the current nats-server when the
 * system's is older: `.agentbus/bin/nats-server` in the project (found from
 * the sources and from `dist/`; never from the working directory, whose
 * contents the project does not control). Searched first.
 */
export const PROJECT_LOCATIONS = [
  resolve(here, "../.agentbus/bin/nats-server"),
  resolve(here, "../../.agentbus/bin/nats-server"),
] as const;

/** Places searched after `NATS_SERVER_BIN`, the project's own binary and `PATH`, in order. */
export const FALLBACK_LOCATIONS = [
  "/usr/sbin/nats-server",
  "/usr/local/sbin/nats-server",
  "/usr/local/bin/nats-server",
] as const;

/** Thrown by {@link findNatsServer} when no usable `nats-server` exists. */
export class NatsServerNotFoundError extends Error {
  override name = "NatsServerNotFoundError";
  /** @param searched every path that was tried, for the message. */
  constructor(readonly searched: string[], reason?: string) {
    super(
      [
        reason ?? "nats-server was not found.",
        "Install it with `sudo apt-get install nats-server` on Debian/Ubuntu (it installs to /usr/sbin/nats-server),",
        "or download a release from https://github.com/nats-io/nats-server/releases and set NATS_SERVER_BIN=/path/to/nats-server.",
        `Searched: ${searched.join(", ") || "(nothing)"}.`,
      ].join(" "),
    );
  }
}

function isExecutableFile(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return statSync(path).isFile();
  } catch {
    return false;
  }
}

/**
 * Returns the path of the `nats-server` executable to use.
 *
 * Order: `$NATS_SERVER_BIN` (if set it must be valid: an explicit choice
 * that silently falls back would hide a typo), the current server that
 * `scripts/system-deps.sh` fetched into the project ({@link PROJECT_LOCATIONS}),
 * each directory of `$PATH`, then `fallbacks` ({@link FALLBACK_LOCATIONS}
 * unless a test overrides them).
 *
 * @throws {NatsServerNotFoundError} with installation instructions.
 */
export function findNatsServer(
  env: NodeJS.ProcessEnv = process.env,
  fallbacks: readonly string[] = FALLBACK_LOCATIONS,
  project: readonly string[] = PROJECT_LOCATIONS,
): string {
  const explicit = env["NATS_SERVER_BIN"];
  if (explicit) {
    if (isExecutableFile(explicit)) return explicit;
    throw new NatsServerNotFoundError(
      [explicit],
      `NATS_SERVER_BIN is set to ${explicit}, which is not an executable file.`,
    );
  }
  const searched: string[] = [];
  const pathDirs = (env["PATH"] ?? "").split(delimiter).filter(Boolean);
  for (const candidate of [...project, ...pathDirs.map((d) => join(d, "nats-server")), ...fallbacks]) {
    searched.push(candidate);
    if (isExecutableFile(candidate)) return candidate;
  }
  throw new NatsServerNotFoundError(searched);
}

const versionCache = new Map<string, string>();

/**
 * Runs `bin --version` and returns the bare version, e.g. `"2.9.10"` for
 * output `nats-server: v2.9.10`. Cached per binary path because every
 * server start reports it and the answer cannot change under us.
 */
export function natsServerVersion(bin: string): string {
  const cached = versionCache.get(bin);
  if (cached) return cached;
  const out = execFileSync(bin, ["--version"], { encoding: "utf8", timeout: 10_000 });
  const match = /v?(\d+\.\d+\.\d+(?:-[\w.]+)?)/.exec(out);
  if (!match?.[1]) throw new Error(`could not parse a version from \`${bin} --version\`: ${out.trim()}`);
  versionCache.set(bin, match[1]);
  return match[1];
}
