// The plan editor: paste or upload a plan (JSON or YAML), see its graph with every validation
// problem (POST /v1/plans:validate) pinned to its step, and run it with inputs (POST /v1/runs).

import { ApiError, call } from "./api.js";
import { fill, h } from "./dom.js";
import { buildGraph } from "./graph.js";
import { drawGraph } from "./render.js";

const DEBOUNCE_MS = 400;

export function parsePlan(text) {
  const trimmed = text.trim();
  if (!trimmed) throw new Error("The plan is empty.");
  const value = trimmed.startsWith("{") ? JSON.parse(trimmed) : jsyaml.load(trimmed);
  if (!value || typeof value !== "object" || Array.isArray(value)) throw new Error("A plan is an object (name, steps, …).");
  return value;
}

export function problemList(container, model, onPick) {
  const issues = [...model.planIssues.map((i) => [null, i]),
    ...[...model.nodes.values()].flatMap((n) => n.issues.map((i) => [n, i]))];
  fill(container,
    h("h3", {}, issues.length ? `${issues.length} problem${issues.length === 1 ? "" : "s"}` : "No problems"),
    h("ul", { class: "problems" }, ...issues.map(([n, i]) => h("li", { "data-step": n ? n.id : "", "data-pointer": i.pointer || "" },
      n ? h("a", { href: "#", onclick: (ev) => { ev.preventDefault(); onPick(n); } }, n.id) : h("b", {}, "plan"),
      ` ${i.pointer || ""} — ${i.message}`))));
}

export function render(root, ctx) {
  const source = h("textarea", { id: "plan-source", rows: 18, spellcheck: "false", "aria-label": "plan (JSON or YAML)",
    placeholder: "Paste a plan here (JSON or YAML), or upload a file." });
  const upload = h("input", { type: "file", id: "plan-file", accept: ".json,.yaml,.yml,application/json,text/yaml" });
  const inputs = h("textarea", { id: "run-inputs", rows: 3, "aria-label": "run inputs (JSON)", placeholder: "{}" });
  const session = h("input", { type: "text", id: "run-session", value: "console", "aria-label": "session" });
  const status = h("p", { id: "editor-status", role: "status", class: "muted" });
  const graphBox = h("div", { class: "graph-box", id: "editor-graph" });
  const problems = h("section", { id: "editor-problems" });
  const runButton = h("button", { type: "button", id: "run-plan" }, "Run");
  fill(root, h("div", { class: "run-body" },
    h("section", { class: "card editor" }, h("h2", {}, "Plan editor"), source, upload,
      h("label", {}, "Inputs (JSON)", inputs), h("label", {}, "Session", session), runButton, status),
    h("section", { class: "card grow" }, graphBox, problems)));

  let timer = null;
  let seq = 0;
  async function check() {
    const mine = ++seq;
    let plan;
    try {
      plan = parsePlan(source.value);
    } catch (err) {
      status.className = "error";
      status.textContent = `Cannot read the plan: ${err.message}`;
      fill(graphBox);
      fill(problems);
      return null;
    }
    try {
      const result = await call("POST", "/plans:validate", plan);
      if (mine !== seq) return null;
      const model = buildGraph({ plan, issues: result.issues });
      const svg = drawGraph(graphBox, model, (n) => highlight(n));
      problemList(problems, model, highlight);
      status.className = result.valid ? "muted" : "error";
      status.textContent = result.valid ? "The plan is valid." : "The plan has problems (marked on the graph).";
      function highlight(n) {
        if (!svg) return;
        for (const g of svg.querySelectorAll("g.node.selected")) g.classList.remove("selected");
        const target = svg.querySelector(`g.node[data-key="${CSS.escape(n.key)}"]`);
        if (target) { target.classList.add("selected"); target.scrollIntoView({ block: "center", inline: "center" }); }
      }
      return result.valid ? plan : null;
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) ctx.onAuthError("Your API key is no longer accepted.");
      status.className = "error";
      status.textContent = err.message;
      return null;
    }
  }

  source.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(check, DEBOUNCE_MS); });
  upload.addEventListener("change", async () => {
    const file = upload.files && upload.files[0];
    if (!file) return;
    source.value = await file.text();
    check();
  });
  runButton.addEventListener("click", async () => {
    const plan = await check();
    if (!plan) return;
    let runInputs = {};
    try {
      runInputs = inputs.value.trim() ? JSON.parse(inputs.value) : {};
    } catch (err) {
      status.className = "error";
      status.textContent = `Inputs are not valid JSON: ${err.message}`;
      return;
    }
    try {
      const created = await call("POST", "/runs", { plan, inputs: runInputs, session: session.value.trim() || "console" });
      location.hash = `#/run/${encodeURIComponent(created.run_id)}`;
    } catch (err) {
      status.className = "error";
      const issues = (err.problem && err.problem.issues) || [];
      status.textContent = [err.message, ...issues.map((i) => i.message)].join(" — ");
    }
  });
  return () => clearTimeout(timer);
}
