/* Parley operator console: the live view of one workflow, /console/workflows/{id}.
 *
 * Opens WS /api/ws/workflows/{id}, draws its snapshot (agents and edges, shared memory,
 * lead, the events so far), then applies every live frame: run events and operator
 * notices (memory.edited, workflow.state, agent.message). A socket that drops is opened
 * again, and its new snapshot replaces everything shown.
 */

import {
  $, AuthNeeded, api, askForToken, h, operatorToken, pretty, same, short, titles, title,
} from "./console.js";
import { makeGraph } from "./console_graph.js";
import { renderApprovals, renderLead, renderMemory, timelineItem } from "./console_panels.js";

const PING_MS = 20000;
const SILENCE_MS = 50000; // no frame at all (not even a pong) for this long: reconnect
const TERMINAL = { "run.completed": "completed", "run.stopped": "stopped", "run.failed": "failed" };

function workflowPage() {
  const id = decodeURIComponent(location.pathname.replace(/\/+$/, "").split("/").pop());
  const graph = makeGraph($("#graph"));
  let S = null; // everything shown, rebuilt from each snapshot
  let socket = null;
  let attempts = 0;
  let retryTimer = null;
  let pingTimer = null;
  let lastFrame = 0;
  let stopped = false; // not found, or waiting for a token

  function blank() {
    return {
      info: { workflow_type: null, state: null, active_agent: null },
      nodes: new Map(), // id -> {id, type, title, replies, tool_calls}
      order: [],
      edges: new Map(), // "from>to>kind" -> {from, to, kind, count}
      memory: new Map(), // key -> {value, agent}
      lead: null,
      approvals: new Map(), // approval id -> {approval_id, tool, agent, arguments, ts}
      resolved: new Set(),
      toolOf: new Map(), // approval id -> tool
      turns: new Set(), // runs whose first agent is counted
      runs: new Map(), // run id -> queued | running | completed | stopped | failed
      lastRun: null,
      busy: null,
      seen: new Set(),
      tools: new Map(), // tool_call_id -> card element
      flashEdges: new Set(),
      flashNodes: new Set(),
      flashMemory: new Set(),
      count: 0,
    };
  }

  // The socket

  function setConnection(state, text) {
    const box = $("#connection");
    box.dataset.state = state;
    $("#connection-text").textContent = text;
    $("#reconnect").hidden = state !== "reconnecting" && state !== "offline";
  }

  function connect() {
    clearTimeout(retryTimer);
    clearInterval(pingTimer);
    if (stopped) return;
    if (socket) {
      const old = socket;
      socket = null; // its close event is ignored
      old.close();
    }
    setConnection(attempts ? "reconnecting" : "connecting", attempts ? "Reconnecting…" : "Connecting…");
    const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/api/ws/workflows/${encodeURIComponent(id)}`;
    const ws = operatorToken() ? new WebSocket(url, ["bearer", operatorToken()]) : new WebSocket(url);
    socket = ws;
    let live = false;
    ws.onmessage = (message) => {
      if (ws !== socket) return;
      lastFrame = Date.now();
      let frame;
      try {
        frame = JSON.parse(message.data);
      } catch {
        return;
      }
      if (frame.type === "snapshot") {
        live = true;
        attempts = 0;
        setConnection("live", "Live");
        onSnapshot(frame);
      } else if (frame.type === "error" && !live) {
        const error = frame.error || {};
        if (error.code === "workflow_not_found") notFound(error.message);
      } else if (live) {
        onFrame(frame);
      }
    };
    ws.onclose = (event) => {
      if (ws !== socket) return;
      socket = null;
      clearInterval(pingTimer);
      if (stopped) return;
      if (event.code === 4404) return notFound();
      if (!live) probe(); // refused before the snapshot: find out why
      retry();
    };
    ws.onopen = () => {
      lastFrame = Date.now();
      clearInterval(pingTimer);
      pingTimer = setInterval(() => {
        if (ws !== socket) return;
        if (Date.now() - lastFrame > SILENCE_MS) {
          // A dead connection may take long to report its close: drop it now.
          socket = null;
          clearInterval(pingTimer);
          ws.close();
          retry();
        } else {
          ws.send(JSON.stringify({ type: "ping" }));
        }
      }, PING_MS);
    };
  }

  function retry() {
    const delay = Math.min(15, 2 ** attempts);
    attempts += 1;
    setConnection("reconnecting", `Disconnected · reconnecting in ${delay} s`);
    retryTimer = setTimeout(connect, delay * 1000);
  }

  async function probe() {
    try {
      await api(`/api/agents/workflows/${encodeURIComponent(id)}`);
    } catch (err) {
      if (err instanceof AuthNeeded) {
        stop("offline", "Not signed in");
        askForToken(err.message, () => {
          stopped = false;
          attempts = 0;
          connect();
        });
      } else if (err.status === 404) {
        notFound(err.message);
      }
    }
  }

  function stop(state, text) {
    stopped = true;
    clearTimeout(retryTimer);
    setConnection(state, text);
    $("#reconnect").hidden = true;
  }

  function notFound(message) {
    stop("offline", "Not found");
    const fatal = $("#fatal");
    fatal.hidden = false;
    fatal.textContent = message || `No workflow ${id}.`;
  }

  function send(frame) {
    if (!socket || socket.readyState !== WebSocket.OPEN) return false;
    socket.send(JSON.stringify(frame));
    return true;
  }

  $("#reconnect").addEventListener("click", () => {
    attempts = Math.max(attempts, 1);
    connect();
  });
  window.addEventListener("online", () => {
    if (!socket && !stopped) connect();
  });

  // Frames

  function onSnapshot(frame) {
    S = blank();
    S.info = {
      workflow_type: frame.workflow_type,
      state: frame.state,
      active_agent: frame.active_agent,
    };
    for (const node of frame.nodes || []) {
      addNode(node);
      if (node.type === "agent" && node.title) titles.set(node.id, node.title);
    }
    for (const edge of frame.edges || []) {
      S.edges.set(`${edge.from}>${edge.to}>${edge.kind}`, { ...edge });
    }
    for (const [key, value] of Object.entries(frame.memory || {})) S.memory.set(key, { value, agent: null });
    if (frame.lead) S.lead = frame.lead;
    const list = h("ol", {
      cls: "timeline", id: "timeline", "aria-live": "polite", "aria-relevant": "additions",
    });
    for (const event of frame.events || []) apply(event, false, list);
    $("#timeline").replaceWith(list);
    $("#approval-error").hidden = true;
    render();
    const scroller = $("#timeline-scroll");
    scroller.scrollTop = scroller.scrollHeight;
    reconcileApprovals(S);
  }

  function onFrame(frame) {
    if (frame.type === "pong" || frame.type === "heartbeat") return;
    if (frame.type === "message.delta") {
      if (frame.agent && S.busy !== frame.agent) {
        S.busy = frame.agent;
        render();
      }
      return;
    }
    if (frame.type === "error") {
      const box = $("#approval-error");
      box.hidden = false;
      box.textContent = (frame.error && frame.error.message) || "The server refused that.";
      for (const button of document.querySelectorAll(".approval button")) button.disabled = false;
      for (const note of document.querySelectorAll(".approval .sending")) note.textContent = "";
      return;
    }
    const scroller = $("#timeline-scroll");
    const atBottom = scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 60;
    apply(frame, true, $("#timeline"));
    render();
    if (atBottom) scroller.scrollTop = scroller.scrollHeight;
    if (TERMINAL[frame.type]) refreshState(S);
  }

  async function refreshState(state) {
    // A workflow's state changes when its run ends (completed, failed), without a
    // frame of its own: ask for it.
    try {
      const workflow = await api(`/api/agents/workflows/${encodeURIComponent(id)}`);
      if (state !== S || !workflow.state || workflow.state === S.info.state) return;
      S.info.state = workflow.state;
      render();
    } catch {
      /* the next snapshot will say */
    }
  }

  async function reconcileApprovals(state) {
    // The store knows approvals the events cannot show as decided (one decided after
    // a restart, for instance): its pending list, with what happened since, wins.
    let body;
    try {
      body = await api(
        `/api/approvals?status=pending&conversation_id=${encodeURIComponent(id)}`
      );
    } catch {
      return; // keep what the events say
    }
    if (state !== S) return; // a newer snapshot arrived meanwhile
    const pending = new Map();
    for (const item of body.items || []) {
      if (state.resolved.has(item.id)) continue;
      const known = state.approvals.get(item.id);
      pending.set(item.id, known || {
        approval_id: item.id,
        tool: item.tool,
        agent: item.agent,
        arguments: (item.tool_call && (item.tool_call.input || item.tool_call.arguments)) || {},
        ts: item.created_at,
      });
      state.toolOf.set(item.id, item.tool);
    }
    for (const [approvalId, approval] of state.approvals) {
      if (approval.live) pending.set(approvalId, approval); // requested after the snapshot
    }
    state.approvals = pending;
    renderApprovals(S, send);
  }

  function addNode(node) {
    if (S.nodes.has(node.id)) return;
    S.nodes.set(node.id, { replies: 0, tool_calls: 0, ...node });
    S.order.push(node.id);
  }

  function ensureAgent(name) {
    if (name && !S.nodes.has(name)) addNode({ id: name, type: "agent", title: title(name) });
  }

  function bump(from, to, kind) {
    ensureAgent(from === "visitor" ? null : from);
    ensureAgent(to);
    const key = `${from}>${to}>${kind}`;
    const edge = S.edges.get(key) || { from, to, kind, count: 0 };
    edge.count += 1;
    S.edges.set(key, edge);
    S.flashEdges.add(key);
    S.flashNodes.add(to);
  }

  function setActive(name) {
    if (!name) return;
    ensureAgent(name);
    S.info.active_agent = name;
  }

  // One event or operator frame: the state it changes (live only: the snapshot's
  // graph, memory and lead already count the events it holds), and its timeline line.
  function apply(ev, live, list) {
    if (ev.run_id && ev.seq != null) {
      const key = `${ev.run_id}:${ev.seq}`;
      if (S.seen.has(key)) return;
      S.seen.add(key);
    }
    const node = ev.agent && S.nodes.get(ev.agent);
    switch (ev.type) {
      case "run.queued":
        S.runs.set(ev.run_id, "queued");
        S.lastRun = ev.run_id;
        break;
      case "run.started":
        S.runs.set(ev.run_id, "running");
        S.lastRun = ev.run_id;
        break;
      case "agent.started":
        if (!S.turns.has(ev.run_id)) {
          S.turns.add(ev.run_id);
          if (live) bump("visitor", ev.agent, "turn");
        }
        if (live) {
          setActive(ev.agent);
          S.busy = ev.agent;
          S.flashNodes.add(ev.agent);
        }
        break;
      case "message.delta":
      case "heartbeat":
        return;
      case "message.completed":
        if (live && node) node.replies += 1;
        if (S.busy === ev.agent) S.busy = null;
        break;
      case "tool.started":
        if (live && node) node.tool_calls += 1;
        break;
      case "handoff":
        // Handed on before anyone answered: the visitor's turn reached the one handing over.
        if (!S.turns.has(ev.run_id)) {
          S.turns.add(ev.run_id);
          if (live) bump("visitor", ev.from, "turn");
        }
        if (live) {
          bump(ev.from, ev.to, "handoff");
          setActive(ev.to);
        }
        break;
      case "agent.message":
        if (live) bump(ev.from_agent, ev.to_agent, ev.kind);
        break;
      case "memory.updated": {
        const entry = S.memory.get(ev.key);
        if (live) {
          S.memory.set(ev.key, { value: ev.value, agent: ev.agent || null });
          S.flashMemory.add(ev.key);
        } else if (entry && same(entry.value, ev.value)) {
          entry.agent = ev.agent || null;
        }
        break;
      }
      case "memory.edited": // an operator's edit, outside any run
        if (ev.deleted) S.memory.delete(ev.key);
        else S.memory.set(ev.key, { value: ev.value, agent: "operator" });
        if (!ev.deleted) S.flashMemory.add(ev.key);
        break;
      case "lead.updated":
        if (live) S.lead = { ...(S.lead || {}), id: ev.lead_id, score: ev.score, stage: ev.stage, fields: ev.fields };
        break;
      case "approval.requested":
        S.toolOf.set(ev.approval_id, ev.tool);
        if (!S.resolved.has(ev.approval_id)) {
          S.approvals.set(ev.approval_id, {
            approval_id: ev.approval_id, tool: ev.tool, agent: ev.agent,
            arguments: ev.arguments, ts: ev.ts, live,
          });
        }
        break;
      case "approval.resolved":
        S.resolved.add(ev.approval_id);
        S.approvals.delete(ev.approval_id);
        break;
      case "workflow.state":
        S.info.state = ev.state;
        break;
      default:
        if (TERMINAL[ev.type]) {
          S.runs.set(ev.run_id, TERMINAL[ev.type]);
          S.lastRun = ev.run_id;
          S.busy = null;
        }
    }
    const item = timelineItem(S, ev);
    if (item) {
      list.append(item);
      S.count += 1;
    }
  }

  // Drawing the state

  function render() {
    const info = S.info;
    const noun = info.workflow_type === "chat" ? "Conversation" : "Workflow";
    $("#title").replaceChildren(`${noun} `, h("code", { title: id, text: short(id) }));
    document.title = `${noun} ${short(id)} — Parley console`;
    $("#kind").textContent = pretty(info.workflow_type) || "—";
    $("#state").replaceChildren(h("span", { cls: `badge state-${info.state}`, text: info.state || "—" }));
    $("#active-agent").textContent = title(info.active_agent) || "—";
    const runStatus = S.lastRun ? S.runs.get(S.lastRun) : null;
    $("#run-status").replaceChildren(runStatus
      ? h("span", { cls: `badge run-${runStatus}`, text: runStatus })
      : "none yet");
    $("#timeline-count").textContent = `${S.count} event${S.count === 1 ? "" : "s"}`;
    graph.draw(S);
    renderMemory(S);
    renderLead(S);
    renderApprovals(S, send);
  }

  connect();
}

workflowPage();
