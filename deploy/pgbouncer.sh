#!/usr/bin/env bash
# PgBouncer in transaction mode on 127.0.0.1:6432, in front of the local
# Postgres; the runtime's DATABASE_URL goes through it, migrations go direct.
#
# Why not Debian bookworm's package: PgBouncer 1.18 cannot carry named
# prepared statements across transaction pooling, and diesel-async prepares
# every statement by name. 1.21+ can (`max_prepared_statements`), so this
# builds the PgBouncer of Debian's next release (trixie) from Debian's own
# source package, security patches applied, against bookworm's libraries.
# The build is cached under .stack/dist; nothing is installed system-wide
# but the -dev packages it compiles against.
#
# Our own patches in deploy/pgbouncer/*.patch go on top of Debian's (see
# each file for why); the cached build is keyed by their content, so a
# changed patch rebuilds.
#
# Two pools per database name:
#   novyra          transaction mode: the pipeline's store, analytics reads;
#   novyra_session  session mode: the relay lease, which holds a
#                   session-level advisory lock, and tools that SET
#                   something for their session (DATABASE_SESSION_URL).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
B_PATCHES="$DEPLOY_DIR/pgbouncer"
B_DIST="$STACK_DIR/dist/pgbouncer-$(cat "$B_PATCHES"/*.patch | sha256sum | cut -c1-12)"
B_SRC="$STACK_DIR/dist/pgbouncer-src"
B_HOME="$STACK_DIR/pgbouncer"
# The oldest release whose transaction pooling keeps prepared statements.
B_MIN_MINOR=21

bouncer_bin() { echo "$B_DIST/bin/pgbouncer"; }
pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1; }

psql_super() {
  PGPASSWORD="$PG_SUPERUSER_PASSWORD" "$(pg_bin)/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -v ON_ERROR_STOP=1 -qAt "$@"
}

# The Debian mirror this machine's apt already uses (never a hard-coded
# host): the first URI of a `debian` archive in its sources.
debian_mirror() {
  local uri
  uri="$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '/^URIs:/ {for (i = 2; i <= NF; i++) print $i}' |
    grep -E '/debian/?$' | head -n1 || true)"
  [ -n "$uri" ] || uri="$(grep -hE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
    sed -E 's/\[[^]]*\]//' | awk '{print $2}' | grep -E '/debian/?$' | head -n1 || true)"
  [ -n "$uri" ] || die "no Debian archive found in /etc/apt/sources to fetch pgbouncer's source from"
  echo "${uri%/}"
}

install() {
  if [ -x "$(bouncer_bin)" ]; then return 0; fi
  local deps=(build-essential pkg-config libevent-dev libc-ares-dev libssl-dev dpkg-dev)
  if ! dpkg -s "${deps[@]}" >/dev/null 2>&1; then
    log "installing pgbouncer's build dependencies"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${deps[@]}" >&2 || {
      apt-get update -qq >&2
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${deps[@]}" >&2
    } || die "apt-get install ${deps[*]} failed"
  fi
  # A private source list: the system's apt configuration is left alone.
  local apt="$B_SRC/apt" mirror
  mirror="$(debian_mirror)"
  mkdir -p "$apt/lists/partial" "$apt/parts"
  chmod -R 755 "$B_SRC"  # apt fetches as _apt
  echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror trixie main" >"$apt/sources.list"
  local opts=(-o "Dir::Etc::SourceList=$apt/sources.list" -o "Dir::Etc::SourceParts=$apt/parts"
    -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache")
  if ! ls "$B_SRC"/pgbouncer_*.dsc >/dev/null 2>&1; then
    log "fetching the pgbouncer source package of Debian trixie"
    apt-get "${opts[@]}" update -qq >&2 || die "apt-get update (trixie sources) failed"
    (cd "$B_SRC" && apt-get "${opts[@]}" source --download-only -qq pgbouncer >&2) ||
      die "apt-get source pgbouncer failed"
  fi
  local dsc version
  dsc="$(ls "$B_SRC"/pgbouncer_*.dsc | sort -V | tail -n1)"
  version="$(sed -n 's/^Version: //p' "$dsc")"
  [ "$(echo "$version" | cut -d. -f2)" -ge "$B_MIN_MINOR" ] ||
    die "pgbouncer $version is older than 1.$B_MIN_MINOR (needs max_prepared_statements)"
  log "building pgbouncer $version (Debian's source, patches applied)"
  rm -rf "$B_SRC/build"
  dpkg-source -x "$dsc" "$B_SRC/build" >&2
  local p
  for p in "$B_PATCHES"/*.patch; do
    log "applying $(basename "$p")"
    patch -s -p1 -d "$B_SRC/build" <"$p" >&2 || die "patch $(basename "$p") does not apply to pgbouncer $version"
  done
  (cd "$B_SRC/build" &&
    ./configure -q --prefix="$B_DIST" --without-systemd --without-pam >&2 &&
    make -s -j"$(nproc)" >&2 && make -s install >/dev/null) || die "building pgbouncer $version failed"
  rm -rf "$B_SRC/build"
  "$(bouncer_bin)" --version >&2 || die "the built pgbouncer does not run"
}

configure() {
  bash "$DEPLOY_DIR/tls.sh" ensure
  mkdir -p "$B_HOME" "$STACK_DIR/logs" "$STACK_DIR/run"
  # SCRAM secrets copied from the server, never passwords: clients log in to
  # PgBouncer with the same credentials as to Postgres, and PgBouncer reuses
  # the client's proof to log in to Postgres. Roles that may use it only.
  psql_super -d postgres -F ' ' -c "SELECT '\"' || rolname || '\" \"' || rolpassword || '\"' FROM pg_authid
      WHERE rolname IN ('novyra_app', 'novyra_analyst', 'novyra_monitor') AND rolpassword LIKE 'SCRAM-SHA-256%'
      ORDER BY rolname" >"$B_HOME/userlist.txt.tmp"
  [ -s "$B_HOME/userlist.txt.tmp" ] || die "no SCRAM secrets found for the runtime roles"
  mv "$B_HOME/userlist.txt.tmp" "$B_HOME/userlist.txt"
  cp "$STACK_DIR/tls/server.crt" "$STACK_DIR/tls/server.key" "$STACK_DIR/tls/ca.crt" "$B_HOME/"
  cat >"$B_HOME/pgbouncer.ini" <<CONF
; Generated by deploy/pgbouncer.sh; edits are overwritten on start.
[databases]
novyra = host=127.0.0.1 port=$PG_PORT dbname=novyra
novyra_session = host=127.0.0.1 port=$PG_PORT dbname=novyra pool_mode=session pool_size=${PGBOUNCER_SESSION_POOL_SIZE:-40}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $PGBOUNCER_PORT
unix_socket_dir =
pidfile = $B_HOME/pgbouncer.pid
logfile = $STACK_DIR/logs/pgbouncer.log
auth_type = scram-sha-256
auth_file = $B_HOME/userlist.txt
stats_users = novyra_monitor
pool_mode = transaction
; Server connections per (user, database): every client of the app role,
; every process, shares these. Small on purpose: two cores do not run
; more than a few statements at once, and the server allows 200.
default_pool_size = ${PGBOUNCER_POOL_SIZE:-10}
max_client_conn = 2000
; A batch's Bind is megabytes; with the default 4 KiB buffer PgBouncer
; moves it in 4 KiB steps, each a loop turn and, over TLS, a partial
; record. 64 KiB measured (make bench, 5,000 attempts/s over TLS): p99
; 643 and 984 ms in two runs, against 17,369 ms with 4 KiB. Buffers
; exist only while a connection has data in flight.
pkt_buf = 65536
; Named prepared statements survive transaction pooling (1.21+): PgBouncer
; prepares a client's statement on whichever server connection it gets.
max_prepared_statements = 500
; Not search_path: PgBouncer can carry only parameters the server reports,
; and Postgres < 18 does not report search_path, so a client's schema would
; stick to the first server session it opened. Clients that pin a schema
; (tests, replays) set it per transaction instead (SET LOCAL), and a startup
; options=-c search_path=... is refused here with a clear error.
; A restarted Postgres is found again within a second or two.
server_login_retry = 1
; TLS to clients that ask (sslmode=prefer does) and to the server.
client_tls_sslmode = allow
client_tls_cert_file = $B_HOME/server.crt
client_tls_key_file = $B_HOME/server.key
client_tls_ca_file = $B_HOME/ca.crt
server_tls_sslmode = prefer
log_connections = 0
log_disconnections = 0
CONF
  # PgBouncer refuses to run as root; it runs as postgres, alone able to
  # read the secrets and the key.
  chown -R postgres:postgres "$B_HOME"
  chmod 700 "$B_HOME"
  chmod 600 "$B_HOME/userlist.txt" "$B_HOME/server.key"
  touch "$STACK_DIR/logs/pgbouncer.log"
  chown postgres:postgres "$STACK_DIR/logs/pgbouncer.log"
}

# Ready when a query goes through to Postgres.
ready() {
  PGPASSWORD=novyra_app PGCONNECT_TIMEOUT=3 "$(pg_bin)/psql" -h 127.0.0.1 -p "$PGBOUNCER_PORT" -U novyra_app \
    -d novyra -qAtc 'SELECT 1' | grep -qx 1
}

start() {
  install
  configure
  if is_running pgbouncer; then
    # The config (secrets, pool sizes) may have changed: reload in place.
    kill -HUP "$(cat "$(pid_file pgbouncer)")"
    log "pgbouncer already running (reloaded)"
    return 0
  fi
  port_busy "$PGBOUNCER_PORT" && die "port $PGBOUNCER_PORT is in use by a process this stack did not start"
  log "starting pgbouncer on 127.0.0.1:$PGBOUNCER_PORT (transaction pooling)"
  rm -f "$B_HOME/pgbouncer.pid"
  # One descriptor per client and server connection.
  ulimit -n 8192 2>/dev/null || true
  runuser -u postgres -- "$(bouncer_bin)" -d "$B_HOME/pgbouncer.ini" >&2 || die "pgbouncer did not start; see $STACK_DIR/logs/pgbouncer.log"
  local i
  for i in $(seq 1 20); do [ -s "$B_HOME/pgbouncer.pid" ] && break; sleep 0.5; done
  cp "$B_HOME/pgbouncer.pid" "$(pid_file pgbouncer)"
  WAIT_PID_NAME=pgbouncer wait_ready pgbouncer 30 ready
}

stop() { stop_pid pgbouncer; }

status() {
  if is_running pgbouncer && ready; then echo "pgbouncer up    127.0.0.1:$PGBOUNCER_PORT (transaction pool)"; else echo "pgbouncer down"; fi
}

"${1:-status}"
