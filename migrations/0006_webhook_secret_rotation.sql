-- Webhook secret rotation: the secret a rotation replaced keeps signing deliveries, next
-- to the new one, until previous_secret_expires_at. Twin:
-- migrations/sqlite/0006_webhook_secret_rotation.sql.

ALTER TABLE webhooks
    ADD COLUMN previous_secret text,
    ADD COLUMN previous_secret_expires_at timestamptz;

-- Rotate in one statement (an RPC for the REST store, which cannot set a column from
-- another's value): the current secret becomes the previous one, `p_secret` the current.
-- A retry that finds `p_secret` current already keeps the previous secret. Returns the
-- webhook's row, or null when there is no such webhook.
CREATE OR REPLACE FUNCTION parley_rotate_webhook_secret(
    p_webhook_id text, p_secret text, p_previous_expires_at timestamptz
) RETURNS jsonb LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
DECLARE
    v_row jsonb;
BEGIN
    UPDATE webhooks w SET
        previous_secret = CASE WHEN w.secret = p_secret THEN w.previous_secret ELSE w.secret END,
        secret = p_secret,
        previous_secret_expires_at = p_previous_expires_at
    WHERE w.id = p_webhook_id
    RETURNING to_jsonb(w.*) INTO v_row;
    RETURN v_row;
END $$;
SELECT parley_restrict('parley_rotate_webhook_secret(text, text, timestamptz)');

INSERT INTO parley_migrations (version) VALUES ('0006_webhook_secret_rotation') ON CONFLICT DO NOTHING;
