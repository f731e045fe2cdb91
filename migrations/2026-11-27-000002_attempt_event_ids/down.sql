DROP TABLE IF EXISTS attempt_event_ids;
