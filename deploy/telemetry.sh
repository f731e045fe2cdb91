#!/usr/bin/env bash
# Telemetry of the local stack (FULL=1): Prometheus on 127.0.0.1:9090 and
# prometheus-postgres-exporter on 127.0.0.1:9187, both from Debian's
# packages, unpacked under .stack (installing them would start the
# distribution's own services). Prometheus scrapes the pipeline (`novyra
# run` on 127.0.0.1:9464), the exporter, and the JMX agents that
# deploy/kafka.sh and deploy/neo4j.sh load into their JVMs.
#
#   deploy/telemetry.sh start|stop|status
#   deploy/telemetry.sh check             promtool on the config it runs
#   deploy/telemetry.sh promtool ARGS...  Debian's promtool
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
T_DIST="$STACK_DIR/dist/prometheus"
T_HOME="$STACK_DIR/telemetry"
PG_MONITOR_PASSWORD="${PG_MONITOR_PASSWORD:-novyra_monitor}"

install() {
  [ -x "$T_DIST/usr/bin/prometheus" ] && [ -x "$T_DIST/usr/bin/prometheus-postgres-exporter" ] && return 0
  local tmp; tmp="$(mktemp -d)"; chmod 755 "$tmp"  # apt fetches as _apt
  log "fetching Debian's prometheus and postgres exporter (unpacked, not installed)"
  (cd "$tmp" && apt-get download -qq prometheus prometheus-postgres-exporter >&2) || {
    apt-get update -qq >&2
    (cd "$tmp" && apt-get download -qq prometheus prometheus-postgres-exporter >&2)
  } || die "apt-get download prometheus prometheus-postgres-exporter failed"
  mkdir -p "$T_DIST"
  local deb; for deb in "$tmp"/*.deb; do dpkg-deb -x "$deb" "$T_DIST"; done
  rm -rf "$tmp"
  "$T_DIST/usr/bin/prometheus" --version >/dev/null 2>&1 || die "the unpacked prometheus does not run"
}

promtool() { install; "$T_DIST/usr/bin/promtool" "$@"; }

# The scrape config, from the ports in lib.sh (the one place they are set).
configure() {
  mkdir -p "$T_HOME/data" "$STACK_DIR/logs" "$STACK_DIR/run"
  local i kafka_targets=""
  for i in $(seq 1 "$KAFKA_NODES"); do
    kafka_targets="${kafka_targets:+$kafka_targets, }\"127.0.0.1:$((KAFKA_JMX_PORT + 2 * (i - 1)))\""
  done
  cat >"$T_HOME/prometheus.yml" <<CONF
# Written by deploy/telemetry.sh; deploy/prometheus/prometheus.yml is the
# Kubernetes variant. The dashboard (deploy/grafana/) reads these jobs.
global:
  # Short, so a test run of a minute has samples enough for rate().
  scrape_interval: 5s
  evaluation_interval: 5s
scrape_configs:
  - job_name: novyra      # \`novyra run\`, all groups in one process
    static_configs: [{targets: ["127.0.0.1:9464"]}]
  - job_name: postgres    # statistics, pg_stat_statements, replication lag
    static_configs: [{targets: ["127.0.0.1:$PG_EXPORTER_PORT"]}]
  - job_name: kafka       # the JMX agents in the brokers' JVMs
    static_configs: [{targets: [$kafka_targets]}]
  - job_name: neo4j       # the JMX agent in Neo4j's JVM
    static_configs: [{targets: ["127.0.0.1:$NEO4J_JMX_PORT"]}]
  - job_name: prometheus
    static_configs: [{targets: ["127.0.0.1:$PROMETHEUS_PORT"]}]
CONF
}

# Debian builds Prometheus without Kubernetes service discovery, so the
# Kubernetes variant (deploy/prometheus/prometheus.yml) cannot be checked
# with this promtool; the one that runs here can.
check() {
  configure
  promtool check config "$T_HOME/prometheus.yml"
}

prom_ready() { curl -fsS "http://127.0.0.1:$PROMETHEUS_PORT/-/ready"; }
# Read whole, then grep: grep -q closing the pipe early fails curl.
exporter_ready() {
  local m; m="$(curl -fsS "http://127.0.0.1:$PG_EXPORTER_PORT/metrics")" && grep -q '^pg_up 1' <<<"$m"
}

start_exporter() {
  if is_running postgres-exporter && exporter_ready; then log "postgres exporter already running"; return 0; fi
  port_busy "$PG_EXPORTER_PORT" && die "port $PG_EXPORTER_PORT is in use by a process this stack did not start"
  log "starting the postgres exporter on 127.0.0.1:$PG_EXPORTER_PORT"
  # The DSN (with its password) goes through the environment, never argv.
  DATA_SOURCE_NAME="postgresql://novyra_monitor:$PG_MONITOR_PASSWORD@127.0.0.1:$PG_PORT/postgres?sslmode=disable" \
    nohup "$T_DIST/usr/bin/prometheus-postgres-exporter" \
      --web.listen-address="127.0.0.1:$PG_EXPORTER_PORT" \
      --extend.query-path="$DEPLOY_DIR/prometheus/postgres-queries.yml" \
      --disable-settings-metrics \
      >>"$STACK_DIR/logs/postgres-exporter.log" 2>&1 </dev/null &
  echo $! >"$(pid_file postgres-exporter)"
  WAIT_PID_NAME=postgres-exporter wait_ready postgres-exporter 30 exporter_ready
}

start_prometheus() {
  if is_running prometheus && prom_ready >/dev/null; then
    kill -HUP "$(cat "$(pid_file prometheus)")"  # picks up a changed config
    log "prometheus already running"; return 0
  fi
  port_busy "$PROMETHEUS_PORT" && die "port $PROMETHEUS_PORT is in use by a process this stack did not start"
  log "starting prometheus on 127.0.0.1:$PROMETHEUS_PORT"
  nohup "$T_DIST/usr/bin/prometheus" --config.file="$T_HOME/prometheus.yml" \
    --storage.tsdb.path="$T_HOME/data" --storage.tsdb.retention.time=7d \
    --web.listen-address="127.0.0.1:$PROMETHEUS_PORT" \
    >>"$STACK_DIR/logs/prometheus.log" 2>&1 </dev/null &
  echo $! >"$(pid_file prometheus)"
  WAIT_PID_NAME=prometheus wait_ready prometheus 60 prom_ready
}

start() {
  install
  configure
  start_exporter
  start_prometheus
}

stop() { stop_pid prometheus; stop_pid postgres-exporter; }

status() {
  if is_running prometheus && prom_ready >/dev/null 2>&1; then echo "prometheus up    http://127.0.0.1:$PROMETHEUS_PORT"; else echo "prometheus down"; fi
  if is_running postgres-exporter && exporter_ready; then echo "pg-exporter up   http://127.0.0.1:$PG_EXPORTER_PORT/metrics"; else echo "pg-exporter down"; fi
}

cmd="${1:-status}"
shift || true
"$cmd" "$@"
