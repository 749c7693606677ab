"""The cluster files are valid for the tools that read them, and launch commands raydet accepts."""
from __future__ import annotations

import shlex

import pytest
import yaml

from helpers import REPO
from raydet.builder import check_config
from raydet.config import load_config
from raydet.train import build_parser


@pytest.mark.parametrize("name", ["aws.yaml", "gcp.yaml"])
def test_cluster_launcher_files_pass_rays_own_validation(name):
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((REPO / "cluster" / name).read_text())
    validate_config(prepare_config(config))  # raises jsonschema.ValidationError on a bad file
    assert any("raydet" in c or "pycocotools" in c for c in config["setup_commands"])


def test_kuberay_job_runs_a_raydet_command_that_checks():
    manifest = yaml.safe_load((REPO / "cluster" / "kuberay-rayjob.yaml").read_text())
    assert manifest["apiVersion"] == "ray.io/v1" and manifest["kind"] == "RayJob"
    workers = manifest["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
    gpus = int(workers["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"])
    argv = shlex.split(manifest["spec"]["entrypoint"])
    assert argv[:3] == ["python", "-m", "raydet.train"]
    args = build_parser().parse_args(argv[3:])
    assert args.num_workers == workers["replicas"] * gpus and args.use_gpu
    lines = check_config(load_config(REPO / args.config, args.overrides))
    assert any(line.startswith("model: RetinaNet built") for line in lines)
