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
}
