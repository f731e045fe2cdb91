-- Mastery follows the concept's current BKT parameters (DESIGN.md: mastery
-- is a pure function of the attempt log and the current catalogue). When a
-- concept's effective parameters change (it arrives after its attempts, is
-- or is re-tuned), the catalog
-- transaction queues the concept here; a background task recomputes its
-- mastery rows from concept_attempts in batches, keyed by user, and moves
-- `after_user` forward in the same transaction, so a crash resumes where
-- the last batch committed.
CREATE TABLE mastery_recompute (
    concept_id         text PRIMARY KEY,
    -- Bumped by every further parameter change; a change mid-run restarts
    -- the concept from the first user.
    generation         bigint NOT NULL DEFAULT 1,
    -- The generation the ingest barrier has been passed for: only after it
    -- can no ingest transaction still be using the old parameters.
    barrier_generation bigint NOT NULL DEFAULT 0,
    after_user         text NOT NULL DEFAULT '',
    rows_changed       bigint NOT NULL DEFAULT 0,
    requested_at       timestamptz NOT NULL DEFAULT now()
);

-- The recomputation walks one concept's rows in user order.
CREATE INDEX mastery_records_concept_user_idx ON mastery_records (concept_id, user_id);

DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'novyra_app') THEN
    GRANT SELECT, INSERT, UPDATE, DELETE ON mastery_recompute TO novyra_app;
  END IF;
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'novyra_analyst') THEN
    GRANT SELECT ON mastery_recompute TO novyra_analyst;
  END IF;
END $$;

-- Two ingest processes starting together both found a month partition
-- missing and both created it; the loser failed with duplicate_table and
-- its worker stopped (found by `make chaos`). Losing that race now counts
-- as success.
DO $do$
BEGIN
EXECUTE format($f$
CREATE OR REPLACE FUNCTION %1$I.novyra_ensure_attempt_partition(month date) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  start_at date := date_trunc('month', month)::date;
  part text := format('concept_attempts_%%s', to_char(start_at, 'YYYY_MM'));
BEGIN
  IF to_regclass(format('%%I.%%I', %1$L, part)) IS NOT NULL THEN
    RETURN part;
  END IF;
  BEGIN
    EXECUTE format('CREATE TABLE %%I.%%I PARTITION OF %%I.concept_attempts FOR VALUES FROM (%%L) TO (%%L)',
                   %1$L, part, %1$L, start_at, (start_at + interval '1 month')::date);
  EXCEPTION
    WHEN duplicate_table OR unique_violation THEN
      RETURN part;
    WHEN check_violation THEN
      RAISE NOTICE 'default partition holds rows for %%, leaving them there', start_at;
      RETURN NULL;
  END;
  RETURN part;
END $$;
$f$, current_schema());
END $do$;
