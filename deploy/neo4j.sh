#!/usr/bin/env bash
# Neo4j 5.26 Community from the jars Maven resolves; Bolt on 127.0.0.1:7687,
# HTTP on 127.0.0.1:7474, auth on with a dev password.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
N_HOME="$STACK_DIR/neo4j"
N_LIBS="$STACK_DIR/dist/neo4j-$NEO4J_VERSION"

install() { maven_libs "$DEPLOY_DIR/maven/neo4j.pom.xml" "$N_LIBS"; }

ready() {
  curl -fsS -u "neo4j:$NEO4J_PASSWORD" -H 'Content-Type: application/json' \
    -d '{"statements":[{"statement":"RETURN 1 AS ok"}]}' \
    "http://127.0.0.1:$NEO4J_HTTP_PORT/db/neo4j/tx/commit" | grep -q '"row":\[1\]'
}

configure() {
  mkdir -p "$N_HOME/conf" "$N_HOME/data" "$N_HOME/logs" "$N_HOME/plugins" "$N_HOME/import" "$N_HOME/run" "$STACK_DIR/logs" "$STACK_DIR/run"
  # Bolt TLS with the stack's CA (deploy/tls.sh): OPTIONAL, so bolt:// (the
  # demo) and bolt+s:// (the secure tests) share the port.
  bash "$DEPLOY_DIR/tls.sh" ensure
  mkdir -p "$N_HOME/certificates/bolt"
  cp "$STACK_DIR/tls/server.pk8" "$N_HOME/certificates/bolt/private.key"
  cp "$STACK_DIR/tls/server.crt" "$N_HOME/certificates/bolt/public.crt"
  chmod 600 "$N_HOME/certificates/bolt/private.key"
  cat >"$N_HOME/conf/neo4j.conf" <<CONF
server.default_listen_address=127.0.0.1
server.default_advertised_address=127.0.0.1
server.bolt.enabled=true
server.bolt.listen_address=127.0.0.1:$NEO4J_BOLT_PORT
server.http.enabled=true
server.http.listen_address=127.0.0.1:$NEO4J_HTTP_PORT
server.https.enabled=false
server.directories.data=$N_HOME/data
server.directories.logs=$N_HOME/logs
server.directories.plugins=$N_HOME/plugins
server.directories.import=$N_HOME/import
server.directories.run=$N_HOME/run
server.memory.pagecache.size=512m
dbms.security.auth_enabled=true
db.tx_log.rotation.retention_policy=2 files
dbms.usage_report.enabled=false
server.bolt.tls_level=OPTIONAL
dbms.ssl.policy.bolt.enabled=true
dbms.ssl.policy.bolt.base_directory=$N_HOME/certificates/bolt
dbms.ssl.policy.bolt.private_key=private.key
dbms.ssl.policy.bolt.public_certificate=public.crt
dbms.ssl.policy.bolt.client_auth=NONE
CONF
  if [ ! -f "$N_HOME/data/dbms/auth.ini" ]; then
    log "setting neo4j initial password"
    NEO4J_HOME="$N_HOME" NEO4J_CONF="$N_HOME/conf" "$(pick_java)" -cp "$N_LIBS/*" \
      org.neo4j.cli.AdminTool dbms set-initial-password "$NEO4J_PASSWORD" >&2
  fi
}

start() {
  install
  configure
  if is_running neo4j && ready; then
    port_busy "$NEO4J_JMX_PORT" || log "neo4j runs without its JMX agent (started by an older stack.sh); restart it for telemetry"
    log "neo4j already running"; return 0
  fi
  port_busy "$NEO4J_BOLT_PORT" && die "port $NEO4J_BOLT_PORT is in use by a process this stack did not start"
  local agent; agent="$(jmx_agent_opt neo4j "$NEO4J_JMX_PORT")"
  log "starting neo4j $NEO4J_VERSION"
  NEO4J_HEAP="${NEO4J_HEAP:--Xms512m -Xmx1g}"
  # shellcheck disable=SC2086
  NEO4J_HOME="$N_HOME" NEO4J_CONF="$N_HOME/conf" nohup "$(pick_java)" $NEO4J_HEAP -XX:+UseG1GC \
    -Djava.awt.headless=true "$agent" -cp "$N_LIBS/*" \
    org.neo4j.server.CommunityEntryPoint --home-dir="$N_HOME" --config-dir="$N_HOME/conf" \
    >"$STACK_DIR/logs/neo4j.log" 2>&1 </dev/null &
  echo $! >"$(pid_file neo4j)"
  WAIT_PID_NAME=neo4j wait_ready neo4j 180 ready
}

stop() { stop_pid neo4j; }

status() { if is_running neo4j && ready; then echo "neo4j     up    bolt://127.0.0.1:$NEO4J_BOLT_PORT"; else echo "neo4j     down"; fi; }

"${1:-status}"
