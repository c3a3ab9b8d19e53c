/* Parley operator console: what its pages share, and the /console page itself.
 *
 * /console lists the recent conversations and workflows (GET /api/conversations) and
 * refreshes itself; each links to its live view (console_live.js).
 *
 * Plain JavaScript modules, no dependencies and no build step. Text from the server
 * is only ever set as text, never as HTML.
 */

const REFRESH_MS = 5000;
const TOKEN_KEY = "parley:console:token";

// Helpers

export const $ = (sel) => document.querySelector(sel);

export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  return fill(el, attrs, children);
}

export function s(tag, attrs, ...children) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  return fill(el, attrs, children);
}

function fill(el, attrs, children) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value == null || value === false) continue;
    if (key === "text") el.textContent = value;
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else el.setAttribute(key === "cls" ? "class" : key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child != null && child !== false) el.append(child);
  }
  return el;
}

export const pretty = (name) =>
  String(name || "").replace(/[_-]+/g, " ").replace(/^./, (c) => c.toUpperCase());
export const short = (id) => String(id || "").slice(0, 8);
export const show = (value) => (typeof value === "string" ? value : JSON.stringify(value));
export const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);
export const now = () => Date.now() / 1000;

export function clock(ts) {
  return new Date(ts * 1000).toLocaleTimeString([], {
    hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false,
  });
}

export function ago(ts) {
  const seconds = Math.max(0, Math.round(now() - ts));
  if (seconds < 10) return "just now";
  if (seconds < 60) return `${seconds} s ago`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.round(seconds / 3600)} h ago`;
  return new Date(ts * 1000).toLocaleDateString();
}

export function timeEl(ts, relative) {
  const date = new Date(ts * 1000);
  return h("time", {
    datetime: date.toISOString(),
    title: date.toLocaleString(),
    text: relative ? ago(ts) : clock(ts),
  });
}

export function args(values) {
  const text = Object.entries(values || {})
    .map(([k, v]) => `${k}=${show(v)}`)
    .join(", ");
  return text.length > 220 ? `${text.slice(0, 220)}…` : text;
}

export function flash(el) {
  if (!el) return;
  el.classList.remove("flash");
  el.getBoundingClientRect(); // restart the animation
  el.classList.add("flash");
  el.dataset.flashes = String(Number(el.dataset.flashes || 0) + 1);
}

document.addEventListener("animationend", (e) => {
  const lit = e.target.closest && e.target.closest(".flash");
  if (lit) lit.classList.remove("flash");
});

// The operator token: needed only when the server asks operators for one.

const token = {
  get() {
    try {
      return sessionStorage.getItem(TOKEN_KEY) || "";
    } catch {
      return "";
    }
  },
  set(value) {
    try {
      sessionStorage.setItem(TOKEN_KEY, value);
    } catch {
      /* storage unavailable: the token lasts for this page only */
    }
    memoryToken = value;
  },
};
let memoryToken = token.get();
export const operatorToken = () => memoryToken;

export class AuthNeeded extends Error {}

// Agent names to the titles the catalogue gives them ("chat" -> "Front desk").
export const titles = new Map();
export const title = (name) => (name ? titles.get(name) || pretty(name) : "");

export async function loadTitles() {
  try {
    const body = await api("/api/agents");
    for (const agent of body.agents || []) if (agent.title) titles.set(agent.name, agent.title);
  } catch {
    /* the names, prettified, will do */
  }
}

export async function api(path) {
  const headers = { accept: "application/json" };
  if (memoryToken) headers.authorization = `Bearer ${memoryToken}`;
  const res = await fetch(path, { headers });
  let body = null;
  try {
    body = await res.json();
  } catch {
    /* not JSON */
  }
  if (res.ok) return body;
  const message = (body && body.error && body.error.message) || `The server answered ${res.status}.`;
  const err = res.status === 401 || res.status === 403 ? new AuthNeeded(message) : new Error(message);
  err.status = res.status;
  throw err;
}

export function askForToken(why, then) {
  const form = $("#token-form");
  $("#token-why").textContent = why;
  form.hidden = false;
  form.onsubmit = (e) => {
    e.preventDefault();
    const value = $("#token").value.trim();
    if (!value) return;
    token.set(value);
    form.hidden = true;
    then();
  };
  $("#token").focus();
}

// /console: the recent conversations and workflows

function listPage() {
  const rows = $("#rows");
  const kind = $("#kind");
  const auto = $("#auto");
  const refreshed = $("#refreshed");
  const failure = $("#list-error");
  const seenUpdates = new Map(); // id -> updated_at, to light up rows with news
  let timer = null;
  let drawn = "";
  let first = true;

  kind.value = new URLSearchParams(location.search).get("kind") || "";

  async function load() {
    clearTimeout(timer);
    const query = new URLSearchParams({ limit: "100" });
    if (kind.value) query.set("kind", kind.value);
    try {
      const body = await api(`/api/conversations?${query}`);
      failure.hidden = true;
      $(".table-card").hidden = false;
      draw(body.items || []);
      refreshed.textContent =
        `Updated at ${clock(now())}` + (auto.checked ? ` · refreshes every ${REFRESH_MS / 1000} s` : "");
    } catch (err) {
      if (err instanceof AuthNeeded) {
        $(".table-card").hidden = true;
        askForToken(err.message, load);
        return; // until a token is given
      }
      failure.hidden = false;
      failure.textContent = `The conversations could not be loaded (${err.message}). Trying again…`;
    }
    if (auto.checked) timer = setTimeout(load, REFRESH_MS);
  }

  function draw(items) {
    $("#empty").hidden = items.length > 0;
    const key = JSON.stringify(items);
    if (key === drawn) {
      for (const el of rows.querySelectorAll("time[data-ts]")) el.textContent = ago(Number(el.dataset.ts));
      return;
    }
    drawn = key;
    const focused = document.activeElement && document.activeElement.closest("tr[data-id]");
    const focusId = focused && focused.dataset.id;
    rows.replaceChildren(...items.map(row));
    for (const item of items) {
      const tr = rows.querySelector(`tr[data-id="${CSS.escape(item.id)}"]`);
      const before = seenUpdates.get(item.id);
      if (!first && before !== item.updated_at) flash(tr);
      seenUpdates.set(item.id, item.updated_at);
    }
    first = false;
    if (focusId) {
      const link = rows.querySelector(`tr[data-id="${CSS.escape(focusId)}"] a`);
      if (link) link.focus();
    }
  }

  function bar(score) {
    const el = h("span");
    el.style.width = `${Math.max(0, Math.min(100, Number(score) || 0))}%`;
    return el;
  }

  function row(item) {
    const lead = item.lead;
    const where = item.metadata && (item.metadata.site_key || item.metadata.page);
    const updated = timeEl(item.updated_at, true);
    updated.dataset.ts = item.updated_at;
    const noun = item.kind === "chat" ? "Conversation" : "Workflow";
    return h("tr", { "data-id": item.id },
      h("td", { cls: "id" },
        h("a", {
          href: `/console/workflows/${encodeURIComponent(item.id)}`,
          title: item.id,
          "aria-label": `${noun} ${short(item.id)}`,
          text: short(item.id),
        }),
        where ? h("span", { cls: "sub", title: String(where), text: String(where).slice(0, 48) }) : null),
      h("td", { text: pretty(item.kind) }),
      h("td", {}, h("span", { cls: `badge state-${item.state}`, text: item.state })),
      h("td", { text: title(item.active_agent) || "—" }),
      h("td", {}, lead
        ? h("span", { cls: "mini" },
            h("span", { cls: "mini-bar", "aria-hidden": "true" }, bar(lead.score)),
            h("span", { text: String(lead.score) }))
        : "—"),
      h("td", {}, lead ? h("span", { cls: `badge stage-${lead.stage}`, text: lead.stage }) : "—"),
      h("td", {}, updated));
  }

  kind.addEventListener("change", () => {
    const url = new URL(location.href);
    if (kind.value) url.searchParams.set("kind", kind.value);
    else url.searchParams.delete("kind");
    history.replaceState(null, "", url);
    load();
  });
  auto.addEventListener("change", load);
  $("#refresh").addEventListener("click", load);
  $("#controls").addEventListener("submit", (e) => e.preventDefault());
  loadTitles().then(load);
}

if (document.body.dataset.page === "list") listPage();
