#!/usr/bin/env bash
# A throwaway certificate authority for the local stack and a server
# certificate for 127.0.0.1/localhost, made with Debian's openssl once and
# kept under $STACK_DIR/tls (git-ignored). Clients trust ca.crt; nothing
# here is meant for anything but loopback.
#
#   bash deploy/tls.sh ensure     # idempotent
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
TLS_DIR="$STACK_DIR/tls"

ensure() {
  command -v openssl >/dev/null || {
    log "installing openssl"
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl >&2
  }
  mkdir -p "$TLS_DIR"
  chmod 700 "$TLS_DIR"
  # kafka.sh and neo4j.sh start in parallel and both call this: without the
  # lock each could make its own CA, and one server would present a
  # certificate that ca.crt does not sign.
  exec 9>"$TLS_DIR/.lock"
  flock 9
  # Each step writes under a temporary name and renames last, so a kill
  # mid-way leaves the step undone rather than half done.
  if [ ! -f "$TLS_DIR/ca.crt" ]; then
    log "creating the local CA"
    rm -f "$TLS_DIR/server.crt" "$TLS_DIR/kafka-keystore.pem"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=novyra local CA" \
      -keyout "$TLS_DIR/ca.key" -out "$TLS_DIR/ca.crt.tmp" 2>/dev/null
    mv "$TLS_DIR/ca.crt.tmp" "$TLS_DIR/ca.crt"
  fi
  if [ ! -f "$TLS_DIR/kafka-keystore.pem" ]; then
    log "creating the server certificate (127.0.0.1, localhost)"
    openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
      -keyout "$TLS_DIR/server.key" -out "$TLS_DIR/server.csr" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' >"$TLS_DIR/server.ext"
    openssl x509 -req -in "$TLS_DIR/server.csr" -CA "$TLS_DIR/ca.crt" -CAkey "$TLS_DIR/ca.key" \
      -CAcreateserial -days 3650 -extfile "$TLS_DIR/server.ext" -out "$TLS_DIR/server.crt" 2>/dev/null
    # Kafka reads a PEM keystore: the PKCS#8 key and the chain in one file.
    openssl pkcs8 -topk8 -nocrypt -in "$TLS_DIR/server.key" -out "$TLS_DIR/server.pk8"
    cat "$TLS_DIR/server.pk8" "$TLS_DIR/server.crt" "$TLS_DIR/ca.crt" >"$TLS_DIR/kafka-keystore.pem.tmp"
    chmod 600 "$TLS_DIR"/*.key "$TLS_DIR"/*.pk8 "$TLS_DIR/kafka-keystore.pem.tmp"
    mv "$TLS_DIR/kafka-keystore.pem.tmp" "$TLS_DIR/kafka-keystore.pem"
  fi
  # A second CA nobody signed with: tests show that trusting the wrong CA
  # fails with a clear error.
  if [ ! -f "$TLS_DIR/other-ca.crt" ]; then
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=some other CA" \
      -keyout "$TLS_DIR/other-ca.key" -out "$TLS_DIR/other-ca.crt.tmp" 2>/dev/null
    mv "$TLS_DIR/other-ca.crt.tmp" "$TLS_DIR/other-ca.crt"
  fi
}

cmd="${1:-ensure}"
"$cmd"
