/** What one error code means for the bus: where it goes and what follows from it. */
export interface ErrorCodeInfo {
  /**
   * It travels on the wire: in `Mesh-Error-Code` and the `{code, message}`
   * body of an error reply, in a failed task's reason. A code that does not
   * (a local condition, or a program's misuse of the library) is thrown to
   * the caller in this process only.
   */
  wire: boolean;
  /**
   * Trying again may succeed: a caller may retry, and a worker retries a
   * task whose handler ended with it (backoff, then dead-letter). A task
   * whose handler ends with a code that is not retryable fails at once; a
   * local one (`wire: false`) is dead-lettered at once too, so the task can
   * be replayed once the agent is fixed.
   */
  retryable: boolean;
  /** Refusals with this code are written to the audit stream (kind: the code in lower case). */
  audited: boolean;
  /** The NATS micro service error status of a reply with this code (`Nats-Service-Error-Code`). */
  status: 400 | 500;
  /** What it means, in one line. */
  meaning: string;
}

/**
 * Every error code, with what it means (see {@link ErrorCodeInfo}). Codes
 * on the wire never change meaning once published; new ones are added at
 * the end.
 */
export const ErrorTable = {
  NO_RESPONDERS: { wire: true, retryable: true, audited: false, status: 400, meaning: "nothing serves the capability or agent called" },
  TIMEOUT: { wire: true, retryable: true, audited: false, status: 400, meaning: "no answer within the deadline" },
  CANCELLED: { wire: true, retryable: true, audited: false, status: 400, meaning: "the call or wait was aborted by its caller" },
  DENIED: { wire: true, retryable: false, audited: true, status: 400, meaning: "the ACL does not grant the sender this capability" },
  UNSIGNED: { wire: true, retryable: false, audited: true, status: 400, meaning: "the message carries no valid envelope" },
  UNKNOWN_SENDER: { wire: true, retryable: false, audited: true, status: 400, meaning: "the sender is not an identity this tenant knows" },
  BAD_SIGNATURE: { wire: true, retryable: false, audited: true, status: 400, meaning: "a signature or MAC does not verify, or a stored record was not written by its parties" },
  REPLAYED: { wire: true, retryable: false, audited: true, status: 400, meaning: "this message was already received" },
  EXPIRED: { wire: true, retryable: false, audited: true, status: 400, meaning: "the message's time is outside the accepted window" },
  REVOKED: { wire: true, retryable: false, audited: true, status: 400, meaning: "the sender's key is revoked" },
  INVALID_INPUT: { wire: true, retryable: false, audited: false, status: 400, meaning: "the input or a request's parameters are malformed or do not match the schema" },
  PAYLOAD_TOO_LARGE: { wire: true, retryable: false, audited: true, status: 400, meaning: "a message or stored record exceeds the size limit" },
  DEPTH_EXCEEDED: { wire: true, retryable: false, audited: true, status: 400, meaning: "agent-to-agent calls nested deeper than the limit" },
  HANDLER_FAILED: { wire: true, retryable: true, audited: false, status: 500, meaning: "the handler threw, or failed or rejected the call" },
  UNAVAILABLE: { wire: true, retryable: true, audited: true, status: 400, meaning: "a server, stream or dependency cannot be reached now" },
  CLOSED: { wire: false, retryable: true, audited: false, status: 400, meaning: "this bus connection is closed (another may go on)" },
  CONFIG_MISMATCH: { wire: false, retryable: false, audited: false, status: 400, meaning: "an existing stream, bucket or consumer has other settings than asked" },
  SERVER_TOO_OLD: { wire: false, retryable: false, audited: false, status: 400, meaning: "the connected nats-server lacks a feature this needs" },
  TASK_NOT_FOUND: { wire: true, retryable: false, audited: false, status: 400, meaning: "no such task, or not one this identity may see" },
  SCHEDULE_NOT_FOUND: { wire: false, retryable: false, audited: false, status: 400, meaning: "no such schedule of this identity" },
  NOT_CANCELABLE: { wire: true, retryable: false, audited: false, status: 400, meaning: "the task already ended" },
  TASK_FINISHED: { wire: true, retryable: false, audited: false, status: 400, meaning: "the task ended: it takes no more input or events" },
  NOT_RECIPIENT: { wire: true, retryable: true, audited: false, status: 400, meaning: "end-to-end encrypted content holds no key for this identity (another replica may have one)" },
  MISUSE: { wire: false, retryable: false, audited: false, status: 400, meaning: "the library was called in a way it does not allow: a fault in the calling program, not in its input" },
  DEAD_LETTER_NOT_FOUND: { wire: false, retryable: false, audited: false, status: 400, meaning: "no such dead letter, or not one this caller may see" },
} as const satisfies Record<string, ErrorCodeInfo>;

/** The error codes, in {@link ErrorTable}'s order. */
export const ErrorCodes = Object.keys(ErrorTable) as Array<keyof typeof ErrorTable>;

/** One of {@link ErrorCodes}. */
export type ErrorCode = keyof typeof ErrorTable;

const known = new Set<string>(ErrorCodes);

/** What `code` means (see {@link ErrorTable}). */
export const errorInfo = (code: ErrorCode): ErrorCodeInfo => ErrorTable[code];

/** True when `code` is one of the {@link ErrorCodes}. */
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

/** A failure as a task's reason shows it: `CODE: message` for an `AgentBusError`, else the message. */
export function failureReason(err: unknown): string {
  return isAgentBusError(err) ? `${err.code}: ${err.message}` : String((err as Error)?.message ?? err);
}
