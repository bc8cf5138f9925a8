#!/usr/bin/env bash
# The test command: formatting, lints, docs, then every test in the workspace. The real chaos
# tests need Toxiproxy: it is installed first (pinned, with the Go tool, into .tools/),
# unless TOXIPROXY_URL names one already running on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The module maps (`//!`) are the layout's documentation: their links must resolve.
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked --quiet
if [[ -z ${TOXIPROXY_URL:-} ]]; then
  ci/install-toxiproxy.sh
fi
cargo test --workspace --locked
