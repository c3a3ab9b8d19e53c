-- The agent group: workflows (every conversation is one), shared memory, leads and
-- agent-to-agent messages. Twin: migrations/sqlite/0002_group.sql.

ALTER TABLE conversations ADD COLUMN kind text NOT NULL DEFAULT 'chat';
ALTER TABLE conversations ADD COLUMN state text NOT NULL DEFAULT 'active';
ALTER TABLE conversations ADD COLUMN definition jsonb NOT NULL DEFAULT '{}';
CREATE INDEX conversations_updated_idx ON conversations (updated_at DESC);
CREATE INDEX conversations_kind_updated_idx ON conversations (kind, updated_at DESC);

CREATE TABLE memory (
    conversation_id  text NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    scope            text NOT NULL CHECK (scope IN ('conversation', 'workflow')),
    key              text NOT NULL,
    value            jsonb,
    agent            text,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (conversation_id, scope, key)
);
CREATE TRIGGER memory_updated_at BEFORE UPDATE ON memory
    FOR EACH ROW EXECUTE FUNCTION parley_touch_updated_at();

CREATE TABLE leads (
    id               text PRIMARY KEY,
    conversation_id  text UNIQUE REFERENCES conversations (id) ON DELETE CASCADE,
    email            text,
    fields           jsonb NOT NULL DEFAULT '{}',
    score            integer NOT NULL DEFAULT 0,
    stage            text NOT NULL DEFAULT 'new',
    summary          text,
    source           text NOT NULL DEFAULT 'chat',
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX leads_stage_score_idx ON leads (stage, score);
CREATE INDEX leads_created_idx ON leads (created_at DESC, id);
CREATE TRIGGER leads_updated_at BEFORE UPDATE ON leads
    FOR EACH ROW EXECUTE FUNCTION parley_touch_updated_at();

CREATE TABLE agent_messages (
    id               text PRIMARY KEY,
    conversation_id  text NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    from_agent       text NOT NULL,
    to_agent         text NOT NULL,
    kind             text NOT NULL
                     CHECK (kind IN ('request', 'response', 'notification', 'handoff')),
    content          text NOT NULL,
    delivered        boolean NOT NULL DEFAULT false,
    created_at       timestamptz NOT NULL,
    ordinal          bigint GENERATED ALWAYS AS IDENTITY
);
CREATE INDEX agent_messages_conversation_idx
    ON agent_messages (conversation_id, created_at, ordinal);

SELECT parley_secure('memory');
SELECT parley_secure('leads');
SELECT parley_secure('agent_messages');

INSERT INTO parley_migrations (version) VALUES ('0002_group') ON CONFLICT DO NOTHING;
