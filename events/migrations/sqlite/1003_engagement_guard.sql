-- The state of every engagement, kept by triggers in the engagement events' own transaction, so
-- that an event of a child resource (whose metadata names its engagement) cannot commit once its
-- engagement is archived or deleted. SQLite has one writer, so the check cannot race the archive.
-- A refused child provokes a PRIMARY KEY violation (code 1555) on `engagement_guard_clash`, which
-- sqlite-es reports as a conflict; the command service then re-checks the state and answers 409
-- or 404.
CREATE TABLE engagement_states (
    engagement_id TEXT PRIMARY KEY,
    state         TEXT NOT NULL
);

CREATE TABLE engagement_guard_clash (id INTEGER PRIMARY KEY);
INSERT INTO engagement_guard_clash (id) VALUES (1);

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

CREATE TRIGGER events_engagement_state AFTER INSERT ON events
WHEN NEW.aggregate_type = 'engagement'
 AND NEW.event_type IN ('engagement.created', 'engagement.archived', 'engagement.unarchived', 'engagement.deleted')
BEGIN
    INSERT INTO engagement_states (engagement_id, state)
    VALUES (NEW.aggregate_id,
            CASE NEW.event_type WHEN 'engagement.archived' THEN 'archived'
                                WHEN 'engagement.deleted' THEN 'deleted'
                                ELSE 'active' END)
    ON CONFLICT (engagement_id) DO UPDATE SET state = excluded.state;
END;

CREATE TRIGGER events_engagement_guard AFTER INSERT ON events
WHEN NEW.aggregate_type <> 'engagement'
 AND json_extract(NEW.metadata, '$.engagementId') IS NOT NULL
 AND (SELECT state FROM engagement_states
       WHERE engagement_id = json_extract(NEW.metadata, '$.engagementId')) IN ('archived', 'deleted')
BEGIN
    INSERT INTO engagement_guard_clash (id) VALUES (1);
END;
