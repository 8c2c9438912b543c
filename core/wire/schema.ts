import { Ajv, type ValidateFunction } from "ajv";
import { Ajv2019 } from "ajv/dist/2019.js";
import { Ajv2020 } from "ajv/dist/2020.js";
import addFormats from "ajv-formats";
import { AgentBusError } from "./errors.js";

/**
 * A JSON Schema object. Its dialect is its `$schema`: JSON Schema 2020-12
 * when it names none (MCP's default, and A2A's), 2019-09 or draft-07 (and
 * older drafts) when it says so.
 */
export type JsonSchema = Record<string, unknown>;

// Formats (uri, date-time, email, ...) are checked, not ignored: tool and
// capability schemas use them as constraints.
const options = { allErrors: true, strict: false } as const;
const dialects = { "2020-12": new Ajv2020(options), "2019-09": new Ajv2019(options), "draft-07": new Ajv(options) };
for (const ajv of Object.values(dialects)) addFormats.default(ajv);

/** The validator of a schema's dialect, by its `$schema` (2020-12 without one). */
function ajvOf(schema: JsonSchema): Ajv {
  const declared = typeof schema.$schema === "string" ? schema.$schema : "";
  if (/draft-0[4-7]/.test(declared)) return dialects["draft-07"];
  if (declared.includes("2019-09")) return dialects["2019-09"];
  return dialects["2020-12"];
}

const compiled = new WeakMap<JsonSchema, { validate: ValidateFunction; ajv: Ajv }>();

/**
 * Every way `value` breaks `schema`, one line each, led by the JSON pointer
 * of the offending value (`/gateway/port must be integer`); empty when valid.
 * For configuration files, where a user wants all problems at once.
 */
export function schemaErrors(schema: JsonSchema, value: unknown): string[] {
  validatorFor(schema); // compile (and cache) once
  const v = compiled.get(schema)!.validate;
  if (v(value)) return [];
  return (v.errors ?? []).map((e) => {
    const where = e.instancePath || "/";
    const extra = e.keyword === "additionalProperties" ? ` (${String((e.params as { additionalProperty: string }).additionalProperty)})` : e.keyword === "enum" ? ` (${(e.params as { allowedValues: unknown[] }).allowedValues.join(", ")})` : "";
    return `${where} ${e.message ?? e.keyword}${extra}`;
  });
}

/**
 * A validator for `schema`, compiled once per schema object and cached, so
 * the per-call cost is the validation alone.
 */
export function validatorFor(schema: JsonSchema): (value: unknown) => void {
  let entry = compiled.get(schema);
  if (!entry) {
    const ajv = ajvOf(schema);
    try {
      entry = { validate: ajv.compile(schema), ajv };
    } catch (cause) {
      throw new AgentBusError("INVALID_INPUT", `invalid JSON Schema: ${(cause as Error).message}`, { cause });
    }
    compiled.set(schema, entry);
  }
  const { validate: v, ajv } = entry;
  return (value) => {
    if (!v(value)) {
      throw new AgentBusError("INVALID_INPUT", `input does not match the schema: ${ajv.errorsText(v.errors)}`);
    }
  };
}
