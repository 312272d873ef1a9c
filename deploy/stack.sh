#!/usr/bin/env bash
# The local stack without Docker: one Kafka broker (KRaft, broker+controller in one JVM, from the
# Maven jars in .cache/kafka-lib) and Redis. Idempotent and verbose.
#   bash deploy/stack.sh up       start what is not running, wait until healthy, create topics
#   bash deploy/stack.sh down     stop Kafka (SIGTERM, then SIGKILL after 30 s), and Redis if we started it
#   bash deploy/stack.sh status   say what runs
#   bash deploy/stack.sh reset    down, then delete .stack (broker data and logs)
# Ports: IMASTREAM_KAFKA_PORT (19092) and IMASTREAM_KAFKA_CONTROLLER_PORT (19093) on 127.0.0.1;
# Redis on 127.0.0.1:6379 (an existing one is used as it is). State and logs live in .stack/.
# IMASTREAM_KAFKA_LINE=4 runs the 4.x broker (jars from `IMASTREAM_KAFKA_LINE=4 deploy/install.sh`)
# instead of 3.9, with its own data directory (.stack/kafka4); `down` first when switching.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

STACK=$ROOT/.stack
if [ "${IMASTREAM_KAFKA_LINE:-3}" = 4 ]; then
  KAFKA_LIB=$ROOT/.cache/kafka4-lib
  KAFKA_DIR=$STACK/kafka4
  LOG_CONFIG="-Dlog4j2.configurationFile=$ROOT/deploy/kafka/log4j2.properties"
else
  KAFKA_LIB=$ROOT/.cache/kafka-lib
  KAFKA_DIR=$STACK/kafka
  LOG_CONFIG="-Dlog4j.configuration=file:$ROOT/deploy/kafka/log4j.properties"
fi
KAFKA_PID=$STACK/kafka.pid
KAFKA_LOG=$STACK/kafka.log
KAFKA_PORT=${IMASTREAM_KAFKA_PORT:-19092}
CONTROLLER_PORT=${IMASTREAM_KAFKA_CONTROLLER_PORT:-19093}
REDIS_PORT=6379
REDIS_OURS=$STACK/redis.ours
KAFKA_STOP_TIMEOUT_S=30

JVM_OPTS=(-Xms256m -Xmx512m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:TieredStopAtLevel=1
  -Djava.awt.headless=true "$LOG_CONFIG")

say() { printf 'stack: %s\n' "$*"; }
now_ms() { date +%s%3N; }

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

kafka_java() { java "${JVM_OPTS[@]}" -cp "$KAFKA_LIB/*" "$@"; }

render_properties() {
  mkdir -p "$KAFKA_DIR/data"
  sed -e "s|@LOG_DIRS@|$KAFKA_DIR/data|" -e "s|@BROKER_PORT@|$KAFKA_PORT|g" \
    -e "s|@CONTROLLER_PORT@|$CONTROLLER_PORT|g" deploy/kafka/server.properties.template >"$KAFKA_DIR/server.properties"
}

format_storage() {
  local id_file=$KAFKA_DIR/cluster-id
  if [ ! -f "$id_file" ]; then
    # 16 random bytes in base64url: what Uuid.fromString accepts (STACK.md §2.2).
    node -e 'process.stdout.write(require("crypto").randomBytes(16).toString("base64url"))' >"$id_file"
  fi
  say "kafka: formatting storage (cluster id $(cat "$id_file"), --ignore-formatted)"
  kafka_java kafka.tools.StorageTool format -t "$(cat "$id_file")" -c "$KAFKA_DIR/server.properties" \
    --ignore-formatted >>"$KAFKA_LOG" 2>&1
}

start_kafka() {
  if pid_alive "$KAFKA_PID"; then
    say "kafka: already running (pid $(cat "$KAFKA_PID"))"
    return
  fi
  if [ ! -f "$KAFKA_LIB/.pom.sha256" ]; then
    say "kafka: no jars in $KAFKA_LIB; run bash deploy/install.sh first" >&2
    exit 1
  fi
  mkdir -p "$STACK"
  render_properties
  format_storage
  say "kafka: starting $(ls "$KAFKA_LIB" | grep -o '^kafka_2.13-.*\.jar' | sed 's/\.jar$//') on 127.0.0.1:$KAFKA_PORT (log $KAFKA_LOG)"
  nohup java "${JVM_OPTS[@]}" -cp "$KAFKA_LIB/*" kafka.Kafka "$KAFKA_DIR/server.properties" >>"$KAFKA_LOG" 2>&1 &
  echo $! >"$KAFKA_PID"
  disown
}

redis_ping() { [ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ]; }

start_redis() {
  if redis_ping; then
    say "redis: using the one answering on 127.0.0.1:$REDIS_PORT"
    return
  fi
  mkdir -p "$STACK/redis"
  say "redis: starting redis-server on 127.0.0.1:$REDIS_PORT (no persistence, log $STACK/redis.log)"
  redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no \
    --dir "$STACK/redis" --pidfile "$STACK/redis.pid" --logfile "$STACK/redis.log"
  touch "$REDIS_OURS"
  for _ in $(seq 1 50); do
    redis_ping && return
    sleep 0.2
  done
  say "redis: did not answer within 10 s; see $STACK/redis.log" >&2
  exit 1
}

up() {
  local started
  started=$(now_ms)
  start_redis
  start_kafka
  say "kafka: waiting for the cluster (admin.describeCluster), then creating topics"
  if ! node --import tsx deploy/wait-kafka.ts --kafka-brokers "127.0.0.1:$KAFKA_PORT" --timeout-s 120 \
    --pid "$(cat "$KAFKA_PID")"; then
    say "kafka: not healthy; last lines of $KAFKA_LOG:" >&2
    tail -n 30 "$KAFKA_LOG" >&2 || true
    exit 1
  fi
  say "up in $(($(now_ms) - started)) ms"
}

stop_kafka() {
  if ! pid_alive "$KAFKA_PID"; then
    say "kafka: not running"
    rm -f "$KAFKA_PID"
    return
  fi
  local pid
  pid=$(cat "$KAFKA_PID")
  say "kafka: SIGTERM to pid $pid (controlled shutdown)"
  kill -TERM "$pid"
  for _ in $(seq 1 $((KAFKA_STOP_TIMEOUT_S * 5))); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.2
  done
  if kill -0 "$pid" 2>/dev/null; then
    say "kafka: still running after ${KAFKA_STOP_TIMEOUT_S} s, SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$KAFKA_PID"
  say "kafka: stopped"
}

stop_redis() {
  if [ ! -f "$REDIS_OURS" ]; then
    say "redis: not started by us, left running"
    return
  fi
  say "redis: stopping the one we started"
  redis-cli -h 127.0.0.1 -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
  rm -f "$REDIS_OURS"
}

down() {
  stop_kafka
  stop_redis
}

status() {
  if pid_alive "$KAFKA_PID"; then
    say "kafka: running (pid $(cat "$KAFKA_PID"), 127.0.0.1:$KAFKA_PORT)"
  else
    say "kafka: not running"
  fi
  if redis_ping; then
    say "redis: answering on 127.0.0.1:$REDIS_PORT ($([ -f "$REDIS_OURS" ] && echo 'started by us' || echo 'not ours'))"
  else
    say "redis: not answering on 127.0.0.1:$REDIS_PORT"
  fi
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  reset)
    down
    say "deleting $STACK"
    rm -rf "$STACK"
    ;;
  *)
    echo "usage: $0 up|down|status|reset" >&2
    exit 2
    ;;
esac
