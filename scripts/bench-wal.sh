#!/usr/bin/env bash
# Steady-state write figures, heap and torii side by side on one cluster, in one run:
#   pgbench TPC-B (scale 10, 4 clients, 60 s runs after a 20 s warm-up, heap and torii
#   alternated twice, best of each, fsync on, checkpoints as configured), `pgbench -i` time,
#   COPY of 1M rows (time, WAL bytes/row), 20 rounds of UPDATE of 100k rows (time, WAL/row,
#   size). Usage: scripts/bench-wal.sh [--generic-wal] [--duration S]
# With --generic-wal torii is not preloaded (generic WAL): the write path before row-level WAL.
set -euo pipefail
GENERIC=0 DUR=60
while [ $# -gt 0 ]; do
    case "$1" in
        --generic-wal) GENERIC=1 ;;
        --duration) DUR=$2; shift ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
BIN=/usr/lib/postgresql/15/bin
D=$(mktemp -d /tmp/torii-bench-wal.XXXX)
chown postgres "$D"
as_pg() { if [ "$(id -u)" = 0 ]; then sudo -u postgres "$@"; else "$@"; fi; }
as_pg "$BIN/initdb" -D "$D/data" -A trust -U postgres >/dev/null
cat >>"$D/data/postgresql.conf" <<CONF
listen_addresses = ''
unix_socket_directories = '$D'
port = 5499
fsync = on
shared_buffers = 512MB
max_wal_size = 2GB
checkpoint_timeout = 5min
CONF
[ "$GENERIC" = 1 ] || echo "shared_preload_libraries = 'torii'" >>"$D/data/postgresql.conf"
as_pg "$BIN/pg_ctl" -D "$D/data" -l "$D/log" -w start >/dev/null
trap 'as_pg "$BIN/pg_ctl" -D "$D/data" -m immediate stop >/dev/null 2>&1; rm -rf "$D"' EXIT
q() { as_pg psql -h "$D" -p 5499 -U postgres -X -Atq -d "$1" -c "$2"; }
lsn() { q "$1" "SELECT pg_current_wal_lsn()"; }
walbytes() { q postgres "SELECT pg_wal_lsn_diff('$2', '$1')::bigint"; }
ratio() { python3 -c "print(f'{$2/$1:.2f}')"; }
now() { date +%s.%N; }
el() { python3 -c "print(f'{$2-$1:.2f}')"; }
mode=$([ "$GENERIC" = 1 ] && echo "generic WAL (not preloaded)" || echo "row-level WAL (preloaded)")
echo "torii: $mode; $(nproc) cores; fsync on"
for am in heap torii; do
    q postgres "CREATE DATABASE b_$am"
    q b_$am "CREATE EXTENSION torii"
    q b_$am "ALTER DATABASE b_$am SET default_table_access_method = $am"
done

# ---- pgbench -i
declare -A INIT TPS WAL
for am in heap torii; do
    t0=$(now)
    as_pg env PGOPTIONS="-c default_table_access_method=$am" pgbench -h "$D" -p 5499 -U postgres -i -q -s 10 b_$am >/dev/null 2>&1
    INIT[$am]=$(el "$t0" "$(now)")
done
echo "pgbench -i -s 10: heap ${INIT[heap]} s, torii ${INIT[torii]} s, torii/heap $(ratio "${INIT[heap]}" "${INIT[torii]}")"

# ---- pgbench runs, alternated
for am in heap torii; do TPS[$am]=0; WAL[$am]=0; done
for round in 1 2; do
    for am in heap torii; do
        as_pg pgbench -h "$D" -p 5499 -U postgres -c 4 -j 4 -T 20 b_$am >/dev/null 2>&1   # warm-up
        l0=$(lsn b_$am)
        out=$(as_pg pgbench -h "$D" -p 5499 -U postgres -c 4 -j 4 -T "$DUR" b_$am 2>&1)
        l1=$(lsn b_$am)
        tps=$(echo "$out" | sed -n 's/^tps = \([0-9.]*\).*/\1/p' | head -1)
        n=$(echo "$out" | sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p')
        w=$(python3 -c "print(round($(walbytes "$l0" "$l1") / $n))")
        echo "  run $round $am: $tps tps, $w WAL bytes/txn"
        if python3 -c "import sys; sys.exit(0 if $tps > ${TPS[$am]} else 1)"; then TPS[$am]=$tps; WAL[$am]=$w; fi
    done
done
echo "pgbench TPC-B scale 10, 4 clients, 2 x ${DUR} s each (best): TPS heap ${TPS[heap]}, torii ${TPS[torii]}, torii/heap $(ratio "${TPS[heap]}" "${TPS[torii]}")"
echo "  WAL bytes/txn (of the best run): heap ${WAL[heap]}, torii ${WAL[torii]}, torii/heap $(ratio "${WAL[heap]}" "${WAL[torii]}")"

# ---- COPY 1M rows
declare -A CT CW
q postgres "COPY (SELECT g, g % 1000, md5(g::text) FROM generate_series(1, 1000000) g) TO '$D/copy.csv'"
for am in heap torii; do
    q b_$am "CREATE TABLE c (a int, b int, t text) USING $am"
    q b_$am "CHECKPOINT"
    l0=$(lsn b_$am); t0=$(now)
    q b_$am "COPY c FROM '$D/copy.csv'"
    CT[$am]=$(el "$t0" "$(now)"); l1=$(lsn b_$am)
    CW[$am]=$(python3 -c "print(f'{$(walbytes "$l0" "$l1") / 1e6:.1f}')")
done
echo "COPY 1M rows: heap ${CT[heap]} s / ${CW[heap]} WAL B/row, torii ${CT[torii]} s / ${CW[torii]} WAL B/row, time $(ratio "${CT[heap]}" "${CT[torii]}"), WAL $(ratio "${CW[heap]}" "${CW[torii]}")"

# ---- 20 UPDATE rounds of 100k rows
declare -A UT UW US
for am in heap torii; do
    q b_$am "CREATE TABLE load (id int PRIMARY KEY, counter int, pad text) USING $am"
    q b_$am "INSERT INTO load SELECT g, 0, md5(g::text) FROM generate_series(1, 100000) g"
    q b_$am "VACUUM ANALYZE load"
    q b_$am "CHECKPOINT"
    l0=$(lsn b_$am); t0=$(now)
    for i in $(seq 20); do q b_$am "UPDATE load SET counter = counter + 1 WHERE id <= 100000"; done
    UT[$am]=$(el "$t0" "$(now)"); l1=$(lsn b_$am)
    UW[$am]=$(python3 -c "print(f'{$(walbytes "$l0" "$l1") / 2e6:.1f}')")
    US[$am]=$(q b_$am "SELECT pg_table_size('load')")
done
echo "20 UPDATE rounds of 100k rows: heap ${UT[heap]} s, torii ${UT[torii]} s, time $(ratio "${UT[heap]}" "${UT[torii]}"); WAL B/row heap ${UW[heap]}, torii ${UW[torii]}, $(ratio "${UW[heap]}" "${UW[torii]}"); size heap ${US[heap]}, torii ${US[torii]}, $(ratio "${US[heap]}" "${US[torii]}")"
