/**
 * A2A v1.0 objects in their JSON form, as carried on the bus and as
 * `@a2a-js/sdk` 1.x reads and writes them (`toJSON` form: string enums, parts
 * as `{text}` / `{data}` / `{url}` / `{raw}`). Only what the bus itself
 * reads is typed here; unknown fields pass through untouched.
 */

/** One part of a message or artifact. Exactly one of text, data, url, raw is set. */
export interface Part {
  text?: string;
  data?: unknown;
  url?: string;
  /** base64 bytes */
  raw?: string;
  mediaType?: string;
  filename?: string;
  metadata?: Record<string, unknown>;
}

export type Role = "ROLE_USER" | "ROLE_AGENT";

export interface Message {
  messageId: string;
  role: Role;
  parts: Part[];
  contextId?: string;
  taskId?: string;
  metadata?: Record<string, unknown>;
  extensions?: string[];
  referenceTaskIds?: string[];
}

export interface AgentSkill {
  id: string;
  name: string;
  description: string;
  tags: string[];
  examples?: string[];
  inputModes?: string[];
  outputModes?: string[];
}

export interface AgentInterface {
  url: string;
  protocolBinding: string;
  protocolVersion: string;
  tenant?: string;
}

export interface AgentExtension {
  uri: string;
  description?: string;
  required?: boolean;
  params?: Record<string, unknown>;
}

export interface AgentCapabilities {
  streaming?: boolean;
  pushNotifications?: boolean;
  extendedAgentCard?: boolean;
  extensions?: AgentExtension[];
}

/**
 * One signature of an agent card (A2A §8.4): a JWS in flattened JSON form
 * (RFC 7515) over the card's canonical JSON (RFC 8785, `signatures` left
 * out), `alg`, `kid` and `typ` in its protected header.
 */
export interface AgentCardSignature {
  /** base64url of the protected header's JSON. */
  protected: string;
  /** base64url of the signature. */
  signature: string;
  header?: Record<string, unknown>;
}

export interface AgentCard {
  name: string;
  description: string;
  version: string;
  supportedInterfaces: AgentInterface[];
  capabilities: AgentCapabilities;
  defaultInputModes: string[];
  defaultOutputModes: string[];
  skills: AgentSkill[];
  provider?: { organization: string; url: string };
  documentationUrl?: string;
  iconUrl?: string;
  securitySchemes?: Record<string, unknown>;
  securityRequirements?: unknown[];
  signatures?: AgentCardSignature[];
}

/**
 * The `protocolBinding` of A2A over NATS: A2A's operations carried on the
 * bus's own subjects (docs/PROTOCOL.md, "A2A over NATS").
 */
export const NATS_BINDING = "urn:agentbus:a2a:binding:nats";

/** The A2A version the bus's agents and bridges speak. */
export const A2A_VERSION = "1.0";

/**
 * The A2A over NATS interface of `agent` in `tenant` (of the tenant's
 * gateway without one): `nats:///<tenant>[/<agent>]`. No server: a client
 * reaches it on its own connection, wherever that is.
 */
export function natsInterface(tenant: string, agent?: string): AgentInterface {
  return { url: `nats:///${tenant}${agent === undefined ? "" : `/${encodeURIComponent(agent)}`}`, protocolBinding: NATS_BINDING, protocolVersion: A2A_VERSION };
}
