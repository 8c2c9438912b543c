import { createPrivateKey, createPublicKey, hkdfSync, randomBytes, sign, verify, type KeyObject } from "node:crypto";
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import { inspect } from "node:util";
import { Prefix } from "@nats-io/nkeys";
import { Codec } from "@nats-io/nkeys/lib/codec.js";
import { AgentBusError } from "../wire/errors.js";

// DER prefixes that wrap a raw 32-byte Ed25519 seed / public key so
// node:crypto (OpenSSL) can use them. OpenSSL signs ~150x faster than the
// pure-JS tweetnacl inside nkeys (see bench/crypto).
const PKCS8_ED25519 = Buffer.from("302e020100300506032b657004220420", "hex");
const SPKI_ED25519 = Buffer.from("302a300506032b6570032100", "hex");

const enc = new TextEncoder();

/**
 * An Ed25519 key pair. Its `id` is the public key in NATS nkey user form
 * (`U…`), so the same key can sign envelopes and authenticate to
 * nats-server by nkey challenge. The seed never appears in logs, JSON or
 * `util.inspect` output; only {@link Identity.exportSeed} reveals it.
 */
export class Identity {
  /** Public key in nkey form: the agent id. */
  readonly id: string;
  /** Raw 32-byte Ed25519 public key. */
  readonly publicKey: Uint8Array;
  readonly #seed: Uint8Array;
  readonly #key: KeyObject;

  private constructor(seed: Uint8Array) {
    if (seed.length !== 32) throw new AgentBusError("INVALID_INPUT", "an Ed25519 seed is 32 bytes");
    this.#seed = Uint8Array.from(seed);
    this.#key = createPrivateKey({ key: Buffer.concat([PKCS8_ED25519, seed]), format: "der", type: "pkcs8" });
    const jwk = createPublicKey(this.#key).export({ format: "jwk" });
    this.publicKey = Buffer.from(jwk.x!, "base64url");
    this.id = new TextDecoder().decode(Codec.encode(Prefix.User, this.publicKey));
  }

  /** A fresh random identity. */
  static generate(): Identity {
    return new Identity(randomBytes(32));
  }

  /** From an nkey user seed (`SU…`), as written by `agentbus keygen` or `nsc`. */
  static fromSeed(seed: string | Uint8Array): Identity {
    const text = typeof seed === "string" ? seed.trim() : new TextDecoder().decode(seed).trim();
    let decoded;
    try {
      decoded = Codec.decodeSeed(enc.encode(text));
    } catch (cause) {
      throw new AgentBusError("INVALID_INPUT", "not a valid nkey seed", { cause });
    }
    if (decoded.prefix !== Prefix.User) throw new AgentBusError("INVALID_INPUT", "the seed is not an nkey user seed (SU…)");
    return new Identity(decoded.buf);
  }

  /** From a file holding an nkey seed (a `.nk` file, or a `.creds` file's seed block). */
  static fromFile(path: string): Identity {
    const text = readFileSync(path, "utf8");
    const match = /\bSU[A-Z2-7]{56}\b/.exec(text);
    if (!match) throw new AgentBusError("INVALID_INPUT", `no nkey user seed found in ${path}`);
    return Identity.fromSeed(match[0]);
  }

  /**
   * The identity in `path`, or a new one written there (0600) when the file
   * does not exist: a service keeps the same id across restarts, so it can
   * still follow tasks it submitted before.
   */
  static fromFileOrCreate(path: string): Identity {
    if (existsSync(path)) return Identity.fromFile(path);
    const id = Identity.generate();
    mkdirSync(dirname(path), { recursive: true });
    id.writeSeed(path);
    return id;
  }

  /** From an environment variable holding a seed (default `AGENTBUS_SEED`). */
  static fromEnv(name = "AGENTBUS_SEED"): Identity {
    const value = process.env[name];
    if (!value) throw new AgentBusError("INVALID_INPUT", `environment variable ${name} is not set`);
    return Identity.fromSeed(value);
  }

  /** Writes the seed to `path` with mode 0600 (also when the file existed with looser permissions). */
  writeSeed(path: string): void {
    writeFileSync(path, `${this.exportSeed()}\n`, { mode: 0o600 });
    chmodSync(path, 0o600);
  }

  /** The nkey seed (`SU…`). Treat as a secret: write it only to a 0600 file. */
  exportSeed(): string {
    return new TextDecoder().decode(Codec.encodeSeed(Prefix.User, this.#seed));
  }

  /**
   * A child identity derived from this one's seed and `label` (HKDF-SHA256):
   * the same parent and label always give the same identity, and nobody
   * without the parent's seed can compute it. For one holder that needs a
   * distinct key per context (a NATS user key belongs to one account only).
   */
  derive(label: string): Identity {
    return new Identity(new Uint8Array(hkdfSync("sha256", this.#seed, "agentbus derived identity v1", label, 32)));
  }

  /** Raw 32-byte seed, for key conversions inside core. */
  rawSeed(): Uint8Array {
    return this.#seed;
  }

  /** Ed25519 signature of `data`. */
  sign(data: Uint8Array): Uint8Array {
    return sign(null, data, this.#key);
  }

  /** Signs for nats-server's nkey challenge (connection authentication). */
  signNonce(nonce: Uint8Array): Uint8Array {
    return this.sign(nonce);
  }

  toJSON(): { id: string } {
    return { id: this.id };
  }

  [inspect.custom](): string {
    return `Identity(${this.id})`;
  }
}

const publicKeys = new Map<string, KeyObject>();
const MAX_CACHED_KEYS = 10_000;

/** Raw public key of an nkey user id; throws `BAD_SIGNATURE` for anything else. */
export function publicKeyOf(id: string): Uint8Array {
  try {
    return Codec.decode(Prefix.User, enc.encode(id));
  } catch (cause) {
    throw new AgentBusError("BAD_SIGNATURE", "sender id is not an nkey user public key", { cause });
  }
}

function keyObjectOf(id: string): KeyObject {
  let key = publicKeys.get(id);
  if (!key) {
    if (publicKeys.size >= MAX_CACHED_KEYS) publicKeys.clear();
    key = createPublicKey({ key: Buffer.concat([SPKI_ED25519, publicKeyOf(id)]), format: "der", type: "spki" });
    publicKeys.set(id, key);
  }
  return key;
}

/** Verifies an Ed25519 signature by the identity `id`. */
export function verifySignature(id: string, data: Uint8Array, signature: Uint8Array): boolean {
  return signature.length === 64 && verify(null, data, keyObjectOf(id), signature);
}

/** True when `id` is a well-formed nkey user public key. */
export function isIdentityId(id: string): boolean {
  try {
    publicKeyOf(id);
    return true;
  } catch {
    return false;
  }
}
