-- Business tools: the side-effect ledger (an action happens once per conversation, tool
-- and arguments), the tool execution log, and operator approvals; and parley_finish_run,
-- defined here because agent_logs is the last table it writes.
-- Twin: migrations/sqlite/0003_tools.sql.

CREATE TABLE side_effects (
    key              text PRIMARY KEY,
    conversation_id  text NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    tool             text NOT NULL,
    arguments        jsonb NOT NULL,
    status           text NOT NULL CHECK (status IN ('success', 'unknown')),
    result           jsonb NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX side_effects_conversation_idx ON side_effects (conversation_id);
CREATE TRIGGER side_effects_updated_at BEFORE UPDATE ON side_effects
    FOR EACH ROW EXECUTE FUNCTION parley_touch_updated_at();

CREATE TABLE agent_logs (
    id               text PRIMARY KEY,
    conversation_id  text REFERENCES conversations (id) ON DELETE CASCADE,
    run_id           text,
    agent            text,
    action           text NOT NULL,
    parameters       jsonb NOT NULL DEFAULT '{}',
    result           jsonb,
    error            text,
    status           text NOT NULL,
    duration_ms      double precision,
    created_at       timestamptz NOT NULL
);
CREATE INDEX agent_logs_conversation_idx ON agent_logs (conversation_id, created_at DESC);
CREATE INDEX agent_logs_action_idx ON agent_logs (action, created_at DESC);
CREATE INDEX agent_logs_created_idx ON agent_logs (created_at DESC, id);

CREATE TABLE approvals (
    id               text PRIMARY KEY,
    conversation_id  text NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    run_id           text NOT NULL,
    agent            text NOT NULL,
    reply_id         text NOT NULL,
    tool             text NOT NULL,
    tool_call        jsonb NOT NULL,
    status           text NOT NULL CHECK (status IN ('pending', 'approved', 'rejected')),
    decided_by       text,
    created_at       timestamptz NOT NULL,
    resolved_at      timestamptz
);
CREATE INDEX approvals_status_idx ON approvals (status, created_at);
CREATE INDEX approvals_conversation_idx ON approvals (conversation_id, created_at);

SELECT parley_secure('side_effects');
SELECT parley_secure('agent_logs');
SELECT parley_secure('approvals');

-- A finished run at once: its status, durable events, reply messages, agents' states,
-- the conversation's active agent and the tool logs. Safe to call again with the same
-- outcome (a retry after a lost connection). Returns {"saved": false} when the run is
-- gone (its conversation was erased meanwhile).
CREATE OR REPLACE FUNCTION parley_finish_run(p_run_id text, p_outcome jsonb)
RETURNS jsonb LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
DECLARE
    v_conversation text;
    v_now timestamptz := coalesce((p_outcome ->> 'finished_at')::timestamptz, now());
BEGIN
    SELECT conversation_id INTO v_conversation FROM runs WHERE id = p_run_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN jsonb_build_object('saved', false);
    END IF;

    UPDATE runs SET
        status = p_outcome ->> 'status',
        error_code = p_outcome ->> 'error_code',
        error_message = p_outcome ->> 'error_message',
        usage = nullif(p_outcome -> 'usage', 'null'::jsonb),
        finished_at = v_now
    WHERE id = p_run_id;

    INSERT INTO run_events (run_id, seq, type, data)
    SELECT p_run_id, (e ->> 'seq')::integer, e ->> 'type', e -> 'data'
    FROM jsonb_array_elements(coalesce(p_outcome -> 'events', '[]'::jsonb)) AS e
    ON CONFLICT (run_id, seq) DO UPDATE SET type = excluded.type, data = excluded.data;

    INSERT INTO messages (id, conversation_id, run_id, role, agent, content, status, created_at)
    SELECT m.id, m.conversation_id, m.run_id, m.role, m.agent, m.content, m.status, m.created_at
    FROM jsonb_populate_recordset(NULL::messages, coalesce(p_outcome -> 'messages', '[]'::jsonb)) AS m
    ON CONFLICT (id) DO UPDATE SET content = excluded.content, status = excluded.status;

    INSERT INTO agent_states (conversation_id, agent, state, updated_at)
    SELECT v_conversation, s.key, s.value, v_now
    FROM jsonb_each_text(coalesce(p_outcome -> 'agent_states', '{}'::jsonb)) AS s
    ON CONFLICT (conversation_id, agent)
    DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at;

    IF p_outcome ->> 'active_agent' IS NOT NULL THEN
        UPDATE conversations SET active_agent = p_outcome ->> 'active_agent', updated_at = v_now
        WHERE id = v_conversation;
    END IF;

    INSERT INTO agent_logs (id, conversation_id, run_id, agent, action, parameters, result,
                            error, status, duration_ms, created_at)
    SELECT l.id, l.conversation_id, l.run_id, l.agent, l.action, coalesce(l.parameters, '{}'),
           l.result, l.error, l.status, l.duration_ms, l.created_at
    FROM jsonb_populate_recordset(NULL::agent_logs, coalesce(p_outcome -> 'agent_logs', '[]'::jsonb)) AS l
    ON CONFLICT (id) DO NOTHING;

    RETURN jsonb_build_object('saved', true);
END $$;
SELECT parley_restrict('parley_finish_run(text, jsonb)');

INSERT INTO parley_migrations (version) VALUES ('0003_tools') ON CONFLICT DO NOTHING;
