-- Parley's Postgres / Supabase schema, part 1: conversations, their messages, runs, the
-- durable (non-delta) run events and agent state. migrations/sqlite/0001_init.sql is its
-- embedded twin; keep the two in step.
--
-- Apply with `python run.py migrate` (records each version, takes an advisory lock), or by
-- hand, in order: psql "$DATABASE_URL" -v ON_ERROR_STOP=1 -1 -f migrations/0001_init.sql
-- Every file records its own version, so the runner skips what psql applied.
--
-- Access: Row Level Security is on for every table. The server connects either as the
-- tables' owner (the direct or pooler URL; owners are not subject to RLS) or through the
-- REST API with the service_role key, which the `parley_server` policy lets in. Supabase's
-- `anon` and `authenticated` roles get no grant and no policy: the public API keys can
-- neither read nor write anything here.

CREATE TABLE IF NOT EXISTS parley_migrations (
    version     text PRIMARY KEY,
    applied_at  timestamptz NOT NULL DEFAULT now()
);

-- RLS on, privileges revoked from everyone but the owner, and the server's policy for
-- service_role. On plain Postgres without Supabase's roles only RLS is turned on.
CREATE OR REPLACE FUNCTION parley_secure(tbl regclass) RETURNS void
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
BEGIN
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', tbl);
    EXECUTE format('REVOKE ALL ON TABLE %s FROM PUBLIC', tbl);
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'anon') THEN
        EXECUTE format('REVOKE ALL ON TABLE %s FROM anon', tbl);
    END IF;
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'authenticated') THEN
        EXECUTE format('REVOKE ALL ON TABLE %s FROM authenticated', tbl);
    END IF;
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'service_role') THEN
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE %s TO service_role', tbl);
        IF NOT EXISTS (
            SELECT FROM pg_policy WHERE polrelid = tbl AND polname = 'parley_server'
        ) THEN
            EXECUTE format(
                'CREATE POLICY parley_server ON %s FOR ALL TO service_role '
                'USING (true) WITH CHECK (true)',
                tbl
            );
        END IF;
    END IF;
END $$;

-- Functions in `public` are callable over the REST API (/rest/v1/rpc/<name>): only the
-- server's role may call Parley's.
CREATE OR REPLACE FUNCTION parley_restrict(fn regprocedure) RETURNS void
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
BEGIN
    EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', fn);
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'anon') THEN
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM anon', fn);
    END IF;
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'authenticated') THEN
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM authenticated', fn);
    END IF;
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'service_role') THEN
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO service_role', fn);
    END IF;
END $$;

SELECT parley_restrict('parley_secure(regclass)');
SELECT parley_restrict('parley_restrict(regprocedure)');
SELECT parley_secure('parley_migrations');

-- updated_at: the server writes it itself; any other writer (the dashboard, SQL by hand)
-- that changes a row but leaves updated_at as it was gets now().
CREATE OR REPLACE FUNCTION parley_touch_updated_at() RETURNS trigger
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
BEGIN
    IF NEW.updated_at IS NOT DISTINCT FROM OLD.updated_at AND NEW IS DISTINCT FROM OLD THEN
        NEW.updated_at := now();
    END IF;
    RETURN NEW;
END $$;
SELECT parley_restrict('parley_touch_updated_at()');

CREATE TABLE conversations (
    id            text PRIMARY KEY,
    active_agent  text NOT NULL DEFAULT 'chat',
    metadata      jsonb NOT NULL DEFAULT '{}',
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE TRIGGER conversations_updated_at BEFORE UPDATE ON conversations
    FOR EACH ROW EXECUTE FUNCTION parley_touch_updated_at();

CREATE TABLE messages (
    id               text PRIMARY KEY,
    conversation_id  text NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    run_id           text NOT NULL,
    role             text NOT NULL CHECK (role IN ('user', 'assistant')),
    agent            text,
    content          text NOT NULL,
    status           text NOT NULL CHECK (status IN ('complete', 'stopped', 'failed')),
    created_at       timestamptz NOT NULL,
    -- Insertion order: the tie-break of messages written in the same microsecond.
    ordinal          bigint GENERATED ALWAYS AS IDENTITY
);
CREATE INDEX messages_conversation_idx ON messages (conversation_id, created_at, ordinal);

CREATE TABLE runs (
    id               text PRIMARY KEY,
    conversation_id  text NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    user_message_id  text NOT NULL,
    status           text NOT NULL
                     CHECK (status IN ('queued', 'running', 'completed', 'stopped', 'failed')),
    error_code       text,
    error_message    text,
    usage            jsonb,
    created_at       timestamptz NOT NULL,
    finished_at      timestamptz
);
CREATE INDEX runs_conversation_idx ON runs (conversation_id, created_at);
CREATE INDEX runs_unfinished_idx ON runs (created_at) WHERE status IN ('queued', 'running');

CREATE TABLE run_events (
    run_id  text NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    seq     integer NOT NULL,
    type    text NOT NULL,
    data    jsonb NOT NULL,
    PRIMARY KEY (run_id, seq)
);

CREATE TABLE agent_states (
    conversation_id  text NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    agent            text NOT NULL,
    state            text NOT NULL,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (conversation_id, agent)
);
CREATE TRIGGER agent_states_updated_at BEFORE UPDATE ON agent_states
    FOR EACH ROW EXECUTE FUNCTION parley_touch_updated_at();

SELECT parley_secure('conversations');
SELECT parley_secure('messages');
SELECT parley_secure('runs');
SELECT parley_secure('run_events');
SELECT parley_secure('agent_states');

-- Writes that touch several tables at once. The REST store calls them over RPC because
-- PostgREST runs one statement per request and so cannot make them atomic; the asyncpg
-- store calls the same functions, so both backends share one definition.

-- A queued run and the visitor's message (none for a run that resumes a parked reply).
CREATE OR REPLACE FUNCTION parley_start_run(p_run jsonb, p_message jsonb DEFAULT NULL)
RETURNS jsonb LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
BEGIN
    INSERT INTO runs (id, conversation_id, user_message_id, status, created_at)
    SELECT r.id, r.conversation_id, r.user_message_id, r.status, r.created_at
    FROM jsonb_populate_record(NULL::runs, p_run) AS r
    ON CONFLICT (id) DO NOTHING;
    IF p_message IS NOT NULL AND p_message <> 'null'::jsonb THEN
        INSERT INTO messages (id, conversation_id, run_id, role, agent, content, status, created_at)
        SELECT m.id, m.conversation_id, m.run_id, m.role, m.agent, m.content, m.status, m.created_at
        FROM jsonb_populate_record(NULL::messages, p_message) AS m
        ON CONFLICT (id) DO NOTHING;
    END IF;
    UPDATE conversations SET updated_at = (p_run ->> 'created_at')::timestamptz
    WHERE id = p_run ->> 'conversation_id';
    RETURN jsonb_build_object('started', true);
END $$;
SELECT parley_restrict('parley_start_run(jsonb, jsonb)');

-- Erase a conversation and everything derived from it (by cascade): {"deleted": true,
-- "runs": [its run ids]}, or {"deleted": false} when there was no such conversation. The
-- row lock makes a run started at the same moment wait, then fail its foreign key, rather
-- than survive unnamed.
CREATE OR REPLACE FUNCTION parley_delete_conversation(p_conversation_id text)
RETURNS jsonb LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
DECLARE
    v_runs jsonb;
BEGIN
    PERFORM 1 FROM conversations WHERE id = p_conversation_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN jsonb_build_object('deleted', false);
    END IF;
    SELECT coalesce(jsonb_agg(id ORDER BY created_at), '[]'::jsonb) INTO v_runs
    FROM runs WHERE conversation_id = p_conversation_id;
    DELETE FROM conversations WHERE id = p_conversation_id;
    RETURN jsonb_build_object('deleted', true, 'runs', v_runs);
END $$;
SELECT parley_restrict('parley_delete_conversation(text)');

INSERT INTO parley_migrations (version) VALUES ('0001_init') ON CONFLICT DO NOTHING;
