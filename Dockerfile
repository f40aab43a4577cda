# The runtime and the stack's plugins, for compose.yaml. Build: docker build -t sluice .
FROM rust:1.95-bookworm AS build
RUN rustup target add wasm32-wasip2
WORKDIR /src
COPY . .
RUN cargo build --release -p sluice-runtime \
 && cargo build --release --target wasm32-wasip2 -p mock -p producer -p enrich -p rollup

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/runtime /usr/local/bin/runtime
COPY --from=build /src/target/wasm32-wasip2/release/mock.wasm /src/target/wasm32-wasip2/release/producer.wasm /src/target/wasm32-wasip2/release/enrich.wasm /src/target/wasm32-wasip2/release/rollup.wasm /app/target/wasm32-wasip2/release/
COPY examples /app/examples
WORKDIR /app
# Compiled plugins are cached here; buckets default to /app/data when no endpoint is overridden.
ENV SLUICE_CACHE_DIR=/app/cache
ENTRYPOINT ["runtime"]
CMD ["run", "--config", "/app/examples/stack.toml"]
