// AG-UI's own HttpAgent against a real Parley server.

import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { test } from "node:test";

import { EventType, HttpAgent } from "@ag-ui/client";

import { BASE, SERVICES, SHOP, lastBy, ofType, runEvents } from "./parley.mjs";

// The client strips, with a warning, whatever the protocol does not describe:
// a warning here means Parley sent something off the schema.
const warnings = [];
const warn = console.warn;
console.warn = (...args) => {
  warnings.push(args.join(" "));
  warn(...args);
};

async function run(agent, text) {
  agent.addMessage({ id: randomUUID(), role: "user", content: text });
  const runId = randomUUID();
  const events = [];
  const before = agent.messages.length;
  await agent.runAgent({ runId }, { onEvent: ({ event }) => void events.push(event) });
  return { runId, events, newMessages: agent.messages.slice(before) };
}

/** The agent's messages and state say what the run did. */
function assertMatchesRun(agent, newMessages, events, parley) {
  const completed = ofType(parley, "message.completed");
  const texts = newMessages.filter((m) => m.role === "assistant" && m.content);
  assert.deepEqual(
    texts.map((m) => [m.name, m.content]),
    completed.map((e) => [e.agent, e.content]),
  );

  const calls = newMessages.flatMap((m) => (m.role === "assistant" ? (m.toolCalls ?? []) : []));
  const started = ofType(parley, "tool.started");
  assert.deepEqual(
    calls.map((c) => [c.id, c.function.name, JSON.parse(c.function.arguments)]),
    started.map((e) => [e.tool_call_id, e.tool, e.arguments]),
  );
  const results = newMessages.filter((m) => m.role === "tool");
  for (const finished of ofType(parley, "tool.finished")) {
    const message = results.find((m) => m.toolCallId === finished.tool_call_id);
    assert.ok(message, `no tool message for ${finished.tool}`);
    const content = typeof finished.result === "string" ? message.content : JSON.parse(message.content);
    assert.deepEqual(content, finished.result);
  }

  const { memory, lead } = agent.state;
  for (const [, event] of lastBy(parley, "memory.updated", (e) => `${e.scope}:${e.key}`)) {
    assert.deepEqual(memory[event.scope][event.key], event.value);
  }
  const leads = ofType(parley, "lead.updated");
  if (leads.length) {
    const last = leads.at(-1);
    assert.deepEqual(lead, { id: last.lead_id, score: last.score, stage: last.stage, fields: last.fields });
  }

  assert.deepEqual(
    ofType(events, EventType.STEP_STARTED).map((e) => e.stepName),
    ofType(parley, "agent.started").map((e) => e.agent),
  );
  assert.deepEqual(
    ofType(events, EventType.CUSTOM)
      .filter((e) => e.name === "handoff")
      .map((e) => [e.value.from, e.value.to]),
    ofType(parley, "handoff").map((e) => [e.from, e.to]),
  );
}

test("HttpAgent runs a turn: messages, tool calls and shared state", { timeout: 60_000 }, async () => {
  const agent = new HttpAgent({ url: `${BASE}/api/chat/stream`, threadId: randomUUID() });
  const { runId, events, newMessages } = await run(agent, SHOP);

  const first = events[0];
  assert.equal(first.type, EventType.RUN_STARTED);
  assert.equal(first.threadId, agent.threadId);
  assert.equal(first.runId, runId);
  assert.equal(events[1].type, EventType.STATE_SNAPSHOT);
  const last = events.at(-1);
  assert.equal(last.type, EventType.RUN_FINISHED);
  assert.equal(last.outcome.type, "success");
  assert.ok(last.usage[0].outputTokens > 0);

  const { conversationId, runId: parleyRunId } = agent.state;
  const parley = await runEvents(parleyRunId);
  assert.equal(parley[0].conversation_id, conversationId);
  assertMatchesRun(agent, newMessages, events, parley);

  // The turn uses the tools, writes memory and the lead, and hands over.
  assert.ok(ofType(events, EventType.TOOL_CALL_START).length > 0);
  assert.ok(ofType(events, EventType.TOOL_CALL_RESULT).length > 0);
  assert.ok(Object.keys(agent.state.memory.conversation).length > 0);
  assert.equal(agent.state.lead.stage, ofType(parley, "lead.updated").at(-1).stage);
  assert.ok(ofType(events, EventType.STATE_DELTA).length > 0);

  // The state goes back with the next run and continues the conversation.
  const next = await run(agent, SERVICES);
  assert.equal(agent.state.conversationId, conversationId);
  assert.notEqual(agent.state.runId, parleyRunId);
  assertMatchesRun(agent, next.newMessages, next.events, await runEvents(agent.state.runId));

  // An agent whose thread id is the conversation's id continues it too, and its
  // snapshot holds the memory the earlier runs wrote.
  const other = new HttpAgent({ url: `${BASE}/api/chat/stream?protocol=ag-ui`, threadId: conversationId });
  await run(other, "thanks");
  assert.equal(other.state.conversationId, conversationId);
  // (Facts only: the flow's own notes, keys with a dot, change with every turn.)
  const facts = (memory) =>
    Object.fromEntries(Object.entries(memory.conversation).filter(([key]) => !key.includes(".")));
  assert.deepEqual(facts(other.state.memory), facts(agent.state.memory));

  assert.deepEqual(warnings, []);
});
