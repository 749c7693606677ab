"""The model configs build (as ``python -m raydet.config CFG --check`` builds them); the neck can be
switched; typos are caught with the file, the key path and the nearest name."""
from __future__ import annotations

import pytest

from helpers import REPO, run_cli
from raydet.builder import build_model, check_config
from raydet.config import ConfigError, load_config
from raydet.models.necks import PAFPN

MODEL_BASES = ["faster_rcnn_r50_fpn", "retinanet_r50_fpn", "fcos_r50_fpn"]
TINY = ["faster_rcnn_tiny", "retinanet_tiny", "fcos_tiny"]
FULL_CONFIGS = ["faster_rcnn/faster_rcnn_r50_fpn_1x_coco.yaml", "retinanet/retinanet_r50_fpn_1x_coco.yaml",
                "fcos/fcos_r50_fpn_1x_coco.yaml"]


@pytest.mark.timeout(120)
def test_config_cli_checks_a_model_and_reports_a_typo():
    path = "configs/_base_/models/faster_rcnn_r50_fpn.yaml"
    checked = run_cli("raydet.config", path, "--set", "model.neck.type=PAFPN", "--check")
    assert checked.returncode == 0, checked.stderr
    assert "model: FasterRCNN built (" in checked.stdout and "config OK" in checked.stdout
    typo = run_cli("raydet.config", path, "--set", "model.neck.type=PAFNP", "--check")
    assert typo.returncode == 2
    assert "model.neck.type: unknown MODELS type 'PAFNP' (did you mean 'PAFPN'?)" in typo.stderr
    assert "Traceback" not in typo.stderr


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", MODEL_BASES)
@pytest.mark.parametrize("neck", ["FPN", "PAFPN"])
def test_r50_model_configs_check_with_either_neck(name, neck):
    config = load_config(REPO / f"configs/_base_/models/{name}.yaml", [f"model.neck.type={neck}"])
    [line] = check_config(config)
    assert line.startswith(f"model: {config['model']['type']} built (")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", MODEL_BASES)
def test_neck_typo_is_reported_with_the_nearest_name(name):
    config = load_config(REPO / f"configs/_base_/models/{name}.yaml", ["model.neck.type=PAFNP"])
    with pytest.raises(ConfigError, match=r"--set model.neck.type=PAFNP: model.neck.type: unknown MODELS type "
                                          r"'PAFNP' \(did you mean 'PAFPN'\?\)"):
        check_config(config)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", TINY)
@pytest.mark.parametrize("neck", ["FPN", "PAFPN"])
def test_tiny_configs_build_with_either_neck_and_stay_small(name, neck):
    model = build_model(load_config(REPO / f"configs/_base_/models/{name}.yaml", [f"model.neck.type={neck}"]))
    assert isinstance(model.neck, PAFPN) == (neck == "PAFPN")
    assert sum(p.numel() for p in model.parameters()) < 2_000_000
    assert type(model.backbone).__name__ == "TinyConvNet"


@pytest.mark.timeout(60)
def test_misspelled_argument_names_the_file_and_key():
    config = load_config(REPO / "configs/_base_/models/retinanet_tiny.yaml", ["+model.bbox_head.score_thres=0.1"])
    with pytest.raises(ConfigError, match=r"model.bbox_head.score_thres: RetinaHead has no argument 'score_thres' "
                                          r"\(did you mean 'score_thr'\?\)"):
        check_config(config)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("config", FULL_CONFIGS)
def test_full_coco_configs_check(config):
    checked = run_cli("raydet.config", f"configs/{config}", "--check")
    assert checked.returncode == 0, checked.stderr
    assert "config OK" in checked.stdout
