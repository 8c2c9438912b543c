// Shared helpers of the console: the API with its key, DOM building,
// formatting of states, times, durations and message parts.

export const api = (path) => new URL(`../v1/${path}`, location.href);
export const $ = (id) => document.getElementById(id);

export const TERMINAL = ["TASK_STATE_COMPLETED", "TASK_STATE_FAILED", "TASK_STATE_CANCELED", "TASK_STATE_REJECTED"];
/** States a task can be retried from. */
export const RETRYABLE = ["TASK_STATE_FAILED", "TASK_STATE_CANCELED", "TASK_STATE_REJECTED"];

/** The API key (kept for this browser tab) and a hook run when the API asks for one. */
export const session = {
  key: sessionStorage.getItem("agentbus.key") ?? "",
  setKey(k) {
    this.key = k;
    sessionStorage.setItem("agentbus.key", k);
  },
};

/** Agent names by id, as /v1/agents last listed them (to name event senders). */
export const agentNames = new Map();
export const nameOf = (id) => (id ? agentNames.get(id) ?? shortId(id) : "–");
export const shortId = (id) => (id && id.length > 14 ? `${id.slice(0, 10)}…` : id ?? "");

/** A DOM element with properties and children (text is always set as text, never as HTML). */
export function el(tag, props = {}, ...children) {
  const { dataset, ...rest } = props;
  const e = Object.assign(document.createElement(tag), rest);
  if (dataset) Object.assign(e.dataset, dataset);
  e.append(...children.filter((c) => c !== undefined && c !== null && c !== false));
  return e;
}

/** A button of `type="button"` that runs `onClick`, its errors shown on the page. */
export function button(text, onClick, props = {}) {
  const b = el("button", { type: "button", textContent: text, ...props });
  b.addEventListener("click", (ev) => {
    ev.stopPropagation();
    Promise.resolve(onClick(b)).catch(showError);
  });
  return b;
}

/** A table row whose cells carry their column's header as `data-label` (narrow screens show it as a card). */
export function row(table, cells, props = {}) {
  const heads = [...table.tHead.rows[0].cells].map((th) => th.textContent);
  const tr = el("tr", props);
  cells.forEach((td, i) => {
    if (!(td instanceof HTMLElement)) td = el("td", { textContent: String(td ?? "") });
    if (heads[i] && td.colSpan === 1) td.dataset.label = heads[i];
    tr.append(td);
  });
  return tr;
}

/** A single row saying the table is empty. */
export const emptyRow = (table, text) => el("tr", { className: "empty" }, el("td", { colSpan: table.tHead.rows[0].cells.length, className: "muted", textContent: text }));

export const short = (state) => (state ?? "").replace("TASK_STATE_", "").toLowerCase().replace("_", " ");

/** A task state as text (not colour alone), coloured by its class. */
export const stateBadge = (state) => el("span", { className: `state ${state ?? ""}`, textContent: short(state) || "–" });

export function showError(err) {
  $("error").hidden = !err;
  $("error").textContent = err ? String(err.message ?? err) : "";
}

/** A refusal of the API: its `{code, message}` and HTTP status. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(`${code ?? status}: ${message}`);
    this.status = status;
    this.code = code;
  }
}

/** fetch on the API with the key; a refusal becomes an ApiError. A 401 shows the key form. */
export async function request(path, init = {}) {
  const res = await fetch(api(path), { ...init, headers: { ...(session.key && { "X-API-Key": session.key }), ...init.headers } });
  if (res.ok) return res;
  const body = await res.json().catch(() => ({}));
  if (res.status === 401) $("key-form").hidden = false;
  throw new ApiError(res.status, body.code, body.message ?? res.statusText);
}

export const getJson = async (path) => (await request(path)).json();
export const postJson = async (path, body) =>
  (await request(path, { method: "POST", ...(body !== undefined && { headers: { "content-type": "application/json" }, body: JSON.stringify(body) }) })).json();

/** Server-Sent Events from a fetch response: yields {type, data} with data parsed as JSON. */
export async function* readSse(res) {
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

// ---- times ----

const ms = (iso) => (iso ? Date.parse(iso) : NaN);
export { ms as timeOf };

/** A time of day today, a date and time before. */
export function fmtTime(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  return d.toDateString() === new Date().toDateString() ? d.toLocaleTimeString() : d.toLocaleString();
}

/** A duration in ms, as people read it. */
export function fmtDuration(d) {
  if (!Number.isFinite(d)) return "–";
  if (d < 0) d = 0;
  if (d < 1000) return `${Math.round(d)} ms`;
  if (d < 60_000) return `${(d / 1000).toFixed(d < 10_000 ? 2 : 1)} s`;
  if (d < 3_600_000) return `${Math.floor(d / 60_000)} min ${Math.round((d % 60_000) / 1000)} s`;
  return `${Math.floor(d / 3_600_000)} h ${Math.round((d % 3_600_000) / 60_000)} min`;
}

export const ago = (iso) => `${fmtDuration(Date.now() - ms(iso))} ago`;

/** A `<time>` element with the full ISO time as its tooltip. */
export const timeEl = (iso, text = fmtTime(iso)) => el("time", { dateTime: iso ?? "", title: iso ?? "", textContent: text });

// ---- message parts ----

/** One part as its own element: text as text, data as formatted JSON, a file by name or link. */
export function partEl(p) {
  if (p.text !== undefined) return el("p", { className: "part part-text", textContent: p.text });
  if (p.data !== undefined) return el("pre", { className: "part part-data", textContent: JSON.stringify(p.data, null, 2) });
  if (p.url !== undefined) return el("p", { className: "part part-file" }, el("a", { href: p.url, rel: "noopener noreferrer", target: "_blank", textContent: p.filename ?? p.url }));
  if (p.raw !== undefined) return el("p", { className: "part part-file muted", textContent: `${p.filename ?? "file"} (${p.mediaType ?? "bytes"}, ${Math.round((p.raw.length * 3) / 4)} bytes)` });
  return el("pre", { className: "part part-data", textContent: JSON.stringify(p, null, 2) });
}

/** Parts one after the other, each its own element (never glued into one text). */
export const partsEl = (parts = []) => parts.map(partEl);

/** Parts inline, each in its own span: text as text, data as compact JSON. */
export const partsInline = (parts = []) =>
  parts.map((p) =>
    el("span", {
      className: p.text !== undefined ? "part-inline" : "part-inline part-inline-data",
      textContent: p.text ?? (p.data !== undefined ? JSON.stringify(p.data) : p.url ?? p.filename ?? "[file]"),
    }));

/** What an event says, in a line: a label and its parts as separate spans. */
export function describe(event) {
  if (event.statusUpdate) {
    const { state, message } = event.statusUpdate.status;
    return { kind: "status", state, nodes: message ? [`${short(state)}: `, ...partsInline(message.parts)] : [short(state)] };
  }
  if (event.artifactUpdate) {
    const a = event.artifactUpdate.artifact;
    return { kind: "artifact", nodes: [`artifact ${a.name ?? a.artifactId}: `, ...partsInline(a.parts)] };
  }
  if (event.message) return { kind: "message", nodes: ["message: ", ...partsInline(event.message.parts)] };
  return { kind: "other", nodes: [JSON.stringify(event)] };
}

/** The neutral note on an event's sender. */
export const senderNote = (e) => (e.verified ? "sender verified by this console" : "sender as claimed; MACed for the submitter");

/** Keeps a select's first option ("any"/"all") and offers `values` after it, the choice kept when still offered. */
export function syncOptions(select, values) {
  const have = [...select.options].slice(1).map((o) => o.value);
  if (have.join("\n") === values.join("\n")) return;
  const current = select.value;
  select.replaceChildren(select.options[0], ...values.map((v) => el("option", { value: v, textContent: v })));
  select.value = values.includes(current) ? current : "";
  if (current && !values.includes(current)) {
    // A filter on something no longer listed stays in force: keep offering it.
    select.append(el("option", { value: current, textContent: current }));
    select.value = current;
  }
}
