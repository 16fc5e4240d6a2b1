-- The cqrs-es (postgres-es) events table, extended with what the sequencer needs.
-- No unique constraint other than the primary key: postgres-es maps ANY unique violation to an
-- optimistic-concurrency conflict.
CREATE TABLE events (
    aggregate_type TEXT NOT NULL,
    aggregate_id   TEXT NOT NULL,
    sequence       BIGINT CHECK (sequence >= 0) NOT NULL,
    event_type     TEXT NOT NULL,
    event_version  TEXT NOT NULL,
    payload        JSON NOT NULL,
    metadata       JSON NOT NULL,
    -- Commit order is not insert order in PostgreSQL: the sequencer only hands out positions to
    -- rows whose transaction id is below the oldest running transaction (see sequencer.rs).
    tx_id          XID8 NOT NULL DEFAULT pg_current_xact_id(),
    seq_no         BIGINT GENERATED ALWAYS AS IDENTITY,
    recorded_at    BIGINT NOT NULL DEFAULT (floor(extract(epoch FROM clock_timestamp()) * 1000))::BIGINT,
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
);
CREATE INDEX events_commit_order ON events (tx_id, seq_no);

-- cqrs-es requires the snapshots table to exist even though Pwnbook never uses snapshots.
CREATE TABLE snapshots (
    aggregate_type   TEXT NOT NULL,
    aggregate_id     TEXT NOT NULL,
    last_sequence    BIGINT CHECK (last_sequence >= 0) NOT NULL,
    current_snapshot BIGINT CHECK (current_snapshot >= 0) NOT NULL,
    payload          JSON NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, last_sequence)
);

-- Cross-aggregate uniqueness (engagement names, ...). Rows are written by a trigger in the same
-- transaction as the events, so a race is impossible; a clash surfaces as a unique violation that
-- postgres-es reports as a conflict, and the command service re-checks and answers 409.
CREATE TABLE unique_names (
    organization_id TEXT NOT NULL,
    scope           TEXT NOT NULL,
    name_key        TEXT NOT NULL,
    owner_id        TEXT NOT NULL,
    PRIMARY KEY (organization_id, scope, name_key)
);
CREATE INDEX unique_names_owner ON unique_names (owner_id, scope);

CREATE FUNCTION pwnbook_reserve_names() RETURNS trigger AS $$
BEGIN
    IF NEW.metadata->>'reserveScope' IS NOT NULL THEN
        DELETE FROM unique_names
         WHERE owner_id = NEW.aggregate_id AND scope = NEW.metadata->>'reserveScope';
        INSERT INTO unique_names (organization_id, scope, name_key, owner_id)
        VALUES (NEW.metadata->>'organizationId', NEW.metadata->>'reserveScope',
                NEW.metadata->>'reserveKey', NEW.aggregate_id);
    ELSIF NEW.metadata->>'releaseScope' IS NOT NULL THEN
        DELETE FROM unique_names
         WHERE owner_id = NEW.aggregate_id AND scope = NEW.metadata->>'releaseScope';
    END IF;
    RETURN NEW;
END
$$ LANGUAGE plpgsql;
CREATE TRIGGER events_reserve_names AFTER INSERT ON events
    FOR EACH ROW EXECUTE FUNCTION pwnbook_reserve_names();

-- The global log: dense positions, per-organization hash chain. Insert-only.
CREATE TABLE event_log (
    position        BIGINT PRIMARY KEY,
    event_id        TEXT NOT NULL UNIQUE,
    organization_id TEXT NOT NULL,
    engagement_id   TEXT,
    aggregate_type  TEXT NOT NULL,
    aggregate_id    TEXT NOT NULL,
    sequence        BIGINT NOT NULL,
    event_type      TEXT NOT NULL,
    event_version   TEXT NOT NULL,
    payload         TEXT NOT NULL,
    metadata        TEXT NOT NULL,
    recorded_at     BIGINT NOT NULL,
    prev_hash       TEXT NOT NULL,
    hash            TEXT NOT NULL
);
CREATE UNIQUE INDEX event_log_stream ON event_log (aggregate_type, aggregate_id, sequence);
CREATE INDEX event_log_org ON event_log (organization_id, position);

CREATE TABLE sequencer_state (
    id      BIGINT PRIMARY KEY,
    last_tx TEXT NOT NULL,
    last_no BIGINT NOT NULL
);
INSERT INTO sequencer_state (id, last_tx, last_no) VALUES (1, '0', 0);

CREATE FUNCTION pwnbook_insert_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION '% is insert-only', TG_TABLE_NAME;
END
$$ LANGUAGE plpgsql;
CREATE TRIGGER events_insert_only BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION pwnbook_insert_only();
CREATE TRIGGER event_log_insert_only BEFORE UPDATE OR DELETE ON event_log
    FOR EACH ROW EXECUTE FUNCTION pwnbook_insert_only();
