import { readFileSync } from "node:fs";
import { validatorFor } from "../../core/internal.js";

/** One entry of an API keys file: the key's SHA-256, and who a request with it acts as. */
export interface ApiKeyConfig {
  name: string;
  /** Hex SHA-256 of the key (`agentbus`'s `hashApiKey`, or `printf %s "$KEY" | sha256sum`). */
  sha256: string;
  /** Tenant the key's requests run in (default: the bridge's). */
  tenant?: string;
  /**
   * nkey seed file of the identity the key's requests act as. Give one: task
   * events are MACed for the submitting identity, so a fresh identity per
   * start could not follow tasks submitted before a restart.
   */
  seedFile?: string;
}

const schema = {
  type: "array",
  items: {
    type: "object",
    required: ["name", "sha256"],
    additionalProperties: false,
    properties: {
      name: { type: "string", minLength: 1 },
      sha256: { type: "string", pattern: "^[0-9a-f]{64}$" },
      tenant: { type: "string", pattern: "^[a-z0-9_-]+$" },
      seedFile: { type: "string", minLength: 1 },
    },
  },
};

/** Reads and validates an API keys file (JSON array); only hashes are kept there. */
export function readApiKeys(path: string): ApiKeyConfig[] {
  const value: unknown = JSON.parse(readFileSync(path, "utf8"));
  validatorFor(schema)(value);
  return value as ApiKeyConfig[];
}
