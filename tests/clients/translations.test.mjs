// The real clients read the exact bytes Parley's adapters write for hand-built runs
// (tests/test_protocols.py writes them to PARLEY_FIXTURES): the paths a live offline
// run seldom takes, such as a failed tool, a stopped or failed run, a resumed stream.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import { EventType, HttpAgent } from "@ag-ui/client";
import { DefaultChatTransport, getToolName, isToolUIPart, readUIMessageStream } from "ai";

const fixtures = JSON.parse(readFileSync(process.env.PARLEY_FIXTURES, "utf8"));

const bytes = (...texts) =>
  new ReadableStream({
    start(controller) {
      for (const text of texts) controller.enqueue(new TextEncoder().encode(text));
      controller.close();
    },
  });

/** The AI SDK's own SSE parsing and chunk validation, then its message reader. */
async function uiMessage(...sse) {
  const chunks = new DefaultChatTransport().processResponseStream(bytes(...sse));
  const errors = [];
  let message;
  for await (const snapshot of readUIMessageStream({
    stream: chunks,
    onError: (error) => errors.push(error.message),
  })) {
    message = snapshot;
  }
  return { message, errors };
}

const textOf = (message) =>
  message.parts
    .filter((p) => p.type === "text")
    .map((p) => p.text)
    .join("");

test("AI SDK: a full run", async () => {
  const { message, errors } = await uiMessage(fixtures["ai-sdk"].full);
  assert.deepEqual(errors, []);
  assert.equal(message.id, "run1");
  assert.equal(textOf(message), fixtures.text.full);
  assert.ok(message.parts.filter((p) => p.type === "text").every((p) => p.state === "done"));
  assert.deepEqual(
    message.parts.filter(isToolUIPart).map((p) => [p.toolCallId, getToolName(p), p.state]),
    [
      ["c1", "crm", "output-available"],
      ["c2", "mail", "output-available"],
      ["c3", "book", "output-error"],
    ],
  );
  const failed = message.parts.find((p) => p.toolCallId === "c3");
  assert.equal(failed.errorText, "Calendar answered 500");
  assert.deepEqual(failed.input, { day: "mon" });
  const data = (type) => message.parts.filter((p) => p.type === type);
  assert.deepEqual(
    data("data-memory").map((p) => p.id),
    ["conversation:budget", "workflow:step"],
  );
  assert.equal(data("data-lead")[0].data.stage, "engaged");
  assert.equal(data("data-handoff")[0].data.to, "web_development");
  assert.deepEqual(
    data("data-approval").map((p) => p.data.status),
    ["rejected"], // one part, updated in place
  );
  assert.equal(message.parts.filter((p) => p.type === "step-start").length, 2);
  assert.equal(message.metadata.status, "completed");
  assert.equal(message.metadata.usage.totalTokens, 15);
});

test("AI SDK: a stopped run and a failed run", async () => {
  const stopped = await uiMessage(fixtures["ai-sdk"].stopped);
  assert.deepEqual(stopped.errors, []);
  assert.equal(textOf(stopped.message), "Hel");
  assert.equal(stopped.message.metadata.status, "stopped");

  const failed = await uiMessage(fixtures["ai-sdk"].failed);
  assert.deepEqual(failed.errors, ["Ollama is not answering."]);
  assert.equal(textOf(failed.message), "Hel");
  assert.equal(failed.message.metadata.error.code, "llm_unavailable");
});

test("AI SDK: a resumed stream continues a message and reads on its own", async () => {
  const { prefix, rest } = fixtures["ai-sdk"];
  const continued = await uiMessage(prefix, rest); // one reader, the connection resumed
  assert.deepEqual(continued.errors, []);
  assert.equal(textOf(continued.message), fixtures.text.full);
  assert.equal(continued.message.metadata.status, "completed");
  const alone = await uiMessage(rest); // a reader that has nothing before the cut
  assert.deepEqual(alone.errors, []);
  assert.equal(textOf(alone.message), fixtures.text.rest);
});

/** AG-UI's HttpAgent, its whole pipeline, over the given bytes. */
async function agUiRun(sse) {
  const warnings = [];
  const warn = console.warn;
  console.warn = (...args) => warnings.push(args.join(" "));
  const agent = new HttpAgent({
    url: "http://parley.invalid/api/chat/stream",
    fetch: async () =>
      new Response(bytes(sse), { headers: { "content-type": "text/event-stream" } }),
  });
  agent.addMessage({ id: "u1", role: "user", content: "hi" });
  const events = [];
  let error;
  try {
    await agent.runAgent({ runId: "client-run" }, { onEvent: ({ event }) => void events.push(event) });
  } catch (caught) {
    error = caught;
  } finally {
    console.warn = warn;
  }
  return { agent, events, warnings, error };
}

test("AG-UI: a full run", async () => {
  const { agent, events, warnings, error } = await agUiRun(fixtures["ag-ui"].full);
  assert.equal(error, undefined);
  assert.deepEqual(warnings, []);
  const assistant = agent.messages.filter((m) => m.role === "assistant");
  assert.deepEqual(
    assistant.map((m) => [m.id, m.name, m.content, (m.toolCalls ?? []).map((c) => c.id)]),
    [
      ["m1", "chat", "Let me check.\n\nDone.", ["c1", "c2", "c3"]],
      ["m2", "web_development", "Hi!", []],
    ],
  );
  const tools = agent.messages.filter((m) => m.role === "tool");
  assert.deepEqual(
    tools.map((m) => [m.toolCallId, m.metadata.parley.status]),
    [
      ["c1", "success"],
      ["c2", "skipped"],
      ["c3", "error"],
    ],
  );
  assert.deepEqual(agent.state.memory, {
    conversation: { budget: 20000 },
    workflow: { step: "brief" },
  });
  assert.equal(agent.state.lead.id, "L1");
  assert.equal(events.at(-1).type, EventType.RUN_FINISHED);
});

test("AG-UI: a stopped run and a failed run", async () => {
  const stopped = await agUiRun(fixtures["ag-ui"].stopped);
  assert.equal(stopped.error, undefined);
  assert.deepEqual(stopped.warnings, []);
  assert.deepEqual(stopped.events.at(-1).outcome, { type: "cancelled" });
  assert.equal(stopped.agent.messages.at(-1).content, "Hel");

  const failed = await agUiRun(fixtures["ag-ui"].failed);
  assert.deepEqual(failed.warnings, []);
  const runError = failed.events.at(-1);
  assert.equal(runError.type, EventType.RUN_ERROR);
  assert.equal(runError.code, "llm_unavailable");
  assert.equal(failed.agent.messages.at(-1).content, "Hel");
});

test("AG-UI: a resumed stream reads on its own", async () => {
  const { agent, warnings, error } = await agUiRun(fixtures["ag-ui"].rest);
  assert.equal(error, undefined);
  assert.deepEqual(warnings, []);
  assert.deepEqual(
    agent.messages.filter((m) => m.role === "assistant" && m.content).map((m) => m.content),
    ["check.\n\nDone.", "Hi!"],
  );
});
