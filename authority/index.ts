/**
 * agentbus authority: tenants as NATS accounts, identities authenticated by
 * their key, and role permissions enforced by nats-server (auth callout on
 * 2.10+, a generated static configuration on older servers).
 *
 * @example
 * const nats = await startSecureNats({ dir: ".agentbus/authority", tenants: ["acme"] });
 * const admin = await nats.createTenant("acme");
 * const agent = await nats.issue("acme", "agent", { serves: ["greet"] });
 */
export { authorityConfig, importsOf, loadAuthorityKeys, serverPermissions, AUTH_ACCOUNT, SYSTEM_ACCOUNT, type AuthorityConfigInput, type AuthorityKeys, type StaticUser, type TenantSpec } from "./config.js";
export { Directory, DIRECTORY_BUCKET, checkRecord, type IdentityRecord } from "./directory.js";
export { Authority, AUTH_REQUEST_SUBJECT, type AuthorityOptions } from "./service.js";
export { AuthorityState, admins, setUpTenant, startSecureNats, type SecureNats, type SecureNatsOptions, type TenantSetUp } from "./local.js";
export {
  forgetServer, includeFileText, staticIncludeFileText, processAlive, readServerRecord, recordServer, reloadServer,
  type IncludeRecord, type LaunchedServerRecord, type ReloadOutcome, type ServerRecord,
} from "./reload.js";
export { authorityIn, staticServerConfig, type StaticConfigOptions } from "./static.js";
