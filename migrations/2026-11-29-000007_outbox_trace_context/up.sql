-- The W3C trace context of the transaction that queued a mastery change, so
-- the relay can hand it on in the mastery record's `traceparent` header and
-- one trace follows an attempt from Postgres to Neo4j. NULL when tracing is
-- off (or for rows queued before this column existed): the record then
-- simply carries no header. Adding a nullable column without a default
-- rewrites nothing, so this is instant on a full outbox.
ALTER TABLE mastery_outbox ADD COLUMN traceparent text;
