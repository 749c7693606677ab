"""The model configs build (as ``python -m raydet.check CFG`` builds them); the neck can be
switched; typos are caught with the file, the key path and the nearest name; a head of the wrong kind
is caught with the key path and the contract it breaks."""
from __future__ import annotations

import pytest

from raydet.builder import build_model, check_config
from raydet.config import ConfigError, load_config
from raydet.models.necks import PAFPN
from tests.helpers import REPO, run_cli

MODEL_BASES = ["faster_rcnn_r50_fpn", "retinanet_r50_fpn", "fcos_r50_fpn"]
TINY = ["faster_rcnn_tiny", "retinanet_tiny", "fcos_tiny"]
FULL_CONFIGS = ["faster_rcnn/faster_rcnn_r50_fpn_1x_coco.yaml", "retinanet/retinanet_r50_fpn_1x_coco.yaml",
                "fcos/fcos_r50_fpn_1x_coco.yaml"]


@pytest.mark.timeout(120)
def test_config_cli_checks_a_model_and_reports_a_typo():
    path = "configs/_base_/models/faster_rcnn_r50_fpn.yaml"
    checked = run_cli("raydet.check", path, "--set", "model.neck.type=PAFPN")
    assert checked.returncode == 0, checked.stderr
    assert "model: FasterRCNN built (" in checked.stdout and "config OK" in checked.stdout
    typo = run_cli("raydet.check", path, "--set", "model.neck.type=PAFNP")
    assert typo.returncode == 2
    assert "model.neck.type: unknown MODELS type 'PAFNP' (did you mean 'PAFPN'?)" in typo.stderr
    assert "Traceback" not in typo.stderr


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", MODEL_BASES)
@pytest.mark.parametrize("neck", ["FPN", "PAFPN"])
def test_r50_model_configs_check_with_either_neck(name, neck):
    config = load_config(REPO / f"configs/_base_/models/{name}.yaml", [f"model.neck.type={neck}"])
    line, accel = check_config(config).lines
    assert line.startswith(f"model: {config['model']['type']} built (")
    assert accel.startswith("accel: AccelSettings(winograd=4, fold_norm=True")  # the CPU speed paths it turns on


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
    checked = run_cli("raydet.check", f"configs/{config}")
    assert checked.returncode == 0, checked.stderr
    assert "config OK" in checked.stdout


MISWIRED = [  # (config, override, the one-line message after "--set OVERRIDE: ")
    ("retinanet_tiny", "model.bbox_head.type=RPNHead",
     "model.bbox_head.type: expected a BaseDenseHead, but RPNHead is not one; "
     "BaseDenseHead types in MODELS: FCOSHead, RetinaHead"),
    ("fcos_tiny", "model.bbox_head.type=StandardRoIHead",
     "model.bbox_head.type: expected a BaseDenseHead, but StandardRoIHead is not one; "
     "BaseDenseHead types in MODELS: FCOSHead, RetinaHead"),
    ("faster_rcnn_tiny", "model.roi_head.type=RetinaHead",
     "model.roi_head.type: expected a BaseRoIHead, but RetinaHead is not one; "
     "BaseRoIHead types in MODELS: StandardRoIHead"),
    ("faster_rcnn_tiny", "model.rpn_head.type=RetinaHead",
     "model.rpn_head.type: expected a BaseProposalHead, but RetinaHead is not one; "
     "BaseProposalHead types in MODELS: RPNHead"),
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name,override,message", MISWIRED)
def test_a_head_of_the_wrong_kind_is_named_with_the_contract_it_breaks(name, override, message):
    config = load_config(REPO / f"configs/_base_/models/{name}.yaml", [override])
    with pytest.raises(ConfigError) as err:
        check_config(config)
    assert str(err.value) == f"--set {override}: {message}"


def test_config_check_rejects_a_miswired_head_in_one_line(monkeypatch, capsys):
    from raydet.check import main

    monkeypatch.chdir(REPO)
    code = main(["configs/_base_/models/retinanet_tiny.yaml", "--set", "model.bbox_head.type=RPNHead"])
    stderr = capsys.readouterr().err
    assert code == 2
    assert stderr == ("error: --set model.bbox_head.type=RPNHead: model.bbox_head.type: expected a BaseDenseHead, "
                      "but RPNHead is not one; BaseDenseHead types in MODELS: FCOSHead, RetinaHead\n")
