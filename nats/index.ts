/**
 * agentbus NATS launcher: start real nats-server processes (single node,
 * JetStream cluster, or gateway supercluster with leaf-node edge sites) for
 * tests and `agentbus up`.
 *
 * @example
 * const server = await startServer();
 * const nc = await connect({ servers: server.url });
 * // ...
 * await server.cleanup();
 */
export { FALLBACK_LOCATIONS, PROJECT_LOCATIONS, NatsServerNotFoundError, findNatsServer, natsServerVersion } from "./binary.js";
export { mergeConfig, renderConfig, type ConfigValue } from "./config.js";
export {
  NatsServerStartError,
  configFileText,
  serverConfig,
  startServer,
  type NatsServer,
  type ServerConfigInput,
  type ServerOptions,
} from "./server.js";
export {
  clusterBlock,
  startCluster,
  type ClusterBlockInput,
  type ClusterOptions,
  type NatsCluster,
} from "./cluster.js";
export {
  APP_USER,
  EDGE_LOCAL_SUBJECTS,
  HUB_DOMAIN,
  SYS_USER,
  accountsBlock,
  edgeBlock,
  gatewayBlock,
  hubLeafBlock,
  leafUser,
  startSupercluster,
  type GatewayBlockInput,
  type LeafLinks,
  type NatsEdge,
  type NatsSupercluster,
  type SuperclusterOptions,
} from "./supercluster.js";
export { startLink, type Link } from "./link.js";
export { waitForMetaLeader } from "./meta.js";
export { monitorJson } from "./monitor.js";
export { PortInUseError, freePort, freePorts } from "./ports.js";
export type { UserPass, UserPassword } from "./ready.js";
export { DEFAULT_LOCAL_URL, chooseNats, type ChooseNatsOptions, type ChosenNats } from "./local.js";
