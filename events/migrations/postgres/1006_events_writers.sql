-- Every transaction that appends to `events` takes a shared advisory lock before its first row
-- (so before it has a transaction id). The sequencer reads which open transactions hold it: a
-- committed row is safe to sequence once every holder with an older transaction id has ended.
-- Unlike the cluster-wide xmin, this ignores transactions that never write events (other
-- databases, long reads, a projection rebuild), which would otherwise stall every write.
CREATE FUNCTION pwnbook_events_writer() RETURNS trigger AS $$
BEGIN
    IF current_setting('pwnbook.events_writer', true) IS DISTINCT FROM 'on' THEN
        -- The sequencer's bound relies on the lock coming before the transaction id.
        IF pg_current_xact_id_if_assigned() IS NOT NULL THEN
            RAISE EXCEPTION 'events must be the first table a transaction writes';
        END IF;
        PERFORM pg_advisory_xact_lock_shared(1886875234, 1869572866);
        PERFORM set_config('pwnbook.events_writer', 'on', true);
    END IF;
    RETURN NULL;
END
$$ LANGUAGE plpgsql;
CREATE TRIGGER events_writer BEFORE INSERT ON events
    FOR EACH STATEMENT EXECUTE FUNCTION pwnbook_events_writer();
