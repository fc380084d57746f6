#!/usr/bin/env bash
# Installs what is missing, builds and installs torii, and runs every test:
#   1. plain unit tests of the pgrx-free crates,
#   2. #[pg_test]s inside a server (cargo pgrx test),
#   3. whole-cluster tests (harness/tests: pg_regress files, crash, checksums, storage), with
#      torii preloaded (row-level WAL), and a subset again with generic WAL (not preloaded),
#   4. PostgreSQL's own regression and isolation suites on torii vs heap (scripts/pg-suite).
# Set TORII_SKIP_SUITE=1 to skip step 4.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
bash scripts/setup.sh

echo "==> 1/4 unit tests (pgrx-free crates)"
pkgs=()
for c in crates/*/; do pkgs+=(-p "$(basename "$c")"); done
cargo test --release "${pkgs[@]}"

echo "==> 2/4 #[pg_test] inside PostgreSQL"
PGDATA_DIR="${TMPDIR:-/tmp}/torii-pgrx-test"
rm -rf "$PGDATA_DIR"
cargo pgrx test pg15 --release --runas postgres --pgdata "$PGDATA_DIR"

echo "==> 3/4 whole-cluster tests (torii preloaded: row-level WAL)"
cargo test --release -p torii-harness -- --test-threads=2

echo "==> 3/4 whole-cluster tests again with generic WAL (torii not preloaded): crash, replication, wraparound"
TORII_WAL=generic cargo test --release -p torii-harness \
    --test crash --test replication --test wraparound --test wal_modes -- --test-threads=2

if [ "${TORII_SKIP_SUITE:-0}" != 1 ] && [ -x scripts/pg-suite/run.sh ]; then
    echo "==> 4/4 PostgreSQL regression and isolation suites (heap vs torii)"
    bash scripts/pg-suite/run.sh
fi
echo "==> all tests passed"
