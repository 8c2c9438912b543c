import { useNatsCluster } from "../helpers/nats.js";
import { taskRaceSuite } from "./task-races.js";

const nats = useNatsCluster(3);
taskRaceSuite("3-node cluster", () => nats.cluster.urls, 3);
