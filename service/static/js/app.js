// Caviar's dashboard: a hash router over four pages, each updating itself live.

import { session } from "./api.js";
import { esc } from "./util.js";

const view = document.getElementById("view");
// A trailing slash, and #/studies for the list, open the page a person meant.
const PAGES = [
  [/^\/studies\/(\d+)\/?$/, "study", (m) => ({ id: m[1] })],
  [/^\/trials\/(\d+)\/?$/, "trial", (m) => ({ id: m[1] })],
  [/^\/workers\/?$/, "workers", () => ({})],
  [/^\/?(studies\/?)?$/, "studies", () => ({})],
];
let current = null;

async function route() {
  current?.destroy();
  current = null;
  window.scrollTo(0, 0); // a new page starts at its top, wherever the link was
  delete document.documentElement.dataset.ready;
  const [path, search = ""] = location.hash.replace(/^#/, "").split("?");
  const query = new URLSearchParams(search);
  const match = PAGES.map(([re, name, params]) => [path.match(re), name, params]).find(([m]) => m);
  for (const a of document.querySelectorAll("header nav a")) {
    a.classList.toggle("active", a.dataset.page === (match?.[1] === "workers" ? "workers" : "studies"));
  }
  if (!match) {
    view.innerHTML = `<p class="error">No page at ${esc(location.hash)}. <a href="#/">All studies</a></p>`;
    return;
  }
  const [m, name, params] = match;
  const module = await import(`./pages/${name}.js`);
  const page = module.mount(view, params(m), query);
  current = page;
  try {
    await page.ready;
  } catch (e) {
    if (current === page) {
      page.destroy();
      view.innerHTML = `<div class="page-head"><h1>Something went wrong</h1></div><p class="error">${esc(e.message)}</p><p><a href="#/">Back to the studies</a></p>`;
    }
  }
}

// Controls that change something carry data-write; a token that may only read would meet
// a 403 behind each, so they stay hidden until the session says it may write.
const style = document.createElement("style");
style.textContent = "html[data-read-only] [data-write] { display: none !important; }";
document.head.append(style);
document.documentElement.dataset.readOnly = "";

// With tokens on, say who is signed in and offer to sign out (the cookie is HttpOnly: the
// server ends the session).
async function signedIn() {
  const me = await session();
  if (me?.scopes.includes("write")) delete document.documentElement.dataset.readOnly;
  if (!me?.tokens_required) return;
  const box = document.createElement("form");
  box.className = "session";
  box.method = "post";
  box.action = "/logout";
  box.innerHTML = `<span title="scopes: ${esc(me.scopes.join(", "))}">${esc(me.name)}</span><button type="submit">Sign out</button>`;
  document.querySelector("header").append(box);
}

window.addEventListener("hashchange", route);
route();
signedIn();
