-- The log head and the batch's cursor move together in the sequencer's state row, so a batch
-- reads both in one statement instead of scanning for MAX(position).
ALTER TABLE sequencer_state ADD COLUMN head INTEGER NOT NULL DEFAULT 0;
UPDATE sequencer_state SET head = (SELECT COALESCE(MAX(position), 0) FROM event_log) WHERE id = 1;
