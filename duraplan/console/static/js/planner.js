// The planner: a goal (then revisions) sent to a chat session (POST /v1/chats/{session}/messages);
// each turn shows the proposed plan as a graph and its diff against the previous turn; submit runs
// the latest revision (POST /v1/chats/{session}/submit).

import { call } from "./api.js";
import { fill, h } from "./dom.js";
import { buildGraph } from "./graph.js";
import { drawGraph } from "./render.js";

export function render(root) {
  const session = h("input", { type: "text", id: "chat-session", value: `chat-${Date.now().toString(36)}`,
    "aria-label": "chat session", pattern: "[A-Za-z0-9][A-Za-z0-9_.:\\-]{0,127}" });
  const text = h("textarea", { id: "chat-text", rows: 4, placeholder: "Goal, then changes to ask for", "aria-label": "message" });
  const send = h("button", { type: "submit", id: "chat-send" }, "Send");
  const submit = h("button", { type: "button", id: "chat-submit", disabled: true }, "Run latest plan");
  const status = h("p", { id: "chat-status", role: "status", class: "muted" });
  const turns = h("div", { id: "chat-turns" });
  const graphBox = h("div", { class: "graph-box", id: "chat-graph" });
  const form = h("form", { class: "card editor" }, h("h2", {}, "Planner"), h("label", {}, "Session", session),
    h("label", {}, "Message", text), send, submit, status, turns);
  fill(root, h("div", { class: "run-body" }, form, h("section", { class: "card grow" }, graphBox)));

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    if (!text.value.trim()) return;
    send.disabled = true;
    status.className = "muted";
    status.textContent = "Planning…";
    try {
      const rev = await call("POST", `/chats/${encodeURIComponent(session.value.trim())}/messages`, { text: text.value });
      session.disabled = true;  // the session's revisions continue from here
      text.value = "";
      status.textContent = `Revision ${rev.revision} · ${rev.model} · $${Number(rev.cost_usd || 0).toFixed(4)}`;
      turns.prepend(h("details", { class: "turn", open: true },
        h("summary", {}, `Revision ${rev.revision}: ${rev.message || rev.plan.name || ""}`),
        h("pre", { class: "diff" }, ...diffLines(rev.diff || "(first revision)"))));
      drawGraph(graphBox, buildGraph({ plan: rev.plan }), null);
      submit.disabled = false;
    } catch (err) {
      status.className = "error";
      status.textContent = err.message;
    } finally {
      send.disabled = false;
    }
  });
  submit.addEventListener("click", async () => {
    try {
      const created = await call("POST", `/chats/${encodeURIComponent(session.value.trim())}/submit`, {});
      location.hash = `#/run/${encodeURIComponent(created.run_id)}`;
    } catch (err) {
      status.className = "error";
      status.textContent = err.message;
    }
  });
  return null;
}

function diffLines(diff) {
  return diff.split("\n").map((line) => h("span", {
    class: line.startsWith("+") && !line.startsWith("+++") ? "add" : line.startsWith("-") && !line.startsWith("---") ? "del" : "",
  }, line + "\n"));
}
