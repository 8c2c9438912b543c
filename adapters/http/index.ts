/**
 * Plain HTTP endpoints served as bus capabilities: each task's input is
 * POSTed as JSON, the JSON, text or SSE response becomes the task's outputs
 * (the convention is documented on {@link serveHttp}).
 *
 * @example
 * ```ts
 * const http = await serveHttp(await connect({ tenant: "acme" }), {
 *   capability: "summarize",
 *   url: "http://127.0.0.1:9000/summarize",
 *   headers: { authorization: `Bearer ${process.env.SUMMARIZER_TOKEN}` },
 *   timeoutMs: 60_000,
 *   retries: 3,
 * });
 * // bus.call("summarize", …) / bus.submit("summarize", …) now reach the endpoint
 * await http.stop();
 * ```
 */
export { serveHttp, type HttpAdapterOptions, type HttpAgent, type HttpBreakerOptions } from "./serve.js";
