/**
 * Reading deploy/kubernetes and deploy/container for the deployment tests:
 * the manifests as Kubernetes reads them, the Containerfile's stages, and
 * what a container runs, sees in its environment and finds at a path.
 */
import { readdirSync, readFileSync } from "node:fs";
import { posix } from "node:path";
import { fileURLToPath } from "node:url";
import { parseAllDocuments } from "yaml";

export const repo = fileURLToPath(new URL("../../", import.meta.url));
export const kubernetesDir = `${repo}deploy/kubernetes/`;
export const containerfilePath = `${repo}deploy/container/Containerfile`;

/** The image name the manifests use for agentbus (kustomize `images` sets the registry and tag). */
export const AGENTBUS_IMAGE = "agentbus";

// Loose shapes: only the fields the tests read.
export type Manifest = { apiVersion: string; kind: string; metadata: { name: string; labels?: Record<string, string> }; spec?: any; data?: Record<string, string> } & Record<string, any>;
export interface Container {
  name: string;
  image: string;
  command?: string[];
  args?: string[];
  env?: Array<{ name: string; value?: string; valueFrom?: any }>;
  envFrom?: Array<{ configMapRef?: { name: string }; secretRef?: { name: string }; prefix?: string }>;
  ports?: Array<{ name?: string; containerPort: number }>;
  readinessProbe?: any;
  livenessProbe?: any;
  startupProbe?: any;
  lifecycle?: any;
  volumeMounts?: Array<{ name: string; mountPath: string; subPath?: string; readOnly?: boolean }>;
  securityContext?: any;
  resources?: any;
}
type KeyItems = Array<{ key: string; path: string }>;
/** One source of a projected volume. */
export interface Projection {
  configMap?: { name: string; items?: KeyItems; optional?: boolean };
  secret?: { name: string; items?: KeyItems; optional?: boolean };
}
export interface PodSpec {
  containers: Container[];
  volumes?: Array<{
    name: string;
    configMap?: { name: string; items?: KeyItems };
    secret?: { secretName: string; items?: KeyItems };
    projected?: { sources: Projection[]; defaultMode?: number };
    emptyDir?: object;
    persistentVolumeClaim?: object;
  }>;
  securityContext?: any;
  terminationGracePeriodSeconds?: number;
}

/** The manifests kustomization.yaml lists, in order, each with its file. */
export function loadManifests(): Array<Manifest & { file: string }> {
  const kustomization = readYaml("kustomization.yaml")[0] as { resources: string[] };
  return kustomization.resources.flatMap((file) => readYaml(file).map((m) => ({ ...(m as Manifest), file })));
}

export function kustomization(): { namespace?: string; resources: string[]; images?: Array<{ name: string; newName?: string; newTag?: string }> } {
  return readYaml("kustomization.yaml")[0] as never;
}

export const manifestFiles = (): string[] => readdirSync(kubernetesDir).filter((f) => /\.ya?ml$/.test(f));

/** YAML 1.1, as kubectl reads it (`0440` is octal there). */
function readYaml(file: string): unknown[] {
  const docs = parseAllDocuments(readFileSync(kubernetesDir + file, "utf8"), { version: "1.1" });
  return docs.map((d) => {
    if (d.errors.length) throw new Error(`${file}: ${d.errors.map((e) => e.message).join("; ")}`);
    return d.toJS();
  }).filter((d) => d !== null);
}

export function find(manifests: Manifest[], kind: string, name: string): Manifest {
  const m = manifests.find((x) => x.kind === kind && x.metadata.name === name);
  if (!m) throw new Error(`no ${kind} ${name} in deploy/kubernetes`);
  return m;
}

/** Deployments, StatefulSets, DaemonSets and Jobs with their pod spec. */
export function workloads(manifests: Manifest[]): Array<{ manifest: Manifest; pod: PodSpec }> {
  return manifests.filter((m) => ["Deployment", "StatefulSet", "DaemonSet", "Job"].includes(m.kind)).map((manifest) => ({ manifest, pod: manifest.spec.template.spec as PodSpec }));
}

/** Containers that run the agentbus image. */
export function agentbusContainers(manifests: Manifest[]): Array<{ manifest: Manifest; pod: PodSpec; container: Container }> {
  return workloads(manifests).flatMap(({ manifest, pod }) =>
    pod.containers.filter((c) => imageName(c.image) === AGENTBUS_IMAGE).map((container) => ({ manifest, pod, container })),
  );
}

const imageName = (image: string) => image.replace(/@.*$/, "").replace(/:[^/:]+$/, "");

/** A Service whose selector picks the workload's pods. */
export function servicesFor(manifests: Manifest[], workload: Manifest): Manifest[] {
  const labels: Record<string, string> = workload.spec.template.metadata.labels;
  return manifests.filter((m) => m.kind === "Service" && Object.entries(m.spec.selector ?? {}).every(([k, v]) => labels[k] === v));
}

/** A container port by number or name. */
export function containerPort(container: Container, port: number | string): number {
  if (typeof port === "number") return port;
  const named = container.ports?.find((p) => p.name === port);
  if (!named) throw new Error(`container ${container.name} has no port named ${port}`);
  return named.containerPort;
}

/* ---------------------------------------------------------------- Containerfile */

export interface Instruction {
  op: string;
  /** The text after the instruction word. */
  text: string;
  line: number;
}

export interface Stage {
  name?: string;
  from: string;
  instructions: Instruction[];
}

/** The Containerfile's stages (line continuations joined, comments dropped). */
export function parseContainerfile(text = readFileSync(containerfilePath, "utf8")): Stage[] {
  const stages: Stage[] = [];
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const start = i + 1;
    let line = lines[i]!;
    if (/^\s*(#|$)/.test(line)) continue;
    while (/\\\s*$/.test(line) && i + 1 < lines.length) line = line.replace(/\\\s*$/, " ") + lines[++i]!;
    const m = /^\s*([A-Za-z]+)\s+(.*)$/.exec(line);
    if (!m) throw new Error(`Containerfile line ${start}: cannot read ${line}`);
    const op = m[1]!.toUpperCase();
    const rest = m[2]!.trim();
    if (op === "FROM") {
      const f = /^(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?$/i.exec(rest)!;
      stages.push({ from: f[1]!, name: f[2], instructions: [] });
      continue;
    }
    if (!stages.length) throw new Error(`Containerfile line ${start}: ${op} before FROM`);
    stages.at(-1)!.instructions.push({ op, text: rest, line: start });
  }
  return stages;
}

/** ENTRYPOINT / CMD in exec form (a JSON array); the shell form is refused. */
export function execForm(stage: Stage, op: "ENTRYPOINT" | "CMD"): string[] | undefined {
  const ins = stage.instructions.filter((i) => i.op === op).at(-1);
  if (!ins) return undefined;
  const value: unknown = JSON.parse(ins.text);
  if (!Array.isArray(value) || !value.every((v) => typeof v === "string")) throw new Error(`${op} must be a JSON array of strings`);
  return value as string[];
}

export interface Copy {
  from?: string;
  sources: string[];
  dest: string;
  /** The destination is a directory (it ends with `/`, or there are several sources). */
  destIsDir: boolean;
  line: number;
  /** The stage's WORKDIR at this COPY. */
  workdir: string;
}

/** The stage's COPY instructions, with the WORKDIR each one runs in. */
export function copies(stage: Stage): Copy[] {
  let workdir = "/";
  const out: Copy[] = [];
  for (const ins of stage.instructions) {
    if (ins.op === "WORKDIR") workdir = posix.resolve(workdir, ins.text);
    if (ins.op !== "COPY") continue;
    const words = ins.text.split(/\s+/);
    const flags = words.filter((w) => w.startsWith("--"));
    const paths = words.filter((w) => !w.startsWith("--"));
    const from = flags.find((f) => f.startsWith("--from="))?.slice("--from=".length);
    const sources = paths.slice(0, -1);
    const dest = paths.at(-1)!;
    out.push({ from, sources, dest: posix.resolve(workdir, dest), destIsDir: dest.endsWith("/") || sources.length > 1, line: ins.line, workdir });
  }
  return out;
}

export function workdirOf(stage: Stage): string {
  return stage.instructions.filter((i) => i.op === "WORKDIR").reduce((dir, i) => posix.resolve(dir, i.text), "/");
}

/* ---------------------------------------------------------------- what a container runs and sees */

/** The command line the container runs: Kubernetes' `command` replaces ENTRYPOINT, `args` replaces CMD. */
export function argvOf(container: Container, image: Stage): string[] {
  const entrypoint = container.command ?? execForm(image, "ENTRYPOINT") ?? [];
  const cmd = container.args ?? (container.command ? [] : (execForm(image, "CMD") ?? []));
  return [...entrypoint, ...cmd];
}

/**
 * The container's environment: name → value (undefined when it comes from a
 * Secret or the downward API). envFrom first, env over it, as Kubernetes does.
 */
export function envOf(container: Container, manifests: Manifest[]): Map<string, string | undefined> {
  const env = new Map<string, string | undefined>();
  for (const from of container.envFrom ?? []) {
    if (from.configMapRef) {
      const cm = find(manifests, "ConfigMap", from.configMapRef.name);
      for (const [k, v] of Object.entries(cm.data ?? {})) env.set(`${from.prefix ?? ""}${k}`, v);
    } else {
      throw new Error(`${container.name}: envFrom a Secret hides which variables it sets; name them in env instead`);
    }
  }
  for (const e of container.env ?? []) {
    if (e.value !== undefined) env.set(e.name, e.value);
    else if (e.valueFrom?.configMapKeyRef) env.set(e.name, find(manifests, "ConfigMap", e.valueFrom.configMapKeyRef.name).data?.[e.valueFrom.configMapKeyRef.key]);
    else env.set(e.name, undefined);
  }
  return env;
}

export interface Mounted {
  mountPath: string;
  volume: NonNullable<PodSpec["volumes"]>[number];
  readOnly: boolean;
  /** The path inside the volume. */
  rest: string;
}

/** The volume mount an absolute path falls in (the deepest one), or undefined: the image's own filesystem. */
export function mountFor(pod: PodSpec, container: Container, path: string): Mounted | undefined {
  const mounts = (container.volumeMounts ?? []).filter((m) => path === m.mountPath || path.startsWith(`${m.mountPath.replace(/\/$/, "")}/`));
  const mount = mounts.sort((a, b) => b.mountPath.length - a.mountPath.length)[0];
  if (!mount) return undefined;
  const volume = pod.volumes?.find((v) => v.name === mount.name);
  if (!volume) throw new Error(`${container.name} mounts ${mount.name}, which the pod does not define`);
  const rest = posix.join(mount.subPath ?? "", path.slice(mount.mountPath.replace(/\/$/, "").length).replace(/^\//, ""));
  return { mountPath: mount.mountPath, volume, readOnly: Boolean(mount.readOnly), rest };
}

/** Where a file in a container comes from: a key of a ConfigMap or of a Secret. */
export interface FileSource {
  kind: "ConfigMap" | "Secret";
  name: string;
  key: string;
  /** The ConfigMap is one of the manifests (else it is made by the operator, like a Secret). */
  defined: boolean;
}

/** A volume's ConfigMap and Secret sources (one for a configMap or secret volume, several for a projected one). */
export function sourcesOf(volume: NonNullable<PodSpec["volumes"]>[number]): Array<{ kind: "ConfigMap" | "Secret"; name: string; items?: KeyItems }> {
  if (volume.configMap) return [{ kind: "ConfigMap", name: volume.configMap.name, items: volume.configMap.items }];
  if (volume.secret) return [{ kind: "Secret", name: volume.secret.secretName, items: volume.secret.items }];
  return (volume.projected?.sources ?? []).flatMap((s) => [
    ...(s.configMap ? [{ kind: "ConfigMap" as const, name: s.configMap.name, items: s.configMap.items }] : []),
    ...(s.secret ? [{ kind: "Secret" as const, name: s.secret.name, items: s.secret.items }] : []),
  ]);
}

/**
 * The ConfigMap or Secret key a container finds at `path`, or undefined
 * (another kind of volume, or the image). In a projected volume: the source
 * whose items name the path, else a ConfigMap of the manifests that has the
 * key, else the one source without items that the manifests do not define.
 */
export function fileSource(manifests: Manifest[], pod: PodSpec, container: Container, path: string): FileSource | undefined {
  const m = mountFor(pod, container, path);
  if (!m) return undefined;
  const defined = (kind: string, name: string) => manifests.find((x) => x.kind === kind && x.metadata.name === name);
  const sources = sourcesOf(m.volume).map((s) => ({ ...s, defined: Boolean(defined(s.kind, s.name)) }));
  const listed = sources.find((s) => s.items?.some((i) => i.path === m.rest));
  if (listed) return { kind: listed.kind, name: listed.name, key: listed.items!.find((i) => i.path === m.rest)!.key, defined: listed.defined };
  const whole = sources.filter((s) => !s.items);
  const known = whole.find((s) => s.defined && defined(s.kind, s.name)!.data?.[m.rest] !== undefined);
  if (known) return { kind: known.kind, name: known.name, key: m.rest, defined: true };
  const external = whole.filter((s) => !s.defined);
  return external.length === 1 ? { kind: external[0]!.kind, name: external[0]!.name, key: m.rest, defined: false } : undefined;
}

/** The contents of a file a ConfigMap of the manifests provides at `path`, or undefined when none does. */
export function configMapFile(manifests: Manifest[], pod: PodSpec, container: Container, path: string): string | undefined {
  const source = fileSource(manifests, pod, container, path);
  if (source?.kind !== "ConfigMap" || !source.defined) return undefined;
  return find(manifests, "ConfigMap", source.name).data?.[source.key];
}

/** The Secrets a pod's volumes name (they are created by the operator, never defined in the manifests). */
export function secretNames(pod: PodSpec): string[] {
  return (pod.volumes ?? []).flatMap((v) => sourcesOf(v).filter((s) => s.kind === "Secret").map((s) => s.name));
}

/** The ConfigMaps a pod's volumes name that the manifests do not define (made by the operator). */
export function externalConfigMaps(manifests: Manifest[], pod: PodSpec): string[] {
  return (pod.volumes ?? []).flatMap((v) => sourcesOf(v).filter((s) => s.kind === "ConfigMap" && !manifests.some((m) => m.kind === "ConfigMap" && m.metadata.name === s.name)).map((s) => s.name));
}

/* ---------------------------------------------------------------- nats.conf */

export type NatsConf = { [key: string]: string | string[] | NatsConf };

/**
 * Reads the subset of the NATS configuration format the manifests use:
 * `key: value` (or `=`), `key { … }` blocks and `[ … ]` arrays; `#` and `//`
 * comments. Values stay strings, unquoted.
 */
export function parseNatsConf(text: string): NatsConf {
  const tokens = [...text.matchAll(/"([^"]*)"|'([^']*)'|(?:#|\/\/)[^\n]*|([{}[\],])|([^\s{}[\],:="'#]+)|([:=])/g)]
    .filter((m) => m[1] !== undefined || m[2] !== undefined || m[3] || m[4] || m[5])
    .map((m): { s?: string; p?: string } => (m[1] !== undefined ? { s: m[1] } : m[2] !== undefined ? { s: m[2] } : m[3] ? { p: m[3] } : m[4] ? { s: m[4] } : { p: m[5]! }));
  let i = 0;
  const value = (): string | string[] | NatsConf => {
    const t = tokens[i++]!;
    if (t.p === "{") return block("}");
    if (t.p === "[") {
      const items: string[] = [];
      while (tokens[i]?.p !== "]") {
        if (tokens[i]?.p === ",") i++;
        else items.push(value() as string);
      }
      i++;
      return items;
    }
    if (t.s === undefined) throw new Error(`nats.conf: unexpected ${t.p}`);
    return t.s;
  };
  const block = (end?: string): NatsConf => {
    const out: NatsConf = {};
    while (i < tokens.length && (end === undefined || tokens[i]!.p !== end)) {
      const key = tokens[i++]!;
      if (key.s === undefined) throw new Error(`nats.conf: expected a key, got ${key.p}`);
      if (tokens[i]?.p === ":" || tokens[i]?.p === "=") i++;
      out[key.s] = value();
      if (tokens[i]?.p === ",") i++;
    }
    i++;
    return out;
  };
  return block();
}

/** The port of a `host:port` listen address. */
export const portOf = (listen: unknown): number => Number(/:(\d+)$/.exec(String(listen))?.[1]);

/** A NATS duration (`30s`, `2m`, `500ms`) in ms. */
export function durationMs(d: unknown): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/.exec(String(d));
  if (!m) throw new Error(`not a duration: ${String(d)}`);
  return Number(m[1]) * { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 }[m[2] as "ms" | "s" | "m" | "h"];
}
