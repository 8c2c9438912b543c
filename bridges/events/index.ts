/**
 * Task events and audit records as the bridges read them (the monitor's
 * feeds, the metrics' counters): ordered consumers on the tenant's streams,
 * each event verified by whichever of the bridge's identities it is for.
 * Shared by the bridges, which import it rather than one another.
 */
export { EventReader, type MonitorEvent, type EventFilter, type Feed } from "./reader.js";
export { readStream, type Reading } from "./reading.js";
