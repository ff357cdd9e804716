# syntax=docker/dockerfile:1.7
# framecast-replica image. Build from the repository root (BuildKit, for the cache mounts):
#   docker build -f docker/replica.Dockerfile -t framecast-replica:0.1.0 .
# libtorch comes from PyPI's torch wheel (the version scripts/requirements.txt pins for tch),
# GStreamer from Debian packages, exactly as scripts/setup installs them. Runs as uid 10001.
# For NVIDIA GPUs, run on nodes with the NVIDIA container toolkit; the CUDA wheel's own
# libraries (nvidia-* packages) are copied with libtorch.
#
# Base images are pinned by digest (tag@sha256:...), so a rebuild starts from the same bytes.
# To move to a newer base, resolve the tag's current digest and pass or edit it, e.g.
#   docker buildx imagetools inspect rust:1.95-bookworm   (or: crane digest rust:1.95-bookworm)
#   docker build --build-arg RUST_IMAGE=rust:1.95-bookworm@sha256:<digest> ...
ARG RUST_IMAGE=rust:1.95-bookworm@sha256:6258907abe69656e41cd992e0b705cdcfabcbbe3db374f92ed2d47121282d4a1
ARG RUNTIME_IMAGE=debian:bookworm-slim@sha256:3783cc01769c7b2b1b83a5c5ad96c815348e28ed7da68e2e3687004faa906251
ARG TORCH_VERSION=2.11.0

FROM ${RUST_IMAGE} AS build
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
# What the runtime stage takes from the venv: libtorch and the CUDA libraries it loads, not
# the whole venv (triton, sympy, headers, static archives: gigabytes the binary never opens).
COPY docker/stage-libtorch.sh /usr/local/bin/stage-libtorch.sh
RUN sp="$(ls -d /opt/framecast/.venv/lib/python3*/site-packages)" \
 && stage-libtorch.sh "$sp" "/out/venv/${sp#/opt/framecast/.venv/}"
# The tiny random-weight model (replica.model.source.kind bundled in the Helm chart), built by
# the repository's own script with the pinned diffusers/transformers and a fixed seed, so it
# does not depend on a git-ignored models/ directory in the build context. Readable by the
# runtime user; its parity-test references stay behind.
COPY scripts/requirements.txt scripts/make_tiny_wan.py /src/scripts/
RUN /opt/framecast/.venv/bin/pip install --no-cache-dir \
      $(grep -E '^(diffusers|transformers|tokenizers|safetensors)==' /src/scripts/requirements.txt) \
 && /opt/framecast/.venv/bin/python /src/scripts/make_tiny_wan.py --out /out/models/wan-tiny \
 && rm -rf /out/models/wan-tiny/reference \
 && chmod -R a+rX /out/models
WORKDIR /src
COPY . .
# Dependencies and incremental artefacts stay in BuildKit cache mounts between builds, so a
# source change rebuilds the workspace crates, not the dependency tree.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked -p framecast-replica \
 && install -D target/release/framecast-replica /out/framecast-replica

FROM ${RUNTIME_IMAGE}
# GStreamer runtime plugins the pipelines use: videoconvert/appsrc/appsink/opus (base),
# isomp4 (good), nvcodec/h264parse (bad), x264enc (ugly), avenc_aac (libav).
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      libgstreamer1.0-0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good \
      gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav \
      libgomp1 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin framecast
# libtorch and the nvidia-* libraries, at the venv paths the binary's RUNPATH and libtorch's
# $ORIGIN-relative RUNPATH name.
COPY --from=build /out/venv/ /opt/framecast/.venv/
RUN ln -s "$(ls -d /opt/framecast/.venv/lib/python3*/site-packages/torch)" /opt/framecast/.venv/libtorch
COPY --from=build /out/models/wan-tiny /opt/framecast/models/wan-tiny
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
