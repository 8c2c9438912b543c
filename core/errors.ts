/**
 * Stable error codes. They travel on the wire (`Mesh-Error-Code` header and
 * the `{code, message}` JSON body of an error reply), so they never change
 * meaning once published.
 */
export const ErrorCodes = [
  "NO_RESPONDERS",
  "TIMEOUT",
  "CANCELLED",
  "DENIED",
  "UNSIGNED",
  "UNKNOWN_SENDER",
  "BAD_SIGNATURE",
  "REPLAYED",
  "EXPIRED",
  "REVOKED",
  "INVALID_INPUT",
  "PAYLOAD_TOO_LARGE",
  "DEPTH_EXCEEDED",
  "HANDLER_FAILED",
  "UNAVAILABLE",
  "CLOSED",
  "CONFIG_MISMATCH",
  "SERVER_TOO_OLD",
  "TASK_NOT_FOUND",
  "NOT_CANCELABLE",
  "TASK_FINISHED",
  "NOT_RECIPIENT",
] as const;

/** One of {@link ErrorCodes}. */
export type ErrorCode = (typeof ErrorCodes)[number];

const known = new Set<string>(ErrorCodes);

/** True when `code` is one of the published {@link ErrorCodes}. */
export function isErrorCode(code: unknown): code is ErrorCode {
  return typeof code === "string" && known.has(code);
}

/**
 * The one error type the library throws. `code` is stable and meant for
 * programs; `message` is for people; `cause` keeps the underlying error.
 */
export class AgentBusError extends Error {
  override readonly name = "AgentBusError";
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }

  /** The JSON body of an error reply. */
  toJSON(): { code: ErrorCode; message: string } {
    return { code: this.code, message: this.message };
  }
}

/** True when `err` is an {@link AgentBusError}, optionally with the given code. */
export function isAgentBusError(err: unknown, code?: ErrorCode): err is AgentBusError {
  return err instanceof AgentBusError && (code === undefined || err.code === code);
}

/**
 * `err`, or `PAYLOAD_TOO_LARGE` naming `what` when it is the client's
 * refusal of a message over the server's `max_payload`: for the paths that
 * store messages, so the size limit is a typed, final error rather than a
 * transport one.
 */
export function typedPayloadError(err: unknown, what: string): unknown {
  const message = String((err as Error | undefined)?.message ?? err);
  if (isAgentBusError(err) || !/max_payload/i.test(message)) return err;
  return new AgentBusError("PAYLOAD_TOO_LARGE", `${what} exceeds the server's maximum message size (max_payload)`, { cause: err });
}
