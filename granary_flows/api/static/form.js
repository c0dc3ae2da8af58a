// The run form of a process, drawn from its OGC process description (the JSON in <script id="process">), and its
// submission as an OGC execute request. Every shape the task formats produce has a field: strings (URIs, dates,
// long text), numbers, booleans, enumerations (a select; a list of them, a multi-select), lists (rows to add and
// remove), objects (a fieldset of their properties), nullable and optional values (left out when empty, never
// pre-filled with anything but the schema's default), and anything else as JSON.
"use strict";

const description = JSON.parse(document.getElementById("process").textContent);
const form = document.getElementById("run");
const said = document.getElementById("said");
let counter = 0;

function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "text") node.textContent = value;
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children) if (child) node.append(child);
  return node;
}

// The branch of a schema that is not null (`anyOf: [X, {type: null}]`, `type: [T, "null"]`, `nullable`).
function concrete(schema) {
  schema = schema || {};
  for (const key of ["anyOf", "oneOf"]) {
    if (Array.isArray(schema[key])) {
      const others = schema[key].filter((s) => s && s.type !== "null");
      if (others.length === 1) return { ...schema, ...concrete(others[0]), [key]: undefined, default: schema.default };
      const consts = schema[key].filter((s) => s && "const" in s);
      if (consts.length === schema[key].length) return { ...schema, enum: consts.map((s) => s.const) };
    }
  }
  if (Array.isArray(schema.type)) {
    const others = schema.type.filter((t) => t !== "null");
    return { ...schema, type: others.length === 1 ? others[0] : undefined };
  }
  return schema;
}

// A field for one value of `schema`; returns {node, collect}, where collect() gives the value or undefined.
function field(schema, label, help, required) {
  schema = concrete(schema);
  const id = `field-${++counter}`;
  const wrap = (control, extra) => {
    const box = element("div", { class: "field" },
      element("label", { for: id }, label, required ? null : element("span", { class: "hint", text: " (optional)" })));
    if (help) box.append(element("div", { class: "hint", text: help }));
    box.append(control);
    if (extra) box.append(extra);
    return box;
  };
  const type = schema.type;
  if (Array.isArray(schema.enum)) {
    const select = element("select", { id, name: label });
    if (!required || schema.default === undefined) select.append(element("option", { value: "", text: "" }));
    schema.enum.forEach((option, index) => {
      select.append(element("option", { value: String(index), text: String(option),
        selected: JSON.stringify(option) === JSON.stringify(schema.default) }));
    });
    return { node: wrap(select), collect: () => (select.value === "" ? undefined : schema.enum[Number(select.value)]) };
  }
  if (type === "array") return list(schema.items || {}, schema, label, help, required, id, wrap);
  if (type === "object" && schema.properties) {
    const box = element("fieldset", { id }, element("legend", { text: label }));
    if (help) box.append(element("div", { class: "hint", text: help }));
    const needed = new Set(schema.required || []);
    const parts = Object.entries(schema.properties).map(([name, sub]) => {
      const part = field(sub, sub.title || name, sub.description, needed.has(name));
      box.append(part.node);
      return [name, part];
    });
    const collect = () => {
      const value = {};
      for (const [name, part] of parts) {
        const one = part.collect();
        if (one !== undefined) value[name] = one;
      }
      return Object.keys(value).length || required ? value : undefined;
    };
    return { node: box, collect };
  }
  if (type === "boolean") {
    if (required || schema.default !== undefined) {
      const box = element("input", { id, type: "checkbox", name: label, checked: schema.default === true });
      return { node: wrap(box), collect: () => box.checked };
    }
    const select = element("select", { id, name: label }, element("option", { value: "", text: "" }),
      element("option", { value: "true", text: "true" }), element("option", { value: "false", text: "false" }));
    return { node: wrap(select), collect: () => (select.value === "" ? undefined : select.value === "true") };
  }
  if (type === "integer" || type === "number") {
    const input = element("input", { id, type: "number", name: label, step: type === "integer" ? "1" : "any",
      min: schema.minimum, max: schema.maximum, value: schema.default });
    return { node: wrap(input), collect: () => (input.value === "" ? undefined : Number(input.value)) };
  }
  if (type === "string" || type === undefined && !schema.properties && !schema.items) {
    if (schema.format === "date-time") {
      const input = element("input", { id, type: "datetime-local", name: label, step: "1" });
      if (typeof schema.default === "string") input.value = schema.default.replace(/Z$/, "").slice(0, 19);
      return { node: wrap(input), collect: () => (input.value === "" ? undefined : `${input.value.length === 16 ? `${input.value}:00` : input.value}Z`) };
    }
    const long = (schema.maxLength || 0) > 200 || schema.contentMediaType;
    const input = long ? element("textarea", { id, name: label, rows: 4 })
      : element("input", { id, name: label, type: schema.format === "uri" ? "url" : "text",
        placeholder: schema.format === "uri" ? "file:///..., s3://... or https://..." : undefined });
    if (typeof schema.default === "string") input.value = schema.default;
    return { node: wrap(input), collect: () => (input.value === "" ? undefined : input.value) };
  }
  const area = element("textarea", { id, name: label, rows: 3, placeholder: "JSON" });
  if (schema.default !== undefined) area.value = JSON.stringify(schema.default);
  return {
    node: wrap(area),
    collect: () => {
      if (area.value.trim() === "") return undefined;
      try { return JSON.parse(area.value); } catch (error) { throw new Error(`${label}: not JSON`); }
    },
  };
}

// A list: a multi-select for a list of enumerated values, else rows of item fields to add and remove.
function list(items, schema, label, help, required, id, wrap) {
  items = concrete(items);
  const defaults = Array.isArray(schema.default) ? schema.default : [];
  if (Array.isArray(items.enum)) {
    const select = element("select", { id, name: label, multiple: true, size: Math.min(items.enum.length, 8) });
    items.enum.forEach((option, index) => {
      select.append(element("option", { value: String(index), text: String(option),
        selected: defaults.some((d) => JSON.stringify(d) === JSON.stringify(option)) }));
    });
    const collect = () => {
      const chosen = [...select.selectedOptions].map((o) => items.enum[Number(o.value)]);
      return chosen.length || required ? chosen : undefined;
    };
    return { node: wrap(select), collect };
  }
  const rows = element("div", { class: "items", id });
  const parts = [];
  const add = (value) => {
    const part = field(value === undefined ? items : { ...items, default: value }, `${label} ${parts.length + 1}`,
      null, true);
    const row = element("div", { class: "item" }, part.node);
    const remove = element("button", { type: "button", text: "remove", "aria-label": `remove ${label} item` });
    remove.addEventListener("click", () => { parts.splice(parts.indexOf(part), 1); row.remove(); });
    row.append(remove);
    parts.push(part);
    rows.append(row);
  };
  defaults.forEach(add);
  const more = element("button", { type: "button", text: `add ${label}`, "aria-label": `add ${label}` });
  more.addEventListener("click", () => add(undefined));
  const collect = () => {
    const values = parts.map((part) => part.collect()).filter((value) => value !== undefined);
    return values.length || required ? values : undefined;
  };
  return { node: wrap(rows, more), collect };
}

const inputs = Object.entries(description.inputs || {}).map(([name, input]) => {
  const required = (input.minOccurs ?? 1) > 0;
  const many = input.maxOccurs === "unbounded" || (input.maxOccurs ?? 1) > 1;
  const schema = many ? { type: "array", items: input.schema, default: input.default } : input.schema;
  const part = field(schema, input.title || name, input.description, required);
  document.getElementById("fields").append(part.node);
  return [name, part];
});

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  said.textContent = "";
  const values = {};
  try {
    for (const [name, part] of inputs) {
      const value = part.collect();
      if (value !== undefined) values[name] = value;
    }
  } catch (error) {
    said.textContent = error.message;
    return;
  }
  const response = await fetch(form.dataset.execute, {
    method: "POST", credentials: "same-origin",
    headers: { "Content-Type": "application/json", Prefer: "respond-async" },
    body: JSON.stringify({ inputs: values }),
  });
  if (response.status === 201) {
    window.location = `${response.headers.get("Location")}?f=html`;
    return;
  }
  const problem = await response.json().catch(() => ({}));
  said.textContent = `${problem.title || "refused"}: ${problem.detail || response.status}`;
});
