import { API_KEY_HEADER, type Edge } from "../http/index.js";
import { discoveryUrl } from "../http/index.js";

// API keys live in the shared HTTP edge; these names stay importable from here.
export { hashApiKey, findKey, presentedKey, API_KEY_HEADER, type ApiKeyEntry } from "../http/index.js";

/** The card's declaration of the API key scheme, in A2A v1.0 JSON form. */
export const apiKeySecurity = {
  securitySchemes: { apiKey: { apiKeySecurityScheme: { location: "header", name: API_KEY_HEADER, description: "agentbus API key" } } },
  securityRequirements: [{ schemes: { apiKey: { list: [] } } }],
};

/**
 * The schemes a card declares for the edge's authentication: the API key
 * scheme with keys, OpenID Connect with an issuer (either one satisfies the
 * card); nothing in open mode.
 */
export function securityOf(edge: Edge): { securitySchemes?: Record<string, unknown>; securityRequirements?: SecurityRequirement[] } {
  if (edge.open) return {};
  const schemes: Record<string, unknown> = {};
  const requirements: SecurityRequirement[] = [];
  if (edge.auth.apiKeys.length > 0) {
    Object.assign(schemes, apiKeySecurity.securitySchemes);
    requirements.push(...apiKeySecurity.securityRequirements);
  }
  if (edge.auth.oidc) {
    schemes.oidc = { openIdConnectSecurityScheme: { openIdConnectUrl: discoveryUrl(edge.auth.oidc.issuer), description: "bearer JWT from this OpenID Connect issuer" } };
    requirements.push({ schemes: { oidc: { list: [] } } });
  }
  return { securitySchemes: schemes, securityRequirements: requirements };
}

/** One way to satisfy a card's security, in A2A v1.0 JSON form: scheme name → scopes. */
type SecurityRequirement = { schemes: Record<string, { list: string[] }> };
