import { existsSync } from "node:fs";
import { join } from "node:path";
import { Identity } from "../../core/index.js";

/**
 * The identity kept in `file` (an nkey seed, mode 0600), created there on
 * first use; `created` tells whether this call made it, so its id can be
 * shown once to whoever grants it rights.
 */
export function persistentIdentity(file: string): { identity: Identity; created: boolean } {
  const created = !existsSync(file);
  return { identity: Identity.fromFileOrCreate(file), created };
}

/**
 * Where the identity of an API key without `seedFile` is kept:
 * `<dataDir>/keys/<name>.seed`, the name with every character other than
 * letters, digits, `_` and `-` written as `%XX`.
 */
export function keySeedFile(dataDir: string, keyName: string): string {
  const safe = [...Buffer.from(keyName, "utf8")].map((b) => (/[A-Za-z0-9_-]/.test(String.fromCharCode(b)) ? String.fromCharCode(b) : `%${b.toString(16).toUpperCase().padStart(2, "0")}`)).join("");
  return join(dataDir, "keys", `${safe}.seed`);
}

/** Where the identity that bearer-JWT (OIDC) callers act as is kept: `<dataDir>/oidc.seed`. */
export const oidcSeedFile = (dataDir: string): string => join(dataDir, "oidc.seed");
