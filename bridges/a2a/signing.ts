import { AgentCard as AgentCardCodec, canonicalizeAgentCard, verifyAgentCardSignature, type AgentCardSignatureVerifier } from "@a2a-js/sdk";
import { cardKey, signCard, type AgentCard, type Identity } from "../../core/internal.js";

/** Options of {@link cardVerifier}. */
export interface CardVerifierOptions {
  /**
   * Identity ids whose signatures are accepted (a gateway's, agents'). Left
   * out: any identity's, which proves the card is intact and who signed it,
   * not that the signer is one you trust.
   */
  trusted?: readonly string[];
}

/**
 * A verifier of signed agent cards for `@a2a-js/sdk`'s
 * `client.getAgentCard(options, verifier)` (or to call on any card): it
 * succeeds when a signature verifies, EdDSA over the card's canonical JSON,
 * with the key its `kid` names (an identity id carries its public key), and
 * that `kid` is trusted. A card changed after signing fails.
 *
 * @example
 * ```ts
 * const client = await new ClientFactory().createFromUrl(cardUrl, "");
 * await client.getAgentCard(undefined, cardVerifier({ trusted: [gatewayId] }));
 * ```
 */
export function cardVerifier(options: CardVerifierOptions = {}): AgentCardSignatureVerifier {
  return verifyAgentCardSignature(async (kid) => {
    if (options.trusted && !options.trusted.includes(kid)) throw new Error(`the card is signed by ${kid}, which is not trusted`);
    return cardKey(kid);
  });
}

/** The canonical JSON of a card (JSON form) as the SDK's signer and verifier compute it. */
export const canonicalCard = (card: AgentCard): string => canonicalizeAgentCard(AgentCardCodec.fromJSON(card));

/**
 * A served card signed by the bridge's identity (`jku`: the bridge's JWK
 * set), cached per card object: cards are rebuilt when the registry
 * changes, so a changed card is signed anew.
 */
export class CardSigner {
  readonly #signed = new WeakMap<AgentCard, AgentCard>();
  constructor(private readonly identity: Identity) {}

  sign(card: AgentCard, jku: string): AgentCard {
    let signed = this.#signed.get(card);
    if (!signed) this.#signed.set(card, (signed = signCard(this.identity, card, canonicalCard, jku)));
    return signed;
  }
}
