"""Tests of the Helm chart: rendered offline with helm-python-sdk (Helm's Go SDK, no cluster),
linted, validated with kubernetes-validate --strict, fed to the real binaries' --check-config
and to promtool.

Run by scripts/test after the workspace binaries are built:
    .venv/bin/python -m unittest discover -s charts/tests -v
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import unittest
import urllib.parse
from pathlib import Path

import helm_python as helm
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "framecast"
# Authentication is on by default and needs a credential: the least a user adds.
MINIMAL = {"auth": {"existingSecret": "framecast-api-keys"}}
OVERLAYS = {
    "default": MINIMAL,
    "dev-cpu": yaml.safe_load((CHART / "ci" / "dev-cpu-values.yaml").read_text()),
    "prod-multigpu": yaml.safe_load((CHART / "ci" / "prod-multigpu-values.yaml").read_text()),
    "cpu-tiny": yaml.safe_load((CHART / "ci" / "cpu-tiny-values.yaml").read_text()),
}
# The replicas' continuation states in Redis: the chart's own (without and with a password, on
# a volume) or an external one (URL in values, or whole in a Secret).
REDIS_VARIANTS = {
    "redis": {**MINIMAL, "redis": {"enabled": True}},
    "redis-password": {**MINIMAL, "redis": {"enabled": True, "auth": {"existingSecret": "framecast-redis"}}},
    "redis-persistent": {
        **MINIMAL,
        "redis": {
            "enabled": True,
            "save": "3600 1 300 100",
            "appendonly": True,
            "persistence": {"enabled": True, "size": "5Gi", "storageClassName": "fast-ssd"},
        },
    },
    "external-url": {**MINIMAL, "externalRedis": {"url": "redis://redis.shared.svc:6379/3"}},
    "external-secret": {**MINIMAL, "externalRedis": {"existingSecret": "shared-redis", "key": "url"}},
}
# Every extension hook and security option set (items 2 and 5 of issue 20).
ROUTER_DIGEST = "sha256:" + "0f" * 32
REPLICA_DIGEST = "sha256:" + "a1" * 32
HOOKS = {
    **MINIMAL,
    "imagePullSecrets": [{"name": "ghcr-pull"}],
    "router": {
        "image": {"digest": ROUTER_DIGEST},
        "env": [{"name": "HTTPS_PROXY", "valueFrom": {"secretKeyRef": {"name": "egress-proxy", "key": "url"}}}],
        "envFrom": [{"secretRef": {"name": "router-env"}}],
        "extraVolumes": [{"name": "corp-ca", "configMap": {"name": "corp-ca-bundle"}}],
        "extraVolumeMounts": [{"name": "corp-ca", "mountPath": "/etc/ssl/corp", "readOnly": True}],
        "initContainers": [{"name": "wait-for-dns", "image": "busybox:1.36", "command": ["true"]}],
        "podAnnotations": {"example.com/owner": "video-team"},
        # A selector label in podLabels is ignored: Services and policies keep selecting the pods.
        "podLabels": {"team": "video", "app.kubernetes.io/component": "not-the-router"},
        "serviceAccount": {"name": "edge-router", "annotations": {"example.com/role": "edge"}},
        "priorityClassName": "framecast-critical",
        "podAntiAffinity": {"preset": "hard"},
    },
    "replica": {
        "count": 4,
        "image": {"digest": REPLICA_DIGEST},
        "env": [
            {"name": "CEREBRAS_API_KEY", "valueFrom": {"secretKeyRef": {"name": "framecast-llm", "key": "cerebras-api-key"}}}
        ],
        "envFrom": [{"configMapRef": {"name": "replica-tuning"}, "prefix": "TUNING_"}],
        "extraVolumes": [{"name": "scratch", "emptyDir": {"sizeLimit": "5Gi"}}],
        "extraVolumeMounts": [{"name": "scratch", "mountPath": "/scratch"}],
        "initContainers": [
            {
                "name": "fetch-model",
                "image": "ghcr.io/example/hf-fetch:1.0",
                "env": [{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "token"}}}],
            }
        ],
        "podLabels": {"team": "video"},
        "serviceAccount": {"create": False, "name": "gpu-workloads", "automountToken": True},
        "priorityClassName": "gpu-high",
        "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 3}},
        "topologySpreadConstraints": [
            {"topologyKey": "topology.kubernetes.io/zone", "maxSkew": 1, "whenUnsatisfiable": "DoNotSchedule"}
        ],
        "prompt": {
            "enabled": True,
            "providers": [
                {"name": "cerebras", "preset": "cerebras", "model": "gpt-oss-120b"},
                {"name": "local", "baseUrl": "http://vllm.llm.svc:8000/v1", "model": "qwen2.5-7b", "allowNoKey": True},
            ],
            "writableSystemPrompts": True,
        },
        "sessionLogs": {"maxTotalMiB": 64},
        "podDisruptionBudget": {"unhealthyPodEvictionPolicy": "IfHealthyBudget"},
    },
    "redis": {"enabled": True, "podLabels": {"team": "video"}, "priorityClassName": "framecast-critical"},
    "networkPolicy": {
        "metricsScraper": {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
        },
        "extraIngress": {"replica": [{"from": [{"podSelector": {"matchLabels": {"app": "debug"}}}], "ports": [{"port": "admin"}]}]},
    },
}
# OpenShift: UIDs and fsGroup left to the restricted SCC (null removes a default).
OPENSHIFT = {
    **MINIMAL,
    "router": {"podSecurityContext": {"runAsUser": None, "runAsGroup": None}},
    "replica": {"podSecurityContext": {"runAsUser": None, "runAsGroup": None, "fsGroup": None}},
    "redis": {"enabled": True, "podSecurityContext": {"runAsUser": None, "runAsGroup": None, "fsGroup": None}},
}
# Each model source (item 1 of issue 20) with each cache volume.
ARCHIVE_SHA256 = "5e" * 32


def with_model(model: dict, **replica) -> dict:
    return {**MINIMAL, "replica": {"model": model, **replica}}


MODEL_VARIANTS = {
    "model-huggingface": with_model(
        {
            "path": "/models/wan",
            "source": {
                "kind": "huggingface",
                "huggingface": {
                    "repo": "Wan-AI/Wan2.1-T2V-1.3B-Diffusers",
                    "revision": "0fad780a534b6463e45facd96134c9f345acfa5b",
                    "include": ["*.json", "*.safetensors"],
                    "token": {"existingSecret": "hf-token"},
                },
            },
        }
    ),
    "model-url": with_model(
        {"source": {"kind": "url", "url": {"url": "https://models.example.com/wan.tar.gz", "sha256": ARCHIVE_SHA256}}, "cache": {"type": "emptyDir", "size": "8Gi"}}
    ),
    "model-url-secret": with_model(
        {"source": {"kind": "url", "url": {"existingSecret": "wan-presigned", "existingSecretKey": "url"}}, "cache": {"type": "sharedClaim", "claimName": "model-cache-rwx"}}
    ),
    "model-s3": with_model(
        {
            "source": {
                "kind": "s3",
                "s3": {"uri": "s3://models/wan21/", "endpointUrl": "https://minio.example.com", "region": "us-east-1", "credentials": {"existingSecret": "minio-keys"}},
            },
            "downloader": {"s3Image": {"digest": "sha256:" + "c3" * 32}},
        }
    ),
    "model-existing-claim": with_model({"path": "/models/wan21", "source": {"kind": "existingClaim", "existingClaim": {"claimName": "wan21-rox", "subPath": "Wan2.1-T2V-1.3B-Diffusers"}}}),
}
# Replica autoscaling (item 3 of issue 20): an HPA on prometheus-adapter metrics, or KEDA.
AUTOSCALING_VARIANTS = {
    "autoscaling-hpa": {**MINIMAL, "replica": {"autoscaling": {"enabled": True, "minReplicas": 2, "maxReplicas": 6}}},
    "autoscaling-keda": {
        **MINIMAL,
        "replica": {
            "autoscaling": {
                "enabled": True,
                "kind": "keda",
                "maxReplicas": 5,
                "keda": {"serverAddress": "http://prometheus.monitoring:9090", "authenticationRef": "prom-auth"},
            }
        },
    },
}
EXTRA_VARIANTS = {
    "hooks": HOOKS,
    "openshift": OPENSHIFT,
    "no-network-policy": {**MINIMAL, "networkPolicy": {"enabled": False}},
    **MODEL_VARIANTS,
    **AUTOSCALING_VARIANTS,
}
# API groups of CRDs kubernetes-validate has no schema for (checked by their own tests).
CRD_GROUPS = ("monitoring.coreos.com/", "keda.sh/")
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


def check_config(binary: str, config_text: str, extra_env: dict[str, str] | None = None) -> dict:
    """Loads a rendered config with the real binary's --check-config (plus `extra_env`, e.g. what
    the pod's environment sets); returns the effective settings."""
    exe = TARGET / binary
    if not exe.exists():
        raise AssertionError(f"{exe} is missing: run `cargo build --workspace --bins` first")
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write(config_text)
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FRAMECAST_")}
        env.update(extra_env or {})
        out = subprocess.run(
            [str(exe), "--config", f.name, "--check-config"], capture_output=True, text=True, env=env
        )
    finally:
        os.unlink(f.name)
    if out.returncode != 0:
        raise AssertionError(f"{binary} rejects the rendered config: {out.stderr}")
    return json.loads(out.stdout)


# Stand-ins for what the pods get from Secrets.
DUMMY_SECRET = "s" * 48
DUMMY_API_KEY = "test-api-key-0123456789"
# What a Secret holding a whole Redis URL (externalRedis.existingSecret) gives the replica.
DUMMY_REDIS_URL = f"redis://framecast:{DUMMY_SECRET}@redis.example.com:6380/2"
STAND_INS = {"FRAMECAST_REPLICA__STORE__REDIS__URL": DUMMY_REDIS_URL}
COMPONENTS = {
    # component: (workload kind, config key, env prefix, path of the auth section in the config)
    "router": ("Deployment", "router.yaml", "FRAMECAST_ROUTER", ("router", "auth")),
    "replica": ("StatefulSet", "replica.yaml", "FRAMECAST_REPLICA", ("server", "auth")),
}


def named(docs: list[dict], kind: str, name: str) -> dict:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, got {len(found)}"
    return found[0]


def container(docs: list[dict], component: str) -> dict:
    kind = COMPONENTS[component][0] if component in COMPONENTS else "StatefulSet"
    return one(docs, kind, component)["spec"]["template"]["spec"]["containers"][0]


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) substitution in env values, command and args: a variable defined
    (earlier) is replaced, an unknown reference kept as is, $$ is a literal $."""
    return re.sub(
        r"\$\$|\$\(([-._a-zA-Z0-9]+)\)",
        lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)),
        text,
    )


def pod_env(c: dict) -> dict[str, str]:
    """A container's environment as Kubernetes builds it: a stand-in for each value from a
    Secret (STAND_INS, else DUMMY_SECRET), $(VAR) references substituted in order."""
    env: dict[str, str] = {}
    for var in c.get("env", []):
        if "value" in var:
            env[var["name"]] = expand(var["value"], env)
        else:
            ref = var["valueFrom"]["secretKeyRef"]
            assert ref["name"] and ref["key"], var
            env[var["name"]] = STAND_INS.get(var["name"], DUMMY_SECRET)
    return env


def mounted_from(docs: list[dict], component: str, path: str) -> tuple[str, str, str]:
    """(Secret or ConfigMap, its name, its key) that the pod mounts at file `path`."""
    pod = one(docs, COMPONENTS[component][0], component)["spec"]["template"]["spec"]
    mount = next(
        m for m in pod["containers"][0]["volumeMounts"] if path.startswith(m["mountPath"].rstrip("/") + "/")
    )
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    relative = path[len(mount["mountPath"].rstrip("/")) + 1 :]
    kind = "Secret" if "secret" in volume else "ConfigMap"
    source = volume.get("secret") or volume.get("configMap")
    item = next(i for i in source["items"] if i["path"] == relative)
    return kind, source.get("secretName") or source.get("name"), item["key"]


def rsa_public_key_pem() -> str:
    with tempfile.TemporaryDirectory() as tmp:
        key = Path(tmp) / "key.pem"
        subprocess.run(
            ["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", str(key)],
            check=True,
            capture_output=True,
        )
        return subprocess.run(
            ["openssl", "pkey", "-in", str(key), "-pubout"], check=True, capture_output=True, text=True
        ).stdout


def load_in_binary(docs: list[dict], component: str) -> dict:
    """Loads `component`'s rendered config in its real binary as the pod would: the container's
    FRAMECAST_* environment (a stand-in value for each secretKeyRef, $(VAR) substituted) and, for each file the
    auth section names, a stand-in file at a path given by environment override (after
    checking that the pod mounts that path from a Secret or ConfigMap)."""
    kind, key, prefix, auth_path = COMPONENTS[component]
    text = one(docs, "ConfigMap", component)["data"][key]
    env = {k: v for k, v in pod_env(container(docs, component)).items() if k.startswith("FRAMECAST_")}
    auth = yaml.safe_load(text)[auth_path[0]].get("auth", {})
    section = "__".join(p.upper() for p in auth_path)
    tmp = tempfile.mkdtemp()
    try:
        if auth.get("api_keys_file"):
            mounted_from(docs, component, auth["api_keys_file"])
            keys = Path(tmp) / "api-keys"
            keys.write_text(f"# stand-in for the Secret\n{DUMMY_API_KEY}\n")
            env[f"{prefix}__{section}__API_KEYS_FILE"] = str(keys)
        if auth.get("jwt", {}).get("rs256_public_key_file"):
            mounted_from(docs, component, auth["jwt"]["rs256_public_key_file"])
            pem = Path(tmp) / "public.pem"
            pem.write_text(rsa_public_key_pem())
            env[f"{prefix}__{section}__JWT__RS256_PUBLIC_KEY_FILE"] = str(pem)
        return check_config(f"framecast-{component}", text, env)
    finally:
        shutil.rmtree(tmp)


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
        for name, values in {**OVERLAYS, **REDIS_VARIANTS, **EXTRA_VARIANTS}.items():
            with tempfile.TemporaryDirectory() as tmp:
                paths = []
                for i, doc in enumerate(render(values)):
                    if doc["apiVersion"].startswith(CRD_GROUPS):
                        continue  # CRDs: no upstream schema; checked by their own tests
                    path = Path(tmp) / f"{i:02d}-{doc['kind']}.yaml"
                    path.write_text(yaml.safe_dump(doc))
                    paths.append(str(path))
                out = subprocess.run(
                    [validator, "--strict", "--no-warn", "-k", "1.30.0", *paths],
                    capture_output=True,
                    text=True,
                )
                self.assertEqual(out.returncode, 0, f"{name}:\n{out.stdout}\n{out.stderr}")
                self.assertGreaterEqual(len(paths), 9 if values.get("redis", {}).get("enabled") else 7, name)

    def test_router_lists_every_replica_by_stable_dns_name(self) -> None:
        for name, values in OVERLAYS.items():
            docs = render(values)
            sts = one(docs, "StatefulSet", "replica")
            count = sts["spec"]["replicas"]
            headless = one(docs, "Service", "replica")
            self.assertEqual(headless["spec"]["clusterIP"], "None")
            self.assertEqual(sts["spec"]["serviceName"], headless["metadata"]["name"])
            config = yaml.safe_load(one(docs, "ConfigMap", "router")["data"]["router.yaml"])
            urls = [r["url"] for r in config["router"]["replicas"]]
            hosts = [
                f"{sts['metadata']['name']}-{i}.{headless['metadata']['name']}.{NAMESPACE}.svc.cluster.local"
                for i in range(count)
            ]
            self.assertEqual(urls, [f"http://{h}:8000" for h in hosts], name)
            # Capacity (/status) is read on each replica's admin port.
            admin_urls = [r["admin_url"] for r in config["router"]["replicas"]]
            self.assertEqual(admin_urls, [f"http://{h}:8001" for h in hosts], name)
            self.assertIn(8001, [p["port"] for p in headless["spec"]["ports"] if p["name"] == "admin"])
            primaries = [r["name"] for r in config["router"]["replicas"] if r["primary"]]
            wanted = values.get("replica", {}).get("primaryIndex", 0)
            self.assertEqual(primaries, [f"replica-{wanted}"], name)

    def test_rendered_configs_load_in_the_real_binaries_and_match_the_ports(self) -> None:
        for name, values in OVERLAYS.items():
            docs = render(values)
            router_cfg = load_in_binary(docs, "router")["router"]
            replica_cfg = load_in_binary(docs, "replica")
            router = one(docs, "Deployment")["spec"]["template"]["spec"]
            replica = one(docs, "StatefulSet", "replica")["spec"]["template"]["spec"]
            rc, pc = router["containers"][0], replica["containers"][0]
            rports = {p["name"]: p["containerPort"] for p in rc["ports"]}
            pports = {p["name"]: p["containerPort"] for p in pc["ports"]}
            self.assertEqual(rports, {"http": router_cfg["port"], "admin": router_cfg["admin_port"]}, name)
            self.assertEqual(
                pports, {"http": replica_cfg["server"]["port"], "admin": replica_cfg["server"]["admin_port"]}, name
            )
            self.assertEqual(router_cfg["health_check"]["path"], "/readyz")
            # Probe paths are endpoints both binaries serve on their admin listener.
            self.assertEqual(rc["livenessProbe"]["httpGet"]["path"], "/healthz")
            self.assertEqual(rc["readinessProbe"]["httpGet"]["path"], "/readyz")
            self.assertEqual(pc["readinessProbe"]["httpGet"]["path"], "/readyz")
            self.assertEqual(pc["startupProbe"]["httpGet"]["path"], "/readyz")
            self.assertEqual(pc["livenessProbe"]["httpGet"]["path"], "/healthz")
            # Authentication is on in the router (a key file from a Secret, read by the binary).
            self.assertTrue(router_cfg["auth"]["required"], name)
            self.assertTrue(router_cfg["auth"]["api_keys_file"], name)
            self.assertEqual(
                replica_cfg["server"]["auth"]["required"],
                values.get("replica", {}).get("auth", {}).get("required", False),
                name,
            )
            # The continuation-state key reaches every replica (redacted in the output).
            self.assertEqual(replica_cfg["store"]["state_secret"], "<redacted>", name)
            # Shared in the chart's Redis where the overlay runs one, else in each replica's memory.
            with_redis = values.get("redis", {}).get("enabled", False)
            self.assertEqual(replica_cfg["store"]["backend"], "redis" if with_redis else "memory", name)
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
        default = one(render(MINIMAL), "StatefulSet", "replica")
        limits = default["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
        self.assertEqual(limits["nvidia.com/gpu"], 1)
        # The default model is the image's own tiny one: no claim, nothing mounted.
        self.assertNotIn("volumeClaimTemplates", default["spec"])
        downloads = one(render(MODEL_VARIANTS["model-huggingface"]), "StatefulSet", "replica")
        self.assertEqual(downloads["spec"]["volumeClaimTemplates"][0]["metadata"]["name"], "model-cache")

        dev = render(OVERLAYS["dev-cpu"])
        sts = one(dev, "StatefulSet", "replica")
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
        sts = one(prod, "StatefulSet", "replica")
        spec = sts["spec"]["template"]["spec"]
        self.assertEqual(spec["containers"][0]["resources"]["limits"]["nvidia.com/gpu"], 2)
        model = next(v for v in spec["volumes"] if v["name"] == "model")
        self.assertEqual(model["persistentVolumeClaim"], {"claimName": "wan21-weights", "readOnly": True})
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
            {"replica": {"model": {"source": {"kind": "nfs"}}}},
            {"metrics": {"prometheusRule": {"errorRatio": 2}}},
            {"router": {"typo": 1}},
            {"router": {"adminPort": 0}},
            {"replica": {"adminPort": 70000}},
            {"router": {"clientLimits": {"trustedProxies": ["ingress.example.com"]}}},
            {"router": {"clientLimits": {"maxSessionsPerIp": -1}}},
            {"router": {"clientLimits": {"typo": 1}}},
            {"auth": {"apiKeys": ["too-short"]}},
            {"auth": {"required": "yes"}},
            {"auth": {"typo": 1}},
            {"auth": {"allowedOrigins": ["app.example.com"]}},
            {"auth": {"jwt": {"leewaySeconds": 301}}},
            {"auth": {"jwt": {"hs256Secret": {"value": "inline secrets are not supported"}}}},
            {"auth": {"existingSecret": "Not_A_Name"}},
            {"replica": {"auth": {"required": 1}}},
            {"replica": {"stateSecret": {"value": "shorter than 32 characters"}}},
            {"replica": {"stateSecret": {"typo": 1}}},
        ]
        with helm.Chart.load(str(CHART)) as chart:
            chart.validate_schema({})
            for values in bad:
                with self.assertRaises(helm.HelmValuesError, msg=str(values)):
                    chart.validate_schema(values)
        with self.assertRaises(helm.HelmError) as caught:
            render({**MINIMAL, "replica": {"count": 2, "primaryIndex": 2}})
        self.assertIn("primaryIndex", str(caught.exception))
        with self.assertRaises(helm.HelmError) as caught:
            render({**MINIMAL, "replica": {"gpus": 1, "workers": 2}})
        self.assertIn("replica.workers", str(caught.exception))
        with self.assertRaises(helm.HelmError) as caught:
            render({**MINIMAL, "router": {"adminPort": 9000}})
        self.assertIn("router.adminPort", str(caught.exception))
        with self.assertRaises(helm.HelmError) as caught:
            render({**MINIMAL, "replica": {"adminPort": 8000}})
        self.assertIn("replica.adminPort", str(caught.exception))
        with self.assertRaises(helm.HelmError) as caught:
            render({"auth": {"existingSecret": "keys", "apiKeys": ["0123456789abcdef"]}})
        self.assertIn("not both", str(caught.exception))

    def test_probes_and_service_monitors_use_the_admin_port(self) -> None:
        for name, values in OVERLAYS.items():
            docs = render(values)
            for component in ("router", "replica"):
                c = container(docs, component)
                self.assertIn("admin", [p["name"] for p in c["ports"]], name)
                for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                    if probe in c:
                        self.assertEqual(c[probe]["httpGet"]["port"], "admin", f"{name} {component} {probe}")
            monitors = [d for d in docs if d["kind"] == "ServiceMonitor"]
            if not values.get("metrics", {}).get("serviceMonitor", {}).get("enabled"):
                self.assertEqual(monitors, [], name)
                continue
            self.assertEqual(len(monitors), 2, name)
            for monitor in monitors:
                self.assertEqual([e["port"] for e in monitor["spec"]["endpoints"]], ["admin"], name)
                self.assertEqual(monitor["spec"]["endpoints"][0]["path"], "/metrics")
                wanted = monitor["spec"]["selector"]["matchLabels"]
                selected = [
                    d
                    for d in docs
                    if d["kind"] == "Service" and wanted.items() <= d["metadata"]["labels"].items()
                ]
                # Exactly the Service carrying the component's admin port.
                self.assertEqual(len(selected), 1, f"{name}: {monitor['metadata']['name']}")
                self.assertIn("admin", [p["name"] for p in selected[0]["spec"]["ports"]], name)

    def test_public_service_and_ingress_never_reach_the_admin_port(self) -> None:
        for values in (OVERLAYS["prod-multigpu"], {**MINIMAL, "router": {"service": {"type": "LoadBalancer"}}}):
            docs = render(values)
            router = one(docs, "Deployment")
            public = named(docs, "Service", router["metadata"]["name"])
            admin_port = next(p["containerPort"] for p in container(docs, "router")["ports"] if p["name"] == "admin")
            for port in public["spec"]["ports"]:
                self.assertEqual(port["targetPort"], "http")
                self.assertNotIn(port["port"], (admin_port,))
            admin = named(docs, "Service", f"{router['metadata']['name']}-admin")
            self.assertEqual(admin["spec"]["type"], "ClusterIP")
            self.assertEqual([p["targetPort"] for p in admin["spec"]["ports"]], ["admin"])
            for ingress in (d for d in docs if d["kind"] == "Ingress"):
                for rule in ingress["spec"]["rules"]:
                    for path in rule["http"]["paths"]:
                        backend = path["backend"]["service"]
                        self.assertEqual(backend["name"], public["metadata"]["name"])
                        self.assertEqual(backend["port"], {"name": "http"})

    def test_rendering_without_credentials_fails_with_instructions(self) -> None:
        for values in ({}, {"auth": {"required": False}, "replica": {"auth": {"required": True}}}):
            with self.assertRaises(helm.HelmError, msg=str(values)) as caught:
                render(values)
            message = str(caught.exception)
            for hint in ("auth.existingSecret", "api-keys", "auth.apiKeys", "auth.required=false"):
                self.assertIn(hint, message)
        # Helm's lint mode only logs `fail`, so `helm lint` of the bare chart stays clean.
        self.assertEqual(helm.lint(str(CHART), {}, strict=False)["errors"], [])

    def test_auth_can_be_turned_off_explicitly(self) -> None:
        docs = render({"auth": {"required": False}})
        self.assertEqual([d for d in docs if d["kind"] == "Secret" and "api-keys" in d.get("data", {})], [])
        self.assertEqual([v["name"] for v in container(docs, "router")["volumeMounts"]], ["config", "tmp"])
        router_cfg = load_in_binary(docs, "router")["router"]
        self.assertFalse(router_cfg["auth"]["required"])
        self.assertIsNone(router_cfg["auth"]["api_keys_file"])
        self.assertIn("WARNING: auth.required=false", notes({"auth": {"required": False}}))

    def test_api_keys_from_values_become_a_secret_mounted_as_the_key_file(self) -> None:
        values = OVERLAYS["dev-cpu"]
        docs = render(values)
        path = yaml.safe_load(one(docs, "ConfigMap", "router")["data"]["router.yaml"])["router"]["auth"]["api_keys_file"]
        kind, secret, key = mounted_from(docs, "router", path)
        self.assertEqual((kind, key), ("Secret", "api-keys"))
        data = named(docs, "Secret", secret)["data"]
        lines = base64.b64decode(data["api-keys"]).decode().split()
        self.assertEqual(lines, values["auth"]["apiKeys"])
        # The real binary reads the Secret's content as its key file.
        with tempfile.NamedTemporaryFile("w", suffix=".keys", delete=False) as f:
            f.write(base64.b64decode(data["api-keys"]).decode())
        try:
            cfg = check_config(
                "framecast-router",
                one(docs, "ConfigMap", "router")["data"]["router.yaml"],
                {"FRAMECAST_ROUTER__ROUTER__AUTH__API_KEYS_FILE": f.name},
            )
        finally:
            os.unlink(f.name)
        self.assertTrue(cfg["router"]["auth"]["required"])
        # New keys roll the router pods (keys are read at start-up).
        annotation = lambda v: one(render(v), "Deployment")["spec"]["template"]["metadata"]["annotations"]["checksum/auth"]
        self.assertNotEqual(
            annotation(values), annotation({**values, "auth": {"apiKeys": ["another-key-0123456789"]}})
        )
        # With an existing Secret the chart makes none and mounts that one.
        docs = render(MINIMAL)
        self.assertEqual(mounted_from(docs, "router", path), ("Secret", "framecast-api-keys", "api-keys"))
        self.assertEqual([d for d in docs if d["kind"] == "Secret" and "api-keys" in d.get("data", {})], [])

    def test_jwt_settings_reach_both_binaries(self) -> None:
        # HS256 from a Secret by environment variable, replicas checking too (prod overlay).
        docs = render(OVERLAYS["prod-multigpu"])
        for component, var in (
            ("router", "FRAMECAST_ROUTER__ROUTER__AUTH__JWT__HS256_SECRET"),
            ("replica", "FRAMECAST_REPLICA__SERVER__AUTH__JWT__HS256_SECRET"),
        ):
            env = {e["name"]: e for e in container(docs, component)["env"]}
            self.assertEqual(
                env[var]["valueFrom"]["secretKeyRef"], {"name": "framecast-jwt", "key": "hs256-secret"}, component
            )
            cfg = load_in_binary(docs, component)
            auth = cfg["router"]["auth"] if component == "router" else cfg["server"]["auth"]
            # Set from the environment (printed as is, or redacted should --check-config hide it).
            self.assertIn(auth["jwt"]["hs256_secret"], (DUMMY_SECRET, "<redacted>"), component)
            self.assertEqual(auth["jwt"]["issuer"], "https://auth.example.com/", component)
            self.assertEqual(auth["jwt"]["audience"], "framecast", component)
            self.assertEqual(auth["allowed_origins"], ["https://app.example.com"], component)
            self.assertTrue(auth["required"], component)
        # RS256 public key from a ConfigMap (or a Secret), mounted as a file; JWT only, no API keys.
        for source, kind in (("existingConfigMap", "ConfigMap"), ("existingSecret", "Secret")):
            values = {"auth": {"jwt": {"rs256PublicKey": {source: "idp-keys", "key": "rsa.pem"}, "leewaySeconds": 10}}}
            docs = render(values)
            auth = load_in_binary(docs, "router")["router"]["auth"]
            self.assertIsNone(auth["api_keys_file"])
            self.assertEqual(auth["jwt"]["leeway_seconds"], 10)
            path = yaml.safe_load(one(docs, "ConfigMap", "router")["data"]["router.yaml"])["router"]["auth"]["jwt"][
                "rs256_public_key_file"
            ]
            self.assertEqual(mounted_from(docs, "router", path), (kind, "idp-keys", "rsa.pem"))
        # Replica auth is off by default, but allowed origins apply to it (it checks Origin).
        docs = render({**MINIMAL, "auth": {**MINIMAL["auth"], "allowedOrigins": ["https://app.example.com"]}})
        replica_auth = load_in_binary(docs, "replica")["server"]["auth"]
        self.assertFalse(replica_auth["required"])
        self.assertEqual(replica_auth["allowed_origins"], ["https://app.example.com"])
        self.assertNotIn("HS256", json.dumps(container(docs, "replica")["env"]))

    def test_replicas_share_a_state_secret_from_a_secret(self) -> None:
        for name, values in OVERLAYS.items():
            docs = render(values)
            env = {e["name"]: e for e in container(docs, "replica")["env"]}
            ref = env["FRAMECAST_REPLICA__STORE__STATE_SECRET"]["valueFrom"]["secretKeyRef"]
            existing = values.get("replica", {}).get("stateSecret", {}).get("existingSecret")
            secrets = [d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"] == ref["name"]]
            if existing:
                self.assertEqual(ref["name"], existing, name)
                self.assertEqual(secrets, [], name)
            else:
                value = base64.b64decode(secrets[0]["data"][ref["key"]]).decode()
                self.assertRegex(value, r"^[A-Za-z0-9]{48}$", name)
        given = "g" * 40
        docs = render({**MINIMAL, "replica": {"stateSecret": {"value": given, "key": "hmac"}}})
        ref = {e["name"]: e for e in container(docs, "replica")["env"]}["FRAMECAST_REPLICA__STORE__STATE_SECRET"]
        ref = ref["valueFrom"]["secretKeyRef"]
        self.assertEqual(ref["key"], "hmac")
        self.assertEqual(base64.b64decode(named(docs, "Secret", ref["name"])["data"]["hmac"]).decode(), given)

    def test_client_limits_and_trusted_proxies_reach_the_router_config(self) -> None:
        values = OVERLAYS["prod-multigpu"]
        limits = load_in_binary(render(values), "router")["router"]["client_limits"]
        self.assertEqual(
            limits,
            {
                "max_sessions_per_ip": 4,
                "new_sessions_per_ip_per_minute": 30,
                "trusted_proxies": values["router"]["clientLimits"]["trustedProxies"],
            },
        )
        docs = render({**MINIMAL, "router": {"clientLimits": {"trustedProxies": ["10.0.0.7", "fd00::/8"], "maxSessionsPerIp": 0}}})
        limits = load_in_binary(docs, "router")["router"]["client_limits"]
        self.assertEqual(limits["trusted_proxies"], ["10.0.0.7", "fd00::/8"])
        self.assertEqual(limits["max_sessions_per_ip"], 0)
        self.assertEqual(limits["new_sessions_per_ip_per_minute"], 60)

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


def replica_store(docs: list[dict]) -> dict:
    """The `store` section of the rendered replica config."""
    return yaml.safe_load(one(docs, "ConfigMap", "replica")["data"]["replica.yaml"])["store"]


def redis_objects(docs: list[dict]) -> list[dict]:
    return [d for d in docs if d["metadata"]["labels"].get("app.kubernetes.io/component") == "redis"]


def redis_options(c: dict) -> dict[str, str]:
    """The Redis container's `--option value` arguments as a dict."""
    assert c["command"] == ["redis-server"] and len(c["args"]) % 2 == 0, c
    assert all(a.startswith("--") for a in c["args"][::2]), c["args"]
    return dict(zip(c["args"][::2], c["args"][1::2]))


def selects(service: dict, workload: dict) -> bool:
    """Whether `service`'s selector matches the pods of `workload`."""
    labels = workload["spec"]["template"]["metadata"]["labels"]
    return service["spec"]["selector"].items() <= labels.items()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisStore(unittest.TestCase):
    """store.backend redis: the chart's Redis (redis.*) or an external one (externalRedis.*)."""

    def test_default_store_is_memory_and_renders_no_redis(self) -> None:
        for name in ("default", "dev-cpu"):
            docs = render(OVERLAYS[name])
            self.assertEqual(redis_objects(docs), [], name)
            self.assertEqual(replica_store(docs), {"backend": "memory", "ttl_seconds": 3600}, name)
            self.assertNotIn("REDIS", json.dumps(container(docs, "replica")["env"]), name)
        # Several replicas without Redis: NOTES say a session cannot move; one replica: nothing.
        warning = "WARNING: replica.count=2 with the memory store"
        text = notes(MINIMAL)
        self.assertIn(warning, text)
        self.assertIn("cannot be resumed on another replica", text)
        self.assertNotIn("WARNING: replica.count", notes(OVERLAYS["dev-cpu"]))
        for name, values in REDIS_VARIANTS.items():
            text = notes(values)
            self.assertNotIn("WARNING: replica.count", text, name)
            self.assertIn("shared by every replica in Redis", text, name)
        self.assertIn("service fc-framecast-redis", notes(REDIS_VARIANTS["redis"]))

    def test_in_cluster_redis_is_a_hardened_statefulset_behind_a_service(self) -> None:
        docs = render(REDIS_VARIANTS["redis"])
        self.assertEqual(sorted(d["kind"] for d in redis_objects(docs)), ["NetworkPolicy", "Service", "StatefulSet"])
        sts = one(docs, "StatefulSet", "redis")
        svc = one(docs, "Service", "redis")
        pod = sts["spec"]["template"]["spec"]
        c = container(docs, "redis")
        self.assertEqual(sts["spec"]["replicas"], 1)
        self.assertEqual(sts["spec"]["serviceName"], svc["metadata"]["name"])
        self.assertEqual(svc["spec"]["type"], "ClusterIP")
        # The Service reaches the Redis pod and no other; the replicas' Services not the Redis pod.
        self.assertTrue(selects(svc, sts))
        for workload in (one(docs, "StatefulSet", "replica"), one(docs, "Deployment")):
            self.assertFalse(selects(svc, workload))
        for other in (d for d in docs if d["kind"] == "Service" and d is not svc):
            self.assertFalse(selects(other, sts), other["metadata"]["name"])
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        self.assertEqual([(p["port"], p["targetPort"]) for p in svc["spec"]["ports"]], [(6379, "redis")])
        self.assertEqual(ports, {"redis": 6379})
        self.assertEqual(c["image"], "docker.io/library/redis:7.4-alpine")
        # A cache: bounded memory, LRU eviction, nothing written to disk.
        options = redis_options(c)
        self.assertEqual(options["--port"], "6379")
        self.assertEqual(options["--maxmemory"], "768mb")
        self.assertEqual(options["--maxmemory-policy"], "allkeys-lru")
        self.assertEqual(options["--save"], "")
        self.assertEqual(options["--appendonly"], "no")
        self.assertNotIn("--requirepass", options)
        self.assertNotIn("env", c)
        self.assertEqual(c["resources"], {"requests": {"cpu": "100m", "memory": "1Gi", "ephemeral-storage": "64Mi"}, "limits": {"memory": "1Gi"}})
        # Non-root, no privileges, read-only root with /data on an emptyDir.
        self.assertTrue(pod["securityContext"]["runAsNonRoot"])
        self.assertNotEqual(pod["securityContext"]["runAsUser"], 0)
        self.assertEqual(pod["securityContext"]["seccompProfile"], {"type": "RuntimeDefault"})
        self.assertFalse(pod["automountServiceAccountToken"])
        self.assertEqual(
            c["securityContext"],
            {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}},
        )
        self.assertEqual(c["volumeMounts"], [{"name": "data", "mountPath": options["--dir"]}])
        self.assertEqual(options["--dir"], "/data")
        self.assertEqual(pod["volumes"], [{"name": "data", "emptyDir": {"sizeLimit": "2Gi"}}])
        self.assertNotIn("volumeClaimTemplates", sts["spec"])
        for probe in ("livenessProbe", "readinessProbe"):
            command = " ".join(c[probe]["exec"]["command"])
            self.assertIn("redis-cli -p 6379 ping", command, probe)
            self.assertIn("PONG", command, probe)
        # The replicas use it, keys prefixed per release; the URL names the Service and its port.
        self.assertEqual(
            replica_store(docs),
            {
                "backend": "redis",
                "ttl_seconds": 3600,
                "redis": {
                    "url": f"redis://{svc['metadata']['name']}:{svc['spec']['ports'][0]['port']}/0",
                    "key_prefix": "fc-framecast:",
                    "timeout_ms": 2000,
                },
            },
        )
        self.assertEqual(svc["metadata"]["name"], "fc-framecast-redis")
        self.assertNotIn("REDIS", json.dumps(container(docs, "replica")["env"]))
        # Values reach Redis's command line and the replica config; a digest pins the image.
        digest = "sha256:" + "ab" * 32
        docs = render(
            {
                **MINIMAL,
                "redis": {
                    "enabled": True,
                    "maxmemory": "2gb",
                    "maxmemoryPolicy": "volatile-lru",
                    "image": {"digest": digest},
                    "tolerations": [{"key": "redis", "operator": "Exists", "effect": "NoSchedule"}],
                },
                "replica": {"store": {"ttlSeconds": 600, "redis": {"keyPrefix": "video-a:", "timeoutMs": 500}}},
            }
        )
        c = container(docs, "redis")
        options = redis_options(c)
        self.assertEqual((options["--maxmemory"], options["--maxmemory-policy"]), ("2gb", "volatile-lru"))
        self.assertEqual(c["image"], f"docker.io/library/redis:7.4-alpine@{digest}")
        self.assertEqual(one(docs, "StatefulSet", "redis")["spec"]["template"]["spec"]["tolerations"][0]["key"], "redis")
        store = replica_store(docs)
        self.assertEqual((store["ttl_seconds"], store["redis"]["key_prefix"], store["redis"]["timeout_ms"]), (600, "video-a:", 500))
        # A Redis config change rolls the replicas (their config checksum changes).
        checksum = lambda d: one(d, "StatefulSet", "replica")["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
        self.assertNotEqual(checksum(render(MINIMAL)), checksum(render(REDIS_VARIANTS["redis"])))

    def test_redis_password_comes_from_a_secret_and_never_reaches_a_configmap(self) -> None:
        docs = render(REDIS_VARIANTS["redis-password"])
        ref = {"name": "framecast-redis", "key": "redis-password"}
        redis_env = {e["name"]: e for e in container(docs, "redis")["env"]}
        self.assertEqual(redis_env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"], ref)
        options = redis_options(container(docs, "redis"))
        self.assertEqual(options["--requirepass"], "$(REDIS_PASSWORD)")
        # The probes' redis-cli authenticates with it.
        self.assertEqual(pod_env(container(docs, "redis"))["REDISCLI_AUTH"], DUMMY_SECRET)
        # The replica composes its URL from the same Secret (Kubernetes substitutes $(VAR)).
        env = container(docs, "replica")["env"]
        names = [e["name"] for e in env]
        self.assertLess(names.index("REDIS_PASSWORD"), names.index("FRAMECAST_REPLICA__STORE__REDIS__URL"))
        self.assertEqual(env[names.index("REDIS_PASSWORD")]["valueFrom"]["secretKeyRef"], ref)
        self.assertEqual(
            pod_env(container(docs, "replica"))["FRAMECAST_REPLICA__STORE__REDIS__URL"],
            f"redis://default:{DUMMY_SECRET}@fc-framecast-redis:6379/0",
        )
        # No password, nor a reference to one, in a ConfigMap; the chart makes no Secret for it.
        self.assertEqual(replica_store(docs)["redis"]["url"], "redis://fc-framecast-redis:6379/0")
        for cm in (d for d in docs if d["kind"] == "ConfigMap"):
            self.assertNotIn("REDIS_PASSWORD", json.dumps(cm), cm["metadata"]["name"])
        self.assertEqual([d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"] == "framecast-redis"], [])
        docs = render({**MINIMAL, "redis": {"enabled": True, "auth": {"existingSecret": "kv", "key": "pw"}}})
        for component in ("redis", "replica"):
            redis_env = {e["name"]: e for e in container(docs, component)["env"]}
            self.assertEqual(redis_env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"], {"name": "kv", "key": "pw"})

    def test_redis_persistence_is_a_volume_claim_when_asked_for(self) -> None:
        docs = render(REDIS_VARIANTS["redis-persistent"])
        sts = one(docs, "StatefulSet", "redis")
        options = redis_options(container(docs, "redis"))
        self.assertEqual((options["--save"], options["--appendonly"]), ("3600 1 300 100", "yes"))
        (claim,) = sts["spec"]["volumeClaimTemplates"]
        self.assertEqual(claim["metadata"]["name"], "data")
        self.assertEqual(claim["spec"]["resources"]["requests"]["storage"], "5Gi")
        self.assertEqual(claim["spec"]["storageClassName"], "fast-ssd")
        self.assertEqual(claim["spec"]["accessModes"], ["ReadWriteOnce"])
        self.assertNotIn("volumes", sts["spec"]["template"]["spec"])
        self.assertEqual(container(docs, "redis")["volumeMounts"], [{"name": "data", "mountPath": "/data"}])

    def test_external_redis_from_values_or_from_a_secret(self) -> None:
        docs = render(REDIS_VARIANTS["external-url"])
        self.assertEqual(redis_objects(docs), [])
        store = replica_store(docs)
        self.assertEqual((store["backend"], store["redis"]["url"]), ("redis", "redis://redis.shared.svc:6379/3"))
        self.assertNotIn("REDIS", json.dumps(container(docs, "replica")["env"]))
        docs = render(REDIS_VARIANTS["external-secret"])
        self.assertEqual(redis_objects(docs), [])
        store = replica_store(docs)
        self.assertEqual(store["backend"], "redis")
        self.assertNotIn("url", store["redis"])
        env = {e["name"]: e for e in container(docs, "replica")["env"]}
        self.assertEqual(
            env["FRAMECAST_REPLICA__STORE__REDIS__URL"]["valueFrom"]["secretKeyRef"], {"name": "shared-redis", "key": "url"}
        )
        self.assertNotIn("REDIS_PASSWORD", env)
        self.assertIn("in Redis (external)", notes(REDIS_VARIANTS["external-secret"]))

    def test_contradictory_or_bad_redis_values_are_refused(self) -> None:
        for external in ({"url": "redis://elsewhere:6379/0"}, {"existingSecret": "shared-redis"}):
            with self.assertRaises(helm.HelmError, msg=str(external)) as caught:
                render({**MINIMAL, "redis": {"enabled": True}, "externalRedis": external})
            self.assertIn("redis.enabled and externalRedis are both set", str(caught.exception))
        with self.assertRaises(helm.HelmError) as caught:
            render({**MINIMAL, "externalRedis": {"url": "redis://elsewhere:6379/0", "existingSecret": "shared-redis"}})
        self.assertIn("externalRedis.url and externalRedis.existingSecret are both set", str(caught.exception))
        with self.assertRaises(helm.HelmError) as caught:
            render({**MINIMAL, "redis": {"enabled": True, "persistence": {"enabled": True}}})
        self.assertIn("redis.persistence.enabled", str(caught.exception))
        bad = [
            {"redis": {"enabled": "yes"}},
            {"redis": {"typo": 1}},
            {"redis": {"maxmemory": "0"}},
            {"redis": {"maxmemory": "lots"}},
            {"redis": {"maxmemoryPolicy": "lru"}},
            {"redis": {"save": "hourly"}},
            {"redis": {"appendonly": "no"}},
            {"redis": {"image": {"tag": ""}}},
            {"redis": {"image": {"digest": "latest"}}},
            {"redis": {"auth": {"existingSecret": "Not_A_Name"}}},
            {"redis": {"auth": {"password": "inline secrets are not supported"}}},
            {"redis": {"persistence": {"accessModes": []}}},
            {"externalRedis": {"url": "redis://:hunter2@redis.example.com:6379/0"}},
            {"externalRedis": {"url": "http://redis.example.com"}},
            {"externalRedis": {"typo": 1}},
            {"replica": {"store": {"backend": "redis"}}},
            {"replica": {"store": {"ttlSeconds": 0}}},
            {"replica": {"store": {"redis": {"keyPrefix": "has space"}}}},
            {"replica": {"store": {"redis": {"keyPrefix": "x" * 129}}}},
            {"replica": {"store": {"redis": {"timeoutMs": 0}}}},
        ]
        with helm.Chart.load(str(CHART)) as chart:
            for values in REDIS_VARIANTS.values():
                chart.validate_schema(values)
            for values in bad:
                with self.assertRaises(helm.HelmValuesError, msg=str(values)):
                    chart.validate_schema(values)

    def test_redis_store_settings_load_in_the_real_replica(self) -> None:
        expected_url = {
            "redis": "redis://fc-framecast-redis:6379/0",
            "redis-password": "redis://<redacted>@fc-framecast-redis:6379/0",
            "redis-persistent": "redis://fc-framecast-redis:6379/0",
            "external-url": "redis://redis.shared.svc:6379/3",
            "external-secret": "redis://<redacted>@redis.example.com:6380/2",
        }
        for name, values in REDIS_VARIANTS.items():
            store = load_in_binary(render(values), "replica")["store"]
            self.assertEqual(store["backend"], "redis", name)
            self.assertEqual(store["redis"]["url"], expected_url[name], name)
            self.assertEqual(store["redis"]["key_prefix"], "fc-framecast:", name)
            self.assertEqual(store["ttl_seconds"], 3600, name)
        self.assertEqual(load_in_binary(render(MINIMAL), "replica")["store"]["backend"], "memory")

    def test_rendered_redis_runs_and_the_replica_url_authenticates(self) -> None:
        """The rendered command line, probes and replica URL against a real redis-server."""
        server = shutil.which("redis-server")
        self.assertIsNotNone(server, "redis-server is missing (Debian package redis-server)")
        docs = render(REDIS_VARIANTS["redis-password"])
        c = container(docs, "redis")
        env = pod_env(c)
        argv = [expand(a, env) for a in c["command"] + c["args"]]
        self.assertEqual(argv[argv.index("--requirepass") + 1], DUMMY_SECRET)
        port = free_port()
        with tempfile.TemporaryDirectory() as data:
            # The pod's port and /data, moved to a free port and a temporary directory.
            argv[argv.index("--port") + 1] = str(port)
            argv[argv.index("--dir") + 1] = data
            argv[0] = server
            base_env = {k: v for k, v in os.environ.items() if not k.startswith("REDIS")}
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=base_env)
            try:
                probe = [a.replace("-p 6379", f"-p {port}") for a in c["readinessProbe"]["exec"]["command"]]
                self.assertNotEqual(probe, c["readinessProbe"]["exec"]["command"])
                deadline = time.monotonic() + 15
                while True:
                    ok = subprocess.run(probe, env={**base_env, **env}, capture_output=True).returncode == 0
                    if ok or time.monotonic() > deadline or proc.poll() is not None:
                        break
                    time.sleep(0.1)
                if proc.poll() is not None:
                    self.fail(f"redis-server exited: {proc.stdout.read()}")
                self.assertTrue(ok, "the readiness probe never passed")
                # Without the password the probe fails (redis-cli itself exits 0 on NOAUTH).
                self.assertNotEqual(subprocess.run(probe, env=base_env, capture_output=True).returncode, 0)

                def cli(*args: str, url: str | None = None) -> str:
                    target = ["-u", url] if url else ["-p", str(port)]
                    out = subprocess.run(
                        ["redis-cli", *target, "--no-auth-warning", *args],
                        env={**base_env, "REDISCLI_AUTH": env["REDISCLI_AUTH"]} if not url else base_env,
                        capture_output=True,
                        text=True,
                        timeout=10,
                    )
                    return out.stdout.strip()

                self.assertEqual(cli("config", "get", "maxmemory").split(), ["maxmemory", str(768 << 20)])
                self.assertEqual(cli("config", "get", "maxmemory-policy").split(), ["maxmemory-policy", "allkeys-lru"])
                self.assertEqual(cli("config", "get", "save").split(), ["save"])
                self.assertEqual(cli("config", "get", "appendonly").split(), ["appendonly", "no"])
                # The URL the replica gets (password composed in from the Secret) opens a session.
                url = pod_env(container(docs, "replica"))["FRAMECAST_REPLICA__STORE__REDIS__URL"]
                local = url.replace("@fc-framecast-redis:6379/", f"@127.0.0.1:{port}/")
                self.assertNotEqual(local, url)
                self.assertEqual(cli("ping", url=local), "PONG")
                self.assertNotEqual(cli("ping", url=local.replace(DUMMY_SECRET, "wrong")), "PONG")
            finally:
                proc.terminate()
                proc.wait(timeout=10)
                proc.stdout.close()


# ---- Pod Security Standards, "restricted" profile (what the PodSecurity admission controller
# enforces at level restricted, version latest), checked on rendered Pod templates. ----
RESTRICTED_VOLUME_TYPES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret",
}
SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
}
SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}


def restricted_violations(pod: dict) -> list[str]:
    """Every way a PodSpec breaks the Pod Security "restricted" profile (baseline included):
    host namespaces, privileged or escalating containers, capabilities beyond dropping ALL (and
    adding NET_BIND_SERVICE), root, seccomp, AppArmor/SELinux/procMount/sysctls, host ports and
    volume types outside the restricted allow-list. Empty: admitted."""
    found = []
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(field):
            found.append(f"spec.{field}")
    psc = pod.get("securityContext") or {}
    containers = [
        (kind, c) for kind in ("initContainers", "containers", "ephemeralContainers") for c in pod.get(kind) or []
    ]
    for volume in pod.get("volumes") or []:
        types = set(volume) - {"name"}
        if not types <= RESTRICTED_VOLUME_TYPES:
            found.append(f"volume {volume['name']}: {sorted(types - RESTRICTED_VOLUME_TYPES)}")
    for sysctl in psc.get("sysctls") or []:
        if sysctl["name"] not in SAFE_SYSCTLS:
            found.append(f"sysctl {sysctl['name']}")

    def selinux(where: str, sc: dict) -> None:
        options = sc.get("seLinuxOptions") or {}
        if options.get("type", "") not in SELINUX_TYPES or options.get("user") or options.get("role"):
            found.append(f"{where}.seLinuxOptions")

    def apparmor(where: str, sc: dict) -> None:
        if (sc.get("appArmorProfile") or {}).get("type") == "Unconfined":
            found.append(f"{where}.appArmorProfile Unconfined")

    selinux("pod", psc)
    apparmor("pod", psc)
    if psc.get("runAsUser") == 0:
        found.append("pod runAsUser 0")
    pod_seccomp = (psc.get("seccompProfile") or {}).get("type")
    if pod_seccomp not in (None, "RuntimeDefault", "Localhost"):
        found.append(f"pod seccompProfile {pod_seccomp}")
    for kind, c in containers:
        where = f"{kind}[{c['name']}]"
        sc = c.get("securityContext") or {}
        if sc.get("privileged"):
            found.append(f"{where} privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            found.append(f"{where} allowPrivilegeEscalation is not false")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            found.append(f"{where} does not drop ALL capabilities")
        if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
            found.append(f"{where} adds {sorted(set(caps['add']) - {'NET_BIND_SERVICE'})}")
        non_root = sc.get("runAsNonRoot", psc.get("runAsNonRoot"))
        if non_root is not True:
            found.append(f"{where} runAsNonRoot is not true (pod or container)")
        if sc.get("runAsUser") == 0:
            found.append(f"{where} runAsUser 0")
        seccomp = (sc.get("seccompProfile") or {}).get("type", pod_seccomp)
        if seccomp not in ("RuntimeDefault", "Localhost"):
            found.append(f"{where} seccompProfile {seccomp} (pod or container must set RuntimeDefault or Localhost)")
        if sc.get("procMount", "Default") != "Default":
            found.append(f"{where} procMount")
        selinux(where, sc)
        apparmor(where, sc)
        for port in c.get("ports") or []:
            if port.get("hostPort"):
                found.append(f"{where} hostPort {port['hostPort']}")
    return found


def pod_templates(docs: list[dict]) -> dict[str, dict]:
    """Each workload's Pod template spec, by `<kind>/<name>`."""
    return {
        f"{d['kind']}/{d['metadata']['name']}": d["spec"]["template"]["spec"]
        for d in docs
        if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job")
    }


def pod_labels(docs: list[dict], component: str) -> dict[str, str]:
    kind = "Deployment" if component == "router" else "StatefulSet"
    return one(docs, kind, component)["spec"]["template"]["metadata"]["labels"]


def compliant_pod() -> dict:
    return {
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "initContainers": [
            {
                "name": "init",
                "image": "x",
                "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
            }
        ],
        "containers": [
            {
                "name": "main",
                "image": "x",
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]},
                },
            }
        ],
        "volumes": [{"name": "tmp", "emptyDir": {}}, {"name": "cfg", "configMap": {"name": "c"}}],
    }


class PodSecurityRestricted(unittest.TestCase):
    def test_checker_admits_a_compliant_pod_and_rejects_each_violation(self) -> None:
        self.assertEqual(restricted_violations(compliant_pod()), [])

        def with_change(change) -> list[str]:
            pod = compliant_pod()
            change(pod)
            return restricted_violations(pod)

        main = lambda p: p["containers"][0]["securityContext"]
        init = lambda p: p["initContainers"][0]["securityContext"]
        cases = {
            "hostNetwork": lambda p: p.update(hostNetwork=True),
            "hostPID": lambda p: p.update(hostPID=True),
            "hostIPC": lambda p: p.update(hostIPC=True),
            "hostPath": lambda p: p["volumes"].append({"name": "host", "hostPath": {"path": "/"}}),
            "nfs": lambda p: p["volumes"].append({"name": "nfs", "nfs": {"server": "s", "path": "/"}}),
            "privileged": lambda p: main(p).update(privileged=True),
            "allowPrivilegeEscalation": lambda p: main(p).pop("allowPrivilegeEscalation"),
            "allowPrivilegeEscalation (init)": lambda p: init(p).update(allowPrivilegeEscalation=True),
            "drop ALL": lambda p: main(p)["capabilities"].update(drop=["NET_RAW"]),
            "drop ALL (init)": lambda p: init(p).pop("capabilities"),
            "add SYS_ADMIN": lambda p: main(p)["capabilities"].update(add=["SYS_ADMIN"]),
            "runAsNonRoot": lambda p: p["securityContext"].pop("runAsNonRoot"),
            "runAsNonRoot false in a container": lambda p: main(p).update(runAsNonRoot=False),
            "runAsUser 0": lambda p: main(p).update(runAsUser=0),
            "no seccomp": lambda p: p["securityContext"].pop("seccompProfile"),
            "seccomp Unconfined": lambda p: main(p).update(seccompProfile={"type": "Unconfined"}),
            "hostPort": lambda p: p["containers"][0].update(ports=[{"containerPort": 80, "hostPort": 80}]),
            "procMount": lambda p: main(p).update(procMount="Unmasked"),
            "SELinux user": lambda p: p["securityContext"].update(seLinuxOptions={"user": "root"}),
            "AppArmor Unconfined": lambda p: main(p).update(appArmorProfile={"type": "Unconfined"}),
            "unsafe sysctl": lambda p: p["securityContext"].update(sysctls=[{"name": "kernel.msgmax", "value": "1"}]),
        }
        for name, change in cases.items():
            self.assertNotEqual(with_change(change), [], name)
        # Container-level settings satisfy the profile as well as pod-level ones.
        def per_container(p: dict) -> None:
            p["securityContext"] = {}
            for c in p["initContainers"] + p["containers"]:
                c["securityContext"].update(runAsNonRoot=True, seccompProfile={"type": "Localhost", "localhostProfile": "x.json"})
        self.assertEqual(with_change(per_container), [])

    def test_every_rendered_pod_meets_the_restricted_profile(self) -> None:
        variants = {**OVERLAYS, **REDIS_VARIANTS, **EXTRA_VARIANTS}
        for name, values in variants.items():
            pods = pod_templates(render(values))
            self.assertGreaterEqual(len(pods), 2, name)
            for workload, pod in pods.items():
                self.assertEqual(restricted_violations(pod), [], f"{name}: {workload}")
        # The user's init containers inherit the component's container securityContext.
        pod = one(render(HOOKS), "StatefulSet", "replica")["spec"]["template"]["spec"]
        self.assertEqual(pod["initContainers"][0]["securityContext"], pod["containers"][0]["securityContext"])

    def test_checker_catches_non_compliant_values(self) -> None:
        """Values that leave the profile are rendered as asked, and the check says why."""
        cases = {
            "model on a hostPath": {
                **MINIMAL,
                "replica": {"model": {"source": {"kind": "hostPath", "hostPath": {"path": "/srv/models"}}}},
            },
            "privileged init container": {
                **MINIMAL,
                "router": {"initContainers": [{"name": "tune", "image": "x", "securityContext": {"privileged": True}}]},
            },
            "seccomp dropped": {**MINIMAL, "replica": {"podSecurityContext": {"seccompProfile": None}}},
            "escalation allowed": {**MINIMAL, "router": {"securityContext": {"allowPrivilegeEscalation": True}}},
        }
        for name, values in cases.items():
            problems = [p for pod in pod_templates(render(values)).values() for p in restricted_violations(pod)]
            self.assertNotEqual(problems, [], name)

    def test_security_defaults_and_openshift_overrides(self) -> None:
        docs = render(MINIMAL)
        for component, uid in (("router", 10001), ("replica", 10001)):
            pod = one(docs, COMPONENTS[component][0], component)["spec"]["template"]["spec"]
            self.assertEqual(pod["securityContext"]["runAsUser"], uid, component)
            self.assertEqual(pod["securityContext"]["seccompProfile"], {"type": "RuntimeDefault"}, component)
            sc = pod["containers"][0]["securityContext"]
            # Both binaries run on a read-only root filesystem.
            self.assertEqual(
                sc, {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}
            )
            self.assertIn("ephemeral-storage", pod["containers"][0]["resources"]["requests"], component)
        self.assertEqual(one(docs, "StatefulSet", "replica")["spec"]["template"]["spec"]["securityContext"]["fsGroup"], 10001)
        # OpenShift: null drops a UID, GID or fsGroup; the rest of the baseline stays.
        docs = render(OPENSHIFT)
        for workload, pod in pod_templates(docs).items():
            psc = pod["securityContext"]
            for field in ("runAsUser", "runAsGroup", "fsGroup"):
                self.assertNotIn(field, psc, workload)
            self.assertTrue(psc["runAsNonRoot"], workload)
            self.assertEqual(psc["seccompProfile"], {"type": "RuntimeDefault"}, workload)

    def test_every_path_the_replica_writes_is_a_bounded_emptydir(self) -> None:
        for name, values in {**OVERLAYS, "hooks": HOOKS}.items():
            docs = render(values)
            pod = one(docs, "StatefulSet", "replica")["spec"]["template"]["spec"]
            c = pod["containers"][0]
            self.assertTrue(c["securityContext"]["readOnlyRootFilesystem"], name)
            volumes = {v["name"]: v for v in pod["volumes"]}

            def writable_volume(path: str) -> dict:
                """The emptyDir under which `path` lies, mounted read-write."""
                mounts = [m for m in c["volumeMounts"] if (path + "/").startswith(m["mountPath"].rstrip("/") + "/")]
                self.assertTrue(mounts, f"{name}: nothing mounted at {path}")
                mount = max(mounts, key=lambda m: len(m["mountPath"]))
                self.assertFalse(mount.get("readOnly", False), f"{name}: {path}")
                volume = volumes[mount["name"]]
                self.assertIn("sizeLimit", volume["emptyDir"], f"{name}: {path}")
                return volume

            env = pod_env(c)
            for var in ("HOME", "XDG_CACHE_HOME", "GST_REGISTRY"):
                writable_volume(env[var])
            settings = load_in_binary(docs, "replica")
            streaming = settings["streaming"]
            logs = writable_volume(streaming["session_log_dir"])
            # The replica's own caps keep the logs inside the volume: all logs plus one open
            # log per concurrent session (each at most its file cap).
            limit = quantity_bytes(logs["emptyDir"]["sizeLimit"])
            self.assertGreaterEqual(
                limit,
                streaming["session_log_max_total_bytes"] + streaming["max_sessions"] * streaming["session_log_max_file_bytes"],
                name,
            )
            wanted = values.get("replica", {}).get("sessionLogs", {}).get("maxTotalMiB", 256)
            self.assertEqual(streaming["session_log_max_total_bytes"], wanted << 20, name)
            prompt_dir = settings["prompt"]["system_prompt_dir"]
            if values.get("replica", {}).get("prompt", {}).get("writableSystemPrompts"):
                writable_volume(prompt_dir)
            else:
                self.assertIsNone(prompt_dir, name)
        # Session logs (they hold prompts) can be turned off: no directory, no volume.
        docs = render({**MINIMAL, "replica": {"sessionLogs": {"enabled": False}}})
        self.assertIsNone(load_in_binary(docs, "replica")["streaming"]["session_log_dir"])
        pod = one(docs, "StatefulSet", "replica")["spec"]["template"]["spec"]
        self.assertNotIn("session-logs", [v["name"] for v in pod["volumes"]])
        # The router has a small /tmp and nothing else writable.
        router = one(render(MINIMAL), "Deployment")["spec"]["template"]["spec"]
        writable = [m["mountPath"] for m in router["containers"][0]["volumeMounts"] if not m.get("readOnly")]
        self.assertEqual(writable, ["/tmp"])
        self.assertEqual(next(v for v in router["volumes"] if v["name"] == "tmp")["emptyDir"], {"sizeLimit": "16Mi"})


def quantity_bytes(text: str) -> int:
    number, unit = re.fullmatch(r"([0-9]+)([KMGT]i)?", text).groups()
    return int(number) << {None: 0, "Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40}[unit]


class ExtensionHooks(unittest.TestCase):
    def test_hooks_reach_the_pods_where_expected(self) -> None:
        docs = render(HOOKS)
        for component in ("router", "replica"):
            v = HOOKS[component]
            workload = one(docs, COMPONENTS[component][0], component)
            pod = workload["spec"]["template"]["spec"]
            c = pod["containers"][0]
            env = c["env"]
            # The user's variables come after the chart's, so they can override one.
            self.assertEqual(env[-len(v["env"]) :], v["env"], component)
            self.assertEqual(c["envFrom"], v["envFrom"], component)
            self.assertEqual(c["volumeMounts"][-1], v["extraVolumeMounts"][0], component)
            self.assertEqual(pod["volumes"][-1], v["extraVolumes"][0], component)
            # The user's init containers first, then the chart's model check (replicas).
            chart_init = ["model-check"] if component == "replica" else []
            self.assertEqual([i["name"] for i in pod["initContainers"]], [v["initContainers"][0]["name"], *chart_init], component)
            self.assertEqual(pod["imagePullSecrets"], [{"name": "ghcr-pull"}], component)
            self.assertEqual(pod["priorityClassName"], v["priorityClassName"], component)
            labels = workload["spec"]["template"]["metadata"]["labels"]
            self.assertEqual(labels["team"], "video", component)
            # podLabels cannot take over a selector label.
            self.assertEqual(labels["app.kubernetes.io/component"], component)
            self.assertTrue(workload["spec"]["selector"]["matchLabels"].items() <= labels.items(), component)
        router = one(docs, "Deployment")["spec"]["template"]
        self.assertEqual(router["metadata"]["annotations"]["example.com/owner"], "video-team")
        # Image digests replace the tag.
        self.assertEqual(container(docs, "router")["image"], f"ghcr.io/framecast/framecast-router@{ROUTER_DIGEST}")
        self.assertEqual(container(docs, "replica")["image"], f"ghcr.io/framecast/framecast-replica@{REPLICA_DIGEST}")
        self.assertEqual(container(render(MINIMAL), "router")["image"], "ghcr.io/framecast/framecast-router:0.1.0")
        # Canary partition, zone spread selecting the replica pods, hard router anti-affinity.
        sts = one(docs, "StatefulSet", "replica")
        self.assertEqual(sts["spec"]["updateStrategy"], {"type": "RollingUpdate", "rollingUpdate": {"partition": 3}})
        (spread,) = sts["spec"]["template"]["spec"]["topologySpreadConstraints"]
        self.assertEqual((spread["topologyKey"], spread["whenUnsatisfiable"]), ("topology.kubernetes.io/zone", "DoNotSchedule"))
        self.assertTrue(spread["labelSelector"]["matchLabels"].items() <= pod_labels(docs, "replica").items())
        self.assertFalse(spread["labelSelector"]["matchLabels"].items() <= pod_labels(docs, "router").items())
        (term,) = router["spec"]["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        self.assertTrue(term["labelSelector"]["matchLabels"].items() <= pod_labels(docs, "router").items())
        # Defaults: a soft router anti-affinity and soft hostname + zone spread of the replicas.
        docs = render(MINIMAL)
        affinity = one(docs, "Deployment")["spec"]["template"]["spec"]["affinity"]
        (preferred,) = affinity["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
        self.assertEqual(preferred["podAffinityTerm"]["topologyKey"], "kubernetes.io/hostname")
        spread = one(docs, "StatefulSet", "replica")["spec"]["template"]["spec"]["topologySpreadConstraints"]
        self.assertEqual([s["topologyKey"] for s in spread], ["kubernetes.io/hostname", "topology.kubernetes.io/zone"])
        self.assertEqual({s["whenUnsatisfiable"] for s in spread}, {"ScheduleAnyway"})
        self.assertEqual(one(docs, "StatefulSet", "replica")["spec"]["updateStrategy"]["rollingUpdate"]["partition"], 0)
        self.assertNotIn("Canary", notes(MINIMAL))
        self.assertIn("partition=3: only replicas with ordinal\n>= 3", notes(HOOKS))
        # router.affinity with its own podAntiAffinity replaces the preset; nodeAffinity is kept.
        own = {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}}
        node = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [{"key": "edge", "operator": "Exists"}]}]}}}
        spec = one(render({**MINIMAL, "router": {"affinity": {**own, **node}}}), "Deployment")["spec"]["template"]["spec"]
        self.assertEqual(spec["affinity"], {**own, **node})
        spec = one(render({**MINIMAL, "router": {"podAntiAffinity": {"preset": "none"}}}), "Deployment")["spec"]["template"]["spec"]
        self.assertNotIn("affinity", spec)
        # PDBs: AlwaysAllow by default (a pod that is not Ready does not block a drain), settable.
        for values, router_policy, replica_policy in ((MINIMAL, "AlwaysAllow", "AlwaysAllow"), (HOOKS, "AlwaysAllow", "IfHealthyBudget")):
            d = render(values)
            self.assertEqual(one(d, "PodDisruptionBudget", "router")["spec"]["unhealthyPodEvictionPolicy"], router_policy)
            self.assertEqual(one(d, "PodDisruptionBudget", "replica")["spec"]["unhealthyPodEvictionPolicy"], replica_policy)

    def test_service_account_token_is_not_mounted_unless_asked(self) -> None:
        for name, values in {**OVERLAYS, **REDIS_VARIANTS}.items():
            docs = render(values)
            for workload, pod in pod_templates(docs).items():
                self.assertIs(pod["automountServiceAccountToken"], False, f"{name}: {workload}")
                self.assertNotIn("serviceAccountToken", json.dumps(pod.get("volumes", [])), f"{name}: {workload}")
            accounts = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ServiceAccount"}
            for component in ("router", "replica"):
                pod = one(docs, COMPONENTS[component][0], component)["spec"]["template"]["spec"]
                account = accounts[pod["serviceAccountName"]]
                self.assertEqual(account["metadata"]["name"], f"fc-framecast-{component}", name)
                self.assertIs(account["automountServiceAccountToken"], False, name)
        # Named, annotated, or an existing account with its token mounted when asked for.
        docs = render(HOOKS)
        accounts = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ServiceAccount"}
        self.assertEqual(list(accounts), ["edge-router"])
        self.assertEqual(accounts["edge-router"]["metadata"]["annotations"], {"example.com/role": "edge"})
        router = one(docs, "Deployment")["spec"]["template"]["spec"]
        replica = one(docs, "StatefulSet", "replica")["spec"]["template"]["spec"]
        self.assertEqual((router["serviceAccountName"], router["automountServiceAccountToken"]), ("edge-router", False))
        self.assertEqual((replica["serviceAccountName"], replica["automountServiceAccountToken"]), ("gpu-workloads", True))

    def test_secrets_never_land_in_a_configmap(self) -> None:
        api_key = "api-key-sentinel-0123456789"
        state = "state-secret-sentinel-" + "x" * 20
        docs = render({**HOOKS, "auth": {"apiKeys": [api_key]}, "replica": {**HOOKS["replica"], "stateSecret": {"value": state}}})
        for cm in (d for d in docs if d["kind"] == "ConfigMap"):
            text = json.dumps(cm)
            for secret in (api_key, state, base64.b64encode(api_key.encode()).decode()):
                self.assertNotIn(secret, text, cm["metadata"]["name"])
            self.assertNotIn("secretKeyRef", text, cm["metadata"]["name"])
        # The provider key stays in its Secret: the replica's config names only the variable.
        env = {e["name"]: e for e in container(docs, "replica")["env"]}
        self.assertEqual(
            env["CEREBRAS_API_KEY"]["valueFrom"]["secretKeyRef"], {"name": "framecast-llm", "key": "cerebras-api-key"}
        )
        config = yaml.safe_load(one(docs, "ConfigMap", "replica")["data"]["replica.yaml"])
        self.assertEqual(
            config["prompt"]["providers"],
            [
                {"name": "cerebras", "preset": "cerebras", "model": "gpt-oss-120b"},
                {"name": "local", "base_url": "http://vllm.llm.svc:8000/v1", "model": "qwen2.5-7b", "allow_no_key": True},
            ],
        )
        for provider in config["prompt"]["providers"]:
            self.assertNotIn("api_key", provider)
        # The real replica accepts the prompt section (with the key in its environment).
        prompt = load_in_binary(docs, "replica")["prompt"]
        self.assertTrue(prompt["enabled"])
        self.assertEqual([p["name"] for p in prompt["providers"]], ["cerebras", "local"])
        self.assertEqual(prompt["system_prompt_dir"], "/var/lib/framecast/system-prompts")
        # The schema refuses a key written into values.
        with helm.Chart.load(str(CHART)) as chart:
            with self.assertRaises(helm.HelmValuesError):
                chart.validate_schema(
                    {"replica": {"prompt": {"providers": [{"name": "c", "preset": "cerebras", "model": "m", "apiKey": "csk-1"}]}}}
                )

    def test_network_policies_select_the_chart_pods(self) -> None:
        for name, values in {"default": MINIMAL, "prod-multigpu": OVERLAYS["prod-multigpu"], "hooks": HOOKS}.items():
            docs = render(values)
            policies = {
                p["metadata"]["labels"]["app.kubernetes.io/component"]: p for p in docs if p["kind"] == "NetworkPolicy"
            }
            with_redis = values.get("redis", {}).get("enabled", False)
            self.assertEqual(sorted(policies), ["redis", "replica", "router"] if with_redis else ["replica", "router"], name)
            labels = {c: pod_labels(docs, c) for c in policies}
            ports = {
                c: {p["name"] for p in one(docs, "Deployment" if c == "router" else "StatefulSet", c)["spec"]["template"]["spec"]["containers"][0]["ports"]}
                for c in policies
            }
            scraper = values.get("networkPolicy", {}).get("metricsScraper") or {
                "namespaceSelector": {},
                "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
            }

            def matches(selector: dict, component: str) -> bool:
                return selector["matchLabels"].items() <= labels[component].items()

            for component, policy in policies.items():
                spec = policy["spec"]
                self.assertEqual(spec["policyTypes"], ["Ingress"], name)
                # Each policy selects its own component's pods and no other.
                self.assertEqual([c for c in labels if matches(spec["podSelector"], c)], [component], f"{name} {component}")
                for rule in spec["ingress"]:
                    for port in rule["ports"]:
                        self.assertIn(port["port"], ports[component], f"{name} {component}")

            def allowed(component: str, port: str) -> list:
                """Who may reach `port` of `component`: "anyone" or the peers."""
                peers = []
                for rule in policies[component]["spec"]["ingress"]:
                    if port in [p["port"] for p in rule["ports"]]:
                        peers.extend(rule.get("from", ["anyone"]))
                return peers

            self.assertEqual(allowed("router", "http"), ["anyone"], name)
            self.assertEqual(allowed("router", "admin"), [scraper], name)
            extra = values.get("networkPolicy", {}).get("extraIngress", {}).get("replica", [])
            extra_peers = [p for r in extra for p in r["from"]]
            self.assertEqual(len(allowed("replica", "http")), 1, name)
            self.assertTrue(matches(allowed("replica", "http")[0]["podSelector"], "router"), name)
            self.assertNotIn("namespaceSelector", allowed("replica", "http")[0], name)
            admin_peers = allowed("replica", "admin")
            self.assertEqual(len(admin_peers), 2 + len(extra_peers), name)
            self.assertTrue(matches(admin_peers[0]["podSelector"], "router"), name)
            self.assertEqual(admin_peers[1:], [scraper, *extra_peers], name)
            if with_redis:
                (peer,) = allowed("redis", "redis")
                self.assertTrue(matches(peer["podSelector"], "replica"), name)
                self.assertFalse(matches(peer["podSelector"], "router"), name)
        self.assertEqual([d for d in render(EXTRA_VARIANTS["no-network-policy"]) if d["kind"] == "NetworkPolicy"], [])
        with self.assertRaises(helm.HelmError) as caught:
            render({**MINIMAL, "networkPolicy": {"metricsScraper": {"namespaceSelector": None, "podSelector": None}}})
        self.assertIn("networkPolicy.metricsScraper", str(caught.exception))

    def test_gpu_pods_get_the_video_driver_capability(self) -> None:
        for name, values in OVERLAYS.items():
            env = pod_env(container(render(values), "replica"))
            if values.get("replica", {}).get("gpus", 1):
                self.assertIn("video", env["NVIDIA_DRIVER_CAPABILITIES"].split(","), name)
                self.assertTrue({"compute", "utility"} <= set(env["NVIDIA_DRIVER_CAPABILITIES"].split(",")), name)
            else:
                self.assertNotIn("NVIDIA_DRIVER_CAPABILITIES", env, name)
        # The prod overlay encodes with NVENC: hiding `video` from it fails rendering.
        prod = OVERLAYS["prod-multigpu"]
        with self.assertRaises(helm.HelmError) as caught:
            render({**prod, "replica": {**prod["replica"], "nvidiaDriverCapabilities": "compute,utility"}})
        self.assertIn("nvidiaDriverCapabilities", str(caught.exception))
        render({**prod, "replica": {**prod["replica"], "nvidiaDriverCapabilities": "all"}})

    def test_schema_rejects_bad_hook_and_security_values(self) -> None:
        bad = [
            {"imagePullSecrets": ["ghcr-pull"]},
            {"router": {"image": {"digest": "latest"}}},
            {"replica": {"image": {"digest": "sha256:abc"}}},
            {"router": {"env": [{"value": "no name"}]}},
            {"router": {"env": [{"name": "A", "value": "x", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}},
            {"replica": {"env": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "s"}}}]}},
            {"replica": {"env": {"A": "b"}}},
            {"router": {"envFrom": [{"prefix": "X_"}]}},
            {"replica": {"extraVolumes": [{"name": "only-a-name"}]}},
            {"replica": {"extraVolumeMounts": [{"name": "v", "mountPath": "relative"}]}},
            {"replica": {"extraVolumeMounts": [{"name": "v", "mountPath": "/x", "typo": 1}]}},
            {"router": {"initContainers": [{"name": "no-image"}]}},
            {"router": {"podLabels": {"tier": 1}}},
            {"router": {"serviceAccount": {"create": "yes"}}},
            {"replica": {"serviceAccount": {"token": True}}},
            {"router": {"podSecurityContext": {"runAsUser": -1}}},
            {"router": {"podSecurityContext": {"seccompProfile": {"type": "Default"}}}},
            {"replica": {"podSecurityContext": {"typo": 1}}},
            {"replica": {"securityContext": {"capabilities": {"drop": "ALL"}}}},
            {"redis": {"securityContext": {"privileged": "no"}}},
            {"router": {"tmpSizeLimit": "lots"}},
            {"replica": {"updateStrategy": {"type": "Recreate"}}},
            {"replica": {"updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": -1}}}},
            {"replica": {"topologySpreadConstraints": [{"topologyKey": "zone", "maxSkew": 0, "whenUnsatisfiable": "ScheduleAnyway"}]}},
            {"replica": {"topologySpreadConstraints": [{"topologyKey": "zone"}]}},
            {"router": {"podAntiAffinity": {"preset": "always"}}},
            {"router": {"podDisruptionBudget": {"unhealthyPodEvictionPolicy": "Never"}}},
            {"router": {"priorityClassName": "Not_A_Name"}},
            {"replica": {"nvidiaDriverCapabilities": "compute, video"}},
            {"replica": {"sessionLogs": {"maxTotalMiB": 0}}},
            {"replica": {"prompt": {"providers": [{"name": "c", "model": "m"}]}}},
            {"replica": {"prompt": {"providers": [{"name": "c", "model": "m", "baseUrl": "vllm:8000"}]}}},
            {"networkPolicy": {"enabled": "yes"}},
            {"networkPolicy": {"metricsScraper": {"podSelector": {"app": "prometheus"}}}},
            {"networkPolicy": {"extraIngress": {"gateway": []}}},
        ]
        with helm.Chart.load(str(CHART)) as chart:
            for values in (HOOKS, OPENSHIFT, *EXTRA_VARIANTS.values()):
                chart.validate_schema(values)
            for values in bad:
                with self.assertRaises(helm.HelmValuesError, msg=str(values)):
                    chart.validate_schema(values)
        with self.assertRaises(helm.HelmError) as caught:
            render({**MINIMAL, "replica": {"prompt": {"enabled": True}}})
        self.assertIn("replica.prompt.providers", str(caught.exception))


def replica_pod(docs: list[dict]) -> dict:
    return one(docs, "StatefulSet", "replica")["spec"]["template"]["spec"]


def init_container(docs: list[dict], name: str) -> dict:
    (found,) = [c for c in replica_pod(docs).get("initContainers", []) if c["name"] == name]
    return found


def model_path(docs: list[dict]) -> str:
    return yaml.safe_load(one(docs, "ConfigMap", "replica")["data"]["replica.yaml"])["generator"]["model_path"]


TINY = ROOT / "models" / "wan-tiny"


class ContainerRun:
    """Runs a rendered container's command here: each of its volume mounts becomes a local
    directory (a subPath one the matching subdirectory), every path under a mount in its
    command, args and environment is moved there, and its environment is what Kubernetes would
    build (pod_env: a stand-in for each Secret)."""

    def __init__(self, docs: list[dict], root: Path) -> None:
        self.docs, self.root = docs, root
        pod = replica_pod(docs)
        self.volumes = {v["name"]: v for v in pod["volumes"]}
        for name, volume in self.volumes.items():
            local = root / name
            local.mkdir(parents=True, exist_ok=True)
            if "configMap" in volume:
                cm = named(docs, "ConfigMap", volume["configMap"]["name"])
                for key, text in cm["data"].items():
                    (local / key).write_text(text)

    def mounts(self, c: dict) -> list[tuple[str, Path]]:
        found = []
        for m in c["volumeMounts"]:
            local = self.root / m["name"] / m.get("subPath", "")
            found.append((m["mountPath"].rstrip("/"), local))
        # Longest mount path first, so /cache/x wins over /cache.
        return sorted(found, key=lambda p: -len(p[0]))

    def local(self, c: dict, text: str) -> str:
        for path, local in self.mounts(c):
            if text == path or text.startswith(path + "/"):
                return str(local) + text[len(path) :]
        return text

    def run(self, c: dict, argv0: str | None = None, extra_env: dict[str, str] | None = None, timeout: int = 120):
        env = {k: self.local(c, v) for k, v in pod_env(c).items()}
        argv = [self.local(c, a) for a in c.get("command", []) + c.get("args", [])]
        if argv0:
            argv = [argv0, *argv]
        base = {k: v for k, v in os.environ.items() if not k.startswith(("FRAMECAST_", "HF_", "AWS_"))}
        return subprocess.run(argv, env={**base, **env, **(extra_env or {})}, capture_output=True, text=True, timeout=timeout)


def serve_directory(directory: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(directory)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return server, port
        except OSError:
            time.sleep(0.05)
    server.kill()
    raise AssertionError("http.server did not start")


def tar_gz(source: Path, dest: Path, top: str = "wan-tiny") -> str:
    """`source` packed as dest (a tar.gz with one top-level directory `top`); its sha256."""
    with tarfile.open(dest, "w:gz") as tar:
        tar.add(source, arcname=top, filter=lambda m: None if "/reference" in m.name else m)
    return hashlib.sha256(dest.read_bytes()).hexdigest()


class ModelProvisioning(unittest.TestCase):
    """replica.model: the source, the cache volume, model-fetch and model-check."""

    def test_default_is_the_bundled_tiny_model_checked_by_the_replica(self) -> None:
        for name in ("default", "cpu-tiny"):
            docs = render(OVERLAYS[name])
            pod = replica_pod(docs)
            self.assertEqual(model_path(docs), "/opt/framecast/models/wan-tiny", name)
            self.assertEqual([c["name"] for c in pod["initContainers"]], ["model-check"], name)
            self.assertNotIn("model", json.dumps(pod["containers"][0]["volumeMounts"]), name)
            self.assertNotIn("volumeClaimTemplates", one(docs, "StatefulSet", "replica")["spec"], name)
        # The image carries the model there (docker/replica.Dockerfile builds it).
        self.assertIn("/opt/framecast/models/wan-tiny", (ROOT / "docker" / "replica.Dockerfile").read_text())
        # The mock generator and `none` have nothing to check.
        self.assertNotIn("initContainers", replica_pod(render(OVERLAYS["dev-cpu"])))

    def test_model_check_runs_the_replica_binary_with_the_replica_config_and_environment(self) -> None:
        for name, values in {**OVERLAYS, **MODEL_VARIANTS}.items():
            docs = render(values)
            pod = replica_pod(docs)
            replica = pod["containers"][0]
            if values.get("replica", {}).get("generator", {}).get("kind") == "mock":
                continue
            check = init_container(docs, "model-check")
            self.assertEqual(check["image"], replica["image"], name)
            self.assertEqual(check["args"], ["--config", "/etc/framecast/replica.yaml", "--check-model"], name)
            self.assertEqual(replica["args"], ["--config", "/etc/framecast/replica.yaml"], name)
            self.assertEqual(check["env"], replica["env"][: len(check["env"])], name)
            self.assertEqual(len(check["env"]), len(replica["env"]), name)
            # It sees the model where the replica does, read-only, and the same config.
            model_mounts = lambda c: [m for m in c["volumeMounts"] if m["name"] in ("model", "model-cache", "config")]
            self.assertEqual(model_mounts(check), model_mounts(replica), name)
            self.assertTrue(all(m.get("readOnly") for m in model_mounts(check)), name)
            self.assertEqual(check["securityContext"], replica["securityContext"], name)
            self.assertEqual(pod["initContainers"][-1]["name"], "model-check", name)

    def test_each_source_renders_its_downloader_volume_and_secrets(self) -> None:
        # Hugging Face: the token from its Secret, the repo at a pinned revision, a claim per replica.
        docs = render(MODEL_VARIANTS["model-huggingface"])
        fetch = init_container(docs, "model-fetch")
        env = {e["name"]: e for e in fetch["env"]}
        self.assertEqual(env["HF_TOKEN"]["valueFrom"]["secretKeyRef"], {"name": "hf-token", "key": "token"})
        self.assertEqual(env["HF_REPO"]["value"], "Wan-AI/Wan2.1-T2V-1.3B-Diffusers")
        self.assertEqual(env["HF_INCLUDE"]["value"], "*.json,*.safetensors")
        self.assertEqual(fetch["image"], "docker.io/library/python:3.12-slim")
        self.assertEqual(fetch["command"], ["sh", "/opt/framecast-fetch/fetch-model.sh"])
        (claim,) = one(docs, "StatefulSet", "replica")["spec"]["volumeClaimTemplates"]
        self.assertEqual((claim["metadata"]["name"], claim["spec"]["resources"]["requests"]["storage"]), ("model-cache", "20Gi"))
        replica = container(docs, "replica")
        (mount,) = [m for m in replica["volumeMounts"] if m["name"] == "model-cache"]
        self.assertEqual((mount["mountPath"], mount["readOnly"]), ("/models/wan", True))
        self.assertEqual(env["FRAMECAST_MODEL_DIR"]["value"], "/cache/" + mount["subPath"])
        self.assertEqual(model_path(docs), "/models/wan")
        self.assertEqual(named(docs, "ConfigMap", "fc-framecast-model-fetch")["data"]["fetch-model.sh"], (CHART / "files/model/fetch-model.sh").read_text())
        # Nothing secret in the ConfigMaps; the identity (marker) carries no token.
        for cm in (d for d in docs if d["kind"] == "ConfigMap"):
            self.assertNotIn("hf-token", json.dumps(cm))
        # url: an emptyDir cache; from a Secret: a shared RWX claim.
        docs = render(MODEL_VARIANTS["model-url"])
        self.assertIn({"name": "model-cache", "emptyDir": {"sizeLimit": "8Gi"}}, replica_pod(docs)["volumes"])
        env = pod_env(init_container(docs, "model-fetch"))
        self.assertEqual((env["FRAMECAST_MODEL_URL"], env["FRAMECAST_MODEL_SHA256"]), ("https://models.example.com/wan.tar.gz", ARCHIVE_SHA256))
        docs = render(MODEL_VARIANTS["model-url-secret"])
        self.assertIn({"name": "model-cache", "persistentVolumeClaim": {"claimName": "model-cache-rwx"}}, replica_pod(docs)["volumes"])
        self.assertNotIn("volumeClaimTemplates", one(docs, "StatefulSet", "replica")["spec"])
        env = {e["name"]: e for e in init_container(docs, "model-fetch")["env"]}
        self.assertEqual(env["FRAMECAST_MODEL_URL"]["valueFrom"]["secretKeyRef"], {"name": "wan-presigned", "key": "url"})
        # s3: the AWS CLI image (by digest), keys from a Secret, the endpoint of an S3-compatible store.
        docs = render(MODEL_VARIANTS["model-s3"])
        fetch = init_container(docs, "model-fetch")
        self.assertEqual(fetch["image"], "docker.io/amazon/aws-cli:2.32.9@sha256:" + "c3" * 32)
        env = {e["name"]: e for e in fetch["env"]}
        self.assertEqual(env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"], {"name": "minio-keys", "key": "AWS_SECRET_ACCESS_KEY"})
        self.assertEqual(env["FRAMECAST_S3_ENDPOINT_URL"]["value"], "https://minio.example.com")
        # existingClaim: mounted read-only as is, no download.
        docs = render(MODEL_VARIANTS["model-existing-claim"])
        self.assertEqual([c["name"] for c in replica_pod(docs)["initContainers"]], ["model-check"])
        self.assertIn({"name": "model", "persistentVolumeClaim": {"claimName": "wan21-rox", "readOnly": True}}, replica_pod(docs)["volumes"])
        (mount,) = [m for m in container(docs, "replica")["volumeMounts"] if m["name"] == "model"]
        self.assertEqual(mount, {"name": "model", "mountPath": "/models/wan21", "subPath": "Wan2.1-T2V-1.3B-Diffusers", "readOnly": True})
        self.assertEqual(model_path(docs), "/models/wan21")
        self.assertEqual([d for d in docs if d["kind"] == "ConfigMap" and "fetch-model.sh" in d["data"]], [])

    def test_the_cache_directory_follows_the_source_identity(self) -> None:
        def key(values: dict) -> str:
            env = pod_env(init_container(render(values), "model-fetch"))
            return env["FRAMECAST_MODEL_DIR"], env["FRAMECAST_MODEL_SOURCE"]

        url = lambda u, sha="": with_model({"source": {"kind": "url", "url": {"url": u, "sha256": sha}}})
        base, identity = key(url("https://b.example.com/wan.tar.gz?X-Amz-Signature=aaa"))
        # A re-signed URL (another query) is the same source: no refetch, and no credentials
        # in the marker.
        self.assertEqual(key(url("https://b.example.com/wan.tar.gz?X-Amz-Signature=bbb"))[0], base)
        self.assertNotIn("Signature", identity)
        self.assertNotEqual(key(url("https://b.example.com/wan-v2.tar.gz"))[0], base)
        self.assertNotEqual(key(url("https://b.example.com/wan.tar.gz", ARCHIVE_SHA256))[0], base)
        hf = lambda rev: with_model({"source": {"kind": "huggingface", "huggingface": {"repo": "a/b", "revision": rev}}})
        self.assertNotEqual(key(hf("main"))[0], key(hf("0fad780a"))[0])
        # A changed source rolls the pods (the config names it only through the mount).
        annotations = lambda v: one(render(v), "StatefulSet", "replica")["spec"]["template"]["metadata"]["annotations"]
        self.assertIn("checksum/model-fetch", annotations(hf("main")))

    def test_bad_model_values_are_refused(self) -> None:
        failing = {
            "huggingface.repo": with_model({"source": {"kind": "huggingface"}}),
            "url.url nor url.existingSecret": with_model({"source": {"kind": "url"}}),
            "url: set url or existingSecret": with_model({"source": {"kind": "url", "url": {"url": "https://x/y.tgz", "existingSecret": "s"}}}),
            "s3.uri": with_model({"source": {"kind": "s3"}}),
            "existingClaim.claimName": with_model({"source": {"kind": "existingClaim"}}),
            "hostPath.path": with_model({"source": {"kind": "hostPath"}}),
            "cache.claimName": with_model({"source": {"kind": "url", "url": {"url": "https://x/y.tgz"}}, "cache": {"type": "sharedClaim"}}),
        }
        for hint, values in failing.items():
            with self.assertRaises(helm.HelmError, msg=hint) as caught:
                render(values)
            self.assertIn(hint, str(caught.exception))
        bad = [
            {"replica": {"model": {"source": {"kind": "gcs"}}}},
            {"replica": {"model": {"volume": {"type": "pvc"}}}},
            {"replica": {"model": {"source": {"kind": "url", "url": {"url": "ftp://x/y.tgz"}}}}},
            {"replica": {"model": {"source": {"kind": "url", "url": {"sha256": "abc"}}}}},
            {"replica": {"model": {"source": {"kind": "s3", "s3": {"uri": "https://bucket/x"}}}}},
            {"replica": {"model": {"source": {"kind": "huggingface", "huggingface": {"token": {"value": "hf_x"}}}}}},
            {"replica": {"model": {"cache": {"type": "hostPath"}}}},
            {"replica": {"model": {"downloader": {"image": {"repository": "python", "tag": ""}}}}},
            {"replica": {"model": {"downloader": {"image": {"digest": "latest"}}}}},
        ]
        with helm.Chart.load(str(CHART)) as chart:
            for values in MODEL_VARIANTS.values():
                chart.validate_schema(values)
            for values in bad:
                with self.assertRaises(helm.HelmValuesError, msg=str(values)):
                    chart.validate_schema(values)

    def test_bundled_model_passes_the_real_check_with_the_rendered_config(self) -> None:
        """cpu-tiny: the rendered model-check against the real binary, the image's model
        directory stood in for by models/wan-tiny."""
        self.assertTrue((TINY / "model_index.json").exists(), "run scripts/setup")
        docs = render(OVERLAYS["cpu-tiny"])
        with tempfile.TemporaryDirectory() as tmp:
            run = ContainerRun(docs, Path(tmp))
            check = init_container(docs, "model-check")
            out = run.run(check, str(TARGET / "framecast-replica"), {"FRAMECAST_REPLICA__GENERATOR__MODEL_PATH": str(TINY)})
            self.assertEqual(out.returncode, 0, out.stderr)
            summary = json.loads(out.stdout)
            self.assertEqual((summary["ok"], summary["format"]["width"], summary["format"]["height"]), (True, 320, 192))

    def test_url_source_fetches_once_and_the_real_check_accepts_it(self) -> None:
        """The rendered model-fetch (script, environment, mounts) against a local HTTP server
        serving a tar.gz of models/wan-tiny, then the rendered model-check with the real
        binary; a second start finds the marker and fetches nothing (the server is gone)."""
        self.assertTrue((TINY / "model_index.json").exists(), "run scripts/setup")
        self.assertIsNotNone(shutil.which("python3"))
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            served = tmp / "served"
            served.mkdir()
            sha = tar_gz(TINY, served / "wan-tiny.tar.gz")
            server, port = serve_directory(served)
            try:
                values = with_model(
                    {"source": {"kind": "url", "url": {"url": f"http://127.0.0.1:{port}/wan-tiny.tar.gz?X-Amz-Signature=s1", "sha256": sha}}, "cache": {"type": "emptyDir"}},
                    gpus=0,
                    generator={"device": "cpu"},
                )
                docs = render(values)
                run = ContainerRun(docs, tmp / "pod")
                fetch = init_container(docs, "model-fetch")
                first = run.run(fetch)
                self.assertEqual(first.returncode, 0, first.stdout + first.stderr)
                self.assertIn("fetching", first.stdout)
            finally:
                server.kill()
                server.wait()
            model_dir = Path(run.local(fetch, pod_env(fetch)["FRAMECAST_MODEL_DIR"]))
            self.assertEqual((model_dir / ".framecast-source").read_text(), pod_env(fetch)["FRAMECAST_MODEL_SOURCE"])
            self.assertTrue((model_dir / "transformer" / "config.json").exists())
            # Nothing half-done left next to it (the archive, the partial directory).
            self.assertEqual(sorted(p.name for p in model_dir.parent.iterdir()), [model_dir.name])
            second = run.run(fetch)
            self.assertEqual(second.returncode, 0, second.stdout + second.stderr)
            self.assertIn("already holds", second.stdout)
            # model-check sees the fetched directory through the replica's mount.
            check = init_container(docs, "model-check")
            self.assertEqual(run.local(check, model_path(docs)), str(model_dir))
            out = run.run(check, str(TARGET / "framecast-replica"), {"FRAMECAST_REPLICA__GENERATOR__MODEL_PATH": run.local(check, model_path(docs))})
            self.assertEqual(out.returncode, 0, out.stderr)
            self.assertTrue(json.loads(out.stdout)["ok"])
            # A model whose config no longer matches its weights is fetched, then refused by the check.
            config = model_dir / "transformer" / "config.json"
            broken = json.loads(config.read_text())
            broken["num_layers"] += 1
            config.write_text(json.dumps(broken))
            out = run.run(check, str(TARGET / "framecast-replica"), {"FRAMECAST_REPLICA__GENERATOR__MODEL_PATH": str(model_dir)})
            self.assertEqual(out.returncode, 1, out.stdout)
            self.assertIn("cannot be served", out.stderr)

    def test_url_fetch_refuses_bad_archives_and_leaves_nothing_behind(self) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            served = tmp / "served"
            served.mkdir()
            sha = tar_gz(TINY, served / "wan-tiny.tar.gz")
            (tmp / "not-a-model").mkdir()
            (tmp / "not-a-model" / "README").write_text("no model_index.json here")
            tar_gz(tmp / "not-a-model", served / "empty.tar.gz", top="stuff")
            server, port = serve_directory(served)
            try:
                cases = {
                    "sha256": {"url": f"http://127.0.0.1:{port}/wan-tiny.tar.gz", "sha256": "0" * 64},
                    "no model_index.json": {"url": f"http://127.0.0.1:{port}/empty.tar.gz"},
                    "HTTP 404": {"url": f"http://127.0.0.1:{port}/missing.tar.gz"},
                }
                for hint, url in cases.items():
                    docs = render(with_model({"source": {"kind": "url", "url": url}, "cache": {"type": "emptyDir"}}))
                    run = ContainerRun(docs, tmp / hint.replace(" ", "-"))
                    fetch = init_container(docs, "model-fetch")
                    out = run.run(fetch)
                    self.assertNotEqual(out.returncode, 0, hint)
                    self.assertIn(hint, out.stderr, hint)
                    cache = Path(run.local(fetch, "/cache"))
                    self.assertEqual(list(cache.iterdir()), [], hint)
                self.assertEqual(len(sha), 64)
            finally:
                server.kill()
                server.wait()

    def test_huggingface_source_fetches_through_the_hub_api_with_the_token(self) -> None:
        """The rendered model-fetch against a stand-in Hub (HF_ENDPOINT) that serves
        models/wan-tiny and demands the token from the Secret; then the real check."""
        files = sorted(str(p.relative_to(TINY)) for p in TINY.rglob("*") if p.is_file() and "reference" not in p.parts and not p.name.startswith("."))
        seen: list[str] = []
        commit = "c0ffee" * 6 + "c0ff"

        class Hub(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                if self.headers.get("Authorization") != f"Bearer {DUMMY_SECRET}":
                    self.send_error(401)
                    return
                path = urllib.parse.unquote(self.path)
                seen.append(path)
                if path == "/api/models/example/wan-tiny/revision/v1":
                    body = json.dumps({"sha": commit, "siblings": [{"rfilename": f} for f in files]}).encode()
                elif path.startswith(f"/example/wan-tiny/resolve/{commit}/"):
                    body = (TINY / path.split(f"/resolve/{commit}/", 1)[1]).read_bytes()
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        hub = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hub)
        threading.Thread(target=hub.serve_forever, daemon=True).start()
        try:
            values = with_model(
                {
                    "source": {
                        "kind": "huggingface",
                        "huggingface": {"repo": "example/wan-tiny", "revision": "v1", "endpoint": f"http://127.0.0.1:{hub.server_port}", "token": {"existingSecret": "hf-token"}},
                    },
                    "cache": {"type": "emptyDir"},
                }
            )
            docs = render(values)
            with tempfile.TemporaryDirectory() as tmp:
                run = ContainerRun(docs, Path(tmp))
                fetch = init_container(docs, "model-fetch")
                out = run.run(fetch)
                self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
                # Every file fetched at the commit the revision named.
                self.assertEqual(sorted(p.split(f"/resolve/{commit}/", 1)[1] for p in seen if "/resolve/" in p), files)
                check = init_container(docs, "model-check")
                model_dir = run.local(check, model_path(docs))
                out = run.run(check, str(TARGET / "framecast-replica"), {"FRAMECAST_REPLICA__GENERATOR__MODEL_PATH": model_dir})
                self.assertEqual(out.returncode, 0, out.stderr)
                # Without the token the Hub refuses, and the message says what is missing.
                out = run.run(fetch, extra_env={"HF_TOKEN": "", "FRAMECAST_MODEL_DIR": str(Path(tmp) / "model-cache" / "other")})
                self.assertNotEqual(out.returncode, 0)
                self.assertIn("HTTP 401", out.stderr)
                self.assertIn("token", out.stderr)
        finally:
            hub.shutdown()


class Autoscaling(unittest.TestCase):
    """replica.autoscaling: an HPA or a KEDA ScaledObject on the replica StatefulSet."""

    def test_off_by_default(self) -> None:
        for name, values in OVERLAYS.items():
            docs = render(values)
            self.assertEqual([d for d in docs if d["kind"] in ("HorizontalPodAutoscaler", "ScaledObject")], [], name)
            self.assertEqual(one(docs, "StatefulSet", "replica")["spec"]["replicas"], values.get("replica", {}).get("count", 2), name)

    def test_hpa_scales_the_statefulset_on_queue_depth_and_drains_slowly(self) -> None:
        docs = render(AUTOSCALING_VARIANTS["autoscaling-hpa"])
        hpa = one(docs, "HorizontalPodAutoscaler", "replica")
        sts = one(docs, "StatefulSet", "replica")
        self.assertEqual(hpa["apiVersion"], "autoscaling/v2")
        self.assertEqual(hpa["spec"]["scaleTargetRef"], {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": sts["metadata"]["name"]})
        self.assertEqual((hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]), (2, 6))
        # The autoscaler owns the count: an upgrade must not reset it.
        self.assertNotIn("replicas", sts["spec"])
        metrics = {m["pods"]["metric"]["name"]: m["pods"]["target"] for m in hpa["spec"]["metrics"]}
        self.assertEqual(metrics["framecast_queue_depth"], {"type": "AverageValue", "averageValue": "1"})
        self.assertEqual(metrics["framecast_sessions_active"], {"type": "AverageValue", "averageValue": "3"})
        down = hpa["spec"]["behavior"]["scaleDown"]
        self.assertGreaterEqual(down["stabilizationWindowSeconds"], 300)
        self.assertEqual(down["policies"], [{"type": "Pods", "value": 1, "periodSeconds": 300}])
        # The metric names are ones the replica exports.
        exported = (ROOT / "replica" / "src" / "observability.rs").read_text()
        for metric in metrics:
            self.assertIn(f'"{metric}"', exported)
        # The pods drain within their grace period.
        pod = sts["spec"]["template"]["spec"]
        config = load_in_binary(docs, "replica")
        self.assertGreater(pod["terminationGracePeriodSeconds"], config["server"]["shutdown_grace_seconds"])

    def test_router_lists_every_pod_up_to_max_replicas(self) -> None:
        for name, values in AUTOSCALING_VARIANTS.items():
            docs = render(values)
            config = load_in_binary(docs, "router")["router"]
            most = values["replica"]["autoscaling"]["maxReplicas"]
            sts = one(docs, "StatefulSet", "replica")["metadata"]["name"]
            self.assertEqual([r["name"] for r in config["replicas"]], [f"replica-{i}" for i in range(most)], name)
            self.assertIn(f"{sts}-{most - 1}.", config["replicas"][-1]["url"], name)
        with self.assertRaises(helm.HelmError) as caught:
            render({**MINIMAL, "replica": {"autoscaling": {"enabled": True, "maxReplicas": 65}}})
        self.assertIn("maxReplicas (65) is above 64", str(caught.exception))
        render({**MINIMAL, "replica": {"autoscaling": {"enabled": True, "maxReplicas": 64}}})
        with self.assertRaises(helm.HelmError) as caught:
            render({**MINIMAL, "replica": {"autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 3}}})
        self.assertIn("minReplicas (5) exceeds maxReplicas (3)", str(caught.exception))
        with self.assertRaises(helm.HelmError) as caught:
            render({**MINIMAL, "replica": {"primaryIndex": 1, "autoscaling": {"enabled": True, "minReplicas": 1}}})
        self.assertIn("replica.autoscaling.minReplicas", str(caught.exception))

    def test_dns_discovery_follows_the_headless_service_instead_of_a_list(self) -> None:
        values = {**MINIMAL, "router": {"replicaDiscovery": "dns"}, "replica": {"autoscaling": {"enabled": True, "maxReplicas": 8}}}
        docs = render(values)
        config = load_in_binary(docs, "router")["router"]
        headless = next(d for d in docs if d["kind"] == "Service" and d["spec"].get("clusterIP") == "None")
        self.assertEqual(config["replicas"], [])
        discovery = config["discovery"]
        self.assertEqual(discovery["dns_name"], f"{headless['metadata']['name']}.{NAMESPACE}.svc.cluster.local")
        ports = {p["name"]: p["port"] for p in headless["spec"]["ports"]}
        self.assertEqual((discovery["port"], discovery["admin_port"]), (ports["http"], ports["admin"]))
        # New pods must resolve before they are ready, so the router can probe them.
        self.assertTrue(headless["spec"]["publishNotReadyAddresses"])
        # The default stays a static list, with no discovery.
        config = load_in_binary(render(MINIMAL), "router")["router"]
        self.assertIsNone(config["discovery"]["dns_name"])
        self.assertGreater(len(config["replicas"]), 0)
        with self.assertRaises(helm.HelmError):
            render({**MINIMAL, "router": {"replicaDiscovery": "consul"}})

    def test_keda_scaled_object_queries_prometheus(self) -> None:
        docs = render(AUTOSCALING_VARIANTS["autoscaling-keda"])
        self.assertEqual([d for d in docs if d["kind"] == "HorizontalPodAutoscaler"], [])
        so = one(docs, "ScaledObject", "replica")
        sts = one(docs, "StatefulSet", "replica")
        self.assertEqual(so["apiVersion"], "keda.sh/v1alpha1")
        spec = so["spec"]
        self.assertEqual(spec["scaleTargetRef"], {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": sts["metadata"]["name"]})
        self.assertEqual((spec["minReplicaCount"], spec["maxReplicaCount"]), (1, 5))
        self.assertNotIn("replicas", sts["spec"])
        (trigger,) = spec["triggers"]
        self.assertEqual(trigger["type"], "prometheus")
        self.assertEqual(trigger["metadata"]["serverAddress"], "http://prometheus.monitoring:9090")
        self.assertEqual(trigger["authenticationRef"], {"name": "prom-auth"})
        query = trigger["metadata"]["query"]
        selector = f'namespace="{NAMESPACE}",pod=~"{sts["metadata"]["name"]}-[0-9]+"'
        self.assertEqual(query, f"sum(framecast_sessions_active{{{selector}}}) + sum(framecast_queue_depth{{{selector}}})")
        self.assertEqual(trigger["metadata"]["threshold"], "3")
        self.assertEqual(spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"], 600)
        # The query is valid PromQL (promtool parses it inside a rule).
        promtool = shutil.which("promtool")
        self.assertIsNotNone(promtool)
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            yaml.safe_dump({"groups": [{"name": "keda", "rules": [{"record": "framecast:keda", "expr": query}]}]}, f)
        try:
            out = subprocess.run([promtool, "check", "rules", f.name], capture_output=True, text=True)
        finally:
            os.unlink(f.name)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        with self.assertRaises(helm.HelmError) as caught:
            render({**MINIMAL, "replica": {"autoscaling": {"enabled": True, "kind": "keda"}}})
        self.assertIn("keda.serverAddress", str(caught.exception))

    def test_grace_period_must_outlast_the_drain(self) -> None:
        with self.assertRaises(helm.HelmError) as caught:
            render({**MINIMAL, "replica": {"shutdownGraceSeconds": 90, "terminationGracePeriodSeconds": 60}})
        self.assertIn("must exceed replica.shutdownGraceSeconds", str(caught.exception))
        docs = render({**MINIMAL, "replica": {"shutdownGraceSeconds": 90, "terminationGracePeriodSeconds": 120}})
        self.assertEqual(load_in_binary(docs, "replica")["server"]["shutdown_grace_seconds"], 90)
        bad = [
            {"replica": {"autoscaling": {"kind": "vpa"}}},
            {"replica": {"autoscaling": {"maxReplicas": 0}}},
            {"replica": {"autoscaling": {"scaleDown": {"stabilizationWindowSeconds": -1}}}},
            {"replica": {"autoscaling": {"hpa": {"queueDepthMetric": "queue depth"}}}},
            {"replica": {"autoscaling": {"keda": {"serverAddress": "prometheus:9090"}}}},
            {"replica": {"shutdownGraceSeconds": 0}},
        ]
        with helm.Chart.load(str(CHART)) as chart:
            for values in AUTOSCALING_VARIANTS.values():
                chart.validate_schema(values)
            for values in bad:
                with self.assertRaises(helm.HelmValuesError, msg=str(values)):
                    chart.validate_schema(values)


if __name__ == "__main__":
    unittest.main()
