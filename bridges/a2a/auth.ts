import { createHash, timingSafeEqual } from "node:crypto";
import type { FastifyRequest } from "fastify";
import type { Bus } from "../../core/index.js";

/** One API key: only its SHA-256 is kept; requests with it act as `bus` (its tenant and identity). */
export interface ApiKeyEntry {
  /** Shown in logs and used as the rate-limit key; never the key itself. */
  name: string;
  /** Hex SHA-256 of the key (see {@link hashApiKey}). */
  sha256: string;
  bus: Bus;
}

/** The stored form of an API key. */
export const hashApiKey = (key: string): string => createHash("sha256").update(key).digest("hex");

/** The header a caller puts its key in (also accepted: `Authorization: Bearer <key>`). */
export const API_KEY_HEADER = "X-API-Key";

/** The key a request presents, if any. */
export function presentedKey(req: FastifyRequest): string | undefined {
  const direct = req.headers[API_KEY_HEADER.toLowerCase()];
  if (typeof direct === "string" && direct) return direct;
  const auth = req.headers.authorization;
  return auth?.startsWith("Bearer ") ? auth.slice(7).trim() || undefined : undefined;
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

/** The card's declaration of the scheme, in A2A v1.0 JSON form. */
export const apiKeySecurity = {
  securitySchemes: { apiKey: { apiKeySecurityScheme: { location: "header", name: API_KEY_HEADER, description: "agentbus API key" } } },
  securityRequirements: [{ schemes: { apiKey: { list: [] } } }],
};
