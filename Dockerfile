# syntax=docker/dockerfile:1
# hookrelay container image. NOT built in CI (CI machines have no Docker engine); its build step
# is the same `cargo build --release --locked` that .ci/run runs, so a green CI means this
# compiles. Build from the repository root:
#
#   docker build -t hookrelay --build-arg HOOKRELAY_GIT_COMMIT=$(git rev-parse --short HEAD) .
#
# Configuration: HOOKRELAY_SECTION__KEY env vars (below), or mount a file and point
# HOOKRELAY_CONFIG at it, e.g. -v ./hookrelay.toml:/etc/hookrelay/hookrelay.toml:ro
# -e HOOKRELAY_CONFIG=/etc/hookrelay/hookrelay.toml. Check it with `hookrelay config show`.

ARG RUST_VERSION=1.95
# The full image brings gcc, make and git; pingora's zlib-ng build also needs cmake.
FROM rust:${RUST_VERSION}-bookworm AS build
# Unpinned on purpose: Debian point releases replace old versions (hadolint DL3008).
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The build context has no .git (see .dockerignore), so the commit comes from this build argument;
# build.rs falls back to "unknown" without it.
ARG HOOKRELAY_GIT_COMMIT=""
# Cache mounts keep the registry and target/ between builds; the binary is copied out of the
# cached target/ because cache mounts are not part of the image. Stripping drops the release
# profile's line tables (kept for local profiling): about 97 MB down to 13 MB.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
 && cp target/release/hookrelay /usr/local/bin/hookrelay \
 && strip /usr/local/bin/hookrelay

FROM debian:bookworm-slim
# reqwest verifies receivers' certificates against the system CA store
# (rustls-platform-verifier), so the store must exist.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /data --no-create-home hookrelay \
 && mkdir -p /data /etc/hookrelay \
 && chown hookrelay:hookrelay /data
COPY --from=build /usr/local/bin/hookrelay /usr/local/bin/hookrelay

# Inside a container the listeners must bind all interfaces to be reachable from the app's
# container and from probes. Ingest has no authentication: never publish 7700 beyond the app
# (in a Kubernetes pod, where the app shares localhost, set HOOKRELAY_INGEST__LISTEN=127.0.0.1:7700).
ENV HOOKRELAY_INGEST__LISTEN=0.0.0.0:7700 \
    HOOKRELAY_ADMIN__LISTEN=0.0.0.0:7701 \
    HOOKRELAY_STORE__PATH=/data
# The store (pending webhooks and their history) lives here: keep it on a persistent volume.
VOLUME /data
WORKDIR /data
EXPOSE 7700 7701
# Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001

# The binary probes its own admin listener (/readyz); the image has no curl.
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["hookrelay", "healthcheck"]
# Exec form: hookrelay is PID 1 and receives SIGTERM itself, then drains for
# shutdown.grace_period (20 s). Give `docker stop` more than that: `docker stop -t 30`, or
# `stop_grace_period: 30s` in compose.
STOPSIGNAL SIGTERM
ENTRYPOINT ["hookrelay"]
CMD ["serve"]
