-- The partition function as 000001 made it.
DO $do$
BEGIN
EXECUTE format($f$
CREATE OR REPLACE FUNCTION %1$I.novyra_ensure_attempt_partition(month date) RETURNS text
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

DROP INDEX IF EXISTS mastery_records_concept_user_idx;
DROP TABLE IF EXISTS mastery_recompute;
