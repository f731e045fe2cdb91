#!/usr/bin/env bash
# Point-in-time recovery for the local stack's Postgres with pgBackRest
# (Debian's package), beside the logical backup of backup.sh:
#
#   deploy/backup/pitr.sh setup           install pgBackRest, create the stanza, start archiving WAL
#   deploy/backup/pitr.sh backup [TYPE]   a backup: incr (default; full when none exists yet), diff or full
#   deploy/backup/pitr.sh archive         switch WAL and wait until the archive holds it (pgbackrest check)
#   deploy/backup/pitr.sh info            backups and the archived WAL range
#   deploy/backup/pitr.sh restore TIME DIR PORT
#                                         restore the cluster as it was at TIME (any timestamp
#                                         Postgres parses) into the new directory DIR and run it
#                                         on 127.0.0.1:PORT, promoted and writable
#   deploy/backup/pitr.sh stop-restored DIR
#
# The repository is .stack/pgbackrest/repo (a real deployment points
# repo1-* at object storage). The primary runs with archive_mode on and an
# archive_command that pushes WAL once `setup` has run (deploy/postgres.sh),
# so the demo's lean stack archives nothing. archive_timeout bounds what a
# lost primary takes with it; docs/disaster-recovery.md has RPO and RTO.
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
PG_DATA="$STACK_DIR/postgres/data"
PG_SOCK="$STACK_DIR/postgres/sock"
B_HOME="$STACK_DIR/pgbackrest"
B_CONF="$B_HOME/pgbackrest.conf"
STANZA=novyra

pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1; }
as_pg() { runuser -u postgres -- "$@"; }
# pgBackRest reaches the primary over its socket as postgres; libpq takes
# the password from the environment (never argv, never a file in git).
brest() { as_pg env PGPASSWORD="$PG_SUPERUSER_PASSWORD" pgbackrest --config="$B_CONF" --stanza="$STANZA" "$@"; }

install() {
  command -v pgbackrest >/dev/null && return 0
  log "installing pgbackrest from Debian packages"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbackrest >&2 || {
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbackrest >&2
  } || die "apt-get install pgbackrest failed"
}

configure() {
  mkdir -p "$B_HOME/repo" "$B_HOME/log" "$B_HOME/lock" "$B_HOME/spool"
  cat >"$B_CONF" <<CONF
[global]
repo1-path=$B_HOME/repo
repo1-retention-full=2
compress-type=lz4
process-max=2
start-fast=y
log-path=$B_HOME/log
lock-path=$B_HOME/lock
spool-path=$B_HOME/spool
log-level-console=warn
log-level-file=info

[$STANZA]
pg1-path=$PG_DATA
pg1-port=$PG_PORT
pg1-socket-path=$PG_SOCK
pg1-user=postgres
CONF
  chown -R postgres:postgres "$B_HOME"
}

setup() {
  install
  configure
  bash "$DEPLOY_DIR/postgres.sh" start
  local mode
  mode="$(PGPASSWORD="$PG_SUPERUSER_PASSWORD" "$(pg_bin)/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -qAt -c 'SHOW archive_mode')"
  [ "$mode" = on ] || die "archive_mode is $mode: restart postgres (bash deploy/postgres.sh stop && bash deploy/postgres.sh start) so it takes effect"
  brest stanza-create >&2
  # From here on the primary's archive_command pushes every WAL segment.
  touch "$B_HOME/archiving"; chown postgres:postgres "$B_HOME/archiving"
  brest check >&2
  log "WAL archiving to $B_HOME/repo is on (stanza $STANZA)"
}

backup() {
  local type="${1:-incr}"
  [ -f "$B_HOME/archiving" ] || setup
  local t0; t0=$(date +%s.%N)
  brest backup --type="$type" >&2
  log "$type backup done in $(awk "BEGIN{printf \"%.1f\", $(date +%s.%N) - $t0}") s (an incr with no full before it is taken as full)"
}

archive() { brest check >&2; }

info() { brest info; }

restore() {
  local target="${1:?usage: pitr.sh restore TIME DIR PORT}" dir="${2:?DIR}" port="${3:?PORT}"
  [ -e "$dir" ] && [ -n "$(ls -A "$dir" 2>/dev/null)" ] && die "$dir is not empty"
  port_busy "$port" && die "port $port is in use"
  mkdir -p "$dir"; chown postgres:postgres "$dir"; chmod 700 "$dir"
  local t0; t0=$(date +%s.%N)
  brest restore --pg1-path="$dir" --type=time --target="$target" --target-action=promote >&2
  # A second server beside the primary: its own port and memory, and it
  # must not push a new timeline into the primary's archive.
  cat >>"$dir/postgresql.auto.conf" <<CONF
port = $port
shared_buffers = 128MB
archive_mode = off
CONF
  touch "$STACK_DIR/logs/pitr-$port.log"; chown postgres:postgres "$STACK_DIR/logs/pitr-$port.log"
  as_pg "$(pg_bin)/pg_ctl" -D "$dir" -l "$STACK_DIR/logs/pitr-$port.log" -w -t 300 start >&2
  local i
  for i in $(seq 1 300); do
    [ "$(PGPASSWORD="$PG_SUPERUSER_PASSWORD" "$(pg_bin)/psql" -h 127.0.0.1 -p "$port" -U postgres -d postgres -qAt \
      -c 'SELECT pg_is_in_recovery()' 2>/dev/null)" = f ] && break
    sleep 1
  done
  [ "$i" -lt 300 ] || die "the restored server did not finish recovery; see $STACK_DIR/logs/pitr-$port.log"
  log "restored to $target and promoted on 127.0.0.1:$port in $(awk "BEGIN{printf \"%.1f\", $(date +%s.%N) - $t0}") s"
}

stop-restored() {
  local dir="${1:?usage: pitr.sh stop-restored DIR}"
  [ -f "$dir/postmaster.pid" ] && as_pg "$(pg_bin)/pg_ctl" -D "$dir" -m fast -w stop >&2
  return 0
}

cmd="${1:?usage: pitr.sh setup|backup|archive|info|restore|stop-restored}"
shift
"$cmd" "$@"
