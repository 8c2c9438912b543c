import { pino, type DestinationStream, type Logger, type LoggerOptions } from "pino";

export type { Logger } from "pino";

/**
 * Paths pino blanks out, up to two levels deep (pino has no recursive
 * wildcard): secrets stay out of logs even when a whole options object is
 * logged by mistake.
 */
const SECRET_KEYS = ["seed", "pass", "password", "token", "creds", "nkeySeed", "apiKey", "authorization", "secret"];
export const REDACTED_PATHS = SECRET_KEYS.flatMap((k) => [k, `*.${k}`, `*.*.${k}`]);

/** The level of a logger made without one, unless `AGENTBUS_LOG_LEVEL` names another. */
const DEFAULT_LOG_LEVEL = "warn";

/**
 * The library's logger: JSON lines with secrets redacted, on stderr unless
 * `destination` says otherwise (a program's stdout stays its own), at
 * `options.level`, else `AGENTBUS_LOG_LEVEL`, else `warn`.
 */
export function createLogger(options: LoggerOptions = {}, destination: DestinationStream = process.stderr): Logger {
  const o = { name: "agentbus", ...options, level: options.level ?? (process.env.AGENTBUS_LOG_LEVEL || DEFAULT_LOG_LEVEL), redact: { paths: REDACTED_PATHS, censor: "[redacted]" } };
  return pino(o, destination);
}
