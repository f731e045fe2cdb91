// @generated automatically by Diesel CLI.

diesel::table! {
    attempt_event_ids (event_id) {
        event_id -> Text,
        occurred_at -> Timestamptz,
    }
}

diesel::table! {
    concept_attempts (event_id, occurred_at) {
        event_id -> Text,
        user_id -> Text,
        concept_id -> Text,
        occurred_at -> Timestamptz,
        correct -> Bool,
        hints_used -> Int4,
        duration_ms -> Int8,
        mastery_before -> Float8,
        mastery_after -> Float8,
        mastery_delta -> Float8,
        mastery_version -> Int8,
        bkt_p_init -> Float8,
        bkt_p_transit -> Float8,
        bkt_p_slip -> Float8,
        bkt_p_guess -> Float8,
        source_partition -> Int4,
        source_offset -> Int8,
        schema_id -> Int4,
        ingested_at -> Timestamptz,
    }
}

diesel::table! {
    concept_prerequisites (prerequisite_id, concept_id) {
        prerequisite_id -> Text,
        concept_id -> Text,
        linked_at -> Timestamptz,
    }
}

diesel::table! {
    concepts (id) {
        id -> Text,
        name -> Text,
        domain -> Text,
        difficulty -> Float8,
        bkt_p_init -> Float8,
        bkt_p_transit -> Float8,
        bkt_p_slip -> Float8,
        bkt_p_guess -> Float8,
        source_updated_at -> Timestamptz,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    consumer_offsets (group_id, topic, partition) {
        group_id -> Text,
        topic -> Text,
        partition -> Int4,
        next_offset -> Int8,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    evaluation_logs (event_id, occurred_at) {
        event_id -> Text,
        occurred_at -> Timestamptz,
        user_id -> Text,
        concept_id -> Nullable<Text>,
        attempt_event_id -> Nullable<Text>,
        model -> Text,
        prompt -> Jsonb,
        response -> Jsonb,
        rubric -> Nullable<Jsonb>,
        source_partition -> Int4,
        source_offset -> Int8,
        schema_id -> Int4,
        ingested_at -> Timestamptz,
    }
}

diesel::table! {
    mastery_outbox (id) {
        id -> Int8,
        user_id -> Text,
        concept_id -> Text,
        mastery -> Float8,
        version -> Int8,
        attempts_total -> Int8,
        attempts_correct -> Int8,
        confidence_weight -> Float8,
        last_event_id -> Text,
        updated_at -> Timestamptz,
        created_at -> Timestamptz,
        traceparent -> Nullable<Text>,
        source_ts -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    mastery_recompute (concept_id) {
        concept_id -> Text,
        generation -> Int8,
        barrier_generation -> Int8,
        after_user -> Text,
        rows_changed -> Int8,
        requested_at -> Timestamptz,
    }
}

diesel::table! {
    mastery_records (user_id, concept_id) {
        user_id -> Text,
        concept_id -> Text,
        mastery -> Float8,
        attempts_total -> Int8,
        attempts_correct -> Int8,
        confidence_weight -> Float8,
        version -> Int8,
        last_event_id -> Text,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    rubric_evaluations (event_id, occurred_at) {
        event_id -> Text,
        occurred_at -> Timestamptz,
        user_id -> Text,
        concept_id -> Text,
        rubric_id -> Text,
        weighted_total -> Float8,
        detail -> Jsonb,
    }
}

diesel::allow_tables_to_appear_in_same_query!(
    attempt_event_ids,
    concept_attempts,
    concept_prerequisites,
    concepts,
    consumer_offsets,
    evaluation_logs,
    mastery_outbox,
    mastery_recompute,
    mastery_records,
    rubric_evaluations,
);
