/**
 * The module graph has no cycle: not in core/ (where the bus, agents,
 * workers and handler contexts once imported one another), nor across the
 * project. Type-only imports count too: a loop of types is a loop of
 * concepts, and one runtime import on it fails at module load.
 */
import { readFileSync, readdirSync, statSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import ts from "typescript";
import { describe, expect, it } from "vitest";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const FOLDERS = ["core", "authority", "adapters", "bridges", "nats", "cli", "agents"];

const walk = (dir: string): string[] =>
  readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? walk(path) : path.endsWith(".ts") && !path.endsWith(".d.ts") ? [path] : [];
  });

/** Each module and the project modules it imports (value and type imports, re-exports, dynamic imports). */
function moduleGraph(): Map<string, string[]> {
  const files = new Set(FOLDERS.flatMap((f) => walk(join(root, f))));
  const graph = new Map<string, string[]>();
  for (const file of files) {
    const { importedFiles } = ts.preProcessFile(readFileSync(file, "utf8"), true, true);
    const targets = importedFiles
      .map((i) => i.fileName)
      .filter((name) => name.startsWith("."))
      .map((name) => resolve(dirname(file), name.replace(/\.js$/, ".ts")))
      .filter((target) => files.has(target));
    graph.set(file, targets);
  }
  return graph;
}

/** The strongly connected components with more than one module, or a module importing itself (Tarjan). */
function cycles(graph: Map<string, string[]>): string[][] {
  let next = 0;
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const found: string[][] = [];
  const visit = (v: string): void => {
    index.set(v, next);
    low.set(v, next++);
    stack.push(v);
    onStack.add(v);
    for (const w of graph.get(v) ?? []) {
      if (!index.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, index.get(w)!));
    }
    if (low.get(v) !== index.get(v)) return;
    const component: string[] = [];
    let w: string;
    do {
      w = stack.pop()!;
      onStack.delete(w);
      component.push(relative(root, w));
    } while (w !== v);
    if (component.length > 1 || (graph.get(v) ?? []).includes(v)) found.push(component.sort());
  };
  for (const v of graph.keys()) if (!index.has(v)) visit(v);
  return found;
}

describe("module graph", () => {
  it("finds a cycle when there is one (the check itself)", () => {
    const graph = new Map([["a", ["b"]], ["b", ["c"]], ["c", ["a"]], ["d", ["a"]], ["e", ["e"]]]);
    expect(cycles(graph).map((c) => c.join(" "))).toEqual(["a b c", "e"].map((c) => c.split(" ").map((m) => relative(root, m)).join(" ")));
  });

  it("has no import cycle in the project's modules", () => {
    const graph = moduleGraph();
    expect(graph.size).toBeGreaterThan(100);
    expect(cycles(graph)).toEqual([]);
  });

  it("bridges import no other bridge, only the shared entries (bridges/http, bridges/events); the gateway assembles them", () => {
    const shared = new Set(["bridges/http/index.ts", "bridges/events/index.ts"]);
    const crossings: string[] = [];
    for (const [file, targets] of moduleGraph()) {
      const from = relative(root, file);
      const own = /^bridges\/([^/]+)\//.exec(from)?.[1];
      if (!own || own === "gateway") continue;
      for (const target of targets.map((t) => relative(root, t))) {
        const other = /^bridges\/([^/]+)\//.exec(target)?.[1];
        if (other && other !== own && !shared.has(target)) crossings.push(`${from} → ${target}`);
      }
    }
    expect(crossings).toEqual([]);
  });

  it("core's layers import only leftward: wire ← security ← infra ← store ← options and runtime ← client ← agent ← the bus and its entries", () => {
    // The order of core's folders; a module may import its own layer and those before it.
    const layers = ["wire", "security", "infra", "store", "options", "client", "agent", "bus"];
    const layerOf = (path: string): number => {
      const rel = relative(join(root, "core"), path);
      const folder = rel.includes("/") ? rel.slice(0, rel.indexOf("/")) : ["options.ts", "runtime.ts"].includes(rel) ? "options" : "bus";
      const i = layers.indexOf(folder);
      if (i < 0) throw new Error(`${rel} is in no layer of core/`);
      return i;
    };
    const rightward: string[] = [];
    for (const [file, targets] of moduleGraph()) {
      if (!relative(root, file).startsWith("core/")) continue;
      for (const target of targets) {
        if (!relative(root, target).startsWith("core/")) continue;
        if (layerOf(target) > layerOf(file)) rightward.push(`${relative(root, file)} → ${relative(root, target)}`);
      }
    }
    expect(rightward).toEqual([]);
  });
});
