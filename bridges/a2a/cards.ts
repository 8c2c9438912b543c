import { createHash } from "node:crypto";
import { A2A_VERSION, natsInterface, type AgentCard, type AgentInfo, type Bus } from "../../core/index.js";

/** The A2A protocol version the bridge speaks. */
export const PROTOCOL_VERSION = A2A_VERSION;

/** The older protocol version v0.3 clients speak (requests without `A2A-Version`). */
export const LEGACY_PROTOCOL_VERSION = "0.3";

/** Where the bridge serves the bindings that have no URL of their own per agent. */
export interface ServedBindings {
  /** The gRPC binding's `host:port`, if it runs. */
  grpc?: string;
}

/** `card` with `interfaces` as its supported interfaces. */
export function withInterfaces(card: AgentCard, interfaces: AgentCard["supportedInterfaces"]): AgentCard {
  return { ...card, supportedInterfaces: interfaces };
}

/**
 * The served face of one agent's card: its JSON-RPC URL (for v1.0, and the
 * same URL for v0.3 clients), its HTTP+JSON URL (`<url>/rest`, v1.0), the
 * gRPC address with the agent's name as the interface's `tenant` (none for
 * the gateway), A2A over NATS, and what the bridge supports.
 */
function served(card: AgentCard, url: string, bindings: ServedBindings, tenant: string, agent?: string): AgentCard {
  // The agent's signature covers the card it registered, not this one: the bridge signs what it serves.
  const { signatures: _registered, ...unsigned } = card;
  return {
    ...withInterfaces(unsigned, [
      { url, protocolBinding: "JSONRPC", protocolVersion: PROTOCOL_VERSION },
      { url: `${url}/rest`, protocolBinding: "HTTP+JSON", protocolVersion: PROTOCOL_VERSION },
      ...(bindings.grpc ? [{ url: bindings.grpc, protocolBinding: "GRPC", protocolVersion: PROTOCOL_VERSION, ...(agent !== undefined && { tenant: agent }) }] : []),
      natsInterface(tenant, agent),
      { url, protocolBinding: "JSONRPC", protocolVersion: LEGACY_PROTOCOL_VERSION },
    ]),
    capabilities: { ...card.capabilities, streaming: true, pushNotifications: false },
  };
}

/** Card of one registered agent, as served at `/a2a/<agent>/.well-known/agent-card.json`. */
export function agentCard(agent: AgentInfo, baseUrl: string, bindings: ServedBindings, tenant: string): AgentCard {
  return served(agent.card, `${baseUrl}/a2a/${encodeURIComponent(agent.name)}`, bindings, tenant, agent.name);
}

/** The gateway card's content: every capability of the tenant as a skill, routed by skill id (no interfaces). */
export function gatewaySkills(bus: Bus): AgentCard {
  const skills = new Map<string, AgentCard["skills"][number]>();
  for (const a of bus.discover()) for (const s of a.card.skills) if (!skills.has(s.id)) skills.set(s.id, s);
  return {
    name: `agentbus ${bus.subjects.tenant}`,
    description: `Every agent of tenant ${bus.subjects.tenant}; name a skill in message.metadata.skill`,
    version: "1.0.0",
    supportedInterfaces: [],
    capabilities: {},
    defaultInputModes: ["text/plain", "application/json"],
    defaultOutputModes: ["text/plain", "application/json"],
    skills: [...skills.values()].sort((a, b) => a.id.localeCompare(b.id)),
  };
}

/** The gateway card: every capability of the tenant as a skill, routed by skill id. */
export function gatewayCard(bus: Bus, baseUrl: string, bindings: ServedBindings): AgentCard {
  return served(gatewaySkills(bus), `${baseUrl}/a2a`, bindings, bus.subjects.tenant);
}

/** A strong ETag for a serialized card. */
export const etagOf = (json: string): string => `"${createHash("sha256").update(json).digest("base64url").slice(0, 27)}"`;

/** The same card in the A2A v0.3 JSON shape, for clients that predate v1.0. */
export function legacyCard(card: AgentCard): Record<string, unknown> {
  return {
    protocolVersion: "0.3.0",
    name: card.name,
    description: card.description,
    url: card.supportedInterfaces[0]?.url,
    preferredTransport: "JSONRPC",
    version: card.version,
    capabilities: { streaming: card.capabilities.streaming ?? false, pushNotifications: card.capabilities.pushNotifications ?? false },
    defaultInputModes: card.defaultInputModes,
    defaultOutputModes: card.defaultOutputModes,
    skills: card.skills.map((s) => ({ id: s.id, name: s.name, description: s.description, tags: s.tags, ...(s.examples && { examples: s.examples }) })),
    ...legacySecurity(card as AgentCard & V1Security),
  };
}

/** The security part of a v1.0 card (`securitySchemes` keyed by scheme kind, `securityRequirements`). */
interface V1Security {
  securitySchemes?: Record<string, Record<string, Record<string, unknown>>>;
  securityRequirements?: Array<{ schemes: Record<string, { list: string[] }> }>;
}

/** A v1.0 card's security in v0.3 form: `securitySchemes` with a `type`, and `security` (scheme name → scopes). */
function legacySecurity(card: V1Security): Record<string, unknown> {
  if (!card.securitySchemes) return {};
  const schemes: Record<string, unknown> = {};
  for (const [name, wrapped] of Object.entries(card.securitySchemes)) {
    const [kind, scheme] = Object.entries(wrapped)[0] ?? [];
    if (!scheme) continue;
    if (kind === "apiKeySecurityScheme") schemes[name] = { type: "apiKey", in: scheme.location, name: scheme.name, description: scheme.description };
    else if (kind === "httpAuthSecurityScheme") schemes[name] = { type: "http", scheme: scheme.scheme, bearerFormat: scheme.bearerFormat, description: scheme.description };
    else if (kind === "openIdConnectSecurityScheme") schemes[name] = { type: "openIdConnect", openIdConnectUrl: scheme.openIdConnectUrl, description: scheme.description };
  }
  const security = (card.securityRequirements ?? []).map((r) => Object.fromEntries(Object.entries(r.schemes).map(([k, v]) => [k, v.list])));
  return { securitySchemes: schemes, ...(security.length > 0 && { security }) };
}
