import type { FastifyRequest } from "fastify";

/** Where requests may come from: `Host` names and `Origin`s besides the defaults. */
export interface HostPolicyOptions {
  /**
   * More `Host` names to serve: `name` (any port), `name:port`, `*.domain`
   * (its subdomains) or `*` (any host: no check). Always served: `localhost`,
   * `127.0.0.1`, `[::1]`, the address a request arrived on, and the host of
   * `baseUrl`.
   */
  allowedHosts?: string[];
  /**
   * More origins whose pages may call (`https://app.example.com`), or `*`.
   * Always allowed: requests without `Origin`, same-origin requests, the
   * loopback names on the port a request arrived on, and `baseUrl`'s origin.
   */
  allowedOrigins?: string[];
  /** The public base URL: its host and origin are allowed. */
  baseUrl?: string;
}

/** A host name (lower case, IPv6 in brackets) and an optional port. */
interface HostName {
  hostname: string;
  port?: number;
}

/** Host names a local client reaches a server by. */
export const LOOPBACK_NAMES = ["localhost", "127.0.0.1", "[::1]"] as const;

const HOST = /^(\[[0-9a-f:.]+\]|[a-z0-9_.-]+?)\.?(?::(\d{1,5}))?$/;

/** Parses a `Host` header value (or an allow-list entry); undefined when it is not one. */
export function parseHost(value: string): HostName | undefined {
  const m = HOST.exec(value.trim().toLowerCase());
  if (!m) return undefined;
  const port = m[2] === undefined ? undefined : Number(m[2]);
  if (port !== undefined && port > 65535) return undefined;
  return { hostname: m[1]!, port };
}

/** True for an address (`127.0.0.1`, `::1`, `::ffff:127.0.0.1`) of the loopback interface. */
export function isLoopbackAddress(address: string | undefined): boolean {
  if (!address) return false;
  const a = address.toLowerCase().replace(/^\[|\]$/g, "");
  return a === "::1" || /^(::ffff:)?127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(a);
}

/** True when a listen address (`127.0.0.1`, `localhost`, `::1`) binds the loopback interface only. */
export function isLoopbackHost(host: string): boolean {
  return host.toLowerCase() === "localhost" || isLoopbackAddress(host);
}

/** An address as a `Host` name: IPv6 in brackets, IPv4-mapped IPv6 as IPv4. */
function addressAsHostname(address: string | undefined): string | undefined {
  if (!address) return undefined;
  const a = address.toLowerCase();
  const mapped = /^::ffff:(\d{1,3}(?:\.\d{1,3}){3})$/.exec(a);
  if (mapped) return mapped[1];
  return a.includes(":") ? `[${a}]` : a;
}

const defaultPort = (protocol: string) => (protocol === "https:" ? 443 : 80);

/**
 * The `Host` and `Origin` allow-list that keeps web pages from driving a
 * bridge through DNS rebinding (a page's own name resolving to this
 * server: its requests carry that name as `Host`) or through cross-origin
 * requests (`Origin`).
 */
export class HostPolicy {
  readonly #anyHost: boolean;
  readonly #hosts: Array<HostName & { wildcard: boolean }>;
  readonly #anyOrigin: boolean;
  readonly #origins: Set<string>;

  /** @throws {TypeError} when an entry is not a host name or an origin. */
  constructor(options: HostPolicyOptions = {}) {
    const hosts = [...LOOPBACK_NAMES, ...(options.allowedHosts ?? [])];
    const origins = [...(options.allowedOrigins ?? [])];
    if (options.baseUrl) {
      const base = new URL(options.baseUrl);
      hosts.push(base.host);
      origins.push(base.origin);
    }
    this.#anyHost = hosts.includes("*");
    this.#hosts = hosts
      .filter((h) => h !== "*")
      .map((h) => {
        const wildcard = h.startsWith("*.");
        const parsed = parseHost(wildcard ? h.slice(2) : h);
        if (!parsed) throw new TypeError(`not a host name: ${h}`);
        return { ...parsed, wildcard };
      });
    this.#anyOrigin = origins.includes("*");
    this.#origins = new Set(
      origins
        .filter((o) => o !== "*")
        .map((o) => {
          const url = new URL(o);
          if (url.protocol !== "http:" && url.protocol !== "https:") throw new TypeError(`not an http(s) origin: ${o}`);
          return url.origin;
        }),
    );
  }

  /** True when the request's `Host` names this server. */
  hostAllowed(req: FastifyRequest): boolean {
    if (this.#anyHost) return true;
    const header = req.headers.host;
    const host = header === undefined ? undefined : parseHost(header);
    if (!host) return false;
    // The address the request arrived on, as an IP literal: a name an attacker's page cannot take.
    if (host.hostname === addressAsHostname(req.socket.localAddress)) return true;
    return this.#hosts.some(
      (h) => (h.wildcard ? host.hostname.endsWith(`.${h.hostname}`) : host.hostname === h.hostname) && (h.port === undefined || h.port === (host.port ?? 80)),
    );
  }

  /** True when the request has no `Origin`, or one allowed to call this server. */
  originAllowed(req: FastifyRequest): boolean {
    const origin = req.headers.origin;
    if (origin === undefined || this.#anyOrigin) return true;
    let url: URL;
    try {
      url = new URL(origin);
    } catch {
      return false; // `null` (sandboxed pages, files) and anything else that is not a URL
    }
    if ((url.protocol !== "http:" && url.protocol !== "https:") || url.origin !== origin.toLowerCase().replace(/\/$/, "")) return false;
    if (this.#origins.has(url.origin)) return true;
    const port = url.port === "" ? defaultPort(url.protocol) : Number(url.port);
    // Same origin: the page was served by this host.
    const host = req.headers.host === undefined ? undefined : parseHost(req.headers.host);
    if (host && host.hostname === url.hostname && (host.port ?? defaultPort(url.protocol)) === port) return true;
    // A page on a loopback name of this very port.
    return (LOOPBACK_NAMES as readonly string[]).includes(url.hostname) && port === req.socket.localPort;
  }
}
