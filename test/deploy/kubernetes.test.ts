/**
 * Keeps deploy/kubernetes and deploy/container true to the code: the
 * gateway's configuration is valid and agrees with its ports, probes, grace
 * period and Service names; every agentbus container runs a command and
 * options the CLI has and sets only variables agentbus reads; the
 * authority's Deployment gets its keys from a Secret and its tenants from
 * the ConfigMap deploy/kubernetes/authority-configmap.sh makes; nats.conf,
 * with the accounts `agentbus authority config` writes included, passes
 * `nats-server -t`, has one account per tenant and trusts the authority's
 * issuer key, and routes through the headless Service; the Containerfile's
 * entrypoint, command and copies fit all of that.
 */
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, posix } from "node:path";
import type { Command } from "commander";
import { fromSeed } from "@nats-io/nkeys";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseAllDocuments } from "yaml";
import { AUTH_ACCOUNT, AuthorityState, SYSTEM_ACCOUNT } from "../../authority/index.js";
import { HostPolicy } from "../../bridges/http/hosts.js";
import { loadUpConfig, type UpConfig, type UpFlags } from "../../cli/config.js";
import { program } from "../../cli/program.js";
import { findNatsServer, natsServerVersion } from "../../nats/index.js";
import {
  agentbusContainers,
  argvOf,
  configMapFile,
  containerPort,
  copies,
  durationMs,
  envOf,
  execForm,
  externalConfigMaps,
  fileSource,
  find,
  kustomization,
  loadManifests,
  manifestFiles,
  mountFor,
  parseContainerfile,
  parseNatsConf,
  portOf,
  repo,
  secretNames,
  servicesFor,
  workdirOf,
  workloads,
  type Container,
  type Manifest,
  type NatsConf,
  type PodSpec,
} from "./manifests.js";

const read = (path: string) => readFileSync(join(repo, path), "utf8");
const pkg = JSON.parse(read("package.json")) as { version: string; bin: Record<string, string>; engines: { node: string }; dependencies: Record<string, string> };
const manifests = loadManifests();
const stages = parseContainerfile();
const runtime = stages.at(-1)!;
const scratch = mkdtempSync(join(tmpdir(), "agentbus-deploy-"));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

/* ---------------------------------------------------------------- the CLI as commander sees it */

interface Invocation {
  /** Subcommand path, e.g. ["agent", "run"]. */
  path: string[];
  command: Command;
  operands: string[];
  opts: Record<string, unknown>;
}

/**
 * Resolves agentbus arguments against the real command tree: the
 * subcommands must exist, and the leaf must know every option and get the
 * operands and required options it declares. Throws otherwise.
 */
function invoke(args: string[]): Invocation {
  let command = program();
  const path: string[] = [];
  let i = 0;
  for (; i < args.length; i++) {
    const sub = command.commands.find((c) => c.name() === args[i] || c.aliases().includes(args[i]!));
    if (!sub) break;
    command = sub;
    path.push(args[i]!);
  }
  const name = ["agentbus", ...path].join(" ");
  if (command.commands.length) throw new Error(`${name} needs one of ${command.commands.map((c) => c.name()).join(", ")}, got ${args[i] ?? "nothing"}`);
  command.exitOverride().configureOutput({ writeErr: () => {}, writeOut: () => {} });
  const { operands, unknown } = command.parseOptions(args.slice(i));
  if (unknown.length) throw new Error(`${name} has no option ${unknown[0]} (it has ${command.options.map((o) => o.long).join(", ")})`);
  const declared = command.registeredArguments;
  const required = declared.filter((a) => a.required).length;
  if (operands.length < required || (!declared.at(-1)?.variadic && operands.length > declared.length)) {
    throw new Error(`${name} takes ${declared.map((a) => `<${a.name()}>`).join(" ") || "no operands"}, got ${JSON.stringify(operands)}`);
  }
  for (const o of command.options) {
    if (o.mandatory && command.getOptionValue(o.attributeName()) === undefined) throw new Error(`${name} needs ${o.long}`);
  }
  return { path, command, operands, opts: command.opts() };
}

/** Environment variables `agentbus up` reads: the `env.X` names in cli/config.ts. */
const upEnv = new Set([...read("cli/config.ts").matchAll(/\benv\.([A-Z][A-Z0-9_]*)/g)].map((m) => m[1]!));
/** `--option` → the environment variable its default comes from, in the CLI's sources. */
const optionEnv = new Map(
  ["cli/options.ts", "cli/commands.ts", "cli/adapters.ts"].flatMap((f) =>
    // The variable an option's definition reads (`process.env.X`) or, read where the options are resolved, names in its help (`(env X`).
    [...read(f).matchAll(/\.option\(\s*"(--[a-z-]+)[^"]*",[^\n]*?(?:process\.env\.|\(env )([A-Z][A-Z0-9_]*)/g)].map((m) => [m[1]!, m[2]!] as const),
  ),
);

/** Every container of the agentbus image, with what it runs. */
const runs = agentbusContainers(manifests).map((r) => {
  const argv = argvOf(r.container, runtime);
  const where = `${r.manifest.kind}/${r.manifest.metadata.name} container ${r.container.name}`;
  return { ...r, argv, where, env: envOf(r.container, manifests) };
});
type Run = (typeof runs)[number];

/** The agentbus arguments of a container (after `node <bin>`). */
function agentbusArgs(run: Run): string[] {
  expect(run.argv.slice(0, 2), `${run.where} runs node ${pkg.bin.agentbus}`).toEqual(["node", pkg.bin.agentbus]);
  return run.argv.slice(2);
}

/** The configuration `agentbus up` builds in this container, from the mounted file, the environment and the flags. */
function upConfigOf(run: Run): UpConfig {
  const flags = invoke(agentbusArgs(run)).opts as UpFlags;
  expect(flags.config, `${run.where}: up --config names the file (else it looks in the image's working directory)`).toBeDefined();
  const text = configMapFile(manifests, run.pod, run.container, flags.config!);
  expect(text, `${run.where}: ${flags.config} comes from a mounted ConfigMap`).toBeDefined();
  const dir = mkdtempSync(join(scratch, "up-"));
  writeFileSync(join(dir, posix.basename(flags.config!)), text!);
  const env = Object.fromEntries([...run.env].filter(([, v]) => v !== undefined)) as Record<string, string>;
  return loadUpConfig({ ...flags, config: posix.basename(flags.config!) }, env, dir).config;
}

/** The value a common option (`--nats`, `--tenant`) gets in a non-`up` container: its flag, else its environment variable. */
function commonOption(run: Run, inv: Invocation, option: "--nats" | "--tenant"): string | undefined {
  const key = option.slice(2);
  if (inv.command.getOptionValueSource(key) === "cli") return inv.opts[key] as string;
  return run.env.get(optionEnv.get(option)!);
}

/** The subcommand path a container runs, or undefined when its command line does not resolve (the tests below say why). */
function pathOf(run: Run): string | undefined {
  try {
    return invoke(run.argv.slice(2)).path.join(" ");
  } catch {
    return undefined;
  }
}
const gateways = runs.filter((r) => pathOf(r) === "up");
const gateway = gateways[0]!;

/** A Service port's target as a container port number. */
function targetOf(service: Manifest, port: number, container: Container): number {
  const p = (service.spec.ports as Array<{ port: number; targetPort?: number | string }>).find((x) => x.port === port);
  if (!p) throw new Error(`Service ${service.metadata.name} has no port ${port}`);
  return containerPort(container, p.targetPort ?? p.port);
}

/* ---------------------------------------------------------------- NATS */

const natsSet = find(manifests, "StatefulSet", "nats");
const natsPod = natsSet.spec.template.spec as PodSpec;
const natsContainer = natsPod.containers.find((c) => c.name === "nats")!;
const natsConfPath = (() => {
  const args = natsContainer.command ?? [];
  const at = args.findIndex((a) => a === "--config" || a === "-c");
  return args[at + 1]!;
})();
const natsConfText = configMapFile(manifests, natsPod, natsContainer, natsConfPath);
const natsConf = parseNatsConf(natsConfText ?? "");
const cluster = natsConf.cluster as NatsConf;
const headless = find(manifests, "Service", natsSet.spec.serviceName);

let natsBin: string | undefined;
try {
  natsBin = findNatsServer();
} catch {
  natsBin = undefined;
}
/** The binary can check a config with auth callout (2.10+). */
const natsBinVersion = natsBin ? natsServerVersion(natsBin) : undefined;
const calloutBin = natsBinVersion !== undefined && minorOf(natsBinVersion) >= 10;
function minorOf(version: string): number {
  const [major, minor] = version.split(".").map(Number);
  return major! > 2 ? Infinity : minor!;
}

/* ---------------------------------------------------------------- the authority, as deploy/README.md sets it up */

const authorities = () => runs.filter((r) => pathOf(r) === "authority serve");
/** The tenants the manifests work in: the gateway's, and any an agent names. */
const tenantsOf = (): string[] => [...new Set(runs.map((r) => { const inv = invoke(agentbusArgs(r)); return inv.path.join(" ") === "up" ? upConfigOf(r).tenant : inv.command.options.some((o) => o.long === "--tenant") ? commonOption(r, inv, "--tenant") : undefined; }).filter((t): t is string => t !== undefined))];

interface AuthoritySetUp {
  dir: string;
  state: AuthorityState;
  /** The ConfigMap agentbus-authority as deploy/kubernetes/authority-configmap.sh prints it. */
  configMap: Manifest;
}
let authoritySetUp: AuthoritySetUp | undefined;
/**
 * An authority's directory made as deploy/README.md says (`agentbus
 * authority config`, the tenants added as `agentbus tenant create` adds
 * them before it reaches the server), and the ConfigMap the script makes
 * from it (kubectl's client-side dry run: offline).
 */
async function authoritySetUpOf(): Promise<AuthoritySetUp> {
  if (authoritySetUp) return authoritySetUp;
  const dir = join(mkdtempSync(join(scratch, "authority-")), "authority");
  const config = ["authority", "config", "--dir", dir, "--out", join(dir, "nats-accounts.conf"), "--json"];
  await program().exitOverride().parseAsync(config, { from: "user" });
  const state = new AuthorityState(dir);
  for (const t of tenantsOf()) state.addTenant(t);
  await program().exitOverride().parseAsync(config, { from: "user" });
  const out = spawnSync(join(repo, "deploy/kubernetes/authority-configmap.sh"), [dir, kustomization().namespace ?? "default"], { encoding: "utf8", env: { ...process.env, KUBECONFIG: join(dir, "no-kubeconfig") } });
  expect(out.status, out.stderr).toBe(0);
  const configMap = parseAllDocuments(out.stdout)[0]!.toJS() as Manifest;
  authoritySetUp = { dir, state, configMap };
  return authoritySetUp;
}

/** nats.conf with the include file inlined, as the server reads it. */
function natsConfWith(include: string): NatsConf {
  return parseNatsConf(natsConfText!.replace(/^\s*include\s+\S+\s*$/m, include));
}

describe("deploy/kubernetes", () => {
  it("kustomization.yaml lists every manifest of the folder, each object once", () => {
    expect([...kustomization().resources].sort()).toEqual(manifestFiles().filter((f) => f !== "kustomization.yaml").sort());
    const ids = manifests.map((m) => `${m.kind}/${m.metadata.name}`);
    expect(ids.length).toBe(new Set(ids).size);
    for (const m of manifests) expect(m.apiVersion && m.kind && m.metadata?.name, `${m.file}: an object without apiVersion, kind or name`).toBeTruthy();
  });

  it("holds no secrets: Secrets are referenced (and documented in deploy/README.md), never defined", () => {
    expect(manifests.filter((m) => m.kind === "Secret").map((m) => m.metadata.name)).toEqual([]);
    const files = (dir: string): string[] => readdirSync(dir).flatMap((f) => (statSync(join(dir, f)).isDirectory() ? files(join(dir, f)) : [join(dir, f)]));
    for (const file of files(join(repo, "deploy"))) {
      expect(readFileSync(file, "utf8"), `${file} holds an nkey seed`).not.toMatch(/\bS[UAO][A-Z2-7]{56}\b/);
      expect(readFileSync(file, "utf8"), `${file} holds a private key`).not.toMatch(/PRIVATE KEY-----/);
    }
    const readme = read("deploy/README.md");
    const secrets = new Set(workloads(manifests).flatMap(({ pod }) => secretNames(pod)));
    expect(secrets.size).toBeGreaterThan(0);
    for (const name of secrets) expect(readme, `deploy/README.md tells how to create the Secret ${name}`).toMatch(new RegExp(`kubectl[^\\n]*create secret generic ${name}\\b`));
    // ConfigMaps made from the operator's files: by a script of the folder that deploy/README.md runs.
    const scripts = readdirSync(join(repo, "deploy/kubernetes")).filter((f) => f.endsWith(".sh"));
    for (const name of new Set(workloads(manifests).flatMap(({ pod }) => externalConfigMaps(manifests, pod)))) {
      const script = scripts.find((f) => new RegExp(`create configmap ${name}\\b`).test(read(`deploy/kubernetes/${f}`)));
      expect(script, `a script in deploy/kubernetes makes the ConfigMap ${name}`).toBeDefined();
      expect(readme, `deploy/README.md runs ${script}`).toContain(`deploy/kubernetes/${script}`);
    }
  });

  it("kubectl kustomize renders the folder: the same objects, in the kustomization's namespace", () => {
    const kubectl = spawnSync("kubectl", ["kustomize", join(repo, "deploy/kubernetes")], { encoding: "utf8" });
    if (kubectl.error) return expect((kubectl.error as NodeJS.ErrnoException).code, "kubectl is missing, not failing").toBe("ENOENT");
    expect(kubectl.status, kubectl.stderr).toBe(0);
    const rendered = parseAllDocuments(kubectl.stdout).map((d) => d.toJS() as Manifest);
    expect(rendered.map((m) => `${m.kind}/${m.metadata.name}`).sort()).toEqual(manifests.map((m) => `${m.kind}/${m.metadata.name}`).sort());
    for (const m of rendered.filter((x) => x.kind !== "Namespace")) expect((m.metadata as { namespace?: string }).namespace, `${m.kind}/${m.metadata.name}`).toBe(kustomization().namespace);
  });

  it("the image is the one package.json describes", () => {
    expect(kustomization().images?.find((i) => i.name === "agentbus")?.newTag).toBe(pkg.version);
  });
});

describe("agentbus containers", () => {
  it("there is one gateway (agentbus up) and at least one agent", () => {
    expect(gateways.map((g) => g.where)).toHaveLength(1);
    expect(runs.length).toBeGreaterThan(1);
  });

  it("each runs an agentbus command that exists, with options it knows", () => {
    for (const run of runs) {
      expect(() => invoke(agentbusArgs(run)), run.where).not.toThrow();
    }
  });

  it("the command check rejects unknown commands, options and operands", () => {
    expect(() => invoke(["upp"])).toThrow(/agentbus needs one of .*up/);
    expect(() => invoke(["agent", "runn", "x.js"])).toThrow(/agentbus agent needs one of run, a2a, http, cmd, got runn/);
    expect(() => invoke(["up", "--confg", "x.yaml"])).toThrow(/agentbus up has no option --confg/);
    expect(() => invoke(["agent", "run"])).toThrow(/takes <module>/);
    expect(() => invoke(["gateway", "mcp"])).toThrow(/needs --config/);
    expect(() => invoke(["agent", "cmd", "x", "--input", "pipe", "--", "cat"])).toThrow(/input/);
    expect(invoke(["agent", "cmd", "x", "--input", "none", "--", "cat", "--flag"]).operands).toEqual(["x", "cat", "--flag"]);
  });

  it("each sets only environment variables agentbus reads (cli/config.ts), and only ones its command uses", () => {
    expect(upEnv).toContain("NATS_URL");
    for (const run of runs) {
      const inv = invoke(agentbusArgs(run));
      const usable = inv.path.join(" ") === "up" ? upEnv : new Set(inv.command.options.map((o) => optionEnv.get(o.long!)).filter((e): e is string => e !== undefined && upEnv.has(e)));
      for (const name of run.env.keys()) expect([...usable], `${run.where} sets ${name}, which agentbus ${inv.path.join(" ")} does not read`).toContain(name);
    }
  });

  it("each reaches NATS through the client Service and works in the gateway's tenant", () => {
    const config = upConfigOf(gateway);
    const targets = runs.map((run) => {
      const inv = invoke(agentbusArgs(run));
      if (inv.path.join(" ") === "up") return { run, url: config.nats.url, tenant: config.tenant };
      // The authority serves every tenant: it has no --tenant.
      const perTenant = inv.command.options.some((o) => o.long === "--tenant");
      expect(perTenant || inv.path.join(" ") === "authority serve", `${run.where}: agentbus ${inv.path.join(" ")} has no --tenant`).toBe(true);
      return { run, url: commonOption(run, inv, "--nats"), tenant: perTenant ? commonOption(run, inv, "--tenant") : undefined };
    });
    for (const { run, url, tenant } of targets) {
      expect(url, `${run.where}: no NATS URL (the default, 127.0.0.1, is not NATS in a pod)`).toBeDefined();
      if (tenant !== undefined || pathOf(run) !== "authority serve") expect(tenant, `${run.where}: the tenant`).toBe(config.tenant);
      const u = new URL(url!);
      const service = find(manifests, "Service", u.hostname.split(".")[0]!);
      expect(servicesFor(manifests, natsSet).map((s) => s.metadata.name), `${run.where}: ${url} is not a Service of the NATS pods`).toContain(service.metadata.name);
      expect(targetOf(service, Number(u.port || 4222), natsContainer), `${run.where}: ${url} reaches nats.conf's client port`).toBe(portOf(natsConf.listen));
    }
  });

  it("run non-root on a read-only root filesystem, with resources set", () => {
    for (const run of runs) {
      const user = execUser();
      expect(run.pod.securityContext?.runAsNonRoot, run.where).toBe(true);
      expect(run.pod.securityContext?.runAsUser ?? run.container.securityContext?.runAsUser, `${run.where}: the image's USER`).toBe(user);
      expect(run.container.securityContext?.readOnlyRootFilesystem, run.where).toBe(true);
      expect(run.container.securityContext?.allowPrivilegeEscalation, run.where).toBe(false);
      expect(run.container.resources?.requests?.memory, run.where).toBeDefined();
      expect(run.container.resources?.limits?.memory, run.where).toBeDefined();
    }
  });

  it("agents run modules compiled into the image, as identities from Secrets", () => {
    const include = (JSON.parse(read("tsconfig.build.json")) as { include: string[] }).include;
    for (const run of runs) {
      const inv = invoke(agentbusArgs(run));
      if (inv.path[0] !== "agent") continue;
      if (inv.path[1] === "run") {
        const module = posix.relative(workdirOf(runtime), posix.resolve(workdirOf(runtime), inv.operands[0]!));
        expect(module, `${run.where}: the module is in dist/`).toMatch(/^dist\/.+\.js$/);
        const source = module.replace(/^dist\//, "").replace(/\.js$/, ".ts");
        expect(existsSync(join(repo, source)), `${run.where}: ${source} exists`).toBe(true);
        expect(include, `${run.where}: tsconfig.build.json compiles ${source}`).toContain(source.split("/")[0]);
      }
      const seed = inv.opts.seed as string | undefined;
      expect(seed, `${run.where}: --seed (a fresh identity each start cannot be named in ACL rules)`).toBeDefined();
      expect(fileSource(manifests, run.pod, run.container, seed!)?.kind, `${run.where}: ${seed} comes from a Secret`).toBe("Secret");
    }
  });
});

describe("the gateway (agentbus up)", () => {
  const config = () => upConfigOf(gateway);

  it("its configuration is valid, uses the NATS cluster and requires API keys", () => {
    const c = config();
    expect(c.nats.url, "without nats.url, up would look for a local server and then embed one").toBeDefined();
    expect(c.gateway.open).toBe(false);
    expect(c.demo).toBe(false);
    expect(c.gateway.keysFile).toBeDefined();
    expect(["0.0.0.0", "::"], "the gateway listens on the pod's address").toContain(c.gateway.host);
  });

  it("listens on the port the container, the Service and both probes name; probes hit /ready and /health", () => {
    const port = config().gateway.port;
    const { container } = gateway;
    expect(container.ports?.map((p) => p.containerPort)).toEqual([port]);
    const services = servicesFor(manifests, gateway.manifest);
    expect(services.length).toBeGreaterThan(0);
    for (const s of services) for (const p of s.spec.ports) expect(containerPort(container, p.targetPort ?? p.port), `Service ${s.metadata.name}`).toBe(port);
    expect(container.readinessProbe?.httpGet?.path).toBe("/ready");
    expect(containerPort(container, container.readinessProbe.httpGet.port)).toBe(port);
    expect(container.livenessProbe?.httpGet?.path).toBe("/health");
    expect(containerPort(container, container.livenessProbe.httpGet.port)).toBe(port);
    expect(runtime.instructions.filter((i) => i.op === "EXPOSE").map((i) => Number(i.text)), "the Containerfile's EXPOSE").toContain(port);
  });

  it("has time to drain: terminationGracePeriodSeconds is longer than the preStop pause plus drainTimeoutMs", () => {
    const pause = gateway.container.lifecycle?.preStop?.exec?.command;
    const pauseMs = pause?.[0] === "sleep" ? Number(pause[1]) * 1000 : 0;
    expect(gateway.pod.terminationGracePeriodSeconds! * 1000).toBeGreaterThan(pauseMs + config().gateway.drainTimeoutMs);
  });

  it("reads keys and its seed from a Secret and writes only to dataDir, a volume", () => {
    const c = config();
    const { pod, container } = gateway;
    for (const file of [c.gateway.keysFile!, c.seedFile]) {
      expect(file, "seedFile: every replica acts as the same identity (else each start is a new one)").toBeDefined();
      expect(mountFor(pod, container, file!)?.volume.secret, `${file} comes from a Secret`).toBeDefined();
    }
    const data = mountFor(pod, container, c.dataDir);
    expect(data?.volume.emptyDir ?? data?.volume.persistentVolumeClaim, `${c.dataDir} is a writable volume`).toBeDefined();
    expect(data?.readOnly).toBe(false);
  });

  it("runs as at least two replicas with a disruption budget", () => {
    expect(gateway.manifest.spec.replicas).toBeGreaterThanOrEqual(2);
    expect(pdbFor(gateway.manifest), "a PodDisruptionBudget for the gateway").toBeDefined();
  });

  it("serves requests addressed to its Services' DNS names (the Host check answers 421 to others)", () => {
    const c = config();
    const policy = new HostPolicy({ allowedHosts: c.gateway.allowedHosts, baseUrl: c.gateway.baseUrl });
    // A request that arrived on the pod's address, as a client in the cluster sends it.
    const request = (host: string) => ({ headers: { host }, socket: { localAddress: "10.1.2.3" } }) as never;
    const namespace = kustomization().namespace ?? "default";
    const services = servicesFor(manifests, gateway.manifest);
    expect(services.length).toBeGreaterThan(0);
    for (const s of services) {
      for (const p of s.spec.ports as Array<{ port: number }>) {
        for (const name of [s.metadata.name, `${s.metadata.name}.${namespace}`, `${s.metadata.name}.${namespace}.svc`, `${s.metadata.name}.${namespace}.svc.cluster.local`]) {
          expect(policy.hostAllowed(request(`${name}:${p.port}`)), `Host ${name}:${p.port} (Service ${s.metadata.name})`).toBe(true);
        }
      }
    }
    expect(policy.hostAllowed(request("10.1.2.3:8080")), "the pod's address (probes)").toBe(true);
    expect(policy.hostAllowed(request("attacker.example:8080")), "a name the gateway does not serve").toBe(false);
  });
});

/** The PodDisruptionBudget that covers a workload's pods. */
function pdbFor(workload: Manifest): Manifest | undefined {
  const labels = workload.spec.template.metadata.labels as Record<string, string>;
  return manifests.find((m) => m.kind === "PodDisruptionBudget" && Object.entries(m.spec.selector.matchLabels).every(([k, v]) => labels[k] === v));
}

describe("the authority (agentbus authority serve)", () => {
  const dirOf = (run: Run) => invoke(agentbusArgs(run)).opts.dir as string;

  it("one Deployment runs it, with at least two replicas (a queue group) and a disruption budget", () => {
    expect(authorities().map((a) => a.where)).toHaveLength(1);
    const [authority] = authorities();
    expect(authority!.manifest.kind).toBe("Deployment");
    expect(authority!.manifest.spec.replicas).toBeGreaterThanOrEqual(2);
    expect(pdbFor(authority!.manifest), "a PodDisruptionBudget for the authority").toBeDefined();
    expect(invoke(agentbusArgs(authority!)).command.getOptionValueSource("dir"), "--dir is given (the default is a relative path)").toBe("cli");
  });

  it("finds its keys in a Secret and its tenants in the ConfigMap authority-configmap.sh makes, in its --dir", async () => {
    const { dir, configMap } = await authoritySetUpOf();
    const [authority] = authorities();
    const podDir = dirOf(authority!);
    const isSeed = (text: string) => /^S[UAO][A-Z2-7]{56}$/.test(text.trim());
    // What authority serve reads: the keys and its identity, the tenants and their admins.
    const read = ["issuer.nk", "service.nk", "system.nk", "authority.seed", "tenants.json"];
    for (const file of read) {
      const source = fileSource(manifests, authority!.pod, authority!.container, posix.join(podDir, file));
      const seed = isSeed(readFileSync(join(dir, file), "utf8"));
      expect(source, `${authority!.where}: ${podDir}/${file} is mounted`).toBeDefined();
      expect(source!.kind, `${authority!.where}: ${file} ${seed ? "holds a seed: a Secret" : "is public: the ConfigMap"}`).toBe(seed ? "Secret" : "ConfigMap");
      if (!seed) {
        expect(source!.name).toBe(configMap.metadata.name);
        expect(configMap.data?.[source!.key], `the ConfigMap holds ${file} from the authority's directory`).toBe(readFileSync(join(dir, file), "utf8"));
      }
    }
    // The ConfigMap carries no seed, and no Secret key lands elsewhere than in --dir.
    for (const [key, text] of Object.entries(configMap.data ?? {})) expect(text, `ConfigMap key ${key}`).not.toMatch(/\bS[UAO][A-Z2-7]{56}\b/);
    expect(configMap.metadata.name).toBe("agentbus-authority");
    expect(mountFor(authority!.pod, authority!.container, podDir)?.readOnly).toBe(true);
  });

  it("deploy/README.md makes the Secret from the key files authority serve reads", () => {
    const line = read("deploy/README.md").split("\n").find((l) => /create secret generic agentbus-authority\b/.test(l));
    expect(line).toBeDefined();
    for (const file of ["issuer.nk", "service.nk", "system.nk", "authority.seed"]) expect(line, `the Secret holds ${file}`).toMatch(new RegExp(`--from-file=\\S*${file.replace(".", "\\.")}\\b`));
  });
});

describe("NATS", () => {
  let include: string;
  beforeAll(async () => {
    include = readFileSync(join((await authoritySetUpOf()).dir, "nats-accounts.conf"), "utf8");
  });

  it("runs nats-server 2.10 or newer (auth callout), with a reloader for the accounts", () => {
    const tag = /^nats:(\d+\.\d+)/.exec(natsContainer.image)?.[1];
    expect(tag, natsContainer.image).toBeDefined();
    expect(minorOf(tag!), `${natsContainer.image} has auth callout`).toBeGreaterThanOrEqual(10);
    const reloader = natsPod.containers.find((c) => c.name !== natsContainer.name);
    expect(reloader?.image).toMatch(/nats-server-config-reloader:/);
    expect((natsPod as PodSpec & { shareProcessNamespace?: boolean }).shareProcessNamespace, "the reloader signals nats-server").toBe(true);
    const args = reloader!.args ?? [];
    const pid = args[args.indexOf("-pid") + 1]!;
    expect(pid).toBe(natsConf.pid_file);
    expect(mountFor(natsPod, reloader!, pid)?.volume).toBe(mountFor(natsPod, natsContainer, pid)?.volume);
    const watched = args.flatMap((a, i) => (a === "-config" ? [args[i + 1]!] : []));
    expect(watched.sort()).toEqual([natsConfPath, posix.join(posix.dirname(natsConfPath), natsConf.include as string)].sort());
    for (const file of watched) expect(fileSource(manifests, natsPod, reloader!, file), `the reloader sees ${file} as the server does`).toEqual(fileSource(manifests, natsPod, natsContainer, file));
  });

  it("includes the authority's accounts from the ConfigMap authority-configmap.sh makes", async () => {
    const { configMap } = await authoritySetUpOf();
    expect(natsConf.include, "nats.conf includes the authority's blocks").toBeDefined();
    const source = fileSource(manifests, natsPod, natsContainer, posix.join(posix.dirname(natsConfPath), natsConf.include as string));
    expect(source).toMatchObject({ kind: "ConfigMap", name: configMap.metadata.name, defined: false });
    expect(configMap.data?.[source!.key], "the ConfigMap holds the file agentbus authority config wrote").toBe(include);
  });

  it("has one account per tenant, AUTH and SYS, and an auth callout whose issuer is the authority's key", async () => {
    const { state } = await authoritySetUpOf();
    const conf = natsConfWith(include);
    const tenants = tenantsOf();
    expect(tenants.length).toBeGreaterThan(0);
    expect(Object.keys(conf.accounts as NatsConf).sort()).toEqual([...tenants, AUTH_ACCOUNT, SYSTEM_ACCOUNT].sort());
    for (const t of [...tenants, AUTH_ACCOUNT]) expect(((conf.accounts as NatsConf)[t] as NatsConf).jetstream, `account ${t} has JetStream`).toBe("enabled");
    expect(conf.system_account).toBe(SYSTEM_ACCOUNT);
    const callout = (conf.authorization as NatsConf).auth_callout as NatsConf;
    // The keys the authority's Secret holds (made from the same directory).
    const publicKey = (file: string) => fromSeed(new TextEncoder().encode(readFileSync(join(state.dir, file), "utf8").trim())).getPublicKey();
    expect(callout.issuer).toBe(publicKey("issuer.nk"));
    expect([...(callout.auth_users as string[])].sort()).toEqual([publicKey("service.nk"), publicKey("system.nk")].sort());
    expect(callout.account).toBe(AUTH_ACCOUNT);
    expect(natsConfText!.match(/^\s*authorization\b/m), "nats.conf has no authorization block of its own").toBeNull();
  });

  it.skipIf(!calloutBin)(`nats.conf with the authority's accounts passes nats-server -t${calloutBin ? "" : ` (skipped: ${natsBin ? `nats-server ${natsBinVersion} has no auth callout` : "nats-server not found"})`}`, () => {
    expect(natsConfText, `${natsConfPath} comes from a ConfigMap`).toBeDefined();
    // The config directory as the projected volume lays it out.
    const dir = mkdtempSync(join(scratch, "nats-"));
    writeFileSync(join(dir, posix.basename(natsConfPath)), natsConfText!);
    writeFileSync(join(dir, natsConf.include as string), include);
    // The variables the container's env gives (SERVER_NAME is the pod's name).
    const env: Record<string, string> = { PATH: process.env.PATH ?? "" };
    for (const e of natsContainer.env ?? []) env[e.name] = e.value ?? (e.valueFrom?.fieldRef?.fieldPath === "metadata.name" ? `${natsSet.metadata.name}-0` : "x");
    const result = spawnSync(natsBin!, ["-t", "-c", join(dir, posix.basename(natsConfPath))], { env, encoding: "utf8" });
    expect(result.status, `${result.stdout}${result.stderr}`).toBe(0);
    // The check fails on a broken include: it is not a formality.
    writeFileSync(join(dir, natsConf.include as string), include.replace(/issuer: "A/, 'issuer: "X'));
    expect(spawnSync(natsBin!, ["-t", "-c", join(dir, posix.basename(natsConfPath))], { env, encoding: "utf8" }).status).not.toBe(0);
  });

  it("names each server after its pod", () => {
    expect(natsConf.server_name).toBe("$SERVER_NAME");
    expect(natsContainer.env?.find((e) => e.name === "SERVER_NAME")?.valueFrom?.fieldRef?.fieldPath).toBe("metadata.name");
  });

  it("routes to every replica through the headless Service", () => {
    expect(headless.spec.clusterIP).toBe("None");
    expect(headless.spec.publishNotReadyAddresses, "routes must resolve before the pods are ready").toBe(true);
    expect(servicesFor(manifests, natsSet)).toContain(headless);
    const routePort = portOf(cluster.listen);
    expect(containerPort(natsContainer, "cluster")).toBe(routePort);
    expect(targetOf(headless, routePort, natsContainer)).toBe(routePort);
    const routes = (cluster.routes as string[]).map((r) => new URL(r));
    const replicas = natsSet.spec.replicas as number;
    expect(replicas).toBe(3);
    expect(routes.map((u) => u.hostname.split(".")[0]).sort()).toEqual(Array.from({ length: replicas }, (_, i) => `${natsSet.metadata.name}-${i}`));
    for (const u of routes) {
      expect(u.protocol).toBe("nats-route:");
      expect(u.hostname.split(".")[1], `${u.href} goes through the headless Service`).toBe(headless.metadata.name);
      expect(Number(u.port)).toBe(routePort);
    }
    expect(natsSet.spec.podManagementPolicy, "all nodes start together (JetStream needs a quorum)").toBe("Parallel");
  });

  it("serves clients and monitoring on the ports the Services and probes use", () => {
    expect(containerPort(natsContainer, "client")).toBe(portOf(natsConf.listen));
    expect(containerPort(natsContainer, "monitor")).toBe(portOf(natsConf.http));
    const client = find(manifests, "Service", "nats");
    expect(targetOf(client, 4222, natsContainer)).toBe(portOf(natsConf.listen));
    expect(targetOf(client, 8222, natsContainer)).toBe(portOf(natsConf.http));
    for (const probe of [natsContainer.startupProbe, natsContainer.livenessProbe, natsContainer.readinessProbe]) {
      expect(probe?.httpGet?.path).toMatch(/^\/healthz/);
      expect(containerPort(natsContainer, probe.httpGet.port)).toBe(portOf(natsConf.http));
    }
  });

  it("keeps JetStream on the claimed volume and stops within the grace period", () => {
    const store = (natsConf.jetstream as NatsConf).store_dir as string;
    const mount = natsContainer.volumeMounts?.filter((m) => store.startsWith(`${m.mountPath}/`) || store === m.mountPath)[0];
    expect((natsSet.spec.volumeClaimTemplates as Manifest[]).map((t) => t.metadata.name), `${store} is on a PersistentVolumeClaim`).toContain(mount?.name);
    const pid = natsConf.pid_file as string;
    expect(mountFor(natsPod, natsContainer, pid)?.volume.emptyDir, `${pid} is writable`).toBeDefined();
    expect(natsContainer.lifecycle?.preStop?.exec?.command?.join(" ")).toContain(`ldm=${pid}`);
    const lameDuck = durationMs(natsConf.lame_duck_duration) + durationMs(natsConf.lame_duck_grace_period ?? "10s");
    expect(natsPod.terminationGracePeriodSeconds! * 1000).toBeGreaterThan(lameDuck);
  });
});

describe("deploy/container/Containerfile", () => {
  const build = stages.find((s) => s.name && copies(runtime).some((c) => c.from === s.name))!;
  const run = (stage: typeof runtime) => stage.instructions.filter((i) => i.op === "RUN").map((i) => i.text).join(" && ");

  it("builds with npm ci and npm run build, and runs with production dependencies only", () => {
    expect(build, "a build stage the runtime stage copies from").toBeDefined();
    expect(run(build)).toMatch(/\bnpm ci\b/);
    expect(run(build)).toMatch(/\bnpm run build\b/);
    expect(run(runtime)).toMatch(/\bnpm ci --omit=dev\b/);
    const major = Number(/^node:(\d+)/.exec(runtime.from)?.[1]);
    expect(major, `${runtime.from} satisfies engines ${pkg.engines.node}`).toBeGreaterThanOrEqual(Number(/>=\s*(\d+)/.exec(pkg.engines.node)![1]));
    expect(build.from).toBe(runtime.from);
  });

  it("runs the compiled CLI (not tsx); its default command is the gateway with the configuration the Deployment mounts", () => {
    expect(execForm(runtime, "ENTRYPOINT")).toEqual(["node", pkg.bin.agentbus]);
    // (tsx is a dependency only to load agent modules written in TypeScript: `agent run x.ts`.)
    const cmd = execForm(runtime, "CMD")!;
    expect(cmd.slice(0, 2)).toEqual(["up", "--config"]);
    expect(configMapFile(manifests, gateway.pod, gateway.container, cmd[2]!), `the gateway Deployment mounts a ConfigMap file at ${cmd[2]}`).toBeDefined();
    expect(() => invoke(cmd)).not.toThrow();
    // The gateway container without args runs exactly this.
    expect(gateway.container.args ?? cmd).toEqual(cmd);
  });

  it("copies only files that exist and that the ignore file lets through; the build compiles every folder tsconfig.build.json includes", () => {
    const ignore = read("deploy/container/Containerfile.dockerignore")
      .split("\n")
      .map((l) => l.trim())
      .filter((l) => l && !l.startsWith("#") && !l.startsWith("!"))
      .map((p) => new RegExp(`^${p.replace(/^\//, "").replace(/[.+^${}()|[\]\\]/g, "\\$&").replace(/\*\*\//g, "(?:.*/)?").replace(/\*/g, "[^/]*")}$`));
    const ignored = (path: string) => path.split("/").some((_, i, parts) => ignore.some((re) => re.test(parts.slice(0, i + 1).join("/"))));
    for (const stage of stages) {
      for (const copy of copies(stage).filter((c) => !c.from)) {
        for (const source of copy.sources) {
          expect(existsSync(join(repo, source)), `line ${copy.line}: ${source} exists`).toBe(true);
          expect(ignored(source), `line ${copy.line}: ${source} is excluded by Containerfile.dockerignore`).toBe(false);
        }
      }
    }
    // What the runtime stage takes from the build stage: the compiler's output, or files copied in there.
    const buildCopies = copies(build).filter((c) => !c.from);
    const buildDir = workdirOf(build);
    for (const copy of copies(runtime).filter((c) => c.from === build.name)) {
      for (const source of copy.sources) {
        const rel = posix.relative(buildDir, posix.resolve(buildDir, source));
        if (rel === "dist") continue;
        const provided = buildCopies.find((c) => (posix.resolve(buildDir, rel) === c.dest || posix.resolve(buildDir, rel).startsWith(`${c.dest}/`)));
        expect(provided, `line ${copy.line}: ${source} is in the build stage`).toBeDefined();
        expect(existsSync(join(repo, rel)), `line ${copy.line}: ${rel} exists`).toBe(true);
      }
    }
    const copiedIn = new Set(buildCopies.flatMap((c) => c.sources));
    for (const dir of (JSON.parse(read("tsconfig.build.json")) as { include: string[] }).include) expect(copiedIn, `the build stage copies ${dir}/`).toContain(dir);
    for (const file of ["package.json", "package-lock.json", "tsconfig.json", "tsconfig.build.json"]) expect(copiedIn).toContain(file);
    // The compiled CLI lands where ENTRYPOINT runs it.
    const dist = copies(runtime).find((c) => c.from === build.name && c.sources.some((s) => posix.resolve(buildDir, s) === posix.resolve(buildDir, "dist")));
    expect(dist?.dest).toBe(posix.resolve(workdirOf(runtime), "dist"));
  });

  it("runs as a numeric non-root user", () => {
    expect(execUser()).toBeGreaterThan(0);
  });
});

/** The runtime stage's USER as a uid (numeric, so the kubelet can check runAsNonRoot). */
function execUser(): number {
  const user = runtime.instructions.filter((i) => i.op === "USER").at(-1)?.text;
  expect(user, "USER in the runtime stage").toMatch(/^\d+(:\d+)?$/);
  return Number(user!.split(":")[0]);
}
