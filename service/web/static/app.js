// The viewer's entry point: ask for a token if the service wants one, learn its scopes
// (GET /session), then show one page at a time by the URL's fragment (#analyse, #models, #jobs).
import { ApiError, getJSON, token } from "./api.js";
import { $, $$, applyScopes, say } from "./dom.js";
import * as analyse from "./analyse.js";
import * as jobs from "./jobs.js";
import * as models from "./models.js";

const PAGES = { analyse, models, jobs };
const context = { session: null, catalog: [] };
let current = null;

async function openSession() {
  try {
    context.session = await getJSON("/session");
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) {
      showLogin(token.get() ? `That token was refused: ${error.message}` : "");
      token.clear();
      return;
    }
    throw error;
  }
  if (!context.session.authenticated) {
    context.session = null;
    showLogin("");
    return;
  }
  const { session } = context;
  $("#login").hidden = true;
  $("#sign-out").hidden = !session.auth_required;
  $("#who").textContent = session.auth_required
    ? `token ${session.token_id} · scopes: ${session.scopes.join(", ") || "none"}`
    : "auth is off (development): every scope";
  // the store's task defaults file is unreadable: the forms fall back to the configured ones
  say($("#session-warning"), session.task_defaults_error
    ? `Task defaults are incomplete: ${session.task_defaults_error}` : "");
  applyScopes(session.scopes);
  context.catalog = await models.loadCatalog();
  for (const page of Object.values(PAGES)) page.init(context);
  $("#nav").hidden = false;
  route(false);
  document.body.dataset.ready = "true"; // the pages are built (tests wait for this)
}

function showLogin(message) {
  $("#nav").hidden = true;
  for (const page of $$(".page")) page.hidden = true;
  $("#login").hidden = false;
  say($("#login-error"), message);
  $("#token").focus();
}

function route(focus = true) {
  if (!context.session) return;
  const name = location.hash.slice(1) in PAGES ? location.hash.slice(1) : "analyse";
  if (current && current !== name) PAGES[current].hide?.();
  current = name;
  for (const [key] of Object.entries(PAGES)) $(`#page-${key}`).hidden = key !== name;
  for (const link of $$("#nav a")) {
    if (link.dataset.page === name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  PAGES[name].show?.();
  if (focus) $(`#page-${name} h2`).focus();
}

function startUp() {
  $("#login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    token.set($("#token").value.trim());
    $("#token").value = "";
    openSession().catch(fail);
  });
  $("#sign-out").addEventListener("click", () => {
    token.clear();
    location.reload();
  });
  window.addEventListener("hashchange", () => route(true));
  openSession().catch(fail);
}

function fail(error) {
  showLogin(`The service could not be reached: ${error.message}`);
}

startUp();
