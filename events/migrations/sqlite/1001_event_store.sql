-- The cqrs-es (sqlite-es) events table, extended with the commit time. SQLite has one writer at
-- a time, so rowid order is commit order and the sequencer follows rowid.
-- No unique constraint other than the primary key: sqlite-es maps a primary-key violation to an
-- optimistic-concurrency conflict.
CREATE TABLE events (
    aggregate_type TEXT NOT NULL,
    aggregate_id   TEXT NOT NULL,
    sequence       INTEGER CHECK (sequence >= 0) NOT NULL,
    event_type     TEXT NOT NULL,
    event_version  TEXT NOT NULL,
    payload        TEXT NOT NULL,
    metadata       TEXT NOT NULL,
    recorded_at    INTEGER NOT NULL DEFAULT (CAST(unixepoch('subsec') * 1000 AS INTEGER)),
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
);

CREATE TABLE snapshots (
    aggregate_type   TEXT NOT NULL,
    aggregate_id     TEXT NOT NULL,
    last_sequence    INTEGER CHECK (last_sequence >= 0) NOT NULL,
    current_snapshot INTEGER CHECK (current_snapshot >= 0) NOT NULL,
    payload          TEXT NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, last_sequence)
);

-- Cross-aggregate uniqueness, written by a trigger in the events' own transaction. A clash is a
-- PRIMARY KEY violation (SQLite code 1555), which sqlite-es reports as a conflict.
CREATE TABLE unique_names (
    organization_id TEXT NOT NULL,
    scope           TEXT NOT NULL,
    name_key        TEXT NOT NULL,
    owner_id        TEXT NOT NULL,
    PRIMARY KEY (organization_id, scope, name_key)
);
CREATE INDEX unique_names_owner ON unique_names (owner_id, scope);

CREATE TRIGGER events_reserve_names AFTER INSERT ON events
WHEN json_extract(NEW.metadata, '$.reserveScope') IS NOT NULL
BEGIN
    DELETE FROM unique_names
     WHERE owner_id = NEW.aggregate_id AND scope = json_extract(NEW.metadata, '$.reserveScope');
    INSERT INTO unique_names (organization_id, scope, name_key, owner_id)
    VALUES (json_extract(NEW.metadata, '$.organizationId'), json_extract(NEW.metadata, '$.reserveScope'),
            json_extract(NEW.metadata, '$.reserveKey'), NEW.aggregate_id);
END;
CREATE TRIGGER events_release_names AFTER INSERT ON events
WHEN json_extract(NEW.metadata, '$.releaseScope') IS NOT NULL
BEGIN
    DELETE FROM unique_names
     WHERE owner_id = NEW.aggregate_id AND scope = json_extract(NEW.metadata, '$.releaseScope');
END;

CREATE TABLE event_log (
    position        INTEGER PRIMARY KEY,
    event_id        TEXT NOT NULL UNIQUE,
    organization_id TEXT NOT NULL,
    engagement_id   TEXT,
    aggregate_type  TEXT NOT NULL,
    aggregate_id    TEXT NOT NULL,
    sequence        INTEGER NOT NULL,
    event_type      TEXT NOT NULL,
    event_version   TEXT NOT NULL,
    payload         TEXT NOT NULL,
    metadata        TEXT NOT NULL,
    recorded_at     INTEGER NOT NULL,
    prev_hash       TEXT NOT NULL,
    hash            TEXT NOT NULL
);
CREATE UNIQUE INDEX event_log_stream ON event_log (aggregate_type, aggregate_id, sequence);
CREATE INDEX event_log_org ON event_log (organization_id, position);

CREATE TABLE sequencer_state (
    id      INTEGER PRIMARY KEY,
    last_tx TEXT NOT NULL,
    last_no INTEGER NOT NULL
);
INSERT INTO sequencer_state (id, last_tx, last_no) VALUES (1, '0', 0);

CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'events is insert-only'); END;
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'events is insert-only'); END;
CREATE TRIGGER event_log_no_update BEFORE UPDATE ON event_log
BEGIN SELECT RAISE(ABORT, 'event_log is insert-only'); END;
CREATE TRIGGER event_log_no_delete BEFORE DELETE ON event_log
BEGIN SELECT RAISE(ABORT, 'event_log is insert-only'); END;
