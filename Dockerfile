# syntax=docker/dockerfile:1
#
# The chat image: `chat-server` (the entrypoint) and the `chat` console client.
#
#   docker build -t chat:local .
#   docker run --rm -p 127.0.0.1:5000:5000 chat:local
#   docker run --rm -it --no-healthcheck --entrypoint chat chat:local \
#     --server http://HOST:5000 --name alice
#
# Configuration is the server's usual `CHAT_*` environment (README.md,
# "Configuration"); `compose.yaml` runs two instances behind Redis.

# ---- build ------------------------------------------------------------------
# No protoc (protox compiles the .proto in Rust) and no C libraries are needed:
# the slim Rust image's gcc/libc6-dev for linking is enough.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src

# Only what the build reads, so edits to docs or compose files reuse the cache.
COPY Cargo.toml Cargo.lock ./
COPY proto ./proto
COPY crates ./crates

# BuildKit cache mounts keep the crates.io downloads and the compiled
# dependencies between builds; the binaries are copied out of the cached
# target directory in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --bin chat-server --bin chat \
 && mkdir -p /out \
 && cp target/release/chat-server target/release/chat /out/

# ---- run --------------------------------------------------------------------
# Same Debian release as the builder, so the glibc the binaries link against
# is there; nothing else is needed (no TLS roots: Redis and gRPC are plain TCP).
FROM debian:bookworm-slim AS runtime

RUN groupadd --system --gid 10001 chat \
 && useradd --system --uid 10001 --gid chat --no-create-home \
            --home-dir /nonexistent --shell /usr/sbin/nologin chat

COPY --from=build /out/chat-server /out/chat /usr/local/bin/

# The default store is SQLite at ./data/chat.db: give the user a writable
# working directory (mount a volume on /var/lib/chat/data to keep history).
RUN mkdir -p /var/lib/chat/data && chown -R 10001:10001 /var/lib/chat
WORKDIR /var/lib/chat

USER 10001:10001

# Listen on every interface inside the container (the default is loopback).
ENV CHAT_LISTEN=0.0.0.0:5000
EXPOSE 5000

# `chat-server healthcheck` reads the same configuration, probes
# GET /health/ready on the listen address (0.0.0.0 is probed on loopback) and
# exits 0 only when the instance is ready (which includes its backplane).
HEALTHCHECK --interval=5s --timeout=4s --start-period=10s --retries=3 \
    CMD ["chat-server", "healthcheck"]

# On SIGTERM (`docker stop`) the server tells its clients, drains for up to
# shutdown.drain_timeout (10s) and exits 0; `docker stop` kills after 10s
# unless given more (`--time 15`; compose.yaml sets stop_grace_period).
STOPSIGNAL SIGTERM
ENTRYPOINT ["chat-server"]
