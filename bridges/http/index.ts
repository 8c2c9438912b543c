/**
 * The HTTP edge shared by every bridge (A2A, MCP, monitor, metrics, the
 * gateway): `Host` and `Origin` allow-lists against DNS rebinding and
 * cross-origin pages, open mode on loopback only, and one authentication
 * step (API keys, bearer JWTs from an OpenID Connect issuer) that attaches
 * the caller to each request as `request.caller`.
 *
 * @example
 * ```ts
 * import Fastify from "fastify";
 * const app = Fastify();
 * await app.register(httpEdge, { bus, apiKeys: [{ name: "ci", sha256: hashApiKey(process.env.KEY!), bus: ciBus }], allowedHosts: ["agents.internal"] });
 * app.get("/whoami", async (req) => ({ caller: req.caller?.name }));
 * await app.listen({ port: 8080 });
 * ```
 */
export { httpEdge, edgeFor, callerOf, edgeErrorBody, type Edge, type EdgeOptions, type EdgeRouteConfig, type EdgeErrorCode, type BridgeEdgeOptions } from "./edge.js";
export { HostPolicy, isLoopbackHost, isLoopbackAddress, parseHost, LOOPBACK_NAMES, type HostPolicyOptions } from "./hosts.js";
export { Authenticator, hashApiKey, findKey, presentedKey, bearerToken, API_KEY_HEADER, type ApiKeyEntry, type AuthOptions, type AuthRequest, type AuthResult, type Caller, type OidcAuthOptions } from "./auth.js";
export { OidcVerifier, OidcError, discoveryUrl, looksLikeJwt, type OidcConfig, type VerifiedToken } from "./oidc.js";
export { persistentIdentity, keySeedFile, oidcSeedFile } from "./identities.js";
