// One run: its plan as a graph coloured by live state (server-sent events from
// GET /v1/runs/{id}/progress, with polling as the fallback), node details, revisions, the run
// actions, and an event form for each step waiting for an event.

import { ApiError, call, stream } from "./api.js";
import { duration, fill, h, pretty, shortHash, when } from "./dom.js";
import { schemaForm } from "./form.js";
import { buildGraph } from "./graph.js";
import { drawGraph, updateStates } from "./render.js";

const TERMINAL = new Set(["completed", "failed", "cancelled", "terminated"]);
const POLL_MS = 1500;
const PLAN_REFRESH_MS = 1000;
const ACTIONS = [
  ["pause", "Pause", null],
  ["resume", "Resume", null],
  ["cancel", "Cancel", "Cancel this run? Running steps are cancelled and compensations run."],
  ["terminate", "Terminate", "Terminate this run now? Nothing more runs, compensations included."],
  ["restart", "Restart", "Restart this run from the beginning with the same plan and inputs?"],
];

export function render(root, runId, ctx) {
  const stateEl = h("span", { id: "run-state", class: "pill" }, "…");
  const meta = h("p", { class: "muted", id: "run-meta" });
  const message = h("p", { class: "error", id: "run-message", role: "alert" });
  const graphBox = h("div", { class: "graph-box", id: "run-graph" });
  const details = h("aside", { class: "details", id: "node-details" }, h("p", { class: "muted" }, "Click a step for its details."));
  const events = h("section", { id: "event-forms" });
  const revisions = h("section", { id: "revisions" });
  const buttons = ACTIONS.map(([action, label, confirmText]) =>
    h("button", { type: "button", id: `action-${action}`, onclick: () => act(action, confirmText) }, label));
  fill(root,
    h("section", { class: "card" },
      h("h2", {}, "Run ", h("span", { class: "mono" }, runId), " ", stateEl),
      meta, h("div", { class: "actions" }, ...buttons), message),
    h("div", { class: "run-body" }, h("section", { class: "card grow" }, graphBox), details),
    h("div", { class: "run-body" }, h("section", { class: "card grow" }, events), h("section", { class: "card grow" }, revisions)));

  let status = null;
  let view = null;  // GET /runs/{id}/plan: plan + records
  let svg = null;
  let drawnHash = null;
  let selected = null;
  let current = null;  // the newest graph model
  let stopped = false;
  let abort = null;
  let timer = null;
  let planFetch = null;

  // The plan and every record: refetched on status changes, at most once a second (a big foreach
  // has many records), and always once the run is over.
  let planFetchedAt = 0;
  async function loadPlan(force = false) {
    if (planFetch) return planFetch;
    if (!force && view && Date.now() - planFetchedAt < PLAN_REFRESH_MS) return null;
    planFetchedAt = Date.now();
    planFetch = call("GET", `/runs/${encodeURIComponent(runId)}/plan`)
      .then((v) => { view = v; }).catch(() => {}).finally(() => { planFetch = null; });
    return planFetch;
  }

  function update() {
    if (!status) return;
    stateEl.textContent = status.state;
    stateEl.className = `pill state-${status.state}`;
    stateEl.setAttribute("data-state", status.state);
    meta.textContent = [status.plan_name && `plan ${status.plan_name}`, status.plan_hash && `hash ${shortHash(status.plan_hash)}`,
      status.session && `session ${status.session}`, status.started_at && `started ${when(status.started_at)}`,
      status.closed_at && `closed ${when(status.closed_at)}`, status.error && `error: ${status.error.message}`]
      .filter(Boolean).join(" · ");
    const terminal = TERMINAL.has(status.state);
    for (const b of buttons) {
      const action = b.id.replace("action-", "");
      b.disabled = action === "restart" ? false : terminal
        || (action === "pause" && status.state === "paused") || (action === "resume" && status.state !== "paused");
    }
    const model = buildGraph({ plan: view && view.plan, status, records: view && view.records });
    current = model;
    const hash = (view && view.plan_hash) || status.plan_hash || null;
    if (hash !== drawnHash || !updateStates(svg, model)) {
      // The click handler reads the newest model: recolouring in place keeps the first draw's handlers.
      svg = drawGraph(graphBox, model, (n) => { selected = n.key; showNode((current || model).nodes.get(n.key) || n); });
      drawnHash = hash;
    }
    if (selected && model.nodes.get(selected)) showNode(model.nodes.get(selected));
    drawEvents(model);
    drawRevisions();
  }

  function showNode(n) {
    const info = n.info || {};
    const rows = [
      ["Step", n.path], ["Kind", n.kind], ["State", n.state], ["Attempts", info.attempts],
      ["Started", when(info.started_at)], ["Ended", when(info.ended_at)],
      ["Duration", duration(info.started_at, info.ended_at)],
    ].filter(([, v]) => v !== undefined && v !== null && v !== "");
    const items = info.items || info.progress;
    if (items) rows.push(["Items", `${items.done}/${items.total} done`]);
    const block = (title, value, cls) => (value === undefined || value === null || value === "" ? null
      : h("div", {}, h("h4", {}, title), h("pre", { class: cls || "" }, pretty(value))));
    fill(details,
      h("h3", {}, n.id),
      h("dl", {}, ...rows.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, String(v))])),
      n.childRunId ? h("p", {}, "Child run: ", h("a", { href: `#/run/${encodeURIComponent(n.childRunId)}` }, n.childRunId))
        : n.childPlan ? h("p", { class: "muted" }, `Runs plan ${n.childPlan} as a child run.`) : null,
      block("Error", info.error && `${info.error.type || "Error"}: ${info.error.message || ""}`, "error"),
      block("Output", info.output_preview),
      block("Detail", info.detail && Object.keys(info.detail).length ? info.detail : null),
      block("Input (the step as planned)", n.step ? withoutNested(n.step) : null));
  }

  function drawEvents(model) {
    const waiting = [...model.nodes.values()].filter((n) => n.kind === "wait_for_event" && n.state === "waiting");
    const key = waiting.map((n) => n.key).join(",");
    if (events.getAttribute("data-for") === key) return;  // keep what the user is typing
    events.setAttribute("data-for", key);
    if (!waiting.length) {
      fill(events, h("h3", {}, "Events"), h("p", { class: "muted" }, "No step is waiting for an event."));
      return;
    }
    fill(events, h("h3", {}, "Events"), ...waiting.map(eventForm));
  }

  function eventForm(n) {
    const type = n.step && n.step.event ? String(n.step.event) : n.id;
    const built = schemaForm(n.step ? n.step.payload_schema : null);
    const result = h("p", { class: "muted", role: "status" });
    const form = h("form", { class: "event-form", "data-step": n.id },
      h("p", {}, "Step ", h("b", {}, n.id), " waits for event ", h("code", {}, type)),
      built.element, h("button", { type: "submit" }, "Send event"), result);
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      try {
        const payload = built.readPayload();
        const out = await call("POST", `/runs/${encodeURIComponent(runId)}/events`, { type, payload });
        result.className = "muted";
        result.textContent = out.duplicate ? "Already delivered." : "Event delivered.";
        refreshNow();
      } catch (err) {
        result.className = "error";
        result.textContent = err.message;
      }
    });
    return form;
  }

  function drawRevisions() {
    const list = Array.isArray(status.revisions) ? status.revisions : [];
    fill(revisions, h("h3", {}, "Revisions"),
      list.length ? h("ol", {}, ...list.map((r) => h("li", { "data-revision": r.revision },
        `#${r.revision} · ${shortHash(r.plan_hash)} · ${when(r.at)}${r.reason ? ` · ${r.reason}` : ""}`)))
        : h("p", { class: "muted" }, "One revision (not replanned)."),
      Array.isArray(status.replan_errors) && status.replan_errors.length
        ? h("pre", { class: "error" }, pretty(status.replan_errors)) : null);
  }

  async function act(action, confirmText) {
    if (confirmText && !window.confirm(confirmText)) return;
    message.textContent = "";
    try {
      await call("POST", `/runs/${encodeURIComponent(runId)}:${action}`);
      if (action === "restart") { drawnHash = null; follow(); } else refreshNow();
    } catch (err) {
      message.textContent = err.message;
    }
  }

  async function refreshNow() {
    try {
      const [s] = await Promise.all([call("GET", `/runs/${encodeURIComponent(runId)}`), loadPlan(true)]);
      if (stopped) return;
      status = s;
      update();
    } catch (err) {
      fail(err);
    }
  }

  function fail(err) {
    if (err instanceof ApiError && err.status === 401) return ctx.onAuthError("Your API key is no longer accepted.");
    if (err instanceof ApiError && err.status === 404) {
      stopped = true;
      fill(root, h("section", { class: "card" }, h("h2", {}, "Run not found"),
        h("p", { id: "not-found" }, `No run ${runId} for this API key's tenant.`), h("a", { href: "#/runs" }, "All runs")));
      return;
    }
    message.textContent = err.message;
  }

  // Live state: the event stream while it lasts, polling when it cannot be had (e.g. 429).
  async function follow() {
    if (abort) abort.abort();
    abort = new AbortController();
    clearTimeout(timer);
    try {
      await stream(`/runs/${encodeURIComponent(runId)}/progress`, async (name, data) => {
        if (name !== "status" || stopped) return;
        status = data;
        await loadPlan(TERMINAL.has(data.state));
        if (!stopped) update();
      }, abort.signal);
      if (!stopped) { await loadPlan(true); update(); }
      // A stream that ended before the run did (a restarted server, a proxy's timeout): follow again.
      if (!stopped && status && !TERMINAL.has(status.state)) timer = setTimeout(follow, POLL_MS);
    } catch (err) {
      if (stopped || (err && err.name === "AbortError")) return;
      if (err instanceof ApiError && (err.status === 404 || err.status === 401)) return fail(err);
      poll();
    }
  }

  async function poll() {
    await refreshNow();
    if (!stopped && status && !TERMINAL.has(status.state)) timer = setTimeout(poll, POLL_MS);
  }

  refreshNow().then(() => { if (!stopped) follow(); });
  return () => { stopped = true; clearTimeout(timer); if (abort) abort.abort(); };
}

function withoutNested(step) {
  const out = {};
  for (const [k, v] of Object.entries(step)) {
    out[k] = ["steps", "cases", "default"].includes(k) && Array.isArray(v) ? `[${v.length} nested]`
      : k === "plan" && v && typeof v === "object" ? `(subplan ${v.name || ""})` : v;
  }
  return out;
}
