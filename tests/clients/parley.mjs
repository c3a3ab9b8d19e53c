// Reading a run's own events (Parley's event schema), to check what a front-end
// protocol client assembled against what the run really did.

export const BASE = process.env.PARLEY_URL;
if (!BASE) {
  throw new Error("Set PARLEY_URL to the base URL of a running Parley server.");
}

export const SHOP = "I need a new online shop, my email is ada@example.com, budget 20000";
export const SERVICES = "What services do you offer?";

/** Every event of the run, parsed from its SSE replay. */
export async function runEvents(runId) {
  const response = await fetch(`${BASE}/api/chat/runs/${runId}/events`);
  if (!response.ok) throw new Error(`replay of ${runId}: HTTP ${response.status}`);
  const text = await response.text();
  return text
    .split(/\r?\n\r?\n/)
    .map((block) =>
      block
        .split(/\r?\n/)
        .filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).trimStart())
        .join("\n"),
    )
    .filter(Boolean)
    .map((data) => JSON.parse(data));
}

export const ofType = (events, type) => events.filter((e) => e.type === type);

/** The last event of `type` for each key. */
export function lastBy(events, type, key) {
  const latest = new Map();
  for (const event of ofType(events, type)) latest.set(key(event), event);
  return latest;
}

export async function history(conversationId) {
  const response = await fetch(`${BASE}/api/chat/history/${conversationId}`);
  return response.json();
}
