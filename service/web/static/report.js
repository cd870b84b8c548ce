// A finished evaluation's report, drawn from its JSON (GET /jobs/{id}/report) and markdown
// (GET /jobs/{id}/report.md): robust-accuracy curves per attack, the masking flags, the table,
// and the JSON to download.
import { lineChart } from "./chart.js";
import { h, percent, shortSha } from "./dom.js";

function curves(report) {
  const attacks = [...new Set(report.results.map((c) => c.attack))];
  return h("div", { class: "charts" }, attacks.map((attack) => {
    const models = [...new Set(report.results.filter((c) => c.attack === attack).map((c) => c.model))];
    const series = models.map((model) => ({
      name: model,
      points: report.results.filter((c) => c.attack === attack && c.model === model).map((c) => ({
        x: c.epsilon, y: c.robust_accuracy, lo: c.robust_accuracy_ci95[0], hi: c.robust_accuracy_ci95[1],
        tip: `${model}, ${attack} ε=${c.epsilon}: robust accuracy ${percent(c.robust_accuracy)} `
          + `(95 % ${percent(c.robust_accuracy_ci95[0])}–${percent(c.robust_accuracy_ci95[1])}, n=${c.n})`,
      })),
    }));
    return lineChart({ title: `${attack}: robust accuracy vs ε`, xLabel: "ε (pixel units of 255)", yLabel: "robust accuracy", series });
  }));
}

function masking(report) {
  const { flags = [], not_checked: notChecked = {} } = report.masking ?? {};
  const items = flags.map((f) => h("li", { class: "flag", "data-check": f.check, "data-model": f.model },
    h("strong", {}, `⚠ ${f.check}`), ` (${f.model}, ε=${f.epsilon}): ${f.message}`));
  if (!items.length) items.push(h("li", {}, "No gradient-masking check fired."));
  for (const [check, why] of Object.entries(notChecked)) items.push(h("li", { class: "hint" }, `Not checked: ${check} (${why})`));
  return h("div", {}, h("h4", {}, "Gradient-masking checks"), h("ul", { class: "flags" }, items));
}

const cells = (line) => line.trim().replace(/^\||\|$/g, "").split("|").map((c) => c.trim().replace(/\*\*/g, ""));

/** Markdown as the report writes it: pipe tables become tables, other lines paragraphs. */
function markdown(text) {
  const blocks = [];
  let table = null;
  for (const line of text.split("\n")) {
    if (line.trim().startsWith("|")) {
      if (/^\s*\|[\s:|-]+\|\s*$/.test(line)) continue; // the header separator
      if (!table) {
        table = h("table", {}, h("thead", {}, h("tr", {}, cells(line).map((c) => h("th", { scope: "col" }, c)))), h("tbody"));
        blocks.push(h("div", { class: "scroll" }, table));
      } else {
        table.tBodies[0].append(h("tr", {}, cells(line).map((c) => h("td", {}, c))));
      }
      continue;
    }
    table = null;
    const plain = line.replace(/^#+\s*/, "").replace(/\*\*/g, "").trim();
    if (plain) blocks.push(h(line.startsWith("#") ? "h4" : "p", {}, plain));
  }
  return h("div", { class: "markdown" }, blocks);
}

function download(text, name, type, label) {
  const link = h("a", { href: URL.createObjectURL(new Blob([text], { type })), download: name, class: "download" }, label);
  return link;
}

export function renderReport(container, jobId, reportText, markdownText) {
  const report = JSON.parse(reportText);
  const models = report.models.map((m) => h("li", {}, `${m.name} v${m.version} (${m.architecture ?? "?"}`
    + `${m.defense ? `, ${m.defense}` : ""}) · weights sha256 `, h("code", { title: m.weights_sha256 }, shortSha(m.weights_sha256))));
  container.replaceChildren(
    h("p", {}, `Job ${jobId}: ${report.n} images, created ${report.created_at}, code ${report.code_version}.`),
    h("ul", {}, models),
    curves(report),
    masking(report),
    h("h4", {}, "Table"),
    markdown(markdownText),
    h("p", { class: "actions" },
      download(reportText, `report-${jobId}.json`, "application/json", "Download the JSON"), " ",
      download(markdownText, `report-${jobId}.md`, "text/markdown", "Download the markdown")));
}
