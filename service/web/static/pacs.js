// "From PACS" on the Analyse page: list a study's instances in a configured PACS
// (GET /pacs/{pacs}/studies/{uid}/instances), fetch the picked one's DICOM file as stored, and
// hand it to the Analyse page, which sends it to /predict or /explain exactly like a dropped
// file: one path for every image, whatever its source.
import { getJSON, request } from "./api.js";
import { $, h, say } from "./dom.js";

const part = encodeURIComponent;
let pick = null; // the Analyse page's (file, source) => void

/** Show the form where a PACS is configured and the token may analyse images. */
export function init(ctx, onPick) {
  pick = onPick;
  const names = ctx.session.pacs ?? [];
  const scopes = ctx.session.scopes;
  const form = $("#pacs-form");
  form.hidden = !names.length || !(scopes.includes("predict") || scopes.includes("explain"));
  if (form.hidden) return;
  $("#pacs-name").replaceChildren(...names.map((name) => h("option", { value: name }, name)));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    list($("#pacs-name").value, $("#pacs-study").value.trim());
  });
}

async function list(pacs, study) {
  say($("#pacs-error"), "");
  $("#pacs-instances").replaceChildren();
  say($("#pacs-status"), `Asking ${pacs} for the study's instances…`);
  try {
    const answer = await getJSON(`/pacs/${part(pacs)}/studies/${part(study)}/instances`);
    $("#pacs-instances").replaceChildren(instances(answer));
    const count = answer.instances.length;
    say($("#pacs-status"), answer.truncated
      ? `The first ${count} instances of the study (it holds more).`
      : `${count} instance${count === 1 ? "" : "s"} in the study.`);
  } catch (error) {
    say($("#pacs-status"), "");
    say($("#pacs-error"), error.message);
  }
}

function describe(item) {
  const number = item.instance_number == null ? null : `#${item.instance_number}`;
  return [item.modality ?? "modality not recorded", item.body_part_examined ?? "body part not recorded", number]
    .filter(Boolean).join(" · ");
}

function instances(answer) {
  return h("ul", { class: "instances", "aria-label": "Instances of the study" }, answer.instances.map((item) => {
    const what = describe(item);
    let action;
    if (item.skip_reason) {
      action = h("span", { class: "hint" }, `Not offered: ${item.skip_reason}`);
    } else {
      action = h("button", { type: "button", class: "secondary", "aria-label": `Analyse ${what}, SOP Instance UID ${item.sop_instance_uid}` }, "Analyse");
      action.addEventListener("click", () => fetchFile(answer, item, action));
    }
    return h("li", { "data-sop": item.sop_instance_uid }, h("span", { class: "what" }, what),
      h("code", {}, item.sop_instance_uid), action);
  }));
}

async function fetchFile(answer, item, button) {
  say($("#pacs-error"), "");
  say($("#pacs-status"), `Fetching instance ${item.sop_instance_uid} from ${answer.pacs}…`);
  button.disabled = true;
  const path = `/pacs/${part(answer.pacs)}/studies/${part(answer.study_instance_uid)}`
    + `/series/${part(item.series_instance_uid)}/instances/${part(item.sop_instance_uid)}`;
  try {
    const blob = await (await request(path, { accept: "application/dicom" })).blob();
    say($("#pacs-status"), "");
    const file = new File([blob], `${item.sop_instance_uid}.dcm`, { type: "application/dicom" });
    pick(file, `PACS ${answer.pacs}, study ${answer.study_instance_uid}`);
  } catch (error) {
    say($("#pacs-status"), "");
    say($("#pacs-error"), error.message);
  } finally {
    button.disabled = false;
  }
}
