#!/usr/bin/env bash
# PostgreSQL from Debian's packages, as a private cluster under .stack/postgres
# (not the distribution's own cluster), on 127.0.0.1:5432 only.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
PG_DATA="$STACK_DIR/postgres/data"
PG_SOCK="$STACK_DIR/postgres/sock"

pg_bin() {
  local d
  d="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)"
  [ -n "$d" ] && [ -x "$d/initdb" ] && echo "$d"
}

install() {
  if ! pg_bin >/dev/null; then
    log "installing postgresql from Debian packages"
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql postgresql-contrib >&2
  fi
  pg_bin >/dev/null || die "postgresql binaries not found after install"
}

as_pg() { runuser -u postgres -- "$@"; }

psql_super() {
  PGPASSWORD="$PG_SUPERUSER_PASSWORD" "$(pg_bin)/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -v ON_ERROR_STOP=1 -qAt "$@"
}

ready() { psql_super -d postgres -c 'SELECT 1' | grep -qx 1; }

# Roles and databases of the local stack; each statement is idempotent.
bootstrap() {
  psql_super -d postgres <<'SQL'
SET client_min_messages = warning;
DO $$
DECLARE r text;
BEGIN
  FOREACH r IN ARRAY ARRAY['novyra_migrator','novyra_app','novyra_analyst','novyra_monitor','apicurio'] LOOP
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
      EXECUTE format('CREATE ROLE %I LOGIN PASSWORD %L', r, r);
    END IF;
  END LOOP;
END $$;
SELECT 'CREATE DATABASE novyra OWNER novyra_migrator'
  WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'novyra') \gexec
SELECT 'CREATE DATABASE apicurio OWNER apicurio'
  WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'apicurio') \gexec
REVOKE ALL ON DATABASE novyra FROM PUBLIC;
GRANT CONNECT ON DATABASE novyra TO novyra_app, novyra_analyst;
-- The Postgres exporter (deploy/telemetry.sh): statistics only, from the
-- `postgres` database, where pg_stat_statements sees every database.
GRANT pg_monitor TO novyra_monitor;
CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
SQL
}

start() {
  install
  local bin; bin="$(pg_bin)"
  mkdir -p "$STACK_DIR/postgres" "$STACK_DIR/run" "$STACK_DIR/logs" "$PG_SOCK"
  chown postgres:postgres "$STACK_DIR/postgres" "$PG_SOCK"
  if [ ! -f "$PG_DATA/PG_VERSION" ]; then
    log "initialising postgres cluster in $PG_DATA"
    local pw; pw="$(mktemp)"; printf '%s\n' "$PG_SUPERUSER_PASSWORD" >"$pw"; chmod 644 "$pw"
    as_pg "$bin/initdb" -D "$PG_DATA" -U postgres --auth=scram-sha-256 --pwfile="$pw" -E UTF8 --locale=C.UTF-8 >&2
    rm -f "$pw"
    cat >>"$PG_DATA/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$PG_SOCK'
include_if_exists = 'novyra.conf'
CONF
  fi
  # TLS with the stack's CA (deploy/tls.sh). Rules stay `host`, so clients
  # choose: the demo connects without TLS, the secure tests with
  # sslmode=verify-full. The server reads its key only if postgres owns it.
  bash "$DEPLOY_DIR/tls.sh" ensure
  mkdir -p "$STACK_DIR/postgres/tls"
  cp "$STACK_DIR/tls/server.crt" "$STACK_DIR/postgres/tls/server.crt"
  cp "$STACK_DIR/tls/server.key" "$STACK_DIR/postgres/tls/server.key"
  chown -R postgres:postgres "$STACK_DIR/postgres/tls"
  chmod 600 "$STACK_DIR/postgres/tls/server.key"
  # Tuning lives in its own file, rewritten on every start so existing
  # clusters pick up changes. Write-heavy ingest: fewer, spread checkpoints
  # (each one makes the next writes log full pages) and cheap WAL compression.
  # Durability is untouched: fsync and synchronous_commit stay on.
  cat >"$PG_DATA/novyra.conf" <<CONF
max_connections = 200
shared_buffers = 1GB
synchronous_commit = on
wal_compression = lz4
max_wal_size = 8GB
min_wal_size = 1GB
checkpoint_timeout = 15min
checkpoint_completion_target = 0.9
shared_preload_libraries = 'pg_stat_statements'
compute_query_id = on
# A replica's slot (deploy/postgres-replica.sh) keeps WAL until the replica
# has it; a replica left stopped must not fill the disk. Past this the slot
# is dropped from use and the replica is rebuilt on its next start.
max_slot_wal_keep_size = 4GB
# WAL archiving for point-in-time recovery (deploy/backup/pitr.sh): on
# always, since switching it needs a restart; the command pushes to
# pgBackRest once pitr.sh setup has made the stanza, and is a no-op
# before. archive_timeout bounds the WAL a lost primary takes with it.
archive_mode = on
archive_command = 'test ! -f $STACK_DIR/pgbackrest/archiving || pgbackrest --config=$STACK_DIR/pgbackrest/pgbackrest.conf --stanza=novyra archive-push %p'
archive_timeout = 60s
ssl = on
ssl_cert_file = '$STACK_DIR/postgres/tls/server.crt'
ssl_key_file = '$STACK_DIR/postgres/tls/server.key'
ssl_min_protocol_version = 'TLSv1.2'
CONF
  chown postgres:postgres "$PG_DATA/novyra.conf"
  grep -q "include_if_exists = 'novyra.conf'" "$PG_DATA/postgresql.conf" ||
    echo "include_if_exists = 'novyra.conf'" >>"$PG_DATA/postgresql.conf"
  if is_running postgres && ready; then
    psql_super -d postgres -c 'SELECT pg_reload_conf()' >/dev/null
    sleep 1  # the reload is asynchronous
    local pending
    pending="$(psql_super -d postgres -c "SELECT string_agg(name, ', ') FROM pg_settings WHERE pending_restart")"
    if [ -z "$pending" ]; then
      log "postgres already running"
      bootstrap
      return 0
    fi
    # A setting this script added since the server started (archive_mode,
    # for one) takes a restart; clients reconnect, as after any outage.
    log "postgres restarts to apply: $pending"
    stop
  fi
  port_busy "$PG_PORT" && die "port $PG_PORT is in use by a process this stack did not start"
  touch "$STACK_DIR/logs/postgres.log"; chown postgres:postgres "$STACK_DIR/logs/postgres.log"
  as_pg "$bin/pg_ctl" -D "$PG_DATA" -l "$STACK_DIR/logs/postgres.log" -w -t 60 start >&2
  head -n1 "$PG_DATA/postmaster.pid" >"$(pid_file postgres)"
  WAIT_PID_NAME=postgres wait_ready postgres 60 ready
  bootstrap
}

# SIGINT is PostgreSQL's "fast" shutdown: clients are disconnected, data is safe.
stop() {
  local pf; pf="$(pid_file postgres)"
  if is_running postgres; then kill -INT "$(cat "$pf")"; fi
  stop_pid postgres
}

status() { if is_running postgres && ready; then echo "postgres  up    127.0.0.1:$PG_PORT"; else echo "postgres  down"; fi; }

"${1:-status}"
