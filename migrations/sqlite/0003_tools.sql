-- Business tools: the side-effect ledger (an action happens once per conversation,
-- tool and arguments), the tool execution log, and operator approvals.

CREATE TABLE side_effects (
    key              TEXT PRIMARY KEY,
    conversation_id  TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    tool             TEXT NOT NULL,
    arguments        TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('success', 'unknown')),
    result           TEXT NOT NULL,
    created_at       REAL NOT NULL,
    updated_at       REAL NOT NULL
);
CREATE INDEX side_effects_conversation_idx ON side_effects (conversation_id);

CREATE TABLE agent_logs (
    id               TEXT PRIMARY KEY,
    conversation_id  TEXT REFERENCES conversations(id) ON DELETE CASCADE,
    run_id           TEXT,
    agent            TEXT,
    action           TEXT NOT NULL,
    parameters       TEXT NOT NULL DEFAULT '{}',
    result           TEXT,
    error            TEXT,
    status           TEXT NOT NULL,
    duration_ms      REAL,
    created_at       REAL NOT NULL
);
CREATE INDEX agent_logs_conversation_idx ON agent_logs (conversation_id, created_at);
CREATE INDEX agent_logs_action_idx ON agent_logs (action, created_at);

CREATE TABLE approvals (
    id               TEXT PRIMARY KEY,
    conversation_id  TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    run_id           TEXT NOT NULL,
    agent            TEXT NOT NULL,
    reply_id         TEXT NOT NULL,
    tool             TEXT NOT NULL,
    tool_call        TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'rejected')),
    decided_by       TEXT,
    created_at       REAL NOT NULL,
    resolved_at      REAL
);
CREATE INDEX approvals_status_idx ON approvals (status, created_at);
