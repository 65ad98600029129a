# syntax=docker/dockerfile:1
#
# The flotilla operator image: one statically linked binary on distroless/static, running as
# the distroless "nonroot" user (65532). No shell, no package manager, no libc.
#
#   docker build -t flotilla:dev .
#   docker run --rm flotilla:dev --help
#
# The binary is built for the musl target of the build machine's architecture, so that it
# links statically with no glibc/NSS dependency at run time (a statically linked glibc binary
# still loads NSS modules for DNS lookups, which distroless/static does not have). The crates'
# C code (ring, for TLS) is compiled with musl-gcc from Debian's musl-tools, named explicitly
# through CC_<target> because the cc crate otherwise looks for <arch>-linux-musl-gcc on arm64.
# Multi-arch images: `docker buildx build --platform linux/amd64,linux/arm64 .` builds each
# architecture natively (or under emulation).

ARG RUST_VERSION=1.95

FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS builder
RUN apt-get update \
    && apt-get install -y --no-install-recommends musl-tools \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# Cache mounts keep the registry and build artefacts between builds on the same machine;
# the binary is copied out of the cached target directory before the mount goes away.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    set -eux; \
    target="$(uname -m)-unknown-linux-musl"; \
    rustup target add "$target"; \
    env "CC_$(echo "$target" | tr - _)=musl-gcc" \
        cargo build --release --locked --target "$target" -p flotilla --bin flotilla; \
    install -D -m 0755 "target/$target/release/flotilla" /out/flotilla

FROM gcr.io/distroless/static-debian12:nonroot
LABEL org.opencontainers.image.title="flotilla" \
      org.opencontainers.image.description="Kubernetes operators for subscriptions, OTA firmware rollouts and campaigns" \
      org.opencontainers.image.source="https://github.com/flotilla-dev/flotilla" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /out/flotilla /usr/local/bin/flotilla
# Numeric, so that Kubernetes' runAsNonRoot check can verify it without a passwd lookup.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/flotilla"]
CMD ["run"]
