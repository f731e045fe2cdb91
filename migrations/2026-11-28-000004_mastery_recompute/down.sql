DROP INDEX IF EXISTS mastery_records_concept_user_idx;
DROP TABLE IF EXISTS mastery_recompute;
