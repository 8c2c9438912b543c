// The agentbus console: agents with their load, queued work and schedules,
// regions, a live task list with each task's tree and timeline, charts over
// time, dead letters and the audit trail. It talks to the monitor's API next
// to it (../v1/...). Vanilla ES modules, no build step.

import { $, api, el, row, emptyRow, button, request, getJson, readSse, showError, session, agentNames, short, fmtTime, ago, timeEl, partEl } from "./util.js";
import * as tasks from "./tasks.js";
import * as charts from "./charts.js";
import * as ops from "./ops.js";

let started = false;

// ---- navigation ----

const VIEWS = ["overview", "tasks", "charts", "dead-letters", "audit"];

/** `#/<view>` or `#/tasks/<task id>`. */
function route() {
  const [, view = "overview", id] = location.hash.match(/^#\/([\w-]+)(?:\/([\w-]+))?/) ?? [];
  const current = VIEWS.includes(view) ? view : "overview";
  for (const v of document.querySelectorAll(".view")) v.hidden = v.dataset.view !== current;
  for (const a of document.querySelectorAll("#nav a")) {
    if (a.dataset.view === current) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  if (!started) return;
  if (current === "tasks") tasks.show(id);
  if (current === "charts") charts.shown();
  if (current === "dead-letters") ops.loadDeadLetters().catch(showError);
  if (current === "audit") ops.loadAudit().catch(showError);
}
window.addEventListener("hashchange", route);

// ---- agents and their load ----

let lastAgents = [];
let lastWork = { capabilities: [] };

/** One row per agent name: its online registrations together, or its latest offline one. */
function groupAgents(list) {
  const byName = new Map();
  for (const a of list) {
    if (!byName.has(a.name)) byName.set(a.name, []);
    byName.get(a.name).push(a);
  }
  return [...byName].sort(([a], [b]) => a.localeCompare(b)).map(([name, regs]) => {
    const online = regs.filter((a) => a.online);
    const seen = (a) => Date.parse(a.lastSeen ?? "") || 0;
    const shown = online.length ? online : [regs.reduce((a, b) => (seen(b) > seen(a) ? b : a))];
    const first = shown[0];
    return {
      name,
      ids: shown.map((a) => a.id),
      online: online.length > 0,
      description: first.description,
      version: first.version,
      instances: shown.reduce((n, a) => n + (a.online ? a.instances ?? 0 : 0), 0),
      regions: [...new Set(shown.flatMap((a) => a.regions ?? []))].sort(),
      capabilities: [...new Set(shown.flatMap((a) => a.capabilities))].sort(),
      inFlight: shown.some((a) => typeof a.inFlight === "number") ? shown.reduce((n, a) => n + (a.online ? a.inFlight ?? 0 : 0), 0) : undefined,
      lastSeen: shown.map((a) => a.lastSeen).filter(Boolean).sort().at(-1),
    };
  });
}

const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;

/** The load on one capability, from /v1/work: queued by priority, running, workers pulling. */
function loadText(cap) {
  const w = lastWork.capabilities.find((c) => c.capability === cap);
  if (!w) return "no queued work";
  const queued = w.pending.high + w.pending.normal + w.pending.low;
  return [`${queued} queued`, `${w.inProgress} running`, ...(typeof w.workers === "number" ? [plural(w.workers, "worker")] : [])].join(" · ");
}

function renderAgents() {
  const table = $("agents-table");
  const groups = groupAgents(lastAgents);
  const rows = groups.map((g) => {
    const status = el("td", { className: g.online ? "online" : "offline" },
      el("span", { textContent: g.online ? "online" : "offline" }),
      g.lastSeen
        ? el("div", { className: "muted small" }, g.online ? "seen " : "last seen ", timeEl(g.lastSeen), ` (${ago(g.lastSeen)})`)
        : g.online ? undefined : el("div", { className: "muted small", title: "it stopped cleanly: no heartbeat is kept", textContent: "last seen: not known" }));
    const caps = el("td", {}, el("ul", { className: "caps" }, ...g.capabilities.map((c) => {
      const li = el("li", {}, el("code", { textContent: c }), " ", el("span", { className: "load muted", textContent: loadText(c) }));
      li.dataset.capability = c;
      return li;
    })));
    return row(table, [
      el("td", { title: g.ids.join("\n") }, el("strong", { textContent: g.name }), g.version ? el("span", { className: "muted small", textContent: ` v${g.version}` }) : undefined, el("div", { className: "muted", textContent: g.description ?? "" })),
      status,
      el("td", { className: "num instances", textContent: String(g.instances) }),
      el("td", { className: "regions", textContent: g.regions.join(", ") || "–" }),
      el("td", { className: "num in-flight", textContent: g.inFlight === undefined ? "–" : String(g.inFlight) }),
      caps,
    ], { className: g.online ? "" : "dimmed", dataset: { agent: g.name } });
  });
  $("agents").replaceChildren(...(rows.length ? rows : [emptyRow(table, "no agents registered")]));
}

async function loadAgents() {
  const { agents } = await getJson("agents");
  lastAgents = agents;
  for (const a of agents) agentNames.set(a.id, a.name);
  renderAgents();
  // The forms offer what online agents serve; the filters, every agent and capability known.
  const online = [...new Set(agents.filter((a) => a.online).flatMap((a) => a.capabilities))].sort();
  const select = $("capability");
  if (online.join() !== [...select.options].map((o) => o.value).join()) {
    const current = select.value;
    select.replaceChildren(...online.map((c) => el("option", { value: c, textContent: c })));
    if (online.includes(current)) select.value = current;
  }
  offerFilters();
}

/** The capabilities and agent names the filters offer. */
function offerFilters() {
  const caps = [...new Set([...lastAgents.flatMap((a) => a.capabilities), ...lastWork.capabilities.map((c) => c.capability)])].sort();
  const names = [...new Set(lastAgents.map((a) => a.name))].sort();
  tasks.offer(caps, names);
  charts.offer(caps);
  ops.offer(caps);
}

// ---- regions ----

/** The regions, shown once there is more than one (or the bus is federated): agents, instances and the link to each. */
async function loadTopology() {
  const { federated, regions, hub, edges = [] } = await getJson("topology");
  $("regions-section").hidden = !federated && regions.length < 2 && !hub;
  $("hub").hidden = !hub;
  if (hub) $("hub").textContent = `Edge site: hub ${hub.domain}${hub.region ? ` (${hub.region})` : ""}, link ${hub.up ? "up" : "down"}; ${plural(hub.waiting, "task")} waiting to be forwarded`;
  // The regions, then the edge sites this region hears from.
  const table = $("regions-table");
  const sites = [...regions, ...edges.map((e) => ({ ...e, edge: true }))];
  $("regions").replaceChildren(...sites.map((r) => {
    const link = r.link === undefined ? (r.local ? "here" : "–") : `${r.link.up ? "up" : "down"}${r.link.lastHeardMs === undefined ? "" : ` · heard ${(r.link.lastHeardMs / 1000).toFixed(1)} s ago`}${r.link.error ? ` · ${r.link.error}` : ""}`;
    return row(table, [
      r.local ? `${r.name} (here)` : r.edge ? `${r.name} (edge site)` : r.name,
      String(r.agents),
      String(r.instances),
      el("td", { className: r.link === undefined ? "" : r.link.up ? "online" : "offline", textContent: link }),
    ], { dataset: { region: r.name, ...(r.edge && { edge: "true" }) } });
  }));
}

// ---- queued work and schedules ----

/** Pause, resume or delete one of the schedules the page's identity created, then show the list again. */
async function scheduleAction(id, action) {
  const path = `schedules/${encodeURIComponent(id)}${action === "delete" ? "" : `/${action}`}`;
  await request(path, { method: action === "delete" ? "DELETE" : "POST" });
  await loadWork();
}

async function loadWork() {
  lastWork = await getJson("work");
  const { capabilities, delayed, schedules, me } = lastWork;
  $("schedule-new").hidden = schedules === undefined;
  const table = $("work-table");
  const rows = capabilities.map((c) =>
    row(table, [c.capability, c.pending.high, c.pending.normal, c.pending.low, c.inProgress, c.workers ?? "–"].map((v, i) => el("td", { className: i ? "num" : "", textContent: String(v) })), { dataset: { capability: c.capability } }));
  $("work").replaceChildren(...(rows.length ? rows : [emptyRow(table, "none queued")]));
  $("delayed").textContent = delayed ? `${plural(delayed, "delayed task")} waiting for ${delayed === 1 ? "its" : "their"} time` : "";
  const sTable = $("schedules-table");
  sTable.hidden = !schedules?.length;
  $("schedules").replaceChildren(...(schedules ?? []).map((s) =>
    row(sTable, [
      s.id,
      s.capability,
      s.cron ? `${s.cron}${s.timeZone ? ` (${s.timeZone})` : ""}` : `every ${s.everyMs / 1000} s`,
      el("td", { className: s.paused ? "muted" : "", textContent: s.paused ? "paused" : fmtTime(new Date(s.nextRunAt).toISOString()) }),
      el("td", { className: "actions" }, ...(s.creator === me ? [s.paused ? "resume" : "pause", "delete"].map((action) =>
        button(action, () => scheduleAction(s.id, action), { className: "small", dataset: { action } })) : [])),
    ], { dataset: { schedule: s.id } })));
  renderAgents();
  offerFilters();
}

// ---- the live feed ----

let lastSequence = 0;

function onFeedEvent(e) {
  lastSequence = Math.max(lastSequence, e.sequence);
  tasks.onEvent(e);
}

function feedStatus(text, live) {
  $("feed-status").textContent = text;
  $("feed-status").classList.toggle("live", live);
}

/** The live feed: EventSource without a key; with one, fetch (EventSource cannot send headers). Resumes after a drop. */
function follow() {
  const path = lastSequence ? `events?from=${lastSequence + 1}` : "events";
  const retry = () => {
    feedStatus("reconnecting…", false);
    setTimeout(follow, 2000);
  };
  if (!session.key) {
    const source = new EventSource(api(path));
    source.onopen = () => feedStatus("live", true);
    source.onmessage = (m) => onFeedEvent(JSON.parse(m.data));
    source.onerror = () => {
      source.close();
      retry();
    };
    return;
  }
  (async () => {
    const res = await request(path);
    feedStatus("live", true);
    for await (const { type, data } of readSse(res)) {
      if (type === "message") onFeedEvent(data);
    }
  })().catch(showError).finally(retry);
}

// ---- send a message and stream the reply ----

function setReplyState(state) {
  $("reply-state").textContent = short(state);
  $("reply-state").className = `state ${state}`;
}

$("send-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  showError();
  $("send").disabled = true;
  $("reply").textContent = "";
  $("reply-data").replaceChildren();
  $("reply-task").textContent = "–";
  // Text parts stream into the reply; a data part is shown as formatted JSON under it, on its own.
  const append = (parts, prefix = "", suffix = "") => {
    const text = parts.filter((p) => p.text !== undefined).map((p) => p.text).join("");
    if (text || prefix) $("reply").append(`${prefix}${text}${suffix}`);
    for (const p of parts.filter((p) => p.text === undefined)) $("reply-data").append(partEl(p));
  };
  try {
    const body = JSON.stringify({ capability: $("capability").value, text: $("text").value });
    const res = await request("send", { method: "POST", headers: { "content-type": "application/json" }, body });
    for await (const { type, data } of readSse(res)) {
      if (type === "error") throw new Error(`${data.code}: ${data.message}`);
      if (data.task) {
        $("reply-task").textContent = data.task.id;
        setReplyState(data.task.status.state);
        continue;
      }
      const e = data.event;
      if (e.statusUpdate) {
        const { state, message } = e.statusUpdate.status;
        setReplyState(state);
        if (message) append(message.parts, `[${short(state)}] `, "\n");
      } else if (e.artifactUpdate) append(e.artifactUpdate.artifact.parts);
      else if (e.message) append(e.message.parts, "", "\n");
    }
  } catch (err) {
    showError(err);
  } finally {
    $("send").disabled = false;
  }
});

$("schedule-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  showError();
  try {
    const body = { id: $("schedule-id").value, capability: $("schedule-capability").value, text: $("schedule-text").value, cron: $("schedule-cron").value, ...($("schedule-tz").value && { timeZone: $("schedule-tz").value }) };
    await request("schedules", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
    ev.target.reset();
    await loadWork();
  } catch (err) {
    showError(err);
  }
});

$("key-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  session.setKey($("key").value.trim());
  $("key-form").hidden = true;
  start();
});

/** Runs `load` now and every `ms`, its errors shown on the page. */
function every(ms, load) {
  load().catch(showError);
  setInterval(() => load().catch(showError), ms);
}

async function start() {
  try {
    await loadAgents();
  } catch (err) {
    showError(err);
    return; // a key is needed first (the form is shown), or the API is down
  }
  showError();
  if (started) return;
  started = true;
  setInterval(() => loadAgents().catch(showError), 3000);
  every(3000, loadWork);
  every(3000, loadTopology);
  tasks.start();
  charts.start();
  ops.start();
  follow();
  route();
}

route();
start();
