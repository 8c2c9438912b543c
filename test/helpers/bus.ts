import { afterEach, expect } from "vitest";
import { AgentBusError, connect, Identity, type AclRule, type Bus, type ConnectOptions } from "../../core/index.js";

/**
 * The tenant admin of this test file (each test file loads its own copy of
 * this module): pinned as the trust root of every bus {@link useBuses}
 * opens, and the signer of {@link grant}, {@link asAdmin}.
 */
export const testAdmin = Identity.generate();

/** Admin buses by server and tenant, closed with the test's buses. */
const adminBuses = new Map<string, Promise<Bus>>();

/**
 * Opens buses for one test and closes them after it, with quiet logs, a
 * short presence max age so expiry tests run in seconds, and
 * {@link testAdmin} pinned as trust root.
 */
export function useBuses(servers: () => string | string[], defaults: Partial<ConnectOptions> = {}) {
  const open: Bus[] = [];
  afterEach(async () => {
    const admins = await Promise.all([...adminBuses.values()].map((p) => p.catch(() => undefined)));
    adminBuses.clear();
    await Promise.all([...open.splice(0), ...admins].map((b) => b?.close()));
  });
  return async (options: Partial<ConnectOptions> = {}): Promise<Bus> => {
    const bus = await connect({
      servers: servers(),
      identity: Identity.generate(),
      presenceMaxAgeMs: 3000,
      logger: quietLogger,
      trustRoot: [testAdmin.id],
      ...defaults,
      ...options,
    });
    open.push(bus);
    return bus;
  };
}

/**
 * A bus acting as {@link testAdmin} on `bus`'s server and tenant, with the
 * tenant's `trust.root` record set to it (so processes that pin nothing,
 * such as CLI children, take the same root on first use).
 */
export function adminFor(bus: Bus): Promise<Bus> {
  const servers = `nats://${bus.nc.getServer()}`;
  const key = `${servers}|${bus.subjects.root}|${bus.subjects.tenant}`;
  let admin = adminBuses.get(key);
  if (!admin) {
    admin = (async () => {
      const b = await connect({
        servers, root: bus.subjects.root, tenant: bus.subjects.tenant, identity: testAdmin, trustRoot: [testAdmin.id], logger: quietLogger, name: "test-admin",
      });
      await b.acl.setTrustRoot([testAdmin.id]);
      return b;
    })();
    adminBuses.set(key, admin);
  }
  return admin;
}

/**
 * Runs a policy edit as the tenant admin of `bus`'s tenant and waits until
 * `bus` and every bus in `appliedIn` have applied it (ACL edits: the number
 * `edit` resolves to is an ACL revision).
 */
export async function asAdmin(bus: Bus, edit: (admin: Bus) => Promise<number>, ...appliedIn: Bus[]): Promise<number> {
  const admin = await adminFor(bus);
  const revision = await edit(admin);
  for (const b of [bus, ...appliedIn]) {
    if (!(await b.acl.applied(revision))) throw new Error(`${b.id} has not applied ACL revision ${revision}`);
  }
  return revision;
}

/** Puts the ACL rule `name` as the tenant admin; returns once `bus` and `appliedIn` apply it. */
export function grant(bus: Bus, name: string, rule: AclRule, ...appliedIn: Bus[]): Promise<number> {
  return asAdmin(bus, (admin) => admin.acl.putRule(name, rule), ...appliedIn);
}

/** Revokes `id` as the tenant admin; returns once `bus` and `appliedIn` refuse it. */
export async function revokeAsAdmin(bus: Bus, id: string, reason: string, ...appliedIn: Bus[]): Promise<void> {
  const admin = await adminFor(bus);
  const revision = await admin.revoke(id, reason);
  for (const b of [bus, ...appliedIn]) await b.revocationApplied(revision);
}

/** Lifts the revocation of `id` as the tenant admin; returns once `bus` and `appliedIn` apply it. */
export async function unrevokeAsAdmin(bus: Bus, id: string, ...appliedIn: Bus[]): Promise<void> {
  const admin = await adminFor(bus);
  const revision = await admin.unrevoke(id);
  for (const b of [bus, ...appliedIn]) await b.revocationApplied(revision);
}

import { createLogger } from "../../core/index.js";
/** Logs only errors unless AGENTBUS_TEST_LOG says otherwise. */
export const quietLogger = createLogger({ level: process.env.AGENTBUS_TEST_LOG ?? "error" });

/** Waits until `check` passes (returns truthy), polling. */
export async function eventually<T>(check: () => T | Promise<T>, timeoutMs = 10_000, stepMs = 50): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await check();
      if (v) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`condition not met in ${timeoutMs} ms${last ? `: ${String(last)}` : ""}`);
    await new Promise((r) => setTimeout(r, stepMs));
  }
}

/** The code of the `AgentBusError` that `p` rejects with (a test failure when it resolves, or rejects with anything else). */
export async function codeOf(p: Promise<unknown>): Promise<string | undefined> {
  const err = await p.then(() => undefined, (e: unknown) => e);
  expect(err, "expected a refusal").toBeInstanceOf(AgentBusError);
  return (err as AgentBusError).code;
}
