#!/usr/bin/env bash
# Regenerates gpufleet-dashboard's sqlx offline query cache, without sqlx-cli:
#
#   dashboard/sqlx-prepare.sh [DIR]
#
# creates a fresh database, applies dashboard/migrations/ to it in order, and rebuilds the
# crate with SQLX_OFFLINE=false, DATABASE_URL=<that database> and SQLX_OFFLINE_DIR=<a temporary
# directory>: sqlx's query macros then describe every statement against the live schema and
# write one query-<hash>.json each. The result replaces DIR (default dashboard/.sqlx, where
# the macros look when SQLX_OFFLINE=true, as .cargo/config.toml sets it); the database is
# dropped. tests/run-all.sh runs this into a temporary DIR and fails if it differs from the
# committed cache.
#
# Needs psql and a PostgreSQL server: ADMIN_DATABASE_URL, else DATABASE_URL, else
# postgres://postgres:postgres@127.0.0.1:5432/postgres, names a database on the server to
# connect to for CREATE/DROP DATABASE.
set -euo pipefail

dashboard=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out=${1:-$dashboard/.sqlx}
admin_url=${ADMIN_DATABASE_URL:-${DATABASE_URL:-postgres://postgres:postgres@127.0.0.1:5432/postgres}}
database=sqlx_prepare_$$
# Same server and credentials, the fresh database's name in place of the path.
fresh_url="${admin_url%/*}/$database"
generated=$(mktemp -d)

cleanup() {
  psql "$admin_url" -qc "DROP DATABASE IF EXISTS $database" >/dev/null 2>&1 || true
  rm -rf "$generated"
}
trap cleanup EXIT

psql "$admin_url" -qc "CREATE DATABASE $database" >/dev/null
for migration in "$dashboard"/migrations/*.sql; do
  psql "$fresh_url" -q -v ON_ERROR_STOP=1 --single-transaction -f "$migration" >/dev/null
done

# The macros run again only if the crate recompiles: touch the files that use them.
grep -rlE 'sqlx::query(_as|_scalar)?!' "$dashboard/src" | xargs touch
SQLX_OFFLINE=false SQLX_OFFLINE_DIR="$generated" DATABASE_URL="$fresh_url" \
  cargo build --quiet --locked -p gpufleet-dashboard --lib --manifest-path "$dashboard/Cargo.toml"

mkdir -p "$out"
rm -f "$out"/query-*.json
cp "$generated"/query-*.json "$out"/
echo "sqlx query cache: $(ls "$out" | wc -l) queries in $out"
