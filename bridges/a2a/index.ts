/**
 * The A2A bridge: bus agents served over A2A v1.0 JSON-RPC and SSE.
 *
 * @example
 * ```ts
 * import Fastify from "fastify";
 * const app = Fastify({ routerOptions: { ignoreTrailingSlash: true } });
 * await app.register(a2aBridge, { bus, apiKeys: [{ name: "ci", sha256: hashApiKey(process.env.KEY!), bus }] });
 * await app.listen({ port: 8080 });
 * ```
 */
export { a2aBridge, type A2ABridgeOptions } from "./server.js";
export { BusRequestHandler } from "./handler.js";
export { PushNotifications, type PushConfig, type PushOptions } from "./push.js";
export { readApiKeys, type ApiKeyConfig } from "./keys.js";
// API keys and the HTTP edge live in bridges/http; re-exported here as before.
export { hashApiKey, API_KEY_HEADER, type ApiKeyEntry } from "./auth.js";
export { httpEdge, type Caller, type EdgeOptions, type OidcAuthOptions } from "../http/index.js";
export { agentCard, gatewayCard, PROTOCOL_VERSION } from "./cards.js";
export { NATS_BINDING } from "../../core/index.js";
export { NatsTransport, NatsTransportFactory, natsAgentCard } from "./transport.js";
export type { A2AGrpcOptions } from "./grpc.js";
export { cardVerifier, type CardVerifierOptions } from "./signing.js";
