"""The Dockerfiles cannot be built here (no container engine), so these tests keep them
consistent with what is proven to work: scripts/setup's packages, the pinned torch wheel, the
workspace's Rust version and the binaries' default ports."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import tomllib
import unittest
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
ROUTER = (ROOT / "docker" / "router.Dockerfile").read_text()
REPLICA = (ROOT / "docker" / "replica.Dockerfile").read_text()


def stages(dockerfile: str) -> list[str]:
    return re.split(r"^FROM ", dockerfile, flags=re.M)[1:]


def arg_defaults(dockerfile: str) -> dict[str, str]:
    """The global ARGs (before the first FROM) with their default values."""
    head = dockerfile.split("\nFROM ", 1)[0]
    return dict(re.findall(r"(?m)^ARG ([A-Z_]+)=(\S+)$", head))


def base_images(dockerfile: str) -> list[str]:
    """What each FROM starts from, ARGs resolved (a stage name stays a name)."""
    args = arg_defaults(dockerfile)
    images = []
    for ref in re.findall(r"(?m)^FROM (\S+)", dockerfile):
        images.append(re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m.group(1) or m.group(2), m.group(0)), ref))
    return images


SITE_PACKAGES = next((ROOT / ".venv" / "lib").glob("python3*/site-packages"))
STAGE_LIBTORCH = ROOT / "docker" / "stage-libtorch.sh"
# Libraries the base image (glibc, libstdc++, libgomp from Debian) or the host driver provides.
SYSTEM_LIBS = re.compile(r"^(libc|libm|libdl|librt|libpthread|ld-linux-x86-64|libstdc\+\+|libgcc_s|libcuda)\.so")


def needed(elf: Path) -> list[str]:
    out = subprocess.run(["readelf", "-d", str(elf)], capture_output=True, text=True, check=True).stdout
    return re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", out)


def setup_apt_packages() -> set[str]:
    text = (ROOT / "scripts" / "setup").read_text()
    block = re.search(r"APT_PACKAGES=\((.*?)\n\)", text, re.S).group(1)
    words = []
    for line in block.splitlines():
        words += line.split("#")[0].split()
    return set(words)


class Dockerfiles(unittest.TestCase):
    def test_torch_matches_the_pinned_wheel(self) -> None:
        pinned = re.search(r"^torch==(\S+)", (ROOT / "scripts/requirements.txt").read_text(), re.M).group(1)
        self.assertIn(f"ARG TORCH_VERSION={pinned}", REPLICA)

    def test_rust_image_satisfies_the_workspace_rust_version(self) -> None:
        need = tomllib.loads((ROOT / "Cargo.toml").read_text())["workspace"]["package"]["rust-version"]
        for dockerfile in (ROUTER, REPLICA):
            (image,) = [re.match(r"rust:([0-9.]+)-", i).group(1) for i in base_images(dockerfile) if i.startswith("rust:")]
            self.assertGreaterEqual(tuple(map(int, image.split("."))), tuple(map(int, need.split("."))))

    def test_runtime_has_the_gstreamer_plugins_setup_installs(self) -> None:
        runtime = stages(REPLICA)[-1]
        setup = setup_apt_packages()
        plugins = {p for p in setup if p.startswith("gstreamer1.0-") and p != "gstreamer1.0-tools"}
        self.assertTrue(plugins)
        for package in plugins:
            self.assertIn(package, runtime)
        build = stages(REPLICA)[0]
        for package in ("libgstreamer1.0-dev", "libgstreamer-plugins-base1.0-dev", "cmake"):
            self.assertIn(package, setup)
            self.assertIn(package, build)

    def test_images_run_as_non_root_on_the_default_ports(self) -> None:
        for dockerfile, config in ((ROUTER, "router"), (REPLICA, "replica")):
            final = stages(dockerfile)[-1]
            self.assertRegex(final, r"(?m)^USER 10001")
            settings = yaml.safe_load((ROOT / "config" / f"{config}.yaml").read_text())
            listen = settings["router"] if config == "router" else settings["server"]
            # The client port and the admin port (/status, /metrics, probes).
            self.assertRegex(final, rf"(?m)^EXPOSE {listen['port']} {listen['admin_port']}$")
            self.assertIn(f"COPY config/{config}.yaml /etc/framecast/{config}.yaml", final)

    def test_replica_image_asks_the_nvidia_runtime_for_the_video_capability(self) -> None:
        # nvh264enc needs the driver's NVENC libraries, mounted only with `video`.
        final = stages(REPLICA)[-1]
        caps = re.search(r"(?m)^ENV NVIDIA_DRIVER_CAPABILITIES=(\S+)$", final)
        self.assertIsNotNone(caps, "the runtime stage sets no NVIDIA_DRIVER_CAPABILITIES")
        self.assertTrue({"compute", "utility", "video"} <= set(caps.group(1).split(",")), caps.group(1))

    def test_every_base_image_is_pinned_by_digest(self) -> None:
        for name, dockerfile in (("router", ROUTER), ("replica", REPLICA)):
            images = base_images(dockerfile)
            self.assertEqual(len(images), 2, name)
            for image in images:
                # tag@sha256:<64 hex>: the tag says what it is, the digest what is pulled.
                self.assertRegex(image, r"^[a-z0-9./-]+:[\w.-]+@sha256:[a-f0-9]{64}$", f"{name}: {image}")
            # Every FROM names an ARG (so a build can move to a newer digest without an edit).
            for line in re.findall(r"(?m)^FROM .*$", dockerfile):
                self.assertRegex(line, r"^FROM \$\{[A-Z_]+\}( AS \w+)?$", name)
        self.assertEqual(base_images("ARG X=debian:bookworm-slim\nFROM ${X}\n"), ["debian:bookworm-slim"])

    def test_builds_cache_dependencies_between_source_changes(self) -> None:
        for name, dockerfile in (("router", ROUTER), ("replica", REPLICA)):
            build = stages(dockerfile)[0]
            self.assertTrue(dockerfile.startswith("# syntax=docker/dockerfile:1"), name)
            cargo = re.search(r"(?ms)^RUN (--mount.*?)cargo build", build)
            self.assertIsNotNone(cargo, name)
            for target in ("/usr/local/cargo/registry", "/usr/local/cargo/git", "/src/target"):
                self.assertIn(f"--mount=type=cache,target={target}", cargo.group(1), name)
            # The slow layers (apt, the torch wheel) come before the sources are copied.
            self.assertLess(build.index("apt-get install"), build.index("COPY . ."), name)
        build = stages(REPLICA)[0]
        self.assertLess(build.index('pip install --no-cache-dir "torch=='), build.index("COPY . ."))

    def test_runtime_takes_libtorch_and_cuda_libraries_not_the_venv(self) -> None:
        runtime = stages(REPLICA)[-1]
        copies = re.findall(r"(?m)^COPY --from=build (\S+) (\S+)$", runtime)
        self.assertEqual(
            copies,
            [
                ("/out/venv/", "/opt/framecast/.venv/"),
                ("/out/models/wan-tiny", "/opt/framecast/models/wan-tiny"),
                ("/out/framecast-replica", "/usr/local/bin/framecast-replica"),
            ],
        )
        self.assertRegex(stages(REPLICA)[0], r'stage-libtorch\.sh "\$sp" "/out/venv/\$\{sp#/opt/framecast/\.venv/\}"')

    def test_staged_libtorch_resolves_every_library_it_needs(self) -> None:
        """stage-libtorch.sh run over a shadow of this machine's venv (empty files with the same
        names): what it keeps is libtorch and the nvidia-* shared libraries, nothing else; and
        every library the replica binary and the kept libtorch files need is among them or is
        the system's."""
        self.assertTrue((SITE_PACKAGES / "torch" / "lib" / "libtorch_cpu.so").exists(), "run scripts/setup")
        with tempfile.TemporaryDirectory() as tmp:
            shadow, out = Path(tmp) / "site-packages", Path(tmp) / "out"
            for top in ("torch", "nvidia", "triton", "sympy"):
                for path in (SITE_PACKAGES / top).rglob("*"):
                    if path.is_file():
                        target = shadow / path.relative_to(SITE_PACKAGES)
                        target.parent.mkdir(parents=True, exist_ok=True)
                        target.touch()
            subprocess.run(["sh", str(STAGE_LIBTORCH), str(shadow), str(out)], check=True)
            kept = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
        self.assertEqual({k.split("/")[0] for k in kept}, {"torch", "nvidia"})
        self.assertTrue(all(re.match(r"^(torch|nvidia/[^/]+)/lib/", k) for k in kept), sorted(kept)[:5])
        self.assertFalse([k for k in kept if k.endswith(".a") or "libtorch_python" in k])
        self.assertIn("torch/lib/libtorch_cuda.so", kept)
        names = {Path(k).name for k in kept}
        binary = ROOT / "target" / "debug" / "framecast-replica"
        wanted = [n for n in needed(binary) if n.startswith(("libtorch", "libc10"))]
        self.assertTrue(wanted)
        for lib in ["torch/lib/" + n for n in wanted] + [k for k in kept if k.startswith("torch/lib/") and ".so" in k]:
            self.assertIn(lib, kept)
            for dep in needed(SITE_PACKAGES / lib):
                if not SYSTEM_LIBS.match(dep):
                    self.assertIn(dep, names, f"{lib} needs {dep}")
        # cuDNN's dlopened sub-libraries come along (NEEDED alone would miss them).
        cudnn = {p.name for p in (SITE_PACKAGES / "nvidia" / "cudnn" / "lib").glob("libcudnn_*.so*")}
        self.assertTrue(cudnn)
        self.assertTrue(cudnn <= names)


if __name__ == "__main__":
    unittest.main()
