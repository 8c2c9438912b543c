import { createHash, timingSafeEqual } from "node:crypto";
import type { IncomingHttpHeaders } from "node:http";
import { AgentBusError, type Bus } from "../../core/index.js";
import { OidcError, OidcVerifier, looksLikeJwt, type OidcConfig } from "./oidc.js";

/** One API key: only its SHA-256 is kept; requests with it act as `bus` (its tenant and identity). */
export interface ApiKeyEntry {
  /** Shown in logs, used as the rate-limit key and as the caller's name; never the key itself. */
  name: string;
  /** Hex SHA-256 of the key (see {@link hashApiKey}). */
  sha256: string;
  bus: Bus;
}

/** Bearer JWTs from an OpenID Connect issuer: every valid token's request acts as `bus`, named `oidc:<sub>`. */
export interface OidcAuthOptions extends OidcConfig {
  /** The connection (tenant and persistent identity) requests with a valid token act as. */
  bus: Bus;
}

/** Who a request acts as, attached to it by the HTTP edge as `request.caller`. */
export interface Caller {
  /**
   * The caller's name: the API key's name, or `oidc:<sub>` for a bearer
   * JWT. Absent in open mode (no authentication).
   */
  name?: string;
  /** The bus connection the request acts as: its tenant and identity. */
  bus: Bus;
}

/** How callers authenticate: exactly one of `open` and (`apiKeys` and/or `oidc`). */
export interface AuthOptions {
  /** The bridge's own connection: every request acts as it in open mode. */
  bus: Bus;
  /** Local use only: no authentication, every caller acts as `bus`. Served on loopback only. */
  open?: boolean;
  /** Accepted API keys (`X-API-Key`, or `Authorization: Bearer`), each acting as its own bus connection. */
  apiKeys?: ApiKeyEntry[];
  /** Accepted bearer JWTs (`Authorization: Bearer`), all acting as one bus connection. */
  oidc?: OidcAuthOptions;
}

/**
 * What authentication reads of a request: its headers (an HTTP request's,
 * or a gRPC call's metadata as headers) and where to log a refused token.
 */
export interface AuthRequest {
  headers: IncomingHttpHeaders;
  log: { info(obj: object, msg: string): void; error(obj: object, msg: string): void };
}

/** What {@link Authenticator.authenticate} found: a caller, or why there is none. */
export type AuthResult = { caller: Caller } | { refused: "missing" | "invalid" | "unavailable"; reason: string };

/** The stored form of an API key. */
export const hashApiKey = (key: string): string => createHash("sha256").update(key).digest("hex");

/** The header a caller puts its key in (also accepted: `Authorization: Bearer <key>`). */
export const API_KEY_HEADER = "X-API-Key";

/** The key a request presents, if any: `X-API-Key`, else a bearer token. */
export function presentedKey(req: Pick<AuthRequest, "headers">): string | undefined {
  const direct = req.headers[API_KEY_HEADER.toLowerCase()];
  if (typeof direct === "string" && direct) return direct;
  return bearerToken(req);
}

/** The token of `Authorization: Bearer <token>`, if any. */
export function bearerToken(req: Pick<AuthRequest, "headers">): string | undefined {
  const auth = req.headers.authorization;
  return auth !== undefined && /^bearer /i.test(auth) ? auth.slice(7).trim() || undefined : undefined;
}

/** Finds the entry whose hash matches, comparing in constant time. */
export function findKey(entries: readonly ApiKeyEntry[], presented: string | undefined): ApiKeyEntry | undefined {
  if (!presented) return undefined;
  const digest = Buffer.from(hashApiKey(presented), "hex");
  let found: ApiKeyEntry | undefined;
  for (const e of entries) {
    const stored = Buffer.from(e.sha256, "hex");
    if (stored.length === digest.length && timingSafeEqual(stored, digest)) found = e;
  }
  return found;
}

/**
 * Resolves the caller of a request: in open mode the bridge's own
 * connection; otherwise an API key (`X-API-Key` or bearer, looked up
 * first), then a bearer JWT verified against the OIDC issuer.
 */
export class Authenticator {
  readonly open: boolean;
  readonly apiKeys: readonly ApiKeyEntry[];
  readonly oidc?: OidcAuthOptions;
  readonly #bus: Bus;
  readonly #verifier?: OidcVerifier;

  /** @throws {AgentBusError} `INVALID_INPUT` unless exactly one of `open` and (`apiKeys`, `oidc`) is given. */
  constructor(options: AuthOptions) {
    Authenticator.check(options, "HTTP edge");
    this.open = Boolean(options.open);
    this.apiKeys = options.apiKeys ?? [];
    this.oidc = options.oidc;
    this.#bus = options.bus;
    this.#verifier = options.oidc && new OidcVerifier(options.oidc);
  }

  /**
   * Checks that `options` give exactly one of `open` and (`apiKeys`,
   * `oidc`); `owner` names the plugin in the error.
   *
   * @throws {AgentBusError} `INVALID_INPUT` otherwise.
   */
  static check(options: Pick<AuthOptions, "open" | "apiKeys" | "oidc">, owner: string): void {
    const secured = (options.apiKeys?.length ?? 0) > 0 || options.oidc !== undefined;
    if (Boolean(options.open) === secured) {
      throw new AgentBusError("INVALID_INPUT", `${owner}: give either apiKeys or oidc (production) or open: true (local use), not both or neither`);
    }
  }

  /** Every connection a request may act as: the bridge's, each key's, the OIDC callers'. */
  buses(): Bus[] {
    return [...new Set([this.#bus, ...this.apiKeys.map((k) => k.bus), ...(this.oidc ? [this.oidc.bus] : [])])];
  }

  /** The request's caller, or why it has none. */
  async authenticate(req: AuthRequest): Promise<AuthResult> {
    if (this.open) return { caller: { bus: this.#bus } };
    const presented = presentedKey(req);
    if (!presented) return { refused: "missing", reason: this.#verifier ? "missing API key or bearer token" : "missing or invalid API key" };
    const entry = findKey(this.apiKeys, presented);
    if (entry) return { caller: { name: entry.name, bus: entry.bus } };
    const token = bearerToken(req);
    if (this.#verifier && this.oidc && token !== undefined && token === presented && looksLikeJwt(token)) {
      try {
        const { sub } = await this.#verifier.verify(token);
        return { caller: { name: `oidc:${sub}`, bus: this.oidc.bus } };
      } catch (err) {
        if (err instanceof OidcError && err.kind === "discovery") {
          req.log.error({ err: err.message }, "cannot verify bearer tokens");
          return { refused: "unavailable", reason: "the token issuer's keys cannot be read" };
        }
        req.log.info({ err: (err as Error).message }, "bearer token refused");
        return { refused: "invalid", reason: "invalid bearer token" };
      }
    }
    return { refused: "invalid", reason: this.#verifier ? "invalid API key or bearer token" : "missing or invalid API key" };
  }
}
