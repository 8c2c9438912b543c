// Dead letters (requeue, discard) and the audit trail.

import { $, el, row, emptyRow, button, getJson, postJson, request, showError, nameOf, shortId, syncOptions, timeEl } from "./util.js";

/** A refusal by the server's permissions (403 DENIED) is said in the table, not as an error of the page. */
async function readable(table, path) {
  try {
    return await getJson(path);
  } catch (err) {
    if (err.code !== "DENIED") throw err;
    table.tBodies[0].replaceChildren(emptyRow(table, `not shown: ${err.message}`));
    return undefined;
  }
}

const REFRESH_MS = 10_000;

/** The capabilities the dead-letter filter offers. */
export function offer(capabilities) {
  syncOptions($("dlq-capability"), capabilities);
}

const taskLink = (id) => el("a", { href: `#/tasks/${id}`, className: "task-link", title: id, textContent: shortId(id) });

function dlqNotice(...content) {
  $("dlq-status").hidden = false;
  $("dlq-status").replaceChildren(...content);
}

async function requeue(d) {
  const { task } = await postJson(`dead-letters/${d.sequence}/requeue`);
  dlqNotice(`Requeued ${d.capability} as task `, el("a", { href: `#/tasks/${task.id}`, className: "task-link requeued", title: task.id, textContent: task.id }), ".");
  await loadDeadLetters();
}

/** Dead letters whose discard button was clicked once, until when a second click discards (kept across refreshes). */
const armed = new Map();
const isArmed = (sequence) => (armed.get(sequence) ?? 0) > Date.now();

function showArmed(b, on) {
  b.dataset.armed = String(on);
  b.textContent = on ? "confirm discard" : "discard";
}

/** Discard asks once more on the same button: a second click within 5 s removes the dead letter for good. */
async function discard(d, b) {
  if (!isArmed(d.sequence)) {
    armed.set(d.sequence, Date.now() + 5000);
    showArmed(b, true);
    setTimeout(() => {
      const current = document.querySelector(`#dead-letters tr[data-sequence="${d.sequence}"] button[data-action="discard"]`);
      if (current && !isArmed(d.sequence)) showArmed(current, false);
    }, 5050);
    return;
  }
  armed.delete(d.sequence);
  await request(`dead-letters/${d.sequence}`, { method: "DELETE" });
  dlqNotice(`Discarded dead letter ${d.sequence} (${d.capability}).`);
  await loadDeadLetters();
}

export async function loadDeadLetters() {
  const cap = $("dlq-capability").value;
  const answer = await readable($("dead-letters-table"), `dead-letters${cap ? `?capability=${encodeURIComponent(cap)}` : ""}`);
  if (!answer) return;
  const { deadLetters } = answer;
  if (!cap) {
    $("dlq-count").hidden = deadLetters.length === 0;
    $("dlq-count").textContent = String(deadLetters.length);
    $("dlq-count").title = `${deadLetters.length} dead letters`;
  }
  const table = $("dead-letters-table");
  const rows = deadLetters.map((d) =>
    row(table, [
      el("td", {}, timeEl(d.time)),
      el("td", {}, el("code", { textContent: d.capability })),
      el("td", {}, d.taskId ? taskLink(d.taskId) : "–"),
      el("td", { className: "reason", textContent: d.reason ?? "" }),
      el("td", { className: "num", textContent: String(d.deliveries ?? "–") }),
      el("td", { className: "input", title: d.input ?? "", textContent: d.input ?? "" }),
      el("td", { title: d.submitter ?? "", textContent: d.submitter ? nameOf(d.submitter) : "–" }),
      el("td", { className: "actions" },
        button("requeue", () => requeue(d), { className: "small", dataset: { action: "requeue" } }),
        button(isArmed(d.sequence) ? "confirm discard" : "discard", (b) => discard(d, b), { className: "small danger", dataset: { action: "discard", armed: String(isArmed(d.sequence)) } })),
    ], { dataset: { sequence: String(d.sequence), capability: d.capability, ...(d.taskId && { task: d.taskId }) } }));
  $("dead-letters").replaceChildren(...(rows.length ? rows : [emptyRow(table, "no dead letters")]));
}

const kinds = new Set(["denied", "unknown_sender", "bad_signature", "replayed", "expired", "revoked", "depth_exceeded"]);

export async function loadAudit() {
  const kind = $("audit-kind").value.trim().toLowerCase();
  const answer = await readable($("audit-table"), `audit?limit=100${kind ? `&kind=${encodeURIComponent(kind)}` : ""}`);
  if (!answer) return;
  const { records } = answer;
  for (const r of records) kinds.add(r.kind);
  const list = $("audit-kinds");
  if (list.options.length !== kinds.size) list.replaceChildren(...[...kinds].sort().map((k) => el("option", { value: k })));
  const table = $("audit-table");
  const rows = records.map((r) =>
    row(table, [
      el("td", {}, timeEl(r.time)),
      el("td", { className: "kind", textContent: r.kind }),
      el("td", {}, r.code ? el("code", { className: "code", textContent: r.code }) : "–"),
      el("td", { title: r.from ?? "", textContent: r.from ? nameOf(r.from) : "–" }),
      el("td", { className: "message", textContent: r.message ?? r.record?.reason ?? "" }),
      el("td", { className: r.verified ? "sig-ok" : "sig-bad", textContent: r.verified ? "valid" : "not valid" }),
    ], { dataset: { sequence: String(r.sequence), kind: r.kind, ...(r.code && { code: r.code }) } }));
  $("audit").replaceChildren(...(rows.length ? rows : [emptyRow(table, "no records")]));
}

export function start() {
  $("dlq-capability").addEventListener("change", () => loadDeadLetters().catch(showError));
  let typing;
  $("audit-kind").addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(() => loadAudit().catch(showError), 300);
  });
  $("dlq-filters").addEventListener("submit", (ev) => ev.preventDefault());
  $("audit-filters").addEventListener("submit", (ev) => ev.preventDefault());
  // The dead-letter count shows in the nav at all times; the audit trail is read while it is on screen.
  loadDeadLetters().catch(showError);
  setInterval(() => {
    if (!$("view-dead-letters").hidden || !$("dlq-capability").value) loadDeadLetters().catch(showError);
    if (!$("view-audit").hidden) loadAudit().catch(showError);
  }, REFRESH_MS);
}
