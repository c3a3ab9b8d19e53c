-- A conversation's webhook deliveries are read by its export and deleted with it:
-- index them by conversation. Postgres has had this index since 0004; the file keeps
-- the two schemas' histories in step. Twin: migrations/sqlite/0005_delivery_index.sql.

CREATE INDEX IF NOT EXISTS webhook_deliveries_conversation_idx
    ON webhook_deliveries (conversation_id);

INSERT INTO parley_migrations (version) VALUES ('0005_delivery_index') ON CONFLICT DO NOTHING;
