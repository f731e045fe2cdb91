-- One statement per batch: column arrays unnested into rows. Planning and
-- binding cost stays constant however many rows the batch holds, unlike a
-- multi-row VALUES list with 18 parameters per row.
INSERT INTO concept_attempts (
    event_id, user_id, concept_id, occurred_at, correct, hints_used, duration_ms,
    mastery_before, mastery_after, mastery_delta, mastery_version,
    bkt_p_init, bkt_p_transit, bkt_p_slip, bkt_p_guess,
    source_partition, source_offset, schema_id)
SELECT * FROM unnest(
    $1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::boolean[], $6::integer[], $7::bigint[],
    $8::double precision[], $9::double precision[], $10::double precision[], $11::bigint[],
    $12::double precision[], $13::double precision[], $14::double precision[], $15::double precision[],
    $16::integer[], $17::bigint[], $18::integer[])
