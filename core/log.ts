import { pino, type Logger, type LoggerOptions } from "pino";

export type { Logger } from "pino";

/**
 * Paths pino blanks out wherever they appear in a log object: secrets never
 * reach logs even when a whole options object is logged by mistake.
 */
export const REDACTED_PATHS = [
  "seed", "*.seed", "pass", "*.pass", "password", "*.password", "token", "*.token",
  "creds", "*.creds", "nkeySeed", "*.nkeySeed", "apiKey", "*.apiKey", "authorization", "*.authorization",
];

/** The library's logger: JSON lines with secrets redacted. */
export function createLogger(options: LoggerOptions = {}): Logger {
  return pino({ name: "agentbus", level: process.env.AGENTBUS_LOG_LEVEL ?? "info", ...options, redact: { paths: REDACTED_PATHS, censor: "[redacted]" } });
}
