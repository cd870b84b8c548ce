// Small DOM helpers. Everything from the server goes in as text nodes or attributes, never as
// HTML, so a model name or a job error cannot inject markup.
const SVG_NS = "http://www.w3.org/2000/svg";

function build(element, attrs, children) {
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") element.setAttribute("class", value);
    else if (key.startsWith("on") && typeof value === "function") element.addEventListener(key.slice(2), value);
    else element.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : String(child));
  }
  return element;
}

export const h = (tag, attrs = {}, ...children) => build(document.createElement(tag), attrs, children);
export const s = (tag, attrs = {}, ...children) => build(document.createElementNS(SVG_NS, tag), attrs, children);
export const $ = (selector, root = document) => root.querySelector(selector);
export const $$ = (selector, root = document) => [...root.querySelectorAll(selector)];

export const percent = (p) => `${(100 * p).toFixed(1)} %`;
export const shortSha = (sha) => (sha ? `${sha.slice(0, 12)}…` : "");

/** Put `message` in the (role=alert or status) element `target`; "" clears it. */
export function say(target, message) {
  target.textContent = message || "";
}

/** Scope-gated controls: elements with data-scope="X" are hidden unless the token holds X. */
export function applyScopes(scopes) {
  for (const element of $$("[data-scope]")) element.hidden = !scopes.includes(element.dataset.scope);
}
