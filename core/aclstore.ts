import type { KV } from "@nats-io/kv";
import { isAllowed, isNamed, parseGroup, parseRule, type AclGroup, type AclPolicy, type AclRule } from "./acl.js";
import { checkId } from "./subjects.js";
import { KvMirror } from "./kvmirror.js";

type Stored = { kind: "rule"; rule: AclRule } | { kind: "group"; group: AclGroup };

/**
 * The tenant's ACL policy, mirrored from `mesh_<t>_acl` by a watch: an edit
 * by any process applies to every receiver within milliseconds, without a
 * restart. Reads are local.
 */
export class AclStore {
  readonly #kv: KV;
  #mirror!: KvMirror<Stored>;
  #policy: AclPolicy = { rules: new Map(), groups: new Map() };

  private constructor(kv: KV) {
    this.#kv = kv;
  }

  static async start(kv: KV, onInvalid?: (key: string, err: unknown) => void): Promise<AclStore> {
    const store = new AclStore(kv);
    const parse = (key: string, value: unknown): Stored => {
      if (key.startsWith("rule.")) return { kind: "rule", rule: parseRule(value) };
      if (key.startsWith("group.")) return { kind: "group", group: parseGroup(value) };
      throw new Error(`unexpected ACL key ${key}`);
    };
    store.#mirror = await KvMirror.start(kv, (e) => parse(e.key, e.json()), () => store.#rebuild(), onInvalid);
    store.#rebuild();
    return store;
  }

  /** Whether `source` may invoke `cap` on agent `target`. */
  allows(source: string, target: string, cap: string): boolean {
    return isAllowed(this.#policy, source, target, cap);
  }

  /** Whether the policy names `id` at all (as a source or group member). */
  names(id: string): boolean {
    return isNamed(this.#policy, id);
  }

  /** The current policy (a snapshot). */
  policy(): AclPolicy {
    return { rules: new Map(this.#policy.rules), groups: new Map(this.#policy.groups) };
  }

  /** Adds or replaces the rule `name`. */
  async putRule(name: string, rule: AclRule): Promise<void> {
    await this.#kv.put(`rule.${checkId(name, "rule name")}`, JSON.stringify(parseRule(rule)));
  }

  /** Adds or replaces the group `name`. */
  async putGroup(name: string, members: string[]): Promise<void> {
    await this.#kv.put(`group.${checkId(name, "group name")}`, JSON.stringify(parseGroup({ members })));
  }

  async deleteRule(name: string): Promise<void> {
    await this.#kv.delete(`rule.${checkId(name, "rule name")}`);
  }

  async deleteGroup(name: string): Promise<void> {
    await this.#kv.delete(`group.${checkId(name, "group name")}`);
  }

  stop(): void {
    this.#mirror?.stop();
  }

  #rebuild(): void {
    if (!this.#mirror) return;
    const policy: AclPolicy = { rules: new Map(), groups: new Map() };
    for (const [key, { value }] of this.#mirror.entries) {
      if (value.kind === "rule") policy.rules.set(key.slice(5), value.rule);
      else policy.groups.set(key.slice(6), value.group);
    }
    this.#policy = policy;
  }
}
