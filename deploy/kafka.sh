#!/usr/bin/env bash
# Apache Kafka 4.x in KRaft mode (every node broker + controller), run from
# the jars Maven resolves; the log cleaner stays on so compacted topics
# really compact. One node by default; KAFKA_NODES=3 runs a cluster whose
# internal topics keep three copies with two in sync (the pipeline's own
# topics follow: crates/kafka/src/topics.rs). Per node (ports in lib.sh):
#   PLAINTEXT  the dev listener (9092; 9094, 9096); its anonymous principal
#              is a super user, so `make demo` needs no credentials
#   SASL_SSL   (9192; 9194, 9196) SCRAM-SHA-512 or -256, certificate from
#              deploy/tls.sh; every principal there is held to the ACLs
#              `novyra acls` derives from the topic table
#              (deploy/kafka-acls.py applies them)
# Node 1's pid file is run/kafka.pid in either shape, node i's kafka-i.pid.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
K_LIBS="$STACK_DIR/dist/kafka-$KAFKA_VERSION"
# A cluster keeps its data apart from the single node's: their controller
# quorums differ, so neither could start on the other's storage.
if [ "$KAFKA_NODES" = 1 ]; then K_BASE="$STACK_DIR/kafka"; else K_BASE="$STACK_DIR/kafka-cluster"; fi
MODE_FILE="$STACK_DIR/run/kafka.nodes"

install() {
  maven_libs "$DEPLOY_DIR/maven/kafka.pom.xml" "$K_LIBS"
  jmx_agent_opt kafka "$KAFKA_JMX_PORT" >/dev/null
}

nodes() { seq 1 "$KAFKA_NODES"; }
node_home() { if [ "$KAFKA_NODES" = 1 ]; then echo "$K_BASE"; else echo "$K_BASE/node$1"; fi; }
node_pid() { if [ "$1" = 1 ]; then echo kafka; else echo "kafka-$1"; fi; }
plain_port() { echo $((KAFKA_PORT + 2 * ($1 - 1))); }
controller_port() { echo $((KAFKA_CONTROLLER_PORT + 2 * ($1 - 1))); }
secure_port() { echo $((KAFKA_SECURE_PORT + 2 * ($1 - 1))); }
jmx_port() { echo $((KAFKA_JMX_PORT + 2 * ($1 - 1))); }
bootstrap() { local i out=""; for i in $(nodes); do out="${out:+$out,}127.0.0.1:$(plain_port "$i")"; done; echo "$out"; }

kjava() { "$(pick_java)" -cp "$K_LIBS/*" -Dlog4j2.configurationFile="$K_BASE/log4j2.xml" "$@"; }

# Up when this node's listener answers a metadata round trip.
node_ready() { kjava org.apache.kafka.tools.TopicCommand --bootstrap-server "127.0.0.1:$(plain_port "$1")" --list; }
ready() { local i; for i in $(nodes); do node_ready "$i" >/dev/null 2>&1 || return 1; done; }

configure() {
  mkdir -p "$K_BASE" "$STACK_DIR/logs" "$STACK_DIR/run"
  bash "$DEPLOY_DIR/tls.sh" ensure
  local tls="$STACK_DIR/tls" i voters="" rf=1 min_isr=1
  for i in $(nodes); do voters="${voters:+$voters,}$i@127.0.0.1:$(controller_port "$i")"; done
  if [ "$KAFKA_NODES" -ge 3 ]; then rf=3; min_isr=2; fi
  cat >"$K_BASE/log4j2.xml" <<CONF
<Configuration status="warn">
  <Appenders><Console name="out" target="SYSTEM_ERR"><PatternLayout pattern="[%d] %p %m (%c)%n"/></Console></Appenders>
  <Loggers>
    <Logger name="kafka.log.LogCleaner" level="info"/>
    <Root level="warn"><AppenderRef ref="out"/></Root>
  </Loggers>
</Configuration>
CONF
  [ -f "$K_BASE/cluster.id" ] || kjava kafka.tools.StorageTool random-uuid >"$K_BASE/cluster.id"
  for i in $(nodes); do
    local home; home="$(node_home "$i")"
    mkdir -p "$home/data"
    cat >"$home/server.properties" <<CONF
process.roles=broker,controller
node.id=$i
controller.quorum.voters=$voters
listeners=PLAINTEXT://127.0.0.1:$(plain_port "$i"),CONTROLLER://127.0.0.1:$(controller_port "$i"),SASL_SSL://127.0.0.1:$(secure_port "$i")
advertised.listeners=PLAINTEXT://127.0.0.1:$(plain_port "$i"),SASL_SSL://127.0.0.1:$(secure_port "$i")
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=false
super.users=User:ANONYMOUS
sasl.enabled.mechanisms=SCRAM-SHA-512,SCRAM-SHA-256
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.ssl.keystore.type=PEM
listener.name.sasl_ssl.ssl.keystore.location=$tls/kafka-keystore.pem
log.dirs=$home/data
num.partitions=3
auto.create.topics.enable=false
default.replication.factor=$rf
min.insync.replicas=$min_isr
offsets.topic.replication.factor=$rf
offsets.topic.num.partitions=12
transaction.state.log.replication.factor=$rf
transaction.state.log.min.isr=$min_isr
share.coordinator.state.topic.replication.factor=$rf
share.coordinator.state.topic.min.isr=$min_isr
group.initial.rebalance.delay.ms=0
log.cleaner.enable=true
log.cleaner.backoff.ms=2000
log.retention.check.interval.ms=10000
CONF
    if [ ! -f "$home/data/meta.properties" ]; then
      log "formatting kafka storage of node $i"
      kjava kafka.tools.StorageTool format -t "$(cat "$K_BASE/cluster.id")" -c "$home/server.properties" >&2
    fi
  done
}

start_node() {
  local i="$1" home name agent
  home="$(node_home "$i")"; name="$(node_pid "$i")"
  if is_running "$name"; then return 0; fi
  port_busy "$(plain_port "$i")" && die "port $(plain_port "$i") is in use by a process this stack did not start"
  agent="$(jmx_agent_opt kafka "$(jmx_port "$i")")"
  log "starting kafka $KAFKA_VERSION node $i of $KAFKA_NODES on 127.0.0.1:$(plain_port "$i")"
  KAFKA_HEAP="${KAFKA_HEAP:--Xms512m -Xmx1g}"
  # shellcheck disable=SC2086
  nohup "$(pick_java)" $KAFKA_HEAP -XX:+UseG1GC -Djava.awt.headless=true "$agent" \
    -Dlog4j2.configurationFile="$K_BASE/log4j2.xml" -cp "$K_LIBS/*" \
    kafka.Kafka "$home/server.properties" >>"$STACK_DIR/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$(pid_file "$name")"
}

# Starts every node that is not running (after a SIGKILL, only that one),
# then waits until each answers.
start() {
  install
  if is_running kafka && [ "$(cat "$MODE_FILE" 2>/dev/null || echo 1)" != "$KAFKA_NODES" ]; then
    die "kafka runs with $(cat "$MODE_FILE" 2>/dev/null || echo 1) node(s), not $KAFKA_NODES: bash deploy/kafka.sh stop first (with the same KAFKA_NODES)"
  fi
  configure
  if is_running kafka && ready; then
    port_busy "$KAFKA_JMX_PORT" || log "kafka runs without its JMX agent (started by an older stack.sh); restart it for telemetry"
    local all=1 i; for i in $(nodes); do is_running "$(node_pid "$i")" || all=0; done
    if [ "$all" = 1 ]; then log "kafka already running ($KAFKA_NODES node(s))"; return 0; fi
  fi
  echo "$KAFKA_NODES" >"$MODE_FILE"
  local i
  # All at once: a node of a cluster waits for a quorum of the others.
  for i in $(nodes); do start_node "$i"; done
  for i in $(nodes); do WAIT_PID_NAME="$(node_pid "$i")" wait_ready "kafka node $i" 180 node_ready "$i"; done
}

stop() {
  local n="$KAFKA_NODES" i
  [ -f "$MODE_FILE" ] && n="$(cat "$MODE_FILE")"
  # TERM to every node first: a node stopped after the others would wait
  # for a controller quorum that is gone.
  for i in $(seq 1 "$n"); do
    is_running "$(node_pid "$i")" && kill -TERM "$(cat "$(pid_file "$(node_pid "$i")")")" 2>/dev/null
  done
  for i in $(seq "$n" -1 1); do stop_pid "$(node_pid "$i")"; done
  rm -f "$MODE_FILE"
}

status() {
  local i
  for i in $(nodes); do
    if is_running "$(node_pid "$i")"; then
      echo "kafka     up    127.0.0.1:$(plain_port "$i") (SASL_SSL :$(secure_port "$i"))$([ "$KAFKA_NODES" = 1 ] || echo " node $i of $KAFKA_NODES")"
    else
      echo "kafka     down$([ "$KAFKA_NODES" = 1 ] || echo "  node $i of $KAFKA_NODES")"
    fi
  done
}

# Kafka's own command-line tools, e.g.
#   deploy/kafka.sh groups --describe --group novyra-ingest
#   deploy/kafka.sh tool org.apache.kafka.tools.GetOffsetShell --topic novyra.attempts
tool() { install >/dev/null; kjava "$@"; }
groups() { tool org.apache.kafka.tools.consumer.group.ConsumerGroupCommand --bootstrap-server "$(bootstrap)" "$@"; }

cmd="${1:-status}"
shift || true
"$cmd" "$@"
