#!/usr/bin/env bash
# Restores a backup.sh directory into an empty schema and graph:
#   deploy/backup/restore.sh IN_DIR
# pg_restore refuses a schema that already exists (drop or rename it first);
# the graph import MERGEs, so it is safe on a partly filled graph too. Then
# the workers resume (catalog first): the ingest re-reads Kafka from the offsets in the
# dump (nothing after the backup is lost while the attempts topic keeps
# it), and `novyra reconcile` brings the graph to the compacted topics.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
novyra="${NOVYRA:-$root/target/release/novyra}"
in="${1:?usage: restore.sh IN_DIR}"
: "${MIGRATION_DATABASE_URL:?set MIGRATION_DATABASE_URL (the schema owner)}"
pg_bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)"
for f in postgres.dump graph.jsonl manifest.txt; do
  [ -f "$in/$f" ] || { echo "restore: $in/$f missing" >&2; exit 1; }
done
want="$(sed -n 's/^postgres_sha256 //p' "$in/manifest.txt")"
[ "$(sha256sum "$in/postgres.dump" | cut -d' ' -f1)" = "$want" ] || { echo "restore: postgres.dump checksum mismatch" >&2; exit 1; }
started=$(date +%s.%N)
"$pg_bin/pg_restore" --exit-on-error --no-password -d "$MIGRATION_DATABASE_URL" "$in/postgres.dump"
# The catalog's offsets live in Kafka, past what the restored tables hold:
# rewind it so it re-applies the compacted topics (start it before the
# ingest, so attempts see the latest concept parameters).
"$novyra" rewind --group catalog
pg_done=$(date +%s.%N)
"$novyra" graph import "$in/graph.jsonl"
done_at=$(date +%s.%N)
echo "restored postgres in $(awk "BEGIN{printf \"%.2f\", $pg_done - $started}") s, graph in $(awk "BEGIN{printf \"%.2f\", $done_at - $pg_done}") s"
