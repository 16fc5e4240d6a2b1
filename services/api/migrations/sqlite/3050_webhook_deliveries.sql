-- Webhook delivery state: the dispatcher's operational data, not history (a rebuild of the read
-- tables leaves it alone). One checkpoint per webhook: the last log position fully handled, and
-- the lease of the one dispatcher (of possibly several processes) that delivers for it.
CREATE TABLE webhook_checkpoints (
    webhook_id  TEXT PRIMARY KEY,
    position    INTEGER NOT NULL,
    leased_by   TEXT NOT NULL,
    lease_until INTEGER NOT NULL
);
-- One row per attempt; `delivery_id` is stable across the attempts of one event.
CREATE TABLE webhook_deliveries (
    id              TEXT PRIMARY KEY,
    webhook_id      TEXT NOT NULL,
    delivery_id     TEXT NOT NULL,
    event_id        TEXT NOT NULL,
    event_type      TEXT NOT NULL,
    position        INTEGER NOT NULL,
    attempt         INTEGER NOT NULL,
    status_code     INTEGER,
    error           TEXT,
    duration_ms     INTEGER NOT NULL,
    attempted_at    INTEGER NOT NULL
);
CREATE INDEX webhook_deliveries_hook ON webhook_deliveries (webhook_id, position, attempt);
