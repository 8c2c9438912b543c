/**
 * Responder process for bench/call: one bus connection that serves
 *  - a raw NATS echo on `bench.raw` (replies with the request's bytes;
 *    plain server only: a secured agent may not subscribe there),
 *  - the same with one MAC pair on `bench.rawmac`: the request's
 *    HMAC-SHA256 (key `BENCH_MAC_KEY`, hex, over subject and body, in a
 *    `Mac` header) is checked, and the reply carries its own (plain server
 *    only), and
 *  - a bus agent `bench-echo` with capability `echo` (replies with the parts),
 * so both paths cross the same process boundary and the same client
 * connection. Started by bench/call/run.ts as
 *   node --import tsx bench/call/responder.ts <nats-url> <tenant>
 * On a secured server the parent passes the issued agent identity in the
 * environment (bench/secure.ts). Writes `READY <agent-id>` on stdout once
 * both are served; exits on stdin close or SIGTERM.
 */
import { createHmac, createSecretKey, timingSafeEqual } from "node:crypto";
import { headers as natsHeaders } from "@nats-io/nats-core";
import { connect, createLogger } from "../../core/index.js";
import { exitWithParent } from "../lib.js";
import { awaitGrant, benchConnectOptions, secureChild } from "../secure.js";

const [url, tenant = "bench"] = process.argv.slice(2);
if (!url) {
  process.stderr.write("usage: responder.ts <nats-url> [tenant]\n");
  process.exit(2);
}

const bus = await connect(benchConnectOptions({ servers: url, tenant, name: "bench-responder", logger: createLogger({ level: "error" }) }));

if (!secureChild()) {
  bus.nc.subscribe("bench.raw", {
    callback: (err, msg) => {
      if (!err) msg.respond(msg.data);
    },
  });
  const key = createSecretKey(Buffer.from(process.env.BENCH_MAC_KEY ?? "", "hex"));
  bus.nc.subscribe("bench.rawmac", {
    callback: (err, msg) => {
      if (err) return;
      const given = Buffer.from(msg.headers?.get("Mac") ?? "", "base64url");
      const expected = createHmac("sha256", key).update(msg.subject).update(msg.data).digest();
      if (given.length !== expected.length || !timingSafeEqual(given, expected)) return;
      const h = natsHeaders();
      h.set("Mac", createHmac("sha256", key).update(msg.reply ?? "").update(msg.data).digest("base64url"));
      msg.respond(msg.data, { headers: h });
    },
  });
}
await bus.agent({ name: "bench-echo", skills: [{ id: "echo" }] }, { echo: (ctx) => ctx.userMessage.parts });
await awaitGrant(bus);
await bus.nc.flush();
process.stdout.write(`READY ${bus.id}\n`);

exitWithParent(() => bus.close());
