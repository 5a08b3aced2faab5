# syntax=docker/dockerfile:1
#
# The stageset-controller image: one statically linked binary on distroless
# static, running as the nonroot user (UID/GID 65532) that the chart's
# securityContext expects. Build: `docker build -t stageset-controller .`

FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# glibc with crt-static: the binary needs no shared libraries (glibc >= 2.34
# resolves /etc/hosts and DNS names without NSS plugins). The script also checks
# the result with ldd and runs it in an empty chroot when possible.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    scripts/static-build.sh \
 && cp "target/$(rustc -vV | sed -n 's/^host: //p')/release/stageset-controller" /stageset-controller

FROM gcr.io/distroless/static:nonroot
COPY --from=build /stageset-controller /stageset-controller
USER 65532:65532
ENTRYPOINT ["/stageset-controller"]
