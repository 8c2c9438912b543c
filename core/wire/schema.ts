import { Ajv, type ValidateFunction } from "ajv";
import addFormats from "ajv-formats";
import { AgentBusError } from "./errors.js";

/** A JSON Schema object (draft-07 / 2019 subset as ajv understands it). */
export type JsonSchema = Record<string, unknown>;

// Formats (uri, date-time, email, ...) are checked, not ignored: tool and
// capability schemas use them as constraints.
const ajv = new Ajv({ allErrors: true, strict: false });
addFormats.default(ajv);
const compiled = new WeakMap<JsonSchema, ValidateFunction>();

/**
 * Every way `value` breaks `schema`, one line each, led by the JSON pointer
 * of the offending value (`/gateway/port must be integer`); empty when valid.
 * For configuration files, where a user wants all problems at once.
 */
export function schemaErrors(schema: JsonSchema, value: unknown): string[] {
  validatorFor(schema); // compile (and cache) once
  const v = compiled.get(schema)!;
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
  let validate = compiled.get(schema);
  if (!validate) {
    try {
      validate = ajv.compile(schema);
    } catch (cause) {
      throw new AgentBusError("INVALID_INPUT", `invalid JSON Schema: ${(cause as Error).message}`, { cause });
    }
    compiled.set(schema, validate);
  }
  const v = validate;
  return (value) => {
    if (!v(value)) {
      throw new AgentBusError("INVALID_INPUT", `input does not match the schema: ${ajv.errorsText(v.errors)}`);
    }
  };
}
