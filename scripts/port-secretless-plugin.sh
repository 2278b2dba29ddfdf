#!/bin/sh
# scripts/port-secretless-plugin.sh DIR: port a connector plugin written for
# the CyberArk Secretless Broker (pluginAPIVersion 0.1.0) to this broker's
# SDK, in place. Only import paths change:
#
#   github.com/cyberark/secretless-broker/pkg/secretless/plugin/connector/tcp
#       -> github.com/secretless-broker/secretless-broker/sdk/connector/tcp
#   github.com/cyberark/secretless-broker/pkg/secretless/plugin/connector/http
#       -> github.com/secretless-broker/secretless-broker/sdk/connector/http
#   github.com/cyberark/secretless-broker/pkg/secretless/plugin/connector
#       -> github.com/secretless-broker/secretless-broker/sdk/connector
#   github.com/cyberark/secretless-broker/pkg/secretless/log
#       -> github.com/secretless-broker/secretless-broker/sdk/log
#
# Every .go file under DIR is rewritten and then gofmt'ed (the new paths sort
# differently). If DIR has a go.mod, the requirement on
# github.com/cyberark/secretless-broker is replaced by one on the SDK. Any
# other import of github.com/cyberark/secretless-broker is not part of the
# plugin API; the script names those files and exits 1.
set -eu

if [ $# -ne 1 ] || [ ! -d "$1" ]; then
	echo "usage: scripts/port-secretless-plugin.sh DIR" >&2
	exit 2
fi
dir=$1
old=github.com/cyberark/secretless-broker/pkg/secretless
new=github.com/secretless-broker/secretless-broker/sdk
gofmt=$(go env GOROOT)/bin/gofmt

find "$dir" -name '*.go' -type f | while read -r f; do
	sed -i \
		-e "s#\"$old/plugin/connector/tcp\"#\"$new/connector/tcp\"#g" \
		-e "s#\"$old/plugin/connector/http\"#\"$new/connector/http\"#g" \
		-e "s#\"$old/plugin/connector\"#\"$new/connector\"#g" \
		-e "s#\"$old/log\"#\"$new/log\"#g" \
		"$f"
	"$gofmt" -w "$f"
done

if [ -f "$dir/go.mod" ]; then
	(cd "$dir" && go mod edit -droprequire=github.com/cyberark/secretless-broker -require=$new@v0.0.0)
fi

left=$(grep -rl --include='*.go' '"github.com/cyberark/secretless-broker' "$dir" || true)
if [ -n "$left" ]; then
	echo "these files still import github.com/cyberark/secretless-broker packages outside the plugin API:" >&2
	echo "$left" >&2
	exit 1
fi
echo "ported $dir; now point the SDK requirement at the broker's copy (secretless-broker plugins env prints the go.mod lines)"
