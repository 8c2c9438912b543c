import { createHmac, createPrivateKey, createPublicKey, createSecretKey, diffieHellman, hkdfSync, type KeyObject } from "node:crypto";
import { ed25519 } from "@noble/curves/ed25519.js";
import { AgentBusError } from "../wire/errors.js";
import { publicKeyOf, type Identity } from "./identity.js";

const SALT = Buffer.from("agentbus peer key v1");
// Same agreement, another HKDF salt: the key that wraps end-to-end content keys (core/security/e2e.ts).
const WRAP_SALT = Buffer.from("agentbus e2e wrap v1");
// DER prefixes wrapping raw X25519 keys for node:crypto, whose DH is ~35×
// faster than the pure-JS one; noble is used only for the Ed25519→X25519 map.
const PKCS8_X25519 = Buffer.from("302e020100300506032b656e04220420", "hex");
const SPKI_X25519 = Buffer.from("302a300506032b656e032100", "hex");
const MAX_PEERS = 10_000;

/**
 * Symmetric keys shared with each peer, so the per-message path uses an
 * HMAC (a few µs) instead of an Ed25519 signature and verification
 * (~40 µs + ~110 µs on these machines, twice per round trip).
 *
 * The key for a pair of identities is derived from their Ed25519 keys alone:
 * both are mapped to X25519 (the birational map libsodium and age use) and
 * combined by Diffie-Hellman, then HKDF. Each side computes it once per peer
 * without a round trip; only the two key holders can, so a valid MAC proves
 * the sender as a signature does (to that one recipient).
 */
export class PeerKeys {
  readonly #identity: Identity;
  readonly #secret: KeyObject;
  readonly #keys = new Map<string, KeyObject>();
  readonly #wrapKeys = new Map<string, KeyObject>();

  constructor(identity: Identity) {
    this.#identity = identity;
    const secret = ed25519.utils.toMontgomerySecret(identity.rawSeed());
    this.#secret = createPrivateKey({ key: Buffer.concat([PKCS8_X25519, secret]), format: "der", type: "pkcs8" });
  }

  /** The 32-byte key shared with `peer` (cached, as a KeyObject: cheaper per HMAC than raw bytes). */
  keyFor(peer: string): KeyObject {
    return this.#keys.get(peer) ?? this.#derive(peer, SALT, this.#keys);
  }

  /**
   * The 32-byte key that wraps end-to-end content keys between this
   * identity and `peer` (`peer` may be this identity itself): the same
   * X25519 agreement as {@link keyFor}, HKDF with another salt, so the MAC
   * key and the wrapping key are independent.
   */
  wrapKeyFor(peer: string): KeyObject {
    return this.#wrapKeys.get(peer) ?? this.#derive(peer, WRAP_SALT, this.#wrapKeys);
  }

  #derive(peer: string, salt: Buffer, cache: Map<string, KeyObject>): KeyObject {
    let shared: Uint8Array;
    try {
      const pub = createPublicKey({ key: Buffer.concat([SPKI_X25519, ed25519.utils.toMontgomery(publicKeyOf(peer))]), format: "der", type: "spki" });
      shared = diffieHellman({ privateKey: this.#secret, publicKey: pub });
    } catch (cause) {
      throw new AgentBusError("BAD_SIGNATURE", "peer id is not a usable public key", { cause });
    }
    const [a, b] = [this.#identity.id, peer].sort();
    const key = createSecretKey(Buffer.from(hkdfSync("sha256", shared, salt, `${a}|${b}`, 32)));
    if (cache.size >= MAX_PEERS) cache.clear();
    cache.set(peer, key);
    return key;
  }

  /** HMAC-SHA256 over a header block (UTF-8) and a body, keyed for `peer`. */
  mac(peer: string, head: string, body: Uint8Array): Buffer {
    return createHmac("sha256", this.keyFor(peer)).update(head).update(body).digest();
  }
}
