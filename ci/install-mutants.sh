#!/usr/bin/env bash
# Installs cargo-mutants (pinned) into .tools/mutants/bin with cargo, unless that version is
# already there. ci/mutants.sh runs it; it is not part of ci/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
version=27.1.0
bin=.tools/mutants/bin/cargo-mutants
if [[ -x $bin ]] && [[ $("$bin" mutants --version) == "cargo-mutants $version" ]]; then
  exit 0
fi
cargo install --locked --quiet "cargo-mutants@$version" --root .tools/mutants
echo "installed cargo-mutants $version at $bin"
