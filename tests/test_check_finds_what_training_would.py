"""What the config fuzzer found ``raydet.check`` accepting although the first training step would fail (or the
check itself would never end): each is now one ``error:`` line, exit code 2."""
from __future__ import annotations

import pytest
import yaml

from raydet import check
from raydet.config import load_config
from tests.demo_helpers import DEMO_CONFIG

MASK_CONFIG = DEMO_CONFIG.parent / "mask_rcnn_tiny_shapes.yaml"


def one_error_line(capsys, argv) -> str:
    assert check.main([str(arg) for arg in argv]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


@pytest.mark.parametrize("override,message", [
    ("model.backbone.out_indices=[1, 2, 0]", "the model's parts do not fit together: a training step on a 128 x 128 "
                                             "image fails with RuntimeError: Given groups=1"),
    ("model.neck.num_outs=1000000000000000", "num_outs (1000000000000000) is at most 9"),  # was: never ended
    ("model.bbox_head.loss_bbox.loss_weight=.nan", "model.bbox_head.loss_bbox.loss_weight: .nan is not a number"),
    ("data.train.pipeline=[]", "data.train.pipeline: its images reach the model as torch.uint8 (0-255); add "
                               "{type: Normalize"),
])
@pytest.mark.timeout(60)
def test_a_config_whose_first_step_would_fail_is_one_error_line(small_shapes, capsys, override, message):
    line = one_error_line(capsys, [DEMO_CONFIG, "--set", f"data.data_root={small_shapes}", override])
    assert message in line, line


@pytest.mark.timeout(60)
def test_a_detector_without_its_neck_or_with_a_layer_of_no_channels_is_one_error_line(small_shapes, tmp_path, capsys):
    config = yaml.safe_load(load_config(DEMO_CONFIG, [f"data.data_root={small_shapes}"]).to_yaml())
    del config["model"]["neck"]
    (tmp_path / "no_neck.yaml").write_text(yaml.safe_dump(config))
    assert "the model's parts do not fit together" in one_error_line(capsys, [tmp_path / "no_neck.yaml"])
    line = one_error_line(capsys, [MASK_CONFIG, "--set", f"data.data_root={small_shapes}",
                                   "model.roi_head.mask_head.conv_out_channels=0"])
    assert "roi_head.mask_head.convs.0.conv.weight has no elements ([0, " in line  # and no torch warning lines
