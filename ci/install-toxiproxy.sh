#!/usr/bin/env bash
# Installs Shopify's Toxiproxy server (pinned) into .tools/bin/toxiproxy-server with the Go
# tool, unless that version is already there. The chaos tests start it on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
version=v2.12.0
bin=.tools/bin/toxiproxy-server
stamp=$bin.version
if [[ -x $bin && -f $stamp && $(cat "$stamp") == "$version" ]]; then
  exit 0
fi
if ! command -v go >/dev/null; then
  echo "install-toxiproxy: the Go tool is needed (apt-get install golang-go)" >&2
  exit 1
fi
# Toxiproxy v2.12.0's go.mod asks for Go 1.23; older Go tools cannot fetch a newer one.
go_minor=$(go env GOVERSION | sed -E 's/^go1\.([0-9]+).*/\1/')
if ((go_minor < 23)); then
  echo "install-toxiproxy: Toxiproxy $version needs Go >= 1.23, found $(go env GOVERSION)" >&2
  exit 1
fi
mkdir -p .tools/bin .tools/gobin
GOBIN="$PWD/.tools/gobin" GOFLAGS=-buildvcs=false go install "github.com/Shopify/toxiproxy/v2/cmd/server@$version"
mv .tools/gobin/server "$bin"
echo "$version" >"$stamp"
echo "installed Toxiproxy $version at $bin"
