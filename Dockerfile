# syntax=docker/dockerfile:1
# pika-ttl-proxy container image.
#
#   docker build -t pika-ttl-proxy .
#   docker run -e PIKA_TTL_PROXY_MASTER=redis-master:6379 -p 6380:6380 pika-ttl-proxy        # Redis relay
#   docker run -e PIKA_TTL_PROXY_LISTEN=0.0.0.0:9221 -e PIKA_TTL_PROXY_MASTER=pika-master:9221 \
#       -p 9221:9221 -p 11221:11221 -p 19222:19222 pika-ttl-proxy pika                    # Pika relay
#
# Every setting is an environment variable (PIKA_TTL_PROXY_*, see docs/configuration.md); the admin API
# stays on loopback unless PIKA_TTL_PROXY_ADMIN and an admin token are set.

FROM rust:1.95-bookworm AS build
WORKDIR /build
# Cargo.toml names every bench and example target, so the whole source tree is copied
# (.dockerignore keeps target/ and .git out).
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    cargo build --release --locked

FROM debian:bookworm-slim
RUN groupadd --system --gid 10001 proxy \
    && useradd --system --uid 10001 --gid proxy --home-dir /var/lib/pika-ttl-proxy \
       --shell /usr/sbin/nologin proxy \
    && mkdir -p /var/lib/pika-ttl-proxy \
    && chown proxy:proxy /var/lib/pika-ttl-proxy
COPY --from=build /build/target/release/pika-ttl-proxy /usr/local/bin/pika-ttl-proxy

ENV PIKA_TTL_PROXY_LISTEN=0.0.0.0:6380 \
    PIKA_TTL_PROXY_ADMIN=127.0.0.1:9121 \
    PIKA_TTL_PROXY_STATE_DIR=/var/lib/pika-ttl-proxy \
    PIKA_TTL_PROXY_LOG_FORMAT=json \
    PIKA_TTL_PROXY_LOG_LEVEL=info

# Redis relay listen port; Pika relay P, P+2000, P+10001 (with P = 9221); admin API.
EXPOSE 6380 9221 11221 19222 9121
VOLUME ["/var/lib/pika-ttl-proxy"]
USER 10001:10001
# No address here: the probe reads PIKA_TTL_PROXY_ADMIN like the relay does, so it follows
# a moved admin port (a wildcard address is probed on loopback).
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["pika-ttl-proxy", "healthcheck"]
ENTRYPOINT ["pika-ttl-proxy"]
CMD ["redis"]
