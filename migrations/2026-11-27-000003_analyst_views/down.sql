DROP FUNCTION IF EXISTS novyra_refresh_leaderboard();
DROP MATERIALIZED VIEW IF EXISTS leaderboard;
DROP VIEW IF EXISTS user_progress;
DROP VIEW IF EXISTS concept_stats;
