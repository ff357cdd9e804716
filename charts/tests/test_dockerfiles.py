"""The Dockerfiles cannot be built here (no container engine), so these tests keep them
consistent with what is proven to work: scripts/setup's packages, the pinned torch wheel, the
workspace's Rust version and the binaries' default ports."""

from __future__ import annotations

import re
import tomllib
import unittest
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
ROUTER = (ROOT / "docker" / "router.Dockerfile").read_text()
REPLICA = (ROOT / "docker" / "replica.Dockerfile").read_text()


def stages(dockerfile: str) -> list[str]:
    return re.split(r"^FROM ", dockerfile, flags=re.M)[1:]


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
            image = re.search(r"^FROM rust:([0-9.]+)-", dockerfile, re.M).group(1)
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


if __name__ == "__main__":
    unittest.main()
