-- Outbound webhooks: operators' endpoints, each delivery of an event to one of them,
-- every attempt of a delivery, and the one-time events already emitted.

CREATE TABLE webhooks (
    id           TEXT PRIMARY KEY,
    url          TEXT NOT NULL,
    events       TEXT NOT NULL DEFAULT '[]',
    secret       TEXT NOT NULL,
    active       INTEGER NOT NULL DEFAULT 1,
    description  TEXT,
    created_at   REAL NOT NULL
);

CREATE TABLE webhook_deliveries (
    id                TEXT PRIMARY KEY,
    webhook_id        TEXT NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
    event_type        TEXT NOT NULL,
    payload           TEXT NOT NULL,
    conversation_id   TEXT REFERENCES conversations(id) ON DELETE CASCADE,
    replay_of         TEXT REFERENCES webhook_deliveries(id) ON DELETE SET NULL,
    status            TEXT NOT NULL DEFAULT 'pending'
                      CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts          INTEGER NOT NULL DEFAULT 0,
    last_status_code  INTEGER,
    last_error        TEXT,
    next_attempt_at   REAL NOT NULL,
    created_at        REAL NOT NULL,
    updated_at        REAL NOT NULL
);
CREATE INDEX webhook_deliveries_webhook_idx ON webhook_deliveries (webhook_id, created_at);
CREATE INDEX webhook_deliveries_pending_idx ON webhook_deliveries (next_attempt_at)
    WHERE status = 'pending';

CREATE TABLE webhook_attempts (
    delivery_id  TEXT NOT NULL REFERENCES webhook_deliveries(id) ON DELETE CASCADE,
    attempt      INTEGER NOT NULL,
    status_code  INTEGER,
    error        TEXT,
    duration_ms  REAL NOT NULL,
    at           REAL NOT NULL,
    PRIMARY KEY (delivery_id, attempt)
);

CREATE TABLE webhook_claims (
    key         TEXT PRIMARY KEY,
    created_at  REAL NOT NULL
);
