"""A user's own neck, in the user's own module, named in custom_imports, trains a step; its constructor's
complaints about its arguments are one line, its bugs keep their traceback."""
from __future__ import annotations

import sys
import textwrap
import traceback

import pytest
import torch

from raydet.builder import build_model
from raydet.config import ConfigError, load_config
from tests.helpers import REPO, run_cli, write

NECK_MODULE = '''
import torch
from torch import nn
from raydet.registry import MODELS


@MODELS.register()
class SumNeck(nn.Module):
    """Every output level is a 1x1 projection of its input plus the upsampled coarser level."""

    def __init__(self, in_channels: list[int], out_channels: int, num_outs: int):
        super().__init__()
        self.projections = nn.ModuleList(nn.Conv2d(c, out_channels, 1) for c in in_channels)
        self.num_outs = num_outs

    def forward(self, inputs):
        outs = [p(x) for p, x in zip(self.projections, inputs)]
        for i in range(len(outs) - 2, -1, -1):
            outs[i] = outs[i] + nn.functional.interpolate(outs[i + 1], size=outs[i].shape[-2:])
        while len(outs) < self.num_outs:
            outs.append(nn.functional.max_pool2d(outs[-1], 1, stride=2))
        return outs


@MODELS.register()
class CheckedNeck(SumNeck):
    """A SumNeck that checks ``num_outs`` and can be frozen (with a bug in the freezing)."""

    def __init__(self, in_channels: list[int], out_channels: int, num_outs: int, frozen: bool = False):
        if num_outs < len(in_channels):
            raise ValueError(f"num_outs ({num_outs}) must be at least the number of inputs ({len(in_channels)})")
        super().__init__(in_channels, out_channels, num_outs)
        if frozen:
            for param in self.projections.paramters():  # the bug
                param.requires_grad_(False)
'''


@pytest.fixture
def user_project(tmp_path, monkeypatch):
    write(tmp_path / "my_parts" / "__init__.py", "")
    write(tmp_path / "my_parts" / "necks.py", NECK_MODULE)
    config = write(tmp_path / "my_retinanet.yaml", textwrap.dedent(f"""\
        _base_: {REPO}/configs/_base_/models/retinanet_tiny.yaml
        custom_imports: [my_parts.necks]
        model:
          neck:
            _delete_: true
            type: SumNeck
            in_channels: [32, 64, 128]
            out_channels: 64
            num_outs: 5
          bbox_head:
            num_classes: 2
        """))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path, config
    sys.modules.pop("my_parts.necks", None)
    sys.modules.pop("my_parts", None)


@pytest.mark.timeout(60)
def test_users_neck_trains_a_step(user_project):
    _, config = user_project
    model = build_model(load_config(config))
    assert type(model.neck).__name__ == "SumNeck"
    model.train()
    before = [p.detach().clone() for p in model.neck.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    img = torch.randn(2, 3, 128, 128)
    metas = [{"img_shape": (128, 128), "ori_shape": (128, 128), "pad_shape": (128, 128),
              "scale_factor": [1.0] * 4, "flip": False, "flip_direction": None, "image_id": i} for i in range(2)]
    losses = model(img, metas, [torch.tensor([[10.0, 10.0, 70.0, 90.0]]), torch.zeros(0, 4)],
                   [torch.tensor([1]), torch.zeros(0, dtype=torch.int64)])
    sum(v for k, v in losses.items() if "loss" in k).backward()
    optimizer.step()
    assert all(not torch.equal(b, p) for b, p in zip(before, model.neck.parameters()))


@pytest.mark.timeout(60)
def test_users_neck_checks_from_the_command_line(user_project):
    project, config = user_project
    checked = run_cli("raydet.check", str(config), env={"PYTHONPATH": str(project)})
    assert checked.returncode == 0, checked.stderr
    assert "model: RetinaNet built" in checked.stdout


def test_unimportable_custom_module_is_a_config_error(tmp_path):
    config = write(tmp_path / "cfg.yaml", f"_base_: {REPO}/configs/_base_/models/retinanet_tiny.yaml\n"
                                          "custom_imports: [not_my_parts.necks]\n")
    with pytest.raises(ConfigError, match=r"custom_imports: cannot import 'not_my_parts.necks'"):
        load_config(config)


def test_arguments_the_users_constructor_rejects_are_one_line(user_project):
    _, config = user_project
    with pytest.raises(ConfigError) as err:
        build_model(load_config(config, ["model.neck.type=CheckedNeck", "model.neck.num_outs=2"]))
    assert str(err.value) == (f"{config}: model.neck: CheckedNeck rejected its arguments: ValueError: "
                              "num_outs (2) must be at least the number of inputs (3)")


def test_a_bug_in_the_users_constructor_keeps_its_traceback(user_project):
    project, config = user_project
    with pytest.raises(AttributeError, match="paramters") as err:
        build_model(load_config(config, ["model.neck.type=CheckedNeck", "+model.neck.frozen=true"]))
    users_frames = [f for f in traceback.extract_tb(err.value.__traceback__) if f.filename.startswith(str(project))]
    assert users_frames[-1].line == "for param in self.projections.paramters():  # the bug"
    if sys.version_info >= (3, 11):
        assert "while building model.neck (CheckedNeck)" in err.value.__notes__


@pytest.mark.timeout(120)
def test_a_bug_in_the_users_constructor_shows_its_traceback_on_the_command_line(user_project):
    project, config = user_project
    checked = run_cli("raydet.check", str(config), "--set", "model.neck.type=CheckedNeck",
                      "+model.neck.frozen=true", env={"PYTHONPATH": str(project)})
    assert checked.returncode == 1
    assert f'File "{project / "my_parts" / "necks.py"}"' in checked.stderr
    assert "for param in self.projections.paramters():  # the bug" in checked.stderr
    assert "AttributeError" in checked.stderr
    if sys.version_info >= (3, 11):
        assert "while building model.neck (CheckedNeck)" in checked.stderr
