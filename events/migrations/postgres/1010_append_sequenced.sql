-- The group commit's batch, appended and sequenced in one round trip. The server computes the
-- log rows (positions after the head it last wrote, chain hashes from the chain heads it keeps)
-- before sending anything; this function appends the events, claims them as migration 1009 does
-- and writes the log rows only if the claim finds exactly what the server assumed: the lock
-- taken, the head unchanged, and the batch's own events, all ready, as the only ones pending.
-- Otherwise it raises SQLSTATE PWB01 and the server writes the batch the usual way (append, then
-- claim, then link the chain), so a wrong guess costs a retry, never a wrong log.
CREATE FUNCTION pwnbook_append_sequenced(
    sequencer_lock BIGINT, writers_class BIGINT, writers_obj BIGINT, expected_head BIGINT,
    aggregate_types TEXT[], aggregate_ids TEXT[], sequences BIGINT[], event_types TEXT[],
    event_versions TEXT[], payloads TEXT[], metadatas TEXT[], recorded_ats BIGINT[],
    event_ids TEXT[], organization_ids TEXT[], engagement_ids TEXT[], prev_hashes TEXT[],
    hashes TEXT[])
RETURNS VOID VOLATILE AS $$
DECLARE
    batch BIGINT := cardinality(aggregate_ids);
    claimed BIGINT;
    matching BIGINT;
    claimed_tx TEXT;
    claimed_no BIGINT;
BEGIN
    INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload,
                        metadata, recorded_at)
    SELECT t, i, s, e, v, CAST(p AS json), CAST(m AS json), r
      FROM unnest(aggregate_types, aggregate_ids, sequences, event_types, event_versions, payloads,
                  metadatas, recorded_ats) WITH ORDINALITY AS u (t, i, s, e, v, p, m, r, n)
     ORDER BY n;
    -- One row more than the batch: a pending event of anyone else shows as a row too many.
    SELECT count(c.aggregate_id),
           count(*) FILTER (WHERE c.locked AND c.head = expected_head AND c.ready
                              AND c.aggregate_type = a.t AND c.aggregate_id = a.i AND c.sequence = a.s),
           max(c.cursor_tx) FILTER (WHERE c.n = batch),
           max(c.cursor_no) FILTER (WHERE c.n = batch)
      INTO claimed, matching, claimed_tx, claimed_no
      FROM pwnbook_sequencer_claim(sequencer_lock, writers_class, writers_obj, false, batch + 1)
           WITH ORDINALITY AS c (locked, head, cursor_tx, cursor_no, ready, aggregate_type, aggregate_id,
                                 sequence, event_type, event_version, payload, metadata, recorded_at, n)
      LEFT JOIN unnest(aggregate_types, aggregate_ids, sequences) WITH ORDINALITY AS a (t, i, s, n)
             ON a.n = c.n;
    IF claimed <> batch OR matching <> batch THEN
        RAISE EXCEPTION 'the batch cannot be sequenced as assumed' USING ERRCODE = 'PWB01';
    END IF;
    INSERT INTO event_log (position, event_id, organization_id, engagement_id, aggregate_type,
                           aggregate_id, sequence, event_type, event_version, payload, metadata,
                           recorded_at, prev_hash, hash)
    SELECT expected_head + n, x, o, g, t, i, s, e, v, p, m, r, h0, h
      FROM unnest(event_ids, organization_ids, engagement_ids, aggregate_types, aggregate_ids,
                  sequences, event_types, event_versions, payloads, metadatas, recorded_ats,
                  prev_hashes, hashes)
           WITH ORDINALITY AS u (x, o, g, t, i, s, e, v, p, m, r, h0, h, n);
    UPDATE sequencer_state SET last_tx = claimed_tx, last_no = claimed_no, head = expected_head + batch
     WHERE id = 1;
END
$$ LANGUAGE plpgsql;
