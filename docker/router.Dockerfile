# syntax=docker/dockerfile:1.7
# framecast-router image. Build from the repository root (BuildKit, for the cache mounts):
#   docker build -f docker/router.Dockerfile -t framecast-router:0.1.0 .
# Runs as uid 10001 in a distroless image; the config comes from the Helm chart's ConfigMap
# (or mount your own at /etc/framecast/router.yaml).
#
# Base images are pinned by digest (tag@sha256:...); see docker/replica.Dockerfile for how to
# move to a newer one.
ARG RUST_IMAGE=rust:1.95-bookworm@sha256:6258907abe69656e41cd992e0b705cdcfabcbbe3db374f92ed2d47121282d4a1
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot@sha256:9dac0a79194e45a7da0158a9c6da57b217585af0786db3845d1f0ec1a0dd182f

FROM ${RUST_IMAGE} AS build
# pingora's zlib-ng and aws-lc builds need cmake (same as scripts/setup).
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake build-essential pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# Dependencies and incremental artefacts stay in BuildKit cache mounts between builds.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked -p framecast-router \
 && install -D target/release/framecast-router /out/framecast-router

FROM ${RUNTIME_IMAGE}
COPY --from=build /out/framecast-router /usr/local/bin/framecast-router
COPY config/router.yaml /etc/framecast/router.yaml
USER 10001:10001
EXPOSE 9000 9001
ENTRYPOINT ["/usr/local/bin/framecast-router"]
CMD ["--config", "/etc/framecast/router.yaml"]
