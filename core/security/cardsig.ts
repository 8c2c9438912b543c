import { AgentBusError } from "../wire/errors.js";
import type { AgentCard, AgentCardSignature } from "../wire/protocol.js";
import { isIdentityId, publicKeyOf, type Identity } from "./identity.js";

const b64 = (data: string | Uint8Array): string => Buffer.from(data).toString("base64url");

/**
 * A signature of an agent card by `identity` (A2A §8.4): a flattened JWS,
 * EdDSA (Ed25519), `kid` the identity's id, over `canonical` — the card's
 * canonical JSON without its signatures, as `@a2a-js/sdk`'s
 * `canonicalizeAgentCard` makes it (the form its verifier checks).
 * `jku`: where a JWK set with the key is served, for clients that look keys
 * up by URL.
 */
export function cardSignature(identity: Identity, canonical: string, jku?: string): AgentCardSignature {
  const protectedHeader = b64(JSON.stringify({ alg: "EdDSA", kid: identity.id, typ: "JOSE", ...(jku !== undefined && { jku }) }));
  const signature = identity.sign(new TextEncoder().encode(`${protectedHeader}.${b64(canonical)}`));
  return { protected: protectedHeader, signature: b64(signature) };
}

/** `card` signed by `identity` (its earlier signatures replaced); `canonicalize` as {@link cardSignature} says. */
export function signCard(identity: Identity, card: AgentCard, canonicalize: (card: AgentCard) => string, jku?: string): AgentCard {
  const { signatures: _earlier, ...unsigned } = card;
  return { ...unsigned, signatures: [cardSignature(identity, canonicalize(unsigned as AgentCard), jku)] };
}

/** An Ed25519 public key as a JWK (`kid` its identity id), for JWS verifiers and JWK sets. */
export interface CardKey {
  kty: "OKP";
  crv: "Ed25519";
  x: string;
  kid: string;
  alg: "EdDSA";
  use: "sig";
}

/**
 * The key of a card signature's `kid`: an identity id carries its public
 * key, so no lookup is needed.
 *
 * @throws {AgentBusError} `INVALID_INPUT` when `kid` is not an identity id.
 */
export function cardKey(kid: string): CardKey {
  if (!isIdentityId(kid)) throw new AgentBusError("INVALID_INPUT", `card signature key id ${JSON.stringify(kid)} is not an identity id`);
  return { kty: "OKP", crv: "Ed25519", x: b64(publicKeyOf(kid)), kid, alg: "EdDSA", use: "sig" };
}
