/**
 * agentbus core: the bus client library. Connection, identity, envelopes,
 * subjects, registry and discovery, fast calls, ACL, errors. No HTTP here.
 *
 * @example
 * ```ts
 * import { connect } from "agentbus-nats";
 * const bus = await connect({ servers: "nats://127.0.0.1:4222", insecureAllowAll: true });
 * await bus.agent({ name: "echo", skills: [{ id: "echo" }] }, { echo: (ctx) => ctx.text });
 * const reply = await bus.call("echo", "hello");
 * ```
 */
import * as infra from "./infra/jetstream.js";
import * as mirrors from "./infra/kvmirror.js";

export { attach, connect, Bus, type AttachOptions, type ConnectOptions, type CallOptions, type SendOptions, type NatsAuth } from "./bus.js";
export { Agent, cardOf, type AgentSpec, type SkillSpec, type AgentOptions, type Handler } from "./agent/agent.js";
export type { CapabilityLimits } from "./store/limits.js";
export type { AgentContext, ArtifactOptions, ChildTask } from "./agent/context.js";
export type { WorkerOptions } from "./agent/worker.js";
export { TaskHandle, type SubmitOptions, type TaskAccessOptions } from "./client/task-handle.js";
export { workSubjectOf, type Workload, type WorkloadOptions, type CapabilityWork } from "./store/workload.js";
export type { EdgeView, LinkState, Topology, RegionView } from "./store/topology.js";
export { Schedules, type Schedule, type ScheduleSpec, type ScheduleTiming, type ScheduleQuery } from "./client/schedules.js";
export type { TaskPage, TaskQuery } from "./store/task-snapshots.js";
export { DeadLetters, type DeadLetter, type DeadLetterOptions, type DeadLetterQuery } from "./client/dead-letters.js";
export type { StoredEvent } from "./store/task-log.js";
export { TASK_PRIORITIES, priorityOf, type TaskPriority } from "./wire/task.js";
export { TASK_STATES, isTerminal, isInterrupted, isFinal, endsFollow, stateOf, taskRight, type Task, type TaskState, type TaskStatus, type TaskEvent, type Artifact, type TaskStatusUpdateEvent, type TaskArtifactUpdateEvent } from "./wire/task.js";
export { Session, type SessionEntry } from "./store/session.js";
export { INBOX_CAPABILITY, type InboxHandler, type InboxMessage, type SendReceipt } from "./client/inbox.js";
export { AgentBusError, ErrorCodes, ErrorTable, errorInfo, isAgentBusError, isErrorCode, type ErrorCode, type ErrorCodeInfo } from "./wire/errors.js";
export { Identity, verifySignature, isIdentityId } from "./security/identity.js";
export { Envelopes, Header, type Envelope, type EnvelopeMeta, type EnvelopeOptions } from "./security/envelope.js";
export { E2E, E2E_SCHEME, MAX_E2E_RECIPIENTS, ENCRYPTED_MEDIA_TYPE, EncryptedPartKey, isEncryptedPart, type Sealed } from "./security/e2e.js";
export { Subjects, checkCapability } from "./wire/subjects.js";
export { Registry, type AgentInfo, type AgentRecord, type AgentEvent, type DiscoverQuery, type CapabilitySchemas } from "./store/registry.js";
export { AclStore, type AclStoreOptions } from "./store/aclstore.js";
export { Revocations, type Revocation, type RevocationsOptions } from "./store/revocations.js";
export {
  signEntry, verifyEntry, signTrustLink, followTrust, pinnedTrust, isAdminAt, canonicalJson, TRUST_ROOT_KEY,
  type SignedEntry, type TrustLink, type TrustRecord, type TrustState, type PolicyBucket, type BadPolicy,
} from "./store/policy.js";
export { proveRotation, verifyRotation, rotationKey, type RotationProof } from "./store/rotation.js";
export { capabilityMatches, isAllowed, type AclRule, type AclGroup, type AclPolicy } from "./security/acl.js";
export { toMessage, textOf, dataOf, structuredInput, type Input } from "./wire/message.js";
export { childTrace, traceFromHeaders, traceHeaders, traceIdOf, type TraceContext } from "./wire/trace.js";
export { featuresOf, compareVersions, type ServerFeatures } from "./wire/features.js";
export { createLogger, type Logger } from "./wire/log.js";
export type { Message, Part, Role, AgentCard, AgentCardSignature, AgentSkill, AgentCapabilities, AgentInterface, AgentExtension } from "./wire/protocol.js";
export { NATS_BINDING, A2A_VERSION, natsInterface } from "./wire/protocol.js";
export { cardKey, type CardKey } from "./security/cardsig.js";
export type { JsonSchema } from "./wire/schema.js";
export type { Mirrored } from "./infra/kvmirror.js";

// Infrastructure for adapter and bridge authors: it lives in `agentbus-nats/internal`.
// These names stay here for programs written against earlier versions.
/** @deprecated Import from `agentbus-nats/internal`. */
export const ensureBucket = infra.ensureBucket;
/** @deprecated Import from `agentbus-nats/internal`. */
export const ensureStream = infra.ensureStream;
/** @deprecated Import from `agentbus-nats/internal`. */
export const ensureConsumer = infra.ensureConsumer;
/** @deprecated Import from `agentbus-nats/internal`. */
export const ensurePushBucket = infra.ensurePushBucket;
/** @deprecated Import from `agentbus-nats/internal`. */
export const retryJs = infra.retryJs;
/** @deprecated Import from `agentbus-nats/internal`. */
export const KvMirror = mirrors.KvMirror;
/** @deprecated Import from `agentbus-nats/internal`. */
export type KvMirror<T> = mirrors.KvMirror<T>;
/** @deprecated Import from `agentbus-nats/internal`. */
export const KvWatch = mirrors.KvWatch;
/** @deprecated Import from `agentbus-nats/internal`. */
export type KvWatch = mirrors.KvWatch;
export { readAudit, verifyAuditRecord, type AuditEntry, type ReadAuditOptions } from "./store/audit.js";
export { rolePermissions, grantedCapabilities, inboxPrefixOf, IdentityRoles, type IdentityRole, type NatsPermissions, type PermissionInput, type ImportedCapability } from "./security/permissions.js";
