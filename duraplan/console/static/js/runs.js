// The runs list: session and state filter on the server (GET /v1/runs), plan name/hash and start
// time in the page (over the newest 200 the server returns); refreshed every few seconds while open
// (live updates), and at once when a filter changes.

import { ApiError, call } from "./api.js";
import { fill, h, shortHash, when } from "./dom.js";

const REFRESH_MS = 2000;
const STATES = ["", "running", "paused", "completed", "failed", "cancelled", "terminated"];

export function render(root, ctx) {
  const filters = {
    session: h("input", { type: "text", name: "session", placeholder: "session" }),
    state: h("select", { name: "state" }, ...STATES.map((s) => h("option", { value: s }, s || "any state"))),
    plan: h("input", { type: "text", name: "plan", placeholder: "plan name or hash" }),
    since: h("input", { type: "datetime-local", name: "since", "aria-label": "started after" }),
    until: h("input", { type: "datetime-local", name: "until", "aria-label": "started before" }),
  };
  const body = h("tbody", { id: "runs-body" });
  const info = h("p", { class: "muted", id: "runs-info" });
  const error = h("p", { class: "error", role: "alert" });
  fill(root, h("section", { class: "card" },
    h("h2", {}, "Runs"),
    h("form", { class: "filters", id: "run-filters", onsubmit: (ev) => { ev.preventDefault(); refresh(); } },
      filters.session, filters.state, filters.plan, h("label", {}, "started after ", filters.since), h("label", {}, "before ", filters.until),
      h("button", { type: "submit" }, "Filter")),
    error,
    h("table", { class: "runs" },
      h("thead", {}, h("tr", {}, ...["Run", "Plan", "Hash", "Session", "State", "Started", "Closed"].map((t) => h("th", {}, t)))),
      body),
    info));
  for (const input of Object.values(filters)) input.addEventListener("change", () => refresh());

  let stopped = false;
  let timer = null;
  async function refresh() {
    clearTimeout(timer);
    const q = new URLSearchParams({ limit: "200" });
    const session = filters.session.value.trim();
    if (session) q.set("session", session);
    if (filters.state.value) q.set("status", filters.state.value);
    try {
      const data = await call("GET", `/runs?${q}`);
      if (stopped) return;
      error.textContent = "";
      const rows = data.runs.filter(matches);
      fill(body, ...rows.map(row));
      info.textContent = `${rows.length} run${rows.length === 1 ? "" : "s"} · refreshed ${new Date().toLocaleTimeString()}`;
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) return ctx.onAuthError("Your API key is no longer accepted.");
      error.textContent = err.message;
    }
    if (!stopped) timer = setTimeout(refresh, REFRESH_MS);
  }

  function matches(r) {
    const plan = filters.plan.value.trim().toLowerCase();
    const hash = String(r.plan_hash || "").toLowerCase();
    const byHash = hash.startsWith(plan) || hash.replace(/^sha256:/, "").startsWith(plan);
    if (plan && !(String(r.plan_name || "").toLowerCase().includes(plan) || byHash)) {
      return false;
    }
    const started = r.started_at ? new Date(r.started_at).getTime() : null;
    const since = filters.since.value ? new Date(filters.since.value).getTime() : null;
    const until = filters.until.value ? new Date(filters.until.value).getTime() : null;
    return !(started !== null && ((since !== null && started < since) || (until !== null && started > until)));
  }

  function row(r) {
    return h("tr", { "data-run": r.run_id },
      h("td", {}, h("a", { href: `#/run/${encodeURIComponent(r.run_id)}` }, r.run_id)),
      h("td", {}, r.plan_name || ""),
      h("td", { class: "mono" }, shortHash(r.plan_hash)),
      h("td", {}, r.session || ""),
      h("td", {}, h("span", { class: `pill state-${r.state}` }, r.state)),
      h("td", {}, when(r.started_at)),
      h("td", {}, when(r.closed_at)));
  }

  refresh();
  return () => { stopped = true; clearTimeout(timer); };
}
