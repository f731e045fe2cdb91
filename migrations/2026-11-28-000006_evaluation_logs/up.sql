-- The audit log of model evaluations (the seed's "Event / Audit Logs":
-- prompts, responses and rubric detail as JSONB, kept for traceability).
-- Append-only: the runtime role may insert and read, never update or
-- delete, and a trigger refuses UPDATE and DELETE even to the owner; old
-- months leave whole, by detaching their partition (`novyra db partitions
-- --detach-before`). Month partitions as for concept_attempts.
CREATE TABLE evaluation_logs (
    event_id         text NOT NULL,
    occurred_at      timestamptz NOT NULL,
    user_id          text NOT NULL,
    concept_id       text,
    attempt_event_id text,
    model            text NOT NULL,
    prompt           jsonb NOT NULL,
    response         jsonb NOT NULL,
    rubric           jsonb,
    source_partition integer NOT NULL,
    source_offset    bigint NOT NULL,
    schema_id        integer NOT NULL,
    ingested_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (event_id, occurred_at)
) PARTITION BY RANGE (occurred_at);
CREATE TABLE evaluation_logs_default PARTITION OF evaluation_logs DEFAULT;
CREATE INDEX evaluation_logs_user_idx ON evaluation_logs (user_id, occurred_at);
-- jsonb_path_ops: smaller and faster than the default opclass, and
-- containment (@>) is the query an audit asks ("every response that
-- flagged X", "every prompt of template Y").
CREATE INDEX evaluation_logs_prompt_gin ON evaluation_logs USING gin (prompt jsonb_path_ops);
CREATE INDEX evaluation_logs_response_gin ON evaluation_logs USING gin (response jsonb_path_ops);
CREATE INDEX evaluation_logs_rubric_gin ON evaluation_logs USING gin (rubric jsonb_path_ops);

CREATE FUNCTION novyra_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION '% is append-only', TG_TABLE_NAME USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER evaluation_logs_append_only BEFORE UPDATE OR DELETE ON evaluation_logs
  FOR EACH ROW EXECUTE FUNCTION novyra_refuse_change();

-- One partition function for every month-partitioned log, limited to
-- those logs so the runtime role cannot create tables elsewhere.
DO $do$
BEGIN
EXECUTE format($f$
CREATE FUNCTION %1$I.novyra_ensure_month_partition(parent text, month date) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  start_at date := date_trunc('month', month)::date;
  part text := format('%%s_%%s', parent, to_char(start_at, 'YYYY_MM'));
BEGIN
  IF parent NOT IN ('concept_attempts', 'evaluation_logs') THEN
    RAISE EXCEPTION 'not a month-partitioned log: %%', parent USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF to_regclass(format('%%I.%%I', %1$L, part)) IS NOT NULL THEN
    RETURN part;
  END IF;
  BEGIN
    EXECUTE format('CREATE TABLE %%I.%%I PARTITION OF %%I.%%I FOR VALUES FROM (%%L) TO (%%L)',
                   %1$L, part, %1$L, parent, start_at, (start_at + interval '1 month')::date);
  EXCEPTION
    WHEN duplicate_table OR unique_violation THEN
      RETURN part;
    WHEN check_violation THEN
      RAISE NOTICE 'default partition of %% holds rows for %%, leaving them there', parent, start_at;
      RETURN NULL;
  END;
  RETURN part;
END $$;
$f$, current_schema());
END $do$;

-- Functions are executable by PUBLIC unless revoked: only the runtime role
-- may create partitions.
REVOKE ALL ON FUNCTION novyra_ensure_month_partition(text, date) FROM PUBLIC;
REVOKE ALL ON FUNCTION novyra_ensure_attempt_partition(date) FROM PUBLIC;

DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'novyra_app') THEN
    GRANT SELECT, INSERT ON evaluation_logs, evaluation_logs_default TO novyra_app;
    GRANT EXECUTE ON FUNCTION novyra_ensure_month_partition(text, date) TO novyra_app;
    GRANT EXECUTE ON FUNCTION novyra_ensure_attempt_partition(date) TO novyra_app;
  END IF;
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'novyra_analyst') THEN
    GRANT SELECT ON evaluation_logs TO novyra_analyst;
  END IF;
END $$;
