"""A user's own neck, in the user's own module, named in custom_imports, trains a step."""
from __future__ import annotations

import sys
import textwrap

import pytest
import torch

from helpers import REPO, run_cli, write
from raydet.builder import build_model
from raydet.config import ConfigError, load_config

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
    checked = run_cli("raydet.config", str(config), "--check", env={"PYTHONPATH": str(project)})
    assert checked.returncode == 0, checked.stderr
    assert "model: RetinaNet built" in checked.stdout


def test_unimportable_custom_module_is_a_config_error(tmp_path):
    config = write(tmp_path / "cfg.yaml", f"_base_: {REPO}/configs/_base_/models/retinanet_tiny.yaml\n"
                                          "custom_imports: [not_my_parts.necks]\n")
    with pytest.raises(ConfigError, match=r"custom_imports: cannot import 'not_my_parts.necks'"):
        load_config(config)
