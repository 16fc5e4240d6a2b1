-- A child event whose engagement has no state row (it never existed) is refused like one of a
-- deleted engagement, so the command service need not look the state up before every commit:
-- the trigger decides atomically, and the service names the reason only after a refusal.
CREATE OR REPLACE FUNCTION pwnbook_engagement_guard() RETURNS trigger AS $$
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
        IF current_state IS DISTINCT FROM 'active' THEN
            RAISE EXCEPTION 'engagement % is %', NEW.metadata->>'engagementId',
                COALESCE(current_state, 'missing')
                USING ERRCODE = 'unique_violation';
        END IF;
    END IF;
    RETURN NEW;
END
$$ LANGUAGE plpgsql;
