#!/usr/bin/env bash
# The test command: formatting, lints, docs, then every test in the workspace. The real chaos
# tests need Toxiproxy and cluster mode's tests nats-server: both are installed first
# (pinned, with the Go tool, into .tools/), unless TOXIPROXY_URL names a Toxiproxy already
# running on loopback or NATS_SERVER_BIN a nats-server binary. The browser tier needs
# Debian's chromium, chromium-driver and firefox-esr, and geckodriver (pinned, built with
# cargo into .tools/ unless GECKODRIVER names one).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The module maps (`//!`) are the layout's documentation: their links must resolve.
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked --quiet
if [[ -z ${TOXIPROXY_URL:-} ]]; then
  ci/install-toxiproxy.sh
fi
if [[ -z ${NATS_SERVER_BIN:-} ]]; then
  ci/install-nats.sh
fi
if [[ -z ${GECKODRIVER:-} ]]; then
  ci/install-geckodriver.sh
fi
cargo test --workspace --locked
