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
-- $10: the trace context of this transaction (NULL when tracing is off);
-- $11: per row of $1/$2, the Kafka timestamp of the oldest attempt the
-- change applies (NULL for none), for the graph's freshness metric.
INSERT INTO mastery_outbox (
    user_id, concept_id, mastery, version, attempts_total, attempts_correct,
    confidence_weight, last_event_id, updated_at, traceparent, source_ts)
SELECT m.user_id, m.concept_id, m.mastery, m.version, m.attempts_total, m.attempts_correct,
       m.confidence_weight, m.last_event_id, m.updated_at, $10::text, s.source_ts
FROM m
JOIN unnest($1::text[], $2::text[], $11::timestamptz[]) AS s(user_id, concept_id, source_ts)
    USING (user_id, concept_id)
