/* Parley operator console: the live view's timeline lines and side panels (pending
 * approvals, the lead, the shared memory), drawn from the view's state.
 */

import { $, args, clock, flash, h, now, pretty, show, timeEl, title } from "./console.js";

function line(ev, cls, kind, who, ...body) {
  return h("li", { cls, "data-type": ev.type },
    timeEl(ev.ts || now()),
    h("div", { cls: "what" },
      h("div", { cls: "head" },
        h("span", { cls: "kind", text: kind }),
        who ? h("span", { cls: "who", text: who }) : null),
      ...body));
}

const text = (value) => h("div", { cls: "text", text: value });
const meta = (value) => h("div", { cls: "meta", text: value });

function usage(u) {
  if (!u) return "";
  const parts = [];
  if (u.input_tokens || u.output_tokens) {
    parts.push(`${(u.input_tokens || 0).toLocaleString()} in / ${(u.output_tokens || 0).toLocaleString()} out tokens`);
  }
  if (u.model_calls) parts.push(`${u.model_calls} model call${u.model_calls === 1 ? "" : "s"}`);
  if (u.duration_ms != null) parts.push(`${Math.round(u.duration_ms).toLocaleString()} ms`);
  return parts.join(" · ");
}

function toolCard(S, ev) {
  const status = h("span", { cls: "status running", text: "running" });
  const card = h("div", { cls: "tool-card", "data-status": "running", "data-tool": ev.tool },
    h("div", { cls: "head" },
      h("span", { cls: "tool-name", text: ev.tool }),
      status,
      h("span", { cls: "reason" })),
    ev.arguments && Object.keys(ev.arguments).length
      ? h("div", { cls: "args", text: args(ev.arguments) })
      : null);
  S.tools.set(ev.tool_call_id, card);
  return line(ev, "tool", "Tool call", title(ev.agent), card);
}

function finishTool(card, ev) {
  card.dataset.status = ev.status;
  const status = card.querySelector(".status");
  status.className = `status ${ev.status}`;
  status.textContent = ev.status;
  card.querySelector(".reason").textContent = ev.reason || "";
  if (ev.result != null && !card.querySelector("details")) {
    card.append(h("details", {},
      h("summary", { text: ev.status === "error" ? "Error" : "Result" }),
      h("pre", { text: JSON.stringify(ev.result, null, 2) })));
  }
}

// One timeline line for an event or operator frame; null for what the timeline skips
// (deltas, heartbeats, agent.started). A tool.finished updates its tool.started card.
export function timelineItem(S, ev) {
  const agent = title(ev.agent);
  switch (ev.type) {
    case "run.queued":
      return line(ev, "warn", "Queued", null, meta(`Waits behind ${ev.position} turn(s).`));
    case "run.started":
      return line(ev, "visitor new-run", "Visitor", null, text(ev.message));
    case "message.completed": {
      const status = ev.status && ev.status !== "complete" ? ` (${ev.status})` : "";
      return line(ev, "reply", `${agent}${status}`, null, text(ev.content));
    }
    case "tool.started":
      return toolCard(S, ev);
    case "tool.finished": {
      const card = S.tools.get(ev.tool_call_id);
      if (card) {
        finishTool(card, ev);
        return null;
      }
      const item = toolCard(S, ev);
      finishTool(S.tools.get(ev.tool_call_id), ev);
      return item;
    }
    case "handoff":
      return line(ev, "handoff", "Handoff", null,
        h("div", { cls: "text", text: `${title(ev.from)} → ${title(ev.to)}` }),
        ev.reason ? meta(ev.reason) : null);
    case "agent.message":
      return line(ev, "handoff", `Agent ${ev.kind}`, `${title(ev.from_agent)} → ${title(ev.to_agent)}`,
        text(ev.content));
    case "memory.updated":
      return line(ev, "memory", "Memory", title(ev.agent) || "Operator",
        h("div", { cls: "fact", text: `${ev.key} = ${show(ev.value)}` }));
    case "memory.edited":
      return line(ev, "memory", "Memory", "Operator",
        h("div", { cls: "fact", text: ev.deleted ? `${ev.key} deleted` : `${ev.key} = ${show(ev.value)}` }));
    case "lead.updated":
      return line(ev, "lead", "Lead", agent, meta(`score ${ev.score} · ${ev.stage}`));
    case "approval.requested":
      return line(ev, "warn", "Approval requested", agent,
        h("div", { cls: "fact", text: ev.tool }),
        ev.arguments && Object.keys(ev.arguments).length ? meta(args(ev.arguments)) : null);
    case "approval.resolved":
      return line(ev, ev.approved ? "ok" : "bad", ev.approved ? "Approved" : "Rejected", agent,
        h("div", { cls: "fact", text: S.toolOf.get(ev.approval_id) || ev.approval_id }));
    case "run.completed":
      return line(ev, "ok", "Run completed", null, meta(usage(ev.usage)));
    case "run.stopped":
      return line(ev, "warn", "Run stopped", null, meta(ev.reason || ""));
    case "run.failed":
      return line(ev, "bad", "Run failed", null,
        meta(ev.error ? `${ev.error.code}: ${ev.error.message}` : ""));
    case "workflow.state":
      return line(ev, "meta", `Workflow ${ev.state}`, null);
    default:
      return null;
  }
}

// The side panels

export function renderMemory(S) {
  const body = $("#memory-rows");
  $("#memory").hidden = S.memory.size === 0;
  $("#no-memory").hidden = S.memory.size > 0;
  const rows = new Map([...body.children].map((tr) => [tr.dataset.key, tr]));
  for (const [key, entry] of S.memory) {
    let tr = rows.get(key);
    if (!tr) {
      tr = h("tr", { "data-key": key }, h("td", { text: key }), h("td"), h("td"));
      body.append(tr);
    }
    rows.delete(key);
    tr.children[1].textContent = show(entry.value);
    tr.children[2].textContent = title(entry.agent);
    if (S.flashMemory.has(key)) flash(tr);
  }
  for (const tr of rows.values()) tr.remove();
  S.flashMemory.clear();
}

export function renderLead(S) {
  const lead = S.lead;
  $("#lead").hidden = !lead;
  $("#no-lead").hidden = Boolean(lead);
  if (!lead) return;
  const score = Math.max(0, Math.min(100, Number(lead.score) || 0));
  const value = $("#score-value");
  if (value.dataset.score !== String(score) && value.dataset.score != null) flash($("#lead"));
  value.dataset.score = String(score);
  value.replaceChildren(String(score), h("small", { text: " / 100" }));
  const meter = $("#score-meter");
  meter.setAttribute("aria-valuenow", String(score));
  meter.setAttribute("aria-valuetext", `${score} of 100`);
  meter.classList.toggle("high", score >= 70);
  $("#score-bar").style.width = `${score}%`;
  const stage = $("#stage");
  stage.className = `badge stage-${lead.stage}`;
  stage.textContent = lead.stage;
  const fields = Object.entries(lead.fields || {}).filter(([, v]) => v != null && v !== "");
  $("#lead-fields").replaceChildren(
    ...fields.flatMap(([k, v]) => [h("dt", { text: pretty(k) }), h("dd", { text: show(v) })]));
}

// Pending approvals as cards; `send` sends a frame on the live socket (false if closed).
export function renderApprovals(S, send) {
  const list = $("#approvals");
  $("#no-approvals").hidden = S.approvals.size > 0;
  const cards = new Map([...list.children].map((li) => [li.dataset.approvalId, li]));
  for (const [approvalId, approval] of S.approvals) {
    if (cards.has(approvalId)) {
      cards.delete(approvalId);
      continue;
    }
    list.append(approvalCard(approval, send));
  }
  for (const li of cards.values()) li.remove();
}

function approvalCard(approval, send) {
  const nameId = `approval-${approval.approval_id}`;
  const note = h("span", { cls: "sending muted small", role: "status" });
  const decide = (approved) => () => {
    $("#approval-error").hidden = true;
    if (!send({ type: "approval", approval_id: approval.approval_id, approved })) {
      note.textContent = "Not connected: the decision was not sent.";
      return;
    }
    for (const button of card.querySelectorAll("button")) button.disabled = true;
    note.textContent = approved ? "Approving…" : "Rejecting…";
  };
  const card = h("li", { cls: "approval", "data-approval-id": approval.approval_id },
    h("div", { cls: "head" },
      h("span", { cls: "tool-name", id: nameId, text: approval.tool }),
      " ",
      h("span", { cls: "muted small", text: `asked by ${title(approval.agent)} at ${clock(approval.ts || now())}` })),
    approval.arguments && Object.keys(approval.arguments).length
      ? h("div", { cls: "args", text: args(approval.arguments) })
      : null,
    h("div", { cls: "actions" },
      h("button", { type: "button", cls: "button primary small", "aria-describedby": nameId, text: "Approve", onclick: decide(true) }),
      h("button", { type: "button", cls: "button danger small", "aria-describedby": nameId, text: "Reject", onclick: decide(false) }),
      note));
  return card;
}
