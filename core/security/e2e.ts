import { createCipheriv, createDecipheriv, randomFillSync } from "node:crypto";
import { AgentBusError } from "../wire/errors.js";
import type { Identity } from "./identity.js";
import type { PeerKeys } from "./peerkeys.js";
import type { Message, Part } from "../wire/protocol.js";
import type { Artifact, Task, TaskEvent } from "../wire/task.js";

/**
 * The end-to-end encryption scheme, as `Mesh-Enc` and task metadata name
 * it: one random AES-256-GCM content key per message, wrapped (AES-256 key
 * wrap, RFC 3394) for each recipient under the key that the X25519
 * agreement of the sender's and the recipient's identities yields
 * (`PeerKeys.wrapKeyFor`).
 */
export const E2E_SCHEME = "x25519-a256kw-a256gcm.1";

/**
 * Most recipients one encrypted message or part is wrapped for (the MAC
 * limit is 8; a wrapped key costs 67 bytes of `Mesh-To`). More is refused
 * with `INVALID_INPUT`.
 */
export const MAX_E2E_RECIPIENTS = 64;

/** Media type of an encrypted part in task events and snapshots. */
export const ENCRYPTED_MEDIA_TYPE = "application/vnd.agentbus.encrypted";

/** Metadata keys of an encrypted part: scheme, sender, wrapped keys (as `Mesh-Enc`, `Mesh-From`, `Mesh-To`). */
export const EncryptedPartKey = { enc: "mesh-enc", from: "mesh-from", to: "mesh-to" } as const;

const HINT = 12;
const hintOf = (id: string): string => id.slice(1, 1 + HINT);
// RFC 3394's default initial value.
const KW_IV = Buffer.from("a6a6a6a6a6a6a6a6", "hex");
// Each content key encrypts one message only, so a fixed nonce is safe.
const NONCE = Buffer.alloc(12);
const TAG = 16;

// Content keys are cut from a pool filled 64 at a time: one call into the
// CSPRNG per 64 messages instead of one per message. Each key is zeroed
// once used.
const KEY = 32;
const pool = Buffer.alloc(KEY * 64);
let poolAt = pool.length;
function contentKey(): Buffer {
  if (poolAt === pool.length) {
    randomFillSync(pool);
    poolAt = 0;
  }
  poolAt += KEY;
  return pool.subarray(poolAt - KEY, poolAt);
}

/** An encrypted body: the ciphertext and its `Mesh-To` value. */
export interface Sealed {
  /** `<hint>:<wrapped key>` entries separated by commas, one per recipient. */
  to: string;
  /** AES-256-GCM ciphertext followed by its 16-byte tag. */
  data: Buffer;
}

/** What a content-key ciphertext is bound to (AEAD associated data). */
const aad = (from: string, bind: string): Buffer => Buffer.from(`${E2E_SCHEME}\n${from}\n${bind}`);

/** Associated data of a wire message: its `Nats-Msg-Id`. */
export const messageBinding = (id: string): string => `msg:${id}`;
/** Associated data of a part of a task's events and snapshot: the task id. */
export const taskBinding = (taskId: string): string => `task:${taskId}`;

/**
 * End-to-end encryption for one identity: seals bodies and task parts for
 * a set of recipient identities, opens those sealed for it. Nothing here
 * reaches the network; the envelope carries the result in `Mesh-Enc` and
 * `Mesh-To` (covered by its MAC or signature), task events and snapshots in
 * encrypted parts.
 */
export class E2E {
  readonly #identity: Identity;
  readonly #peers: PeerKeys;

  constructor(identity: Identity, peers: PeerKeys) {
    this.#identity = identity;
    this.#peers = peers;
  }

  /**
   * Encrypts `plain` for `recipients` (ids; duplicates are dropped):
   * `INVALID_INPUT` for none or more than {@link MAX_E2E_RECIPIENTS}.
   * `bind` is what the ciphertext is bound to ({@link messageBinding},
   * {@link taskBinding}).
   */
  seal(plain: Uint8Array, recipients: readonly string[], bind: string): Sealed {
    const ids = new Set(recipients);
    if (ids.size === 0) throw new AgentBusError("INVALID_INPUT", "end-to-end encryption needs at least one recipient");
    if (ids.size > MAX_E2E_RECIPIENTS) throw new AgentBusError("INVALID_INPUT", `end-to-end encryption is limited to ${MAX_E2E_RECIPIENTS} recipients (${ids.size} given)`);
    const cek = contentKey();
    const cipher = createCipheriv("aes-256-gcm", cek, NONCE);
    cipher.setAAD(aad(this.#identity.id, bind));
    const data = Buffer.concat([cipher.update(plain), cipher.final(), cipher.getAuthTag()]);
    let to = "";
    for (const id of ids) {
      const wrap = createCipheriv("id-aes256-wrap", this.#peers.wrapKeyFor(id), KW_IV);
      to += `${to ? "," : ""}${hintOf(id)}:${Buffer.concat([wrap.update(cek), wrap.final()]).toString("base64url")}`;
    }
    cek.fill(0);
    return { to, data };
  }

  /** Whether `to` (a `Mesh-To` value) holds an entry for this identity, without trying to open it. */
  isFor(to: string): boolean {
    const mine = hintOf(this.#identity.id);
    return to.split(",").some((e) => e.slice(0, HINT) === mine && e[HINT] === ":");
  }

  /**
   * Decrypts what `from` sealed: `NOT_RECIPIENT` when no entry of `to`
   * unwraps for this identity, `INVALID_INPUT` for another scheme,
   * `BAD_SIGNATURE` when the ciphertext does not authenticate.
   */
  open(from: string, scheme: string, to: string, data: Uint8Array, bind: string): Buffer {
    if (scheme !== E2E_SCHEME) throw new AgentBusError("INVALID_INPUT", `unsupported encryption scheme ${scheme}`);
    if (data.length < TAG) throw new AgentBusError("BAD_SIGNATURE", "encrypted body too short");
    const mine = hintOf(this.#identity.id);
    for (const entry of to.split(",")) {
      if (entry.slice(0, HINT) !== mine || entry[HINT] !== ":") continue;
      let cek: Buffer;
      try {
        const unwrap = createDecipheriv("id-aes256-wrap", this.#peers.wrapKeyFor(from), KW_IV);
        cek = Buffer.concat([unwrap.update(Buffer.from(entry.slice(HINT + 1), "base64url")), unwrap.final()]);
      } catch {
        continue; // another recipient with the same hint, or not wrapped by `from`
      }
      try {
        const decipher = createDecipheriv("aes-256-gcm", cek, NONCE);
        decipher.setAAD(aad(from, bind));
        decipher.setAuthTag(data.subarray(data.length - TAG));
        return Buffer.concat([decipher.update(data.subarray(0, data.length - TAG)), decipher.final()]);
      } catch (cause) {
        throw new AgentBusError("BAD_SIGNATURE", `encrypted content from ${from} does not authenticate`, { cause });
      } finally {
        cek.fill(0);
      }
    }
    throw new AgentBusError("NOT_RECIPIENT", `content from ${from} is not encrypted for ${this.#identity.id}`);
  }

  /** One part holding `value` (JSON) encrypted for `recipients`: what readers without a key see. */
  sealPart(value: unknown, recipients: readonly string[], bind: string): Part {
    const { to, data } = this.seal(Buffer.from(JSON.stringify(value)), recipients, bind);
    return {
      raw: data.toString("base64"),
      mediaType: ENCRYPTED_MEDIA_TYPE,
      metadata: { [EncryptedPartKey.enc]: E2E_SCHEME, [EncryptedPartKey.from]: this.#identity.id, [EncryptedPartKey.to]: to },
    };
  }

  /** The value inside an encrypted part, or undefined when it is not sealed for this identity (or not encrypted). */
  openPart(part: Part, bind: string): unknown {
    if (!isEncryptedPart(part)) return undefined;
    const m = part.metadata!;
    const [scheme, from, to] = [m[EncryptedPartKey.enc], m[EncryptedPartKey.from], m[EncryptedPartKey.to]];
    if (typeof scheme !== "string" || typeof from !== "string" || typeof to !== "string" || !this.isFor(to)) return undefined;
    try {
      return JSON.parse(this.open(from, scheme, to, Buffer.from(part.raw!, "base64"), bind).toString("utf8"));
    } catch {
      return undefined;
    }
  }

  /** A message whose content (parts, metadata) is one encrypted part; ids and role stay readable. */
  sealMessage(message: Message, recipients: readonly string[], bind: string): Message {
    return {
      messageId: message.messageId,
      role: message.role,
      ...(message.contextId && { contextId: message.contextId }),
      ...(message.taskId && { taskId: message.taskId }),
      parts: [this.sealPart(message, recipients, bind)],
    };
  }

  /** The message {@link sealMessage} sealed, when it was sealed for this identity; else `message` as is. */
  openMessage(message: Message, bind: string): Message {
    const part = message.parts.length === 1 ? message.parts[0]! : undefined;
    const inner = part && this.openPart(part, bind);
    return inner && typeof inner === "object" && Array.isArray((inner as Message).parts) ? (inner as Message) : message;
  }

  /** An artifact (or chunk) whose content is one encrypted part; its id stays readable, so chunks still append. */
  sealArtifact(artifact: Artifact, recipients: readonly string[], bind: string): Artifact {
    return { artifactId: artifact.artifactId, parts: [this.sealPart(artifact, recipients, bind)] };
  }

  /**
   * An artifact whose encrypted parts (one per appended chunk) are opened
   * into the chunks' parts; name, description and metadata from the first
   * chunk that has them. Parts not sealed for this identity stay as they are.
   */
  openArtifact(artifact: Artifact, bind: string): Artifact {
    if (!artifact.parts.some(isEncryptedPart)) return artifact;
    const out: Artifact = { artifactId: artifact.artifactId, parts: [] };
    for (const part of artifact.parts) {
      const inner = this.openPart(part, bind) as Artifact | undefined;
      if (!inner || !Array.isArray(inner.parts)) {
        out.parts.push(part);
        continue;
      }
      out.parts.push(...inner.parts);
      out.name ??= inner.name;
      out.description ??= inner.description;
      out.metadata ??= inner.metadata;
    }
    if (out.name === undefined) delete out.name;
    if (out.description === undefined) delete out.description;
    if (out.metadata === undefined) delete out.metadata;
    return out;
  }

  /** A task event with its content (status message, artifact, message) sealed for `recipients`. */
  sealEvent(event: TaskEvent, recipients: readonly string[], taskId: string): TaskEvent {
    const bind = taskBinding(taskId);
    if ("statusUpdate" in event) {
      const { status } = event.statusUpdate;
      if (!status.message) return event;
      return { statusUpdate: { ...event.statusUpdate, status: { ...status, message: this.sealMessage(status.message, recipients, bind) } } };
    }
    if ("artifactUpdate" in event) return { artifactUpdate: { ...event.artifactUpdate, artifact: this.sealArtifact(event.artifactUpdate.artifact, recipients, bind) } };
    return { message: this.sealMessage(event.message, recipients, bind) };
  }

  /** A task event with what is sealed for this identity opened. */
  openEvent(event: TaskEvent, taskId: string): TaskEvent {
    const bind = taskBinding(taskId);
    if ("statusUpdate" in event) {
      const { status } = event.statusUpdate;
      if (!status.message) return event;
      return { statusUpdate: { ...event.statusUpdate, status: { ...status, message: this.openMessage(status.message, bind) } } };
    }
    if ("artifactUpdate" in event) return { artifactUpdate: { ...event.artifactUpdate, artifact: this.openArtifact(event.artifactUpdate.artifact, bind) } };
    return { message: this.openMessage(event.message, bind) };
  }

  /**
   * A task snapshot with what is sealed for this identity opened (history,
   * status message, artifacts); a task without `metadata.encrypted` is
   * returned as is, unread.
   */
  openTask(task: Task): Task {
    if (!task.metadata.encrypted) return task;
    const bind = taskBinding(task.id);
    return {
      ...task,
      status: task.status.message ? { ...task.status, message: this.openMessage(task.status.message, bind) } : task.status,
      history: task.history.map((m) => this.openMessage(m, bind)),
      artifacts: task.artifacts.map((a) => this.openArtifact(a, bind)),
    };
  }
}

/** True for a part that {@link E2E.sealPart} made. */
export function isEncryptedPart(part: Part): boolean {
  return part.mediaType === ENCRYPTED_MEDIA_TYPE && typeof part.raw === "string" && typeof part.metadata?.[EncryptedPartKey.enc] === "string";
}
