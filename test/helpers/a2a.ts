import { Role, type Message as SdkMessage, type SendMessageRequest, type Task as SdkTask } from "@a2a-js/sdk";

/** A user message in the SDK's form, a fresh id, the text as its one part; `extra` overrides fields. */
export const userMessage = (text: string, extra: Partial<SdkMessage> = {}): SdkMessage => ({
  messageId: `m-${Math.random().toString(36).slice(2)}`,
  contextId: "",
  taskId: "",
  role: Role.ROLE_USER,
  parts: [{ content: { $case: "text", value: text }, metadata: undefined, filename: "", mediaType: "" }],
  metadata: undefined,
  extensions: [],
  referenceTaskIds: [],
  ...extra,
});

/** A SendMessage request of `text` for the SDK client. */
export const sendRequest = (text: string, extra: Partial<SdkMessage> = {}, configuration: { returnImmediately?: boolean; historyLength?: number } = {}): SendMessageRequest & { configuration: NonNullable<SendMessageRequest["configuration"]> } => ({
  tenant: "",
  message: userMessage(text, extra),
  configuration: { acceptedOutputModes: [], taskPushNotificationConfig: undefined, historyLength: configuration.historyLength, returnImmediately: configuration.returnImmediately ?? false },
  metadata: undefined,
});

/** The text of a task's artifacts (SDK form), joined. */
export const artifactText = (t: SdkTask): string => t.artifacts.flatMap((a) => a.parts.map((p) => (p.content?.$case === "text" ? p.content.value : ""))).join("");
