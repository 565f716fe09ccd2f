"""deploy/kuberay: the RayCluster manifest parses, has a head and a GPU worker group, runs the
image built from the project with the ray extra, and takes the tracking URI and credentials
from a Kubernetes Secret (never a literal value)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "kuberay"
SECRET_NAMES = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY|TRACKING_URI|_PWD", re.I)


def _containers(manifest: dict) -> list[dict]:
    spec = manifest["spec"]
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    return [c for g in groups for c in g["template"]["spec"]["containers"]]


def test_raycluster_manifest_has_a_head_and_a_gpu_worker_group():
    manifest = yaml.safe_load((DEPLOY / "raycluster.yaml").read_text())
    assert manifest["apiVersion"].startswith("ray.io/") and manifest["kind"] == "RayCluster"
    spec = manifest["spec"]
    assert spec["headGroupSpec"]["template"]["spec"]["containers"]
    (gpu,) = [g for g in spec["workerGroupSpecs"]
              if any("nvidia.com/gpu" in c.get("resources", {}).get("limits", {})
                     for c in g["template"]["spec"]["containers"])]
    assert gpu["replicas"] >= 1 and gpu["maxReplicas"] >= gpu["replicas"]
    (worker,) = gpu["template"]["spec"]["containers"]
    assert int(worker["resources"]["limits"]["nvidia.com/gpu"]) >= 1
    assert gpu["rayStartParams"]["num-gpus"] == worker["resources"]["limits"]["nvidia.com/gpu"]
    images = {c["image"] for c in _containers(manifest)}
    assert len(images) == 1, "head and workers must run the same image"


def test_tracking_uri_and_credentials_come_from_a_secret_only():
    manifest = yaml.safe_load((DEPLOY / "raycluster.yaml").read_text())
    for c in _containers(manifest):
        refs = [e["secretRef"]["name"] for e in c.get("envFrom", []) if "secretRef" in e]
        assert refs == ["fsd-tracking"], c["name"]
        for var in c.get("env", []):
            if SECRET_NAMES.search(var["name"]):
                # a credential or the tracking URI set here must point at the Secret
                assert "value" not in var and "secretKeyRef" in var.get("valueFrom", {}), var
    text = (DEPLOY / "raycluster.yaml").read_text()
    assert not re.search(r"(?m)^\s*[^#\n]*(password|secret_access_key)\s*:", text, re.I)


def test_the_image_is_the_project_with_the_ray_extra():
    docker = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"pip install .*'\.\[[^\]]*\bray\b[^\]]*\]'", docker), docker
    assert "-c constraints.txt" in docker  # the tested pins, Ray's included
    manifest = yaml.safe_load((DEPLOY / "raycluster.yaml").read_text())
    base = re.search(r"^FROM rayproject/ray:([0-9.]+)", docker, re.M).group(1)
    assert manifest["spec"]["rayVersion"] == base
