/**
 * agentbus for adapter and bridge authors: everything the user API
 * (`agentbus`) exports, plus what the built-in adapters and bridges are
 * made of and nobody else needs: spans for the hops they add
 * (OpenTelemetry, free when no SDK is registered), JSON Schema validation,
 * create-or-verify JetStream infrastructure, KV mirrors. Import from
 * `agentbus-nats/internal`; every name here is public API, pinned by a test, and
 * changes with the same care as `agentbus` itself.
 *
 * @example
 * ```ts
 * import { connect, traced, SpanKind, SpanAttr, validatorFor } from "agentbus-nats/internal";
 * ```
 */
export * from "./index.js";
export { SpanAttr, SpanKind, traced, type Traced } from "./wire/trace.js";
export { validatorFor, schemaErrors } from "./wire/schema.js";
export { checkId } from "./wire/subjects.js";
export { cardSignature, signCard } from "./security/cardsig.js";
export { preferOnline } from "./store/registry.js";
export { ensureBucket, ensureStream, ensureConsumer, ensurePushBucket, retryJs } from "./infra/jetstream.js";
export { KvMirror, KvWatch, type Mirrored, type MirrorListener } from "./infra/kvmirror.js";
export { readNewest, type StreamRecord } from "./client/dead-letters.js";
export { BLOB_MEDIA_TYPE } from "./store/blobs.js";
