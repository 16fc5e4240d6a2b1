-- A child event whose engagement has no state row (it never existed) is refused like one of a
-- deleted engagement, so the command service need not look the state up before every commit:
-- the trigger decides atomically, and the service names the reason only after a refusal.
DROP TRIGGER events_engagement_guard;
CREATE TRIGGER events_engagement_guard AFTER INSERT ON events
WHEN NEW.aggregate_type <> 'engagement'
 AND json_extract(NEW.metadata, '$.engagementId') IS NOT NULL
 AND COALESCE((SELECT state FROM engagement_states
                WHERE engagement_id = json_extract(NEW.metadata, '$.engagementId')), 'missing') <> 'active'
BEGIN
    INSERT INTO engagement_guard_clash (id) VALUES (1);
END;
