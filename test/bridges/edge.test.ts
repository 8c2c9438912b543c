/**
 * The HTTP edge on real sockets: Host and Origin allow-lists on every route
 * of the gateway and of the standalone bridges (DNS rebinding), open mode
 * for loopback clients only, and bearer JWTs from an OpenID Connect issuer
 * served by a local HTTP server.
 */
import { request } from "node:http";
import { networkInterfaces } from "node:os";
import Fastify, { type FastifyInstance } from "fastify";
import { SignJWT, exportJWK, generateKeyPair, type JWK } from "jose";
import { afterEach, describe, expect, it } from "vitest";
import { createGateway } from "../../bridges/gateway/index.js";
import { a2aBridge, hashApiKey } from "../../bridges/a2a/index.js";
import { mcpHttp } from "../../bridges/mcp/index.js";
import { HostPolicy, isLoopbackHost } from "../../bridges/http/index.js";
import type { Bus } from "../../core/index.js";
import { eventually, useBuses } from "../helpers/bus.js";
import { useHttpServers } from "../helpers/http.js";
import { useNatsServer } from "../helpers/nats.js";

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
  json(): Record<string, unknown>;
}

/** One HTTP request with exactly the given headers (fetch would not send a forged Host). */
function raw(url: string, options: { method?: string; path: string; headers?: Record<string, string>; body?: string; localAddress?: string }): Promise<Answer> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const req = request({ host: hostname, port, method: options.method ?? "GET", path: options.path, headers: options.headers, localAddress: options.localAddress, setHost: !options.headers?.host }, (res) => {
      let body = "";
      res.on("data", (d) => (body += String(d)));
      res.on("end", () => resolve({ status: res.statusCode!, headers: res.headers, body, json: () => JSON.parse(body) as Record<string, unknown> }));
      // An SSE answer never ends: what has come is enough.
      if (String(res.headers["content-type"]).startsWith("text/event-stream")) {
        resolve({ status: res.statusCode!, headers: res.headers, body, json: () => ({}) });
        req.destroy();
      }
    });
    req.on("error", reject);
    req.end(options.body);
  });
}

const sendMessage = (text: string) =>
  JSON.stringify({ jsonrpc: "2.0", id: 7, method: "SendMessage", params: { message: { messageId: `m-${Math.random()}`, role: "ROLE_USER", parts: [{ text }] } } });
const initialize = JSON.stringify({ jsonrpc: "2.0", id: 1, method: "initialize", params: { protocolVersion: "2025-06-18", capabilities: {}, clientInfo: { name: "edge-test", version: "1" } } });

/** Every kind of route of the gateway, with the error body its protocol uses. */
const ROUTES = [
  { method: "POST", path: "/a2a/echo", body: sendMessage("hi"), headers: { "content-type": "application/json", "a2a-version": "1.0" }, rpc: true },
  { method: "POST", path: "/a2a", body: sendMessage("hi"), headers: { "content-type": "application/json", "a2a-version": "1.0" }, rpc: true },
  { method: "GET", path: "/a2a/echo/.well-known/agent-card.json", rpc: true },
  { method: "POST", path: "/mcp", body: initialize, headers: { "content-type": "application/json", accept: "application/json, text/event-stream" }, rpc: true },
  { method: "GET", path: "/.well-known/agent-card.json", rpc: false },
  { method: "GET", path: "/v1/agents", rpc: false },
  { method: "GET", path: "/monitor/", rpc: false },
  { method: "GET", path: "/metrics", rpc: false },
  { method: "GET", path: "/health", rpc: false },
  { method: "GET", path: "/ready", rpc: false },
] as const;

const lanAddress = Object.values(networkInterfaces())
  .flat()
  .find((i) => i && !i.internal && i.family === "IPv4")?.address;

describe("HTTP edge: Host and Origin", () => {
  const nats = useNatsServer();
  const open = useBuses(() => nats.server.url, { drainTimeoutMs: 300 });
  const apps: FastifyInstance[] = [];
  afterEach(async () => {
    await Promise.all(apps.splice(0).map((a) => a.close()));
  });

  async function echoAgent(tenant: string): Promise<Bus> {
    const agentBus = await open({ tenant, insecureAllowAll: true });
    await agentBus.agent({ name: "echo", skills: [{ id: "echo" }] }, { echo: (ctx) => `echo: ${ctx.text}` });
    return agentBus;
  }

  async function gateway(tenant: string, extra: Partial<Parameters<typeof createGateway>[0]> = {}): Promise<{ url: string; port: number; bus: Bus }> {
    const bus = await open({ tenant });
    await eventually(() => bus.discover({ name: "echo", online: true }).length === 1);
    const app = await createGateway({ bus, open: true, ...extra });
    apps.push(app);
    const url = await app.listen({ port: 0, host: "127.0.0.1" });
    return { url, port: Number(new URL(url).port), bus };
  }

  it("refuses a foreign Host (DNS rebinding) on every route, in the route's protocol", async () => {
    await echoAgent("edge1");
    const { url, port } = await gateway("edge1");
    for (const route of ROUTES) {
      const res = await raw(url, { method: route.method, path: route.path, body: "body" in route ? route.body : undefined, headers: { ...("headers" in route ? route.headers : {}), host: `evil.example:${port}` } });
      expect(res.status, route.path).toBe(421);
      const body = res.json();
      if (route.rpc) expect(body, route.path).toMatchObject({ jsonrpc: "2.0", id: null, error: { code: -32000 } });
      else expect(body, route.path).toMatchObject({ code: "HOST_NOT_ALLOWED" });
    }
    // No Host at all: Node's HTTP server refuses it (400) before any route.
    const bare = await new Promise<number>((resolve, reject) => {
      const req = request({ host: "127.0.0.1", port, path: "/health", setHost: false }, (res) => resolve(res.statusCode!));
      req.on("error", reject);
      req.end();
    });
    expect(bare).toBe(400);
  });

  it("refuses a foreign Origin on every route; same-origin and loopback pages on this port pass", async () => {
    await echoAgent("edge2");
    const { url, port } = await gateway("edge2");
    for (const route of ROUTES) {
      const res = await raw(url, { method: route.method, path: route.path, body: "body" in route ? route.body : undefined, headers: { ...("headers" in route ? route.headers : {}), origin: "http://evil.example" } });
      expect(res.status, route.path).toBe(403);
      const body = res.json();
      if (route.rpc) expect(body, route.path).toMatchObject({ jsonrpc: "2.0", id: null, error: { code: -32000 } });
      else expect(body, route.path).toMatchObject({ code: "ORIGIN_NOT_ALLOWED" });
    }
    for (const origin of [`http://127.0.0.1:${port}`, `http://localhost:${port}`, `http://[::1]:${port}`]) {
      const res = await raw(url, { method: "POST", path: "/a2a/echo", body: sendMessage("same origin"), headers: { "content-type": "application/json", "a2a-version": "1.0", origin } });
      expect(res.status, origin).toBe(200);
      expect(res.body).toContain("echo: same origin");
    }
    // Another local web app (another port), a sandboxed page (null) and a look-alike are other origins.
    for (const origin of [`http://localhost:${port + 1}`, "null", `http://127.0.0.1.evil.example:${port}`]) {
      expect((await raw(url, { path: "/v1/agents", headers: { origin } })).status, origin).toBe(403);
    }
  });

  it("serves the loopback names and the address a request came to; requests without Origin pass", async () => {
    await echoAgent("edge3");
    const { url, port } = await gateway("edge3");
    for (const host of ["127.0.0.1", `127.0.0.1:${port}`, `localhost:${port}`, "localhost", `[::1]:${port}`, `LOCALHOST:${port}`]) {
      const res = await raw(url, { path: "/v1/agents", headers: { host } });
      expect(res.status, host).toBe(200);
      expect((res.json() as { agents: Array<{ name: string }> }).agents.map((a) => a.name)).toEqual(["echo"]);
    }
    // An A2A call end to end through an allowed Host, without Origin (as curl and SDKs send it).
    const res = await raw(url, { method: "POST", path: "/a2a/echo", body: sendMessage("ok"), headers: { host: `localhost:${port}`, "content-type": "application/json", "a2a-version": "1.0" } });
    expect(res.status).toBe(200);
    expect(res.json()).toMatchObject({ result: { task: { status: { state: "TASK_STATE_COMPLETED" } } } });
    // Names that only look local are not.
    for (const host of [`localhost.evil.example:${port}`, `127.0.0.2:${port}`, `0.0.0.0:${port}`, `user@localhost:${port}`]) {
      expect((await raw(url, { path: "/health", headers: { host } })).status, host).toBe(421);
    }
  });

  it("configured hosts and origins, and baseUrl's, pass; others stay refused", async () => {
    await echoAgent("edge4");
    const { url, port } = await gateway("edge4", {
      allowedHosts: ["agents.internal", "*.corp.example", "fixed.example:9443"],
      allowedOrigins: ["https://app.example.com"],
      baseUrl: "https://agents.example.com",
    });
    const status = async (headers: Record<string, string>) => (await raw(url, { path: "/v1/agents", headers })).status;
    expect(await status({ host: `agents.internal:${port}` })).toBe(200);
    expect(await status({ host: "agents.internal" })).toBe(200);
    expect(await status({ host: "a.b.corp.example" })).toBe(200);
    expect(await status({ host: "corp.example" })).toBe(421);
    expect(await status({ host: "fixed.example:9443" })).toBe(200);
    expect(await status({ host: "fixed.example:9444" })).toBe(421);
    expect(await status({ host: "agents.example.com" })).toBe(200);
    expect(await status({ host: "evil.example" })).toBe(421);
    expect(await status({ origin: "https://app.example.com" })).toBe(200);
    expect(await status({ origin: "https://agents.example.com" })).toBe(200);
    expect(await status({ origin: "https://other.example.com" })).toBe(403);
    // The gateway's own page on an allowed name is same-origin.
    expect(await status({ host: `agents.internal:${port}`, origin: `http://agents.internal:${port}` })).toBe(200);
    // A bad entry is refused when the gateway is built.
    const bus = await open({ tenant: "edge4" });
    await expect(createGateway({ bus, open: true, allowedHosts: ["not a host/"] })).rejects.toThrow(/not a host name/);
  });

  it("the standalone A2A bridge and MCP server check Host and Origin too", async () => {
    await echoAgent("edge5");
    const bus = await open({ tenant: "edge5" });
    await eventually(() => bus.discover({ name: "echo", online: true }).length === 1);
    const app = Fastify({ forceCloseConnections: true });
    apps.push(app);
    await app.register(a2aBridge, { bus, open: true });
    await app.register(mcpHttp, { bus, open: true });
    const url = await app.listen({ port: 0, host: "127.0.0.1" });
    const port = new URL(url).port;
    const a2a = { method: "POST", path: "/a2a/echo", body: sendMessage("standalone"), headers: { "content-type": "application/json", "a2a-version": "1.0" } };
    const mcp = { method: "POST", path: "/mcp", body: initialize, headers: { "content-type": "application/json", accept: "application/json, text/event-stream" } };
    for (const route of [a2a, mcp]) {
      const rebound = await raw(url, { ...route, headers: { ...route.headers, host: `evil.example:${port}` } });
      expect(rebound.status, route.path).toBe(421);
      expect(rebound.json()).toMatchObject({ jsonrpc: "2.0", id: null, error: { code: -32000 } });
      const foreign = await raw(url, { ...route, headers: { ...route.headers, origin: "http://evil.example" } });
      expect(foreign.status, route.path).toBe(403);
      expect(foreign.json()).toMatchObject({ jsonrpc: "2.0", id: null, error: { code: -32000 } });
      expect((await raw(url, route)).status, route.path).toBe(200);
    }
    // The gateway card is public but still host-checked.
    expect((await raw(url, { path: "/.well-known/agent-card.json", headers: { host: "evil.example" } })).status).toBe(421);
  });

  it.skipIf(!lanAddress)("open mode answers loopback clients only, whatever address it listens on", async () => {
    await echoAgent("edge6");
    const bus = await open({ tenant: "edge6" });
    const app = await createGateway({ bus, open: true });
    apps.push(app);
    await app.listen({ port: 0, host: "0.0.0.0" });
    const port = (app.server.address() as { port: number }).port;
    const local = await raw(`http://127.0.0.1:${port}`, { path: "/v1/agents" });
    expect(local.status).toBe(200);
    // The same server, reached on another interface from that interface's address: not loopback.
    const remote = await raw(`http://${lanAddress}:${port}`, { path: "/v1/agents", localAddress: lanAddress });
    expect(remote.status).toBe(403);
    expect(remote.json()).toMatchObject({ code: "LOOPBACK_ONLY" });
  });

  it("loopback listen addresses, and policy parsing", () => {
    for (const host of ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost", "::ffff:127.0.0.1"]) expect(isLoopbackHost(host), host).toBe(true);
    for (const host of ["0.0.0.0", "::", "192.0.2.1", "example.com", "localhost.example.com"]) expect(isLoopbackHost(host), host).toBe(false);
    expect(() => new HostPolicy({ allowedOrigins: ["ftp://files.example"] })).toThrow(/origin/);
  });
});

describe("HTTP edge: bearer JWTs (OpenID Connect)", () => {
  const nats = useNatsServer();
  const open = useBuses(() => nats.server.url, { drainTimeoutMs: 300 });
  const listen = useHttpServers();
  const apps: FastifyInstance[] = [];
  afterEach(async () => {
    await Promise.all(apps.splice(0).map((a) => a.close()));
  });

  /** A local OpenID Connect issuer: discovery document and JWKS over HTTP, and a signer. */
  async function issuer(discoveryFailures = 0) {
    const { publicKey, privateKey } = await generateKeyPair("ES256");
    const jwk: JWK = { ...(await exportJWK(publicKey)), kid: "k1", alg: "ES256", use: "sig" };
    let requests = 0;
    const server = await listen((req, res) => {
      requests++;
      if (req.url === "/.well-known/openid-configuration" && discoveryFailures-- > 0) return void res.writeHead(500).end();
      const body =
        req.url === "/.well-known/openid-configuration"
          ? { issuer: iss, jwks_uri: `${iss}/jwks`, id_token_signing_alg_values_supported: ["ES256"] }
          : req.url === "/jwks"
            ? { keys: [jwk] }
            : undefined;
      res.writeHead(body ? 200 : 404, { "content-type": "application/json" }).end(JSON.stringify(body ?? {}));
    });
    const iss = server.url;
    const sign = (claims: { sub?: string; aud?: string; exp?: string | number; iss?: string }, key = privateKey, kid = "k1") => {
      const jwt = new SignJWT({}).setProtectedHeader({ alg: "ES256", kid }).setIssuedAt().setIssuer(claims.iss ?? iss).setAudience(claims.aud ?? "agentbus").setExpirationTime(claims.exp ?? "5m");
      if (claims.sub !== undefined) jwt.setSubject(claims.sub);
      return jwt.sign(key);
    };
    return { iss, sign, requests: () => requests };
  }

  it("a valid token acts as the OIDC connection, named oidc:<sub>; wrong audience, expired, bad signature, other issuer: 401", async () => {
    const idp = await issuer();
    const agentBus = await open({ tenant: "oidc1", insecureAllowAll: true });
    await agentBus.agent({ name: "echo", skills: [{ id: "echo" }] }, { echo: (ctx) => `echo: ${ctx.text}` });
    const bus = await open({ tenant: "oidc1" });
    const oidcBus = await open({ tenant: "oidc1" });
    const keyBus = await open({ tenant: "oidc1" });
    await eventually(() => oidcBus.discover({ name: "echo", online: true }).length === 1);
    const app = await createGateway({ bus, apiKeys: [{ name: "ci", sha256: hashApiKey("ci-key"), bus: keyBus }], oidc: { issuer: idp.iss, audience: "agentbus", bus: oidcBus } });
    // Who a request acts as, as the bridges see it.
    app.get("/whoami", async (req) => ({ name: req.caller?.name, id: req.caller?.bus.id }));
    apps.push(app);
    const url = await app.listen({ port: 0, host: "127.0.0.1" });

    const token = await idp.sign({ sub: "alice" });
    const bearer = (t: string) => ({ authorization: `Bearer ${t}` });
    expect((await raw(url, { path: "/whoami", headers: bearer(token) })).json()).toEqual({ name: "oidc:alice", id: oidcBus.id });
    expect((await raw(url, { path: "/whoami", headers: bearer("ci-key") })).json()).toEqual({ name: "ci", id: keyBus.id });
    expect((await raw(url, { path: "/whoami", headers: { "x-api-key": "ci-key" } })).json()).toEqual({ name: "ci", id: keyBus.id });

    // A2A SendMessage end to end, acting as the OIDC connection.
    const sent = await raw(url, { method: "POST", path: "/a2a/echo", body: sendMessage("from alice"), headers: { ...bearer(token), "content-type": "application/json", "a2a-version": "1.0" } });
    expect(sent.status).toBe(200);
    const task = (sent.json() as { result: { task: { id: string; status: { state: string }; artifacts: Array<{ parts: Array<{ text: string }> }> } } }).result.task;
    expect(task.status.state).toBe("TASK_STATE_COMPLETED");
    expect(task.artifacts[0]!.parts[0]!.text).toBe("echo: from alice");
    expect((await oidcBus.task(task.id)).metadata.submitter).toBe(oidcBus.id);
    // The monitor and MCP take the token too.
    expect((await raw(url, { path: "/v1/agents", headers: bearer(token) })).status).toBe(200);
    expect((await raw(url, { method: "POST", path: "/mcp", body: initialize, headers: { ...bearer(token), "content-type": "application/json", accept: "application/json, text/event-stream" } })).status).toBe(200);

    const other = await generateKeyPair("ES256");
    const refused = {
      "wrong audience": await idp.sign({ sub: "alice", aud: "someone-else" }),
      expired: await idp.sign({ sub: "alice", exp: Math.floor(Date.now() / 1000) - 3600 }),
      "bad signature": await idp.sign({ sub: "alice" }, other.privateKey),
      "unknown key": await idp.sign({ sub: "alice" }, other.privateKey, "k2"),
      "other issuer": await idp.sign({ sub: "alice", iss: "https://issuer.example" }),
      "no subject": await idp.sign({}),
      tampered: `${token.split(".")[0]}.${Buffer.from(JSON.stringify({ sub: "mallory", aud: "agentbus", iss: idp.iss, exp: 9999999999 })).toString("base64url")}.${token.split(".")[2]}`,
    };
    for (const [why, bad] of Object.entries(refused)) {
      const rpc = await raw(url, { method: "POST", path: "/a2a/echo", body: sendMessage("x"), headers: { ...bearer(bad), "content-type": "application/json", "a2a-version": "1.0" } });
      expect(rpc.status, why).toBe(401);
      expect(rpc.json(), why).toMatchObject({ jsonrpc: "2.0", id: null, error: { code: -32000 } });
      expect(String(rpc.headers["www-authenticate"]), why).toContain('error="invalid_token"');
      const rest = await raw(url, { path: "/v1/agents", headers: bearer(bad) });
      expect(rest.status, why).toBe(401);
      expect(rest.json(), why).toMatchObject({ code: "UNAUTHORIZED" });
    }
    // No credentials at all: 401 with both schemes offered.
    const none = await raw(url, { path: "/v1/agents" });
    expect(none.status).toBe(401);
    expect(String(none.headers["www-authenticate"])).toMatch(/^Bearer realm="agentbus", ApiKey header="X-API-Key"$/);
    // The card declares both schemes.
    const card = (await raw(url, { path: "/a2a/echo/.well-known/agent-card.json", headers: { "a2a-version": "1.0" } })).json() as { securitySchemes: Record<string, unknown> };
    expect(card.securitySchemes).toMatchObject({ apiKey: {}, oidc: { openIdConnectSecurityScheme: { openIdConnectUrl: `${idp.iss}/.well-known/openid-configuration` } } });
  });

  it("an issuer that cannot be read is 503, and is tried again on the next token", async () => {
    const idp = await issuer(1);
    const bus = await open({ tenant: "oidc2" });
    const oidcBus = await open({ tenant: "oidc2" });
    const token = await idp.sign({ sub: "bob" });
    // Nothing listens at this issuer.
    const down = await createGateway({ bus, oidc: { issuer: "http://127.0.0.1:9", audience: "agentbus", bus: oidcBus } });
    apps.push(down);
    const downUrl = await down.listen({ port: 0, host: "127.0.0.1" });
    const res = await raw(downUrl, { path: "/v1/agents", headers: { authorization: `Bearer ${token}` } });
    expect(res.status).toBe(503);
    expect(res.json()).toMatchObject({ code: "UNAVAILABLE" });
    // The issuer's discovery fails once (HTTP 500), then answers: the next token is verified.
    const flaky = await createGateway({ bus, oidc: { issuer: idp.iss, audience: "agentbus", bus: oidcBus } });
    apps.push(flaky);
    const flakyUrl = await flaky.listen({ port: 0, host: "127.0.0.1" });
    expect((await raw(flakyUrl, { path: "/v1/agents", headers: { authorization: `Bearer ${token}` } })).status).toBe(503);
    expect((await raw(flakyUrl, { path: "/v1/agents", headers: { authorization: `Bearer ${token}` } })).status).toBe(200);

    const direct = await createGateway({ bus, oidc: { issuer: idp.iss, audience: ["other", "agentbus"], jwksUrl: `${idp.iss}/jwks`, bus: oidcBus } });
    apps.push(direct);
    const directUrl = await direct.listen({ port: 0, host: "127.0.0.1" });
    const before = idp.requests();
    expect((await raw(directUrl, { path: "/v1/agents", headers: { authorization: `Bearer ${token}` } })).status).toBe(200);
    expect((await raw(directUrl, { path: "/v1/agents", headers: { authorization: `Bearer ${token}` } })).status).toBe(200);
    expect(idp.requests() - before).toBe(1); // the JWKS only, once: no discovery, keys cached
  });

  it("rate limits count per caller: each token subject and each key has its own budget", async () => {
    const idp = await issuer();
    const agentBus = await open({ tenant: "oidc3", insecureAllowAll: true });
    await agentBus.agent({ name: "echo", skills: [{ id: "echo" }] }, { echo: (ctx) => `echo: ${ctx.text}` });
    const bus = await open({ tenant: "oidc3" });
    const oidcBus = await open({ tenant: "oidc3" });
    await eventually(() => bus.discover({ name: "echo", online: true }).length === 1);
    const app = await createGateway({ bus, oidc: { issuer: idp.iss, audience: "agentbus", bus: oidcBus }, rateLimit: { max: 1, timeWindowMs: 60_000 } });
    apps.push(app);
    const url = await app.listen({ port: 0, host: "127.0.0.1" });
    const send = async (sub: string) =>
      (await raw(url, { method: "POST", path: "/a2a/echo", body: sendMessage(sub), headers: { authorization: `Bearer ${await idp.sign({ sub })}`, "content-type": "application/json", "a2a-version": "1.0" } })).status;
    expect(await send("alice")).toBe(200);
    expect(await send("alice")).toBe(429);
    expect(await send("bob")).toBe(200);
  });
});
