-- The state of every engagement, kept by a trigger in the engagement events' own transaction, so
-- that an event of a child resource (a target, finding, task, wiki page or report, whose metadata
-- names its engagement) cannot commit once its engagement is archived or deleted. The child's
-- trigger takes a share lock on the state row: an archive in flight waits for the child's commit
-- or the child sees the archive. A refused child raises a unique violation, which postgres-es
-- reports as a conflict; the command service then re-checks the state and answers 409 or 404.
CREATE TABLE engagement_states (
    engagement_id TEXT PRIMARY KEY,
    state         TEXT NOT NULL
);

INSERT INTO engagement_states (engagement_id, state)
SELECT e.aggregate_id,
       CASE e.event_type WHEN 'engagement.archived' THEN 'archived'
                         WHEN 'engagement.deleted' THEN 'deleted'
                         ELSE 'active' END
  FROM events e
 WHERE e.aggregate_type = 'engagement'
   AND e.event_type IN ('engagement.created', 'engagement.archived', 'engagement.unarchived', 'engagement.deleted')
   AND e.sequence = (SELECT MAX(x.sequence) FROM events x
                      WHERE x.aggregate_type = 'engagement' AND x.aggregate_id = e.aggregate_id
                        AND x.event_type IN ('engagement.created', 'engagement.archived',
                                             'engagement.unarchived', 'engagement.deleted'));

CREATE FUNCTION pwnbook_engagement_guard() RETURNS trigger AS $$
DECLARE
    current_state TEXT;
BEGIN
    IF NEW.aggregate_type = 'engagement' THEN
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
        IF current_state IN ('archived', 'deleted') THEN
            RAISE EXCEPTION 'engagement % is %', NEW.metadata->>'engagementId', current_state
                USING ERRCODE = 'unique_violation';
        END IF;
    END IF;
    RETURN NEW;
END
$$ LANGUAGE plpgsql;
CREATE TRIGGER events_engagement_guard AFTER INSERT ON events
    FOR EACH ROW EXECUTE FUNCTION pwnbook_engagement_guard();
