-- The inline projection's claim on a batch, in the group commit's one round trip (events
-- migration 1010): every named checkpoint moves from the batch's start to its end, or none does
-- and SQLSTATE PWB01 sends the batch the usual way. As in the runner's own statement, a
-- checkpoint elsewhere (the runner catching up) or locked by another transaction (a rebuild,
-- another process's runner) means the batch is not this projection's to apply.
CREATE FUNCTION pwnbook_advance_checkpoints(names TEXT[], from_position BIGINT, to_position BIGINT)
RETURNS VOID VOLATILE AS $$
BEGIN
    IF (SELECT count(*) FROM (SELECT name FROM projector_checkpoints
                               WHERE position = from_position AND name = ANY(names)
                               FOR UPDATE SKIP LOCKED) ready) <> cardinality(names) THEN
        RAISE EXCEPTION 'the checkpoints are not at the batch''s start' USING ERRCODE = 'PWB01';
    END IF;
    UPDATE projector_checkpoints SET position = to_position WHERE name = ANY(names);
END
$$ LANGUAGE plpgsql;
