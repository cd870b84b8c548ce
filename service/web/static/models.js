// Models page: what the store holds (GET /models, /models/{name}, /models/{name}/{version}),
// and, for an admin token, moving an alias (PUT /models/{name}/aliases/{alias}).
import { getJSON, sendJSON } from "./api.js";
import { $, h, say, shortSha } from "./dom.js";

let context = null;

/** Every family with its versions' summaries: [{name, aliases, latest, versions: [...]}]. */
export async function loadCatalog() {
  const { models } = await getJSON("/models");
  return Promise.all(models.map((family) => getJSON(`/models/${encodeURIComponent(family.name)}`)
    .then((detail) => ({ ...detail, latest: family.latest }))));
}

/** The refs a form offers: each alias, and the bare name (its latest version). */
export function refChoices(catalog) {
  const choices = [];
  for (const family of catalog) {
    const byVersion = new Map(family.versions.map((v) => [v.version, v]));
    for (const [alias, version] of Object.entries(family.aliases)) {
      choices.push({ ref: `${family.name}:${alias}`, family: family.name, summary: byVersion.get(version) });
    }
    choices.push({ ref: family.name, family: family.name, summary: byVersion.get(family.latest) });
  }
  for (const choice of choices) {
    const { version, architecture } = choice.summary;
    choice.label = `${choice.ref} (${architecture}, v${version})`;
  }
  return choices;
}

/** The task's default model, plus one of the other architecture to compare it with. */
export function defaultRefs(choices, defaults) {
  const tasks = Object.keys(defaults).sort();
  const wanted = tasks.length ? defaults[tasks.includes("default") ? "default" : tasks[0]] : null;
  const first = choices.find((c) => c.ref === wanted) || choices[0];
  if (!first) return [];
  // comparable: the same classes (the same task), another architecture
  const sameClasses = (c) => c.summary.class_names.join("\n") === first.summary.class_names.join("\n");
  const other = choices.find((c) => c.family !== first.family && sameClasses(c)
    && c.summary.architecture !== first.summary.architecture);
  return other ? [first.ref, other.ref] : [first.ref];
}

/** Checkboxes for `choices` in `container`, `checked` ones ticked; ids prefixed by `prefix`. */
export function modelCheckboxes(container, choices, checked, prefix) {
  container.replaceChildren(...choices.map((choice, i) => h("span", { class: "check" },
    h("input", { type: "checkbox", id: `${prefix}-${i}`, value: choice.ref, checked: checked.includes(choice.ref) }),
    h("label", { for: `${prefix}-${i}` }, choice.label))));
}

function defense(spec) {
  const train = spec?.train;
  if (!train) return spec ? "none" : "unknown";
  if (train.adversarial) {
    const a = train.adversarial;
    return `${a.method === "trades" ? "TRADES" : "PGD-AT"} ε=${a.epsilon} steps=${a.steps ?? 7}`;
  }
  return train.noise_sigma ? `Gaussian noise σ=${train.noise_sigma}` : "none";
}

function metrics(manifest) {
  const rows = Object.entries(manifest.metrics || {});
  if (!rows.length) return "none recorded";
  return rows.map(([split, m]) => `${split}: accuracy ${m.accuracy.toFixed(3)}, balanced ${m.balanced_accuracy.toFixed(3)}`
    + (m.macro_roc_auc == null ? "" : `, AUC ${m.macro_roc_auc.toFixed(3)}`) + ` (n=${m.n})`).join("; ");
}

function accepts(manifest) {
  const a = manifest.accepts || {};
  const modality = (a.modalities || []).join("/") || "any modality";
  const body = (a.body_parts || []).join("/") || "any body part";
  return `PNG, JPEG; DICOM: ${modality}, ${body}`;
}

function familyTable(family, manifests) {
  const aliasText = Object.entries(family.aliases).map(([a, v]) => `${a} → v${v}`).join(", ") || "none";
  const rows = family.versions.map((summary, i) => {
    const m = manifests[i];
    return h("tr", {},
      h("td", {}, `v${summary.version}`),
      h("td", {}, summary.aliases.join(", ")),
      h("td", {}, summary.architecture),
      h("td", {}, m.architecture.architecture === "attention" ? m.architecture.attention_variant : "—"),
      h("td", {}, defense(m.training_spec)),
      h("td", {}, `${summary.input_size} px`),
      h("td", {}, summary.class_names.join(", ")),
      h("td", {}, accepts(m)),
      h("td", {}, metrics(m)),
      h("td", {}, h("code", { title: summary.weights_sha256 }, summary.weights_sha256)),
      h("td", {}, summary.loaded ? "loaded" : "on disk"));
  });
  const headers = ["Version", "Aliases", "Architecture", "Attention variant", "Defense", "Input",
    "Classes", "Accepts", "Metrics", "Weights sha256", "Memory"];
  return h("section", { class: "panel family", "data-model": family.name },
    h("h3", {}, family.name),
    h("p", {}, `Aliases: ${aliasText}. Latest: v${family.latest}.`),
    h("div", { class: "scroll" }, h("table", {},
      h("thead", {}, h("tr", {}, headers.map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, rows))));
}

async function render() {
  const list = $("#models-list");
  say($("#models-error"), "");
  try {
    context.catalog = await loadCatalog();
    const sections = await Promise.all(context.catalog.map(async (family) => {
      const manifests = await Promise.all(family.versions.map((v) =>
        getJSON(`/models/${encodeURIComponent(family.name)}/${v.version}`)));
      return familyTable(family, manifests);
    }));
    list.replaceChildren(...(sections.length ? sections : [h("p", {}, "The store holds no model yet.")]));
    const select = $("#alias-model");
    const chosen = select.value;
    select.replaceChildren(...context.catalog.map((f) => h("option", { value: f.name, selected: f.name === chosen }, f.name)));
  } catch (error) {
    say($("#models-error"), error.message);
  }
}

async function moveAlias(event) {
  event.preventDefault();
  const name = $("#alias-model").value;
  const alias = $("#alias-name").value.trim();
  const version = Number($("#alias-version").value);
  const result = $("#alias-result");
  try {
    const moved = await sendJSON(`/models/${encodeURIComponent(name)}/aliases/${encodeURIComponent(alias)}`, { version }, "PUT");
    const before = moved.previous == null ? "unset" : `v${moved.previous}`;
    say(result, `${moved.name}:${moved.alias} now points at v${moved.version} (was ${before}); weights ${shortSha(moved.weights_sha256)}`);
    result.className = "ok";
    await render();
  } catch (error) {
    say(result, error.message);
    result.className = "error";
  }
}

export function init(ctx) {
  context = ctx;
  $("#alias-form").addEventListener("submit", moveAlias);
}

export function show() {
  render();
}
