#!/usr/bin/env bash
# Builds the statically linked release binary that the distroless image ships
# (glibc with crt-static: no shared libraries needed at run time; glibc >= 2.34
# resolves names through /etc/hosts and DNS without NSS plugins), then proves
# it: `ldd` must report a static executable and `--help` must run with no
# libraries at all (inside an empty chroot when we are root).
set -euo pipefail
cd "$(dirname "$0")/.."

target="$(rustc -vV | sed -n 's/^host: //p')"
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
  cargo build --release --locked --target "$target" --bin stageset-controller
bin="target/$target/release/stageset-controller"

echo "== static binary: $bin ($(du -h "$bin" | cut -f1))"
ldd_out="$(ldd "$bin" 2>&1 || true)"
echo "ldd: $ldd_out"
case "$ldd_out" in
  *"statically linked"*|*"not a dynamic executable"*) ;;
  *) echo "error: $bin is dynamically linked" >&2; exit 1 ;;
esac
"$bin" --help > /dev/null
if [ "$(id -u)" = 0 ] && command -v chroot > /dev/null; then
  root="$(mktemp -d)"
  trap 'rm -rf "$root"' EXIT
  cp "$bin" "$root/stageset-controller"
  chroot "$root" /stageset-controller --help > /dev/null
  chroot "$root" /stageset-controller --version
  echo "runs with no shared libraries (empty chroot)"
fi
