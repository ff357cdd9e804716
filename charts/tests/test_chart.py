"""Tests of the Helm chart: rendered offline with helm-python-sdk (Helm's Go SDK, no cluster),
linted, validated with kubernetes-validate --strict, fed to the real binaries' --check-config
and to promtool.

Run by scripts/test after the workspace binaries are built:
    .venv/bin/python -m unittest discover -s charts/tests -v
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import unittest
from pathlib import Path

import helm_python as helm
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "framecast"
OVERLAYS = {
    "default": {},
    "dev-cpu": yaml.safe_load((CHART / "ci" / "dev-cpu-values.yaml").read_text()),
    "prod-multigpu": yaml.safe_load((CHART / "ci" / "prod-multigpu-values.yaml").read_text()),
}
NAMESPACE = "video"
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "debug"


def render(values: dict) -> list[dict]:
    """Every manifest the chart renders for `values`, parsed."""
    with helm.Chart.load(str(CHART)) as chart:
        files = chart.render(values, name="fc", namespace=NAMESPACE)
    docs = []
    for name, text in sorted(files.items()):
        if name.endswith("NOTES.txt"):
            continue
        docs.extend(d for d in yaml.safe_load_all(text) if d)
    return docs


def notes(values: dict) -> str:
    with helm.Chart.load(str(CHART)) as chart:
        files = chart.render(values, name="fc", namespace=NAMESPACE)
    return next(v for k, v in files.items() if k.endswith("NOTES.txt"))


def one(docs: list[dict], kind: str, component: str | None = None) -> dict:
    found = [
        d
        for d in docs
        if d["kind"] == kind
        and (component is None or d["metadata"]["labels"].get("app.kubernetes.io/component") == component)
    ]
    assert len(found) == 1, f"expected one {kind} {component or ''}, got {len(found)}"
    return found[0]


def check_config(binary: str, config_text: str) -> dict:
    """Loads a rendered config with the real binary's --check-config; returns the effective settings."""
    exe = TARGET / binary
    if not exe.exists():
        raise AssertionError(f"{exe} is missing: run `cargo build --workspace --bins` first")
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write(config_text)
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FRAMECAST_")}
        out = subprocess.run(
            [str(exe), "--config", f.name, "--check-config"], capture_output=True, text=True, env=env
        )
    finally:
        os.unlink(f.name)
    if out.returncode != 0:
        raise AssertionError(f"{binary} rejects the rendered config: {out.stderr}")
    return json.loads(out.stdout)


class ChartRenders(unittest.TestCase):
    def test_lint_reports_no_errors(self) -> None:
        for name, values in OVERLAYS.items():
            report = helm.lint(str(CHART), values, strict=False)
            self.assertEqual(report["errors"], [], name)
            errors = [m for m in report["messages"] if m["severity"] >= 3]
            self.assertEqual(errors, [], f"{name}: {report['messages']}")

    def test_every_manifest_passes_kubernetes_validate_strict(self) -> None:
        validator = shutil.which("kubernetes-validate", path=str(ROOT / ".venv" / "bin"))
        self.assertIsNotNone(validator, "kubernetes-validate is missing: run scripts/setup")
        for name, values in OVERLAYS.items():
            with tempfile.TemporaryDirectory() as tmp:
                paths = []
                for i, doc in enumerate(render(values)):
                    if doc["apiVersion"].startswith("monitoring.coreos.com/"):
                        continue  # CRDs: no upstream schema; checked below instead
                    path = Path(tmp) / f"{i:02d}-{doc['kind']}.yaml"
                    path.write_text(yaml.safe_dump(doc))
                    paths.append(str(path))
                out = subprocess.run(
                    [validator, "--strict", "--no-warn", "-k", "1.30.0", *paths],
                    capture_output=True,
                    text=True,
                )
                self.assertEqual(out.returncode, 0, f"{name}:\n{out.stdout}\n{out.stderr}")
                self.assertGreaterEqual(len(paths), 7, name)

    def test_router_lists_every_replica_by_stable_dns_name(self) -> None:
        for name, values in OVERLAYS.items():
            docs = render(values)
            sts = one(docs, "StatefulSet")
            count = sts["spec"]["replicas"]
            headless = one(docs, "Service", "replica")
            self.assertEqual(headless["spec"]["clusterIP"], "None")
            self.assertEqual(sts["spec"]["serviceName"], headless["metadata"]["name"])
            config = yaml.safe_load(one(docs, "ConfigMap", "router")["data"]["router.yaml"])
            urls = [r["url"] for r in config["router"]["replicas"]]
            expected = [
                f"http://{sts['metadata']['name']}-{i}.{headless['metadata']['name']}.{NAMESPACE}.svc.cluster.local:8000"
                for i in range(count)
            ]
            self.assertEqual(urls, expected, name)
            primaries = [r["name"] for r in config["router"]["replicas"] if r["primary"]]
            wanted = values.get("replica", {}).get("primaryIndex", 0)
            self.assertEqual(primaries, [f"replica-{wanted}"], name)

    def test_rendered_configs_load_in_the_real_binaries_and_match_the_ports(self) -> None:
        for name, values in OVERLAYS.items():
            docs = render(values)
            router_cfg = check_config(
                "framecast-router", one(docs, "ConfigMap", "router")["data"]["router.yaml"]
            )["router"]
            replica_cfg = check_config(
                "framecast-replica", one(docs, "ConfigMap", "replica")["data"]["replica.yaml"]
            )
            router = one(docs, "Deployment")["spec"]["template"]["spec"]
            replica = one(docs, "StatefulSet")["spec"]["template"]["spec"]
            rc, pc = router["containers"][0], replica["containers"][0]
            self.assertEqual(rc["ports"][0]["containerPort"], router_cfg["port"], name)
            self.assertEqual(pc["ports"][0]["containerPort"], replica_cfg["server"]["port"], name)
            self.assertEqual(router_cfg["health_check"]["path"], "/readyz")
            # Probe paths are endpoints both binaries serve.
            self.assertEqual(rc["livenessProbe"]["httpGet"]["path"], "/healthz")
            self.assertEqual(rc["readinessProbe"]["httpGet"]["path"], "/readyz")
            self.assertEqual(pc["readinessProbe"]["httpGet"]["path"], "/readyz")
            self.assertEqual(pc["startupProbe"]["httpGet"]["path"], "/readyz")
            self.assertEqual(pc["livenessProbe"]["httpGet"]["path"], "/healthz")
            # Kubernetes waits for preStop + the router's drain before killing it.
            grace = router["terminationGracePeriodSeconds"]
            pre_stop = rc["lifecycle"]["preStop"]["sleep"]["seconds"]
            self.assertGreaterEqual(grace, pre_stop + router_cfg["shutdown_grace_seconds"], name)
            self.assertEqual(replica_cfg["pool"]["num_workers"], values.get("replica", {}).get("workers", 1))
            # One worker process per GPU, each pinned to its own device.
            self.assertEqual(replica_cfg["pool"]["mode"], "subprocess", name)
            gpus = values.get("replica", {}).get("gpus", 1)
            expected = [f"cuda:{i}" for i in range(replica_cfg["pool"]["num_workers"])] if gpus else []
            self.assertEqual(replica_cfg["pool"].get("devices"), expected, name)

    def test_gpus_volumes_and_monitoring_follow_the_values(self) -> None:
        default = one(render({}), "StatefulSet")
        limits = default["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
        self.assertEqual(limits["nvidia.com/gpu"], 1)
        self.assertEqual(default["spec"]["volumeClaimTemplates"][0]["metadata"]["name"], "model")

        dev = render(OVERLAYS["dev-cpu"])
        sts = one(dev, "StatefulSet")
        self.assertNotIn("nvidia.com/gpu", json.dumps(sts))
        self.assertNotIn("volumeClaimTemplates", sts["spec"])
        self.assertEqual(
            {d["kind"] for d in dev if d["apiVersion"].startswith("monitoring.coreos.com/")},
            {"ServiceMonitor", "PrometheusRule"},
        )
        dashboard = next(d for d in dev if "framecast.json" in d.get("data", {}))
        panels = json.loads(dashboard["data"]["framecast.json"])["panels"]
        self.assertGreaterEqual(len(panels), 8)

        prod = render(OVERLAYS["prod-multigpu"])
        sts = one(prod, "StatefulSet")
        spec = sts["spec"]["template"]["spec"]
        self.assertEqual(spec["containers"][0]["resources"]["limits"]["nvidia.com/gpu"], 2)
        self.assertEqual(spec["volumes"][1]["persistentVolumeClaim"]["claimName"], "wan21-weights")
        ingress = one(prod, "Ingress")
        self.assertEqual(
            ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-read-timeout"], "3600"
        )
        self.assertEqual(len([d for d in prod if d["kind"] == "PodDisruptionBudget"]), 2)
        self.assertIn("primary: replica-1", notes(OVERLAYS["prod-multigpu"]))

    def test_schema_and_templates_reject_bad_values(self) -> None:
        bad = [
            {"replica": {"count": 0}},
            {"replica": {"gpus": -1}},
            {"router": {"selection": "fastest"}},
            {"router": {"healthCheck": {"path": "readyz"}}},
            {"replica": {"model": {"volume": {"type": "nfs"}}}},
            {"metrics": {"prometheusRule": {"errorRatio": 2}}},
            {"router": {"typo": 1}},
        ]
        with helm.Chart.load(str(CHART)) as chart:
            chart.validate_schema({})
            for values in bad:
                with self.assertRaises(helm.HelmValuesError, msg=str(values)):
                    chart.validate_schema(values)
        with self.assertRaises(helm.HelmError) as caught:
            render({"replica": {"count": 2, "primaryIndex": 2}})
        self.assertIn("primaryIndex", str(caught.exception))
        with self.assertRaises(helm.HelmError) as caught:
            render({"replica": {"gpus": 1, "workers": 2}})
        self.assertIn("replica.workers", str(caught.exception))

    def test_alert_rules_pass_promtool(self) -> None:
        promtool = shutil.which("promtool")
        self.assertIsNotNone(promtool, "promtool is missing (Debian package prometheus)")
        rule = one(render(OVERLAYS["prod-multigpu"]), "PrometheusRule")
        alerts = [r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]]
        for expected in [
            "FramecastNoHealthyReplica",
            "FramecastReplicaDown",
            "FramecastTimeToFirstMediaHigh",
            "FramecastErrorRateHigh",
        ]:
            self.assertIn(expected, alerts)
        self.assertIn("> 1.5", json.dumps(rule["spec"]))
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            yaml.safe_dump(rule["spec"], f)
        try:
            out = subprocess.run([promtool, "check", "rules", f.name], capture_output=True, text=True)
        finally:
            os.unlink(f.name)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        self.assertIn(f"{len(alerts)} rules found", out.stdout)


if __name__ == "__main__":
    unittest.main()
