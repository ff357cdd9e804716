# framecast-replica image. Build from the repository root:
#   docker build -f docker/replica.Dockerfile -t framecast-replica:0.1.0 .
# libtorch comes from PyPI's torch wheel (the version scripts/requirements.txt pins for tch),
# GStreamer from Debian packages, exactly as scripts/setup installs them. Runs as uid 10001.
# For NVIDIA GPUs, run on nodes with the NVIDIA container toolkit; the CUDA wheel's own
# libraries (nvidia-* packages) are copied with libtorch.

ARG TORCH_VERSION=2.13.0

FROM rust:1.95-bookworm AS build
ARG TORCH_VERSION
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      cmake build-essential pkg-config python3-venv \
      libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev \
 && rm -rf /var/lib/apt/lists/*
# The same path in both stages: the binary's rpath points at libtorch here.
RUN python3 -m venv /opt/framecast/.venv \
 && /opt/framecast/.venv/bin/pip install --no-cache-dir "torch==${TORCH_VERSION}" \
 && ln -s "$(ls -d /opt/framecast/.venv/lib/python3*/site-packages/torch)" /opt/framecast/.venv/libtorch
ENV LIBTORCH=/opt/framecast/.venv/libtorch
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p framecast-replica \
 && install -D target/release/framecast-replica /out/framecast-replica

FROM debian:bookworm-slim
# GStreamer runtime plugins the pipelines use: videoconvert/appsrc/appsink/opus (base),
# isomp4 (good), nvcodec/h264parse (bad), x264enc (ugly), avenc_aac (libav).
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      libgstreamer1.0-0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good \
      gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav \
      libgomp1 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin framecast
# libtorch (and, on CUDA wheels, the nvidia-* libraries next to it) from the build stage.
COPY --from=build /opt/framecast/.venv/lib /opt/framecast/.venv/lib
RUN ln -s "$(ls -d /opt/framecast/.venv/lib/python3*/site-packages/torch)" /opt/framecast/.venv/libtorch
COPY --from=build /out/framecast-replica /usr/local/bin/framecast-replica
COPY config/replica.yaml /etc/framecast/replica.yaml
# GStreamer writes its plugin registry cache under $HOME.
ENV HOME=/tmp
# What the NVIDIA container runtime mounts from the host driver: CUDA (compute), nvidia-smi/NVML
# (utility) and NVENC/NVDEC (video, which nvh264enc needs); without `video` the encoder is hidden.
ENV NVIDIA_DRIVER_CAPABILITIES=compute,utility,video
USER 10001:10001
EXPOSE 8000 8001
ENTRYPOINT ["/usr/local/bin/framecast-replica"]
CMD ["--config", "/etc/framecast/replica.yaml"]
