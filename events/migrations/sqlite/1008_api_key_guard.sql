-- Revocation at the commit (see the PostgreSQL migration of the same number): an event appended
-- by a revoked key provokes the guard's PRIMARY KEY violation, which sqlite-es reports as a
-- conflict; the command service then looks the key up and answers 401. SQLite has one writer, so
-- no lock is needed. One trigger, so that the actor is checked before a key's own revocation
-- applies (SQLite does not promise an order between triggers).
CREATE TABLE api_key_states (
    key_id  TEXT PRIMARY KEY,
    revoked INTEGER NOT NULL
);

INSERT INTO api_key_states (key_id, revoked)
SELECT aggregate_id, MAX(event_type = 'api_key.revoked')
  FROM events
 WHERE aggregate_type = 'api_key'
 GROUP BY aggregate_id;

CREATE TRIGGER events_key_guard AFTER INSERT ON events
WHEN json_extract(NEW.metadata, '$.actorType') = 'api_key' OR NEW.aggregate_type = 'api_key'
BEGIN
    INSERT INTO engagement_guard_clash (id)
    SELECT 1 FROM api_key_states
     WHERE key_id = json_extract(NEW.metadata, '$.actorId')
       AND json_extract(NEW.metadata, '$.actorType') = 'api_key'
       AND revoked;
    INSERT INTO api_key_states (key_id, revoked)
    SELECT NEW.aggregate_id, NEW.event_type = 'api_key.revoked'
     WHERE NEW.aggregate_type = 'api_key' AND NEW.event_type IN ('api_key.created', 'api_key.revoked')
    ON CONFLICT (key_id) DO UPDATE SET revoked = MAX(api_key_states.revoked, excluded.revoked);
END;
