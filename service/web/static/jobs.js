// Jobs page: the list with live progress (polled while the page is shown), evaluation and
// training forms, cancel, and a succeeded evaluation's report. Needs the token's jobs scope.
import { getJSON, request, sendJSON } from "./api.js";
import { $, $$, h, say } from "./dom.js";
import { defaultRefs, modelCheckboxes, refChoices } from "./models.js";
import { renderReport } from "./report.js";

const POLL_MS = 1500;
const ACTIVE = new Set(["queued", "running"]);
let context = null;
let timer = null;
let watching = null; // an evaluation submitted here: its report opens when it succeeds

const allowed = () => context.session.scopes.includes("jobs");

function row(job) {
  const progress = h("progress", { max: "100", value: String(job.progress), "aria-label": `progress of job ${job.id.slice(0, 8)}` });
  const actions = h("div", { class: "actions" });
  if (ACTIVE.has(job.state)) {
    actions.append(h("button", { type: "button", class: "secondary", "data-action": "cancel", "data-job": job.id, onclick: () => cancel(job.id) }, "Cancel"));
  }
  if (job.kind === "evaluation" && job.state === "succeeded") {
    actions.append(h("button", { type: "button", "data-action": "report", "data-job": job.id, onclick: () => openReport(job.id) }, "Report"));
  }
  const stage = job.epochs ? ` · epoch ${job.epoch ?? 0}/${job.epochs}` : "";
  return h("tr", { "data-job-id": job.id, "data-state": job.state },
    h("td", {}, h("code", { title: job.id }, job.id.slice(0, 8))),
    h("td", {}, job.kind),
    h("td", { class: `state-${job.state}` }, job.state, job.error ? h("div", { class: "hint" }, job.error) : null),
    h("td", {}, progress, h("span", { class: "hint" }, ` ${job.progress.toFixed(0)} %${stage}`)),
    h("td", { class: "hide-narrow" }, new Date(job.created_at).toLocaleString()),
    h("td", {}, actions));
}

async function refresh() {
  try {
    const { jobs, total } = await getJSON("/jobs?limit=20");
    const focused = document.activeElement?.dataset ?? {};
    const table = h("table", { class: "jobs-table" },
      h("caption", { class: "hint" }, `${total} job${total === 1 ? "" : "s"}, newest first (20 shown)`),
      h("thead", {}, h("tr", {}, ["Job", "Kind", "State", "Progress", "Created", "Actions"].map((t, i) =>
        h("th", { scope: "col", class: i === 4 ? "hide-narrow" : null }, t)))),
      h("tbody", {}, jobs.map(row)));
    $("#jobs-list").replaceChildren(h("div", { class: "scroll" }, table));
    if (focused.action) $(`button[data-action="${focused.action}"][data-job="${focused.job}"]`)?.focus();
    say($("#jobs-error"), "");
    const watched = jobs.find((j) => j.id === watching);
    if (watched && !ACTIVE.has(watched.state)) {
      watching = null;
      if (watched.state === "succeeded") openReport(watched.id);
    }
  } catch (error) {
    say($("#jobs-error"), error.message);
  }
}

async function cancel(id) {
  try {
    await request(`/jobs/${id}/cancel`, { method: "POST" });
  } catch (error) {
    say($("#jobs-error"), error.message);
  }
  refresh();
}

async function openReport(id) {
  const section = $("#report");
  section.hidden = false;
  $("#report-title").textContent = `Report of job ${id.slice(0, 8)}`;
  $("#report-body").replaceChildren(h("p", { class: "busy" }, "Loading the report…"));
  try {
    const [json, md] = await Promise.all([
      request(`/jobs/${id}/report`).then((r) => r.text()),
      request(`/jobs/${id}/report.md`, { accept: "text/markdown" }).then((r) => r.text()),
    ]);
    renderReport($("#report-body"), id, json, md);
    $("#report-title").focus();
  } catch (error) {
    $("#report-body").replaceChildren(h("p", { class: "error" }, error.message));
  }
}

function checked(container) {
  return $$("input:checked", container).map((box) => box.value);
}

async function submit(event, path, body, result) {
  event.preventDefault();
  const out = $(result);
  try {
    const job = await sendJSON(path, body());
    say(out, `Submitted job ${job.job_id.slice(0, 8)} (${job.state}).`);
    out.className = "ok";
    refresh();
    return job;
  } catch (error) {
    say(out, error.message);
    out.className = "error";
    return null;
  }
}

function evaluationBody() {
  const epsilons = $("#eval-epsilons").value.split(",").map((x) => x.trim()).filter(Boolean).map(Number);
  if (epsilons.some((x) => !Number.isFinite(x) || x < 0)) throw new Error("ε values must be numbers ≥ 0, separated by commas");
  const limit = $("#eval-limit").value;
  return {
    models: checked($("#eval-models")),
    dataset: { kind: $("#eval-kind").value, path: $("#eval-path").value.trim() },
    split: $("#eval-split").value,
    evaluation: { attacks: checked($("#eval-attacks")).map((name) => ({ name })), epsilons },
    ...(limit ? { limit: Number(limit) } : {}),
  };
}

function trainingBody() {
  return {
    name: $("#train-name").value.trim(),
    dataset: { kind: $("#train-kind").value, path: $("#train-path").value.trim() },
    model: { architecture: $("#train-architecture").value },
    preprocess: { input_size: Number($("#train-size").value) },
    train: { epochs: Number($("#train-epochs").value) },
  };
}

export function init(ctx) {
  context = ctx;
  $("#jobs-denied").hidden = allowed();
  if (!allowed()) return;
  const choices = refChoices(ctx.catalog);
  modelCheckboxes($("#eval-models"), choices, defaultRefs(choices, ctx.session.default_models), "eval-model");
  $("#eval-attacks").replaceChildren(...ctx.session.attacks.map((name, i) => h("span", { class: "check" },
    h("input", { type: "checkbox", id: `eval-attack-${i}`, value: name, checked: name === "fgsm" }),
    h("label", { for: `eval-attack-${i}` }, name.toUpperCase()))));
  $("#evaluation-form").addEventListener("submit", async (event) => {
    const job = await submit(event, "/jobs/evaluation", evaluationBody, "#eval-result");
    if (job) watching = job.job_id;
  });
  $("#training-form").addEventListener("submit", (event) => submit(event, "/jobs/training", trainingBody, "#train-result"));
}

export function show() {
  if (!allowed()) return;
  refresh();
  timer ??= setInterval(refresh, POLL_MS);
}

export function hide() {
  clearInterval(timer);
  timer = null;
}
