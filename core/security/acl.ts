/**
 * Access control: default-deny. A rule grants `source` the right to invoke
 * `capabilities` on `target`. Principals are an agent id (`U…`), a group
 * (`group:<name>`) or `*` (any known sender / any agent). Capability
 * patterns use NATS subject wildcards: `*` one token, `>` the rest
 * (`>` alone grants every capability).
 */
export interface AclRule {
  source: string;
  target: string;
  capabilities: string[];
}

/** A named set of agent ids, referred to as `group:<name>`. */
export interface AclGroup {
  members: string[];
}

/** The policy as stored in `mesh_<t>_acl`: keys `rule.<name>` and `group.<name>`. */
export interface AclPolicy {
  rules: Map<string, AclRule>;
  groups: Map<string, AclGroup>;
  /**
   * Rotated identities: a new id → the ids it replaced (`rotation.<old>`
   * records). A new id matches every rule and group its old ids match.
   */
  aliases?: Map<string, string[]>;
}

/** Matches a capability id against a NATS-style pattern. */
export function capabilityMatches(pattern: string, cap: string): boolean {
  if (pattern === ">") return true;
  const p = pattern.split(".");
  const c = cap.split(".");
  for (let i = 0; i < p.length; i++) {
    if (p[i] === ">") return c.length > i;
    if (i >= c.length || (p[i] !== "*" && p[i] !== c[i])) return false;
  }
  return p.length === c.length;
}

/** True when `principal` (an id, `group:<name>` or `*`) names `id`, or an identity `id` rotated from. */
export function principalMatches(policy: AclPolicy, principal: string, id: string): boolean {
  if (principal === "*" || principal === id) return true;
  const older = policy.aliases?.get(id);
  if (principal.startsWith("group:")) {
    const members = policy.groups.get(principal.slice(6))?.members;
    return members !== undefined && (members.includes(id) || (older?.some((o) => members.includes(o)) ?? false));
  }
  return older?.includes(principal) ?? false;
}

/** True when some rule lets `source` invoke `cap` on agent `target`. */
export function isAllowed(policy: AclPolicy, source: string, target: string, cap: string): boolean {
  for (const rule of policy.rules.values()) {
    if (
      principalMatches(policy, rule.source, source) &&
      principalMatches(policy, rule.target, target) &&
      rule.capabilities.some((p) => capabilityMatches(p, cap))
    ) {
      return true;
    }
  }
  return false;
}

/** True when the policy names `id` (as a rule source or a group member). */
export function isNamed(policy: AclPolicy, id: string): boolean {
  const ids = [id, ...(policy.aliases?.get(id) ?? [])];
  for (const rule of policy.rules.values()) if (ids.includes(rule.source)) return true;
  for (const group of policy.groups.values()) if (ids.some((i) => group.members.includes(i))) return true;
  return false;
}

/** Validates a stored rule; throws on a malformed one. */
export function parseRule(value: unknown): AclRule {
  const r = value as AclRule;
  if (!r || typeof r.source !== "string" || typeof r.target !== "string" || !Array.isArray(r.capabilities) || !r.capabilities.every((c) => typeof c === "string")) {
    throw new Error("an ACL rule is {source, target, capabilities: string[]}");
  }
  return { source: r.source, target: r.target, capabilities: r.capabilities };
}

/** Validates a stored group; throws on a malformed one. */
export function parseGroup(value: unknown): AclGroup {
  const g = value as AclGroup;
  if (!g || !Array.isArray(g.members) || !g.members.every((m) => typeof m === "string")) {
    throw new Error("an ACL group is {members: string[]}");
  }
  return { members: g.members };
}

/**
 * Whether some rule of `policy` could grant `id` a task right: its source
 * names `id` (directly, through a group, or `*`) and one of its patterns can
 * match a capability `task.<cap>`.
 */
export function holdsTaskRights(policy: AclPolicy, id: string): boolean {
  // A rotated identity keeps the grants of the ids it replaced.
  const ids = [id, ...(policy.aliases?.get(id) ?? [])];
  for (const rule of policy.rules.values()) {
    const source = rule.source;
    const members = source.startsWith("group:") ? policy.groups.get(source.slice(6))?.members : undefined;
    const named = source === "*" || ids.includes(source) || (members?.some((m) => ids.includes(m)) ?? false);
    if (named && rule.capabilities.some((p) => ["task", "*", ">"].includes(p.split(".", 1)[0]!))) return true;
  }
  return false;
}
