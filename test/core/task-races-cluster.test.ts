import { jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { beforeAll } from "vitest";
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

taskRaceSuite("3-node cluster", () => nats.cluster.urls, 3);
