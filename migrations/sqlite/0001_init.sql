-- The embedded SQLite twin of the Postgres schema: conversations, their
-- messages, runs, the durable (non-delta) run events and agent state.

CREATE TABLE conversations (
    id            TEXT PRIMARY KEY,
    active_agent  TEXT NOT NULL DEFAULT 'chat',
    metadata      TEXT NOT NULL DEFAULT '{}',
    created_at    REAL NOT NULL,
    updated_at    REAL NOT NULL
);

CREATE TABLE messages (
    id               TEXT PRIMARY KEY,
    conversation_id  TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    run_id           TEXT NOT NULL,
    role             TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
    agent            TEXT,
    content          TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('complete', 'stopped', 'failed')),
    created_at       REAL NOT NULL
);
CREATE INDEX messages_conversation_idx ON messages (conversation_id, created_at);

CREATE TABLE runs (
    id               TEXT PRIMARY KEY,
    conversation_id  TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    user_message_id  TEXT NOT NULL,
    status           TEXT NOT NULL
                     CHECK (status IN ('queued', 'running', 'completed', 'stopped', 'failed')),
    error_code       TEXT,
    error_message    TEXT,
    usage            TEXT,
    created_at       REAL NOT NULL,
    finished_at      REAL
);
CREATE INDEX runs_conversation_idx ON runs (conversation_id, created_at);
CREATE INDEX runs_unfinished_idx ON runs (status) WHERE status IN ('queued', 'running');

CREATE TABLE run_events (
    run_id  TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    seq     INTEGER NOT NULL,
    type    TEXT NOT NULL,
    data    TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
);

CREATE TABLE agent_states (
    conversation_id  TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    agent            TEXT NOT NULL,
    state            TEXT NOT NULL,
    updated_at       REAL NOT NULL,
    PRIMARY KEY (conversation_id, agent)
);
