#!/bin/sh
# deploy/build.sh OUTDIR: build secretless-broker and its plugins from this
# checkout with one Go toolchain and one set of flags, then write the checksum
# file for the plugins. The container image (deploy/Dockerfile) runs exactly
# this script; run it on a host to get the same layout there.
#
# Writes:
#   OUTDIR/secretless-broker          the broker (cgo, dynamically linked)
#   OUTDIR/plugins/NAME.so            one plugin per package, NAME = the
#                                     package directory's base name
#   OUTDIR/PLUGINS_SHA256SUM.txt      sha256sum lines for OUTDIR/plugins/*.so
#
# Environment:
#   PLUGIN_PKGS     plugin package directories, relative to the repository
#                   root, separated by spaces (default: the example plugins)
#   GO_BUILD_FLAGS  extra "go build" flags, given to the broker and to every
#                   plugin alike (for example -trimpath); a plugin only loads
#                   into a broker built with the same flags
#   VERSION         the version "secretless-broker version" prints (default dev)
#
# A Go plugin loads only into a broker built by the same Go version, with the
# same flags, from the same source directory of every package they share.
# Building everything here, in one run, from one checkout, gives that by
# construction.
set -eu

if [ $# -ne 1 ]; then
	echo "usage: deploy/build.sh OUTDIR" >&2
	exit 2
fi
mkdir -p "$1/plugins"
out=$(cd "$1" && pwd)
cd "$(dirname "$0")/.."

# Plugins need cgo on both sides: a broker built without it cannot open them.
export CGO_ENABLED=1
plugin_pkgs=${PLUGIN_PKGS:-./examples/plugins/redis ./examples/plugins/bearer}
go_build_flags=${GO_BUILD_FLAGS:-}
ldflags="-X=github.com/secretless-broker/secretless-broker/internal/cli.Version=${VERSION:-dev}"

# The flags of the two "go build" lines below must stay identical apart from
# -buildmode=plugin, -o and the package (deploy/deploy_test.go checks it).
# go_build_flags is unquoted on purpose: it holds several words.
# shellcheck disable=SC2086
go build $go_build_flags -ldflags="$ldflags" -o "$out/secretless-broker" ./cmd/secretless-broker

rm -f "$out"/plugins/*.so
for pkg in $plugin_pkgs; do
	name=$(basename "$pkg")
	# shellcheck disable=SC2086
	go build $go_build_flags -ldflags="$ldflags" -buildmode=plugin -o "$out/plugins/$name.so" "$pkg"
done

# Bare file names, so the file is valid wherever the plugin directory is
# mounted; the broker matches entries to plugin files by base name.
(cd "$out/plugins" && sha256sum -- *.so) >"$out/PLUGINS_SHA256SUM.txt"
cat "$out/PLUGINS_SHA256SUM.txt"
