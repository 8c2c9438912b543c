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
});
