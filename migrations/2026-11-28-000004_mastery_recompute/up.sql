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
