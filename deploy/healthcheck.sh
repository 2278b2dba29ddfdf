#!/bin/bash
# secretless-healthcheck [PATH]: exit 0 when the broker's health server answers
# GET PATH (default /ready) with status 200, 1 otherwise. The container image
# uses it as its HEALTHCHECK: debian:bookworm-slim has no curl or wget, so
# this speaks HTTP/1.0 through bash's /dev/tcp. (The broker now has the same
# probe built in, `secretless-broker health -health-addr ADDR /ready`; this
# script is kept until the image switches to it.)
#
# SECRETLESS_HEALTH_ADDR (default 127.0.0.1:5335) must match the broker's
# -health-addr; a bare ":PORT" means 127.0.0.1:PORT.
set -u

path=${1:-/ready}
addr=${SECRETLESS_HEALTH_ADDR:-127.0.0.1:5335}
host=${addr%:*}
port=${addr##*:}
host=${host#[}
host=${host%]}
if [[ -z $host || $host == 0.0.0.0 ]]; then
	host=127.0.0.1
elif [[ $host == :: ]]; then
	host=::1
fi
if [[ ! $port =~ ^[0-9]+$ ]]; then
	echo "secretless-healthcheck: bad SECRETLESS_HEALTH_ADDR \"$addr\" (want HOST:PORT)" >&2
	exit 1
fi

if ! exec 3<>"/dev/tcp/$host/$port"; then
	echo "secretless-healthcheck: nothing listens on $host:$port" >&2
	exit 1
fi
printf 'GET %s HTTP/1.0\r\nHost: localhost\r\nConnection: close\r\n\r\n' "$path" >&3
status=""
if ! read -r -t 5 _ status _ <&3; then
	echo "secretless-healthcheck: no answer from $host:$port" >&2
	exit 1
fi
exec 3<&-
if [[ $status != 200 ]]; then
	echo "secretless-healthcheck: GET $path on $host:$port: status ${status:-none}" >&2
	exit 1
fi
exit 0
