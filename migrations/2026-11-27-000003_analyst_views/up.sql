-- Read-only views for analysts (granted to novyra_analyst). "Mastered"
-- means mastery >= 0.95, the pipeline's default mastery_threshold; a
-- deployment that changes the threshold should change it here too.

-- Per concept: how attempts go, and how mastery is distributed.
CREATE VIEW concept_stats AS
WITH a AS (
    SELECT concept_id,
           count(*)                                   AS attempts,
           count(*) FILTER (WHERE correct)            AS correct,
           count(DISTINCT user_id)                    AS learners,
           avg(hints_used)::double precision          AS mean_hints,
           avg(duration_ms)::double precision / 1000  AS mean_duration_s
    FROM concept_attempts
    GROUP BY concept_id
), m AS (
    SELECT concept_id,
           count(*)                                                      AS tracked,
           count(*) FILTER (WHERE mastery >= 0.95)                       AS mastered,
           avg(mastery)                                                  AS mean_mastery,
           percentile_cont(0.25) WITHIN GROUP (ORDER BY mastery)         AS p25_mastery,
           percentile_cont(0.5)  WITHIN GROUP (ORDER BY mastery)         AS median_mastery,
           percentile_cont(0.75) WITHIN GROUP (ORDER BY mastery)         AS p75_mastery,
           count(*) FILTER (WHERE mastery < 0.25)                        AS below_25,
           count(*) FILTER (WHERE mastery >= 0.25 AND mastery < 0.5)     AS from_25_to_50,
           count(*) FILTER (WHERE mastery >= 0.5 AND mastery < 0.75)     AS from_50_to_75,
           count(*) FILTER (WHERE mastery >= 0.75)                       AS from_75
    FROM mastery_records
    GROUP BY concept_id
)
SELECT c.id AS concept_id, c.name, c.domain, c.difficulty,
       coalesce(a.attempts, 0)  AS attempts,
       coalesce(a.correct, 0)   AS correct,
       CASE WHEN a.attempts > 0 THEN a.correct::double precision / a.attempts END AS accuracy,
       coalesce(a.learners, 0)  AS learners,
       a.mean_hints, a.mean_duration_s,
       coalesce(m.mastered, 0)  AS mastered,
       CASE WHEN m.tracked > 0 THEN m.mastered::double precision / m.tracked END AS mastered_share,
       m.mean_mastery, m.p25_mastery, m.median_mastery, m.p75_mastery,
       coalesce(m.below_25, 0) AS below_25, coalesce(m.from_25_to_50, 0) AS from_25_to_50,
       coalesce(m.from_50_to_75, 0) AS from_50_to_75, coalesce(m.from_75, 0) AS from_75
FROM concepts c
LEFT JOIN a ON a.concept_id = c.id
LEFT JOIN m ON m.concept_id = c.id;

-- Per student: activity and progress.
CREATE VIEW user_progress AS
WITH a AS (
    SELECT user_id,
           count(*)                        AS attempts,
           count(*) FILTER (WHERE correct) AS correct,
           min(occurred_at)                AS first_attempt_at,
           max(occurred_at)                AS last_attempt_at
    FROM concept_attempts
    GROUP BY user_id
), m AS (
    SELECT user_id,
           count(*)                                AS concepts_attempted,
           count(*) FILTER (WHERE mastery >= 0.95) AS concepts_mastered,
           avg(mastery)                            AS mean_mastery
    FROM mastery_records
    GROUP BY user_id
)
SELECT m.user_id, m.concepts_attempted, m.concepts_mastered, m.mean_mastery,
       coalesce(a.attempts, 0) AS attempts, coalesce(a.correct, 0) AS correct,
       CASE WHEN a.attempts > 0 THEN a.correct::double precision / a.attempts END AS accuracy,
       a.first_attempt_at, a.last_attempt_at
FROM m LEFT JOIN a ON a.user_id = m.user_id;

-- The leaderboard: materialized (it ranks every student), refreshed by the
-- ingest worker on a schedule with REFRESH ... CONCURRENTLY (readers never
-- block), which needs the unique index.
CREATE MATERIALIZED VIEW leaderboard AS
SELECT dense_rank() OVER (ORDER BY concepts_mastered DESC, round(mean_mastery::numeric, 6) DESC) AS rank,
       user_id, concepts_mastered, concepts_attempted, mean_mastery, now() AS refreshed_at
FROM (
    SELECT user_id,
           count(*) FILTER (WHERE mastery >= 0.95) AS concepts_mastered,
           count(*)                                AS concepts_attempted,
           avg(mastery)                            AS mean_mastery
    FROM mastery_records
    GROUP BY user_id
) s;
CREATE UNIQUE INDEX leaderboard_user_id_key ON leaderboard (user_id);
CREATE INDEX leaderboard_rank_idx ON leaderboard (rank);

-- Only the owner may refresh a materialized view; the runtime role calls
-- this instead (SECURITY DEFINER with a pinned search_path and qualified
-- names, like novyra_ensure_attempt_partition).
DO $$
BEGIN
  EXECUTE format($f$
    CREATE FUNCTION %1$I.novyra_refresh_leaderboard() RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $b$
    BEGIN
      REFRESH MATERIALIZED VIEW CONCURRENTLY %1$I.leaderboard;
    END $b$
  $f$, current_schema());
END $$;
REVOKE ALL ON FUNCTION novyra_refresh_leaderboard() FROM PUBLIC;

DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'novyra_app') THEN
    GRANT EXECUTE ON FUNCTION novyra_refresh_leaderboard() TO novyra_app;
    GRANT SELECT ON leaderboard TO novyra_app;
  END IF;
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'novyra_analyst') THEN
    GRANT SELECT ON concept_stats, user_progress, leaderboard TO novyra_analyst;
  END IF;
END $$;
