# syntax=docker/dockerfile:1
# The gateway's image (k8s/gateway.yaml runs it). Multi-stage: built with a pinned Rust
# toolchain, run on distroless (glibc, libgcc, CA certificates; no shell, no package manager)
# as uid 10001, with only the binary: the widget and the console are compiled into it.
#
#   docker build -t ghcr.io/chat-gateway/gateway:0.1.0 .
#   docker run -p 8080:8080 ghcr.io/chat-gateway/gateway:0.1.0
#
# The toolchain: 1.95.0, the one the project is built, tested and measured with
# (docs/benchmarks.md). The workspace's rust-version says 1.85, but Cargo.lock's dependencies
# need 1.88 or later.
FROM rust:1.95.0-bookworm AS build
WORKDIR /src
COPY . .
# The crate registry and target/ are BuildKit cache mounts: a rebuild after a change to the
# sources downloads nothing and recompiles only the workspace's own crates. The binary is
# copied out of the cache in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p gateway \
    && install -D -m 0755 target/release/gateway /out/gateway \
    && strip /out/gateway \
    && mkdir -p /out/data

# Debian 12 like the build stage, so the glibc the binary was linked against is there.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/gateway /usr/local/bin/gateway
# GATEWAY_DATA_DIR, owned by the user: a single node on the in-memory engine keeps its
# SQLite archive and state there (mount a volume on it to keep them).
COPY --from=build --chown=10001:10001 /out/data /data
USER 10001:10001
ENV GATEWAY_LISTEN=0.0.0.0:8080 \
    GATEWAY_DATA_DIR=/data
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/gateway"]
CMD ["serve"]
