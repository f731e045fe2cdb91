-- NOVYRA Stream: relational source of truth. Table and column names are the
-- analysts' contract (DESIGN.md); extra columns are additions only.

-- Roles: the pipeline runs as novyra_app (least privilege), analysts as
-- novyra_analyst (read-only). Created here when missing (NOLOGIN: an operator
-- grants LOGIN and a password); needs CREATEROLE, so a migrator without it
-- relies on the roles existing already.
DO $$
DECLARE r text;
BEGIN
  FOREACH r IN ARRAY ARRAY['novyra_app', 'novyra_analyst'] LOOP
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
      BEGIN
        EXECUTE format('CREATE ROLE %I NOLOGIN', r);
      EXCEPTION WHEN insufficient_privilege THEN
        RAISE NOTICE 'role % missing and cannot be created here', r;
      END;
    END IF;
  END LOOP;
END $$;

CREATE TABLE concepts (
    id            text PRIMARY KEY,
    name          text NOT NULL,
    domain        text NOT NULL,
    difficulty    double precision NOT NULL,
    bkt_p_init    double precision NOT NULL,
    bkt_p_transit double precision NOT NULL,
    bkt_p_slip    double precision NOT NULL,
    bkt_p_guess   double precision NOT NULL,
    source_updated_at timestamptz NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX concepts_domain_idx ON concepts (domain);

CREATE TABLE concept_prerequisites (
    prerequisite_id text NOT NULL,
    concept_id      text NOT NULL,
    linked_at       timestamptz NOT NULL,
    PRIMARY KEY (prerequisite_id, concept_id)
);
CREATE INDEX concept_prerequisites_concept_idx ON concept_prerequisites (concept_id);

-- Immutable audit log of attempts, one row per distinct event, in the order
-- the mastery model applied them (source_partition, source_offset). The BKT
-- parameters used are kept on the row so anyone can recompute mastery even
-- if the concept's parameters change later.
CREATE TABLE concept_attempts (
    event_id          text NOT NULL,
    user_id           text NOT NULL,
    concept_id        text NOT NULL,
    occurred_at       timestamptz NOT NULL,
    correct           boolean NOT NULL,
    hints_used        integer NOT NULL,
    duration_ms       bigint NOT NULL,
    mastery_before    double precision NOT NULL,
    mastery_after     double precision NOT NULL,
    mastery_delta     double precision NOT NULL,
    mastery_version   bigint NOT NULL,
    bkt_p_init        double precision NOT NULL,
    bkt_p_transit     double precision NOT NULL,
    bkt_p_slip        double precision NOT NULL,
    bkt_p_guess       double precision NOT NULL,
    source_partition  integer NOT NULL,
    source_offset     bigint NOT NULL,
    schema_id         integer NOT NULL,
    ingested_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (event_id, occurred_at)
) PARTITION BY RANGE (occurred_at);
CREATE TABLE concept_attempts_default PARTITION OF concept_attempts DEFAULT;
CREATE INDEX concept_attempts_user_concept_idx ON concept_attempts (user_id, concept_id);

-- Creates the month partition holding `month` if missing. SECURITY DEFINER so
-- the runtime role can create partitions ahead without owning DDL rights.
-- If the DEFAULT partition already holds rows of that month, Postgres refuses;
-- the rows stay in DEFAULT (reported by `novyra db partitions`), never lost.
-- The function is created through format() so that it names the schema the
-- migration ran in: SECURITY DEFINER functions must pin their search_path.
DO $do$
BEGIN
EXECUTE format($f$
CREATE FUNCTION %1$I.novyra_ensure_attempt_partition(month date) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  start_at date := date_trunc('month', month)::date;
  part text := format('concept_attempts_%%s', to_char(start_at, 'YYYY_MM'));
BEGIN
  IF to_regclass(format('%%I.%%I', %1$L, part)) IS NOT NULL THEN
    RETURN part;
  END IF;
  BEGIN
    EXECUTE format('CREATE TABLE %%I.%%I PARTITION OF %%I.concept_attempts FOR VALUES FROM (%%L) TO (%%L)',
                   %1$L, part, %1$L, start_at, (start_at + interval '1 month')::date);
  EXCEPTION WHEN check_violation THEN
    RAISE NOTICE 'default partition holds rows for %%, leaving them there', start_at;
    RETURN NULL;
  END;
  RETURN part;
END $$;
$f$, current_schema());
END $do$;

CREATE TABLE rubric_evaluations (
    event_id       text NOT NULL,
    occurred_at    timestamptz NOT NULL,
    user_id        text NOT NULL,
    concept_id     text NOT NULL,
    rubric_id      text NOT NULL,
    weighted_total double precision NOT NULL,
    detail         jsonb NOT NULL,
    PRIMARY KEY (event_id, occurred_at)
);
CREATE INDEX rubric_evaluations_detail_gin ON rubric_evaluations USING gin (detail);

CREATE TABLE mastery_records (
    user_id           text NOT NULL,
    concept_id        text NOT NULL,
    mastery           double precision NOT NULL,
    attempts_total    bigint NOT NULL,
    attempts_correct  bigint NOT NULL,
    confidence_weight double precision NOT NULL,
    version           bigint NOT NULL,
    last_event_id     text NOT NULL,
    updated_at        timestamptz NOT NULL,
    PRIMARY KEY (user_id, concept_id)
);

-- Where each consumer group is, per partition: committed in the same
-- transaction as the rows it produced (exactly-once effect).
CREATE TABLE consumer_offsets (
    group_id    text NOT NULL,
    topic       text NOT NULL,
    partition   integer NOT NULL,
    next_offset bigint NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, topic, partition)
);

-- Transactional outbox: mastery changes committed with the batch, relayed to
-- the mastery topic afterwards, deleted once Kafka acknowledged them.
CREATE TABLE mastery_outbox (
    id                bigserial PRIMARY KEY,
    user_id           text NOT NULL,
    concept_id        text NOT NULL,
    mastery           double precision NOT NULL,
    version           bigint NOT NULL,
    attempts_total    bigint NOT NULL,
    attempts_correct  bigint NOT NULL,
    confidence_weight double precision NOT NULL,
    last_event_id     text NOT NULL,
    updated_at        timestamptz NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now()
);

DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'novyra_app') THEN
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO novyra_app', current_schema());
    GRANT SELECT, INSERT ON concept_attempts, concept_attempts_default, rubric_evaluations TO novyra_app;
    GRANT SELECT, INSERT, UPDATE ON mastery_records, consumer_offsets TO novyra_app;
    GRANT SELECT, INSERT, UPDATE, DELETE ON concepts, concept_prerequisites, mastery_outbox TO novyra_app;
    GRANT USAGE ON SEQUENCE mastery_outbox_id_seq TO novyra_app;
    GRANT EXECUTE ON FUNCTION novyra_ensure_attempt_partition(date) TO novyra_app;
  END IF;
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'novyra_analyst') THEN
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO novyra_analyst', current_schema());
    GRANT SELECT ON concepts, concept_prerequisites, concept_attempts, rubric_evaluations, mastery_records TO novyra_analyst;
  END IF;
END $$;
