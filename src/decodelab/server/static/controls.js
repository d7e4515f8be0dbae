// decodelab web explorer: the sampler controls and the constraint box.
//
// The controls are built from /api/info's stage list (the server's registry): every stage in the default
// order, with a plain-language explanation behind its ⓘ, and one slider per numeric setting that declares one.
// A stage with no slider (logit bias, bans) is listed and says how to set it.
"use strict";

const SCALAR_KINDS = ["float", "int"]; // setting kinds a slider can set
const GREEDY_SETTING = "temperature"; // 0 means greedy (GenerationConfig.is_greedy)

// The constraint kinds the page can set, as /api/info lists them (`constraint_kinds`); how each reads the box.
const CONSTRAINT_KINDS = {
  json_schema: {
    label: "JSON schema",
    hint: "JSON valid under this JSON Schema.",
    example: '{"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}',
  },
  json_object: { label: "JSON object", hint: "Any JSON object.", noSource: true },
  regex: {
    label: "regex",
    hint: "The whole output matches this regular expression (Rust syntax; a leading space counts).",
    example: " [0-9]{4}-[0-9]{2}-[0-9]{2}",
  },
  choice: {
    label: "choice",
    hint: "Exactly one of these, one per line, as typed (' Paris' starts with a space).",
    example: " Paris\n Lyon\n 서울",
    source: (text) => text.split("\n").map((line) => line.replace(/\r$/, "")).filter((line) => line !== ""),
  },
  grammar: {
    label: "grammar",
    hint: "A sentence of this context-free grammar: Lark (start: ...) or GBNF (root ::= ...).",
    example: 'start: num " + " num " = " num\nnum: /[0-9]{1,3}/',
  },
};

function buildControls(info) {
  const byName = new Map(info.stages.map((stage) => [stage.name, stage]));
  page.stages = info.default_order.map((name) => byName.get(name)).filter(Boolean).map((stage) => ({
    ...stage, settings: stage.settings.map((setting, index) => ({ ...setting, offValues: offValues(setting, index) })),
  }));
  page.controls = [];
  const box = $("sampler-controls");
  box.replaceChildren();
  for (const stage of page.stages) box.append(stageControls(stage));
  showSliderValues();
}

// One stage: its name, where it runs, its explanation (ⓘ), and a slider per numeric setting.
function stageControls(stage) {
  const local = runsLocally(stage);
  const group = element("div", "stage-controls");
  group.dataset.stage = stage.name;
  const head = element("div", "stage-head");
  head.append(element("span", "stage-name", stageName(stage.name)));
  if (!local) head.append(element("span", "where", "server"));
  const sliders = stage.settings.filter((setting) => SCALAR_KINDS.includes(setting.kind) && setting.slider);
  const help = stage.settings.map((setting) => `${stageName(setting.name)}: ${setting.help}.`).join(" ");
  const where = local ? "The page re-runs this stage itself as you move the slider."
    : "The server computes this stage (the bars ask it).";
  const unset = sliders.length ? "" : ` No slider: set it through the API (config.${stage.settings[0].name}).`;
  const { button, note } = explainer(`${stage.doc} ${help} ${where}${unset}`);
  head.append(button);
  group.append(head, note);
  for (const setting of sliders) group.append(slider(stage, setting, local));
  return group;
}

function slider(stage, setting, local) {
  const [low, high, step] = setting.slider;
  const id = setting.name.replaceAll("_", "-");
  const value = initialValue(setting);
  const input = document.createElement("input");
  Object.assign(input, { id, type: "range", min: Math.min(low, value), max: Math.max(high, value), step });
  input.value = value;
  input.dataset.stage = stage.name;
  const output = element("output", "", "");
  output.id = `${id}-value`;
  output.htmlFor = id;
  const label = element("label", local ? "slider" : "slider server");
  label.title = `${setting.name}: ${setting.help}` + (local ? "" : " — computed by the server");
  label.dataset.setting = setting.name;
  label.append(element("span", "name", id), input, output);
  input.addEventListener("input", slidersMoved);
  page.controls.push({ setting, stage, input, output });
  return label;
}

// The numbers that turn a setting's stage off. A slider cannot be "unset": a stage whose first setting is off
// only when unset (null) is off at the slider's low end.
function offValues(setting, index) {
  const numbers = setting.off.filter((value) => typeof value === "number");
  return numbers.length || index > 0 || !setting.slider ? numbers : [setting.slider[0]];
}

// What a control starts at: the setting's default, else the first number that means "off".
function initialValue(setting) {
  const value = [setting.default, ...setting.offValues].find((v) => typeof v === "number");
  return value === undefined ? setting.slider[0] : value;
}

function controlValue(control) {
  const value = Number(control.input.value);
  return control.setting.kind === "int" ? Math.round(value) : value;
}

function isOff(setting, value) {
  return setting.offValues.includes(value);
}

// The controls' values by setting name, and the greedy checkbox.
function settings() {
  const values = {};
  for (const control of page.controls) values[control.setting.name] = controlValue(control);
  return { values, greedy: $("greedy").checked };
}

function isGreedy(s) {
  return s.greedy || s.values[GREEDY_SETTING] === 0;
}

// The GenerationConfig fields for the server: the settings of every stage that is on (its first setting is
// not at a value meaning "off"); a stage that is off sends nothing.
function samplerConfig() {
  const { values } = settings();
  return Object.assign({}, ...chainPlan(values, false).stages.map((stage) => stage.values));
}

// What every request sends as `config`: the sliders' settings and the applied constraint.
function pageConfig() {
  return page.constraint ? { ...samplerConfig(), constraint: page.constraint } : samplerConfig();
}

// The seed field: a whole number, or null when empty (then the server picks one and reports it).
function seedValue() {
  const text = $("seed").value.trim();
  if (!text) return null;
  if (!/^\d+$/.test(text)) throw new ApiError(`the seed must be a whole number from 0, got ${text}`, 0);
  const seed = Number(text);
  // past 2**53 a double would change it: sent as its digits
  return Number.isSafeInteger(seed) || typeof JSON.rawJSON !== "function" ? seed : JSON.rawJSON(text);
}

// The stages that are on, in order, with their settings; greedy leaves out the warpers (as the server does).
// `local`: chain.js runs them all, so the page can reshape the bars itself.
function chainPlan(values, greedy) {
  const stages = [];
  for (const stage of page.stages) {
    if (greedy && stage.warper) continue;
    const first = stage.settings[0];
    if (!(first.name in values) || isOff(first, values[first.name])) continue;
    const own = {};
    for (const setting of stage.settings) if (setting.name in values) own[setting.name] = values[setting.name];
    stages.push({ name: stage.name, values: own, local: runsLocally(stage) });
  }
  return { greedy, stages, local: stages.every((stage) => stage.local) };
}

function decimals(step) {
  for (let places = 0; places < 10; places++) {
    const scaled = step * 10 ** places;
    if (Math.abs(scaled - Math.round(scaled)) < 1e-9) return places;
  }
  return 10;
}

function formatValue(control) {
  const { setting } = control;
  const value = controlValue(control);
  if (isOff(setting, value)) return setting.name === GREEDY_SETTING && value === 0 ? "0 (greedy)" : "off";
  return setting.kind === "int" ? String(value) : value.toFixed(decimals(setting.slider[2]));
}

function showSliderValues() {
  for (const control of page.controls) control.output.textContent = formatValue(control);
}

function slidersMoved() {
  showSliderValues();
  renderBars(); // local stages: no request; others: one request once the sliders rest
}

// ---------- the constraint box ----------

// The kind selector lists what /api/info says the server takes.
function buildConstraintBox(info) {
  const select = $("constraint-kind");
  select.replaceChildren(element("option", "", "none"));
  select.options[0].value = "";
  for (const kind of info.constraint_kinds || []) {
    const option = element("option", "", CONSTRAINT_KINDS[kind] ? CONSTRAINT_KINDS[kind].label : kind);
    option.value = kind;
    select.append(option);
  }
  showConstraintBox();
}

// The box as a config.constraint ({kind, source}), or null for "none". The server checks it and says what
// is wrong; the page only reads a choice's lines into a list.
function boxConstraint() {
  const kind = $("constraint-kind").value;
  if (!kind) return null;
  const known = CONSTRAINT_KINDS[kind] || {};
  if (known.noSource) return { kind };
  const text = $("constraint-source").value;
  return { kind, source: known.source ? known.source(text) : text };
}

function showConstraintBox() {
  const kind = $("constraint-kind").value;
  const known = CONSTRAINT_KINDS[kind] || {};
  const source = $("constraint-source");
  source.hidden = !kind || Boolean(known.noSource);
  source.placeholder = known.example ? `e.g. ${known.example}` : "";
  $("constraint-hint").textContent = kind ? known.hint || "" : "No constraint: every token may follow.";
  const edited = JSON.stringify(boxConstraint()) !== JSON.stringify(page.constraint);
  const status = $("constraint-status");
  status.textContent = edited ? "edited: Apply to use it" : page.constraint ? "applied" : "";
  status.classList.toggle("edited", edited);
}

// Apply the box: the bars show its mask now (the server's answer), and the next step takes it on.
function applyConstraint() {
  showError(""); // the last constraint's error, if any: the server judges this one
  page.constraint = boxConstraint();
  showConstraintBox();
  renderBars();
  if (!page.state) $("constraint-status").textContent = page.constraint ? "applies when you start" : "";
}

// The plan with the constraint first: a stage the page never runs itself.
function withConstraint(plan) {
  if (!page.constraint) return plan;
  const stage = { name: "constraint", values: {}, local: false, kind: page.constraint.kind };
  return { ...plan, stages: [stage, ...plan.stages], local: false };
}
