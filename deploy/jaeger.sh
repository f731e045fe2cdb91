#!/usr/bin/env bash
# Jaeger (FULL=1): the trace collector and query service of the local
# stack. It takes OTLP on 127.0.0.1:4317 (gRPC) and :4318 (HTTP), keeps
# traces in memory, and serves its query API and UI on 127.0.0.1:16686.
# `novyra` exports to it when OTEL_EXPORTER_OTLP_ENDPOINT is set (the tests
# that look at traces set it; `make demo` does not).
#
# Jaeger ships no Debian package or jar, and its Go module cannot be
# `go install`ed (its go.mod has a replace directive), so it is built as a
# tool of a small module of ours, deploy/jaeger/go.mod, whose go.sum pins
# every dependency. The build (several minutes, once) and the module cache
# are reused; the binary lives under .stack/dist.
#
#   deploy/jaeger.sh install|start|stop|status
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
J_DIST="$STACK_DIR/dist/jaeger-$JAEGER_VERSION"
J_HOME="$STACK_DIR/jaeger"

jaeger_bin() { echo "$J_DIST/jaeger"; }

install() {
  [ -x "$(jaeger_bin)" ] && return 0
  command -v go >/dev/null || die "Go is needed to build Jaeger (the machine's go toolchain)"
  grep -q "github.com/jaegertracing/jaeger v$JAEGER_VERSION " "$DEPLOY_DIR/jaeger/go.mod" ||
    die "deploy/jaeger/go.mod does not pin jaeger v$JAEGER_VERSION"
  log "building jaeger v$JAEGER_VERSION from its Go module (several minutes, once)"
  mkdir -p "$J_DIST"
  local started=$SECONDS
  # Into a temporary name, then renamed: an interrupted build leaves no
  # binary that a later run would take for a finished one.
  (cd "$DEPLOY_DIR/jaeger" &&
    GOFLAGS=-mod=mod go build -trimpath -ldflags="-s -w" -o "$J_DIST/jaeger.tmp" \
      github.com/jaegertracing/jaeger/cmd/jaeger >&2) || die "building jaeger v$JAEGER_VERSION failed"
  mv "$J_DIST/jaeger.tmp" "$(jaeger_bin)"
  log "jaeger built in $((SECONDS - started))s"
}

# Every listener on loopback: the collector's defaults bind all interfaces.
configure() {
  mkdir -p "$J_HOME" "$STACK_DIR/logs" "$STACK_DIR/run"
  cat >"$J_HOME/config.yaml" <<CONF
# Written by deploy/jaeger.sh. Jaeger v2 is an OpenTelemetry Collector:
# an OTLP receiver, a batch processor, and in-memory trace storage that the
# query extension reads.
service:
  extensions: [jaeger_storage, jaeger_query, healthcheckv2]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    resource:
      service.name: jaeger
    metrics:
      level: basic
      readers:
        - pull:
            exporter:
              prometheus:
                host: 127.0.0.1
                port: $JAEGER_METRICS_PORT
    logs:
      level: info

extensions:
  healthcheckv2:
    use_v2: true
    http:
      endpoint: 127.0.0.1:$JAEGER_HEALTH_PORT
  jaeger_query:
    storage:
      traces: memstore
    http:
      endpoint: 127.0.0.1:$JAEGER_QUERY_PORT
    grpc:
      endpoint: 127.0.0.1:$JAEGER_QUERY_GRPC_PORT
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: ${JAEGER_MAX_TRACES:-100000}

receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:$JAEGER_OTLP_PORT
      http:
        endpoint: 127.0.0.1:$JAEGER_OTLP_HTTP_PORT

processors:
  batch:

exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
CONF
}

# Ready when the query API answers and the OTLP port takes connections.
ready() {
  curl -fsS "http://127.0.0.1:$JAEGER_QUERY_PORT/api/services" >/dev/null && port_busy "$JAEGER_OTLP_PORT"
}

start() {
  install
  configure
  if is_running jaeger && ready; then log "jaeger already running"; return 0; fi
  local p
  for p in "$JAEGER_OTLP_PORT" "$JAEGER_OTLP_HTTP_PORT" "$JAEGER_QUERY_PORT"; do
    port_busy "$p" && die "port $p is in use by a process this stack did not start"
  done
  log "starting jaeger v$JAEGER_VERSION (OTLP 127.0.0.1:$JAEGER_OTLP_PORT, query 127.0.0.1:$JAEGER_QUERY_PORT)"
  nohup "$(jaeger_bin)" --config "$J_HOME/config.yaml" >>"$STACK_DIR/logs/jaeger.log" 2>&1 </dev/null &
  echo $! >"$(pid_file jaeger)"
  WAIT_PID_NAME=jaeger wait_ready jaeger 60 ready
}

stop() { stop_pid jaeger; }

status() {
  if is_running jaeger && ready 2>/dev/null; then
    echo "jaeger up        otlp 127.0.0.1:$JAEGER_OTLP_PORT  ui http://127.0.0.1:$JAEGER_QUERY_PORT"
  else
    echo "jaeger down"
  fi
}

cmd="${1:-status}"
shift || true
"$cmd" "$@"
