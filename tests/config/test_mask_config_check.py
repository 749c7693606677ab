"""The config check refuses a mask head without masks to learn from, and masks without a mask head."""
from __future__ import annotations

from pathlib import Path

import pytest

from raydet.builder import check_config
from raydet.config import ConfigError, load_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_mask_rcnn_demo_config_checks():
    config = load_config(CONFIGS / "demo/mask_rcnn_tiny_shapes.yaml")
    assert any(line.startswith("model: MaskRCNN built") for line in check_config(config, data=False).lines)


@pytest.mark.parametrize("config_file, overrides, message", [
    ("demo/mask_rcnn_tiny_shapes.yaml", ["data.train.with_mask=false"],
     r"data.train.with_mask: MaskRCNN has a mask head .* set data.train.with_mask: true"),
    ("demo/fcos_tiny_shapes.yaml", ["+data.train.with_mask=true"],
     r"data.train.with_mask: FCOS has no mask head, so it cannot train on masks"),
    ("demo/fcos_tiny_shapes.yaml", ["evaluation.save_best=segm_mAP"],
     r"evaluation.save_best: segm_mAP needs a detector that segments; FCOS predicts boxes only"),
])
def test_masks_and_mask_heads_must_go_together(config_file, overrides, message):
    config = load_config(CONFIGS / config_file, overrides)
    with pytest.raises(ConfigError, match=message):
        check_config(config, data=False)
