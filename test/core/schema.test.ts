import { describe, expect, it } from "vitest";
import { schemaErrors, validatorFor } from "../../core/wire/schema.js";

describe("JSON Schema validation", () => {
  const schema = {
    type: "object",
    properties: { url: { type: "string", format: "uri" }, at: { type: "string", format: "date-time" }, n: { type: "integer" } },
    required: ["url"],
    additionalProperties: false,
  };

  it("checks formats (uri, date-time) instead of ignoring them", () => {
    const validate = validatorFor(schema);
    expect(() => validate({ url: "https://example.com/a", at: "2026-11-22T03:00:00Z" })).not.toThrow();
    expect(() => validate({ url: "not a uri" })).toThrow(expect.objectContaining({ code: "INVALID_INPUT", message: expect.stringMatching(/must match format "uri"/) }));
    expect(() => validate({ url: "https://example.com", at: "yesterday" })).toThrow(/must match format "date-time"/);
  });

  it("lists every problem with its path", () => {
    expect(schemaErrors(schema, { url: "x y", n: 1.5, extra: true })).toEqual([
      "/ must NOT have additional properties (extra)",
      "/url must match format \"uri\"",
      "/n must be integer",
    ]);
  });

  it("refuses a schema it cannot compile with INVALID_INPUT", () => {
    expect(() => validatorFor({ type: "no-such-type" })).toThrow(expect.objectContaining({ code: "INVALID_INPUT" }));
  });

  it("speaks JSON Schema 2020-12 by default (MCP's dialect), draft-07 and 2019-09 when a schema declares them", () => {
    // A 2020-12 tuple, with and without $schema: prefixItems, and nothing after.
    for (const declared of [{}, { $schema: "https://json-schema.org/draft/2020-12/schema" }]) {
      const tuple = validatorFor({ ...declared, type: "array", prefixItems: [{ type: "number" }, { type: "string" }], items: false });
      expect(() => tuple([1, "a"])).not.toThrow();
      expect(() => tuple([1, 2])).toThrow(/must be string/);
      expect(() => tuple([1, "a", 3])).toThrow(/must NOT have more than 2 items/);
    }
    // $defs and dependentRequired are 2020-12 (and 2019-09) keywords.
    const defs = validatorFor({ $defs: { n: { type: "integer" } }, type: "object", properties: { a: { $ref: "#/$defs/n" } }, dependentRequired: { a: ["b"] } });
    expect(() => defs({ a: 1, b: 0 })).not.toThrow();
    expect(() => defs({ a: 1 })).toThrow(/must have property b when property a is present/);
    // A draft-07 schema that says so: its tuple form (items as an array) still works.
    const draft7 = validatorFor({ $schema: "http://json-schema.org/draft-07/schema#", type: "array", items: [{ type: "number" }], additionalItems: false });
    expect(() => draft7([1])).not.toThrow();
    expect(() => draft7([1, 2])).toThrow(/must NOT have more than 1 items/);
    expect(() => validatorFor({ $schema: "https://json-schema.org/draft/2019-09/schema", type: "string" })("x")).not.toThrow();
  });
});
