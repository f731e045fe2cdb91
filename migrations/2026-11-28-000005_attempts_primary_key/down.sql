ALTER TABLE concept_attempts
    DROP CONSTRAINT concept_attempts_pkey,
    ADD CONSTRAINT concept_attempts_event_id_occurred_at_key UNIQUE (event_id, occurred_at);
