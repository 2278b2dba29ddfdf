#!/usr/bin/env bash
# HTTP forward-proxy benchmark: wrk sends absolute-form request URIs (as a
# proxy client does) through each system in interleaved rounds:
#   direct  - wrk straight to the target (the ceiling)
#   bare    - bench/http/bareproxy, a ~35-line httputil.ReverseProxy with the
#             default transport (the reference)
#   squid   - squid with request_header_add, when squid is installed
#   broker  - internal/httpproxy with a generic_http header connector
# For each system and response size it prints the median requests/s, the
# ratio to direct, proxy CPU per request (utime+stime from /proc), new target
# connections per 1000 requests, and the proxy's peak RSS (VmHWM).
#
# Usage: bench/http/run.sh            (ROUNDS=3 DUR=5 CONNS=64 THREADS=2 SIZES="small large")
# Needs: go, wrk (apt-get install wrk), curl, python3; squid optional.
# Client, target and proxies share the machine's CPUs: compare ratios.
set -euo pipefail
cd "$(dirname "$0")/../.."

ROUNDS=${ROUNDS:-3}
DUR=${DUR:-5}
CONNS=${CONNS:-64}
THREADS=${THREADS:-2}
SIZES=${SIZES:-"small large"}
BASE=${BASE_PORT:-18480}
TPORT=$BASE BAREPORT=$((BASE + 1)) SQUIDPORT=$((BASE + 2)) BROKERPORT=$((BASE + 3))

command -v wrk >/dev/null || { echo "wrk not installed (apt-get install -y wrk)" >&2; exit 1; }

work=$(mktemp -d)
chmod 777 "$work"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

echo "building..." >&2
go build -o "$work/target" ./bench/http/target
go build -o "$work/bareproxy" ./bench/http/bareproxy
go build -o "$work/brokerproxy" ./bench/http/brokerproxy

"$work/target" -listen 127.0.0.1:$TPORT 2>"$work/target.log" & pids+=($!)
"$work/bareproxy" -listen 127.0.0.1:$BAREPORT 2>"$work/bare.log" & BAREPID=$!; pids+=($BAREPID)
"$work/brokerproxy" -listen 127.0.0.1:$BROKERPORT 2>"$work/broker.log" & BROKERPID=$!; pids+=($BROKERPID)

systems="direct bare broker"
SQUIDPID=""
if command -v squid >/dev/null; then
  cat >"$work/squid.conf" <<EOF
http_port 127.0.0.1:$SQUIDPORT
http_access allow all
cache deny all
cache_mem 0 MB
access_log none
cache_log $work/squid-cache.log
pid_filename $work/squid.pid
coredump_dir $work
request_header_add X-Api-Key "bench-key" all
via off
forwarded_for delete
shutdown_lifetime 1 seconds
EOF
  squid -N -f "$work/squid.conf" >"$work/squid.out" 2>&1 & SQUIDPID=$!; pids+=($SQUIDPID)
  systems="direct bare squid broker"
else
  echo "squid not installed: skipping it" >&2
fi

wait_port() {
  for _ in $(seq 100); do
    curl -s -o /dev/null "http://127.0.0.1:$1/" && return 0
    sleep 0.1
  done
  echo "port $1 not ready" >&2; exit 1
}
for p in $TPORT $BAREPORT $BROKERPORT ${SQUIDPID:+$SQUIDPORT}; do wait_port "$p"; done
# Each proxy must add the header and reach the target.
for p in $BAREPORT $BROKERPORT ${SQUIDPID:+$SQUIDPORT}; do
  code=$(curl -s -o /dev/null -w '%{http_code}' -x "http://127.0.0.1:$p" "http://127.0.0.1:$TPORT/small")
  [ "$code" = 200 ] || { echo "proxy on $p answered $code" >&2; exit 1; }
done


clk=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
target_conns() { curl -s "http://127.0.0.1:$TPORT/stats"; }

results="$work/results.txt"
: >"$results"
run_one() { # system size
  local sys=$1 size=$2 pid="" url
  local abs="http://127.0.0.1:$TPORT/$size"
  case $sys in
    direct) url="http://127.0.0.1:$TPORT/$size" ;;
    bare) url="http://127.0.0.1:$BAREPORT/"; pid=$BAREPID ;;
    squid) url="http://127.0.0.1:$SQUIDPORT/"; pid=$SQUIDPID ;;
    broker) url="http://127.0.0.1:$BROKERPORT/"; pid=$BROKERPID ;;
  esac
  local c0 t0 out c1 t1
  c0=$(target_conns)
  t0=0; [ -n "$pid" ] && t0=$(cpu_ticks "$pid")
  if [ "$sys" = direct ]; then
    out=$(wrk -t"$THREADS" -c"$CONNS" -d"${DUR}s" "$url")
  else
    out=$(WRK_ABS_URL="$abs" wrk -t"$THREADS" -c"$CONNS" -d"${DUR}s" -s bench/http/abs.lua "$url")
  fi
  t1=0; [ -n "$pid" ] && t1=$(cpu_ticks "$pid")
  c1=$(target_conns)
  local rps reqs bad
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  reqs=$(awk '/requests in/ {print $1}' <<<"$out")
  bad=$(awk '/Non-2xx/ {print $NF}' <<<"$out"); bad=${bad:-0}
  errs=$(awk '/Socket errors/ {print $0}' <<<"$out")
  echo "$sys $size $rps $reqs $((t1 - t0)) $((c1 - c0)) $bad" >>"$results"
  printf '  %-6s %-5s %10s req/s  non-2xx %s %s\n' "$sys" "$size" "$rps" "$bad" "$errs" >&2
}

for r in $(seq "$ROUNDS"); do
  echo "round $r/$ROUNDS" >&2
  for size in $SIZES; do
    for sys in $systems; do run_one "$sys" "$size"; done
  done
done

rss() { [ -n "$1" ] && awk '/VmHWM/ {printf "%.1f", $2/1024}' "/proc/$1/status" || echo "-"; }
echo
echo "wrk -t$THREADS -c$CONNS -d${DUR}s, $ROUNDS interleaved rounds, medians; $(nproc) CPUs shared by client, target and proxy"
python3 - "$results" "$clk" "$(rss "$BAREPID")" "$(rss "${SQUIDPID:-}")" "$(rss "$BROKERPID")" <<'EOF'
import sys, statistics as st
path, clk, rss_bare, rss_squid, rss_broker = sys.argv[1], int(sys.argv[2]), *sys.argv[3:6]
rows = [l.split() for l in open(path) if l.strip()]
rss = {"bare": rss_bare, "squid": rss_squid, "broker": rss_broker, "direct": "-"}
by = {}
for sys_, size, rps, reqs, ticks, conns, bad in rows:
    by.setdefault((size, sys_), []).append((float(rps), int(reqs), int(ticks), int(conns), int(bad)))
print(f"{'size':6} {'system':7} {'req/s':>10} {'x direct':>9} {'x bare':>7} {'CPU us/req':>11} {'new conns/1k':>13} {'non-2xx':>8} {'peak RSS MiB':>13}")
for size in dict.fromkeys(r[1] for r in rows):
    direct = st.median(r[0] for r in by[(size, "direct")])
    bare = st.median(r[0] for r in by[(size, "bare")]) if (size, "bare") in by else None
    for sys_ in dict.fromkeys(r[0] for r in rows):
        runs = by.get((size, sys_))
        if not runs:
            continue
        rps = st.median(r[0] for r in runs)
        cpu = "-" if sys_ == "direct" else "%.0f" % st.median(r[2] / clk * 1e6 / max(r[1], 1) for r in runs)
        conns = st.median(r[3] * 1000 / max(r[1], 1) for r in runs)
        bad = sum(r[4] for r in runs)
        xb = "%.2f" % (rps / bare) if bare else "-"
        print(f"{size:6} {sys_:7} {rps:10.0f} {rps / direct:9.2f} {xb:>7} {cpu:>11} {conns:13.2f} {bad:8d} {rss[sys_]:>13}")
EOF
