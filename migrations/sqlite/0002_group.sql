-- The agent group: workflows (every conversation is one), shared memory, leads and
-- agent-to-agent messages.

ALTER TABLE conversations ADD COLUMN kind TEXT NOT NULL DEFAULT 'chat';
ALTER TABLE conversations ADD COLUMN state TEXT NOT NULL DEFAULT 'active';
ALTER TABLE conversations ADD COLUMN definition TEXT NOT NULL DEFAULT '{}';
CREATE INDEX conversations_updated_idx ON conversations (updated_at);

CREATE TABLE memory (
    conversation_id  TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    scope            TEXT NOT NULL CHECK (scope IN ('conversation', 'workflow')),
    key              TEXT NOT NULL,
    value            TEXT NOT NULL,
    agent            TEXT,
    updated_at       REAL NOT NULL,
    PRIMARY KEY (conversation_id, scope, key)
);

CREATE TABLE leads (
    id               TEXT PRIMARY KEY,
    conversation_id  TEXT UNIQUE REFERENCES conversations(id) ON DELETE CASCADE,
    email            TEXT,
    fields           TEXT NOT NULL DEFAULT '{}',
    score            INTEGER NOT NULL DEFAULT 0,
    stage            TEXT NOT NULL DEFAULT 'new',
    summary          TEXT,
    source           TEXT NOT NULL DEFAULT 'chat',
    created_at       REAL NOT NULL,
    updated_at       REAL NOT NULL
);
CREATE INDEX leads_stage_score_idx ON leads (stage, score);
CREATE INDEX leads_created_idx ON leads (created_at);

CREATE TABLE agent_messages (
    id               TEXT PRIMARY KEY,
    conversation_id  TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    from_agent       TEXT NOT NULL,
    to_agent         TEXT NOT NULL,
    kind             TEXT NOT NULL CHECK (kind IN ('request', 'response', 'notification', 'handoff')),
    content          TEXT NOT NULL,
    delivered        INTEGER NOT NULL DEFAULT 0,
    created_at       REAL NOT NULL
);
CREATE INDEX agent_messages_conversation_idx ON agent_messages (conversation_id, created_at);
