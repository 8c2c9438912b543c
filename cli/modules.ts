/** Agent modules: what `agentbus agent run` and `agentbus up` load and start. */
import { existsSync } from "node:fs";
import { resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { AgentBusError, type AgentOptions, type AgentSpec, type Bus, type Handler } from "../core/index.js";

/** What `agentbus agent run` accepts as a module's default export. */
export type AgentModule =
  | { kind: "function"; run: (bus: Bus) => unknown }
  | { kind: "definition"; spec: AgentSpec; handlers: Record<string, Handler>; options?: AgentOptions };

/** A TypeScript module's extension. */
const TYPESCRIPT = /\.[cm]?tsx?$/;

/**
 * Lets this process import TypeScript modules, once: tsx's loader, unless
 * the process already runs under one (the CLI from source).
 */
let typescript: Promise<void> | undefined;
function importTypeScript(): Promise<void> {
  typescript ??= (async () => {
    if (import.meta.url.endsWith(".ts")) return; // this module runs from source: a loader is in place
    const { register } = await import("tsx/esm/api");
    register();
  })();
  return typescript;
}

/**
 * Imports a module (a path, else a package name; TypeScript through tsx)
 * and checks it defines an agent; `INVALID_INPUT` (exit 2) when not.
 */
export async function loadAgentModule(module: string): Promise<AgentModule> {
  const path = resolve(module);
  let mod: Record<string, unknown>;
  try {
    if (TYPESCRIPT.test(module)) await importTypeScript();
    mod = (await import(existsSync(path) ? pathToFileURL(path).href : module)) as Record<string, unknown>;
  } catch (cause) {
    throw new AgentBusError("INVALID_INPUT", `cannot load ${module}: ${(cause as Error).message}`, { cause });
  }
  const d = mod.default as Record<string, unknown> | ((bus: Bus) => unknown) | undefined;
  if (typeof d === "function") return { kind: "function", run: d };
  if (d && typeof d === "object" && typeof d.spec === "object" && d.spec && typeof d.handlers === "object" && d.handlers) {
    return { kind: "definition", spec: d.spec as AgentSpec, handlers: d.handlers as Record<string, Handler>, options: d.options as AgentOptions | undefined };
  }
  throw new AgentBusError("INVALID_INPUT", `${module} must export default a function (bus) => Promise<unknown> or an agent definition {spec, handlers}`);
}

/** Starts what a module defines on `bus`: its function, or `bus.agent(spec, handlers, options)`. */
export function startAgentModule(bus: Bus, entry: AgentModule): Promise<unknown> {
  return entry.kind === "function" ? Promise.resolve(entry.run(bus)) : bus.agent(entry.spec, entry.handlers, entry.options);
}
