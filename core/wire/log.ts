import { pino, type DestinationStream, type Logger, type LoggerOptions } from "pino";

export type { Logger } from "pino";

/**
 * Paths pino blanks out, up to two levels deep (pino has no recursive
 * wildcard): secrets stay out of logs even when a whole options object is
 * logged by mistake.
 */
const SECRET_KEYS = ["seed", "pass", "password", "token", "creds", "nkeySeed", "apiKey", "authorization", "secret"];
export const REDACTED_PATHS = SECRET_KEYS.flatMap((k) => [k, `*.${k}`, `*.*.${k}`]);

/** The library's logger: JSON lines with secrets redacted. */
export function createLogger(options: LoggerOptions = {}, destination?: DestinationStream): Logger {
  const o = { name: "agentbus", level: process.env.AGENTBUS_LOG_LEVEL ?? "info", ...options, redact: { paths: REDACTED_PATHS, censor: "[redacted]" } };
  return destination ? pino(o, destination) : pino(o);
}
