-- Fewer index writes per attempt (issue 11, target 1).
--
-- The claim table's occurred_at index served only the prune after
-- `novyra db partitions --detach-before`, yet every attempt paid for it.
-- The prune now deletes exactly the ids of the detached partition's rows,
-- through the primary key, so a DEFAULT-partition attempt of an old month
-- keeps its claim (the old range delete dropped it, and a redelivery then
-- failed on the attempt's own primary key).
DROP INDEX IF EXISTS attempt_event_ids_occurred_at_idx;

-- Mastery rows are rewritten by nearly every batch. Room left on each page
-- lets Postgres update in place (HOT) without writing both indexes again.
-- Affects pages written from now on; existing pages fill as before.
ALTER TABLE mastery_records SET (fillfactor = 70);

