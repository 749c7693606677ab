"""The ``accel:`` section: parsed into ``AccelSettings`` (all off when absent), set by the r50 configs and the
configs built on them, and a bad value is one clear error."""
from __future__ import annotations

import pytest

from raydet.config import load_config
from raydet.config.parsed import parse_config
from raydet.config.schema import AccelSettings
from tests.helpers import REPO, write

pytestmark = pytest.mark.timeout(60)

def test_an_accel_section_is_parsed(tmp_path):
    config = load_config(write(tmp_path / "cfg.yaml", "accel: {winograd: 2, channels_last: true}\n"))
    assert parse_config(config).accel == AccelSettings(winograd=2, channels_last=True)
    assert parse_config(load_config(REPO / "configs/_base_/default_runtime.yaml")).accel == AccelSettings()


ALL_ON = AccelSettings(winograd=4, fold_norm=True, gather_roi_align=True, channels_last=True)
NO_ROI_EXTRACTOR = AccelSettings(winograd=4, fold_norm=True, channels_last=True)


@pytest.mark.parametrize(("config", "expected"), [
    ("configs/_base_/models/faster_rcnn_r50_fpn.yaml", ALL_ON),
    ("configs/_base_/models/mask_rcnn_r50_fpn.yaml", ALL_ON),
    ("configs/_base_/models/retinanet_r50_fpn.yaml", NO_ROI_EXTRACTOR),
    ("configs/_base_/models/fcos_r50_fpn.yaml", NO_ROI_EXTRACTOR),
    ("configs/retinanet/retinanet_r50_fpn_1x_coco.yaml", NO_ROI_EXTRACTOR),
    ("configs/demo/fcos_tiny_shapes.yaml", NO_ROI_EXTRACTOR),
    ("configs/demo/mask_rcnn_tiny_shapes.yaml", ALL_ON),
])
def test_the_r50_configs_and_those_built_on_them_turn_on_the_speed_paths(config, expected):
    assert parse_config(load_config(REPO / config)).accel == expected


def test_accel_is_off_by_default():
    assert AccelSettings() == AccelSettings(winograd=0, fold_norm=False, gather_roi_align=False, channels_last=False)


@pytest.mark.parametrize(("accel", "message"), [
    ("{winograd: 3}", "accel.winograd: expected Literal[0, 2, 4], got 3 (int)"),
    ("{winograd: true}", "accel.winograd: expected Literal[0, 2, 4], got True (bool)"),
    ("{fold_norm: sometimes}", "accel.fold_norm: expected bool, got 'sometimes' (str)"),
    ("{windgrad: 4}", "accel.windgrad: AccelSettings has no argument 'windgrad' (did you mean 'winograd'?); "
                      "its arguments are: winograd, fold_norm, gather_roi_align, channels_last"),
    ("4", "accel: expected a mapping, got 4"),
])
def test_a_bad_accel_value_is_one_error_line(tmp_path, monkeypatch, capsys, accel, message):
    from raydet.check import main

    config = write(tmp_path / "cfg.yaml", f"accel: {accel}\n")
    monkeypatch.chdir(tmp_path)
    assert main([str(config)]) == 2
    stderr = capsys.readouterr().err
    assert stderr.strip().splitlines() == [f"error: {config}: {message}"], stderr
