import { jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { beforeAll, describe, it } from "vitest";
import { featuresOf } from "../../core/index.js";
import { findNatsServer, natsServerVersion } from "../../nats/index.js";
import { eventually } from "../helpers/bus.js";
import { useNatsCluster } from "../helpers/nats.js";
import { taskRaceSuite } from "./task-races.js";

const nats = useNatsCluster(3);

// Meta leader agreement is not yet placement: until every peer has reported
// in, an R3 stream is refused ("no suitable peers"). Wait for one to fit.
beforeAll(async () => {
  const nc = await connect({ servers: nats.cluster.urls });
  try {
    const jsm = await jetstreamManager(nc);
    await eventually(() => jsm.streams.add({ name: "PLACEMENT_PROBE", subjects: ["placement.probe"], num_replicas: 3 }), 60_000, 250);
    await jsm.streams.delete("PLACEMENT_PROBE");
  } finally {
    await nc.close();
  }
}, 90_000);

// Before 2.9.21 a compare-and-set on a replicated stream is not atomic
// (nats-server#4320): two writers of one task can both win, which is the
// very race these tests close. The library warns on such a cluster; a
// 2.9.10 cluster is not a supported target (a single 2.9.10 server is).
if (featuresOf(natsServerVersion(findNatsServer())).replicatedCas) taskRaceSuite("3-node cluster", () => nats.cluster.urls, 3);
else describe("durable task guarantees under races (3-node cluster)", () => it.skip("needs atomic compare-and-set on replicated streams (nats-server 2.9.21+, nats-server#4320)", () => {}));
