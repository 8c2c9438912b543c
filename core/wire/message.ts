import { randomUUID } from "node:crypto";
import { AgentBusError } from "./errors.js";
import type { Message, Part, Role } from "./protocol.js";

/**
 * What callers may pass as input: plain text (a text part), a JSON value
 * (a data part), parts, or a whole A2A message.
 */
export type Input = string | Message | Part[] | Record<string, unknown> | unknown[] | number | boolean | null;

function isMessage(v: unknown): v is Message {
  return typeof v === "object" && v !== null && "parts" in v && Array.isArray((v as Message).parts) && "role" in v;
}

/** Builds an A2A message from an {@link Input}. */
export function toMessage(input: Input, role: Role = "ROLE_USER"): Message {
  if (isMessage(input)) return input;
  let parts: Part[];
  if (typeof input === "string") parts = [{ text: input }];
  else if (Array.isArray(input) && input.every((p) => typeof p === "object" && p !== null && ("text" in p || "data" in p || "url" in p || "raw" in p))) parts = input as Part[];
  else parts = [{ data: input }];
  return { messageId: randomUUID(), role, parts };
}

/** All text parts of a message, joined by newlines. */
export function textOf(message: Message): string {
  return message.parts.flatMap((p) => (typeof p.text === "string" ? [p.text] : [])).join("\n");
}

/** The data of the first data part, or undefined. */
export function dataOf<T = unknown>(message: Message): T | undefined {
  return message.parts.find((p) => "data" in p)?.data as T | undefined;
}

/**
 * The structured input a capability's JSON Schema applies to: the first data
 * part's value, otherwise `{ text }` of the text parts.
 */
export function structuredInput(message: Message): unknown {
  const data = message.parts.find((p) => "data" in p);
  return data ? data.data : { text: textOf(message) };
}

/** A body as a UTF-8 string (Buffer's decoder: faster than TextDecoder for small bodies). */
export function utf8(body: Uint8Array): string {
  return Buffer.from(body.buffer, body.byteOffset, body.byteLength).toString("utf8");
}

/** Parses and shape-checks a message body; `INVALID_INPUT` when it is not one. */
export function parseMessage(body: Uint8Array): Message {
  let value: unknown;
  try {
    value = JSON.parse(utf8(body));
  } catch (cause) {
    throw new AgentBusError("INVALID_INPUT", "body is not JSON", { cause });
  }
  if (!isMessage(value)) throw new AgentBusError("INVALID_INPUT", "body is not an A2A message (role, parts)");
  return value;
}
