/**
 * Keeps deploy/regions true to the code: each region's overlay of
 * deploy/kubernetes renders (kubectl kustomize) into the base's objects
 * plus a gateway Service and a KEDA ScaledObject; its nats.conf is the
 * base's with the cluster named as the region and a gateway to every
 * region, and passes `nats-server -t` with the authority's accounts; every
 * agentbus container gets the region and the regions from the ConfigMap;
 * and the scaler watches the consumer the region's workers of the scaled
 * agent really share, on the stream and account the bus really uses.
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { parseAllDocuments } from "yaml";
import { AuthorityState } from "../../authority/index.js";
import { Subjects } from "../../core/index.js";
import { workConsumer } from "../../core/store/workload.js";
import { renderConfig } from "../../nats/index.js";
import { findNatsServer, natsServerVersion } from "../../nats/index.js";
import { loadManifests, parseNatsConf, repo, type Manifest, type NatsConf } from "./manifests.js";

const regionsDir = join(repo, "deploy/regions");
const regions = readdirSync(regionsDir).sort();
const base = loadManifests();
const scratch = mkdtempSync(join(tmpdir(), "agentbus-regions-"));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));
const env = (m: Manifest[]) => base.find((x) => x.kind === "ConfigMap" && x.metadata.name === "agentbus-env")!.data!;
const tenant = env(base).AGENTBUS_TENANT!;

/** The overlay as kubectl renders it; undefined without kubectl. */
function rendered(region: string): Manifest[] | undefined {
  const out = spawnSync("kubectl", ["kustomize", join(regionsDir, region)], { encoding: "utf8" });
  if (out.error) return undefined;
  expect(out.status, out.stderr).toBe(0);
  return parseAllDocuments(out.stdout).map((d) => d.toJS() as Manifest);
}

describe("deploy/regions", () => {
  it("has two regions, each overlay naming the same regions", () => {
    expect(regions).toEqual(["east", "west"]);
    for (const r of regions) expect(readFileSync(join(regionsDir, r, "kustomization.yaml"), "utf8")).toContain(`AGENTBUS_REGIONS=${regions.join(",")}`);
  });

  for (const region of regions) {
    describe(region, () => {
      const natsConfText = readFileSync(join(regionsDir, region, "nats.conf"), "utf8");
      const conf = parseNatsConf(natsConfText);

      it("nats.conf: the base's, with the cluster and the gateway named as the region and a gateway to every region", () => {
        const baseConf = parseNatsConf(base.find((m) => m.metadata.name === "nats-config")!.data!["nats.conf"]!);
        const { cluster, gateway, ...rest } = conf;
        const { cluster: baseCluster, ...baseRest } = baseConf;
        expect(rest).toEqual(baseRest);
        expect(cluster).toEqual({ ...(baseCluster as NatsConf), name: region });
        expect((gateway as NatsConf).name).toBe(region);
        expect(((gateway as NatsConf).gateways as unknown as Array<{ name: string }>).map((g) => g.name).sort()).toEqual(regions);
      });

      it.skipIf(!findNatsServer() || Number(natsServerVersion(findNatsServer()).split(".")[1]) < 10)("nats.conf passes nats-server -t with the authority's accounts", () => {
        const dir = mkdtempSync(join(scratch, `${region}-`));
        const state = new AuthorityState(join(dir, "authority"));
        state.addTenant(tenant, regions);
        writeFileSync(join(dir, "nats-accounts.conf"), renderConfig(state.serverConfig()));
        writeFileSync(join(dir, "nats.conf"), natsConfText);
        const result = spawnSync(findNatsServer(), ["-t", "-c", join(dir, "nats.conf")], { env: { SERVER_NAME: "nats-0", PATH: process.env.PATH ?? "" }, encoding: "utf8" });
        expect(result.status, `${result.stdout}${result.stderr}`).toBe(0);
      });

      it("renders the base's objects plus its gateway Service and ScaledObject, federated by the ConfigMap, the gateway port open", () => {
        const objects = rendered(region);
        if (!objects) return;
        const names = (list: Manifest[]) => list.map((m) => `${m.kind}/${m.metadata.name}`).sort();
        expect(names(objects)).toEqual([...names(base), "ScaledObject/agentbus-writer", "Service/nats-gateway"].sort());
        expect(env(objects)).toBeDefined();
        const cm = objects.find((m) => m.kind === "ConfigMap" && m.metadata.name === "agentbus-env")!;
        expect(cm.data).toMatchObject({ AGENTBUS_REGION: region, AGENTBUS_REGIONS: regions.join(","), AGENTBUS_TENANT: tenant });
        expect(objects.find((m) => m.metadata.name === "nats-config")!.data!["nats.conf"]).toBe(natsConfText);
        const nats = objects.find((m) => m.kind === "StatefulSet" && m.metadata.name === "nats")!;
        const ports = nats.spec.template.spec.containers[0].ports as Array<{ name: string; containerPort: number }>;
        expect(ports.find((p) => p.name === "gateway")?.containerPort).toBe(Number(String((conf.gateway as NatsConf).listen).split(":").at(-1)));
        const gatewayService = objects.find((m) => m.kind === "Service" && m.metadata.name === "nats-gateway")!;
        expect(gatewayService.spec.ports[0].targetPort).toBe("gateway");
        for (const m of objects.filter((x) => x.kind !== "Namespace")) expect((m.metadata as { namespace?: string }).namespace, `${m.kind}/${m.metadata.name}`).toBe("agentbus");
      });

      it("KEDA scales the writer on the consumer its workers share, on this region's work stream, in the tenant's account", () => {
        const [scaled] = parseAllDocuments(readFileSync(join(regionsDir, region, "keda.yaml"), "utf8")).map((d) => d.toJS() as Manifest);
        const target = base.find((m) => m.kind === "Deployment" && m.metadata.name === scaled!.spec.scaleTargetRef.name)!;
        expect(target, "the scaled Deployment is in the base").toBeDefined();
        const [trigger] = scaled!.spec.triggers as Array<{ type: string; metadata: Record<string, string> }>;
        expect(trigger!.type).toBe("nats-jetstream");
        // The writer agent serves `write` (agents/writer.ts).
        const plane = new Subjects("mesh", tenant, region);
        expect(trigger!.metadata).toMatchObject({ account: tenant, stream: plane.stream("WORK"), consumer: workConsumer("write") });
        const [host, port] = trigger!.metadata.natsServerMonitoringEndpoint!.split(":");
        expect(host!.split(".")[0]).toBe("nats-headless");
        expect(Number(port)).toBe(8222);
      });
    });
  }
});
