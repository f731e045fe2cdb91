DROP TABLE IF EXISTS mastery_outbox;
DROP TABLE IF EXISTS consumer_offsets;
DROP TABLE IF EXISTS mastery_records;
DROP TABLE IF EXISTS rubric_evaluations;
DROP FUNCTION IF EXISTS novyra_ensure_attempt_partition(date);
DROP TABLE IF EXISTS concept_attempts;
DROP TABLE IF EXISTS concept_prerequisites;
DROP TABLE IF EXISTS concepts;
