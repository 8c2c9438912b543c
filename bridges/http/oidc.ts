import { createRemoteJWKSet, jwtVerify, type JWTPayload } from "jose";

/** An OpenID Connect issuer whose bearer JWTs are accepted (`gateway.oidc` in the configuration). */
export interface OidcConfig {
  /** The issuer (`iss` of every token), e.g. `https://login.example.com/realms/acme`. */
  issuer: string;
  /** The audience a token must name in `aud` (one of them, when several are given). */
  audience: string | string[];
  /** The issuer's JWKS; default: `jwks_uri` of `<issuer>/.well-known/openid-configuration`. */
  jwksUrl?: string;
  /** Clock skew tolerated on `exp`, `nbf` and `iat`, seconds (default 30). */
  clockToleranceSec?: number;
}

/** Why a token or the issuer's keys were refused: `token` (the token itself) or `discovery` (the issuer's metadata). */
export class OidcError extends Error {
  override readonly name = "OidcError";
  constructor(
    message: string,
    readonly kind: "token" | "discovery",
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** The OpenID Connect discovery document's URL for an issuer. */
export const discoveryUrl = (issuer: string): string => `${issuer.replace(/\/+$/, "")}/.well-known/openid-configuration`;

/** True when `token` has the shape of a compact JWS (three base64url segments). */
export const looksLikeJwt = (token: string): boolean => /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/.test(token);

/** What a verified token says: its subject is always there. */
export type VerifiedToken = JWTPayload & { sub: string };

/**
 * Verifies bearer JWTs with `jose`: signature against the issuer's JWKS
 * (fetched, cached and refreshed on an unknown `kid` by
 * `createRemoteJWKSet`), `iss`, `aud`, `exp` and `nbf`. The JWKS URL comes
 * from OpenID Connect discovery unless given; a failed discovery is tried
 * again on the next token.
 */
export class OidcVerifier {
  #jwks?: Promise<ReturnType<typeof createRemoteJWKSet>>;

  constructor(private readonly config: OidcConfig) {}

  /**
   * The token's claims when it is valid.
   *
   * @throws {OidcError} `token` when the token is invalid, expired, for another audience or issuer, or has no `sub`; `discovery` when the issuer's metadata cannot be read.
   */
  async verify(token: string): Promise<VerifiedToken> {
    const jwks = await this.#keys();
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, jwks, {
        issuer: this.config.issuer,
        audience: this.config.audience,
        clockTolerance: this.config.clockToleranceSec ?? 30,
      }));
    } catch (err) {
      throw new OidcError(`bearer token refused: ${(err as Error).message}`, "token", { cause: err });
    }
    if (typeof payload.sub !== "string" || payload.sub === "") throw new OidcError("bearer token refused: no sub claim", "token");
    return payload as VerifiedToken;
  }

  #keys(): Promise<ReturnType<typeof createRemoteJWKSet>> {
    if (!this.#jwks) {
      const jwks = this.#jwksUrl().then((url) => createRemoteJWKSet(url, { timeoutDuration: 5_000 }));
      // A failed discovery is not kept: the next token tries again.
      jwks.catch(() => {
        if (this.#jwks === jwks) this.#jwks = undefined;
      });
      this.#jwks = jwks;
    }
    return this.#jwks;
  }

  async #jwksUrl(): Promise<URL> {
    if (this.config.jwksUrl) return new URL(this.config.jwksUrl);
    const url = discoveryUrl(this.config.issuer);
    let doc: { issuer?: unknown; jwks_uri?: unknown };
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(5_000), headers: { accept: "application/json" } });
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      doc = (await res.json()) as typeof doc;
    } catch (err) {
      throw new OidcError(`OpenID Connect discovery at ${url} failed: ${(err as Error).message}`, "discovery", { cause: err });
    }
    if (doc.issuer !== this.config.issuer) throw new OidcError(`OpenID Connect discovery at ${url}: issuer ${String(doc.issuer)} is not ${this.config.issuer}`, "discovery");
    if (typeof doc.jwks_uri !== "string") throw new OidcError(`OpenID Connect discovery at ${url}: no jwks_uri`, "discovery");
    return new URL(doc.jwks_uri);
  }
}
