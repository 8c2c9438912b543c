// The agentbus monitor page: agents and their liveness, recent tasks with
// their live events, and a form that sends a message and streams the reply.
// It talks to the monitor's API next to it (../v1/...). No build step.

const api = (path) => new URL(`../v1/${path}`, location.href);
const $ = (id) => document.getElementById(id);
const TERMINAL = ["TASK_STATE_COMPLETED", "TASK_STATE_FAILED", "TASK_STATE_CANCELED", "TASK_STATE_REJECTED"];

let key = sessionStorage.getItem("agentbus.key") ?? "";
let started = false;

/** A DOM element with properties and children (text is always set as text, never as HTML). */
function el(tag, props = {}, ...children) {
  const e = Object.assign(document.createElement(tag), props);
  e.append(...children);
  return e;
}

const short = (state) => state.replace("TASK_STATE_", "").toLowerCase().replace("_", " ");
const partsText = (parts = []) =>
  parts.map((p) => p.text ?? (p.data !== undefined ? JSON.stringify(p.data) : p.url ?? "")).join("");

function describe(event) {
  if (event.statusUpdate) {
    const { state, message } = event.statusUpdate.status;
    return message ? `${short(state)}: ${partsText(message.parts)}` : short(state);
  }
  if (event.artifactUpdate) {
    const a = event.artifactUpdate.artifact;
    return `artifact ${a.name ?? a.artifactId}: ${partsText(a.parts)}`;
  }
  if (event.message) return `message: ${partsText(event.message.parts)}`;
  return JSON.stringify(event);
}

function showError(err) {
  $("error").hidden = !err;
  $("error").textContent = err ? String(err.message ?? err) : "";
}

/** fetch on the API with the key; a refusal becomes an Error with the answer's {code, message}. */
async function request(path, init = {}) {
  const res = await fetch(api(path), { ...init, headers: { ...(key && { "X-API-Key": key }), ...init.headers } });
  if (res.ok) return res;
  const body = await res.json().catch(() => ({}));
  if (res.status === 401) $("key-form").hidden = false;
  throw new Error(`${body.code ?? res.status}: ${body.message ?? res.statusText}`);
}

/** Server-Sent Events from a fetch response: yields {type, data} with data parsed as JSON. */
async function* readSse(res) {
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let type = "message";
      let data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) type = line.slice(6).trim();
        else if (line.startsWith("data:")) data += line.slice(5).trimStart();
      }
      if (data) yield { type, data: JSON.parse(data) };
    }
  }
}

// ---- agents ----

async function loadAgents() {
  const { agents } = await (await request("agents")).json();
  const rows = agents.map((a) => {
    const row = el("tr", {},
      el("td", {}, el("strong", { textContent: a.name }), el("div", { className: "muted", textContent: a.description ?? "" })),
      el("td", { textContent: a.capabilities.join(", ") }),
      el("td", { className: a.online ? "online" : "offline", textContent: a.online ? `online (${a.instances}${a.regions?.length ? ` in ${a.regions.join(", ")}` : ""})` : "offline" }),
      el("td", { textContent: a.lastSeen ? new Date(a.lastSeen).toLocaleTimeString() : "–" }));
    row.dataset.agent = a.name;
    return row;
  });
  $("agents").replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { colSpan: 4, className: "muted", textContent: "no agents registered" }))]));
  // The form offers what online agents serve.
  const caps = [...new Set(agents.filter((a) => a.online).flatMap((a) => a.capabilities))].sort();
  const select = $("capability");
  if (caps.join() !== [...select.options].map((o) => o.value).join()) {
    const current = select.value;
    select.replaceChildren(...caps.map((c) => el("option", { value: c, textContent: c })));
    if (caps.includes(current)) select.value = current;
  }
}

// ---- regions ----

/** The regions, shown once there is more than one (or the bus is federated): agents, instances and the link to each. */
async function loadTopology() {
  const { federated, regions, hub, edges = [] } = await (await request("topology")).json();
  $("regions-section").hidden = !federated && regions.length < 2 && !hub;
  $("hub").hidden = !hub;
  if (hub) $("hub").textContent = `Edge site: hub ${hub.domain}${hub.region ? ` (${hub.region})` : ""}, link ${hub.up ? "up" : "down"}; ${hub.waiting} task${hub.waiting === 1 ? "" : "s"} waiting to be forwarded`;
  // The regions, then the edge sites this region hears from.
  const sites = [...regions, ...edges.map((e) => ({ ...e, edge: true }))];
  $("regions").replaceChildren(...sites.map((r) => {
    const link = r.link === undefined ? (r.local ? "here" : "–") : `${r.link.up ? "up" : "down"}${r.link.lastHeardMs === undefined ? "" : ` · heard ${(r.link.lastHeardMs / 1000).toFixed(1)} s ago`}${r.link.error ? ` · ${r.link.error}` : ""}`;
    const row = el("tr", {},
      el("td", { textContent: r.local ? `${r.name} (here)` : r.edge ? `${r.name} (edge site)` : r.name }),
      el("td", { textContent: String(r.agents) }),
      el("td", { textContent: String(r.instances) }),
      el("td", { className: r.link === undefined ? "" : r.link.up ? "online" : "offline", textContent: link }));
    row.dataset.region = r.name;
    if (r.edge) row.dataset.edge = "true";
    return row;
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
  const { capabilities, delayed, schedules, me } = await (await request("work")).json();
  $("schedule-new").hidden = schedules === undefined;
  const rows = capabilities.map((c) => {
    const row = el("tr", {}, el("td", { textContent: c.capability }), ...[c.pending.high, c.pending.normal, c.pending.low, c.inProgress].map((n) => el("td", { textContent: String(n) })));
    row.dataset.capability = c.capability;
    return row;
  });
  $("work").replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { colSpan: 5, className: "muted", textContent: "none queued" }))]));
  $("delayed").textContent = delayed ? `${delayed} delayed task${delayed === 1 ? "" : "s"} waiting for their time` : "";
  $("schedules-table").hidden = !schedules?.length;
  $("schedules").replaceChildren(...(schedules ?? []).map((s) => {
    const row = el("tr", {},
      el("td", { textContent: s.id }),
      el("td", { textContent: s.capability }),
      el("td", { textContent: s.cron ? `${s.cron}${s.timeZone ? ` (${s.timeZone})` : ""}` : `every ${s.everyMs / 1000} s` }),
      el("td", { className: s.paused ? "muted" : "", textContent: s.paused ? "paused" : new Date(s.nextRunAt).toLocaleString() }),
      el("td", {}, ...(s.creator === me ? [s.paused ? "resume" : "pause", "delete"].map((action) => {
        const b = el("button", { type: "button", className: "small", textContent: action });
        b.dataset.action = action;
        b.addEventListener("click", () => scheduleAction(s.id, action).catch(showError));
        return b;
      }) : [])));
    row.dataset.schedule = s.id;
    return row;
  }));
}

// ---- tasks and their live events ----

const tasks = new Map(); // id -> {li, state, events, seen}

function taskItem(id, capability) {
  let t = tasks.get(id);
  if (t) return t;
  const state = el("span", { className: "state" });
  const when = el("span", { className: "when" });
  const head = el("div", { className: "task-head", title: "click: every stored event" }, state, el("strong", { textContent: capability ?? "?" }), el("code", { textContent: id }), when);
  const events = el("ol", { className: "events" });
  const li = el("li", {}, head, events);
  li.dataset.task = id;
  head.addEventListener("click", () => loadTask(id).catch(showError));
  t = { li, state, when, events, seen: new Set() };
  tasks.set(id, t);
  $("tasks").prepend(li);
  for (const [oldest, old] of tasks) {
    if (tasks.size <= 50) break;
    old.li.remove();
    tasks.delete(oldest);
  }
  return t;
}

/** A task's priority (when not normal), a delayed task's time and a deadline, from its snapshot. */
function showTimes(t, task) {
  const m = task.metadata ?? {};
  const times = [];
  if (m.priority === "high" || m.priority === "low") times.push(`${m.priority} priority`);
  if (typeof m.runAt === "number") times.push(`runs at ${new Date(m.runAt).toLocaleString()}`);
  if (typeof m.deadline === "number") times.push(`deadline ${new Date(m.deadline).toLocaleString()}`);
  t.when.textContent = times.join(" · ");
}

function setState(t, state) {
  t.state.textContent = short(state);
  t.state.className = `state ${state}`;
  t.li.classList.toggle("final", TERMINAL.includes(state));
}

function addEvent(t, e) {
  if (t.seen.has(e.sequence)) return;
  t.seen.add(e.sequence);
  const line = el("li", { textContent: `${new Date(e.time).toLocaleTimeString()} ${describe(e.event)}` });
  if (!e.verified) line.append(el("span", { className: "unverified", title: `sent as ${e.from}, not verifiable by this monitor`, textContent: "unverified" }));
  t.events.append(line);
  if (e.event.statusUpdate) setState(t, e.event.statusUpdate.status.state);
}

async function loadTasks() {
  const { tasks: list } = await (await request("tasks?pageSize=20")).json();
  // Tasks the live feed already showed keep their (newer) state.
  for (const task of list.reverse()) {
    if (tasks.has(task.id)) continue;
    const t = taskItem(task.id, task.metadata.capability);
    showTimes(t, task);
    setState(t, task.status.state);
  }
}

async function loadTask(id) {
  const { task, events } = await (await request(`tasks/${encodeURIComponent(id)}`)).json();
  const t = taskItem(id, task.metadata.capability);
  showTimes(t, task);
  t.events.replaceChildren();
  t.seen.clear();
  for (const e of events) addEvent(t, e);
  setState(t, task.status.state);
}

let lastSequence = 0;

function onFeedEvent(e) {
  lastSequence = e.sequence;
  addEvent(taskItem(e.taskId, e.capability), e);
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
  if (!key) {
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
  $("reply-task").textContent = "–";
  const append = (text) => $("reply").append(text);
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
        if (message) append(`[${short(state)}] ${partsText(message.parts)}\n`);
      } else if (e.artifactUpdate) append(partsText(e.artifactUpdate.artifact.parts));
      else if (e.message) append(`${partsText(e.message.parts)}\n`);
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
  key = $("key").value.trim();
  sessionStorage.setItem("agentbus.key", key);
  $("key-form").hidden = true;
  start();
});

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
  loadWork().catch(showError);
  setInterval(() => loadWork().catch(showError), 3000);
  loadTopology().catch(showError);
  setInterval(() => loadTopology().catch(showError), 3000);
  loadTasks().catch(showError);
  follow();
}

start();
