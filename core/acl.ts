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

function principalMatches(policy: AclPolicy, principal: string, id: string): boolean {
  if (principal === "*" || principal === id) return true;
  if (principal.startsWith("group:")) return policy.groups.get(principal.slice(6))?.members.includes(id) ?? false;
  return false;
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
  for (const rule of policy.rules.values()) if (rule.source === id) return true;
  for (const group of policy.groups.values()) if (group.members.includes(id)) return true;
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
