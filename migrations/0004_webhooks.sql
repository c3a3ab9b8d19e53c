-- Outbound webhooks: operators' endpoints, each delivery of an event to one of them,
-- every attempt of a delivery, and the one-time events already emitted; and the
-- retention purge (parley_purge_older_than), which deletes from all of the tables.
-- Twin: migrations/sqlite/0004_webhooks.sql.

CREATE TABLE webhooks (
    id           text PRIMARY KEY,
    url          text NOT NULL,
    events       jsonb NOT NULL DEFAULT '[]',
    secret       text NOT NULL,
    active       boolean NOT NULL DEFAULT true,
    description  text,
    created_at   timestamptz NOT NULL,
    ordinal      bigint GENERATED ALWAYS AS IDENTITY
);
CREATE INDEX webhooks_created_idx ON webhooks (created_at, id);

CREATE TABLE webhook_deliveries (
    id                text PRIMARY KEY,
    webhook_id        text NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event_type        text NOT NULL,
    payload           jsonb NOT NULL,
    conversation_id   text REFERENCES conversations (id) ON DELETE CASCADE,
    replay_of         text REFERENCES webhook_deliveries (id) ON DELETE SET NULL,
    status            text NOT NULL DEFAULT 'pending'
                      CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts          integer NOT NULL DEFAULT 0,
    last_status_code  integer,
    last_error        text,
    next_attempt_at   timestamptz NOT NULL,
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    ordinal           bigint GENERATED ALWAYS AS IDENTITY
);
CREATE INDEX webhook_deliveries_webhook_idx
    ON webhook_deliveries (webhook_id, created_at DESC, ordinal DESC);
CREATE INDEX webhook_deliveries_pending_idx ON webhook_deliveries (next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_conversation_idx ON webhook_deliveries (conversation_id);
CREATE INDEX webhook_deliveries_replay_idx ON webhook_deliveries (replay_of);
CREATE TRIGGER webhook_deliveries_updated_at BEFORE UPDATE ON webhook_deliveries
    FOR EACH ROW EXECUTE FUNCTION parley_touch_updated_at();

CREATE TABLE webhook_attempts (
    delivery_id  text NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    attempt      integer NOT NULL,
    status_code  integer,
    error        text,
    duration_ms  double precision NOT NULL,
    at           timestamptz NOT NULL,
    PRIMARY KEY (delivery_id, attempt)
);

CREATE TABLE webhook_claims (
    key         text PRIMARY KEY,
    created_at  timestamptz NOT NULL DEFAULT now()
);

SELECT parley_secure('webhooks');
SELECT parley_secure('webhook_deliveries');
SELECT parley_secure('webhook_attempts');
SELECT parley_secure('webhook_claims');

-- One attempt of a delivery and the delivery's new state, together (an RPC for the REST
-- store, which cannot update one table and insert into another atomically). Returns
-- {"recorded": false}, writing nothing, when the delivery no longer exists.
CREATE OR REPLACE FUNCTION parley_record_webhook_attempt(
    p_delivery_id text, p_attempt jsonb, p_status text, p_next_attempt_at timestamptz
) RETURNS jsonb LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
DECLARE
    a webhook_attempts;
BEGIN
    a := jsonb_populate_record(NULL::webhook_attempts, p_attempt);
    UPDATE webhook_deliveries SET
        status = p_status,
        attempts = a.attempt,
        last_status_code = a.status_code,
        last_error = a.error,
        next_attempt_at = p_next_attempt_at,
        updated_at = a.at
    WHERE id = p_delivery_id;
    IF NOT FOUND THEN
        RETURN jsonb_build_object('recorded', false);
    END IF;
    INSERT INTO webhook_attempts (delivery_id, attempt, status_code, error, duration_ms, at)
    VALUES (p_delivery_id, a.attempt, a.status_code, a.error, a.duration_ms, a.at)
    ON CONFLICT (delivery_id, attempt) DO UPDATE SET
        status_code = excluded.status_code, error = excluded.error,
        duration_ms = excluded.duration_ms, at = excluded.at;
    RETURN jsonb_build_object('recorded', true);
END $$;
SELECT parley_restrict('parley_record_webhook_attempt(text, jsonb, text, timestamptz)');

-- Retention (Store.purge_older_than), in one transaction: idle conversations with no
-- queued or running run (with everything derived from them), the durable events of runs
-- finished before the cutoff but each run's terminal event, tool logs, and finished
-- webhook deliveries. Returns how many rows of each kind went. An RPC for the REST store.
CREATE OR REPLACE FUNCTION parley_purge_older_than(p_cutoff timestamptz)
RETURNS jsonb LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
DECLARE
    v_conversations bigint;
    v_events bigint;
    v_logs bigint;
    v_deliveries bigint;
BEGIN
    DELETE FROM conversations c
    WHERE c.updated_at < p_cutoff
      AND NOT EXISTS (
          SELECT FROM runs r WHERE r.conversation_id = c.id AND r.status IN ('queued', 'running')
      );
    GET DIAGNOSTICS v_conversations = ROW_COUNT;

    DELETE FROM run_events e USING runs r
    WHERE e.run_id = r.id
      AND r.status NOT IN ('queued', 'running')
      AND coalesce(r.finished_at, r.created_at) < p_cutoff
      AND e.type NOT IN ('run.completed', 'run.stopped', 'run.failed');
    GET DIAGNOSTICS v_events = ROW_COUNT;

    DELETE FROM agent_logs WHERE created_at < p_cutoff;
    GET DIAGNOSTICS v_logs = ROW_COUNT;

    DELETE FROM webhook_deliveries WHERE status <> 'pending' AND updated_at < p_cutoff;
    GET DIAGNOSTICS v_deliveries = ROW_COUNT;

    RETURN jsonb_build_object(
        'run_events', v_events,
        'agent_logs', v_logs,
        'webhook_deliveries', v_deliveries,
        'conversations', v_conversations
    );
END $$;
SELECT parley_restrict('parley_purge_older_than(timestamptz)');
CREATE INDEX runs_finished_idx ON runs (coalesce(finished_at, created_at))
    WHERE status NOT IN ('queued', 'running');
CREATE INDEX webhook_deliveries_finished_idx ON webhook_deliveries (updated_at)
    WHERE status <> 'pending';

INSERT INTO parley_migrations (version) VALUES ('0004_webhooks') ON CONFLICT DO NOTHING;
