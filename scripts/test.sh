#!/usr/bin/env bash
# The test command: every package of the broker and of the SDK module, with the
# race detector. Integration tests start real servers (PostgreSQL, Redis) and
# fail instead of skipping when SECRETLESS_REQUIRE_INTEGRATION=1.
set -euo pipefail
cd "$(dirname "$0")/.."
export CGO_ENABLED=1
go test -race -count=1 -timeout 25m ./... "$@"
(cd sdk && go test -race -count=1 ./...)
