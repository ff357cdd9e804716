# framecast-router image. Build from the repository root:
#   docker build -f docker/router.Dockerfile -t framecast-router:0.1.0 .
# Runs as uid 10001 in a distroless image; the config comes from the Helm chart's ConfigMap
# (or mount your own at /etc/framecast/router.yaml).

FROM rust:1.95-bookworm AS build
# pingora's zlib-ng and aws-lc builds need cmake (same as scripts/setup).
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake build-essential pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p framecast-router \
 && install -D target/release/framecast-router /out/framecast-router

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/framecast-router /usr/local/bin/framecast-router
COPY config/router.yaml /etc/framecast/router.yaml
USER 10001:10001
EXPOSE 9000 9001
ENTRYPOINT ["/usr/local/bin/framecast-router"]
CMD ["--config", "/etc/framecast/router.yaml"]
