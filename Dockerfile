# syntax=docker/dockerfile:1
#
# Static (musl) build of durabletask-sidecar on a distroless, non-root runtime.
#   docker build -t durabletask-sidecar .
#   docker run --rm -p 4001:4001 -v dt-data:/data durabletask-sidecar
# Needs BuildKit (default since Docker 23) for the cache mounts below.

ARG RUST_IMAGE=rust:1.95-bookworm
ARG TARGET=x86_64-unknown-linux-musl

FROM ${RUST_IMAGE} AS builder
ARG TARGET
# musl-gcc compiles the SQLite amalgamation bundled by libsqlite3-sys; protox (used by
# build.rs) is pure Rust, so no protoc is needed.
RUN apt-get update \
    && apt-get install -y --no-install-recommends musl-tools \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# rust-toolchain.toml pins the compiler: install it (and the musl target) in its own layer.
COPY rust-toolchain.toml ./
RUN rustup toolchain install && rustup target add "${TARGET}"

COPY Cargo.toml Cargo.lock build.rs ./
# Build settings of the C dependencies (mimalloc's arena commit, see the file).
COPY .cargo ./.cargo
COPY proto ./proto
COPY migrations ./migrations
COPY src ./src
# The dashboard's files, embedded in the binary (src/http/ui.rs).
COPY ui ./ui
# Cache mounts keep the registry and target dir across builds, so only our crate recompiles.
# Symbols stay for readable backtraces; DWARF debug info (profile.release.debug) is dropped.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    CARGO_PROFILE_RELEASE_STRIP=debuginfo \
    cargo build --release --locked --target "${TARGET}" \
    && install -D -m 0755 "target/${TARGET}/release/durabletask-sidecar" /out/durabletask-sidecar \
    && mkdir -p /out/data

FROM gcr.io/distroless/static-debian12:nonroot
LABEL org.opencontainers.image.title="durabletask-sidecar" \
      org.opencontainers.image.description="Durable Task sidecar (TaskHubSidecarService) on SQLite" \
      org.opencontainers.image.licenses="MIT"
COPY --from=builder /out/durabletask-sidecar /durabletask-sidecar
# A fresh named volume inherits this directory's owner, so the non-root user can write to it.
COPY --from=builder --chown=65532:65532 /out/data /data
USER 65532:65532
VOLUME /data
EXPOSE 4001 4002
# The binary is its own health probe (no shell in distroless): exit 0 while SERVING.
HEALTHCHECK --interval=10s --timeout=6s --start-period=5s \
    CMD ["/durabletask-sidecar", "health"]
# Exec form: the sidecar is PID 1 and handles SIGTERM itself (drains, then exits).
ENTRYPOINT ["/durabletask-sidecar"]
CMD ["--host", "0.0.0.0", "--port", "4001", "--http-port", "4002", "--db", "/data/durabletask.sqlite"]
