-- The SQLite twin (migrations/sqlite/0005_delivery_index.sql) indexes webhook deliveries
-- by conversation, as Postgres has done since 0004: nothing changes here but the
-- version, which keeps the two schemas' histories in step.

INSERT INTO parley_migrations (version) VALUES ('0005_delivery_index') ON CONFLICT DO NOTHING;
