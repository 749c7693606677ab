"""The ``accel:`` section: parsed into ``AccelSettings`` (all off when absent), and a bad value is one clear
error."""
from __future__ import annotations

import pytest
from helpers import REPO, write

from raydet.builder import section
from raydet.config import load_config
from raydet.config.schema import AccelSettings

pytestmark = pytest.mark.timeout(60)

def test_an_accel_section_is_parsed(tmp_path):
    config = load_config(write(tmp_path / "cfg.yaml", "accel: {winograd: 2, channels_last: true}\n"))
    assert section(config, "accel") == AccelSettings(winograd=2, channels_last=True)
    assert section(load_config(REPO / "configs/_base_/default_runtime.yaml"), "accel") == AccelSettings()


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
