#!/usr/bin/env bash
# Installs what the tests and the local stack need, and only what is missing; safe to re-run.
#   - Debian packages (Redis, swtpm, tpm2-tools, evmctl), `apt-get update` only if one is missing;
#   - node_modules via `npm ci` when absent or older than package-lock.json;
#   - the Kafka broker's jars from Maven Central into .cache/kafka-lib (deploy/kafka/pom.xml, the
#     3.9 line); with IMASTREAM_KAFKA_LINE=4, the 4.x line into .cache/kafka4-lib (pom-4.x.xml).
# Needs Node >= 20.19, a JDK >= 17 and Maven (present on our machines; a JDK and Maven are
# installed from Debian when missing, Node is not: Debian 12's nodejs is too old).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'install: %s\n' "$*"; }

APT_PACKAGES=(redis-server redis-tools swtpm swtpm-tools tpm2-tools libtss2-tcti-swtpm0 ima-evm-utils xxd)
command -v java >/dev/null 2>&1 || APT_PACKAGES+=(openjdk-17-jdk-headless)
command -v mvn >/dev/null 2>&1 || APT_PACKAGES+=(maven)

install_apt() {
  local missing=()
  for pkg in "${APT_PACKAGES[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  if [ ${#missing[@]} -eq 0 ]; then
    say "apt: all ${#APT_PACKAGES[@]} packages present"
    return
  fi
  say "apt: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

check_node() {
  if ! command -v node >/dev/null 2>&1; then
    say "node not found: install Node.js >= 20.19" >&2
    exit 1
  fi
  if ! node -e 'const [a,b]=process.versions.node.split(".").map(Number);process.exit(a>20||(a===20&&b>=19)?0:1)'; then
    say "node $(node -v) is too old: need >= 20.19" >&2
    exit 1
  fi
}

install_npm() {
  local marker=node_modules/.package-lock.json
  if [ -L node_modules ]; then
    # npm ci would empty the directory the link points to (another checkout's modules).
    say "npm: node_modules is a symlink; not touching it"
    return
  fi
  if [ -f "$marker" ] && [ ! package-lock.json -nt "$marker" ]; then
    say "npm: node_modules up to date"
    return
  fi
  say "npm: npm ci (node_modules missing or older than package-lock.json)"
  npm ci --no-audit --no-fund --loglevel=error
}

if [ "${IMASTREAM_KAFKA_LINE:-3}" = 4 ]; then
  KAFKA_LIB=.cache/kafka4-lib KAFKA_POM=pom-4.x.xml
else
  KAFKA_LIB=.cache/kafka-lib KAFKA_POM=pom.xml
fi

install_kafka_jars() {
  local stamp="$KAFKA_LIB/.pom.sha256" want
  want=$(sha256sum "deploy/kafka/$KAFKA_POM" | cut -d' ' -f1)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    say "kafka: jars present in $KAFKA_LIB ($(find "$KAFKA_LIB" -name '*.jar' | wc -l) jars)"
    return
  fi
  say "kafka: resolving deploy/kafka/$KAFKA_POM into $KAFKA_LIB (Maven Central)"
  rm -rf "$KAFKA_LIB"
  mkdir -p "$KAFKA_LIB"
  local log=.cache/kafka-resolve.log
  if ! (cd deploy/kafka && mvn -q -B -Dstyle.color=never -f "$KAFKA_POM" \
    org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$PWD/../../$KAFKA_LIB") >"$log" 2>&1; then
    say "kafka: Maven failed; its output:" >&2
    cat "$log" >&2
    exit 1
  fi
  echo "$want" >"$stamp"
  say "kafka: $(find "$KAFKA_LIB" -name '*.jar' | wc -l) jars, $(du -sh "$KAFKA_LIB" | cut -f1)"
}

install_apt
check_node
install_npm
install_kafka_jars
say "done"
