-- A conversation's webhook deliveries are read by its export and deleted with it:
-- index them by conversation, as Postgres does.

CREATE INDEX IF NOT EXISTS webhook_deliveries_conversation_idx
    ON webhook_deliveries (conversation_id);
