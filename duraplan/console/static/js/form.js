// A form built from a JSON Schema (a wait_for_event step's payload_schema): one field per top-level
// property of an object schema; anything else (or a nested object/array) is a JSON text field.
// `readPayload()` returns the payload or throws an Error naming the field.

import { h } from "./dom.js";

export function schemaForm(schema) {
  const props = schema && schema.type === "object" && schema.properties && typeof schema.properties === "object"
    ? schema.properties : null;
  if (!props) {
    const area = h("textarea", { name: "payload", rows: 4, "aria-label": "payload (JSON)", placeholder: "JSON payload" });
    return { element: h("label", {}, "Payload (JSON)", area), readPayload: () => parseJson(area.value, "payload") };
  }
  const required = new Set(Array.isArray(schema.required) ? schema.required : []);
  const fields = Object.entries(props).map(([name, prop]) => field(name, prop || {}, required.has(name)));
  return {
    element: h("div", { class: "schema-form" }, ...fields.map((f) => f.element)),
    readPayload: () => {
      const out = {};
      for (const f of fields) {
        const value = f.read();
        if (value !== undefined) out[f.name] = value;
        else if (f.required) throw new Error(`${f.name} is required`);
      }
      return out;
    },
  };
}

function field(name, prop, required) {
  const type = Array.isArray(prop.type) ? prop.type.find((t) => t !== "null") : prop.type;
  const label = `${name}${required ? " *" : ""}`;
  const hint = prop.description ? h("small", { class: "muted" }, prop.description) : null;
  let input;
  let read;
  if (type === "boolean") {
    input = h("input", { type: "checkbox", name });
    read = () => input.checked;
  } else if (Array.isArray(prop.enum)) {
    input = h("select", { name }, h("option", { value: "" }, "—"),
      ...prop.enum.map((v, i) => h("option", { value: String(i) }, JSON.stringify(v))));
    read = () => (input.value === "" ? undefined : prop.enum[Number(input.value)]);
  } else if (type === "integer" || type === "number") {
    input = h("input", { type: "number", name, step: type === "integer" ? "1" : "any" });
    read = () => {
      if (input.value === "") return undefined;
      const n = Number(input.value);
      if (!Number.isFinite(n) || (type === "integer" && !Number.isInteger(n))) throw new Error(`${name} must be a ${type}`);
      return n;
    };
  } else if (type === "string") {
    input = h("input", { type: "text", name });
    read = () => (input.value === "" && !required ? undefined : input.value);
  } else {
    input = h("textarea", { name, rows: 3, placeholder: "JSON" });
    read = () => (input.value.trim() === "" ? undefined : parseJson(input.value, name));
  }
  return { name, required, element: h("label", { class: "field" }, label, input, hint), read };
}

function parseJson(text, name) {
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new Error(`${name} is not valid JSON: ${err.message}`);
  }
}
