import { useNatsServer } from "../helpers/nats.js";
import { taskRaceSuite } from "./task-races.js";

const nats = useNatsServer();
taskRaceSuite("single server", () => [nats.server.url], 1);
