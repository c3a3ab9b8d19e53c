-- Webhook secret rotation: the secret a rotation replaced keeps signing deliveries, next
-- to the new one, until previous_secret_expires_at (Unix seconds).

ALTER TABLE webhooks ADD COLUMN previous_secret TEXT;
ALTER TABLE webhooks ADD COLUMN previous_secret_expires_at REAL;
