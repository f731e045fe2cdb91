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
