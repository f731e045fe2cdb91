#!/usr/bin/env bash
# Apache Kafka 4.x, single KRaft node (broker + controller), run from the
# jars Maven resolves; the log cleaner stays on so compacted topics really
# compact. Two client listeners:
#   127.0.0.1:9092  PLAINTEXT, the dev default; its anonymous principal is
#                   a super user, so `make demo` needs no credentials
#   127.0.0.1:9094  SASL_SSL (SCRAM-SHA-512 or -256), certificate from
#                   deploy/tls.sh; every principal there is held to the ACLs
#                   `novyra acls` derives from the topic table
#                   (deploy/kafka-acls.py applies them)
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
K_HOME="$STACK_DIR/kafka"
K_LIBS="$STACK_DIR/dist/kafka-$KAFKA_VERSION"

install() { maven_libs "$DEPLOY_DIR/maven/kafka.pom.xml" "$K_LIBS"; }

kjava() { "$(pick_java)" -cp "$K_LIBS/*" -Dlog4j2.configurationFile="$K_HOME/log4j2.xml" "$@"; }

ready() { kjava org.apache.kafka.tools.TopicCommand --bootstrap-server "127.0.0.1:$KAFKA_PORT" --list; }

configure() {
  mkdir -p "$K_HOME/data" "$STACK_DIR/logs" "$STACK_DIR/run"
  bash "$DEPLOY_DIR/tls.sh" ensure
  local tls="$STACK_DIR/tls"
  cat >"$K_HOME/server.properties" <<CONF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT,SASL_SSL://127.0.0.1:$KAFKA_SECURE_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,SASL_SSL://127.0.0.1:$KAFKA_SECURE_PORT
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
log.dirs=$K_HOME/data
num.partitions=3
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=12
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
log.cleaner.enable=true
log.cleaner.backoff.ms=2000
log.retention.check.interval.ms=10000
CONF
  cat >"$K_HOME/log4j2.xml" <<CONF
<Configuration status="warn">
  <Appenders><Console name="out" target="SYSTEM_ERR"><PatternLayout pattern="[%d] %p %m (%c)%n"/></Console></Appenders>
  <Loggers>
    <Logger name="kafka.log.LogCleaner" level="info"/>
    <Root level="warn"><AppenderRef ref="out"/></Root>
  </Loggers>
</Configuration>
CONF
  if [ ! -f "$K_HOME/data/meta.properties" ]; then
    [ -f "$K_HOME/cluster.id" ] || kjava kafka.tools.StorageTool random-uuid >"$K_HOME/cluster.id"
    log "formatting kafka storage"
    kjava kafka.tools.StorageTool format -t "$(cat "$K_HOME/cluster.id")" -c "$K_HOME/server.properties" >&2
  fi
}

start() {
  install
  configure
  if is_running kafka && ready; then
    port_busy "$KAFKA_JMX_PORT" || log "kafka runs without its JMX agent (started by an older stack.sh); restart it for telemetry"
    log "kafka already running"; return 0
  fi
  port_busy "$KAFKA_PORT" && die "port $KAFKA_PORT is in use by a process this stack did not start"
  local agent; agent="$(jmx_agent_opt kafka "$KAFKA_JMX_PORT")"
  log "starting kafka $KAFKA_VERSION"
  KAFKA_HEAP="${KAFKA_HEAP:--Xms512m -Xmx1g}"
  # shellcheck disable=SC2086
  nohup "$(pick_java)" $KAFKA_HEAP -XX:+UseG1GC -Djava.awt.headless=true "$agent" \
    -Dlog4j2.configurationFile="$K_HOME/log4j2.xml" -cp "$K_LIBS/*" \
    kafka.Kafka "$K_HOME/server.properties" >"$STACK_DIR/logs/kafka.log" 2>&1 </dev/null &
  echo $! >"$(pid_file kafka)"
  WAIT_PID_NAME=kafka wait_ready kafka 120 ready
}

stop() { stop_pid kafka; }

status() { if is_running kafka; then echo "kafka     up    127.0.0.1:$KAFKA_PORT (SASL_SSL :$KAFKA_SECURE_PORT)"; else echo "kafka     down"; fi; }

# Kafka's own command-line tools, e.g.
#   deploy/kafka.sh groups --describe --group novyra-ingest
#   deploy/kafka.sh tool org.apache.kafka.tools.GetOffsetShell --topic novyra.attempts
tool() { install >/dev/null; kjava "$@"; }
groups() { tool org.apache.kafka.tools.consumer.group.ConsumerGroupCommand --bootstrap-server "127.0.0.1:$KAFKA_PORT" "$@"; }

cmd="${1:-status}"
shift || true
"$cmd" "$@"
