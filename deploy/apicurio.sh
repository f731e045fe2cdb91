#!/usr/bin/env bash
# Apicurio Registry 3.x (Quarkus "all" archive) with its Confluent-compatible
# API at http://127.0.0.1:8081/apis/ccompat/v7. Storage is the local
# PostgreSQL (database `apicurio`), so schema ids survive a restart: a
# registry that forgot its ids would make every stored message undecodable.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
A_DIST="$STACK_DIR/dist/apicurio-$APICURIO_VERSION"

install() {
  [ -f "$A_DIST/.complete" ] && return 0
  local tmp; tmp="$(mktemp -d)"
  log "fetching apicurio-registry-app $APICURIO_VERSION (all, tar.gz) with maven, no transitive deps"
  mvn -q -B dependency:copy -Dartifact="io.apicurio:apicurio-registry-app:$APICURIO_VERSION:tar.gz:all" \
      -Dtransitive=false -DoutputDirectory="$tmp" >&2 || die "maven could not fetch apicurio-registry-app"
  mkdir -p "$A_DIST"
  tar xzf "$tmp"/apicurio-registry-app-*.tar.gz -C "$A_DIST"
  rm -rf "$tmp"
  touch "$A_DIST/.complete"
}

ready() { curl -fsS "http://127.0.0.1:$REGISTRY_PORT/apis/ccompat/v7/subjects" | grep -q '^\['; }

start() {
  install
  mkdir -p "$STACK_DIR/logs" "$STACK_DIR/run"
  if is_running apicurio && ready; then log "apicurio already running"; return 0; fi
  port_busy "$REGISTRY_PORT" && die "port $REGISTRY_PORT is in use by a process this stack did not start"
  log "starting apicurio registry $APICURIO_VERSION"
  local jar; jar="$(ls "$A_DIST"/*-runner.jar | head -n1)"
  local java; java="$(pick_java)"
  # exec, so the pid we record is the JVM's own and `stop` signals the right process.
  (cd "$A_DIST" && exec nohup "$java" -Xms256m -Xmx768m -Djava.awt.headless=true \
    -Dquarkus.http.host=127.0.0.1 -Dquarkus.http.port="$REGISTRY_PORT" \
    -Dquarkus.management.enabled=false \
    -Dapicurio.storage.kind=sql -Dapicurio.storage.sql.kind=postgresql \
    -Dapicurio.datasource.url="jdbc:postgresql://127.0.0.1:$PG_PORT/apicurio" \
    -Dapicurio.datasource.username=apicurio -Dapicurio.datasource.password=apicurio \
    -Dapicurio.rest.deletion.artifact.enabled=true -Dapicurio.rest.deletion.artifact-version.enabled=true \
    -Dapicurio.rest.deletion.group.enabled=true \
    -jar "$jar" >"$STACK_DIR/logs/apicurio.log" 2>&1 </dev/null) &
  echo $! >"$(pid_file apicurio)"
  WAIT_PID_NAME=apicurio wait_ready apicurio 180 ready
}

stop() { stop_pid apicurio; }

status() { if is_running apicurio && ready; then echo "registry  up    http://127.0.0.1:$REGISTRY_PORT/apis/ccompat/v7"; else echo "registry  down"; fi; }

"${1:-status}"
