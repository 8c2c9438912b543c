import { useNatsCluster } from "../helpers/nats.js";
import { busSuite } from "./suite.js";

const nats = useNatsCluster(3);
busSuite("3-node cluster", () => nats.cluster.urls, 3);
