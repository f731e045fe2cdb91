-- A recomputation's changed mastery rows (already locked FOR UPDATE by the
-- same transaction), replaced and queued in the outbox, in one statement.
WITH m AS (
    UPDATE mastery_records r SET
        mastery = n.mastery,
        attempts_total = n.attempts_total,
        attempts_correct = n.attempts_correct,
        confidence_weight = n.confidence_weight,
        version = n.version,
        last_event_id = n.last_event_id,
        updated_at = n.updated_at
    FROM unnest(
        $1::text[], $2::text[], $3::double precision[], $4::bigint[], $5::bigint[],
        $6::double precision[], $7::bigint[], $8::text[], $9::timestamptz[])
        AS n(user_id, concept_id, mastery, attempts_total, attempts_correct,
             confidence_weight, version, last_event_id, updated_at)
    WHERE r.user_id = n.user_id AND r.concept_id = n.concept_id
    RETURNING r.user_id, r.concept_id, r.mastery, r.version, r.attempts_total,
              r.attempts_correct, r.confidence_weight, r.last_event_id, r.updated_at
)
-- $10: the trace context of this transaction (NULL when tracing is off).
INSERT INTO mastery_outbox (
    user_id, concept_id, mastery, version, attempts_total, attempts_correct,
    confidence_weight, last_event_id, updated_at, traceparent)
SELECT user_id, concept_id, mastery, version, attempts_total, attempts_correct,
       confidence_weight, last_event_id, updated_at, $10::text
FROM m
