import { createCipheriv, createDecipheriv, randomBytes } from "node:crypto";
import { getSha256Backend, setSha256Backend, type ObjectStore } from "@nats-io/obj";
import { AgentBusError, isAgentBusError } from "../wire/errors.js";
import type { Message, Part } from "../wire/protocol.js";
import type { Artifact, Task, TaskEvent } from "../wire/task.js";

/** Media type of a part whose content is in the tenant's blob store (a claim check). */
export const BLOB_MEDIA_TYPE = "application/vnd.agentbus.blob+json";

/** Parts larger than this (bytes of content) go to the blob store unless `connect({ inlineBytes })` says otherwise. */
export const DEFAULT_INLINE_BYTES = 256 * 1024;

/** Most content bytes one task may hold (input, history, artifacts) unless `connect({ maxTaskBytes })` says otherwise. */
export const DEFAULT_MAX_TASK_BYTES = 128 * 1024 * 1024;

/** Which field of the original part the blob holds. */
type BlobKind = "text" | "raw" | "data";

/**
 * A claim check: where a part's content is, and how to check and open it.
 * It is the `data` of a part with media type {@link BLOB_MEDIA_TYPE}.
 */
export interface BlobRef {
  /** The object store bucket (`mesh_<t>_blobs`). */
  bucket: string;
  /** Object name: `<submitter>.<task>.<random>`. */
  name: string;
  /** Bytes of content (decoded `raw`, UTF-8 `text`, JSON `data`). */
  size: number;
  /** `SHA-256=<base64url, padded>` of the stored object (the ciphertext), as the object store records it. */
  digest: string;
  /** The content key, base64url: AES-256-GCM, used for this object only. */
  key: string;
  /** Which field of the part the content was. */
  kind: BlobKind;
  /** The rest of the original part (media type, filename, metadata). */
  part?: Omit<Part, "text" | "raw" | "data">;
}

/** Where blobs of one task go: object names start `<submitter>.<task>.`. */
export interface BlobOwner {
  submitter: string;
  task: string;
}

const TAG = 16;
const NONCE = Buffer.alloc(12); // one key per object: a fixed nonce is safe
const aad = (name: string) => Buffer.from(`agentbus blob v1\n${name}`);

/** Bytes of content of one part, as {@link BlobRef.size} counts them. */
export function partBytes(part: Part): number {
  const ref = blobRefOf(part);
  if (ref) return ref.size;
  if (typeof part.text === "string") return Buffer.byteLength(part.text);
  if (typeof part.raw === "string") return Math.floor((part.raw.length * 3) / 4);
  if (part.data !== undefined) return Buffer.byteLength(JSON.stringify(part.data) ?? "");
  return typeof part.url === "string" ? part.url.length : 0;
}

/** Bytes of content of a message, artifact or event (references count as the content they stand for). */
export const partsBytes = (parts: readonly Part[]): number => parts.reduce((n, p) => n + partBytes(p), 0);

/** Bytes of content of an event. */
export function eventBytes(event: TaskEvent): number {
  if ("statusUpdate" in event) return event.statusUpdate.status.message ? partsBytes(event.statusUpdate.status.message.parts) : 0;
  if ("artifactUpdate" in event) return partsBytes(event.artifactUpdate.artifact.parts);
  return partsBytes(event.message.parts);
}

/** Bytes of content of a task: its history, status message and artifacts. */
export function taskBytes(task: Task): number {
  let n = task.status.message ? partsBytes(task.status.message.parts) : 0;
  for (const m of task.history) n += partsBytes(m.parts);
  for (const a of task.artifacts) n += partsBytes(a.parts);
  return n;
}

/** The reference a part carries, when it is a claim check. */
export function blobRefOf(part: Part): BlobRef | undefined {
  if (part.mediaType !== BLOB_MEDIA_TYPE || typeof part.data !== "object" || part.data === null) return undefined;
  const r = part.data as BlobRef;
  return typeof r.name === "string" && typeof r.digest === "string" && typeof r.key === "string" && typeof r.size === "number" ? r : undefined;
}

const hasRef = (parts: readonly Part[]) => parts.some((p) => blobRefOf(p) !== undefined);

/** Options of {@link Blobs}. */
export interface BlobLimits {
  /** A part with more bytes of content than this is stored as a blob. */
  inlineBytes: number;
  /** Most bytes of content one task may hold; more is `PAYLOAD_TOO_LARGE`. */
  maxTaskBytes: number;
  /** Bytes per stored chunk (at most the server's `max_payload`). */
  chunkBytes: number;
  /**
   * The store is in another JetStream domain (an edge site's hub): it is
   * read, but nothing is written to it (a leaf link carries no object
   * store writes), so content stays inline and what would need a blob is
   * `PAYLOAD_TOO_LARGE`.
   */
  readOnly?: boolean;
}

/**
 * Large parts through the tenant's JetStream object store (`mesh_<t>_blobs`),
 * as claim checks. A part with more content than `inlineBytes` is encrypted
 * under a fresh AES-256-GCM key (bound to the object's name), stored as one
 * object named `<submitter>.<task>.<random>`, and replaced in the message,
 * artifact or event by a reference part ({@link BlobRef}: name, size,
 * SHA-256 digest of what is stored, the key). Readers swap references back
 * for the content: the stored digest must be the reference's, the object
 * store checks its chunks against it, and the content must authenticate
 * under the key, else `BAD_SIGNATURE`. Whoever can read the reference (the
 * task's parties; for an encrypted task, only its recipients, since the
 * reference travels inside the sealed part) can read the content; whoever
 * can only read the bucket sees ciphertext.
 */
export class Blobs {
  constructor(
    readonly store: ObjectStore,
    /** The bucket's name. */
    readonly bucket: string,
    readonly limits: BlobLimits,
  ) {
    // The object store hashes every chunk it writes and reads; its default is
    // a pure-JS SHA-256 (for browsers), several times slower than node:crypto.
    if (getSha256Backend() === "js") setSha256Backend("native");
  }

  /** `PAYLOAD_TOO_LARGE` when `bytes` of content pass the task limit. */
  checkTaskBytes(bytes: number, what: string): void {
    if (bytes > this.limits.maxTaskBytes) {
      throw new AgentBusError("PAYLOAD_TOO_LARGE", `${what} (${bytes} bytes) exceeds the limit of ${this.limits.maxTaskBytes} bytes per task (maxTaskBytes)`);
    }
  }

  /**
   * Whether some of `parts` would be stored as blobs: any over the inline
   * threshold, or all of them (largest first) when `force` is set.
   */
  needsBlobs(parts: readonly Part[], force = false): boolean {
    if (this.limits.readOnly && !force) return false;
    return parts.some((p) => blobRefOf(p) === undefined && (force ? partBytes(p) > 0 : partBytes(p) > this.limits.inlineBytes));
  }

  /**
   * `parts` with each part over the inline threshold (every part with
   * content, with `force`: the message would not fit otherwise) stored as a
   * blob of `owner` and replaced by its reference. Parts already references
   * stay as they are.
   */
  async externalize(parts: Part[], owner: BlobOwner, force = false): Promise<Part[]> {
    if (!this.needsBlobs(parts, force)) return parts;
    if (this.limits.readOnly) throw new AgentBusError("PAYLOAD_TOO_LARGE", `task ${owner.task}: its content does not fit one message, and the blob store ${this.bucket} is in another JetStream domain (read only from here)`);
    const out: Part[] = [];
    for (const p of parts) {
      const bytes = partBytes(p);
      out.push(blobRefOf(p) || !(force ? bytes > 0 : bytes > this.limits.inlineBytes) ? p : await this.#put(p, owner));
    }
    return out;
  }

  async externalizeMessage(message: Message, owner: BlobOwner, force = false): Promise<Message> {
    const parts = await this.externalize(message.parts, owner, force);
    return parts === message.parts ? message : { ...message, parts };
  }

  /** An event with its large parts stored as blobs (see {@link externalize}). */
  async externalizeEvent(event: TaskEvent, owner: BlobOwner, force = false): Promise<TaskEvent> {
    if ("statusUpdate" in event) {
      const { status } = event.statusUpdate;
      if (!status.message) return event;
      const message = await this.externalizeMessage(status.message, owner, force);
      return message === status.message ? event : { statusUpdate: { ...event.statusUpdate, status: { ...status, message } } };
    }
    if ("artifactUpdate" in event) {
      const { artifact } = event.artifactUpdate;
      const parts = await this.externalize(artifact.parts, owner, force);
      return parts === artifact.parts ? event : { artifactUpdate: { ...event.artifactUpdate, artifact: { ...artifact, parts } } };
    }
    const message = await this.externalizeMessage(event.message, owner, force);
    return message === event.message ? event : { message };
  }

  async #put(part: Part, owner: BlobOwner): Promise<Part> {
    const { text, raw, data, ...rest } = part;
    const kind: BlobKind = typeof text === "string" ? "text" : typeof raw === "string" ? "raw" : "data";
    // Raw bytes are decoded from base64 a slice at a time, as the store takes them; text and data are encoded at once.
    const whole = kind === "text" ? Buffer.from(text!) : kind === "data" ? Buffer.from(JSON.stringify(data)) : undefined;
    const size = whole ? whole.length : Buffer.byteLength(raw!, "base64");
    const name = `${owner.submitter}.${owner.task}.${randomBytes(12).toString("hex")}`;
    const key = randomBytes(32);
    const cipher = createCipheriv("aes-256-gcm", key, NONCE);
    cipher.setAAD(aad(name));
    // Encrypted one chunk at a time while the store sends the previous ones.
    const slice = Math.max(3, Math.floor(this.limits.chunkBytes / 3) * 3); // a multiple of 3 bytes…
    const b64 = (slice / 3) * 4; // …is a whole number of base64 quads
    let at = 0;
    let ended = false;
    const stream = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (ended) return controller.close();
        const next = whole ? whole.subarray(at, at + slice) : Buffer.from(raw!.slice((at / slice) * b64, (at / slice) * b64 + b64), "base64");
        at += slice;
        const out = next.length > 0 ? cipher.update(next) : Buffer.alloc(0);
        if (at < size && next.length > 0) return controller.enqueue(out);
        // The last slice: with the cipher's end and its tag.
        ended = true;
        controller.enqueue(Buffer.concat([out, cipher.final(), cipher.getAuthTag()]));
      },
    });
    // The object store hashes what it stores (SHA-256); the reference keeps that digest.
    const info = await this.store.put({ name, options: { max_chunk_size: this.limits.chunkBytes } }, stream).catch((err: unknown) => {
      throw new AgentBusError("UNAVAILABLE", `storing a blob of task ${owner.task} (${size} bytes) failed: ${(err as Error).message}`, { cause: err });
    });
    if (info.size !== size + TAG) throw new AgentBusError("BAD_SIGNATURE", `the stored blob ${name} does not match what was written`);
    const ref: BlobRef = { bucket: this.bucket, name, size, digest: info.digest, key: key.toString("base64url"), kind, ...(Object.keys(rest).length > 0 && { part: rest }) };
    return { data: ref, mediaType: BLOB_MEDIA_TYPE };
  }

  async #get(ref: BlobRef): Promise<Part> {
    const bad = (why: string, cause?: unknown) => new AgentBusError("BAD_SIGNATURE", `blob ${ref.name}: ${why}`, { cause });
    if (ref.bucket !== this.bucket) throw bad(`it is in bucket ${ref.bucket}, not in this tenant's ${this.bucket}`);
    const result = await this.store.get(ref.name).catch((err: unknown) => {
      throw new AgentBusError("UNAVAILABLE", `reading blob ${ref.name} failed: ${(err as Error).message}`, { cause: err });
    });
    if (!result) throw bad("it is missing (deleted, or aged out with its task)");
    if (result.info.digest !== ref.digest || result.info.size !== ref.size + TAG) {
      result.data.cancel().catch(() => {});
      throw bad("the stored object is not the one the reference names (digest or size differs)");
    }
    // Decrypted chunk by chunk as they arrive; nothing is returned before the tag authenticates all of it.
    const plain = Buffer.allocUnsafe(ref.size);
    let decipher;
    try {
      decipher = createDecipheriv("aes-256-gcm", Buffer.from(ref.key, "base64url"), NONCE);
      decipher.setAAD(aad(ref.name));
    } catch (cause) {
      throw bad("its key is not a key", cause);
    }
    const tag = Buffer.alloc(TAG);
    let read = 0; // bytes of the stored object read
    let out = 0; // plaintext bytes written
    const take = (bytes: Uint8Array) => {
      if (bytes.length === 0) return;
      const p = decipher.update(bytes);
      if (out + p.length > plain.length) throw bad("the stored object is larger than its record");
      plain.set(p, out);
      out += p.length;
    };
    try {
      const reader = result.data.getReader();
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        if (read + value.length > result.info.size) throw bad("the stored object is larger than its record");
        // The last TAG bytes of the object are the tag, not ciphertext.
        const cipherEnd = Math.max(0, Math.min(value.length, ref.size - read));
        take(value.subarray(0, cipherEnd));
        if (cipherEnd < value.length) tag.set(value.subarray(cipherEnd), read + cipherEnd - ref.size);
        read += value.length;
      }
      await result.error;
    } catch (err) {
      if (isAgentBusError(err)) throw err;
      // The object store refuses chunks that do not hash to the recorded digest.
      throw /digest/i.test(String((err as Error)?.message)) ? bad("its content does not match its digest", err) : new AgentBusError("UNAVAILABLE", `reading blob ${ref.name} failed: ${(err as Error)?.message}`, { cause: err });
    }
    if (read !== result.info.size) throw bad("the stored object is shorter than its record");
    try {
      decipher.setAuthTag(tag);
      take(decipher.final());
    } catch (cause) {
      throw bad("its content does not authenticate", cause);
    }
    if (out !== plain.length) throw bad("the stored object is shorter than its record");
    const rest = ref.part ?? {};
    if (ref.kind === "text") return { ...rest, text: plain.toString("utf8") };
    if (ref.kind === "raw") return { ...rest, raw: plain.toString("base64") };
    return { ...rest, data: JSON.parse(plain.toString("utf8")) as unknown };
  }

  /** `parts` with every reference swapped for its content (`cache`: by object name, within one read). */
  async resolve(parts: Part[], cache = new Map<string, Promise<Part>>()): Promise<Part[]> {
    if (!hasRef(parts)) return parts;
    return Promise.all(
      parts.map((p) => {
        const ref = blobRefOf(p);
        if (!ref) return p;
        let got = cache.get(ref.name);
        if (!got) cache.set(ref.name, (got = this.#get(ref)));
        return got;
      }),
    );
  }

  async resolveMessage(message: Message, cache?: Map<string, Promise<Part>>): Promise<Message> {
    if (!hasRef(message.parts)) return message;
    return { ...message, parts: await this.resolve(message.parts, cache) };
  }

  async #resolveArtifact(artifact: Artifact, cache: Map<string, Promise<Part>>): Promise<Artifact> {
    if (!hasRef(artifact.parts)) return artifact;
    return { ...artifact, parts: await this.resolve(artifact.parts, cache) };
  }

  /** A task with every reference in its history, status message and artifacts swapped for its content. */
  async resolveTask(task: Task, cache = new Map<string, Promise<Part>>()): Promise<Task> {
    const refs = (task.status.message && hasRef(task.status.message.parts)) || task.history.some((m) => hasRef(m.parts)) || task.artifacts.some((a) => hasRef(a.parts));
    if (!refs) return task;
    const [message, history, artifacts] = await Promise.all([
      task.status.message ? this.resolveMessage(task.status.message, cache) : undefined,
      Promise.all(task.history.map((m) => this.resolveMessage(m, cache))),
      Promise.all(task.artifacts.map((a) => this.#resolveArtifact(a, cache))),
    ]);
    return { ...task, status: message ? { ...task.status, message } : task.status, history, artifacts };
  }

  /** An event with every reference swapped for its content. */
  async resolveEvent(event: TaskEvent): Promise<TaskEvent> {
    const cache = new Map<string, Promise<Part>>();
    if ("statusUpdate" in event) {
      const { status } = event.statusUpdate;
      if (!status.message || !hasRef(status.message.parts)) return event;
      return { statusUpdate: { ...event.statusUpdate, status: { ...status, message: await this.resolveMessage(status.message, cache) } } };
    }
    if ("artifactUpdate" in event) {
      const { artifact } = event.artifactUpdate;
      if (!hasRef(artifact.parts)) return event;
      return { artifactUpdate: { ...event.artifactUpdate, artifact: await this.#resolveArtifact(artifact, cache) } };
    }
    return hasRef(event.message.parts) ? { message: await this.resolveMessage(event.message, cache) } : event;
  }
}
