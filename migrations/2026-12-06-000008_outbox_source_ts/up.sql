-- The Kafka timestamp of the oldest attempt a queued mastery change applies,
-- so the relay can hand it on in the mastery record's `novyra-source-ts`
-- header and the graph sink can measure freshness: from the attempt
-- reaching Kafka to its MASTERED_BY edge committed in Neo4j
-- (`novyra_graph_freshness_seconds`). NULL for a recomputation (no attempt
-- caused it) and for rows queued before this column existed: those records
-- carry no header and are not measured. Nullable, no default: instant on a
-- full outbox.
ALTER TABLE mastery_outbox ADD COLUMN source_ts timestamptz;
