ALTER TABLE mastery_outbox DROP COLUMN traceparent;
