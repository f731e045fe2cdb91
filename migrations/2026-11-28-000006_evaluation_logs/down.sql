DROP FUNCTION novyra_ensure_month_partition(text, date);
DROP TABLE evaluation_logs;
DROP FUNCTION novyra_refuse_change();
GRANT EXECUTE ON FUNCTION novyra_ensure_attempt_partition(date) TO PUBLIC;
