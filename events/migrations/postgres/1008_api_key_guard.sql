-- Revocation at the commit. Every API key has a state row, kept by the write guard in its own
-- events' transaction, and every event appended by a key takes a share lock on its row: the
-- event cannot commit once the key is revoked, and a revocation in flight waits for the key's
-- writes in flight, so no event of a key commits after its revocation did. A server may then
-- authenticate a write from memory and leave the check to the commit (services/api/src/auth.rs).
-- A refused event raises a unique violation like a refused engagement; the command service then
-- looks the key up and answers 401. An actor id without a row (events written by tests or tools
-- with made-up actors) is not refused: a key's row exists from its creation on.
-- No key event may commit between the backfill and the guard (a revocation would be lost).
LOCK TABLE events IN SHARE ROW EXCLUSIVE MODE;

CREATE TABLE api_key_states (
    key_id  TEXT PRIMARY KEY,
    revoked BOOLEAN NOT NULL
);

INSERT INTO api_key_states (key_id, revoked)
SELECT aggregate_id, bool_or(event_type = 'api_key.revoked')
  FROM events
 WHERE aggregate_type = 'api_key'
 GROUP BY aggregate_id;

ALTER FUNCTION pwnbook_engagement_guard() RENAME TO pwnbook_write_guard;
ALTER TRIGGER events_engagement_guard ON events RENAME TO events_write_guard;

CREATE OR REPLACE FUNCTION pwnbook_write_guard() RETURNS trigger AS $$
DECLARE
    current_state TEXT;
    key_revoked BOOLEAN;
BEGIN
    -- The actor first: a key revoking itself is checked before its own revocation applies.
    IF NEW.metadata->>'actorType' = 'api_key' THEN
        SELECT revoked INTO key_revoked FROM api_key_states
         WHERE key_id = NEW.metadata->>'actorId' FOR SHARE;
        IF key_revoked THEN
            RAISE EXCEPTION 'api key % is revoked', NEW.metadata->>'actorId'
                USING ERRCODE = 'unique_violation';
        END IF;
    END IF;
    IF NEW.aggregate_type = 'api_key' THEN
        IF NEW.event_type IN ('api_key.created', 'api_key.revoked') THEN
            INSERT INTO api_key_states (key_id, revoked)
            VALUES (NEW.aggregate_id, NEW.event_type = 'api_key.revoked')
            ON CONFLICT (key_id) DO UPDATE SET revoked = api_key_states.revoked OR EXCLUDED.revoked;
        END IF;
    ELSIF NEW.aggregate_type = 'engagement' THEN
        IF NEW.event_type IN ('engagement.created', 'engagement.archived', 'engagement.unarchived',
                              'engagement.deleted') THEN
            INSERT INTO engagement_states (engagement_id, state)
            VALUES (NEW.aggregate_id,
                    CASE NEW.event_type WHEN 'engagement.archived' THEN 'archived'
                                        WHEN 'engagement.deleted' THEN 'deleted'
                                        ELSE 'active' END)
            ON CONFLICT (engagement_id) DO UPDATE SET state = EXCLUDED.state;
        END IF;
    ELSIF NEW.metadata->>'engagementId' IS NOT NULL THEN
        SELECT state INTO current_state FROM engagement_states
         WHERE engagement_id = NEW.metadata->>'engagementId' FOR SHARE;
        IF current_state IS DISTINCT FROM 'active' THEN
            RAISE EXCEPTION 'engagement % is %', NEW.metadata->>'engagementId',
                COALESCE(current_state, 'missing')
                USING ERRCODE = 'unique_violation';
        END IF;
    END IF;
    RETURN NEW;
END
$$ LANGUAGE plpgsql;
