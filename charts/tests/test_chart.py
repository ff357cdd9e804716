"""Tests of the Helm chart: rendered offline with helm-python-sdk (Helm's Go SDK, no cluster),
linted, validated with kubernetes-validate --strict, fed to the real binaries' --check-config
and to promtool.

Run by scripts/test after the workspace binaries are built:
    .venv/bin/python -m unittest discover -s charts/tests -v
"""

from __future__ import annotations

import base64
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
# Authentication is on by default and needs a credential: the least a user adds.
MINIMAL = {"auth": {"existingSecret": "framecast-api-keys"}}
OVERLAYS = {
    "default": MINIMAL,
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
    return one(docs, COMPONENTS[component][0], component)["spec"]["template"]["spec"]["containers"][0]


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
    FRAMECAST_* environment (a stand-in value for each secretKeyRef) and, for each file the
    auth section names, a stand-in file at a path given by environment override (after
    checking that the pod mounts that path from a Secret or ConfigMap)."""
    kind, key, prefix, auth_path = COMPONENTS[component]
    text = one(docs, "ConfigMap", component)["data"][key]
    env = {}
    for var in container(docs, component).get("env", []):
        if var["name"].startswith("FRAMECAST_"):
            env[var["name"]] = var["value"] if "value" in var else DUMMY_SECRET
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
            replica = one(docs, "StatefulSet")["spec"]["template"]["spec"]
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
        default = one(render(MINIMAL), "StatefulSet")
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
        self.assertEqual([v["name"] for v in container(docs, "router")["volumeMounts"]], ["config"])
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


if __name__ == "__main__":
    unittest.main()
