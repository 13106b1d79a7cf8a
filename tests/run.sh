#!/usr/bin/env bash
# The one test command: formatting, lints, then every test of the workspace (unit, integration,
# and the container tests in tests/, which build and run the lab through ./setup.sh).
#
# Container tests need a reachable docker engine; without one they skip with a reason, except
# under CI (CI=true), where they fail. Extra arguments go to `cargo test` (e.g. -- --ignored).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --all -- --check"
cargo fmt --all -- --check

# Unused dependencies: cargo-machete reads the sources (no build, about a second). A false
# positive goes in the crate's [package.metadata.cargo-machete] ignored list, with a reason.
step "cargo machete"
if ! command -v cargo-machete >/dev/null 2>&1; then
    echo "cargo-machete is missing: cargo install --locked cargo-machete (.ci/run installs it)" >&2
    exit 1
fi
cargo machete

step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo test --workspace --no-fail-fast"
cargo test --workspace --no-fail-fast "$@"
