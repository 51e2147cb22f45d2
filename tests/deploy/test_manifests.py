"""k8s/: kustomize renders; core kinds pass strict Kubernetes validation; KubeRay kinds pass the schema of
the fields used; every embedded pod template is a valid core PodTemplate; the Ray pod conventions hold."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import jsonschema
import kubernetes_validate

from pipeline.cluster.schedule import render

REPO = Path(__file__).resolve().parents[2]
K8S_VERSION = "1.32.0"  # the kubectl/kustomize of the project's machines
SCHEMA = json.loads((Path(__file__).parent / "schemas" / "kuberay.schema.json").read_text())
CORE_KINDS = {"Namespace", "ServiceAccount", "Role", "RoleBinding", "ConfigMap", "Secret", "CronJob"}


def _ray_pin() -> str:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    return next(d.split("==")[1] for d in deps if d.startswith("ray["))


def _production_rayjob(rendered: list[dict]) -> dict:
    cm = next(
        d
        for d in rendered
        if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "difffusr-production-template"
    )
    import datetime as dt

    return render(cm["data"]["rayjob-production.yaml"], dt.date(2024, 6, 1), dt.date(2024, 6, 30))


def _cluster_specs(doc: dict) -> list[dict]:
    if doc["kind"] == "RayCluster":
        return [doc["spec"]]
    return [doc["spec"]["rayClusterSpec"]] if "rayClusterSpec" in doc["spec"] else []


def _pod_templates(doc: dict) -> list[tuple[str, dict]]:
    """(where, template) of every pod template inside a KubeRay object."""
    out = []
    for spec in _cluster_specs(doc):
        out.append(("head", spec["headGroupSpec"]["template"]))
        out += [(g["groupName"], g["template"]) for g in spec.get("workerGroupSpecs", [])]
    if doc["kind"] == "RayJob" and "submitterPodTemplate" in doc["spec"]:
        out.append(("submitter", doc["spec"]["submitterPodTemplate"]))
    return out


def test_kustomize_renders_every_kind(rendered):
    kinds = sorted(d["kind"] for d in rendered)
    assert kinds.count("RayJob") == 2 and kinds.count("RayCluster") == 1 and "CronJob" in kinds
    assert {"ConfigMap", "Secret", "ServiceAccount", "Namespace", "Role", "RoleBinding"} <= set(kinds)
    assert all(d["metadata"].get("namespace") == "difffusr" for d in rendered if d["kind"] != "Namespace")


def test_core_kinds_pass_strict_kubernetes_validation(rendered):
    core = [d for d in rendered if d["kind"] in CORE_KINDS]
    assert {d["kind"] for d in core} == CORE_KINDS
    for doc in core:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_kuberay_kinds_match_the_schema_and_pod_templates_are_core_pod_templates(rendered):
    ray_docs = [d for d in rendered if d["kind"] in ("RayCluster", "RayJob")] + [_production_rayjob(rendered)]
    validator = jsonschema.Draft202012Validator(SCHEMA)
    n_templates = 0
    for doc in ray_docs:
        errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]
        assert errors == [], (doc["metadata"]["name"], errors)
        for where, template in _pod_templates(doc):
            pod_template = {
                "apiVersion": "v1",
                "kind": "PodTemplate",
                "metadata": {"name": where},
                "template": template,
            }
            kubernetes_validate.validate(pod_template, K8S_VERSION, strict=True)
            n_templates += 1
    assert (
        n_templates == 7
    )  # cluster: head+ingest+gpu; mosaic: submitter; train: head+gpu+submitter; prod: none


def test_schema_rejects_a_misspelt_field(rendered):
    cluster = next(d for d in rendered if d["kind"] == "RayCluster")
    bad = json.loads(json.dumps(cluster))
    bad["spec"]["workerGroupSpecs"][0]["maxReplica"] = 3
    assert not jsonschema.Draft202012Validator(SCHEMA).is_valid(bad)


def test_ray_pods_follow_the_cluster_conventions(rendered):
    for doc in [d for d in rendered if d["kind"] in ("RayCluster", "RayJob")]:
        for spec in _cluster_specs(doc):
            assert spec["rayVersion"] == _ray_pin()  # the image's Ray, from pyproject
            groups = [("head", spec["headGroupSpec"])] + [
                (g["groupName"], g) for g in spec.get("workerGroupSpecs", [])
            ]
            for name, group in groups:
                pod = group["template"]["spec"]
                ray = pod["containers"][0]
                assert ray["resources"]["requests"] == ray["resources"]["limits"], name
                assert ray["lifecycle"]["preStop"]["exec"]["command"][-1] == "ray stop", name
                shm = next(m["name"] for m in ray["volumeMounts"] if m["mountPath"] == "/dev/shm")
                assert next(v for v in pod["volumes"] if v["name"] == shm)["emptyDir"]["medium"] == "Memory"
                assert pod["securityContext"]["runAsNonRoot"] is True
                gpus = ray["resources"]["limits"].get("nvidia.com/gpu")
                if gpus:
                    assert ray["image"].endswith("-cuda") and group["rayStartParams"]["num-gpus"] == gpus
                    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
                        "tolerations"
                    ]
                else:
                    assert ray["image"].endswith("-cpu")
    cluster = next(d for d in rendered if d["kind"] == "RayCluster")
    gpu = next(g for g in cluster["spec"]["workerGroupSpecs"] if g["groupName"] == "gpu-inference")
    assert cluster["spec"]["enableInTreeAutoscaling"] and gpu["minReplicas"] == 0 < gpu["maxReplicas"]


def test_secret_holds_placeholders_only_and_reaches_every_ray_pod(rendered):
    secret = next(d for d in rendered if d["kind"] == "Secret")
    assert set(secret["stringData"].values()) == {"REPLACE_ME"}
    for doc in [d for d in rendered if d["kind"] in ("RayCluster", "RayJob")]:
        for spec in _cluster_specs(doc):
            for tpl in [spec["headGroupSpec"]["template"]] + [
                g["template"] for g in spec.get("workerGroupSpecs", [])
            ]:
                refs = [e.get("secretRef", {}).get("name") for e in tpl["spec"]["containers"][0]["envFrom"]]
                assert "difffusr-s3" in refs


def test_cronjob_creates_the_rayjob_of_the_previous_month(rendered, tmp_path):
    cron = next(d for d in rendered if d["kind"] == "CronJob")
    command = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[:2] == ["difffusr", "schedule"]
    template = tmp_path / "rayjob.yaml"
    cm = next(d for d in rendered if d["metadata"]["name"] == "difffusr-production-template")
    template.write_text(cm["data"]["rayjob-production.yaml"])
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline.cli",
            command[1],  # the CronJob's own subcommand, through the CLI's entry point
            "--template",
            str(template),
            "--window",
            "month",
            "--today",
            "2024-07-03",
            "--dry-run",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=REPO,
    )
    assert out.returncode == 0, out.stderr
    job = json.loads(out.stdout)
    assert job["metadata"]["name"] == "difffusr-prod-20240601-20240630"
    assert "--datetime 2024-06-01/2024-06-30" in job["spec"]["entrypoint"]
    assert job["spec"]["clusterSelector"] == {"ray.io/cluster": "difffusr"}


def test_yamllint_passes_on_k8s_manifests():
    files = sorted(str(p) for p in (REPO / "k8s").rglob("*.yaml"))
    rules = "line-length: {max: 130}, document-start: disable, truthy: {check-keys: false}"
    config = "{extends: default, rules: {" + rules + "}}"
    out = subprocess.run(
        [sys.executable, "-m", "yamllint", "-d", config, *files], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_config_variable_the_manifests_use_is_defined(rendered):
    from pipeline.cluster.plan import read_aoi

    config = next(d for d in rendered if d["metadata"]["name"] == "difffusr-config")["data"]
    assert read_aoi(REPO / "k8s" / "config" / "aoi.geojson").area > 0 and "aoi.geojson" in config
    text = json.dumps(rendered) + json.dumps(_production_rayjob(rendered))
    used = set(re.findall(r"\$\(?(DIFFFUSR_[A-Z_]+)", text))
    assert used and used <= set(config), used - set(config)
