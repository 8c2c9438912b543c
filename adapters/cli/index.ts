/**
 * Command-line programs served as bus capabilities: one process per task,
 * the input on stdin or as an argument, stdout and stderr streamed as
 * artifact chunks, cancel and timeout kill the process (see {@link serveCommand}).
 *
 * @example
 * ```ts
 * const coder = await serveCommand(await connect({ tenant: "acme" }), {
 *   capability: "code",
 *   command: "opencode",
 *   args: ["run"],
 *   input: "arg",
 *   cwd: "/srv/checkouts/app",
 *   timeoutMs: 30 * 60_000,
 * });
 * await coder.stop();
 * ```
 */
export { serveCommand, type CommandAdapterOptions, type CommandAgent } from "./command.js";
