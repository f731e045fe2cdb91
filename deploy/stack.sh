#!/usr/bin/env bash
# The local stack: `up` installs on first use and starts the servers in
# dependency order (FULL=1 adds the read replica, WAL archiving,
# telemetry and Jaeger), `down` stops what `up` started, `status` reports.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cmd="${1:-status}"
case "$cmd" in
  up)
    # The Maven downloads do not depend on each other: resolve them together.
    bash "$DEPLOY_DIR/kafka.sh" install & k=$!
    bash "$DEPLOY_DIR/neo4j.sh" install & n=$!
    bash "$DEPLOY_DIR/apicurio.sh" install & a=$!
    bash "$DEPLOY_DIR/registry-proxy.sh" install & r=$!
    # Jaeger's build (minutes, once) uses the CPU while the others download.
    j=""
    if [ "${FULL:-0}" = 1 ]; then bash "$DEPLOY_DIR/jaeger.sh" install & j=$!; fi
    wait $k && wait $n && wait $a && wait $r || die "install failed"
    if [ -n "$j" ]; then wait $j || die "jaeger install failed"; fi
    # Not beside registry-proxy's: both may need apt-get update.
    if [ "${FULL:-0}" = 1 ]; then bash "$DEPLOY_DIR/telemetry.sh" install; fi
    # Postgres, Kafka and Neo4j share the stack's CA; make it first.
    bash "$DEPLOY_DIR/tls.sh" ensure
    bash "$DEPLOY_DIR/postgres.sh" start
    bash "$DEPLOY_DIR/pgbouncer.sh" start
    bash "$DEPLOY_DIR/kafka.sh" start & k=$!
    bash "$DEPLOY_DIR/neo4j.sh" start & n=$!
    bash "$DEPLOY_DIR/apicurio.sh" start & a=$!
    wait $k && wait $n && wait $a || die "start failed"
    bash "$DEPLOY_DIR/registry-proxy.sh" start
    # The production topology beyond what the demo needs (FULL=1; make
    # test sets it): the read replica, WAL archiving, telemetry, traces.
    if [ "${FULL:-0}" = 1 ]; then
      bash "$DEPLOY_DIR/postgres-replica.sh" start
      bash "$DEPLOY_DIR/backup/pitr.sh" setup
      bash "$DEPLOY_DIR/telemetry.sh" start
      bash "$DEPLOY_DIR/jaeger.sh" start
    fi
    log "stack is up"
    ;;
  down)
    for s in jaeger telemetry registry-proxy apicurio neo4j kafka pgbouncer postgres-replica postgres; do bash "$DEPLOY_DIR/$s.sh" stop; done ;;
  status)
    for s in postgres pgbouncer postgres-replica kafka neo4j apicurio registry-proxy telemetry jaeger; do bash "$DEPLOY_DIR/$s.sh" status; done ;;
  *) die "usage: stack.sh up|down|status" ;;
esac
