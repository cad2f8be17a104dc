// Lays a graph model (graph.js) out with dagre (vendored) and draws it as SVG. Node colour comes
// from the `state-*` CSS class; `updateStates` recolours in place so live updates keep the layout.

const SVG = "http://www.w3.org/2000/svg";
const NODE_W = 170;
const NODE_H = 46;

function el(tag, attrs = {}, text = null) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) if (v != null) node.setAttribute(k, String(v));
  if (text != null) node.textContent = text;
  return node;
}

function layout(model) {
  try {
    return layoutWith(model, true);
  } catch (err) {
    // dagre's compound layout can reject unusual nestings: a flat layout still shows every step.
    console.warn("compound layout failed, drawing flat", err);
    return layoutWith(model, false);
  }
}

function layoutWith(model, compound) {
  const used = new Set();
  if (compound) {
    for (const n of model.nodes.values()) for (let p = n.parent; p; p = (model.clusters.get(p) || {}).parent) used.add(p);
  }
  const g = new dagre.graphlib.Graph({ compound: true, multigraph: false });
  g.setGraph({ rankdir: "TB", nodesep: 24, ranksep: 36, marginx: 16, marginy: 16 });
  g.setDefaultEdgeLabel(() => ({}));
  for (const c of model.clusters.values()) if (used.has(c.key)) g.setNode(c.key, { label: c.label, paddingTop: 28 });
  for (const n of model.nodes.values()) g.setNode(n.key, { width: NODE_W, height: NODE_H });
  for (const c of model.clusters.values()) if (used.has(c.key) && c.parent) g.setParent(c.key, c.parent);
  for (const n of model.nodes.values()) if (used.has(n.parent)) g.setParent(n.key, n.parent);
  for (const e of model.edges) if (g.hasNode(e.from) && g.hasNode(e.to)) g.setEdge(e.from, e.to);
  dagre.layout(g);
  return g;
}

function shortKind(n) {
  return n.kind === "wait_for_event" ? "event" : n.kind;
}

function subtitle(n) {
  const parts = n.state === "planned" ? [shortKind(n)] : [shortKind(n), n.state];
  const info = n.info || {};
  if (info.items) parts.push(`${info.items.done}/${info.items.total}`);
  else if (info.progress) parts.push(`${info.progress.done}/${info.progress.total}`);
  if (info.attempts > 1) parts.push(`×${info.attempts}`);
  return parts.join(" · ");
}

// Draws `model` into `container` (an element); `onSelect(node)` on click. Returns the SVG.
export function drawGraph(container, model, onSelect) {
  container.replaceChildren();
  if (!model.nodes.size) {
    const empty = document.createElement("p");
    empty.className = "muted";
    empty.textContent = "No steps to draw.";
    container.append(empty);
    return null;
  }
  const g = layout(model);
  // dagre's graph size leaves out the clusters' padding: a margin keeps their right edge visible.
  const width = Math.ceil((g.graph().width || 0) + 24);
  const height = Math.ceil((g.graph().height || 0) + 8);
  const svg = el("svg", { class: "graph", width, height, viewBox: `0 0 ${width} ${height}`, role: "img" });
  const defs = el("defs");
  const marker = el("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7,
    orient: "auto-start-reverse" });
  marker.append(el("path", { d: "M 0 0 L 10 5 L 0 10 z", class: "arrowhead" }));
  defs.append(marker);
  svg.append(defs);

  const clusters = [...model.clusters.values()].sort((a, b) => depth(model, a) - depth(model, b));
  for (const c of clusters) {
    const box = g.hasNode(c.key) ? g.node(c.key) : null;
    if (!box || box.width == null) continue;
    const grp = el("g", { class: "cluster", "data-cluster": c.key });
    grp.append(el("rect", { x: box.x - box.width / 2, y: box.y - box.height / 2, width: box.width, height: box.height,
      rx: 8 }));
    grp.append(el("text", { x: box.x - box.width / 2 + 8, y: box.y - box.height / 2 + 16, class: "cluster-label" },
      truncate(c.label, Math.max(8, Math.floor(box.width / 7)))));
    svg.append(grp);
  }
  for (const e of g.edges()) {
    const points = g.edge(e).points || [];
    if (!points.length) continue;
    const d = points.map((p, i) => `${i ? "L" : "M"} ${p.x} ${p.y}`).join(" ");
    svg.append(el("path", { d, class: "edge", "marker-end": "url(#arrow)", "data-from": e.v, "data-to": e.w }));
  }
  for (const n of model.nodes.values()) {
    const box = g.node(n.key);
    const grp = el("g", {
      class: `node state-${cssState(n.state)}${n.issues.length ? " has-issues" : ""}`,
      "data-key": n.key, "data-step": n.id, "data-path": n.path, "data-state": n.state,
      "data-issues": n.issues.length, tabindex: 0, transform: `translate(${box.x - NODE_W / 2},${box.y - NODE_H / 2})`,
    });
    const title = el("title", {}, [n.path, ...n.issues.map((i) => `⚠ ${i.message}`)].join("\n"));
    grp.append(title, el("rect", { width: NODE_W, height: NODE_H, rx: 6 }));
    grp.append(el("text", { x: 10, y: 19, class: "node-label" }, truncate(n.label, 20)));
    grp.append(el("text", { x: 10, y: 36, class: "node-sub" }, truncate(subtitle(n), 26)));
    if (n.issues.length) {
      grp.append(el("circle", { cx: NODE_W - 4, cy: 4, r: 10, class: "issue-badge" }));
      grp.append(el("text", { x: NODE_W - 4, y: 8, class: "issue-count", "text-anchor": "middle" },
        String(n.issues.length)));
    }
    grp.addEventListener("click", () => onSelect && onSelect(n));
    grp.addEventListener("keydown", (ev) => { if (ev.key === "Enter" && onSelect) onSelect(n); });
    svg.append(grp);
  }
  container.append(svg);
  if (model.omitted) {
    const note = document.createElement("p");
    note.className = "muted";
    note.textContent = `${model.omitted} more nested entries are not drawn.`;
    container.append(note);
  }
  return svg;
}

// Recolours the drawn nodes from a newer model of the same plan; false when the shape changed
// (a node appeared or vanished), so the caller redraws.
export function updateStates(svg, model) {
  if (!svg) return false;
  const drawn = svg.querySelectorAll("g.node");
  if (drawn.length !== model.nodes.size) return false;
  for (const grp of drawn) {
    const n = model.nodes.get(grp.getAttribute("data-key"));
    if (!n) return false;
    grp.setAttribute("data-state", n.state);
    grp.setAttribute("class", `node state-${cssState(n.state)}${n.issues.length ? " has-issues" : ""}`);
    grp.querySelector(".node-sub").textContent = truncate(subtitle(n), 26);
  }
  return true;
}

function depth(model, c) {
  let d = 0;
  for (let p = c.parent; p; p = (model.clusters.get(p) || {}).parent) d++;
  return d;
}

function cssState(state) {
  return String(state || "pending").replace(/[^a-z_]/gi, "");
}

function truncate(text, n) {
  const s = String(text);
  return s.length > n ? s.slice(0, n - 1) + "…" : s;
}
