#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs what the tests need when
# it is missing, then checks formatting and lints and runs every test.
#
# Needs: a Rust toolchain (cargo, rustfmt, clippy) and ../shared (the reference
# corpus) beside this repository.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -d ../shared/reference/corpus ]; then
  echo "test.sh: ../shared (the reference corpus) must sit beside this repository" >&2
  exit 1
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "test.sh: cargo is required (install Rust with rustup)" >&2
  exit 1
fi

cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --workspace --locked
