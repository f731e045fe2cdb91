-- The batch's final mastery per (user, concept), upserted, and the same rows
-- queued in the outbox for the mastery topic, in one statement.
WITH m AS (
    INSERT INTO mastery_records (
        user_id, concept_id, mastery, attempts_total, attempts_correct,
        confidence_weight, version, last_event_id, updated_at)
    SELECT * FROM unnest(
        $1::text[], $2::text[], $3::double precision[], $4::bigint[], $5::bigint[],
        $6::double precision[], $7::bigint[], $8::text[], $9::timestamptz[])
    ON CONFLICT (user_id, concept_id) DO UPDATE SET
        mastery = excluded.mastery,
        attempts_total = excluded.attempts_total,
        attempts_correct = excluded.attempts_correct,
        confidence_weight = excluded.confidence_weight,
        version = excluded.version,
        last_event_id = excluded.last_event_id,
        updated_at = excluded.updated_at
    -- Only over the row the batch read: a recomputation in between bumped
    -- the version without applying an attempt (crate::recompute).
    WHERE mastery_records.version - mastery_records.attempts_total
        = excluded.version - excluded.attempts_total
    RETURNING user_id, concept_id, mastery, version, attempts_total, attempts_correct,
              confidence_weight, last_event_id, updated_at
)
-- $10: the trace context of this transaction (NULL when tracing is off).
INSERT INTO mastery_outbox (
    user_id, concept_id, mastery, version, attempts_total, attempts_correct,
    confidence_weight, last_event_id, updated_at, traceparent)
SELECT user_id, concept_id, mastery, version, attempts_total, attempts_correct,
       confidence_weight, last_event_id, updated_at, $10::text
FROM m
