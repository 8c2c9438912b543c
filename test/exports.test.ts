/**
 * The public API, pinned: every name (values and types) each entry point of
 * package.json exports, against the list in test/exports.json. Any export
 * added or removed is a change of the public API and shows up here;
 * `AGENTBUS_UPDATE_EXPORTS=1 npx vitest run test/exports.test.ts` rewrites
 * the list after a deliberate change.
 */
import { readFileSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import ts from "typescript";
import { describe, expect, it } from "vitest";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const pinned = join(root, "test/exports.json");

/** Entry name → its source module, from package.json's `exports` (dist/x.js ← x.ts). */
function entries(): Array<[string, string]> {
  const pkg = JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as { exports: Record<string, string> };
  return Object.entries(pkg.exports).map(([name, target]) => [name, join(root, target.replace(/^\.\/dist\//, "").replace(/\.js$/, ".ts"))]);
}

/** Every exported name of each entry, as the TypeScript compiler sees the module. */
function exportedNames(): Record<string, string[]> {
  const list = entries();
  const program = ts.createProgram(list.map(([, file]) => file), {
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    target: ts.ScriptTarget.ES2022,
    skipLibCheck: true,
    noEmit: true,
  });
  const checker = program.getTypeChecker();
  const out: Record<string, string[]> = {};
  for (const [name, file] of list) {
    const source = program.getSourceFile(file);
    if (!source) throw new Error(`${name}: ${file} not found`);
    const module = checker.getSymbolAtLocation(source);
    out[name] = module ? checker.getExportsOfModule(module).map((s) => s.name).sort() : [];
  }
  return out;
}

describe("public API", () => {
  it("each package.json entry exports exactly the pinned names", () => {
    const actual = exportedNames();
    if (process.env.AGENTBUS_UPDATE_EXPORTS) writeFileSync(pinned, `${JSON.stringify(actual, null, 2)}\n`);
    const expected = JSON.parse(readFileSync(pinned, "utf8")) as Record<string, string[]>;
    expect(Object.keys(actual).sort()).toEqual(Object.keys(expected).sort());
    for (const entry of Object.keys(expected)) {
      const added = actual[entry]!.filter((n) => !expected[entry]!.includes(n));
      const removed = expected[entry]!.filter((n) => !actual[entry]!.includes(n));
      expect({ entry, added, removed }).toEqual({ entry, added: [], removed: [] });
    }
  }, 60_000);
});
