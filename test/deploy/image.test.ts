/**
 * The image and the Deployments without a container engine (there is none
 * where these tests run): compiles the sources as the Containerfile's build
 * stage does, lays out the runtime stage's files as its COPY instructions
 * say, then runs the gateway and the writer with the command lines,
 * environment and mounted files of their Deployments against a real
 * nats-server. What stays unchecked: the base image, `npm ci --omit=dev`
 * (the repository's node_modules stands in; the compiled code is checked to
 * import only `dependencies`) and the uid.
 */
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { builtinModules } from "node:module";
import { tmpdir } from "node:os";
import { dirname, join, posix } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Identity } from "../../core/index.js";
import { hashApiKey } from "../../bridges/a2a/auth.js";
import { freePort } from "../../nats/index.js";
import { eventually } from "../helpers/bus.js";
import { useNatsServer } from "../helpers/nats.js";
import { agentbusContainers, argvOf, copies, envOf, loadManifests, parseContainerfile, repo, workdirOf, type Container, type Manifest, type PodSpec } from "./manifests.js";

const pkg = JSON.parse(readFileSync(join(repo, "package.json"), "utf8")) as { bin: { agentbus: string }; dependencies: Record<string, string> };
const manifests = loadManifests();
const stages = parseContainerfile();
const runtime = stages.at(-1)!;
const build = stages.find((s) => copies(runtime).some((c) => c.from !== undefined && c.from === s.name))!;
const runs = agentbusContainers(manifests).map((r) => ({ ...r, argv: argvOf(r.container, runtime) }));
const gatewayRun = runs.find((r) => r.argv[2] === "up")!;
const writerRun = runs.find((r) => r.argv.slice(2, 4).join(" ") === "agent run")!;

const root = mkdtempSync(join(tmpdir(), "agentbus-image-"));
/** The runtime stage's filesystem. */
const image = join(root, "image");
const workdir = workdirOf(runtime);
const API_KEY = "k-deploy-test-0123456789";

/** Compiles as `npm run build` does, into the build stage's WORKDIR/dist. */
async function compile(): Promise<string> {
  const out = join(root, "build");
  await promisify(execFile)("bash", [join(repo, "scripts/build.sh"), join(out, "dist")], { cwd: repo });
  return out;
}

/** The runtime stage's COPY instructions, carried out: from the build context (the repository) or the build stage. */
function layOut(buildOut: string): void {
  const buildDir = workdirOf(build);
  mkdirSync(join(image, workdir), { recursive: true });
  for (const copy of copies(runtime)) {
    for (const source of copy.sources) {
      let from: string;
      if (copy.from === undefined) from = join(repo, source);
      else {
        const rel = posix.relative(buildDir, posix.resolve(buildDir, source));
        from = rel === "dist" || rel.startsWith("dist/") ? join(buildOut, rel) : join(repo, rel);
      }
      const to = join(image, copy.destIsDir && !statSync(from).isDirectory() ? posix.join(copy.dest, posix.basename(source)) : copy.dest);
      mkdirSync(dirname(to), { recursive: true });
      cpSync(from, to, { recursive: true });
    }
  }
  // `npm ci --omit=dev` stands in as the repository's node_modules.
  symlinkSync(join(repo, "node_modules"), join(image, workdir, "node_modules"), "dir");
}

interface Pod {
  root: string;
  /** A container path as the test sees it. */
  host(path: string): string;
  /** Container paths in a text (arguments, mounted files) rewritten to the test's. */
  rewrite(text: string): string;
}

/** A pod's filesystem: the image's working directory, and each volume at its mount path. */
function podFor(name: string, pod: PodSpec, container: Container, secretFiles: (mountPath: string, pod: Pod) => Record<string, string>): Pod {
  const podRoot = join(root, "pods", name);
  const mounts = [...(container.volumeMounts ?? [])].sort((a, b) => b.mountPath.length - a.mountPath.length);
  const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  const pattern = new RegExp(`(?<=^|[\\s"'=:,\\[])(${mounts.map((m) => escape(m.mountPath)).join("|")})(?=/|$|[\\s"',\\]])`, "g");
  const p: Pod = {
    root: podRoot,
    host: (path) => join(podRoot, path),
    rewrite: (text) => text.replace(pattern, (m) => join(podRoot, m)),
  };
  mkdirSync(dirname(join(podRoot, workdir)), { recursive: true });
  symlinkSync(join(image, workdir), join(podRoot, workdir), "dir");
  for (const mount of mounts) {
    const dir = p.host(mount.mountPath);
    mkdirSync(dir, { recursive: true });
    const volume = pod.volumes!.find((v) => v.name === mount.name)!;
    if (volume.configMap) {
      const cm = manifests.find((m) => m.kind === "ConfigMap" && m.metadata.name === volume.configMap!.name) as Manifest;
      for (const [key, text] of Object.entries(cm.data ?? {})) writeFileSync(join(dir, key), p.rewrite(text));
    }
    if (volume.secret) for (const [file, text] of Object.entries(secretFiles(mount.mountPath, p))) writeFileSync(join(dir, file), text);
  }
  return p;
}

interface Started {
  child: ChildProcess;
  stdout: () => string;
  stderr: () => string;
  exited: Promise<{ code: number | null; at: number }>;
}
const started: Started[] = [];

/** Runs a container's command line in its pod, with its environment (plus `override`). */
function start(run: (typeof runs)[number], pod: Pod, override: Record<string, string>): Started {
  const [node, ...args] = run.argv;
  expect(node).toBe("node");
  const env: Record<string, string> = { PATH: process.env.PATH ?? "" };
  for (const [k, v] of envOf(run.container, manifests)) if (v !== undefined) env[k] = v;
  const child = spawn(process.execPath, args.map(pod.rewrite), { cwd: join(pod.root, workdir), env: { ...env, ...override } });
  let stdout = "";
  let stderr = "";
  child.stdout!.on("data", (d) => (stdout += String(d)));
  child.stderr!.on("data", (d) => (stderr += String(d)));
  const exited = new Promise<{ code: number | null; at: number }>((resolve) => child.on("exit", (code) => resolve({ code, at: Date.now() })));
  const s = { child, stdout: () => stdout, stderr: () => stderr, exited };
  started.push(s);
  return s;
}

describe("the image, run as the Deployments run it", () => {
  const nats = useNatsServer();
  let gateway: Started;
  let writer: Started;
  let base: string;
  let writerId: string;

  beforeAll(async () => {
    layOut(await compile());
  }, 120_000);

  afterAll(() => {
    for (const s of started) if (s.child.exitCode === null) s.child.kill("SIGKILL");
    rmSync(root, { recursive: true, force: true });
  });

  it("the compiled code imports only Node built-ins and the dependencies the runtime stage installs", () => {
    const files = (dir: string): string[] => readdirSync(dir).flatMap((f) => (statSync(join(dir, f)).isDirectory() ? files(join(dir, f)) : f.endsWith(".js") ? [join(dir, f)] : []));
    const dist = join(image, workdir, "dist");
    expect(existsSync(join(image, workdir, pkg.bin.agentbus)), `${pkg.bin.agentbus} is in the image`).toBe(true);
    const builtins = new Set(builtinModules);
    for (const file of files(dist)) {
      const text = readFileSync(file, "utf8");
      const specifiers = [
        ...text.matchAll(/^\s*(?:import|export)\b[^'"]*?\bfrom\s*["']([^"']+)["']/gm),
        ...text.matchAll(/^\s*import\s*["']([^"']+)["']/gm),
        ...text.matchAll(/\bimport\(\s*["']([^"']+)["']\s*\)/g),
      ].map((m) => m[1]!);
      for (const s of specifiers.filter((x) => !x.startsWith(".") && !x.startsWith("node:") && !builtins.has(x.split("/")[0]!))) {
        const name = s.startsWith("@") ? s.split("/").slice(0, 2).join("/") : s.split("/")[0]!;
        expect(Object.keys(pkg.dependencies), `${posix.relative(dist, file)} imports ${s}`).toContain(name);
      }
    }
  });

  it("the gateway starts: /health, /ready, the monitor page, and /metrics with an API key", async () => {
    const pod = podFor("gateway", gatewayRun.pod, gatewayRun.container, (mountPath, p) => {
      // As deploy/README.md says to create the Secret: the gateway's seed, keys.json, a seed per key.
      const gatewaySeed = Identity.generate().exportSeed();
      const opsSeed = Identity.generate().exportSeed();
      return {
        "gateway.seed": `${gatewaySeed}\n`,
        "ops.seed": `${opsSeed}\n`,
        "keys.json": p.rewrite(JSON.stringify([{ name: "ops", sha256: hashApiKey(API_KEY), seedFile: posix.join(mountPath, "ops.seed") }])),
      };
    });
    // The pod's address and port become the test's: 127.0.0.1 and a free port; NATS is the test's server.
    const port = await freePort();
    gateway = start(gatewayRun, pod, { NATS_URL: nats.server.url, AGENTBUS_HOST: "127.0.0.1", AGENTBUS_PORT: String(port) });
    base = `http://127.0.0.1:${port}`;
    const exited = gateway.exited.then(({ code }) => Promise.reject(new Error(`agentbus up exited with ${code}`)));
    exited.catch(() => {});
    await Promise.race([eventually(async () => (await fetch(`${base}/ready`)).status === 200, 40_000, 200), exited]).catch((err: Error) => {
      throw new Error(`${err.message}\n--- stderr ---\n${gateway.stderr()}`);
    });
    expect((await fetch(`${base}/health`)).status).toBe(200);
    const page = await fetch(`${base}/monitor/`);
    expect(page.status, "the monitor's page is in the image").toBe(200);
    expect(page.headers.get("content-type")).toMatch(/text\/html/);
    expect((await fetch(`${base}/metrics`)).status).toBe(401);
    expect((await fetch(`${base}/metrics`, { headers: { authorization: `Bearer ${API_KEY}` } })).status).toBe(200);
  }, 60_000);

  it("the writer joins the bus as its Deployment runs it, and the gateway lists it", async () => {
    const seed = Identity.generate();
    writerId = seed.id;
    const pod = podFor("writer", writerRun.pod, writerRun.container, () => ({ "writer.seed": `${seed.exportSeed()}\n` }));
    writer = start(writerRun, pod, { NATS_URL: nats.server.url });
    const exited = writer.exited.then(({ code }) => Promise.reject(new Error(`agentbus agent run exited with ${code}`)));
    exited.catch(() => {});
    const line = await Promise.race([eventually(() => writer.stdout().split("\n").find((l) => l.startsWith("{")), 30_000, 100), exited]).catch((err: Error) => {
      throw new Error(`${err.message}\n--- stderr ---\n${writer.stderr()}`);
    });
    expect(JSON.parse(line!)).toMatchObject({ id: writerId, name: "writer", capabilities: ["write"] });
    await eventually(async () => {
      const res = await fetch(`${base}/v1/agents?name=writer`, { headers: { "x-api-key": API_KEY } });
      const body = (await res.json()) as { agents: Array<{ id: string; online: boolean }> };
      return body.agents.some((a) => a.id === writerId && a.online);
    }, 15_000, 200);
  }, 60_000);

  it("on SIGTERM both drain and exit 0, the gateway within its grace period", async () => {
    const sent = Date.now();
    writer.child.kill("SIGTERM");
    gateway.child.kill("SIGTERM");
    const [w, g] = await Promise.all([writer.exited, gateway.exited]);
    expect(w.code, writer.stderr()).toBe(0);
    expect(g.code, gateway.stderr()).toBe(0);
    expect(g.at - sent).toBeLessThan(gatewayRun.pod.terminationGracePeriodSeconds! * 1000);
  }, 60_000);
});
