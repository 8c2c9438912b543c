// Tasks: the live list with its filters, and one task's view: its tree of
// sub-tasks across agents, a waterfall of every event and hop, its input and
// result parts, and every stored event with its sender.

import {
  $, el, row, emptyRow, button, getJson, postJson, showError, stateBadge, short, nameOf, shortId, syncOptions,
  TERMINAL, RETRYABLE, fmtTime, fmtDuration, timeEl, timeOf, partsEl, describe, senderNote,
} from "./util.js";

const PAGE = 50;
const MAX_ROWS = 300;

/** The listed tasks by id: the snapshot (with its `view`) and its row. */
const rows = new Map();
let filters = { capability: "", state: "", agent: "", q: "" };
let nextPageToken;
let generation = 0;

/** The task view: the task shown, the ids in its tree, the last tree. */
let openId;
let treeIds = new Set();
let lastTree;

/** A task's `view` (what the console lists), or what its snapshot alone says. */
export function viewOf(task) {
  if (task.view) return task.view;
  const m = task.metadata ?? {};
  const first = task.history?.find((h) => h.role === "ROLE_USER");
  return {
    capability: m.capability,
    agent: m.agent ? { id: m.agent } : undefined,
    createdAt: task.status.timestamp,
    updatedAt: task.status.timestamp,
    endedAt: TERMINAL.includes(task.status.state) ? task.status.timestamp : undefined,
    input: (first?.parts ?? []).map((p) => p.text ?? JSON.stringify(p.data ?? "")).join(" ").slice(0, 200),
    parent: m.parent,
    depth: m.depth,
    retryOf: m.retryOf,
  };
}

const agentLabel = (v) => v.agent?.name ?? (v.agent?.id ? nameOf(v.agent.id) : "–");
const isFinal = (task) => TERMINAL.includes(task.status.state);
const durationOf = (v) => (v.endedAt ? timeOf(v.endedAt) : Date.now()) - timeOf(v.createdAt);

// ---- filters ----

/** The capabilities and agent names the filters offer. */
export function offer(capabilities, names) {
  syncOptions($("filter-capability"), capabilities);
  syncOptions($("filter-agent"), names);
}

function readFilters() {
  filters = { capability: $("filter-capability").value, state: $("filter-state").value, agent: $("filter-agent").value, q: $("filter-q").value.trim() };
}

function query(pageToken) {
  const p = new URLSearchParams({ pageSize: String(PAGE) });
  if (filters.state) p.set("state", filters.state);
  if (filters.capability) p.set("capability", filters.capability);
  if (filters.agent) p.set("agent", filters.agent);
  if (filters.q) p.set("q", filters.q);
  if (pageToken) p.set("pageToken", pageToken);
  return `tasks?${p}`;
}

/** Whether a task (from the live feed) belongs in the list under the filters, as the API filters. */
function matches(task) {
  const v = viewOf(task);
  if (filters.capability && v.capability !== filters.capability) return false;
  if (filters.state && !filters.state.split(",").includes(task.status.state)) return false;
  if (filters.agent && v.agent?.name !== filters.agent && v.agent?.id !== filters.agent) return false;
  if (filters.q) {
    const hay = [v.input, v.capability, v.agent?.name, v.agent?.id, task.id].filter(Boolean).join("\n").toLowerCase();
    if (!hay.includes(filters.q.toLowerCase())) return false;
  }
  return true;
}

// ---- the list ----

/** A task's priority (when not normal), a delayed task's time and a deadline, from its snapshot. */
function whenText(task) {
  const m = task.metadata ?? {};
  const times = [];
  if (m.priority === "high" || m.priority === "low") times.push(`${m.priority} priority`);
  if (typeof m.runAt === "number") times.push(`runs at ${new Date(m.runAt).toLocaleString()}`);
  if (typeof m.deadline === "number") times.push(`deadline ${new Date(m.deadline).toLocaleString()}`);
  return times.join(" · ");
}

const taskLink = (id, text = shortId(id)) => el("a", { href: `#/tasks/${id}`, className: "task-link", title: id, textContent: text, ariaLabel: `task ${id}` });

/** Cancel (a task not yet final) and retry (a failed, canceled or rejected one). */
function actionButtons(task) {
  const out = [];
  if (!isFinal(task)) out.push(button("cancel", () => cancelTask(task.id), { className: "small", dataset: { action: "cancel" } }));
  if (RETRYABLE.includes(task.status.state)) out.push(button("retry", () => retryTask(task.id), { className: "small", dataset: { action: "retry" } }));
  return out;
}

function rowOf(task) {
  const v = viewOf(task);
  const table = $("tasks-table");
  const final = isFinal(task);
  const tr = row(table, [
    el("td", {}, stateBadge(task.status.state)),
    el("td", { className: "task-cell" },
      el("strong", { className: "capability", textContent: v.capability ?? "?" }), " ",
      taskLink(task.id),
      el("div", { className: "when", textContent: whenText(task) }),
      v.parent ? el("div", { className: "muted small" }, "sub-task of ", taskLink(v.parent)) : undefined,
      v.retryOf ? el("div", { className: "muted small" }, "retry of ", taskLink(v.retryOf)) : undefined),
    el("td", { className: "agent", textContent: agentLabel(v) }),
    el("td", { className: "input", title: v.input ?? "", textContent: v.input ?? "" }),
    el("td", { className: "created" }, timeEl(v.createdAt)),
    el("td", { className: "updated" }, v.endedAt ? "ended " : "", timeEl(v.endedAt ?? v.updatedAt)),
    el("td", { className: "duration num", textContent: fmtDuration(durationOf(v)) }),
    el("td", { className: "actions" }, ...actionButtons(task)),
  ], { className: `${final ? "final" : ""}${task.id === openId ? " selected" : ""}`, dataset: { task: task.id, state: task.status.state } });
  // A click anywhere on the row opens the task (the link is the keyboard's way).
  tr.addEventListener("click", (ev) => {
    if (ev.target.closest("a, button")) return;
    location.hash = `#/tasks/${task.id}`;
  });
  return tr;
}

const createdOf = (task) => timeOf(viewOf(task).createdAt) || 0;

/** Puts (or replaces) a task's row, newest first. */
function put(task) {
  const old = rows.get(task.id);
  const tr = rowOf(task);
  rows.set(task.id, { task, tr });
  if (old) {
    old.tr.replaceWith(tr);
    return;
  }
  $("tasks").querySelector("tr.empty")?.remove();
  const created = createdOf(task);
  const before = [...$("tasks").children].find((r) => rows.has(r.dataset.task) && createdOf(rows.get(r.dataset.task).task) < created);
  $("tasks").insertBefore(tr, before ?? null);
  // The oldest go once the list is long.
  while (rows.size > MAX_ROWS) {
    const oldest = [...rows.values()].reduce((a, b) => (createdOf(b.task) < createdOf(a.task) ? b : a));
    oldest.tr.remove();
    rows.delete(oldest.task.id);
  }
}

function drop(id) {
  rows.get(id)?.tr.remove();
  rows.delete(id);
}

function showCount(totalSize) {
  $("tasks-count").textContent = `${rows.size} shown${typeof totalSize === "number" ? ` of ${totalSize}` : ""}${Object.values(filters).some(Boolean) ? " (filtered)" : ""}`;
  if (!rows.size) $("tasks").replaceChildren(emptyRow($("tasks-table"), "no tasks"));
}

/** The first page under the filters, replacing the list. */
export async function loadTasks() {
  const mine = ++generation;
  const { tasks, nextPageToken: next, totalSize } = await getJson(query());
  if (mine !== generation) return; // the filters changed meanwhile
  rows.clear();
  $("tasks").replaceChildren();
  for (const task of tasks) put(task);
  nextPageToken = next;
  $("tasks-more").hidden = !next;
  showCount(totalSize);
}

async function loadMore() {
  const mine = generation;
  const { tasks, nextPageToken: next, totalSize } = await getJson(query(nextPageToken));
  if (mine !== generation) return;
  for (const task of tasks) if (!rows.has(task.id)) put(task);
  nextPageToken = next;
  $("tasks-more").hidden = !next;
  showCount(totalSize);
}

/** Snapshots being fetched, and when a task the filters left out was last looked at. */
const fetching = new Map();
const leftOut = new Map();

/** Reads a task's snapshot again and shows it (or drops it when the filters no longer take it). */
function refresh(id) {
  if (fetching.has(id)) return fetching.get(id);
  const p = getJson(`tasks/${encodeURIComponent(id)}`)
    .then(({ task }) => {
      if (matches(task)) {
        leftOut.delete(id);
        put(task);
        showCount();
      } else {
        leftOut.set(id, Date.now());
        if (rows.has(id)) {
          drop(id);
          showCount();
        }
      }
      return task;
    })
    .catch(() => undefined) // another caller's task, or gone
    .finally(() => setTimeout(() => fetching.delete(id), 200));
  fetching.set(id, p);
  return p;
}

/** One event of the live feed: a new task is added, a known one's state updated at once and its snapshot read again. */
export function onEvent(e) {
  if (openId && treeIds.has(e.taskId)) refreshTreeSoon();
  const status = e.event.statusUpdate?.status;
  const known = rows.get(e.taskId);
  if (known) {
    if (!status) return;
    const task = { ...known.task, status: { ...known.task.status, state: status.state, timestamp: e.time } };
    const v = viewOf(known.task);
    task.view = { ...v, updatedAt: e.time, ...(TERMINAL.includes(status.state) && { endedAt: e.time }) };
    put(task);
    refresh(e.taskId);
    return;
  }
  const lastLook = leftOut.get(e.taskId);
  if (lastLook && (!status || Date.now() - lastLook < 2000)) return;
  refresh(e.taskId);
}

async function cancelTask(id) {
  const { task } = await postJson(`tasks/${encodeURIComponent(id)}/cancel`);
  notice(`Task ${shortId(id)} ${short(task?.status?.state ?? "TASK_STATE_CANCELED")}.`);
  await refresh(id);
  if (openId) refreshTreeSoon(0);
}

async function retryTask(id) {
  const { task } = await postJson(`tasks/${encodeURIComponent(id)}/retry`);
  notice("Retried as task ", taskLink(task.id, task.id), ".");
  await refresh(task.id);
}

function notice(...content) {
  $("tasks-status").hidden = false;
  $("tasks-status").replaceChildren(...content);
}

// ---- one task: tree, waterfall, parts, events ----

let treeTimer;
function refreshTreeSoon(delay = 250) {
  clearTimeout(treeTimer);
  treeTimer = setTimeout(() => loadTree().catch(showError), delay);
}

async function loadTree() {
  const id = openId;
  if (!id) return;
  const tree = await getJson(`tasks/${encodeURIComponent(id)}/tree`);
  if (id !== openId) return;
  lastTree = tree;
  treeIds = new Set(tree.nodes.map((n) => n.task.id));
  renderTaskView(tree);
}

function metaItem(term, ...value) {
  return [el("dt", { textContent: term }), el("dd", {}, ...value)];
}

function renderTaskView(tree) {
  const rootNode = tree.nodes.find((n) => n.task.id === tree.root) ?? tree.nodes[0];
  const task = rootNode.task;
  const v = viewOf(task);
  const m = task.metadata ?? {};
  $("task-view").dataset.task = task.id;
  $("task-view").dataset.state = task.status.state;
  $("task-title").replaceChildren(el("span", { textContent: v.capability ?? "task" }), " ", stateBadge(task.status.state));
  $("task-meta").replaceChildren(
    ...metaItem("task", el("code", { textContent: task.id })),
    ...metaItem("agent", agentLabel(v)),
    ...metaItem("submitter", el("span", { title: m.submitter ?? "", textContent: nameOf(m.submitter) }), m.caller ? ` for ${m.caller}` : ""),
    ...metaItem("context", el("code", { textContent: task.contextId ?? "–" })),
    ...metaItem("created", timeEl(v.createdAt)),
    ...metaItem(v.endedAt ? "ended" : "updated", timeEl(v.endedAt ?? v.updatedAt)),
    ...metaItem("duration", fmtDuration(durationOf(v))),
    ...(whenText(task) ? metaItem("when", whenText(task)) : []),
    ...(v.parent ? metaItem("parent", taskLink(v.parent, v.parent)) : []),
    ...(v.retryOf ? metaItem("retry of", taskLink(v.retryOf, v.retryOf)) : []),
  );
  $("task-actions").replaceChildren(...actionButtons(task));

  // Input: the first user message; result: the status message and each artifact, every part on its own.
  const input = task.history?.find((h) => h.role === "ROLE_USER");
  $("task-input").replaceChildren(...(input ? partsEl(input.parts) : [el("p", { className: "muted", textContent: v.input || "–" })]));
  const result = [];
  const message = task.status.message;
  if (message?.parts?.length) result.push(el("div", { className: `status-message ${task.status.state}` }, el("h4", { textContent: `${short(task.status.state)}:` }), ...partsEl(message.parts)));
  for (const a of task.artifacts ?? []) {
    result.push(el("div", { className: "artifact", dataset: { artifact: a.artifactId } }, el("h4", { textContent: a.name ?? a.artifactId }), ...partsEl(a.parts)));
  }
  $("task-result").replaceChildren(...(result.length ? result : [el("p", { className: "muted", textContent: isFinal(task) ? "no result" : "not yet" })]));

  renderTree(tree);
  renderWaterfall(tree);
  renderEvents(tree);
}

/** The tree of sub-tasks, nested by parent. */
function renderTree(tree) {
  const children = new Map();
  for (const n of tree.nodes) {
    const key = n.task.id === tree.root ? "" : n.parentId ?? "";
    if (!children.has(key)) children.set(key, []);
    children.get(key).push(n);
  }
  const item = (n) => {
    const v = viewOf(n.task);
    const kids = children.get(n.task.id) ?? [];
    return el("li", { dataset: { task: n.task.id, depth: String(n.depth) } },
      el("div", { className: "node" },
        stateBadge(n.task.status.state), " ",
        el("strong", { className: "capability", textContent: v.capability ?? "?" }), " ",
        el("span", { className: "agent", textContent: `· ${agentLabel(v)}` }), " ",
        n.task.id === tree.root ? el("code", { title: n.task.id, textContent: shortId(n.task.id) }) : taskLink(n.task.id),
        el("span", { className: "muted small", textContent: ` ${fmtDuration(durationOf(v))}` })),
      kids.length ? el("ul", {}, ...kids.map(item)) : undefined);
  };
  const root = tree.nodes.find((n) => n.task.id === tree.root);
  $("task-tree").replaceChildren(...(root ? [item(root)] : []));
}

/** Bars from creation to end per task, a tick per event with its sender, on one time axis. */
function renderWaterfall(tree) {
  const times = [];
  for (const n of tree.nodes) {
    const v = viewOf(n.task);
    times.push(timeOf(v.createdAt), ...(n.events ?? []).map((e) => timeOf(e.time)));
    times.push(v.endedAt ? timeOf(v.endedAt) : Date.now());
  }
  const valid = times.filter(Number.isFinite);
  const t0 = Math.min(...valid);
  const span = Math.max(Math.max(...valid) - t0, 1);
  const pct = (t) => `${((Math.max(t, t0) - t0) / span) * 100}%`;
  const rowsOut = tree.nodes.map((n) => {
    const v = viewOf(n.task);
    const start = timeOf(v.createdAt);
    const end = v.endedAt ? timeOf(v.endedAt) : Date.now();
    const senders = [...new Set((n.events ?? []).map((e) => nameOf(e.from)))];
    const label = el("div", { className: "wf-label" },
      el("strong", { textContent: v.capability ?? "?" }), " ",
      el("span", { className: "muted", textContent: `· ${agentLabel(v)}` }),
      el("div", { className: "muted small" }, short(n.task.status.state), senders.length ? ` · from ${senders.join(", ")}` : ""));
    label.style.paddingLeft = `${n.depth * 0.9}rem`;
    const bar = el("div", { className: `wf-bar ${n.task.status.state}${v.endedAt ? "" : " running"}`, title: `${v.capability}: created ${fmtTime(v.createdAt)}${v.endedAt ? `, ended ${fmtTime(v.endedAt)}` : ", still running"} (${fmtDuration(end - start)})` });
    bar.style.left = pct(start);
    bar.style.width = `max(3px, ${((end - Math.max(start, t0)) / span) * 100}%)`;
    const ticks = (n.events ?? []).map((e) => {
      const d = describe(e.event);
      const tick = el("span", {
        className: `wf-tick ${d.kind}`,
        title: `${fmtTime(e.time)} (+${fmtDuration(timeOf(e.time) - t0)}) from ${nameOf(e.from)}: ${d.nodes.map((x) => (typeof x === "string" ? x : x.textContent)).join("")} — ${senderNote(e)}`,
        dataset: { sequence: String(e.sequence), from: e.from ?? "" },
      });
      tick.style.left = pct(timeOf(e.time));
      return tick;
    });
    return el("div", { className: "wf-row", dataset: { task: n.task.id } },
      label,
      el("div", { className: "wf-track" }, bar, ...ticks),
      el("div", { className: "wf-dur num", textContent: fmtDuration(end - start) }));
  });
  const axis = el("div", { className: "wf-row wf-axis", ariaHidden: "true" },
    el("div", { className: "wf-label" }),
    el("div", { className: "wf-track" }, ...[0, 0.5, 1].map((f) => {
      const s = el("span", { textContent: f ? `+${fmtDuration(span * f)}` : fmtTime(new Date(t0).toISOString()) });
      s.style.left = `${f * 100}%`;
      return s;
    })),
    el("div", { className: "wf-dur" }));
  $("waterfall").replaceChildren(...rowsOut, axis);
}

/** Every stored event of the tree, in time order, with the task it belongs to and its sender. */
function renderEvents(tree) {
  const byTask = new Map(tree.nodes.map((n) => [n.task.id, n]));
  const all = tree.nodes.flatMap((n) => n.events ?? []).sort((a, b) => timeOf(a.time) - timeOf(b.time) || a.sequence - b.sequence);
  const t0 = Math.min(...tree.nodes.map((n) => timeOf(viewOf(n.task).createdAt)).filter(Number.isFinite));
  const several = tree.nodes.length > 1;
  $("task-events").replaceChildren(...all.map((e) => {
    const d = describe(e.event);
    const node = byTask.get(e.taskId);
    return el("li", { className: `event ${d.kind}`, title: senderNote(e), dataset: { task: e.taskId, sequence: String(e.sequence) } },
      timeEl(e.time), " ",
      el("span", { className: "muted offset", textContent: Number.isFinite(t0) ? `+${fmtDuration(timeOf(e.time) - t0)}` : "" }), " ",
      several ? el("span", { className: "event-task", textContent: `${viewOf(node?.task ?? { status: {}, metadata: {} }).capability ?? "?"} ${shortId(e.taskId)}` }) : "",
      several ? " " : "",
      el("span", { className: "from", title: `${e.from ?? ""} — ${senderNote(e)}`, textContent: `from ${nameOf(e.from)}` }), " ",
      el("span", { className: "what" }, ...d.nodes));
  }));
}

/** The tasks tab is shown: with the task view when `id` is given (`#/tasks/<id>`), else the list alone. */
export function show(id) {
  if (id === openId) return;
  openId = id;
  for (const r of rows.values()) r.tr.classList.toggle("selected", r.task.id === id);
  $("task-view").hidden = !id;
  $("view-tasks").classList.toggle("with-task", Boolean(id));
  if (!id) {
    lastTree = undefined;
    treeIds = new Set();
    return;
  }
  $("task-view").dataset.task = id;
  $("task-title").textContent = `Task ${shortId(id)}`;
  for (const part of ["task-meta", "task-actions", "task-input", "task-result", "task-tree", "waterfall", "task-events"]) $(part).replaceChildren();
  loadTree().then(() => $("task-view").scrollIntoView?.({ block: "nearest" })).catch(showError);
}

export function start() {
  const form = $("task-filters");
  let typing;
  form.addEventListener("change", (ev) => {
    if (ev.target.id === "filter-q") return;
    readFilters();
    loadTasks().catch(showError);
  });
  $("filter-q").addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(() => {
      readFilters();
      loadTasks().catch(showError);
    }, 300);
  });
  form.addEventListener("submit", (ev) => ev.preventDefault());
  form.addEventListener("reset", () =>
    setTimeout(() => {
      readFilters();
      loadTasks().catch(showError);
    }));
  $("tasks-more").addEventListener("click", () => loadMore().catch(showError));
  loadTasks().catch(showError);
  // Durations of running tasks tick; an open tree not yet final is read again now and then (new sub-tasks).
  setInterval(() => {
    for (const { task, tr } of rows.values()) {
      if (!isFinal(task)) tr.querySelector(".duration").textContent = fmtDuration(durationOf(viewOf(task)));
    }
  }, 1000);
  setInterval(() => {
    if (openId && lastTree && lastTree.nodes.some((n) => !isFinal(n.task))) loadTree().catch(showError);
  }, 2000);
}
