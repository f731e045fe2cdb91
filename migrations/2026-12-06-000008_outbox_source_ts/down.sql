ALTER TABLE mastery_outbox DROP COLUMN source_ts;
