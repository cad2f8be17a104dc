// The one mapping from what the API returns (a plan, a run status, step records, validation issues)
// to a drawable graph model. Everything else (layout, SVG, pages) reads only this model, so a change
// in the status' shape is absorbed here. Every field is optional: a missing one means "unknown".
//
// Model: { nodes: Map<key, Node>, clusters: Map<key, Cluster>, edges: [{from, to}], planIssues: [],
//          omitted: nested status entries left out past MAX_STATUS_NODES }
//   Node    { key, id, kind, label, parent, path, pointer, state, info, step, issues, childRunId, childPlan }
//   Cluster { key, label, parent }   (a foreach, switch case or subplan box; its own node sits inside)
// `path` is the step's record path as the workflow names it: "a", "loop[0].x", "sw.x"; foreach
// bodies use "loop[*].x" and aggregate the items' records.

const NESTED_FIELDS = new Set(["steps", "cases", "default", "plan"]);
const CHILD_LISTS = ["steps", "children", "items", "calls", "host_calls"];
// A status listing thousands of nested entries (foreach items) would make an unreadable, slow graph.
const MAX_STATUS_NODES = 300;
const REF = /\bsteps\.([A-Za-z0-9_-]+)/g;
const ORDER = ["failed", "running", "compensating", "waiting", "sleeping", "paused", "pending", "cancelled",
  "compensated", "skipped", "completed"];

export function buildGraph({ plan = null, status = null, records = null, issues = [] } = {}) {
  const g = { nodes: new Map(), clusters: new Map(), edges: [], planIssues: [], omitted: 0 };
  const states = indexStates(status, records || {});
  // A plan not (yet) run, as in the editor, has steps that are only "planned".
  const initial = status || records ? "pending" : "planned";
  if (plan && Array.isArray(plan.steps)) {
    addBlock(g, plan.steps, { parent: null, prefix: "", pointer: "/steps", scope: [new Map()], states, initial });
  }
  addStatusOnly(g, status, states);
  pinIssues(g, issues || []);
  return g;
}

// ---- states -------------------------------------------------------------------------------------

function indexStates(status, records) {
  const byPath = new Map(Object.entries(records || {}));
  const walk = (entries, parentPath) => {
    if (!Array.isArray(entries)) return;
    for (const entry of entries) {
      if (!entry || typeof entry !== "object") continue;
      const path = entry.path || (entry.id == null ? null : parentPath ? `${parentPath}.${entry.id}` : String(entry.id));
      if (path) byPath.set(path, { ...(byPath.get(path) || {}), ...entry });
      for (const field of CHILD_LISTS) walk(entry[field], path);
    }
  };
  walk(status && status.steps, "");
  return byPath;
}

function stateOf(states, path) {
  if (!path.includes("[*]")) return states.get(path) || null;
  // A foreach body step: the "worst" state over its items' records.
  const pattern = new RegExp("^" + path.split("[*]").map(escapeRe).join("\\[\\d+\\]") + "$");
  const found = [...states.entries()].filter(([p]) => pattern.test(p)).map(([, r]) => r);
  if (!found.length) return null;
  const rank = (r) => { const i = ORDER.indexOf(r.state); return i < 0 ? ORDER.length : i; };
  const worst = found.reduce((a, b) => (rank(b) < rank(a) ? b : a));
  const done = found.filter((r) => r.state === "completed").length;
  const allDone = done === found.length;
  return { ...worst, state: allDone ? "completed" : worst.state, items: { done, total: found.length } };
}

function escapeRe(s) {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

// ---- the plan -----------------------------------------------------------------------------------

function addBlock(g, steps, ctx) {
  if (!Array.isArray(steps)) return;
  const scope = new Map();
  steps.forEach((step, i) => {
    if (step && typeof step === "object" && step.id != null) scope.set(String(step.id), null);
  });
  const scopes = [scope, ...ctx.scope];
  steps.forEach((step, i) => {
    if (!step || typeof step !== "object") return;
    const key = addStep(g, step, { ...ctx, scope: scopes, pointer: `${ctx.pointer}/${i}` });
    if (step.id != null) scope.set(String(step.id), key);
  });
  steps.forEach((step, i) => {
    if (!step || typeof step !== "object") return;
    const key = scope.get(String(step.id));
    for (const dep of dependencies(step)) {
      const from = resolve(scopes, dep);
      if (from && key && from !== key) g.edges.push({ from, to: key });
    }
  });
}

function addStep(g, step, ctx) {
  const id = step.id == null ? "(no id)" : String(step.id);
  const path = ctx.prefix + id;
  const key = uniqueKey(g, path);
  const record = ctx.states ? stateOf(ctx.states, path) : null;
  const node = {
    key, id, kind: step.kind || "?", label: id, parent: ctx.parent, path, pointer: ctx.pointer,
    state: record && record.state ? record.state : ctx.initial, info: record || {}, step, issues: [],
    childRunId: null,
  };
  g.nodes.set(key, node);
  if (step.kind === "foreach" && Array.isArray(step.steps)) {
    const cluster = addCluster(g, key, `foreach ${id}`, ctx.parent);
    node.parent = cluster;
    addBlock(g, step.steps, { ...ctx, parent: cluster, prefix: `${path}[*].`, pointer: `${ctx.pointer}/steps` });
  } else if (step.kind === "switch") {
    const outer = addCluster(g, key, `switch ${id}`, ctx.parent);
    node.parent = outer;
    const taken = branchOf(record);
    const cases = Array.isArray(step.cases) ? step.cases : [];
    cases.forEach((c, i) => addCase(g, c && c.steps, `${key}#case${i}`, `case ${i}: ${(c && c.when) || ""}`, i, taken,
      { ...ctx, parent: outer, prefix: `${path}.`, pointer: `${ctx.pointer}/cases/${i}/steps` }));
    if (Array.isArray(step.default) && step.default.length) {
      addCase(g, step.default, `${key}#default`, "default", -1, taken,
        { ...ctx, parent: outer, prefix: `${path}.`, pointer: `${ctx.pointer}/default` });
    }
  } else if (step.kind === "subplan") {
    // Only an id the status gives is linked: the API does not open a child run by a guessed id.
    const info = node.info || {};
    node.childRunId = info.child_run_id || (info.detail && info.detail.child_run_id) || null;
    node.childPlan = step.plan && typeof step.plan === "object" ? step.plan.name || "(unnamed)" : null;
  }
  return key;
}

function addCase(g, steps, key, label, index, taken, ctx) {
  const cluster = addCluster(g, key, label, ctx.parent);
  const before = new Set(g.nodes.keys());
  addBlock(g, steps, { ...ctx, parent: cluster });
  if (taken === null) return;
  for (const [k, node] of g.nodes) {
    if (!before.has(k) && index !== taken && node.state === "pending") node.state = "skipped";
  }
}

function branchOf(record) {
  const detail = record && record.detail;
  return detail && typeof detail.branch === "number" ? detail.branch : null;
}

function addCluster(g, ownerKey, label, parent) {
  const key = `cluster:${ownerKey}`;
  g.clusters.set(key, { key, label, parent });
  return key;
}

function uniqueKey(g, path) {
  let key = path;
  for (let n = 2; g.nodes.has(key); n++) key = `${path}~${n}`;
  return key;
}

function resolve(scopes, id) {
  for (const scope of scopes) if (scope.has(id)) return scope.get(id);
  return null;
}

// Step ids a step waits for: depends_on and `steps.X` references in its own fields (not in the
// steps nested inside it, which are drawn inside its box).
export function dependencies(step) {
  const out = new Set(Array.isArray(step.depends_on) ? step.depends_on.map(String) : []);
  const scan = (value) => {
    if (typeof value === "string") {
      for (const m of value.matchAll(REF)) out.add(m[1]);
    } else if (Array.isArray(value)) {
      value.forEach(scan);
    } else if (value && typeof value === "object") {
      Object.values(value).forEach(scan);
    }
  };
  for (const [field, value] of Object.entries(step)) {
    if (NESTED_FIELDS.has(field)) {
      if (field === "cases" && Array.isArray(value)) value.forEach((c) => c && scan(c.when));
      continue;
    }
    if (field !== "id" && field !== "depends_on") scan(value);
  }
  out.delete(String(step.id));
  return out;
}

// ---- what only the status knows -----------------------------------------------------------------

// Nested entries a status lists under a step (e.g. a script's host calls, or everything when no plan
// is known) that the plan did not produce become nodes inside that step's box.
function addStatusOnly(g, status, states) {
  const known = new Set([...g.nodes.values()].map((n) => n.path));
  let budget = MAX_STATUS_NODES;
  const walk = (entries, parentPath, parentNode) => {
    if (!Array.isArray(entries)) return;
    entries.forEach((entry, i) => {
      if (!entry || typeof entry !== "object") return;
      if (budget <= 0) { g.omitted += 1; return; }
      const id = entry.id != null ? String(entry.id) : entry.name != null ? String(entry.name) : `#${i}`;
      const path = entry.path || (parentPath ? `${parentPath}.${id}` : id);
      let node = [...g.nodes.values()].find((n) => n.path === path);
      if (!known.has(path)) {
        let parent = null;
        if (parentNode) {
          parent = parentNode.parent && parentNode.parent === `cluster:${parentNode.key}`
            ? parentNode.parent : addCluster(g, parentNode.key, `${parentNode.id}`, parentNode.parent);
          parentNode.parent = parent;
        }
        const key = uniqueKey(g, path);
        const record = states.get(path) || entry;
        node = {
          key, id, kind: entry.kind || entry.type || "?", label: id, parent, path, pointer: null,
          state: record.state || "pending", info: record, step: null, issues: [],
          childRunId: entry.child_run_id || null,
        };
        g.nodes.set(key, node);
        known.add(path);
        budget -= 1;
      }
      for (const field of CHILD_LISTS) walk(entry[field], path, node);
    });
  };
  walk(status && status.steps, "", null);
}

// ---- validation issues ---------------------------------------------------------------------------

// Each issue goes to the innermost step whose JSON pointer prefixes the issue's pointer, else to the
// step it names, else to the plan as a whole.
function pinIssues(g, issues) {
  const nodes = [...g.nodes.values()].filter((n) => n.pointer);
  for (const issue of issues) {
    const pointer = typeof issue.pointer === "string" ? issue.pointer : "";
    let best = null;
    for (const node of nodes) {
      if ((pointer === node.pointer || pointer.startsWith(node.pointer + "/"))
          && (!best || node.pointer.length > best.pointer.length)) best = node;
    }
    if (!best && issue.step != null) best = nodes.find((n) => n.id === String(issue.step)) || null;
    if (best) best.issues.push(issue);
    else g.planIssues.push(issue);
  }
}
