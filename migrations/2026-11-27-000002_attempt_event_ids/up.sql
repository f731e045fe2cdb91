-- Every attempt's event id, once: the ingest dedup check. One unpartitioned
-- primary key answers "seen before?" with a single index probe per id and
-- serialises two transactions inserting the same id (the second sees the
-- first's row once it commits), where probing every month partition of
-- concept_attempts cost one probe per partition and left that race open.
-- Rows of months detached with `novyra db partitions --detach-before` are
-- pruned with them.
CREATE TABLE attempt_event_ids (
    event_id    text PRIMARY KEY,
    occurred_at timestamptz NOT NULL
);

INSERT INTO attempt_event_ids (event_id, occurred_at)
SELECT DISTINCT ON (event_id) event_id, occurred_at
FROM concept_attempts
ORDER BY event_id, ingested_at
ON CONFLICT DO NOTHING;

CREATE INDEX attempt_event_ids_occurred_at_idx ON attempt_event_ids (occurred_at);

DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'novyra_app') THEN
    GRANT SELECT, INSERT ON attempt_event_ids TO novyra_app;
  END IF;
END $$;
