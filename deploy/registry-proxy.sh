#!/usr/bin/env bash
# HTTPS with basic auth in front of the registry: Debian's nginx terminates
# TLS (certificate from deploy/tls.sh) on 127.0.0.1:8444, checks the user
# against an htpasswd file and forwards to Apicurio on 127.0.0.1:8081.
# Apicurio's own basic auth needs an OIDC server, hence the proxy; clients
# see what a managed registry offers (HTTPS, CA file, user and password).
#
# The nginx package is unpacked under .stack, not installed: installing it
# would start the distribution's own nginx on port 80.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
P_DIST="$STACK_DIR/dist/nginx"
P_HOME="$STACK_DIR/registry-proxy"

nginx_bin() { echo "$P_DIST/usr/sbin/nginx"; }

install() {
  [ -x "$(nginx_bin)" ] && return 0
  local tmp; tmp="$(mktemp -d)"; chmod 755 "$tmp"  # apt fetches as _apt
  log "fetching Debian's nginx package (unpacked, not installed)"
  (cd "$tmp" && apt-get download -qq nginx >&2) || {
    apt-get update -qq >&2
    (cd "$tmp" && apt-get download -qq nginx >&2)
  } || die "apt-get download nginx failed"
  mkdir -p "$P_DIST"
  dpkg-deb -x "$tmp"/nginx_*.deb "$P_DIST"
  rm -rf "$tmp"
  "$(nginx_bin)" -v 2>/dev/null || die "the unpacked nginx does not run (missing libraries?)"
}

configure() {
  bash "$DEPLOY_DIR/tls.sh" ensure
  mkdir -p "$P_HOME/tmp" "$P_HOME/logs" "$STACK_DIR/logs" "$STACK_DIR/run"
  printf '%s:%s\n' "$REGISTRY_USER" "$(openssl passwd -apr1 "$REGISTRY_PASSWORD")" >"$P_HOME/htpasswd"
  chmod 600 "$P_HOME/htpasswd"
  cat >"$P_HOME/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $P_HOME/nginx.pid;
# Workers run as whoever started the stack, so they can read the htpasswd
# file that nobody else may.
user $(id -un) $(id -gn);
error_log $STACK_DIR/logs/registry-proxy.log warn;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path $P_HOME/tmp/body;
  proxy_temp_path $P_HOME/tmp/proxy;
  fastcgi_temp_path $P_HOME/tmp/fastcgi;
  uwsgi_temp_path $P_HOME/tmp/uwsgi;
  scgi_temp_path $P_HOME/tmp/scgi;
  server {
    listen 127.0.0.1:$REGISTRY_TLS_PORT ssl;
    ssl_certificate $STACK_DIR/tls/server.crt;
    ssl_certificate_key $STACK_DIR/tls/server.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    auth_basic "novyra registry";
    auth_basic_user_file $P_HOME/htpasswd;
    location / {
      proxy_pass http://127.0.0.1:$REGISTRY_PORT;
      proxy_set_header Host \$host:\$server_port;
      proxy_set_header X-Forwarded-Proto https;
      proxy_set_header Authorization "";
    }
  }
}
CONF
}

# Up when it answers TLS and asks for credentials; Apicurio may still be
# starting behind it.
ready() {
  local code
  code="$(curl -sS -o /dev/null -w '%{http_code}' --cacert "$STACK_DIR/tls/ca.crt" \
    "https://127.0.0.1:$REGISTRY_TLS_PORT/apis/ccompat/v7/subjects")"
  [ "$code" = 401 ]
}

start() {
  install
  configure
  if is_running registry-proxy && ready; then
    "$(nginx_bin)" -p "$P_HOME" -e "$STACK_DIR/logs/registry-proxy.log" -c "$P_HOME/nginx.conf" -s reload 2>/dev/null || true
    log "registry proxy already running"; return 0
  fi
  port_busy "$REGISTRY_TLS_PORT" && die "port $REGISTRY_TLS_PORT is in use by a process this stack did not start"
  log "starting the registry's HTTPS proxy on 127.0.0.1:$REGISTRY_TLS_PORT"
  nohup "$(nginx_bin)" -p "$P_HOME" -e "$STACK_DIR/logs/registry-proxy.log" -c "$P_HOME/nginx.conf" \
    >>"$STACK_DIR/logs/registry-proxy.log" 2>&1 </dev/null &
  echo $! >"$(pid_file registry-proxy)"
  WAIT_PID_NAME=registry-proxy wait_ready registry-proxy 30 ready
}

stop() { stop_pid registry-proxy; }

status() { if is_running registry-proxy && ready; then echo "registry  up    https://127.0.0.1:$REGISTRY_TLS_PORT/apis/ccompat/v7 (basic auth)"; else echo "registry-proxy down"; fi; }

"${1:-status}"
