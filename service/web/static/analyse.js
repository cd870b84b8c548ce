// Analyse page: one image (PNG, JPEG or DICOM, dropped, chosen or picked from a PACS study)
// through POST /explain (or /predict for a token without the explain scope), one card per model
// side by side; the attack toggle reruns /explain with attack + ε and shows the attacked image's
// prediction and maps. The image itself is shown as POST /render answers, the pixels the service
// decodes: a browser cannot render DICOM (window/level, MONOCHROME1, first frame), and its own
// decoding of a PNG or JPEG can differ from the service's (EXIF orientation, colour profiles),
// so the maps would sit on another image than the one they explain. A token without the predict
// scope that /render needs sees a PNG or JPEG as the browser decodes it, and no DICOM image.
import { ApiError, request } from "./api.js";
import { $, $$, h, percent, say } from "./dom.js";
import { defaultRefs, modelCheckboxes, refChoices } from "./models.js";
import * as pacs from "./pacs.js";

const MAP_NAMES = { gradcam: "Grad-CAM", "gradcam++": "Grad-CAM++", attention: "Attention" };
let context = null;
// {file, preview: object URL or null (until /render answers), local: the preview is the file
// itself, why: no preview, in words, source: words or null}
let upload = null;
let clean = null; // the clean answer for the current image and options
let sequence = 0; // answers to superseded requests are dropped

const number = (x) => (Math.round(x * 100) / 100).toString();
const canExplain = () => context.session.scopes.includes("explain");
const canPredict = () => context.session.scopes.includes("predict");
const view = () => $("input[name=view]:checked").value;

function chooseFile(file, source = null) {
  if (upload?.preview) URL.revokeObjectURL(upload.preview);
  upload = { file, preview: null, local: false, why: null, source };
  clean = null;
}

/** Fill `target.preview` with the service's rendering of the file (once per file); a failure
 * only leaves the reason (the analysis, on the same bytes, says more). */
async function renderPreview(target) {
  if (target.preview || target.why) return;
  if (!canPredict()) {
    if (/^image\/(png|jpeg)$/.test(target.file.type)) {
      Object.assign(target, { preview: URL.createObjectURL(target.file), local: true });
    } else {
      target.why = "No preview: showing this file as the service decodes it (POST /render) needs the predict scope.";
    }
    return;
  }
  const form = new FormData();
  form.append("image", target.file, target.file.name);
  try {
    const blob = await (await request("/render", { method: "POST", form, accept: "image/png" })).blob();
    // another file chosen meanwhile: this one's URL would never be shown nor revoked
    if (target === upload && !target.preview) target.preview = URL.createObjectURL(blob);
  } catch (error) {
    target.why = `No preview: ${error.message}`;
  }
}

/** A file from elsewhere (a PACS): it becomes the form's image, then is analysed as if chosen. */
function analyseFile(file, source) {
  const files = new DataTransfer();
  files.items.add(file);
  $("#image").files = files.files;
  chooseFile(file, source);
  $("#view-clean").checked = true;
  run(false);
}

/** The robustness fields of a request: what is asked, and the settings that apply to it. */
function appendTrust(form, robustness) {
  form.append("robustness", robustness);
  const flip = robustness === "flip" || robustness === "all";
  const certify = robustness === "certify" || robustness === "all";
  for (const [name, id, wanted] of [["noise_sigma", "#noise-sigma", certify],
    ["certify_n", "#certify-n", certify], ["flip_steps", "#flip-steps", flip]]) {
    if (wanted && $(id).value !== "") form.append(name, $(id).value);
  }
}

function showTrustOptions() {
  const robustness = $("#robustness").value;
  $("#trust-options").hidden = robustness === "none";
  for (const element of $$("#trust-options [data-wants]")) {
    element.hidden = robustness !== "all" && robustness !== element.dataset.wants;
  }
}

function formFor(attacked) {
  const form = new FormData();
  form.append("image", upload.file, upload.file.name);
  for (const box of $$("#model-options input:checked")) form.append("models", box.value);
  form.append("allow_modality_mismatch", $("#allow-mismatch").checked ? "true" : "false");
  const robustness = $("#robustness").value;
  if (!canExplain()) {
    appendTrust(form, robustness);
    return form;
  }
  form.append("method", $("#method").value);
  if (attacked) {
    form.append("attack", $("#attack").value);
    form.append("epsilon", $("#epsilon").value);
    // a flip search explains its own adversarial image: with an attack only certify combines
    appendTrust(form, robustness === "certify" ? "certify" : "none");
  } else {
    appendTrust(form, robustness);
  }
  return form;
}

async function run(attacked) {
  if (!upload) return;
  if (!$$("#model-options input:checked").length) {
    say($("#analyse-error"), "Choose at least one model.");
    return;
  }
  const mine = ++sequence;
  const path = canExplain() ? "/explain" : "/predict";
  say($("#analyse-error"), "");
  $("#mismatch")?.remove();
  say($("#analyse-busy"), attacked ? `Attacking with ${$("#attack").value} at ε=${$("#epsilon").value}/255…` : "Analysing…");
  $("#analyse-run").disabled = true;
  try {
    const [response] = await Promise.all([
      request(path, { method: "POST", form: formFor(attacked) }), renderPreview(upload)]);
    const answer = await response.json();
    if (mine !== sequence) return;
    if (!attacked) clean = answer;
    render(answer, attacked);
    $("#attack-panel").disabled = !canExplain();
  } catch (error) {
    if (mine !== sequence) return;
    showError(error, attacked);
  } finally {
    if (mine === sequence) {
      say($("#analyse-busy"), "");
      $("#analyse-run").disabled = false;
    }
  }
}

function showError(error, attacked) {
  const refused = error instanceof ApiError && error.status === 422;
  if (refused && /noise_sigma/.test(error.message)) {
    say($("#analyse-error"), `${error.message} (the σ field: “Robustness settings”, above).`);
    return;
  }
  if (!refused || !/allow_modality_mismatch/.test(error.message)) {
    say($("#analyse-error"), error.message);
    return;
  }
  $("#results").replaceChildren();
  $("#image-info").replaceChildren();
  const override = h("button", { type: "button", id: "override" }, "Run anyway (override)");
  override.addEventListener("click", () => {
    $("#allow-mismatch").checked = true;
    run(attacked);
  });
  $("#image-info").before(h("div", { class: "mismatch", id: "mismatch", role: "alert" },
    h("p", {}, h("strong", {}, "A model does not accept this image. "), error.message),
    override));
}

function imageInfo(image) {
  const rows = [["Format", image.format], ["Size", `${image.width} × ${image.height} px`]];
  if (upload.source) rows.push(["From", upload.source]);
  if (image.frames > 1) rows.push(["Frames", `${image.frames} (the first is analysed)`]);
  if (image.dicom) {
    rows.push(["SOP Instance UID", image.dicom.sop_instance_uid ?? "—"],
      ["Modality", image.dicom.modality ?? "—"], ["Body part", image.dicom.body_part_examined ?? "not recorded"]);
  }
  const list = h("dl", {}, rows.flatMap(([k, v]) => [h("dt", {}, k), h("dd", { "data-field": k }, v)]));
  return h("div", { class: "panel info" }, list, preview(image));
}

function preview(image) {
  if (!upload.preview) return h("p", { class: "hint", id: "preview-missing" }, upload.why ?? "No preview.");
  const caption = upload.local ? "As this browser decodes the file (the service's rendering needs the predict scope)."
    : image.format === "dicom"
      ? "As the service renders it: Modality LUT, VOI LUT or window, MONOCHROME1 inverted, first frame."
      : "As the service decodes it.";
  return h("figure", { class: "preview" },
    h("img", { id: "preview", src: upload.preview, alt: `The ${image.format} image analysed` }),
    h("figcaption", {}, caption));
}

function bars(prediction, kind) {
  const rows = Object.entries(prediction.probabilities).sort((a, b) => b[1] - a[1]);
  return h("div", { class: `bars ${kind}`, role: "list", "aria-label": `${kind} class probabilities` },
    rows.map(([name, p]) => {
      const fill = h("span", { class: "fill" });
      fill.style.width = `${(100 * p).toFixed(1)}%`;
      return h("div", { class: `bar${name === prediction.top_class ? " winner" : ""}`, role: "listitem", "data-class": name, "data-probability": p },
        h("span", { class: "name" }, name), h("span", { class: "track", "aria-hidden": "true" }, fill),
        h("span", { class: "value" }, percent(p)));
    }));
}

function trustWords(block) {
  const said = [];
  const linf = block.flip?.linf;
  const l2 = block.flip?.l2;
  if (linf) {
    said.push(linf.upper == null
      ? `No change found up to ${number(linf.lower)}/255 per pixel (L∞): searched, not proven.`
      : `This prediction changes (${linf.clean_class} → ${linf.found_class}) under a perturbation of ${number(linf.upper)}/255 per pixel (L∞)`
        + (linf.lower > 0 ? `; it held at ${number(linf.lower)}/255.` : "."));
  }
  if (l2) {
    said.push(l2.upper == null
      ? `No change found up to an L2 perturbation of ${number(l2.lower)}.`
      : `An L2 perturbation of ${number(l2.upper)} (pixel units) changes it too.`);
  }
  const c = block.certified;
  if (c) {
    said.push(c.smoothed_class === "abstain" || c.radius <= 0
      ? `Not certified at any radius: the smoothed classifier (σ=${number(c.sigma)}) ${c.smoothed_class === "abstain" ? "abstains" : "is unsure"}.`
      : `Certified stable up to L2 radius ${number(c.radius)} (pixel units; randomized smoothing, σ=${number(c.sigma)}, class ${c.smoothed_class}).`);
    if (c.warning) said.push(`Note: ${c.warning}`);
  }
  return h("div", { class: "trust" }, h("h4", {}, "How far to trust it"), said.map((t) => h("p", {}, t)));
}

function overlays(explanation, attacked) {
  const keys = Object.keys(explanation.overlays).filter((k) => k !== "adversarial_image"
    && k.endsWith("_adversarial") === attacked);
  const base = attacked && explanation.overlays.adversarial_image
    ? `data:image/png;base64,${explanation.overlays.adversarial_image}` : upload.preview;
  const figures = keys.map((key) => {
    const name = key.replace(/_adversarial$/, "");
    const caption = `${MAP_NAMES[name] ?? name}${attacked ? " (attacked image)" : ""}`;
    return h("figure", {},
      h("div", { class: "stack" },
        base ? h("img", { class: "base", src: base, alt: "" }) : null,
        h("img", { class: "overlay", src: `data:image/png;base64,${explanation.overlays[key]}`, alt: `${caption} overlay of ${explanation.ref}`, "data-overlay": key })),
      h("figcaption", {}, caption));
  });
  return h("div", { class: "overlays" }, figures);
}

function opacitySlider(card, id) {
  const slider = h("input", { type: "range", id, min: "0", max: "100", value: "100" });
  slider.addEventListener("input", () => {
    for (const img of $$("img.overlay", card)) img.style.opacity = String(slider.value / 100);
  });
  return h("div", { class: "field opacity" }, h("label", { for: id }, "Overlay opacity (0: the image alone)"), slider);
}

function card(result, index, attacked) {
  const prediction = result.prediction ?? result; // /explain nests it; /predict is flat
  const adversarial = attacked ? result.adversarial_prediction : null;
  const element = h("article", { class: "card", "data-ref": result.ref, "data-view": attacked ? "attacked" : "clean" },
    h("h3", {}, result.ref),
    h("p", { class: "ident" }, `${prediction.model} v${prediction.version} · ${prediction.architecture} · weights sha256 `,
      h("code", { class: "sha" }, prediction.weights_sha256)),
    h("p", { class: "verdict" }, `Predicts ${prediction.top_class} (${percent(prediction.top_probability)})`),
    bars(prediction, "clean"));
  if (adversarial) {
    const changed = adversarial.top_class !== prediction.top_class;
    const a = result.attack ?? {};
    const how = a.name ? `${a.name} ε=${number(a.epsilon ?? Number($("#epsilon").value))}/255` : "the smallest flip found";
    element.append(
      h("p", { class: "verdict attacked" }, `Attacked (${how}): ${adversarial.top_class} (${percent(adversarial.top_probability)}) — `
        + (changed ? "the prediction changed" : "the prediction held")),
      bars(adversarial, "adversarial"));
  }
  if (result.overlays) {
    element.append(overlays(result, attacked), opacitySlider(element, `opacity-${index}`));
  }
  const c = attacked ? result.comparison : null;
  if (c && c.pearson != null) {
    element.append(h("p", { class: "hint" }, `Map moved: correlation ${number(c.pearson)}, top-region IoU ${number(c.top_iou ?? 0)}, shift ${number(c.shift_px ?? 0)} px.`));
  }
  const robustness = result.robustness ?? prediction.robustness;
  if (robustness) element.append(trustWords(robustness));
  return element;
}

function render(answer, attacked) {
  $("#image-info").replaceChildren(imageInfo(answer.image));
  const results = answer.explanations ?? answer.predictions;
  $("#results").replaceChildren(...results.map((r, i) => card(r, i, attacked)));
}

function onView() {
  if (view() === "attacked") run(true);
  else if (clean) render(clean, false);
}

export function init(ctx) {
  context = ctx;
  const choices = refChoices(ctx.catalog);
  modelCheckboxes($("#model-options"), choices, defaultRefs(choices, ctx.session.default_models), "model");
  $("#attack").replaceChildren(...ctx.session.attacks.map((name) => h("option", { value: name }, name.toUpperCase())));
  if (ctx.session.attacks.includes("fgsm")) $("#attack").value = "fgsm";
  const input = $("#image");
  input.addEventListener("change", () => input.files[0] && chooseFile(input.files[0]));
  const drop = $("#drop");
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    if (event.dataTransfer.files.length) {
      input.files = event.dataTransfer.files;
      chooseFile(input.files[0]);
    }
  });
  $("#analyse-form").addEventListener("submit", (event) => {
    event.preventDefault();
    $("#view-clean").checked = true;
    run(false);
  });
  $("#robustness").addEventListener("change", showTrustOptions);
  showTrustOptions();
  pacs.init(ctx, analyseFile);
  for (const radio of $$("input[name=view]")) radio.addEventListener("change", onView);
  $("#epsilon").addEventListener("input", () => { $("#epsilon-value").textContent = $("#epsilon").value; });
  $("#epsilon").addEventListener("change", () => view() === "attacked" && run(true));
  $("#attack").addEventListener("change", () => view() === "attacked" && run(true));
  if (!canExplain() && !canPredict()) {
    $("#analyse-form").hidden = true;
    say($("#analyse-error"), "This token has neither the predict nor the explain scope.");
  }
}
