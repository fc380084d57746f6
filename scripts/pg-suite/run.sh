#!/usr/bin/env bash
# PostgreSQL's own regression + isolation suites, run twice on one scratch cluster:
# once with plain heap tables and once with default_table_access_method = torii.
# See docs/pg-suite.md for what it does, the normalization filter and the exit policy.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# ---------------------------------------------------------------- settings
PG_SRC_VERSION=15.18
PG_DEB_VERSION=15.18-0+deb12u1
PG_CONFIG=${PG_CONFIG:-pg_config}
CACHE=${TORII_CACHE:-$HOME/.cache/torii}/pg-suite
SRC=$CACHE/postgresql-$PG_SRC_VERSION
PHASE_TIMEOUT=${PG_SUITE_PHASE_TIMEOUT:-1800}   # seconds per phase (side x suite)
GROUP_TIMEOUT=${PG_SUITE_GROUP_TIMEOUT:-180}    # seconds per schedule group (heap: < 15 s each)
# Hang guards set on the test databases (both sides). A storage bug that leaves a session holding
# locks (e.g. an UPDATE that should have failed with a serialization error, so the spec never
# ends that transaction) otherwise blocks the spec's teardown forever. No test in the suites
# relies on the defaults (0) of these two, and none runs a statement anywhere near that long.
STATEMENT_TIMEOUT=${PG_SUITE_STATEMENT_TIMEOUT:-120s}
IDLE_TIMEOUT=${PG_SUITE_IDLE_TIMEOUT:-60s}
RULES=$HERE/normalize.rules
BASELINE=$HERE/baseline-torii.txt
KNOWN_CRASHES=$HERE/known-crashes.txt
# The "torii" side's access method and how it gets into the database. Overridable only to test
# the runner itself, e.g. with a heap clone:
#   PG_SUITE_AM=heapclone PG_SUITE_AM_SETUP='CREATE ACCESS METHOD heapclone TYPE TABLE HANDLER heap_tableam_handler'
AM=${PG_SUITE_AM:-torii}
AM_SETUP=${PG_SUITE_AM_SETUP:-CREATE EXTENSION torii}

# Tests run by --quick (storage-heavy, mutually independent after test_setup/create_index).
QUICK_REGRESS="test_setup create_index insert update delete select_into transactions vacuum btree_index hash_index"
QUICK_ISOLATION="deadlock-simple lock-update-delete eval-plan-qual insert-conflict-do-nothing prepared-transactions"
# Specs that are not in isolation_schedule because they need max_prepared_transactions > 0
# (upstream runs them with `make installcheck-prepared-txns`); we set it, so we run them.
EXTRA_ISOLATION="prepared-transactions prepared-transactions-cic"

log() { printf '[pg-suite %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
die() { printf '[pg-suite] ERROR: %s\n' "$*" >&2; exit 2; }

usage() {
    cat <<EOF
usage: $0 [options]
  --quick           run a small subset (regress: $QUICK_REGRESS;
                    isolation: $QUICK_ISOLATION)
  --heap-only       run only the heap side (no torii extension needed)
  --torii-only      skip the heap side (torii-only failures can then not be told apart)
  --no-isolation    skip the isolation specs
  --no-regress      skip the core regression suite
  --write-baseline  write $BASELINE from this run's torii passes (full run only)
  --keep            keep the scratch directory (cluster, results, diffs, logs)
  --artifacts DIR   copy the report, pg_regress diffs, normalized torii diffs and server logs
                    to DIR (for CI) before the scratch directory is removed
  --generic-wal     do not preload torii (it then writes generic WAL); by default torii is in
                    shared_preload_libraries and writes row-level records
  --system-psql     run the tests with the installed psql (same version as the server) instead of
                    psql $PG_SRC_VERSION built from the cached source (see docs/pg-suite.md)
  -h, --help
Environment: TORII_CACHE (default \$HOME/.cache/torii), PG_CONFIG, PG_SUITE_PHASE_TIMEOUT (s, 1800),
PG_SUITE_GROUP_TIMEOUT (s, 180), PG_SUITE_STATEMENT_TIMEOUT (120s), PG_SUITE_IDLE_TIMEOUT (60s),
PG_SUITE_RUST_BACKTRACE (default 0: the server runs without Rust backtraces).
EOF
}

QUICK=0 HEAP=1 TORII=1 DO_ISO=1 DO_REG=1 WRITE_BASELINE=0 KEEP=0 PRELOAD=1 HEAP_ONLY=0 SYSTEM_PSQL=0 ARTIFACTS=""
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --heap-only) TORII=0; HEAP_ONLY=1 ;;
        --torii-only) HEAP=0 ;;
        --no-isolation) DO_ISO=0 ;;
        --no-regress) DO_REG=0 ;;
        --write-baseline) WRITE_BASELINE=1 ;;
        --keep) KEEP=1 ;;
        --preload) PRELOAD=1 ;;
        --generic-wal) PRELOAD=0 ;;
        --system-psql) SYSTEM_PSQL=1 ;;
        --artifacts) shift; [ $# -gt 0 ] || die "--artifacts needs a directory"; ARTIFACTS=$1 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done
if [ "$WRITE_BASELINE" = 1 ] && { [ "$AM" != torii ] || [ "$QUICK" = 1 ] || [ "$TORII" = 0 ] || [ "$DO_ISO" = 0 ] || [ "$DO_REG" = 0 ]; }; then
    echo "--write-baseline needs a full torii run (no --quick/--heap-only/--no-*)" >&2
    exit 2
fi


T_START=$(date +%s)

# ---------------------------------------------------------------- tools
PGBIN=$($PG_CONFIG --bindir)
PGXS_ROOT=$(dirname "$($PG_CONFIG --pgxs)")/../..
PGXS_ROOT=$(cd "$PGXS_ROOT" && pwd)
PG_REGRESS=$PGXS_ROOT/src/test/regress/pg_regress
PG_ISO_REGRESS=$PGXS_ROOT/src/test/isolation/pg_isolation_regress
SERVER_VERSION=$($PG_CONFIG --version | awk '{print $2}')
for f in "$PGBIN/initdb" "$PGBIN/pg_ctl" "$PGBIN/psql" "$PG_REGRESS" "$PG_ISO_REGRESS"; do
    [ -x "$f" ] || die "missing $f (install postgresql-15 and postgresql-server-dev-15)"
done
command -v python3 >/dev/null || die "python3 is needed for the report"

# PostgreSQL refuses to run as root: everything touching the cluster runs as `postgres` then.
if [ "$(id -u)" = 0 ]; then
    PGUSER_OS=postgres
    id "$PGUSER_OS" >/dev/null 2>&1 || die "no 'postgres' OS user"
    as_pg() { runuser -u "$PGUSER_OS" -- "$@"; }
    runuser_or_exec() { exec runuser -u "$PGUSER_OS" -- "$@"; }
else
    PGUSER_OS=$(id -un)
    as_pg() { "$@"; }
    runuser_or_exec() { exec "$@"; }
fi

# ---------------------------------------------------------------- 1. source + build
fetch_source() {
    [ -f "$SRC/src/test/regress/parallel_schedule" ] && [ -f "$SRC/configure" ] && return 0
    local dl=$CACHE/download
    local orig=postgresql-15_$PG_SRC_VERSION.orig.tar.bz2
    mkdir -p "$dl"
    if [ ! -f "$dl/$orig" ]; then
        [ "$(id -u)" = 0 ] || die "PostgreSQL $PG_SRC_VERSION source not cached in $SRC; run once as root (needs apt-get source)"
        local known
        known=$(apt-cache showsrc postgresql-15 2>/dev/null || true)
        if ! grep -qx "Version: $PG_DEB_VERSION" <<<"$known"; then
            # deb-src twin of the existing apt source (the security pocket's source is not served,
            # which is why we pin the point release from the main pocket).
            local twin=/etc/apt/sources.list.d/torii-src.sources
            if [ ! -f "$twin" ]; then
                log "adding deb-src twin $twin of /etc/apt/sources.list.d/debian.sources"
                sed 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources > "$twin"
            fi
            log "apt-get update (for the source index)"
            apt-get update -qq || log "apt-get update reported errors (continuing)"
        fi
        log "apt-get source --download-only postgresql-15=$PG_DEB_VERSION"
        (cd "$dl" && apt-get source -qq --download-only "postgresql-15=$PG_DEB_VERSION") \
            || die "apt-get source failed"
    fi
    log "unpacking $orig"
    local tmp=$CACHE/unpack.$$
    rm -rf "$tmp"; mkdir -p "$tmp"
    # Debian's patches (debian.tar.xz) touch packaging paths only, nothing under src/test or
    # src/bin/psql, so the pristine upstream tarball is what we use.
    tar -xjf "$dl/$orig" -C "$tmp"
    rm -rf "$SRC"; mv "$tmp/postgresql-$PG_SRC_VERSION" "$SRC"; rmdir "$tmp"
}

build_modules() {
    BUILD=$CACHE/build2-$PG_SRC_VERSION-server-$SERVER_VERSION
    if [ -f "$BUILD/regress.so" ] && [ -f "$BUILD/autoinc.so" ] && [ -f "$BUILD/refint.so" ]; then
        return 0
    fi
    log "building regress.so autoinc.so refint.so with PGXS in $BUILD"
    rm -rf "$BUILD"; mkdir -p "$BUILD"
    cp "$SRC/src/test/regress/regress.c" "$SRC/contrib/spi/autoinc.c" "$SRC/contrib/spi/refint.c" "$BUILD/"
    cat > "$BUILD/Makefile" <<'EOF'
MODULES = regress autoinc refint
# as contrib/spi/Makefile: refint's NOTICEs are part of the triggers test's expected output
PG_CPPFLAGS = -DREFINT_VERBOSE
PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)
EOF
    # with_llvm=no: no JIT bitcode needed for test modules
    make -s -C "$BUILD" PG_CONFIG="$PG_CONFIG" with_llvm=no >"$BUILD/build.log" 2>&1 \
        || { cat "$BUILD/build.log"; die "PGXS build failed"; }
}

# The expected files were written for psql $PG_SRC_VERSION. psql 15.20 (the installed client)
# changed what happens after a COPY ... FROM STDIN that fails before the copy starts: it skips the
# script up to the next "\." line, which swallows whole stretches of copy, copyselect, copy2,
# privileges, rowsecurity, triggers, generated, rules and alter_table. So by default the suites
# run with psql $PG_SRC_VERSION built from the same source (linked with the system libpq).
build_psql() {
    PSQL_BUILD=$CACHE/psql-$PG_SRC_VERSION
    [ -x "$PSQL_BUILD/psql" ] && return 0
    log "building psql $PG_SRC_VERSION from the cached source (once)"
    local tree=$CACHE/psql-build-tree
    rm -rf "$tree"; mkdir -p "$tree"
    (cd "$tree" && "$SRC/configure" --prefix="$tree/no-install" --without-readline --without-zlib \
        --without-icu --without-openssl --without-llvm >configure.log 2>&1) \
        || { tail -n 30 "$tree/configure.log"; die "configure for psql failed"; }
    make -s -j"$(nproc)" -C "$tree/src/bin/psql" >"$tree/make.log" 2>&1 \
        || { tail -n 30 "$tree/make.log"; die "building psql failed"; }
    mkdir -p "$PSQL_BUILD"
    cp "$tree/src/bin/psql/psql" "$PSQL_BUILD/psql"
    rm -rf "$tree"
}

fetch_source
build_modules
[ "$SYSTEM_PSQL" = 1 ] || build_psql
T_BUILD=$(date +%s)

# ---------------------------------------------------------------- 2. scratch cluster
WORK=$(mktemp -d /tmp/torii-pg-suite.XXXXXX)
chmod 755 "$WORK"
SOCK=$WORK/sock
PGDATA_DIR=$WORK/data
PORT=5432            # the socket lives in our private directory, so no clash with other servers
SERVER_LOG=$WORK/server.log
mkdir -p "$SOCK" "$WORK/lib" "$WORK/regress" "$WORK/isolation" "$WORK/out" "$WORK/logs"
# Private copies: the server (as postgres) reads data files and writes COPY output there.
cp -r "$SRC/src/test/regress/sql" "$SRC/src/test/regress/expected" "$SRC/src/test/regress/data" \
      "$SRC/src/test/regress/parallel_schedule" "$SRC/src/test/regress/resultmap" "$WORK/regress/"
cp -r "$SRC/src/test/isolation/specs" "$SRC/src/test/isolation/expected" \
      "$SRC/src/test/isolation/isolation_schedule" "$WORK/isolation/"
cp "$BUILD"/regress.so "$BUILD"/autoinc.so "$BUILD"/refint.so "$WORK/lib/"
if [ "$SYSTEM_PSQL" = 1 ]; then
    TEST_BINDIR=$PGBIN
else
    mkdir -p "$WORK/bin"; cp "$PSQL_BUILD/psql" "$WORK/bin/psql"; TEST_BINDIR=$WORK/bin
fi
chown -R "$PGUSER_OS" "$WORK"

SERVER_STARTED=0
PHASE_PID=""
cleanup() {
    local rc=$?
    if [ "$SERVER_STARTED" = 1 ]; then
        as_pg "$PGBIN/pg_ctl" -D "$PGDATA_DIR" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    if [ -n "$PHASE_PID" ]; then
        # with the server gone the test clients fail fast; make sure the driver goes too
        kill -TERM "$PHASE_PID" 2>/dev/null || true
        pkill -TERM -P "$PHASE_PID" 2>/dev/null || true
        wait "$PHASE_PID" 2>/dev/null || true
    fi
    if [ "$KEEP" = 1 ]; then
        log "kept $WORK (server stopped; restart with: runuser -u $PGUSER_OS -- $PGBIN/pg_ctl -D $PGDATA_DIR -l $SERVER_LOG start)"
    else
        rm -rf "$WORK"
    fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "initdb in $PGDATA_DIR"
as_pg "$PGBIN/initdb" -D "$PGDATA_DIR" --no-locale -E UTF8 -A trust -U "$PGUSER_OS" >"$WORK/logs/initdb.log" 2>&1 \
    || { cat "$WORK/logs/initdb.log"; die "initdb failed"; }
cat >>"$PGDATA_DIR/postgresql.conf" <<EOF

# ---- added by scripts/pg-suite/run.sh
listen_addresses = ''
unix_socket_directories = '$SOCK'
port = $PORT
fsync = off                       # scratch cluster: speed over durability
synchronous_commit = off
full_page_writes = off
max_prepared_transactions = 10    # regress prepared_xacts + isolation prepared-transactions*
max_connections = 100
# as pg_regress's own temporary instance, plus connections so a crash can be tied to a test
log_line_prefix = '%m [%p] %q%a '
log_connections = on
log_checkpoints = on
log_lock_waits = on
log_temp_files = 128kB
EOF
if [ "$PRELOAD" = 1 ]; then
    echo "shared_preload_libraries = 'torii'" >>"$PGDATA_DIR/postgresql.conf"
fi
# The server's environment decides whether a Rust panic turned ERROR carries a backtrace in its
# DETAIL (pgrx); keep results the same whatever the caller's shell has (RUST_BACKTRACE=1 -> huge
# diffs that differ from CI's). PG_SUITE_RUST_BACKTRACE=1 turns them on for debugging.
start_server() {
    as_pg env RUST_BACKTRACE="${PG_SUITE_RUST_BACKTRACE:-0}" \
        "$PGBIN/pg_ctl" -D "$PGDATA_DIR" -l "$SERVER_LOG" -w -t "${1:-120}" start >/dev/null
}
start_server || { tail -n 30 "$SERVER_LOG" >&2; die "server did not start"; }
SERVER_STARTED=1

psql_pg() { as_pg "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$SOCK" -p "$PORT" "$@"; }

# Snapshot of the cluster-wide objects, so that whatever a run leaves behind (roles,
# tablespaces) is dropped before the next run and both sides start from the same state.
psql_pg -d postgres -Atc "select rolname from pg_roles order by 1" >"$WORK/logs/roles.initial"
psql_pg -d postgres -Atc "select spcname from pg_tablespace order by 1" >"$WORK/logs/spc.initial"

clean_globals() {
    local r s g d
    # prepared transactions left by a failed 2PC test would block DROP DATABASE and hold locks
    while IFS='|' read -r g d; do
        [ -n "$g" ] || continue
        log "rolling back leftover prepared transaction $g in $d"
        psql_pg -d "$d" -c "ROLLBACK PREPARED '$g'" >/dev/null 2>&1 || log "  could not roll back $g"
    done < <(psql_pg -d postgres -Atc "select gid, database from pg_prepared_xacts")
    while read -r s; do
        grep -qx -- "$s" "$WORK/logs/spc.initial" && continue
        log "dropping leftover tablespace $s"
        psql_pg -d postgres -c "DROP TABLESPACE \"$s\"" >/dev/null 2>&1 || log "  could not drop tablespace $s"
    done < <(psql_pg -d postgres -Atc "select spcname from pg_tablespace")
    while read -r r; do
        grep -qx -- "$r" "$WORK/logs/roles.initial" && continue
        log "dropping leftover role $r"
        psql_pg -d postgres -c "DROP ROLE \"$r\"" >/dev/null 2>&1 || log "  could not drop role $r"
    done < <(psql_pg -d postgres -Atc "select rolname from pg_roles")
}

# Prepare the database exactly as pg_regress's create_database() would (it does not when given
# --use-existing), then for torii install the extension and make torii the database's default AM.
# All of the suites' \c commands reconnect to this same database, and ALTER DATABASE ... SET
# applies to every later session in it, whatever the role; RESET/SET DEFAULT goes back to it.
TORII_ERROR=""
prepare_db() {   # prepare_db <dbname> <heap|torii>
    local db=$1 side=$2
    psql_pg -d postgres >/dev/null <<EOF
SET client_min_messages = warning;
DROP DATABASE IF EXISTS "$db" WITH (FORCE);
CREATE DATABASE "$db" TEMPLATE=template0;
ALTER DATABASE "$db" SET lc_messages TO 'C';
ALTER DATABASE "$db" SET lc_monetary TO 'C';
ALTER DATABASE "$db" SET lc_numeric TO 'C';
ALTER DATABASE "$db" SET lc_time TO 'C';
ALTER DATABASE "$db" SET bytea_output TO 'hex';
ALTER DATABASE "$db" SET timezone_abbreviations TO 'Default';
-- not pg_regress's: hang guards, the same on both sides (see docs/pg-suite.md)
ALTER DATABASE "$db" SET statement_timeout TO '$STATEMENT_TIMEOUT';
ALTER DATABASE "$db" SET idle_in_transaction_session_timeout TO '$IDLE_TIMEOUT';
EOF
    if [ "$side" = torii ]; then
        local err
        if ! err=$(psql_pg -d "$db" -c "$AM_SETUP" 2>&1); then
            TORII_ERROR=$err
            return 1
        fi
        if ! err=$(psql_pg -d "$db" -c "ALTER DATABASE \"$db\" SET default_table_access_method = $AM" 2>&1); then
            TORII_ERROR=$err
            return 1
        fi
        # check it took: a new session in that database creates torii tables
        local am
        am=$(psql_pg -d "$db" -Atc "CREATE TEMP TABLE pg_suite_probe(i int); SELECT a.amname FROM pg_class c JOIN pg_am a ON a.oid = c.relam WHERE c.oid = 'pg_suite_probe'::regclass") || true
        if [ "$am" != "$AM" ]; then
            TORII_ERROR="default_table_access_method = $AM did not take effect (probe table AM: '$am'; does the extension create access method $AM?) $err"
            return 1
        fi
    fi
}

LOG_OFFSET=0
mark_log() { LOG_OFFSET=$(stat -c %s "$SERVER_LOG"); }
slice_log() { tail -c +"$((LOG_OFFSET + 1))" "$SERVER_LOG" >"$1"; }

declare -A PHASE_SECS=()
run_phase() {   # run_phase <side> <suite>
    local side=$1 suite=$2 out=$WORK/out/$1/$2 t0 rc deadline left gt group n=0 ok fail
    local db driver indir sched groups=() ignores=""
    mkdir -p "$out"; chown "$PGUSER_OS" "$WORK/out" "$WORK/out/$side" "$out"
    if [ "$suite" = regress ]; then
        db=regression; driver=$PG_REGRESS; indir=$WORK/regress; sched=$indir/parallel_schedule
        [ "$QUICK" = 1 ] && groups=($QUICK_REGRESS)
    else
        db=isolation_regression; driver=$PG_ISO_REGRESS; indir=$WORK/isolation; sched=$indir/isolation_schedule
        [ "$QUICK" = 1 ] && groups=($QUICK_ISOLATION)
    fi
    if [ "$QUICK" = 0 ]; then
        # one entry per "test:" line, i.e. per parallel group
        mapfile -t groups < <(sed -n 's/^test: *//p' "$sched")
        [ "$suite" = isolation ] && groups+=($EXTRA_ISOLATION)
    fi
    ignores=$(grep '^ignore:' "$sched" || true)
    prepare_db "$db" "$side" || return 1
    if [ "$side" = torii ]; then
        # the access methods the extension creates (for the normalization rules)
        psql_pg -d "$db" -F' ' -Atc "SELECT a.oid, a.amname FROM pg_am a
                                     JOIN pg_depend d ON d.classid = 'pg_am'::regclass AND d.objid = a.oid
                                          AND d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
                                     JOIN pg_extension e ON e.oid = d.refobjid
                                     WHERE e.extname = 'torii' ORDER BY 1" >"$out/ext-ams.txt" 2>/dev/null || true
    fi
    log "running $suite on $side ($( [ "$QUICK" = 1 ] && echo quick subset || echo full schedule ), ${#groups[@]} groups)"
    mark_log
    t0=$(date +%s)
    deadline=$((t0 + PHASE_TIMEOUT))
    : >"$out/stdout.txt"; : >"$out/stderr.txt"; : >"$out/all.diffs"
    # One pg_regress invocation per schedule group (keeping the group's parallelism): after a
    # backend crash the server spends seconds in recovery, and a single invocation would fail
    # every later test on "not yet accepting connections"; here we wait for the server between
    # groups, so a crash costs only the group it happened in (and what depends on it).
    for group in "${groups[@]}"; do
        n=$((n + 1))
        left=$((deadline - $(date +%s)))
        if [ "$left" -le 0 ]; then
            echo "TIMEOUT after ${PHASE_TIMEOUT}s, before group $n: $group" >>"$out/stderr.txt"
            log "  $suite on $side TIMED OUT after ${PHASE_TIMEOUT}s (groups from $n on not run)"
            break
        fi
        { [ -n "$ignores" ] && echo "$ignores"; echo "test: $group"; } >"$out/group.schedule"
        chown "$PGUSER_OS" "$out/group.schedule"
        rc=0
        gt=$GROUP_TIMEOUT; [ "$left" -lt "$gt" ] && gt=$left
        # pg_regress runs as the OS user owning the cluster: results/ must be writable by the
        # server too (COPY ... TO files under --outputdir). In the background + wait, so that
        # INT/TERM reach our trap at once.
        (cd "$out" && runuser_or_exec timeout -k 30 "$gt" "$driver" \
            --use-existing --host="$SOCK" --port="$PORT" --dbname="$db" \
            --bindir="$TEST_BINDIR" --dlpath="$WORK/lib" \
            --inputdir="$indir" --outputdir="$out" \
            --schedule="$out/group.schedule") >>"$out/stdout.txt" 2>>"$out/stderr.txt" &
        PHASE_PID=$!
        wait "$PHASE_PID" || rc=$?
        PHASE_PID=""
        [ -f "$out/regression.diffs" ] && cat "$out/regression.diffs" >>"$out/all.diffs"
        rm -f "$out/regression.diffs"
        if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
            # the group hung: its unfinished tests fail, its backends go, the phase goes on
            echo >>"$out/stdout.txt"
            local t
            for t in $group; do
                grep -qE "^(test +| +)$t +\.\.\. +(ok|FAILED|failed)" "$out/stdout.txt" \
                    || echo "     $t ... FAILED (timed out after ${gt}s)" >>"$out/stdout.txt"
            done
            echo "HANG: group $n ($group) timed out after ${gt}s" >>"$out/stderr.txt"
            log "  group $n ($group) timed out after ${gt}s"
            stop_stuck_backends "$db" "$out"
            if [ "$gt" -lt "$GROUP_TIMEOUT" ]; then
                echo "TIMEOUT after ${PHASE_TIMEOUT}s, in group $n: $group" >>"$out/stderr.txt"
                log "  $suite on $side TIMED OUT after ${PHASE_TIMEOUT}s (in group $n)"
                break
            fi
            continue
        fi
        if [ "$rc" != 0 ]; then
            ensure_server || break
        fi
    done
    mv "$out/all.diffs" "$out/regression.diffs"
    [ -s "$out/regression.diffs" ] || rm -f "$out/regression.diffs"
    PHASE_SECS[$side-$suite]=$(( $(date +%s) - t0 ))
    slice_log "$WORK/logs/$side-$suite.log"
    ok=$(grep -cE '\.\.\. ok ' "$out/stdout.txt" || true)
    fail=$(grep -cE '\.\.\. (FAILED|failed \(ignored\))' "$out/stdout.txt" || true)
    log "  done in ${PHASE_SECS[$side-$suite]}s: $ok ok, $fail failed"
    ensure_server || return 2
    if [ "$side" = torii ]; then
        # Which AMs do the tables left behind by the suite use? (Should be all torii except the
        # few tests that ask for heap explicitly.)
        psql_pg -d "$db" -F' ' -Atc "SELECT a.amname, count(*) FROM pg_class c JOIN pg_am a ON a.oid = c.relam
                               JOIN pg_namespace n ON n.oid = c.relnamespace
                               WHERE c.relkind IN ('r','m') AND n.nspname NOT IN ('pg_catalog','information_schema','pg_toast')
                               GROUP BY a.amname ORDER BY 1" >"$out/am-census.txt" 2>&1 || true
        psql_pg -d "$db" -Atc "SELECT 'heap tables: ' || coalesce(string_agg(n.nspname || '.' || c.relname, ' ' ORDER BY 1), 'none')
                               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                               WHERE c.relam = (SELECT oid FROM pg_am WHERE amname = 'heap') AND c.relkind IN ('r','m')
                               AND n.nspname NOT IN ('pg_catalog','information_schema','pg_toast')" >>"$out/am-census.txt" 2>&1 || true
        log "  tables/matviews left in $db by access method: $(head -n -1 "$out/am-census.txt" | tr '\n' ' ' | sed 's/^$/none/')"
        log "  $(tail -n 1 "$out/am-census.txt")"
    fi
    clean_globals
}

# After a group timed out, its backends may still be running (or spinning) and holding locks.
stop_stuck_backends() {   # stop_stuck_backends <db> <outdir>
    local db=$1 out=$2 left_over _
    psql_pg -d postgres -Atc "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                              WHERE datname = '$db' AND pid <> pg_backend_pid()" >/dev/null 2>&1 || true
    for _ in $(seq 15); do
        left_over=$(psql_pg -d postgres -Atc "SELECT count(*) FROM pg_stat_activity
                                              WHERE datname = '$db' AND pid <> pg_backend_pid()" 2>/dev/null || echo "?")
        [ "$left_over" = 0 ] && return 0
        sleep 1
    done
    echo "UNKILLABLE: $left_over backend(s) in $db ignored pg_terminate_backend for 15s; server restarted" >>"$out/stderr.txt"
    log "  $left_over backend(s) ignore pg_terminate_backend (a loop without CHECK_FOR_INTERRUPTS?); restarting the server"
    as_pg "$PGBIN/pg_ctl" -D "$PGDATA_DIR" -m immediate -w stop >/dev/null 2>&1 || true
    start_server 300 >/dev/null 2>&1 || true
    ensure_server || true
}

# After a crash the postmaster reinitializes by itself; wait for that, and if the server is gone
# (e.g. a PANIC during crash recovery) try one restart.
SERVER_DEAD=0
ensure_server() {
    local _
    for _ in $(seq 60); do psql_pg -d postgres -c "select 1" >/dev/null 2>&1 && return 0; sleep 1; done
    log "server does not answer; trying to restart it"
    start_server 300 >/dev/null 2>&1 || true
    psql_pg -d postgres -c "select 1" >/dev/null 2>&1 && return 0
    log "the server is down and does not restart (see $SERVER_LOG); remaining phases skipped"
    SERVER_DEAD=1
    return 1
}

SIDES=()
[ "$HEAP" = 1 ] && SIDES+=(heap)
[ "$TORII" = 1 ] && SIDES+=(torii)
SUITES=()
[ "$DO_REG" = 1 ] && SUITES+=(regress)
[ "$DO_ISO" = 1 ] && SUITES+=(isolation)

TORII_SKIPPED=0
for side in "${SIDES[@]}"; do
    for suite in "${SUITES[@]}"; do
        prc=0; run_phase "$side" "$suite" || prc=$?
        [ "$SERVER_DEAD" = 1 ] && break 2
        if [ "$prc" != 0 ]; then
            log "torii setup ($AM_SETUP; default_table_access_method = $AM) failed; skipping the torii run:"
            printf '    %s\n' "$TORII_ERROR"
            TORII_SKIPPED=1
            break
        fi
    done
done
T_END=$(date +%s)

# ---------------------------------------------------------------- 4-7. report, crashes, exit
report_args=(--work "$WORK" --am "$AM" --rules "$RULES" --baseline "$BASELINE" --known-crashes "$KNOWN_CRASHES"
             --sides "${SIDES[*]}" --suites "${SUITES[*]}")
[ "$QUICK" = 1 ] && report_args+=(--quick)
if [ "$WRITE_BASELINE" = 1 ]; then
    so=$($PG_CONFIG --pkglibdir)/torii.so
    report_args+=(--write-baseline --baseline-note "$(date -u +%Y-%m-%dT%H:%MZ), PostgreSQL $SERVER_VERSION, torii.so sha256 $(sha256sum "$so" 2>/dev/null | cut -c1-16)")
fi
[ "$TORII_SKIPPED" = 1 ] && report_args+=(--torii-skipped)
rc=0
python3 "$HERE/report.py" "${report_args[@]}" || rc=$?

if [ -n "$ARTIFACTS" ]; then
    mkdir -p "$ARTIFACTS"
    (
        cd "$WORK"
        for f in report.txt server.log logs diffs \
                 out/*/*/stdout.txt out/*/*/stderr.txt out/*/*/regression.diffs out/*/*/am-census.txt; do
            [ -e "$f" ] && cp -r --parents "$f" "$ARTIFACTS/"
        done
        true
    ) || log "copying artifacts failed"
    log "artifacts copied to $ARTIFACTS"
fi

echo
echo "timing: source+build $((T_BUILD - T_START))s, suites $((T_END - T_BUILD))s, total $(( $(date +%s) - T_START ))s"
for k in "${!PHASE_SECS[@]}"; do echo "  $k: ${PHASE_SECS[$k]}s"; done | sort
if [ "$SERVER_DEAD" = 1 ]; then
    echo "the server died and could not be restarted; the run is incomplete"
    rc=1
fi
if [ "$TORII_SKIPPED" = 1 ] && [ "$HEAP_ONLY" = 0 ]; then
    echo "torii run skipped: setting up access method $AM failed (see above; use --heap-only to run just heap)"
    [ "$rc" = 0 ] && rc=3
fi
exit $rc
