#!/usr/bin/env bash
# A streaming read replica of the stack's Postgres on 127.0.0.1:5433, made
# with `pg_basebackup -R` through a physical replication slot (so the
# primary keeps the WAL the replica has not replayed). Analysts and the
# read-only commands use it through ANALYTICS_DATABASE_URL; roles and
# grants come from the primary, so the analyst role is read-only here too,
# and the standby refuses every write besides.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
R_DATA="$STACK_DIR/postgres/replica"
R_SOCK="$STACK_DIR/postgres/replica-sock"
SLOT=novyra_replica

pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1; }
as_pg() { runuser -u postgres -- "$@"; }

psql_primary() {
  PGPASSWORD="$PG_SUPERUSER_PASSWORD" "$(pg_bin)/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -v ON_ERROR_STOP=1 -qAt "$@"
}

ready() {
  PGPASSWORD="$PG_SUPERUSER_PASSWORD" "$(pg_bin)/psql" -h 127.0.0.1 -p "$PG_REPLICA_PORT" -U postgres -qAt \
    -d postgres -c 'SELECT pg_is_in_recovery()' | grep -qx t
}

# The replication role (REPLICATION, no other rights) and the base backup,
# once; pg_basebackup -R writes primary_conninfo and standby.signal.
init() {
  psql_primary -d postgres <<SQL
DO \$\$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'novyra_replicator') THEN
    CREATE ROLE novyra_replicator REPLICATION LOGIN PASSWORD '$PG_REPLICATOR_PASSWORD';
  END IF;
END \$\$;
SQL
  # A slot left by a replica whose data was deleted would pin WAL forever.
  psql_primary -d postgres -c "SELECT pg_drop_replication_slot('$SLOT') FROM pg_replication_slots WHERE slot_name = '$SLOT' AND NOT active" >/dev/null
  log "taking the base backup for the replica"
  rm -rf "$R_DATA"
  mkdir -p "$R_DATA"; chown postgres:postgres "$R_DATA"; chmod 700 "$R_DATA"
  as_pg env PGPASSWORD="$PG_REPLICATOR_PASSWORD" "$(pg_bin)/pg_basebackup" -h 127.0.0.1 -p "$PG_PORT" \
    -U novyra_replicator -D "$R_DATA" -R -X stream -C -S "$SLOT" -c fast >&2
  # The copy carries the primary's settings; these come last and win.
  cat >"$R_DATA/replica.conf" <<CONF
port = $PG_REPLICA_PORT
unix_socket_directories = '$R_SOCK'
shared_buffers = 256MB
hot_standby = on
hot_standby_feedback = on
# The name the primary lists it under (pg_stat_replication.application_name,
# the exporter's pg_replica_* series).
cluster_name = 'novyra_replica'
CONF
  echo "include_if_exists = 'replica.conf'" >>"$R_DATA/postgresql.conf"
  chown postgres:postgres "$R_DATA/replica.conf" "$R_DATA/postgresql.conf"
}

start() {
  bash "$DEPLOY_DIR/postgres.sh" start
  mkdir -p "$R_SOCK" "$STACK_DIR/logs" "$STACK_DIR/run"; chown postgres:postgres "$R_SOCK"
  if is_running postgres-replica && ready; then log "replica already running"; return 0; fi
  port_busy "$PG_REPLICA_PORT" && die "port $PG_REPLICA_PORT is in use by a process this stack did not start"
  # Rebuild when there is no standby yet, or when its slot is gone or was
  # given up (max_slot_wal_keep_size on the primary): the WAL it needs is
  # no longer kept, so it could never catch up.
  local slot
  slot="$(psql_primary -d postgres -c "SELECT coalesce(wal_status, 'none') FROM pg_replication_slots WHERE slot_name = '$SLOT'")"
  if [ ! -f "$R_DATA/standby.signal" ] || [ -z "$slot" ] || [ "$slot" = lost ]; then
    [ -f "$R_DATA/standby.signal" ] && log "the replica's slot is ${slot:-missing}: rebuilding it"
    init
  fi
  touch "$STACK_DIR/logs/postgres-replica.log"; chown postgres:postgres "$STACK_DIR/logs/postgres-replica.log"
  log "starting the read replica on 127.0.0.1:$PG_REPLICA_PORT"
  as_pg "$(pg_bin)/pg_ctl" -D "$R_DATA" -l "$STACK_DIR/logs/postgres-replica.log" -w -t 60 start >&2
  head -n1 "$R_DATA/postmaster.pid" >"$(pid_file postgres-replica)"
  WAIT_PID_NAME=postgres-replica wait_ready postgres-replica 60 ready
}

stop() {
  if is_running postgres-replica; then kill -INT "$(cat "$(pid_file postgres-replica)")"; fi
  stop_pid postgres-replica
}

status() {
  if is_running postgres-replica && ready; then
    echo "replica   up    127.0.0.1:$PG_REPLICA_PORT (streaming from :$PG_PORT)"
  else
    echo "replica   down"
  fi
}

"${1:-status}"
