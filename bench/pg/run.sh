#!/usr/bin/env bash
# bench/pg/run.sh: pgbench directly against a throwaway PostgreSQL and through
# the broker's pg connector, in the same run, and print the ratios and the
# broker's CPU time per transaction.
#
#   bench/pg/run.sh                 # 10 s per run
#   DURATION=30 SCALE=10 bench/pg/run.sh
#   ONLY="c=8" bench/pg/run.sh      # only the runs whose label contains c=8
#   BROKER_GOMAXPROCS=1 bench/pg/run.sh
#   ROUNDS=5 ONLY="select-only c=8" bench/pg/run.sh   # medians of 5 interleaved rounds
#
# Needs the PostgreSQL server binaries (PG_BIN, default
# /usr/lib/postgresql/15/bin) and Go. Runs as root (the server then runs as
# the postgres user) or as an ordinary user. The server uses SCRAM-SHA-256,
# so every new direct connection pays libpq's key derivation, while the
# broker answers from its SCRAM key cache.
set -euo pipefail

PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
DURATION=${DURATION:-10}
SCALE=${SCALE:-10}
JOBS=${JOBS:-2}
REPO=$(cd "$(dirname "$0")/../.." && pwd)

for b in initdb postgres pgbench psql; do
  [[ -x $PG_BIN/$b ]] || { echo "missing $PG_BIN/$b (set PG_BIN)" >&2; exit 1; }
done

WORK=$(mktemp -d /tmp/pg-bench.XXXXXX)
BROKER_PID=
cleanup() {
  if [[ -n ${PGB_PID:-} ]]; then kill "$PGB_PID" 2>/dev/null || true; fi
  if [[ -n $BROKER_PID ]]; then kill "$BROKER_PID" 2>/dev/null || true; wait "$BROKER_PID" 2>/dev/null || true; fi
  # The postmaster's own pid (runuser stays in between when running as root).
  if [[ -s $WORK/data/postmaster.pid ]]; then
    local pid; pid=$(head -1 "$WORK/data/postmaster.pid")
    kill -INT "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

as_pg() {
  if [[ $(id -u) == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

mkdir -p "$WORK/data" "$WORK/sock"
[[ $(id -u) == 0 ]] && chown -R postgres: "$WORK"
PW=bench-$RANDOM-$RANDOM
echo "$PW" > "$WORK/pw"; [[ $(id -u) == 0 ]] && chown postgres: "$WORK/pw"

echo "== initdb"
as_pg "$PG_BIN/initdb" -D "$WORK/data" -U bench --pwfile="$WORK/pw" --auth-local=trust \
  --auth-host=scram-sha-256 --no-sync --no-instructions -E UTF8 --locale=C >/dev/null
# A second role logs in with trust over TCP: its -C rate is what the server
# manages when no client derives a SCRAM key, the ceiling for a proxy that
# opens one server session per client session.
as_pg sed -i '1i host all bench_trust 127.0.0.1/32 trust' "$WORK/data/pg_hba.conf"
PGPORT_DIRECT=$(free_port)
as_pg "$PG_BIN/postgres" -D "$WORK/data" -p "$PGPORT_DIRECT" -k "$WORK/sock" \
  -c listen_addresses=127.0.0.1 -c max_connections=100 -c fsync=off \
  -c synchronous_commit=off -c full_page_writes=off >"$WORK/postgres.log" 2>&1 &
for _ in $(seq 100); do
  "$PG_BIN/psql" -X -q -h "$WORK/sock" -p "$PGPORT_DIRECT" -U bench -d postgres -c 'select 1' >/dev/null 2>&1 && break
  sleep 0.1
done
"$PG_BIN/psql" -X -q -h "$WORK/sock" -p "$PGPORT_DIRECT" -U bench -d postgres -c 'create database bench' -c 'create role bench_trust login superuser' >/dev/null
echo "== pgbench -i -s $SCALE"
"$PG_BIN/pgbench" -q -i -s "$SCALE" -h "$WORK/sock" -p "$PGPORT_DIRECT" -U bench bench >/dev/null 2>&1

echo "== building the broker"
(cd "$REPO" && go build -o "$WORK/secretless-broker" ./cmd/secretless-broker)
BROKER_PORT=$(free_port)
POOL_PORT=$(free_port)
cat >"$WORK/secretless.yml" <<EOF
version: 2
services:
  pg:
    connector: pg
    listenOn: tcp://127.0.0.1:$BROKER_PORT
    credentials:
      host: 127.0.0.1
      port: $PGPORT_DIRECT
      username: {from: env, get: PGUSER_X}
      password: {from: env, get: PGPASS_X}
      sslmode: disable
  pg-pool:
    connector: pg
    listenOn: tcp://127.0.0.1:$POOL_PORT
    credentials:
      host: 127.0.0.1
      port: $PGPORT_DIRECT
      username: {from: env, get: PGUSER_X}
      password: {from: env, get: PGPASS_X}
      sslmode: disable
    config:
      serverPool: {maxIdle: 16}
EOF
# BROKER_GOMAXPROCS=1 runs the broker on one P (see docs/operations.md).
env ${BROKER_GOMAXPROCS:+GOMAXPROCS=$BROKER_GOMAXPROCS} PGUSER_X=bench PGPASS_X=$PW "$WORK/secretless-broker" -f "$WORK/secretless.yml" -health-addr "" \
  >"$WORK/broker.log" 2>&1 &
BROKER_PID=$!
for _ in $(seq 100); do
  "$PG_BIN/psql" -X -q -w -h 127.0.0.1 -p "$BROKER_PORT" -U x -d bench -c 'select 1' >/dev/null 2>&1 && break
  sleep 0.1
done
"$PG_BIN/psql" -X -q -w -h 127.0.0.1 -p "$BROKER_PORT" -U x -d bench -c 'select 1' >/dev/null || {
  echo "broker did not come up:" >&2; cat "$WORK/broker.log" >&2; exit 1; }

# pgbouncer, when installed, runs beside the broker as a reference (session
# pooling, so it too opens one server session per client session; its own
# CPU per transaction is printed as well). PGBOUNCER= leaves it out.
PGBOUNCER=${PGBOUNCER-$(command -v pgbouncer || true)}
PGB_PID=
if [[ -n $PGBOUNCER ]]; then
  PGB_PORT=$(free_port)
  mkdir -p "$WORK/pgb"
  cat >"$WORK/pgb/pgbouncer.ini" <<EOF
[databases]
bench = host=127.0.0.1 port=$PGPORT_DIRECT dbname=bench user=bench password=$PW
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $PGB_PORT
unix_socket_dir =
auth_type = trust
auth_file = $WORK/pgb/users.txt
pool_mode = session
max_client_conn = 200
default_pool_size = 50
logfile = $WORK/pgb/pgbouncer.log
pidfile = $WORK/pgb/pgbouncer.pid
EOF
  echo '"x" ""' >"$WORK/pgb/users.txt"
  [[ $(id -u) == 0 ]] && chown -R postgres: "$WORK/pgb"
  as_pg "$PGBOUNCER" -d "$WORK/pgb/pgbouncer.ini"
  for _ in $(seq 50); do [[ -s $WORK/pgb/pgbouncer.pid ]] && break; sleep 0.1; done
  PGB_PID=$(cat "$WORK/pgb/pgbouncer.pid")
fi

# cpu_ticks PID: user+system clock ticks used so far.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TICK=$(getconf CLK_TCK)

# run [--pool] LABEL PGBENCH-ARGS...: ROUNDS interleaved rounds of one direct,
# one brokered and (with pgbouncer, not for --pool) one pgbouncer run. It
# prints the median tps of each, the median of the rounds' ratios (each
# against the direct run of its own round, so that a busy neighbour slows
# both sides of a ratio alike), the range of those ratios when ROUNDS > 1,
# and each proxy's CPU over all rounds divided by its transactions.
ROUNDS=${ROUNDS:-1}
printf '\n%-24s %10s %10s %7s %9s %10s %7s %9s\n' "run" "direct" "broker" "ratio" "us/tx" "pgbouncer" "ratio" "us/tx"
median() { printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
span() { printf '%s\n' "$@" | sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 } END { printf "%.2f-%.2f", lo, hi }'; }
run() {
  local port=$BROKER_PORT
  if [[ $1 == --pool ]]; then port=$POOL_PORT; shift; fi
  local label=$1; shift
  if [[ -n ${ONLY:-} && $label != *$ONLY* ]]; then return; fi
  local pool="" r out_d out_b out_p tps_d tps_b tps_p tx c0 c1 p0 p1 line
  [[ $port == "$POOL_PORT" ]] && pool=1
  local -a D=() B=() P=() RB=() RP=()
  local ticks_b=0 tx_b=0 ticks_p=0 tx_p=0
  for ((r = 1; r <= ROUNDS; r++)); do
    out_d=$(PGPASSWORD=$PW "$PG_BIN/pgbench" -n -T "$DURATION" -j "$JOBS" -h 127.0.0.1 -p "$PGPORT_DIRECT" -U bench "$@" bench 2>&1)
    c0=$(cpu_ticks "$BROKER_PID")
    out_b=$("$PG_BIN/pgbench" -n -T "$DURATION" -j "$JOBS" -h 127.0.0.1 -p "$port" -U x "$@" bench 2>&1)
    c1=$(cpu_ticks "$BROKER_PID")
    tps_d=$(tps_of "$out_d")
    tps_b=$(tps_of "$out_b")
    tx=$(tx_of "$out_b")
    if [[ -z $tps_d || -z $tps_b || -z $tx ]]; then
      echo "$label: pgbench failed" >&2; echo "$out_d" >&2; echo "$out_b" >&2; exit 1
    fi
    D+=("$tps_d"); B+=("$tps_b"); RB+=("$(awk -v b="$tps_b" -v d="$tps_d" 'BEGIN { print b / d }')")
    ticks_b=$((ticks_b + c1 - c0)); tx_b=$((tx_b + tx))
    if [[ -n $PGB_PID && -z $pool ]]; then
      p0=$(cpu_ticks "$PGB_PID")
      out_p=$("$PG_BIN/pgbench" -n -T "$DURATION" -j "$JOBS" -h 127.0.0.1 -p "$PGB_PORT" -U x "$@" bench 2>&1)
      p1=$(cpu_ticks "$PGB_PID")
      tps_p=$(tps_of "$out_p")
      [[ -n $tps_p ]] || { echo "$label: pgbench through pgbouncer failed" >&2; echo "$out_p" >&2; exit 1; }
      P+=("$tps_p"); RP+=("$(awk -v p="$tps_p" -v d="$tps_d" 'BEGIN { print p / d }')")
      ticks_p=$((ticks_p + p1 - p0)); tx_p=$((tx_p + $(tx_of "$out_p")))
    fi
  done
  line=$(awk -v l="$label" -v d="$(median "${D[@]}")" -v b="$(median "${B[@]}")" -v r="$(median "${RB[@]}")" \
    -v c="$ticks_b" -v t="$tx_b" -v k="$TICK" \
    'BEGIN { printf "%-24s %10.0f %10.0f %6.2fx %9.1f", l, d, b, r, c / k * 1e6 / t }')
  if ((${#P[@]})); then
    line+=$(awk -v p="$(median "${P[@]}")" -v r="$(median "${RP[@]}")" -v c="$ticks_p" -v t="$tx_p" -v k="$TICK" \
      'BEGIN { printf " %10.0f %6.2fx %9.1f", p, r, c / k * 1e6 / t }')
  fi
  if ((ROUNDS > 1)); then
    line+="   broker $(span "${RB[@]}")"
    if ((${#RP[@]})); then line+=", pgbouncer $(span "${RP[@]}")"; fi
  fi
  echo "$line"
}
tps_of() { sed -n 's/^tps = \([0-9.]*\).*/\1/p' <<<"$1" | head -1; }
tx_of() { sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' <<<"$1"; }

run "select-only c=1"        -S -c 1
run "select-only c=8"        -S -c 8
run "tpc-b c=1"              -c 1
run "tpc-b c=8"              -c 8
run "select-only -C c=1"     -S -C -c 1
run "select-only -C c=8"     -S -C -c 8
trust_ceiling() {
  local label=$1; shift
  if [[ -n ${ONLY:-} && $label != *$ONLY* ]]; then return; fi
  local s t
  s=$(tps_of "$(PGPASSWORD=$PW "$PG_BIN/pgbench" -n -T "$DURATION" -j "$JOBS" -h 127.0.0.1 -p "$PGPORT_DIRECT" -U bench "$@" bench 2>&1)")
  t=$(tps_of "$("$PG_BIN/pgbench" -n -T "$DURATION" -j "$JOBS" -h 127.0.0.1 -p "$PGPORT_DIRECT" -U bench_trust "$@" bench 2>&1)")
  [[ -n $s && -n $t ]] || { echo "$label: direct pgbench failed" >&2; exit 1; }
  awk -v l="$label" -v d="$s" -v b="$t" 'BEGIN { printf "%-24s %10.0f %10.0f %6.2fx   (direct with trust: no proxy)\n", l, d, b, b / d }'
}
trust_ceiling "-C c=1 trust ceiling"   -S -C -c 1
trust_ceiling "-C c=8 trust ceiling"   -S -C -c 8
run --pool "-C c=1 serverPool" -S -C -c 1
run --pool "-C c=8 serverPool" -S -C -c 8
echo
echo "(trust ceiling: direct -C as a role that logs in with trust, no key derivation anywhere;"
echo " a proxy without serverPool cannot exceed it;"
echo " serverPool: the service reuses server connections, see internal/connectors/pg/doc.go;"
echo " tps excludes initial connection time except with -C; us/tx is the proxy process's user+system"
echo " CPU divided by its transactions; a ratio is against the direct run of the same round, and"
echo " with ROUNDS > 1 tps and ratios are medians over the rounds;"
echo " DURATION=$DURATION s, ROUNDS=$ROUNDS, scale $SCALE, -j $JOBS)"
