-- Idempotency-Key records: the first response to a POST, replayed for 24 hours.
CREATE TABLE idempotency_keys (
    key_id          TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    fingerprint     TEXT NOT NULL,
    -- NULL while the first request is still running.
    status          INTEGER,
    body            TEXT,
    created_at      INTEGER NOT NULL,
    PRIMARY KEY (key_id, idempotency_key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
