-- The sequencer's claim in one round trip instead of two. It takes the sequencer lock (or only
-- tries it), reads the bound, then reads the state and the events after its cursor. The bound
-- and the events must come from two statements: the events' snapshot must be taken after the
-- bound was read, so that every writer older than the bound has ended and its rows are visible.
-- A VOLATILE function's statements each take a fresh snapshot under READ COMMITTED, which keeps
-- that order inside one call.
--
-- The bound: the oldest transaction id among the other open writers of `events` (see migration
-- 1006), else the first id not yet assigned, or past this transaction's own id when it wrote
-- events (the group commit's: its own rows are visible to it). A writer that took its id after
-- the bound was read sorts after every visible row. pg_locks shows the writers' ids by their low
-- 32 bits: each is widened to the 64-bit id nearest the snapshot's xmax (running ids lie within
-- 2^31 of it). They are not looked up in the snapshot's running list, which omits ids at or past
-- xmax: a writer that took its id after the last commit but before this transaction's own must
-- still hold this transaction's rows back. The lock table is read once (a materialized CTE), so a
-- writer's advisory lock and its id come from the same reading. The events are read after the
-- sequencer lock is granted, so they see the state the previous batch committed.
CREATE FUNCTION pwnbook_sequencer_claim(sequencer_lock BIGINT, writers_class BIGINT, writers_obj BIGINT,
                                        wait BOOLEAN, batch BIGINT)
RETURNS TABLE (locked BOOLEAN, head BIGINT, cursor_tx TEXT, cursor_no BIGINT, ready BOOLEAN,
               aggregate_type TEXT, aggregate_id TEXT, sequence BIGINT, event_type TEXT,
               event_version TEXT, payload TEXT, metadata TEXT, recorded_at BIGINT)
VOLATILE AS $$
#variable_conflict use_column
DECLARE
    bound TEXT;
BEGIN
    IF wait THEN
        PERFORM pg_advisory_xact_lock(sequencer_lock);
    ELSIF NOT pg_try_advisory_xact_lock(sequencer_lock) THEN
        RETURN QUERY SELECT false, NULL::BIGINT, NULL::TEXT, NULL::BIGINT, NULL::BOOLEAN, NULL::TEXT,
                            NULL::TEXT, NULL::BIGINT, NULL::TEXT, NULL::TEXT, NULL::TEXT, NULL::TEXT,
                            NULL::BIGINT;
        RETURN;
    END IF;
    WITH snapshot AS (SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS xmax),
         locks AS MATERIALIZED (
           SELECT pid, locktype, mode, granted, database, classid, objid, objsubid, transactionid
             FROM pg_locks WHERE pid <> pg_backend_pid()),
         writers AS (
           SELECT t.transactionid::text::bigint AS low
             FROM locks w JOIN locks t ON t.pid = w.pid
            WHERE w.locktype = 'advisory' AND w.classid::bigint = writers_class
              AND w.objid::bigint = writers_obj AND w.objsubid = 2
              AND w.database = (SELECT oid FROM pg_database WHERE datname = current_database())
              AND t.locktype = 'transactionid' AND t.mode = 'ExclusiveLock' AND t.granted)
    SELECT COALESCE(
             (SELECT min(s.xmax + ((w.low - s.xmax % 4294967296 + 2147483648) % 4294967296
                                   + 4294967296) % 4294967296 - 2147483648)
                FROM writers w, snapshot s),
             (SELECT GREATEST(s.xmax, pg_current_xact_id_if_assigned()::text::bigint + 1)
                FROM snapshot s))::text
      INTO bound;
    RETURN QUERY
    SELECT true, s.head, e.* FROM sequencer_state s LEFT JOIN LATERAL (
        SELECT x.tx_id::text, x.seq_no, x.tx_id < bound::xid8,
               x.aggregate_type, x.aggregate_id, x.sequence, x.event_type, x.event_version,
               x.payload::text, x.metadata::text, x.recorded_at
          FROM events x
         WHERE (x.tx_id, x.seq_no) > (s.last_tx::xid8, s.last_no)
         ORDER BY x.tx_id, x.seq_no
         LIMIT batch) e ON true
     WHERE s.id = 1;
END
$$ LANGUAGE plpgsql;
