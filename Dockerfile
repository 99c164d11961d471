# The gateway image used by k8s/gateway.yaml. Multi-stage: build with the Rust toolchain,
# run on a slim Debian with only the binary (the widget and console are compiled into it).
#
#   docker build -t chat-gateway .
#   docker run -p 8080:8080 -e GATEWAY_LISTEN=0.0.0.0:8080 chat-gateway
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release -p gateway && strip target/release/gateway

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 gateway
COPY --from=build /src/target/release/gateway /usr/local/bin/gateway
USER gateway
EXPOSE 8080
ENV GATEWAY_LISTEN=0.0.0.0:8080
ENTRYPOINT ["/usr/local/bin/gateway"]
CMD ["serve"]
