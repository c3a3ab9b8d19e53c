// The Vercel AI SDK's own transport and stream reader against a real Parley server.

import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { test } from "node:test";

import { DefaultChatTransport, getToolName, isToolUIPart, readUIMessageStream } from "ai";

import { BASE, SERVICES, SHOP, history, lastBy, ofType, runEvents } from "./parley.mjs";

const userMessage = (text) => ({ id: randomUUID(), role: "user", parts: [{ type: "text", text }] });

/** The assistant message the AI SDK assembles from a stream of UI message chunks. */
async function assemble(stream) {
  let message;
  for await (const snapshot of readUIMessageStream({ stream, terminateOnError: true })) {
    message = snapshot;
  }
  assert.ok(message, "the stream produced no message");
  return message;
}

async function send(api, chatId, messages) {
  const transport = new DefaultChatTransport({ api });
  const stream = await transport.sendMessages({
    chatId,
    messages,
    trigger: "submit-message",
    messageId: undefined,
    abortSignal: undefined,
  });
  return assemble(stream);
}

const textOf = (message) =>
  message.parts
    .filter((p) => p.type === "text")
    .map((p) => p.text)
    .join("");

/** The message says what the run did: text, tools, data parts, steps. */
function assertMatchesRun(message, events) {
  const completed = ofType(events, "message.completed");
  assert.equal(textOf(message), completed.map((e) => e.content).join(""));
  const texts = message.parts.filter((p) => p.type === "text");
  assert.ok(texts.length > 0);
  for (const part of texts) assert.equal(part.state, "done");
  const speakers = [...new Set(texts.map((p) => p.providerMetadata.parley.agent))];
  assert.deepEqual(speakers, [...new Set(completed.map((e) => e.agent))]);

  const tools = message.parts.filter(isToolUIPart);
  const started = ofType(events, "tool.started");
  assert.equal(tools.length, started.length);
  const finished = new Map(ofType(events, "tool.finished").map((e) => [e.tool_call_id, e]));
  for (const call of started) {
    const part = tools.find((p) => p.toolCallId === call.tool_call_id);
    assert.ok(part, `no tool part for ${call.tool}`);
    assert.equal(getToolName(part), call.tool);
    assert.deepEqual(part.input, call.arguments);
    assert.equal(part.providerExecuted, true);
    const result = finished.get(call.tool_call_id);
    if (result.status === "error") {
      assert.equal(part.state, "output-error");
    } else {
      assert.equal(part.state, "output-available");
      assert.deepEqual(part.output, result.result ?? null);
    }
  }

  const data = (type) => message.parts.filter((p) => p.type === type);
  const memory = lastBy(events, "memory.updated", (e) => `${e.scope}:${e.key}`);
  assert.equal(data("data-memory").length, memory.size);
  for (const [id, event] of memory) {
    const part = data("data-memory").find((p) => p.id === id);
    assert.deepEqual(part.data.value, event.value);
  }
  const leads = lastBy(events, "lead.updated", (e) => e.lead_id);
  assert.equal(data("data-lead").length, leads.size);
  for (const [id, event] of leads) {
    const part = data("data-lead").find((p) => p.id === id);
    assert.deepEqual(part.data, {
      leadId: id,
      score: event.score,
      stage: event.stage,
      fields: event.fields,
    });
  }
  const handoffs = ofType(events, "handoff");
  assert.deepEqual(
    data("data-handoff").map((p) => [p.data.from, p.data.to]),
    handoffs.map((e) => [e.from, e.to]),
  );
  assert.equal(
    message.parts.filter((p) => p.type === "step-start").length,
    ofType(events, "agent.started").length,
  );
}

test("useChat's transport streams a turn: text, tool parts and data parts", { timeout: 60_000 }, async () => {
  const chatId = randomUUID();
  const first = userMessage(SHOP);
  const message = await send(`${BASE}/api/chat/stream`, chatId, [first]);

  const { conversationId, runId, status, usage } = message.metadata;
  assert.equal(message.id, runId);
  assert.equal(status, "completed");
  assert.ok(usage.outputTokens > 0);
  const events = await runEvents(runId);
  assert.equal(events.at(-1).type, "run.completed");
  assert.equal(events[0].conversation_id, conversationId);
  assertMatchesRun(message, events);

  // The turn runs the flow's steps as tools, writes memory and the lead, and hands over.
  const tools = message.parts.filter(isToolUIPart).map(getToolName);
  assert.ok(tools.includes("send_email_confirmation"), `tools used: ${tools}`);
  assert.ok(message.parts.some((p) => p.type === "data-memory"));
  assert.ok(message.parts.some((p) => p.type === "data-lead"));
  assert.ok(message.parts.some((p) => p.type === "data-handoff"));

  // The next turn, as useChat sends it (all messages, the assistant's metadata
  // included), continues the same conversation.
  const second = await send(`${BASE}/api/chat/stream?protocol=ai-sdk`, chatId, [
    first,
    message,
    userMessage(SERVICES),
  ]);
  assert.equal(second.metadata.conversationId, conversationId);
  assert.notEqual(second.metadata.runId, runId);
  assertMatchesRun(second, await runEvents(second.metadata.runId));
  const transcript = await history(conversationId);
  assert.deepEqual(
    transcript.messages.filter((m) => m.role === "user").map((m) => m.content),
    [SHOP, SERVICES],
  );

  // A chat whose id is the conversation's id continues it too.
  const third = await send(`${BASE}/api/chat/stream`, conversationId, [userMessage("thanks")]);
  assert.equal(third.metadata.conversationId, conversationId);
});

test("the AI SDK's resume reads the run again from the replay endpoint", { timeout: 60_000 }, async () => {
  const message = await send(`${BASE}/api/chat/stream`, randomUUID(), [userMessage(SHOP)]);
  const { runId } = message.metadata;
  const transport = new DefaultChatTransport({
    api: `${BASE}/api/chat/stream`,
    prepareReconnectToStreamRequest: () => ({
      api: `${BASE}/api/chat/runs/${runId}/events?protocol=ai-sdk`,
    }),
  });
  const stream = await transport.reconnectToStream({ chatId: randomUUID() });
  const replayed = await assemble(stream);
  assert.equal(replayed.id, runId);
  assert.equal(textOf(replayed), textOf(message));
  assertMatchesRun(replayed, await runEvents(runId));
});
