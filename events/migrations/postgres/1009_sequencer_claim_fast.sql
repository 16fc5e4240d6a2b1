-- The claim without reading the lock table when nothing can be in flight. pg_locks copies the
-- whole shared lock table under all its partition locks, the dearest step of a claim. When the
-- snapshot lists no running transaction and this transaction's own id (if any) is not past its
-- xmax, every id below the xmax other than this transaction's own has ended, in every database:
-- no writer can hold rows back, and the bound is what migration 1007 computes when it finds no
-- writer. Otherwise (a writer, or any other transaction with an id, is running) the lock table
-- is read as before.
CREATE OR REPLACE FUNCTION pwnbook_sequencer_claim(sequencer_lock BIGINT, writers_class BIGINT, writers_obj BIGINT,
                                        wait BOOLEAN, batch BIGINT)
RETURNS TABLE (locked BOOLEAN, head BIGINT, cursor_tx TEXT, cursor_no BIGINT, ready BOOLEAN,
               aggregate_type TEXT, aggregate_id TEXT, sequence BIGINT, event_type TEXT,
               event_version TEXT, payload TEXT, metadata TEXT, recorded_at BIGINT)
VOLATILE AS $$
#variable_conflict use_column
DECLARE
    bound TEXT;
    snap pg_snapshot;
    own xid8;
BEGIN
    IF wait THEN
        PERFORM pg_advisory_xact_lock(sequencer_lock);
    ELSIF NOT pg_try_advisory_xact_lock(sequencer_lock) THEN
        RETURN QUERY SELECT false, NULL::BIGINT, NULL::TEXT, NULL::BIGINT, NULL::BOOLEAN, NULL::TEXT,
                            NULL::TEXT, NULL::BIGINT, NULL::TEXT, NULL::TEXT, NULL::TEXT, NULL::TEXT,
                            NULL::BIGINT;
        RETURN;
    END IF;
    snap := pg_current_snapshot();
    own := pg_current_xact_id_if_assigned();
    IF NOT EXISTS (SELECT FROM pg_snapshot_xip(snap))
       AND (own IS NULL OR pg_snapshot_xmax(snap) >= own) THEN
        bound := GREATEST(pg_snapshot_xmax(snap)::text::bigint, own::text::bigint + 1)::text;
    ELSE
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
    END IF;
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
