/**
 * Key rotation: an identity moves to a new key and keeps its grants. The
 * holder of both keys makes a {@link RotationProof} (each key signs the
 * move, so nobody can claim someone else's key or push a key on someone);
 * a tenant admin stores it, signed, as `rotation.<from>` in `mesh_<t>_acl`.
 * From then on every receiver treats `to` as `from` in rules and groups and
 * refuses envelopes from `from` (`REVOKED`, reason "rotated").
 */
import { AgentBusError } from "../wire/errors.js";
import { isIdentityId, verifySignature, type Identity } from "../security/identity.js";
import { canonicalJson } from "./policy.js";

const enc = new TextEncoder();

/** Both keys' consent to a rotation from `from` to `to` in one tenant. */
export interface RotationProof {
  /** The old identity id. */
  from: string;
  /** The new identity id. */
  to: string;
  /** When the proof was made, ms since the epoch. */
  at: number;
  /** `from`'s Ed25519 signature (base64url) over the rotation: proof of possession of the old key. */
  fromSig: string;
  /** `to`'s signature over the same bytes: the new key agrees to stand for `from`. */
  toSig: string;
}

function rotationBytes(tenant: string, from: string, to: string, at: number): Uint8Array {
  return enc.encode(canonicalJson(["agentbus.rotate.v1", tenant, from, to, at]));
}

/**
 * Makes the proof that rotates `from` to `to` in `tenant`; needs both
 * private keys (nothing is sent anywhere). Hand it to a tenant admin, who
 * applies it with `bus.rotateIdentity(proof)` (or `agentbus identity rotate`).
 */
export function proveRotation(from: Identity, to: Identity, tenant: string, at = Date.now()): RotationProof {
  if (from.id === to.id) throw new AgentBusError("MISUSE", "a rotation needs a new key");
  const bytes = rotationBytes(tenant, from.id, to.id, at);
  const b64 = (sig: Uint8Array) => Buffer.from(sig).toString("base64url");
  return { from: from.id, to: to.id, at, fromSig: b64(from.sign(bytes)), toSig: b64(to.sign(bytes)) };
}

/** Checks a proof's shape and both signatures for `tenant`; throws `BAD_SIGNATURE`. */
export function verifyRotation(tenant: string, value: unknown): RotationProof {
  const p = value as RotationProof;
  if (!p || typeof p !== "object" || !isIdentityId(p.from) || !isIdentityId(p.to) || p.from === p.to || typeof p.at !== "number" || typeof p.fromSig !== "string" || typeof p.toSig !== "string") {
    throw new AgentBusError("BAD_SIGNATURE", "a rotation proof is {from, to, at, fromSig, toSig} with two different identity ids");
  }
  const bytes = rotationBytes(tenant, p.from, p.to, p.at);
  if (!verifySignature(p.from, bytes, Buffer.from(p.fromSig, "base64url"))) throw new AgentBusError("BAD_SIGNATURE", `rotation of ${p.from}: the old key's signature does not verify`);
  if (!verifySignature(p.to, bytes, Buffer.from(p.toSig, "base64url"))) throw new AgentBusError("BAD_SIGNATURE", `rotation of ${p.from}: the new key's signature does not verify`);
  return { from: p.from, to: p.to, at: p.at, fromSig: p.fromSig, toSig: p.toSig };
}

/** The ACL key of the rotation record for `from`. */
export const rotationKey = (from: string): string => `rotation.${from}`;
