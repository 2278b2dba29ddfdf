#!/usr/bin/env bash
# demo/run.sh: build secretless-broker and the example redis plugin, start a
# throwaway password-protected redis-server, put the broker in front of it,
# and talk to Redis through the broker with no password on the client side.
#
# Usage (from anywhere): demo/run.sh
# Everything it creates lives in demo/tmp/ and every process it starts is
# stopped on exit.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
TMP=demo/tmp

say() { printf '\n==> %s\n' "$*"; }
die() { printf 'demo: %s\n' "$*" >&2; exit 1; }

REDIS_PID=""
BROKER_PID=""
cleanup() {
	local rc=$?
	if [[ -n $BROKER_PID ]]; then kill "$BROKER_PID" 2>/dev/null || true; wait "$BROKER_PID" 2>/dev/null || true; fi
	if [[ -n $REDIS_PID ]]; then kill "$REDIS_PID" 2>/dev/null || true; wait "$REDIS_PID" 2>/dev/null || true; fi
	if [[ $rc -ne 0 && -s $TMP/broker.log ]]; then
		printf '\n--- broker log (%s) ---\n' "$TMP/broker.log" >&2
		tail -n 40 "$TMP/broker.log" >&2
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# port_open PORT: true when something accepts TCP connections on 127.0.0.1:PORT.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# free_port: print a port nothing listens on (another process could still take
# it before we do; the servers below fail loudly if that happens).
free_port() {
	local p
	for _ in $(seq 100); do
		# Below the kernel's ephemeral range (32768 and up by default), where
		# a port can be taken by an outgoing connection without listening.
		p=$((20000 + RANDOM % 12000))
		if ! port_open "$p"; then echo "$p"; return; fi
	done
	die "no free port found"
}

# wait_for DESCRIPTION PID COMMAND...: poll COMMAND until it succeeds, for at
# most 15 s, failing early if process PID exits.
wait_for() {
	local what=$1 pid=$2; shift 2
	for _ in $(seq 150); do
		if "$@"; then return; fi
		kill -0 "$pid" 2>/dev/null || die "$what exited before it was ready"
		sleep 0.1
	done
	die "$what not ready after 15 s"
}

say "installing redis-server if needed"
if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
	[[ $(id -u) -eq 0 ]] || die "redis-server/redis-cli missing; install them (apt-get install -y redis-server) or run as root"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
fi
redis-server --version

say "building the broker and the redis plugin"
rm -rf "$TMP"
mkdir -p "$TMP/plugins"
go build -o "$TMP/secretless-broker" ./cmd/secretless-broker
CGO_ENABLED=1 go build -buildmode=plugin -o="$TMP/plugins/redis.so" ./examples/plugins/redis
sha256sum "$TMP"/plugins/* > "$TMP/PLUGINS_SHA256SUM.txt"
cat "$TMP/PLUGINS_SHA256SUM.txt"

say "starting a throwaway redis-server with a random password"
REDIS_PORT=$(free_port)
REDIS_PASSWORD=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
mkdir -p "$TMP/redis"
# The password goes in through a config file on stdin, not argv, so that ps
# does not show it.
for attempt in 1 2 3; do
	printf 'requirepass %s\n' "$REDIS_PASSWORD" |
		redis-server - --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$TMP/redis" \
			--save '' --appendonly no --daemonize no >"$TMP/redis.log" 2>&1 &
	REDIS_PID=$!
	# Another process may take the port between the check and the bind: retry.
	if ! grep -q "Address already in use" <(sleep 0.3; cat "$TMP/redis.log") || [[ $attempt -eq 3 ]]; then break; fi
	wait "$REDIS_PID" 2>/dev/null || true
	REDIS_PORT=$(free_port)
done
wait_for redis-server "$REDIS_PID" port_open "$REDIS_PORT"
echo "redis-server on 127.0.0.1:$REDIS_PORT (pid $REDIS_PID)"
printf 'without the broker, no password:  redis-cli -p %s ping -> %s\n' \
	"$REDIS_PORT" "$(redis-cli -p "$REDIS_PORT" ping 2>&1)"

say "writing $TMP/secretless.yml"
LISTEN_PORT=$(free_port)
HEALTH_PORT=$(free_port)
cat >"$TMP/secretless.yml" <<YAML
version: 2
services:
  redis:
    connector: redis
    listenOn: tcp://127.0.0.1:$LISTEN_PORT
    credentials:
      host: 127.0.0.1
      port: "$REDIS_PORT"
      password:
        from: env
        get: REDIS_PASSWORD
YAML
cat "$TMP/secretless.yml"

say "starting secretless-broker"
REDIS_PASSWORD=$REDIS_PASSWORD "$TMP/secretless-broker" \
	-f "$TMP/secretless.yml" -p "$TMP/plugins/" -s "$TMP/PLUGINS_SHA256SUM.txt" \
	-health-addr "127.0.0.1:$HEALTH_PORT" >"$TMP/broker.log" 2>&1 &
BROKER_PID=$!
wait_for secretless-broker "$BROKER_PID" port_open "$LISTEN_PORT"
echo "broker listening on 127.0.0.1:$LISTEN_PORT (pid $BROKER_PID, health on 127.0.0.1:$HEALTH_PORT, log in $TMP/broker.log)"

say "talking to redis through the broker, with no password"
KEY="demo:greeting"
VALUE="hello from secretless $(date +%s)"
PING=$(redis-cli -p "$LISTEN_PORT" ping)
SET=$(redis-cli -p "$LISTEN_PORT" set "$KEY" "$VALUE")
GET=$(redis-cli -p "$LISTEN_PORT" get "$KEY")
printf '  redis-cli -p %s ping             -> %s\n' "$LISTEN_PORT" "$PING"
printf '  redis-cli -p %s set %s "..." -> %s\n' "$LISTEN_PORT" "$KEY" "$SET"
printf '  redis-cli -p %s get %s       -> %s\n' "$LISTEN_PORT" "$KEY" "$GET"

[[ $PING == PONG ]] || die "ping through the broker said '$PING', want PONG"
[[ $SET == OK ]] || die "set through the broker said '$SET', want OK"
[[ $GET == "$VALUE" ]] || die "get through the broker said '$GET', want '$VALUE'"

say "demo passed: the client never saw the password; stopping everything"
