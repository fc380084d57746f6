#!/usr/bin/env bash
# Read figures, heap and torii side by side on one cluster, in one run (issue: reads at heap's
# speed): sequential scan of 1M rows (`count(*), sum(length(pad))`) in fresh sessions (a new
# connection per query) and inside one long-lived session, a parallel sequential scan (2
# workers), 10,000 random primary-key lookups fetching a non-indexed column, and a bitmap scan
# of 1% of the rows. Warm cache (each query run once before timing), heap and torii
# alternated, best of N (default 5): a fresh session's figure is the wall time of one psql
# process (connect included, as a short-lived client sees it), the others psql's \timing.
# Usage: scripts/bench-read.sh [--runs N] [--rows N]
set -euo pipefail
RUNS=5 ROWS=1000000
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) RUNS=$2; shift ;;
        --rows) ROWS=$2; shift ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
BIN=/usr/lib/postgresql/15/bin
D=$(mktemp -d /tmp/torii-bench-read.XXXX)
chown postgres "$D"
as_pg() { if [ "$(id -u)" = 0 ]; then sudo -u postgres "$@"; else "$@"; fi; }
as_pg "$BIN/initdb" -D "$D/data" -A trust -U postgres >/dev/null
cat >>"$D/data/postgresql.conf" <<CONF
listen_addresses = ''
unix_socket_directories = '$D'
port = 5498
shared_buffers = 512MB
shared_preload_libraries = 'torii'
autovacuum = off
max_parallel_workers_per_gather = 0
CONF
as_pg "$BIN/pg_ctl" -D "$D/data" -l "$D/log" -w start >/dev/null
trap 'as_pg "$BIN/pg_ctl" -D "$D/data" -m immediate stop >/dev/null 2>&1; rm -rf "$D"' EXIT
psql_() { as_pg "$BIN/psql" -h "$D" -p 5498 -U postgres -X -Atq -d bench "$@"; }
as_pg "$BIN/psql" -h "$D" -p 5498 -U postgres -X -Atq -d postgres -c "CREATE DATABASE bench" >/dev/null
psql_ -c "CREATE EXTENSION torii" >/dev/null
for am in heap torii; do
    psql_ >/dev/null <<SQL
CREATE TABLE r_$am (id int PRIMARY KEY, v int, pad text) USING $am;
INSERT INTO r_$am SELECT g, g % 1000, md5(g::text) FROM generate_series(1, $ROWS) g;
CREATE INDEX ON r_$am (v);
VACUUM ANALYZE r_$am;
SQL
done
echo "bench-read: $ROWS rows, $(nproc) cores, best of $RUNS, $(cat /proc/loadavg | cut -d' ' -f1-3) load before"
# ms of one run of $2 (SQL with {t}) for $1, in a fresh session.
fresh() {
    local sql=${2//\{t\}/r_$1}
    local t0 t1
    t0=$(date +%s%N)
    psql_ -c "$sql" >/dev/null
    t1=$(date +%s%N)
    echo $(( (t1 - t0) / 1000 ))
}
# µs of each of $RUNS runs of $3 inside one session with setting $2.
in_session() {
    local sql=${3//\{t\}/r_$1}
    { echo "$2"; echo "$sql;"; echo '\timing on'; for _ in $(seq "$RUNS"); do echo "$sql;"; done; } |
        psql_ 2>&1 | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' | python3 -c "import sys; print(int(min(float(l) for l in sys.stdin)*1000))"
}
best() { python3 -c "import sys; print(min(int(x) for x in sys.argv[1:]))" "$@"; }
row() {  # name heap_us torii_us
    python3 -c "import sys; h,t=int(sys.argv[2]),int(sys.argv[3]); print(f'{sys.argv[1]:<48} heap {h/1000:9.1f} ms  torii {t/1000:9.1f} ms  torii/heap {t/h:.2f}')" "$@"
}
SEQ="SELECT count(*), sum(length(pad)) FROM {t}"
declare -A F
for am in heap torii; do fresh $am "$SEQ" >/dev/null; F[$am]=""; done
for _ in $(seq "$RUNS"); do
    for am in heap torii; do F[$am]="${F[$am]} $(fresh $am "$SEQ")"; done
done
row "seq scan, fresh session (incl. connect)" "$(best ${F[heap]})" "$(best ${F[torii]})"
# Best time of query $3 with settings $2, inside one session, heap and torii alternated twice.
compare() {
    local h="" t=""
    for _ in 1 2; do
        h="$h $(in_session heap "$2" "$3")"
        t="$t $(in_session torii "$2" "$3")"
    done
    row "$1" "$(best $h)" "$(best $t)"
}
compare "seq scan, long-lived session" "SET max_parallel_workers_per_gather = 0;" "$SEQ"
compare "parallel seq scan (2 workers)" \
    "SET max_parallel_workers_per_gather = 2; SET parallel_setup_cost = 0; SET min_parallel_table_scan_size = 0;" "$SEQ"
compare "index scan, 10,000 keys" "SET enable_bitmapscan = off; SET enable_seqscan = off;" \
    "SELECT sum(length(pad)) FROM {t} WHERE id = ANY (ARRAY(SELECT (1 + (g * 7919) % $ROWS) FROM generate_series(1, 10000) g))"
compare "bitmap scan, 1% of the rows" "SET enable_indexscan = off; SET enable_seqscan = off;" \
    "SELECT count(*), sum(length(pad)) FROM {t} WHERE v IN (1, 500, 999, 7, 300, 600, 800, 900, 100, 200)"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
