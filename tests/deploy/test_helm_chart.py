"""The Helm chart, rendered offline by Helm's own engine (helm-python-sdk) and every
object validated against the Kubernetes API schemas (kubernetes-validate, strict: an
unknown or misspelt field is an error)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from serving.issuers import load_allowed_issuers

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "tonle"
EXAMPLES = ROOT / "deploy" / "helm" / "examples"
# The oldest Kubernetes the chart supports (preStop `sleep`) and the newest schemas shipped.
KUBERNETES = ["1.30.0", kubernetes_validate.latest_version()]
REQUIRED = {
    "secrets": {"databaseUrl": "postgresql+psycopg://tonle:pw@db:5432/tonle", "linkKey": "k" * 40}
}
CASES = {
    "defaults": REQUIRED,
    "cloudnativepg": {
        **yaml.safe_load((EXAMPLES / "values-cloudnativepg.yaml").read_text()),
        "secrets": {"linkKey": "k" * 40},
    },
    "orthanc, fixed replicas, existing secret": {
        "secrets": {"create": False, "existingSecret": "tonle-managed"},
        "orthanc": {"enabled": True},
        "autoscaling": {"enabled": False},
    },
}


def render(values: dict[str, Any]) -> list[dict[str, Any]]:
    """Every object the chart renders with ``values`` (hooks included)."""
    with helm.Chart.load(str(CHART)) as chart:
        manifests = chart.render(values, name="tonle", namespace="clinical", is_install=True)
    return [doc for text in manifests.values() for doc in yaml.safe_load_all(text) if doc]


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("version", KUBERNETES)
def test_every_object_validates_against_the_kubernetes_schemas(case: str, version: str) -> None:
    objects = render(CASES[case])

    for obj in objects:
        kubernetes_validate.validate(obj, version, strict=True)
    kinds = {o["kind"] for o in objects}
    assert {"Deployment", "Service", "PodDisruptionBudget", "NetworkPolicy", "Job"} <= kinds


def test_a_misspelt_field_is_refused_by_the_validator() -> None:
    """The validation above can fail: one wrong key in a rendered Deployment."""
    deployment = by_kind(render(REQUIRED), "Deployment")[0]
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}

    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES[0], strict=True)


def test_helm_lint_finds_nothing() -> None:
    report = helm.lint(str(CHART), REQUIRED, strict=True, namespace="clinical")

    # Helm's severities: 1 info (e.g. "icon is recommended"), 2 warning, 4 error.
    assert not report["errors"], report
    assert not [m for m in report["messages"] if m["severity"] > 1], report


def test_probes_drain_and_grace_period_agree() -> None:
    values = {**REQUIRED, "env": {"TONLE_SHUTDOWN_DRAIN_S": "12"}, "preStopSleepSeconds": 7}

    pod = by_kind(render(values), "Deployment")[0]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}

    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert container["lifecycle"]["preStop"]["sleep"]["seconds"] == 7
    assert env["TONLE_SHUTDOWN_DRAIN_S"] == "12"
    # preStop sleep + drain + the 30 s request timeout + 5 s margin
    assert pod["terminationGracePeriodSeconds"] == 7 + 12 + 30 + 5


def test_pods_run_non_root_read_only_without_capabilities() -> None:
    objects = render({**REQUIRED, "orthanc": {"enabled": True}})
    pods = [o["spec"]["template"]["spec"] for o in objects if o["kind"] in {"Deployment", "Job"}]

    for pod in pods:
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["automountServiceAccountToken"] is False
        for container in pod["containers"]:
            assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
    tonle = [p for p in pods if p["containers"][0]["name"] in {"tonle", "migrate"}]
    for pod in tonle:
        assert pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
        mounts = {m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
        assert {"/tmp", "/home/bentoml/prometheus_multiproc_dir"} <= mounts


def test_tonle_pods_share_no_volume_so_replicas_share_only_postgresql() -> None:
    for case in CASES.values():
        deployment = next(
            o for o in by_kind(render(case), "Deployment") if o["metadata"]["name"] == "tonle"
        )
        volumes = deployment["spec"]["template"]["spec"]["volumes"]
        assert {v["name"] for v in volumes} == {"tmp", "prometheus", "issuers"}
        assert all("emptyDir" in v or "configMap" in v for v in volumes)


def test_migration_job_runs_before_the_rollout_with_its_secret_first() -> None:
    objects = render(REQUIRED)
    job = by_kind(objects, "Job")[0]
    secret = by_kind(objects, "Secret")[0]
    hook = job["metadata"]["annotations"]

    assert job["spec"]["template"]["spec"]["containers"][0]["command"] == ["tonle", "db", "upgrade"]
    assert hook["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert secret["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert int(secret["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(
        hook["helm.sh/hook-weight"]
    )
    # The Service and the PDB select serving pods only, never the migration pod.
    job_labels = job["spec"]["template"]["metadata"]["labels"]
    for obj in [*by_kind(objects, "Service"), *by_kind(objects, "PodDisruptionBudget")]:
        selector = obj["spec"]["selector"]
        selector = selector.get("matchLabels", selector)
        assert not selector.items() <= job_labels.items()


def test_secrets_are_required_unless_managed_elsewhere() -> None:
    with pytest.raises(helm.HelmError, match=r"secrets\.linkKey is required"):
        render({"secrets": {"databaseUrl": "postgresql+psycopg://db/tonle"}})
    with pytest.raises(helm.HelmError, match=r"secrets\.databaseUrl"):
        render({"secrets": {"linkKey": "k" * 40}})


def test_cloudnativepg_values_build_the_url_from_the_operator_secret() -> None:
    objects = render(CASES["cloudnativepg"])
    env = by_kind(objects, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["env"]
    named = {e["name"]: e for e in env}

    assert named["PGPASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "tonle-db-app",
        "key": "password",
    }
    url = named["TONLE_DATABASE_URL"]["value"]
    assert url.startswith("postgresql+psycopg://$(PGUSER):$(PGPASSWORD)@$(PGHOST)")
    # Kubernetes expands $(VAR) only for variables defined earlier in the list.
    names = [e["name"] for e in env]
    assert names.index("TONLE_DATABASE_URL") > max(names.index(v) for v in ("PGUSER", "PGHOST"))


def test_egress_is_dns_and_the_configured_services_only() -> None:
    objects = render(CASES["cloudnativepg"])
    policy = by_kind(objects, "NetworkPolicy")[0]["spec"]
    ports = [[p["port"] for p in rule["ports"]] for rule in policy["egress"]]

    assert policy["policyTypes"] == ["Ingress", "Egress"]
    assert ports == [[53, 53], [5432], [8042], [443]]
    assert policy["egress"][1]["to"] == [
        {"podSelector": {"matchLabels": {"cnpg.io/cluster": "tonle-db"}}}
    ]
    # With nothing configured, DNS is the only way out.
    default = by_kind(render(REQUIRED), "NetworkPolicy")[0]["spec"]["egress"]
    assert len(default) == 1


@pytest.mark.parametrize("values", [REQUIRED, CASES["cloudnativepg"]])
def test_the_issuers_file_the_chart_mounts_is_one_the_service_loads(
    values: dict[str, Any], tmp_path: Path
) -> None:
    config_map = by_kind(render(values), "ConfigMap")[0]
    path = tmp_path / "allowed-issuers.yaml"
    path.write_text(config_map["data"]["allowed-issuers.yaml"])

    allowed, _ = load_allowed_issuers(path)

    assert allowed is not None
