#!/usr/bin/env bash
# crates/store/src/schema.rs is generated, never edited: this migrates a
# scratch schema with the repository's migrations, runs `diesel
# print-schema` on it, and either writes the result (`generate`) or fails
# when the committed file differs (`check`, part of `make lint` and `make
# test`). Month partitions of the logs are left out: they come and
# go with time and are never queried by name from Rust.
#
#   bash deploy/schema.sh check|generate
#
# Needs the stack's Postgres (MIGRATION_DATABASE_URL, the migration role)
# and installs diesel_cli under .stack/tools on first use (cached).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DIESEL_CLI_VERSION="${DIESEL_CLI_VERSION:-2.3.14}"
mode="${1:-check}"
case "$mode" in check|generate) ;; *) die "usage: schema.sh check|generate" ;; esac
url="${MIGRATION_DATABASE_URL:?set MIGRATION_DATABASE_URL (the migration role)}"
out="$REPO_DIR/crates/store/src/schema.rs"

tools="$STACK_DIR/tools"
diesel="$tools/bin/diesel"
right_version() { [ -x "$1" ] && "$1" --version 2>/dev/null | grep -q "Version: $DIESEL_CLI_VERSION$"; }
if ! right_version "$diesel" && right_version "$(command -v diesel || true)"; then
  diesel="$(command -v diesel)"
fi
if ! right_version "$diesel"; then
  if ! dpkg -s libpq-dev >/dev/null 2>&1; then
    log "installing libpq-dev (diesel_cli links libpq)"
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libpq-dev >&2
  fi
  log "installing diesel_cli $DIESEL_CLI_VERSION (postgres only) under $tools"
  cargo install --quiet --locked --root "$tools" --version "$DIESEL_CLI_VERSION" \
    diesel_cli --no-default-features --features postgres
fi

schema="schema_gen_$$"
sep='?'; case "$url" in *\?*) sep='&' ;; esac
scoped="${url}${sep}options=-c%20search_path%3D${schema}"
cleanup() { psql -q "$url" -c "DROP SCHEMA IF EXISTS $schema CASCADE" >/dev/null 2>&1 || true; }
trap cleanup EXIT
psql -q -v ON_ERROR_STOP=1 "$url" -c "CREATE SCHEMA $schema" >/dev/null
"$diesel" migration run --migration-dir "$REPO_DIR/migrations" --database-url "$scoped" >/dev/null

fresh="$(mktemp)"
trap 'cleanup; rm -f "$fresh"' EXIT
# NB: with --schema, diesel wraps the tables in `pub mod <schema>` and
# qualifies their names; the runtime picks the schema by search_path
# instead, so unwrap, unqualify and dedent.
"$diesel" print-schema --database-url "$scoped" --schema "$schema" \
    --except-tables '^(concept_attempts|evaluation_logs)_' \
  | sed -e "/^pub mod ${schema} {\$/d" -e '$ { /^}$/d }' \
        -e "s/${schema}\.//" -e 's/^    //' > "$fresh"

if [ "$mode" = generate ]; then
  cp "$fresh" "$out"
  log "wrote $out"
elif ! diff -u "$out" "$fresh"; then
  die "crates/store/src/schema.rs differs from diesel print-schema (run: bash deploy/schema.sh generate)"
else
  log "schema.rs matches diesel print-schema"
fi
