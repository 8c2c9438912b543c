import { Ajv, type ValidateFunction } from "ajv";
import { AgentBusError } from "./errors.js";

/** A JSON Schema object (draft-07 / 2019 subset as ajv understands it). */
export type JsonSchema = Record<string, unknown>;

const ajv = new Ajv({ allErrors: true, strict: false });
const compiled = new WeakMap<JsonSchema, ValidateFunction>();

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
