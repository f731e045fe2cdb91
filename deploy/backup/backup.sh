#!/usr/bin/env bash
# Logical backup of one deployment: deploy/backup/backup.sh OUT_DIR
#   OUT_DIR/postgres.dump  pg_dump -Fc of the schema (NOVYRA_DB_SCHEMA, default
#                          public): tables, grants, functions, and the ingest's
#                          consumer_offsets, so a restore resumes from Kafka
#   OUT_DIR/graph.jsonl    `novyra graph export` (ids prefixed NOVYRA_ID_PREFIX)
#   OUT_DIR/lag.json       the groups' offsets at backup time
#   OUT_DIR/manifest.txt   what, when, how long, checksums
# The compacted topics are the third copy: `novyra reconcile` rebuilds the
# graph from them. Credentials come from MIGRATION_DATABASE_URL and NEO4J_*.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
novyra="${NOVYRA:-$root/target/release/novyra}"
out="${1:?usage: backup.sh OUT_DIR}"
schema="${NOVYRA_DB_SCHEMA:-public}"
: "${MIGRATION_DATABASE_URL:?set MIGRATION_DATABASE_URL (the schema owner)}"
pg_bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)"
mkdir -p "$out"
started=$(date +%s.%N)
"$pg_bin/pg_dump" -Fc --no-password -d "$MIGRATION_DATABASE_URL" -n "$schema" -f "$out/postgres.dump"
pg_done=$(date +%s.%N)
"$novyra" graph export --out "$out/graph.jsonl" --id-prefix "${NOVYRA_ID_PREFIX:-}" | tee "$out/graph.txt"
"$novyra" lag --json >"$out/lag.json"
done_at=$(date +%s.%N)
{
  echo "taken_at $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "schema $schema"
  echo "id_prefix ${NOVYRA_ID_PREFIX:-}"
  echo "postgres_seconds $(awk "BEGIN{printf \"%.2f\", $pg_done - $started}")"
  echo "total_seconds $(awk "BEGIN{printf \"%.2f\", $done_at - $started}")"
  echo "postgres_sha256 $(sha256sum "$out/postgres.dump" | cut -d' ' -f1)"
  echo "graph_sha256 $(sha256sum "$out/graph.jsonl" | cut -d' ' -f1)"
} >"$out/manifest.txt"
cat "$out/manifest.txt"
