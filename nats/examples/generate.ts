/**
 * Regenerates the example configs in this folder from the same functions
 * the launcher uses, with conventional ports instead of random ones:
 *
 *   npx tsx nats/examples/generate.ts
 *
 * test/nats/examples.test.ts fails when the files drift from this output.
 */
import { writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { clusterBlock } from "../cluster.js";
import { mergeConfig } from "../config.js";
import { configFileText, serverConfig } from "../server.js";
import { HUB_DOMAIN, accountsBlock, edgeBlock, gatewayBlock, hubLeafBlock } from "../supercluster.js";

/** File name → contents of every example config. */
export function exampleConfigs(): Record<string, string> {
  const single = serverConfig({
    name: "agentbus-1",
    port: 4222,
    httpPort: 8222,
    storeDir: "/tmp/agentbus-nats/single",
    jetstream: true,
  });
  // Node 1 of a 3-node cluster whose route ports are 6222..6224.
  const clusterNode = serverConfig({
    name: "agentbus-n1",
    port: 4222,
    httpPort: 8222,
    storeDir: "/tmp/agentbus-nats/agentbus-n1",
    jetstream: true,
    config: clusterBlock({ name: "agentbus", routePort: 6222, peerRoutePorts: [6223, 6224] }),
  });
  const gatewayConfig = mergeConfig(
    mergeConfig(clusterBlock({ name: "east", routePort: 6222, peerRoutePorts: [] }), accountsBlock(true)),
    gatewayBlock({ name: "east", gatewayPort: 7222, regions: { east: [7222], west: [7223] } }),
  );
  // The single node of region "east" in a two-region supercluster.
  const gatewayNode = serverConfig({
    name: "east-n1",
    port: 4222,
    httpPort: 8222,
    storeDir: "/tmp/agentbus-nats/east-n1",
    jetstream: true,
    config: gatewayConfig,
  });
  // The same node as the hub of an edge site: JetStream domain "hub", and a leaf node port edges dial (not advertised: edges come through their own link).
  const hubNode = serverConfig({
    name: "east-n1",
    port: 4222,
    httpPort: 8222,
    storeDir: "/tmp/agentbus-nats/east-n1",
    jetstream: true,
    config: mergeConfig(mergeConfig(gatewayConfig, { jetstream: { domain: HUB_DOMAIN } }), hubLeafBlock(7422)),
  });
  // An edge site "shop": a leaf node with its own JetStream domain, linked to the hub's leaf port; what the bus stores stays on each side of the link.
  const edgeNode = serverConfig({
    name: "shop-n1",
    port: 4232,
    httpPort: 8232,
    storeDir: "/tmp/agentbus-nats/shop-n1",
    jetstream: true,
    config: mergeConfig(accountsBlock(true), edgeBlock("shop", 7422, true)),
  });
  return {
    "single.conf": configFileText(single),
    "cluster-node.conf": configFileText(clusterNode),
    "gateway-node.conf": configFileText(gatewayNode),
    "hub-node.conf": configFileText(hubNode),
    "edge-node.conf": configFileText(edgeNode),
  };
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const dir = fileURLToPath(new URL(".", import.meta.url));
  for (const [name, text] of Object.entries(exampleConfigs())) writeFileSync(dir + name, text);
}
