"""hardware/deploy: the Kubernetes manifests pass schema validation and agree with the service and the Containerfile.

Schema validation uses kubernetes-validate (the Kubernetes OpenAPI schemas bundled in
the package, strict mode: an unknown or misspelt field fails), offline. On top of the
schemas, the intent is checked: native gRPC probes on the health-only port the
settings open, a read-only root file system, a non-root user, requests equal to limits
(Guaranteed QoS: never swapped), only the gRPC port open, no egress, mTLS material from
Secrets at the paths the settings name. The image itself cannot be built here (no
container engine); its Containerfile is checked against the manifests.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from kiosk.server.app import _check_service_settings
from kiosk.settings import Settings, from_mapping

DEPLOY = Path(__file__).resolve().parents[2] / "hardware" / "deploy"
# The oldest Kubernetes release the manifests target (gRPC probes are GA since 1.27),
# and the newest the installed kubernetes-validate knows.
K8S_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())


def _documents() -> list[dict]:
    docs = []
    for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return docs


@pytest.fixture(scope="module")
def resources() -> dict[str, dict]:
    docs = _documents()
    by_kind = {d["kind"]: d for d in docs}
    assert len(by_kind) == len(docs), "one resource of each kind"
    return by_kind


def _validate(resource: dict, version: str) -> None:
    kubernetes_validate.validate(resource, version, strict=True)


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_manifest_passes_strict_schema_validation(resources, version):
    assert set(resources) == {
        "ConfigMap", "Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy"
    }  # fmt: skip
    for resource in resources.values():
        _validate(resource, version)


@pytest.mark.parametrize(
    "edit",
    [
        lambda d: d["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["grpc"].update(prot=8081),
        lambda d: d["spec"]["template"]["spec"]["containers"][0]["securityContext"].update(readOnlyRootFS=True),
        lambda d: d["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["grpc"].update(port="health"),
        lambda d: d["spec"].update(replicas="two"),
    ],
    ids=["misspelt-probe-field", "misspelt-security-field", "named-grpc-probe-port", "wrong-type"],
)
def test_schema_validation_has_teeth(resources, edit):
    broken = copy.deepcopy(resources["Deployment"])
    edit(broken)
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate(broken, K8S_VERSIONS[-1])


def _settings(resources) -> Settings:
    import tomllib

    return from_mapping(Settings, tomllib.loads(resources["ConfigMap"]["data"]["kiosk.toml"]))


def _port(container: dict, name: str) -> int:
    return next(p["containerPort"] for p in container["ports"] if p["name"] == name)


def test_deployment_agrees_with_its_settings(resources):
    settings = _settings(resources)
    # The service itself accepts them: a network listener with mutual TLS.
    [listener] = _check_service_settings(settings)
    pod = resources["Deployment"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert listener.port == _port(container, "grpc")
    health_port = int(settings.service.health_listen.rpartition(":")[2])
    assert health_port == _port(container, "health") != listener.port
    # Native gRPC probes on the health-only port; readiness waits for the kiosk service.
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == health_port, probe
    assert container["readinessProbe"]["grpc"]["service"] == "kiosk.v1.Kiosk"
    assert container["startupProbe"]["grpc"]["service"] == "kiosk.v1.Kiosk"
    # Calls in flight finish before the kubelet kills the pod.
    assert pod["terminationGracePeriodSeconds"] > settings.service.grace_period_s

    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    tls_dir = Path(mounts["tls"]["mountPath"])
    assert "secret" in volumes["tls"]
    for path in (settings.service.tls.server_cert, settings.service.tls.server_key, settings.service.tls.client_ca):
        assert Path(path).parent == tls_dir
    # The keys reach the service 0600 through a memory-backed volume filled by the init container.
    keys_dir = Path(mounts["keys"]["mountPath"])
    assert Path(settings.audit.key_file).parent == keys_dir == Path(settings.receipts.key_file).parent
    assert volumes["keys"]["emptyDir"]["medium"] == "Memory"
    [init] = pod["initContainers"]
    assert "install -m 0600" in " ".join(init["command"])
    assert Path(settings.audit.path).parent == Path(mounts["audit"]["mountPath"])
    config_mount = mounts["config"]
    assert volumes["config"]["configMap"]["name"] == resources["ConfigMap"]["metadata"]["name"]
    assert config_mount["subPath"] == "kiosk.toml"


def test_pods_are_locked_down(resources):
    pod = resources["Deployment"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert pod["automountServiceAccountToken"] is False
    for container in pod["containers"] + pod["initContainers"]:
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"]["drop"] == ["ALL"]
        # Guaranteed QoS (requests == limits for CPU and memory in every container):
        # Kubernetes never swaps such a pod's memory.
        resources_ = container["resources"]
        for name in ("cpu", "memory"):
            assert resources_["requests"][name] == resources_["limits"][name], (container["name"], name)


def test_scaling_disruption_and_network_policies_select_the_deployment(resources):
    deployment = resources["Deployment"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    hpa = resources["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment["metadata"]["name"]}
    assert 1 <= hpa["minReplicas"] < hpa["maxReplicas"]
    pdb = resources["PodDisruptionBudget"]["spec"]
    assert pdb["selector"]["matchLabels"].items() <= labels.items() and pdb["minAvailable"] < hpa["minReplicas"]
    service = resources["Service"]["spec"]
    # Headless: clients resolve every replica and balance per call (kiosk.channel).
    assert service["clusterIP"] == "None" and service["selector"].items() <= labels.items()
    grpc_port = _port(deployment["spec"]["template"]["spec"]["containers"][0], "grpc")
    assert [p["port"] for p in service["ports"]] == [grpc_port]
    policy = resources["NetworkPolicy"]["spec"]
    assert policy["podSelector"]["matchLabels"].items() <= labels.items()
    assert sorted(policy["policyTypes"]) == ["Egress", "Ingress"]
    # Only the gRPC port in; nothing out.
    assert [p["port"] for rule in policy["ingress"] for p in rule["ports"]] == [grpc_port]
    assert policy["egress"] == []


def _containerfile() -> list[tuple[str, str]]:
    text = (DEPLOY / "Containerfile").read_text().replace("\\\n", " ")
    lines = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            instruction, _, rest = line.partition(" ")
            lines.append((instruction.upper(), rest.strip()))
    return lines


def test_containerfile_matches_the_manifests(resources):
    lines = _containerfile()
    args = [rest for ins, rest in lines if ins == "ARG"]
    # A configurable Debian/Python base, used by both stages.
    assert any(a.startswith("BASE_IMAGE=") and "python" in a and "bookworm" in a for a in args)
    assert [rest.split()[0] for ins, rest in lines if ins == "FROM"] == ["${BASE_IMAGE}", "${BASE_IMAGE}"]
    # The wheel is built and installed; nothing else from the source tree is.
    runs = " ".join(rest for ins, rest in lines if ins == "RUN")
    assert "pip wheel" in runs and "pip install --no-cache-dir /tmp/wheels/kiosk-*.whl" in runs
    # Non-root, numeric, and the same user the pods run as.
    uid = next(a.split("=")[1] for a in args if a.startswith("KIOSK_UID="))
    [user] = [rest for ins, rest in lines if ins == "USER"]
    assert user == "${KIOSK_UID}:${KIOSK_UID}" and uid != "0"
    pod = resources["Deployment"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == int(uid)
    [container] = pod["containers"]
    [expose] = [rest for ins, rest in lines if ins == "EXPOSE"]
    assert sorted(map(int, expose.split())) == sorted(p["containerPort"] for p in container["ports"])
    [entrypoint] = [rest for ins, rest in lines if ins == "ENTRYPOINT"]
    config_path = next(m["mountPath"] for m in container["volumeMounts"] if m["name"] == "config")
    assert entrypoint == f'["/opt/kiosk/bin/kiosk", "--config", "{config_path}", "serve"]'
    [volume] = [rest for ins, rest in lines if ins == "VOLUME"]
    assert volume == '["' + _settings(resources).audit.path.rsplit("/", 1)[0] + '"]'
    assert re.search(r"HEALTHCHECK .*kiosk\", \"health\"", " ".join(f"{i} {r}" for i, r in lines))
