-- The same two columns, now the primary key instead of a UNIQUE
-- constraint: `diesel print-schema` describes only tables with a primary
-- key, and crates/store/src/schema.rs is generated from a migrated database
-- (deploy/schema.sh) and checked by `make lint`. Rebuilds the index on every
-- month partition, once.
ALTER TABLE concept_attempts
    DROP CONSTRAINT concept_attempts_event_id_occurred_at_key,
    ADD CONSTRAINT concept_attempts_pkey PRIMARY KEY (event_id, occurred_at);
