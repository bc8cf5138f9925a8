#!/usr/bin/env bash
# Installs nats-server (pinned) into .tools/bin/nats-server with the Go tool, unless that
# version is already there. Cluster mode's tests and ci/cluster.sh start it on loopback.
# v2.15.x carries the JetStream durability fixes found since Jepsen's 2.12.1 analysis.
set -euo pipefail
cd "$(dirname "$0")/.."
version=v2.15.3
bin=.tools/bin/nats-server
stamp=$bin.version
if [[ -x $bin && -f $stamp && $(cat "$stamp") == "$version" ]]; then
  exit 0
fi
if ! command -v go >/dev/null; then
  echo "install-nats: the Go tool is needed (apt-get install golang-go)" >&2
  exit 1
fi
mkdir -p .tools/bin .tools/gobin
GOBIN="$PWD/.tools/gobin" GOFLAGS=-buildvcs=false go install "github.com/nats-io/nats-server/v2@$version"
mv .tools/gobin/nats-server "$bin"
echo "$version" >"$stamp"
echo "installed nats-server $version at $bin"
