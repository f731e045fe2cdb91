# Shared helpers for the local-stack scripts. Sourced, never run.
# Everything the stack writes lives under $STACK_DIR (git-ignored); downloads
# are cached by Maven in ~/.m2 and by apt, so a second `up` fetches nothing.
set -euo pipefail

DEPLOY_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(dirname "$DEPLOY_DIR")"
STACK_DIR="${NOVYRA_STACK_DIR:-$REPO_DIR/.stack}"

KAFKA_VERSION="${KAFKA_VERSION:-4.1.1}"
NEO4J_VERSION="${NEO4J_VERSION:-5.26.0}"
APICURIO_VERSION="${APICURIO_VERSION:-3.0.9}"
JMX_AGENT_VERSION="${JMX_AGENT_VERSION:-1.0.1}"
# The Go module version of github.com/jaegertracing/jaeger (its v2 binary,
# cmd/jaeger); deploy/jaeger/go.mod pins it and every dependency.
JAEGER_VERSION="1.76.0"

PG_PORT=5432
PG_REPLICA_PORT=5433
# PgBouncer (transaction pooling) in front of PG_PORT; see deploy/pgbouncer.sh.
PGBOUNCER_PORT=6432
# Kafka: KAFKA_NODES=3 runs a three-node cluster; node i listens on these
# plus 2*(i-1) (PLAINTEXT 9092, 9094, 9096; controllers 9093, 9095, 9097;
# SASL_SSL 9192, 9194, 9196; JMX agents 9404, 9406, 9408). The ports may be
# moved (a test runs a cluster of its own beside the stack's broker).
KAFKA_NODES="${KAFKA_NODES:-1}"
KAFKA_PORT="${KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-9093}"
KAFKA_SECURE_PORT="${KAFKA_SECURE_PORT:-9192}"
NEO4J_BOLT_PORT=7687
NEO4J_HTTP_PORT=7474
REGISTRY_PORT=8081
REGISTRY_TLS_PORT=8444
# Telemetry (FULL=1): Prometheus, the Postgres exporter, and the JMX agents
# inside the Kafka and Neo4j JVMs. deploy/prometheus/local.yml scrapes these.
PROMETHEUS_PORT=9090
PG_EXPORTER_PORT=9187
KAFKA_JMX_PORT="${KAFKA_JMX_PORT:-9404}"
NEO4J_JMX_PORT=9405
# Traces (FULL=1): Jaeger takes OTLP on 4317 (gRPC) and 4318 (HTTP) and
# answers queries and serves its UI on 16686; see deploy/jaeger.sh.
JAEGER_OTLP_PORT=4317
JAEGER_OTLP_HTTP_PORT=4318
JAEGER_QUERY_PORT=16686
JAEGER_QUERY_GRPC_PORT=16685
JAEGER_HEALTH_PORT=13133
JAEGER_METRICS_PORT=8888

# Dev-only credentials of the local stack (documented in README.md).
PG_SUPERUSER_PASSWORD="${PG_SUPERUSER_PASSWORD:-postgres}"
PG_REPLICATOR_PASSWORD="${PG_REPLICATOR_PASSWORD:-novyra_replicator}"
NEO4J_PASSWORD="${NEO4J_PASSWORD:-novyra-dev-password}"
REGISTRY_USER="${REGISTRY_USER:-novyra}"
REGISTRY_PASSWORD="${REGISTRY_PASSWORD:-novyra-registry-dev-password}"

log() { printf '[stack] %s\n' "$*" >&2; }
die() { printf '[stack] error: %s\n' "$*" >&2; exit 1; }

# A JDK 17 or 21: Neo4j 5.26 refuses newer ones, so never pick up Java 25.
pick_java() {
  local cand
  for cand in "${NOVYRA_JAVA_HOME:-}" "${JAVA_HOME:-}" /usr/lib/jvm/java-21-openjdk-amd64 /usr/lib/jvm/java-17-openjdk-amd64 /usr/lib/jvm/temurin-21-jdk-amd64 /usr/lib/jvm/temurin-17-jdk-amd64; do
    [ -n "$cand" ] && [ -x "$cand/bin/java" ] || continue
    if "$cand/bin/java" -version 2>&1 | grep -qE 'version "(17|21)\.'; then
      echo "$cand/bin/java"; return 0
    fi
  done
  if command -v java >/dev/null && java -version 2>&1 | grep -qE 'version "(17|21)\.'; then
    command -v java; return 0
  fi
  die "no JDK 17 or 21 found (set NOVYRA_JAVA_HOME)"
}

# Fetch the runtime classpath of one artifact into $2 via Maven's own cache.
maven_libs() {
  local pom="$1" dest="$2" marker="$2/.complete" lock
  [ -f "$marker" ] && return 0
  mkdir -p "$dest"
  # Two scripts may want the same artifacts at once (stack.sh starts
  # servers in parallel): one resolves, the other waits for it.
  exec {lock}>"$dest.lock"
  flock "$lock"
  if [ ! -f "$marker" ]; then
    log "resolving $(basename "$pom") with maven (cached in ~/.m2)"
    mvn -q -B -f "$pom" dependency:copy-dependencies -DoutputDirectory="$dest" \
        -DincludeScope=runtime -Dkafka.version="$KAFKA_VERSION" -Dneo4j.version="$NEO4J_VERSION" \
        -Djmx.agent.version="$JMX_AGENT_VERSION" >&2 \
      || die "maven could not resolve $(basename "$pom")"
    touch "$marker"
  fi
  exec {lock}>&-
}

pid_file() { echo "$STACK_DIR/run/$1.pid"; }

# True when the pid file names a live process that we started.
is_running() {
  local pf; pf="$(pid_file "$1")"
  [ -f "$pf" ] && kill -0 "$(cat "$pf")" 2>/dev/null
}

# Stop only the process recorded in our pid file: TERM, wait, then KILL.
stop_pid() {
  local name="$1" pf pid i
  pf="$(pid_file "$name")"
  if ! is_running "$name"; then rm -f "$pf"; log "$name not running"; return 0; fi
  pid="$(cat "$pf")"
  log "stopping $name (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
  kill -0 "$pid" 2>/dev/null && { log "$name did not stop in 60s, killing"; kill -KILL "$pid" 2>/dev/null || true; }
  rm -f "$pf"
}

# Poll a readiness command until it succeeds or the timeout passes.
wait_ready() {
  local name="$1" timeout="$2"; shift 2
  local i
  for i in $(seq 1 "$timeout"); do
    if "$@" >/dev/null 2>&1; then log "$name ready (${i}s)"; return 0; fi
    if [ -n "${WAIT_PID_NAME:-}" ] && ! is_running "$WAIT_PID_NAME"; then
      die "$name exited during start-up; see $STACK_DIR/logs/$WAIT_PID_NAME.log"
    fi
    sleep 1
  done
  die "$name not ready after ${timeout}s; see $STACK_DIR/logs"
}

# The JVM option that loads the JMX Prometheus agent: it serves the JVM's
# and the server's MBeans on 127.0.0.1:$2/metrics, filtered by the rules
# in deploy/prometheus/jmx-$1.yml. Cheap, so it is always on.
jmx_agent_opt() {
  local dir="$STACK_DIR/dist/jmx-agent-$JMX_AGENT_VERSION"
  maven_libs "$DEPLOY_DIR/maven/jmx-agent.pom.xml" "$dir"
  echo "-javaagent:$dir/jmx_prometheus_javaagent-$JMX_AGENT_VERSION.jar=127.0.0.1:$2:$DEPLOY_DIR/prometheus/jmx-$1.yml"
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
