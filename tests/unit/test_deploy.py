"""Deployment files an ops team can use, checked offline: the Dockerfile passes hadolint and installs only the
runtime; the Kustomize overlays render and validate against the Kubernetes schemas; compose.yaml describes a
3-node CouchDB cluster with its set-up, one container per role with health checks, secrets only from the
environment."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KUBERNETES_VERSION = "1.33.0"
ROLES = ("ingest", "project", "distribute", "api", "edge")


def _dockerfile_stages() -> list[list[str]]:
    lines = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ").splitlines()
    stages: list[list[str]] = []
    for line in lines:
        if line.startswith("FROM "):
            stages.append([])
        if stages and line.strip() and not line.startswith("#"):
            stages[-1].append(line)
    return stages


def test_the_dockerfile_passes_hadolint() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    result = subprocess.run(
        [str(hadolint), "--no-color", str(DEPLOY / "Dockerfile")], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def test_the_image_installs_the_wheel_with_runtime_dependencies_only() -> None:
    build, runtime = _dockerfile_stages()
    assert any("pip wheel" in line and "--no-deps" in line for line in build)
    text = "\n".join(runtime)
    assert "requirements-runtime.lock" in text and "requirements.lock" not in text.replace("-runtime.lock", "")
    assert re.search(r"pip install .*--no-deps .*\.whl", text)
    assert "COPY --from=build" in text and "COPY sync_gateway" not in text  # no source tree in the image
    assert re.search(r"^USER 10001", text, re.M) and 'VOLUME ["/data"]' in text
    assert 'CMD ["sync-gateway", "health"]' in text and ":8000/health" not in text
    runtime_lock = (ROOT / "requirements-runtime.lock").read_text().lower()
    for dev_only in ("pytest", "mypy", "playwright", "trytond", "ruff", "hypothesis", "hadolint"):
        assert dev_only not in runtime_lock


def _render(overlay: str) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl (with its built-in kustomize) is needed to render the overlays"
    result = subprocess.run(
        [kubectl, "kustomize", str(DEPLOY / "k8s" / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_kustomize_overlays_render_and_validate_against_the_kubernetes_schemas(overlay: str) -> None:
    docs = _render(overlay)
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert ("StatefulSet", "couchdb") in kinds and ("Job", "couchdb-cluster-setup") in kinds
    assert ("NetworkPolicy", "default-deny") in kinds

    deployments = [d for d in docs if d["kind"] == "Deployment"]
    assert {d["metadata"]["name"] for d in deployments} >= {"sync-ingest", "sync-project", "sync-api", "sync-edge"}
    for deployment in deployments:
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        (container,) = pod["containers"]
        assert container["livenessProbe"]["httpGet"]["path"] == "/health"
        assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
        assert {"cpu", "memory"} <= set(container["resources"]["requests"]) <= set(container["resources"]["limits"])
        env = {e["name"]: e for e in container["env"]}
        edge = deployment["metadata"]["name"] == "sync-edge"  # signs device tokens, needs no admin token
        for secret in ("SYNC_COUCH_PASSWORD", "SYNC_EDGE_TOKEN_SECRET" if edge else "SYNC_ADMIN_TOKEN"):
            assert "value" not in env[secret] and env[secret]["valueFrom"]["secretKeyRef"]["name"].startswith(
                "sync-secrets"
            )
        assert "sync-gateway" in container["image"]


def test_devices_reach_only_the_edge_and_people_only_the_api() -> None:
    docs = _render("prod")
    policies = {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "NetworkPolicy"}
    assert policies["default-deny"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    from_ingress = [
        (name, rule)
        for name, spec in policies.items()
        for rule in spec.get("ingress", [])
        if any(
            peer.get("namespaceSelector", {}).get("matchLabels", {}).get("kubernetes.io/metadata.name")
            == "ingress-nginx"
            for peer in rule.get("from", [])
        )
    ]
    reachable = {
        policies[name]["podSelector"]["matchLabels"]["app.kubernetes.io/component"]: rule["ports"]
        for name, rule in from_ingress
    }
    assert reachable == {"api": [{"protocol": "TCP", "port": 8000}], "edge": [{"protocol": "TCP", "port": 8100}]}
    ingress = next(d for d in docs if d["kind"] == "Ingress")
    backends = {
        p["path"]: p["backend"]["service"]["name"] for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]
    }
    # not /metrics, /health or /docs; device replication goes to the edge, people's pages to the api
    assert backends == {"/sync": "sync-edge", "/api": "sync-api", "/review": "sync-api"}
    couch_ingress = policies["couchdb"]["ingress"]
    assert all("namespaceSelector" not in peer for rule in couch_ingress for peer in rule["from"])


def test_the_validator_refuses_a_broken_manifest() -> None:
    """Negative control: the schema check above can fail."""
    deployment = next(d for d in _render("dev") if d["kind"] == "Deployment")
    broken = copy.deepcopy(deployment)
    broken["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)
    unknown = copy.deepcopy(deployment)
    unknown["spec"]["template"]["spec"]["containers"][0]["livenessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(unknown, KUBERNETES_VERSION, strict=True)


def test_compose_runs_a_couchdb_cluster_and_one_container_per_role() -> None:
    text = (DEPLOY / "compose.yaml").read_text()
    compose = yaml.safe_load(text)
    services = compose["services"]
    nodes = [name for name in services if name.startswith("couchdb-") and name != "couchdb-setup"]
    assert len(nodes) == 3
    assert {services[n]["environment"]["NODENAME"] for n in nodes} == {f"couchdb-{i}.couchdb" for i in range(3)}
    assert all(services[n]["healthcheck"]["test"] for n in nodes)

    setup = services["couchdb-setup"]
    assert setup["restart"] == "no"
    assert {services["couchdb-setup"]["depends_on"][n]["condition"] for n in nodes} == {"service_healthy"}
    assert setup["environment"]["COUCHDB_NODES"].split() == ["couchdb-1.couchdb", "couchdb-2.couchdb"]
    script = (DEPLOY / "couchdb" / "cluster-setup.sh").read_text()
    for action in ("enable_cluster", "add_node", "finish_cluster"):
        assert f'"action\\":\\"{action}' in script or f'"action":"{action}' in script
    assert "/_cluster_setup" in script
    subprocess.run(["sh", "-n", str(DEPLOY / "couchdb" / "cluster-setup.sh")], check=True)

    for role in ROLES:
        service = services[role]
        assert service["environment"]["SYNC_ROLES"] == role
        assert service["healthcheck"]["test"] == ["CMD", "sync-gateway", "health", "--role", role]
        assert service["depends_on"]["couchdb-setup"]["condition"] == "service_completed_successfully"
        assert service["build"]["dockerfile"] == "deploy/Dockerfile"
    for service in services.values():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:")


def test_compose_takes_every_secret_from_the_environment() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    secret_names = re.compile(r"PASSWORD|SECRET|COOKIE|TOKEN|UUID")
    for name, service in compose["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if secret_names.search(key):
                assert re.fullmatch(r"\$\{[A-Z_]+:\?[^}]+\}", str(value)), f"{name}.{key} is not from the environment"
    used = set(re.findall(r"\$\{([A-Z_]+):\?", (DEPLOY / "compose.yaml").read_text()))
    example = (DEPLOY / ".env.example").read_text().splitlines()
    documented = {line.split("=", 1)[0] for line in example if "=" in line and not line.startswith("#")}
    assert used == documented
    assert "deploy/.env" in (ROOT / ".gitignore").read_text().split()
