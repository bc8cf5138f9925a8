#!/usr/bin/env bash
# Installs geckodriver (pinned; Mozilla publishes it on crates.io, Debian does not package
# it) into .tools/geckodriver/bin with cargo, unless that version is already there. The
# browser tier drives Debian's firefox-esr through it.
set -euo pipefail
cd "$(dirname "$0")/.."
version=0.37.1
bin=.tools/geckodriver/bin/geckodriver
if [[ -x $bin ]] && [[ $("$bin" --version | head -1) == "geckodriver $version"* ]]; then
  exit 0
fi
cargo install --locked --quiet "geckodriver@$version" --root .tools/geckodriver
echo "installed geckodriver $version at $bin"
