import { useNatsServer } from "../helpers/nats.js";
import { busSuite } from "./suite.js";

const nats = useNatsServer();
busSuite("single server", () => [nats.server.url], 1);
