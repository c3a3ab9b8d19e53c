/* Parley chat widget.
 *
 *   <script src="https://HOST/widget.js" data-site-key="KEY" async></script>
 *
 * Options (data- attributes): site-key, title, color (or colour), greeting,
 * position ("right" or "left"). The API base is where this script came from.
 * Plain JavaScript, no dependencies; it lives in a Shadow DOM so the page's CSS
 * cannot reach it.
 */
(() => {
  "use strict";
  if (customElements.get("parley-widget")) return;

  const script =
    document.currentScript || document.querySelector('script[src*="widget.js"][data-site-key]');
  if (!script) return;
  const opt = script.dataset;
  const base = new URL(script.src, location.href).href.replace(/\/widget\.js([?#].*)?$/, "");
  const siteKey = opt.siteKey || "default";
  const title = opt.title || "Chat with us";
  const colour = opt.color || opt.colour || "";
  const accent = /^[#\w(),.%\s-]+$/.test(colour) ? colour : "#4f46e5"; // a CSS colour, nothing else
  const greeting = opt.greeting ?? "Hi! How can we help you today?";
  const left = opt.position === "left";
  const TERMINAL = ["run.completed", "run.stopped", "run.failed"];
  const IDLE_MS = 45000; // no byte (not even a ping) for this long: the connection is dead
  const MAX_RETRIES = 10;

  // Tool names to the words a visitor sees while a tool runs ("" shows only the
  // typing dots: memory tools, and handoffs, which get their own line).
  const TOOL_WORDS = [
    [/^(remember|recall)$|memory|^transfer_to_/, ""],
    [/schedul|calendar|meeting|book|appointment|slot/i, "Booking your call…"],
    [/proposal/i, "Preparing your proposal…"],
    [/notif/i, "Letting our team know…"],
    [/mail|sendgrid/i, "Sending the email…"],
    [/crm|hubspot/i, "Saving your details…"],
    [/lead|contact/i, "Noting your details…"],
    [/search|lookup|find|knowledge|faq/i, "Looking that up…"],
  ];
  const toolWords = (name) =>
    (TOOL_WORDS.find(([re]) => re.test(name || "")) || [0, "Working on it…"])[1];

  // Storage that never throws (private modes, sandboxed frames).
  const store = (area) => ({
    get(key) {
      try {
        return JSON.parse(area().getItem(`parley:${siteKey}:${key}`));
      } catch {
        return null;
      }
    },
    set(key, value) {
      try {
        if (value == null) area().removeItem(`parley:${siteKey}:${key}`);
        else area().setItem(`parley:${siteKey}:${key}`, JSON.stringify(value));
      } catch {
        /* storage unavailable: the widget still works for this page view */
      }
    },
  });
  const local = store(() => window.localStorage); // reading the property may throw too
  const session = store(() => window.sessionStorage);

  const prettyName = (name) =>
    String(name || "").replace(/[_-]+/g, " ").replace(/^./, (c) => c.toUpperCase());

  function onAccentColour(colour) {
    const hex = /^#([0-9a-f]{3}|[0-9a-f]{6})$/i.exec(colour);
    if (!hex) return "#fff";
    const h = hex[1].length === 3 ? hex[1].replace(/./g, "$&$&") : hex[1];
    const [r, g, b] = [0, 2, 4].map((i) => parseInt(h.slice(i, i + 2), 16) / 255);
    return 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.6 ? "#111827" : "#fff";
  }

  const CSS = `
:host{all:initial;--accent:${accent};--on-accent:${onAccentColour(accent)};
 font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#111827}
*{box-sizing:border-box;font:inherit;color:inherit;margin:0}
[hidden]{display:none!important}
button{cursor:pointer;border:0;background:none}
:focus-visible{outline:3px solid var(--accent);outline-offset:2px}
.launcher{position:fixed;bottom:20px;${left ? "left" : "right"}:20px;z-index:2147483000;
 width:58px;height:58px;border-radius:50%;background:var(--accent);color:var(--on-accent);
 display:grid;place-items:center;box-shadow:0 6px 20px rgba(0,0,0,.25);transition:transform .15s}
.launcher:hover{transform:scale(1.06)}
.launcher svg{width:28px;height:28px;fill:currentColor}
.panel{position:fixed;bottom:90px;${left ? "left" : "right"}:20px;z-index:2147483000;
 width:370px;height:min(600px,calc(100vh - 110px));display:flex;flex-direction:column;
 background:#fff;border-radius:16px;overflow:hidden;box-shadow:0 12px 40px rgba(0,0,0,.22)}
header{background:var(--accent);color:var(--on-accent);padding:14px 16px;display:flex;
 align-items:center;gap:10px}
header div{flex:1;min-width:0}
h2{font-size:17px;font-weight:650}
.agent{font-size:13px;opacity:.9}
.close{color:inherit;font-size:26px;line-height:1;width:36px;height:36px;border-radius:8px}
.close:hover{background:rgba(255,255,255,.18)}
.log{flex:1;overflow-y:auto;padding:16px;display:flex;flex-direction:column;gap:10px;
 background:#f6f7f9}
.msg{max-width:85%;padding:9px 13px;border-radius:16px;white-space:pre-wrap;overflow-wrap:anywhere}
.agent-msg{align-self:flex-start;background:#fff;border:1px solid #e5e7eb;border-bottom-left-radius:4px}
.user{align-self:flex-end;background:var(--accent);color:var(--on-accent);border-bottom-right-radius:4px}
.tag{display:block;font-size:12px;opacity:.7;margin-top:4px;font-style:italic}
.note{align-self:center;font-size:13px;color:#4b5563;text-align:center}
.note.error{color:#b91c1c}
.activity{align-self:flex-start;display:flex;align-items:center;gap:8px;font-size:13px;color:#4b5563}
.dots{display:inline-flex;gap:4px;padding:12px 14px;background:#fff;border:1px solid #e5e7eb;border-radius:16px}
.dots i{width:7px;height:7px;border-radius:50%;background:#9ca3af;animation:blink 1.2s infinite}
.dots i:nth-child(2){animation-delay:.2s}.dots i:nth-child(3){animation-delay:.4s}
@keyframes blink{0%,80%,100%{opacity:.3}40%{opacity:1}}
@media (prefers-reduced-motion:reduce){.dots i{animation:none}.launcher{transition:none}}
.composer{display:flex;gap:8px;padding:10px;border-top:1px solid #e5e7eb;align-items:flex-end}
textarea,input{width:100%;border:1px solid #d1d5db;border-radius:10px;padding:9px 11px;background:#fff;resize:none}
.composer textarea{max-height:120px}
.send,.stop,.contact button{background:var(--accent);color:var(--on-accent);border-radius:10px;
 padding:9px 14px;font-weight:600;white-space:nowrap}
.stop{background:#374151;color:#fff}
button:disabled{opacity:.5;cursor:default}
.contact{padding:12px 16px;border-top:1px solid #e5e7eb;display:grid;gap:8px;font-size:14px;
 overflow-y:auto;max-height:75%;flex-shrink:0}
.contact label{display:grid;gap:3px;font-weight:600;font-size:13px}
.contact input,.contact textarea{font-weight:400;font-size:14px}
.contact .row{display:flex;gap:8px;align-items:center;justify-content:space-between}
strong{font-weight:700}
.contact .link{background:none;color:var(--accent);text-decoration:underline;padding:4px}
.fields{display:grid;gap:8px}
.sr{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap}
@media (max-width:480px){.panel{inset:0;width:auto;height:auto;border-radius:0}
 textarea,input{font-size:16px}
 .composer,.contact{padding-bottom:max(10px,env(safe-area-inset-bottom))}
 .launcher.open{display:none}}`;

  const ICON_CHAT =
    '<svg viewBox="0 0 24 24" aria-hidden="true"><path d="M4 3h16a2 2 0 0 1 2 2v11a2 2 0 0 1-2 2H8l-5 4V5a2 2 0 0 1 1-2z"/></svg>';
  const ICON_CLOSE =
    '<svg viewBox="0 0 24 24" aria-hidden="true"><path d="M6.4 5 12 10.6 17.6 5 19 6.4 13.4 12 19 17.6 17.6 19 12 13.4 6.4 19 5 17.6 10.6 12 5 6.4z"/></svg>';

  customElements.define("parley-widget", class extends HTMLElement {});
  const host = document.createElement("parley-widget");
  const root = host.attachShadow({ mode: "open" });
  root.innerHTML = `<style>${CSS}</style>
<button class="launcher" type="button" aria-expanded="false" aria-controls="panel"></button>
<section class="panel" id="panel" role="dialog" aria-labelledby="title" hidden>
 <header><div><h2 id="title"></h2><p class="agent" hidden></p></div>
  <button class="close" type="button" aria-label="Close chat">×</button></header>
 <div class="log" tabindex="0" aria-label="Conversation">
  <div class="activity" hidden><span class="dots" aria-hidden="true"><i></i><i></i><i></i></span>
   <span class="activity-text" role="status"></span></div></div>
 <form class="contact" aria-labelledby="intro" hidden novalidate>
  <p id="intro"></p>
  <div class="fields">
   <label>Name<input name="name" autocomplete="name" required maxlength="200"></label>
   <label>Email<input name="email" type="email" autocomplete="email" required maxlength="200"></label>
   <label>Message<textarea name="message" rows="3" required maxlength="2000"></textarea></label></div>
  <div class="row"><button type="button" class="link retry">Try the chat again</button>
   <button type="submit" class="submit">Send request</button></div></form>
 <form class="composer">
  <label class="sr" for="input">Your message</label>
  <textarea id="input" rows="1" placeholder="Type your message…" maxlength="4000"></textarea>
  <button type="submit" class="send">Send</button>
  <button type="button" class="stop" hidden>Stop</button></form>
 <div class="sr" aria-live="polite"></div>
</section>`;
  const $ = (sel) => root.querySelector(sel);
  const field = (name) => contact.elements.namedItem(name);
  const launcher = $(".launcher");
  const panel = $(".panel");
  const log = $(".log");
  const activity = $(".activity");
  const agentLine = $(".agent");
  const composer = $(".composer");
  const input = $("#input");
  const sendButton = $(".send");
  const stopButton = $(".stop");
  const contact = $(".contact");
  const announcer = $("[aria-live]");
  $("#title").textContent = title;

  let loaded = false;
  let stale = false; // the history could not be loaded
  let ready = null; // the history, loaded on first open
  let busy = false;
  let agent = null;
  let run = null; // the run being shown: {id, seq}
  let retryTimer = null;
  let stick = true; // keep the newest message in view unless the visitor scrolled up

  // Rendering

  function scrollDown() {
    if (stick) log.scrollTop = log.scrollHeight;
  }

  function add(kind, text, tag) {
    const el = document.createElement("div");
    el.className = kind === "agent" ? "msg agent-msg" : kind === "user" ? "msg user" : kind;
    el.append(document.createTextNode(text || ""));
    if (tag) setTag(el, tag);
    log.insertBefore(el, activity);
    scrollDown();
    return el;
  }

  function setTag(el, status) {
    const words = { stopped: "Stopped", failed: "Incomplete", unsent: "Not sent" }[status];
    if (!words || el.querySelector(".tag")) return;
    const tag = document.createElement("span");
    tag.className = "tag";
    tag.textContent = words;
    el.append(tag);
  }

  function note(text, isError) {
    add(isError ? "note error" : "note", text);
    announce(text);
  }

  function announce(text) {
    announcer.textContent = text;
  }

  function showActivity(text) {
    activity.hidden = false;
    activity.querySelector(".activity-text").textContent = text || "";
    scrollDown();
  }

  function setAgent(name, quietly) {
    if (!name || name === agent) return;
    const had = agent;
    agent = name;
    agentLine.hidden = false;
    agentLine.textContent = `You're talking to ${prettyName(name)}`;
    if (had && !quietly) note(`Now talking to ${prettyName(name)}`);
  }

  function setBusy(on) {
    busy = on;
    sendButton.hidden = on;
    stopButton.hidden = !on;
    stopButton.disabled = false;
    if (!on) activity.hidden = true;
  }

  function setOffline(on, message) {
    contact.hidden = !on;
    composer.hidden = on;
    if (on) showContactFields(true);
    scrollDown(); // the log's height changed
    if (!on) return;
    if (message && !field("message").value) field("message").value = message;
    if (!panel.hidden) field("name").focus();
  }

  function showContactFields(on) {
    $(".fields").hidden = $(".submit").hidden = !on;
    $("#intro").innerHTML = on
      ? "<strong>We can't reach the chat right now.</strong> Leave your details and we'll send them as soon as the connection is back."
      : "Thanks! Your request is saved and will be sent as soon as we're back online.";
  }

  // Talking to the server

  const api = (path) => base + path;
  const jsonHeaders = { "content-type": "application/json", "X-Site-Key": siteKey };

  // A conversation's token (handed out with its replies) goes with every request about
  // it; a server that sends none is asked without one.
  function tokenHeaders(conversation = local.get("conversation")) {
    const saved = local.get("token");
    return saved && saved.token && saved.conversation === conversation
      ? { "X-Conversation-Token": saved.token }
      : {};
  }

  function remember(conversation, token) {
    if (!conversation) return;
    local.set("conversation", conversation);
    if (token) local.set("token", { conversation, token });
  }

  function forget() {
    local.set("conversation", null);
    local.set("token", null);
  }

  // Errors that mean the stored conversation is gone or not ours to continue.
  const LOST = [
    "conversation_not_found",
    "missing_conversation_token",
    "invalid_conversation_token",
  ];

  async function errorOf(res) {
    try {
      const body = await res.json();
      if (body && body.error) return body.error;
    } catch {
      /* not JSON */
    }
    return { code: `http_${res.status}`, message: `The server answered ${res.status}.` };
  }

  function chatBody(message) {
    const conversation = local.get("conversation");
    return conversation
      ? { message, conversation_id: conversation }
      : { message, metadata: { site_key: siteKey, page: location.href } };
  }

  // Reads a text/event-stream body; calls onEvent for each event and returns true
  // once onEvent says the run is over, false if the body ends before that.
  async function readEvents(res, onEvent, ctrl) {
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buf = "";
    let data = [];
    let idle = setTimeout(() => ctrl.abort(), IDLE_MS);
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return false;
        clearTimeout(idle);
        idle = setTimeout(() => ctrl.abort(), IDLE_MS);
        buf += decoder.decode(value, { stream: true });
        const cut = buf.endsWith("\r") ? buf.length - 1 : buf.length; // \r\n may be split
        const lines = buf.slice(0, cut).split(/\r\n|\r|\n/);
        buf = lines.pop() + buf.slice(cut);
        for (const line of lines) {
          if (line === "") {
            if (data.length && onEvent(JSON.parse(data.join("\n")))) return true;
            data = [];
          } else if (line.startsWith("data:")) {
            data.push(line.slice(line[5] === " " ? 6 : 5));
          } // `event:` repeats the JSON's type, `id:` is run:seq, `:` lines are pings
        }
      }
    } finally {
      clearTimeout(idle);
      reader.cancel().catch(() => {});
    }
  }

  // Shows one event of the current run; true when the run is over.
  const bubbles = new Map();
  function onEvent(ev) {
    if (run && !run.id) {
      // The X-Run-ID / X-Conversation-ID headers did not reach us (a proxy dropped them).
      run.id = ev.run_id;
      local.set("run", run.id);
      local.set("conversation", ev.conversation_id);
    }
    if (!run || ev.run_id !== run.id || ev.seq <= run.seq) return false; // seen already
    run.seq = ev.seq;
    if (ev.agent) setAgent(ev.agent);
    switch (ev.type) {
      case "run.queued":
        showActivity("Waiting for the previous reply…");
        break;
      case "message.delta": {
        let el = bubbles.get(ev.message_id);
        if (!el) {
          el = add("agent", "");
          el.dataset.messageId = ev.message_id;
          bubbles.set(ev.message_id, el);
        }
        el.firstChild.appendData(ev.delta);
        activity.hidden = true;
        scrollDown();
        break;
      }
      case "message.completed": {
        let el = bubbles.get(ev.message_id);
        if (!el && ev.content) el = add("agent", "");
        if (!el) break;
        el.dataset.messageId = ev.message_id;
        if (el.firstChild.data !== ev.content) {
          if (el.firstChild.data) console.warn("parley: streamed text differed; repaired");
          el.firstChild.data = ev.content;
        }
        setTag(el, ev.status);
        if (ev.content) announce(`${prettyName(ev.agent)}: ${ev.content}`);
        break;
      }
      case "tool.started":
        showActivity(toolWords(ev.tool));
        break;
      case "tool.finished":
        showActivity("");
        break;
      case "heartbeat":
        if (ev.status === "waiting_for_model") showActivity("The assistant is starting up…");
        break;
      case "approval.requested":
        showActivity("Waiting for a team member to approve…");
        break;
      case "handoff":
        setAgent(ev.to, true);
        note(`Now talking to ${prettyName(ev.to)}`);
        break;
      case "run.failed":
        note((ev.error && ev.error.message) || "The reply failed.", true);
        break;
    }
    return TERMINAL.includes(ev.type);
  }

  // Follows the run until its terminal event, resuming after a cut connection
  // from the last event seen (Last-Event-ID), so no text is lost or repeated.
  async function follow(res, ctrl) {
    let retries = 0;
    let finished = false;
    for (;;) {
      try {
        if (!res) {
          ctrl = new AbortController();
          res = await fetch(api(`/api/chat/runs/${run.id}/events`), {
            headers: {
              accept: "text/event-stream",
              "Last-Event-ID": `${run.id}:${run.seq}`,
              ...tokenHeaders(),
            },
            signal: ctrl.signal,
          });
          if ([400, 401, 403, 404].includes(res.status)) {
            note((await errorOf(res)).message, true);
            break;
          }
          if (!res.ok) throw new Error(`HTTP ${res.status}`);
        }
        const seen = run.seq;
        if (await readEvents(res, onEvent, ctrl)) {
          finished = true;
          break;
        }
        if (run.seq > seen) retries = 0;
      } catch {
        /* cut mid-stream or unreachable: retry below */
      }
      res = null;
      if (++retries > MAX_RETRIES) {
        note("The connection was lost. The reply is saved; it will show when you come back.", true);
        setBusy(false);
        scheduleRetry();
        return false;
      }
      if (retries > 1) showActivity("Connection lost, reconnecting…"); // the first try is at once
      await new Promise((r) => setTimeout(r, retries > 1 ? Math.min(500 * 2 ** retries, 10000) : 0));
    }
    local.set("run", null);
    run = null;
    setBusy(false);
    if (!panel.hidden && !composer.hidden) input.focus();
    return finished;
  }

  async function send(text) {
    if (busy || !text.trim()) return;
    setBusy(true);
    await ready;
    stick = true;
    const bubble = add("user", text);
    showActivity("");
    const ctrl = new AbortController();
    let res;
    for (;;) {
      try {
        res = await fetch(api("/api/chat/stream"), {
          method: "POST",
          headers: { ...jsonHeaders, ...tokenHeaders(), accept: "text/event-stream" },
          body: JSON.stringify(chatBody(text)),
          signal: ctrl.signal,
        });
      } catch {
        setBusy(false);
        setTag(bubble, "unsent");
        announce("Your message could not be sent.");
        setOffline(true, text);
        scheduleRetry();
        return;
      }
      if (res.ok) break;
      const error = await errorOf(res);
      if (LOST.includes(error.code) && local.get("conversation")) {
        forget(); // erased on the server, or not this visitor's: start a new one
        continue;
      }
      setBusy(false);
      note(error.message, true);
      return;
    }
    remember(res.headers.get("X-Conversation-ID"), res.headers.get("X-Conversation-Token"));
    run = { id: res.headers.get("X-Run-ID"), seq: 0 };
    if (run.id) local.set("run", run.id);
    if (await follow(res, ctrl)) flushOutbox();
  }

  async function stop() {
    if (!run || !run.id) return;
    stopButton.disabled = true;
    try {
      const res = await fetch(api(`/api/chat/runs/${run.id}/stop`), {
        method: "POST",
        headers: tokenHeaders(),
      });
      if (!res.ok) note((await errorOf(res)).message, true);
    } catch {
      note("Could not reach the server to stop the reply.", true);
      stopButton.disabled = false;
    }
  }

  // The transcript so far, and a reply that was still being written when the
  // page was left.
  async function loadHistory() {
    loaded = true;
    stale = false;
    if (greeting) add("agent", greeting).classList.add("greeting");
    const conversation = local.get("conversation");
    if (!conversation) return;
    let res;
    try {
      res = await fetch(api(`/api/chat/history/${encodeURIComponent(conversation)}`), {
        headers: tokenHeaders(conversation),
      });
    } catch {
      stale = true; // shown again once the server answers
      setOffline(true);
      scheduleRetry();
      return;
    }
    if ([401, 403, 404].includes(res.status)) {
      forget(); // erased, or not this visitor's (no valid token): start afresh
      local.set("run", null);
      return;
    }
    if (!res.ok) return note((await errorOf(res)).message, true);
    const history = await res.json();
    agent = null;
    for (const m of history.messages) {
      if (m.role !== "user") setAgent(m.agent); // a handoff shows as it did live
      const el = add(m.role === "user" ? "user" : "agent", m.content, m.status);
      el.dataset.messageId = m.id;
    }
    setAgent(history.active_agent, true);
    const pending = local.get("run");
    if (pending && !busy) {
      if (history.messages.some((m) => m.run_id === pending && m.role !== "user")) {
        local.set("run", null);
      } else {
        run = { id: pending, seq: 0 };
        setBusy(true);
        showActivity("");
        follow(null);
      }
    }
  }

  // Contact requests kept while the server was unreachable.
  // There is no leads endpoint yet (POST /api/leads/submit): until one exists, a
  // request is sent as a chat message of the conversation through /api/chat/message.
  let flushing = null;
  function flushOutbox() {
    flushing = flushing || sendOutbox().finally(() => (flushing = null));
    return flushing;
  }

  async function sendOutbox() {
    let outbox = local.get("outbox") || [];
    let sent = 0;
    while (outbox.length) {
      const { name, email, message } = outbox[0];
      const text = `Contact request: name ${name}, email ${email}, message ${message}`;
      let res;
      try {
        res = await fetch(api("/api/chat/message"), {
          method: "POST",
          headers: { ...jsonHeaders, ...tokenHeaders() },
          body: JSON.stringify(chatBody(text)),
        });
      } catch {
        return false;
      }
      const body = res.ok ? await res.json() : await errorOf(res);
      if (!res.ok && LOST.includes(body.code)) {
        forget();
        continue;
      }
      if (res.status >= 500) return false;
      outbox = outbox.slice(1);
      local.set("outbox", outbox);
      if (res.ok) {
        remember(body.conversation_id, body.conversation_token);
        sent++;
      } else if (loaded) note(body.message, true);
    }
    if (sent && loaded) {
      const done = () => note(`Your contact request${sent > 1 ? "s were" : " was"} sent.`);
      if (busy) done();
      else reloadHistory().then(done); // the transcript as the server has it now
    }
    return true;
  }

  async function reachable() {
    try {
      await fetch(api("/health"), { method: "GET" });
      return true;
    } catch {
      return false;
    }
  }

  function scheduleRetry(delay = 15000) {
    clearTimeout(retryTimer);
    retryTimer = setTimeout(retry, delay);
  }

  async function retry() {
    clearTimeout(retryTimer);
    const hasOutbox = (local.get("outbox") || []).length > 0;
    const ok = hasOutbox ? await flushOutbox() : await reachable();
    if (!ok) return scheduleRetry();
    if (!contact.hidden) {
      setOffline(false);
      if (!panel.hidden) input.focus();
    }
    if (loaded && !busy && (stale || local.get("run"))) reloadHistory();
  }

  function reloadHistory() {
    log.querySelectorAll(".msg,.note").forEach((el) => el.remove());
    bubbles.clear();
    ready = loadHistory();
    return ready;
  }

  // Opening and closing

  function open(focus = true) {
    panel.hidden = false;
    launcher.classList.add("open");
    launcher.setAttribute("aria-expanded", "true");
    launcher.setAttribute("aria-label", `Close chat: ${title}`);
    launcher.innerHTML = ICON_CLOSE;
    session.set("open", true);
    if (!loaded) ready = loadHistory();
    if (focus) (composer.hidden ? field("name") : input).focus();
    scrollDown();
  }

  function close() {
    panel.hidden = true;
    launcher.classList.remove("open");
    launcher.setAttribute("aria-expanded", "false");
    launcher.setAttribute("aria-label", `Open chat: ${title}`);
    launcher.innerHTML = ICON_CHAT;
    session.set("open", null);
    launcher.focus();
  }

  launcher.addEventListener("click", () => (panel.hidden ? open() : close()));
  log.addEventListener("scroll", () => {
    stick = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
  });
  $(".close").addEventListener("click", close);
  panel.addEventListener("keydown", (e) => {
    if (e.key === "Escape") close();
  });
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      composer.requestSubmit();
    }
  });
  input.addEventListener("input", () => {
    input.style.height = "auto";
    input.style.height = `${input.scrollHeight + 2}px`;
  });
  composer.addEventListener("submit", (e) => {
    e.preventDefault();
    if (busy) return;
    const text = input.value;
    if (!text.trim()) return;
    input.value = "";
    input.style.height = "auto";
    input.focus();
    send(text);
  });
  stopButton.addEventListener("click", () => {
    stop();
    input.focus();
  });
  contact.addEventListener("submit", (e) => {
    e.preventDefault();
    const fields = Object.fromEntries(
      ["name", "email", "message"].map((k) => [k, field(k).value.trim()]),
    );
    const missing = Object.keys(fields).find((k) => !fields[k] || !field(k).checkValidity());
    contact.querySelectorAll("[aria-invalid]").forEach((el) => el.removeAttribute("aria-invalid"));
    if (missing) {
      field(missing).setAttribute("aria-invalid", "true");
      field(missing).focus();
      announce(`Please fill in a valid ${missing}.`);
      return;
    }
    local.set("outbox", [...(local.get("outbox") || []), fields]);
    contact.reset();
    showContactFields(false);
    announce($("#intro").textContent);
    $(".retry").focus();
    retry();
  });
  $(".retry").addEventListener("click", retry);
  window.addEventListener("online", () => retry());

  launcher.innerHTML = ICON_CHAT;
  launcher.setAttribute("aria-label", `Open chat: ${title}`);
  const mount = () => {
    document.body.append(host);
    if (session.get("open")) open(false);
    if ((local.get("outbox") || []).length) retry();
  };
  if (document.body) mount();
  else document.addEventListener("DOMContentLoaded", mount);
})();
