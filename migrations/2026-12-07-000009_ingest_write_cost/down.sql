ALTER TABLE mastery_records RESET (fillfactor);
CREATE INDEX IF NOT EXISTS attempt_event_ids_occurred_at_idx ON attempt_event_ids (occurred_at);
