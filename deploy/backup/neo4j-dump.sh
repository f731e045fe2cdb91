#!/usr/bin/env bash
# Offline backup of the local stack's Neo4j: deploy/backup/neo4j-dump.sh OUT_DIR
# Neo4j Community has no online backup, so this stops the server (the graph
# sink retries and catches up from Kafka when it is back), dumps the
# `neo4j` database with `neo4j-admin database dump`, checks the dump's
# consistency with `neo4j-admin database check --from-path`, and starts the
# server again. Schedule it in a quiet hour (docs/runbooks.md); the graph
# can also be rebuilt from the compacted topics (`novyra reconcile`), so
# this shortens a recovery rather than enabling one.
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
out="${1:?usage: neo4j-dump.sh OUT_DIR}"
N_HOME="$STACK_DIR/neo4j"
N_LIBS="$STACK_DIR/dist/neo4j-$NEO4J_VERSION"
admin() { NEO4J_HOME="$N_HOME" NEO4J_CONF="$N_HOME/conf" "$(pick_java)" -cp "$N_LIBS/*" org.neo4j.cli.AdminTool "$@"; }

mkdir -p "$out"
[ ! -e "$out/neo4j.dump" ] || die "$out/neo4j.dump exists; give a new directory"
t0=$(date +%s.%N)
bash "$DEPLOY_DIR/neo4j.sh" stop
# Whatever happens below, the server comes back.
trap 'bash "$DEPLOY_DIR/neo4j.sh" start' EXIT
admin database dump neo4j --to-path="$out" >&2
t1=$(date +%s.%N)
admin database check neo4j --from-path="$out" --report-path="$out" >&2
t2=$(date +%s.%N)
trap - EXIT
bash "$DEPLOY_DIR/neo4j.sh" start
t3=$(date +%s.%N)
{
  echo "taken_at $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "dump_bytes $(stat -c %s "$out/neo4j.dump")"
  echo "dump_seconds $(awk "BEGIN{printf \"%.1f\", $t1 - $t0}")"
  echo "check_seconds $(awk "BEGIN{printf \"%.1f\", $t2 - $t1}")"
  echo "downtime_seconds $(awk "BEGIN{printf \"%.1f\", $t3 - $t0}")"
  echo "dump_sha256 $(sha256sum "$out/neo4j.dump" | cut -d' ' -f1)"
} | tee "$out/manifest.txt"
