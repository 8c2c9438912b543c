/**
 * The HTTP gateway of `agentbus up`: A2A, MCP, the monitor, health and
 * readiness on one fastify app.
 *
 * @example
 * ```ts
 * const app = await createGateway({ bus, open: true });
 * await app.listen({ port: 8080, host: "127.0.0.1" });
 * ```
 */
export { createGateway, type GatewayOptions } from "./server.js";
export {
  httpEdge,
  edgeFor,
  HostPolicy,
  Authenticator,
  OidcVerifier,
  OidcError,
  isLoopbackHost,
  persistentIdentity,
  keySeedFile,
  oidcSeedFile,
  type Caller,
  type Edge,
  type EdgeOptions,
  type EdgeRouteConfig,
  type HostPolicyOptions,
  type OidcConfig,
  type OidcAuthOptions,
} from "../http/index.js";
