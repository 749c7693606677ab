"""The cluster files are valid for the tools that read them, and launch commands raydet accepts."""
from __future__ import annotations

import re
import shlex

import pytest
import yaml
from helpers import REPO
from packaging.requirements import Requirement

from raydet.builder import check_config
from raydet.config import load_config
from raydet.train import build_parser


def project_requirements() -> dict[str, str]:
    """``{name: requirement as written}`` of raydet's runtime dependencies in pyproject.toml."""
    block = re.search(r"^dependencies = \[(.*?)^\]", (REPO / "pyproject.toml").read_text(), re.S | re.M)[1]
    return {Requirement(text).name: text for text in re.findall(r'"([^"]+)"', block)}


@pytest.mark.parametrize("name", ["aws.yaml", "gcp.yaml"])
def test_cluster_launcher_files_pass_rays_own_validation(name):
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((REPO / "cluster" / name).read_text())
    validate_config(prepare_config(config))  # raises jsonschema.ValidationError on a bad file
    # the nodes run the Ray image pyproject.toml allows, and install the rest of raydet's dependencies as pinned there
    requirements = project_requirements()
    image_version = re.fullmatch(r"rayproject/ray:([\d.]+)-py\d+-gpu", config["docker"]["image"])[1]
    assert Requirement(requirements.pop("ray")).specifier.contains(image_version)
    requirements.pop("numpy")  # in the Ray image
    installed = " ".join(config["setup_commands"])
    assert [name for name, text in requirements.items() if f'"{text}"' not in installed] == []


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
