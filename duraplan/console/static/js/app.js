// The console's entry point: sign-in, navigation and a hash router (#/runs, #/run/ID, #/editor,
// #/planner). Each page module exports `render(root, params)` returning a cleanup function.

import { ApiError, apiKey, call, signIn, signOut } from "./api.js";
import { fill, h } from "./dom.js";
import * as editor from "./editor.js";
import * as planner from "./planner.js";
import * as run from "./run.js";
import * as runs from "./runs.js";

const main = document.getElementById("main");
const nav = document.getElementById("nav");
let cleanup = null;

function signInPage(root, message) {
  const input = h("input", { type: "password", id: "api-key", name: "api-key", autocomplete: "off",
    placeholder: "dp_…", required: true, "aria-label": "API key" });
  const error = h("p", { class: "error", id: "sign-in-error", role: "alert" }, message || "");
  const form = h("form", { id: "sign-in", class: "card narrow" },
    h("h2", {}, "Sign in"),
    h("p", { class: "muted" }, "Use a tenant API key (duraplan tenants key issue). You see that tenant's runs only."),
    h("label", {}, "API key", input), error,
    h("button", { type: "submit" }, "Sign in"));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    signIn(input.value.trim());
    try {
      await call("GET", "/runs?limit=1");  // checks the key the way every later request will
      location.hash = "#/runs";
      route();
    } catch (err) {
      signOut();
      error.textContent = err instanceof ApiError && err.status === 401 ? "That API key was not accepted." : err.message;
    }
  });
  fill(root, form);
  input.focus();
  return null;
}

function drawNav() {
  const link = (href, text) => h("a", { href, class: location.hash.startsWith(href) ? "active" : null }, text);
  fill(nav,
    link("#/runs", "Runs"), link("#/editor", "Plan editor"), link("#/planner", "Planner"),
    h("button", { type: "button", id: "sign-out", class: "link", onclick: () => { signOut(); location.hash = "#/"; route(); } },
      "Sign out"));
}

export function route() {
  if (cleanup) cleanup();
  cleanup = null;
  const hash = location.hash.replace(/^#\/?/, "");
  const [page, ...rest] = hash.split("/");
  if (!apiKey()) {
    fill(nav);
    cleanup = signInPage(main);
    return;
  }
  drawNav();
  const onAuthError = (message) => { signOut(); fill(nav); signInPage(main, message); };
  const ctx = { onAuthError };
  if (page === "run" && rest.length) cleanup = run.render(main, decodeURIComponent(rest.join("/")), ctx);
  else if (page === "editor") cleanup = editor.render(main, ctx);
  else if (page === "planner") cleanup = planner.render(main, ctx);
  else cleanup = runs.render(main, ctx);
}

window.addEventListener("hashchange", route);
route();
