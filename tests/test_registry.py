"""Registry: registration, checked recursive build, errors that name the key path."""
from __future__ import annotations

from typing import Literal

import pytest
import torch

from raydet.registry import BuildError, Registry, build_section


@pytest.fixture
def parts():
    reg = Registry("PARTS")

    @reg.register()
    class Conv(torch.nn.Module):
        def __init__(self, in_channels: int, out_channels: int = 8, mode: Literal["same", "valid"] = "same"):
            super().__init__()
            self.conv = torch.nn.Conv2d(in_channels, out_channels, 3, padding=1 if mode == "same" else 0)

    @reg.register(name="PAFPN")
    class PathAggregation(torch.nn.Module):
        def __init__(self, widths: list[int], scale: float = 1.0):
            super().__init__()
            if any(w <= 0 for w in widths):
                raise ValueError("widths must be positive")
            self.widths, self.scale = widths, scale

    @reg.register()
    class Net(torch.nn.Module):
        def __init__(self, stem: torch.nn.Module, blocks: list[torch.nn.Module], neck: torch.nn.Module | None = None,
                     extra: dict | None = None):
            super().__init__()
            self.stem, self.blocks, self.neck, self.extra = stem, torch.nn.ModuleList(blocks), neck, extra

    return reg


def test_build_makes_children_where_the_constructor_asks(parts):
    net = parts.build({
        "type": "Net",
        "stem": {"type": "Conv", "in_channels": 3},
        "blocks": [{"type": "Conv", "in_channels": 8}, {"type": "PAFPN", "widths": [1, 2], "scale": 2}],
        "extra": {"type": "not built", "x": 1},
    }, "model")
    assert type(net.stem).__name__ == "Conv" and net.stem.conv.in_channels == 3
    assert [type(b).__name__ for b in net.blocks] == ["Conv", "PathAggregation"]
    assert net.blocks[1].scale == 2  # an int is a fine float
    assert net.neck is None
    assert net.extra == {"type": "not built", "x": 1}  # annotated dict: passed as data


def test_defaults_fill_missing_arguments_only(parts):
    conv = parts.build({"type": "Conv", "in_channels": 4}, "m", out_channels=5)
    assert conv.conv.out_channels == 5
    conv = parts.build({"type": "Conv", "in_channels": 4, "out_channels": 6}, "m", out_channels=5)
    assert conv.conv.out_channels == 6


def test_unknown_type_names_key_path_and_nearest_names(parts):
    with pytest.raises(BuildError) as err:
        parts.build({"type": "Net", "stem": {"type": "Conv", "in_channels": 3}, "blocks": [], "neck": {"type": "PAFNP", "widths": [1]}}, "model")
    assert err.value.key_path == "model.neck.type"
    assert "unknown PARTS type 'PAFNP'" in str(err.value)
    assert "did you mean 'PAFPN'?" in str(err.value)
    assert "available: Conv, Net, PAFPN" in str(err.value)


def test_unknown_argument_suggests_the_real_one(parts):
    with pytest.raises(BuildError) as err:
        parts.build({"type": "Conv", "in_channels": 3, "out_channel": 4}, "model.stem")
    assert err.value.key_path == "model.stem.out_channel"
    assert "Conv has no argument 'out_channel' (did you mean 'out_channels'?)" in str(err.value)


def test_missing_argument(parts):
    with pytest.raises(BuildError, match=r"model: Conv needs 'in_channels'"):
        parts.build({"type": "Conv"}, "model")


@pytest.mark.parametrize("key,value,expected", [
    ("in_channels", "three", "expected int, got 'three' (str)"),
    ("in_channels", True, "expected int, got True (bool)"),
    ("in_channels", 2.5, "expected int, got 2.5 (float)"),
    ("mode", "full", "expected Literal['same', 'valid'], got 'full'"),
])
def test_wrong_type_names_the_argument(parts, key, value, expected):
    node = {"type": "Conv", "in_channels": 3, key: value}
    with pytest.raises(BuildError) as err:
        parts.build(node, "model.stem")
    assert err.value.key_path == f"model.stem.{key}"
    assert expected in str(err.value)


def test_float_written_as_1e_minus_4_gets_advice(parts):
    with pytest.raises(BuildError, match=r"PyYAML reads 1e-4 as text; write it with a dot, e.g. 0.0001"):
        parts.build({"type": "PAFPN", "widths": [1], "scale": "1e-4"}, "neck")


def test_list_element_type_is_checked(parts):
    with pytest.raises(BuildError, match=r"neck.widths: expected list\[int\], got \[1, 'x'\]"):
        parts.build({"type": "PAFPN", "widths": [1, "x"]}, "neck")


def test_constructor_failure_reports_key_path_not_bare_exception(parts):
    with pytest.raises(BuildError) as err:
        parts.build({"type": "Net", "stem": {"type": "Conv", "in_channels": 3},
                     "blocks": [{"type": "Conv", "in_channels": 1}, {"type": "PAFPN", "widths": [0]}]}, "model")
    assert err.value.key_path == "model.blocks.1"
    assert "PathAggregation rejected its arguments: ValueError: widths must be positive" in str(err.value)


def test_child_given_as_something_else_is_an_error(parts):
    with pytest.raises(BuildError, match=r"model.stem: expected Module, got 3 \(int\)$"):
        parts.build({"type": "Net", "stem": 3, "blocks": []}, "model")
    with pytest.raises(BuildError, match=r"model.stem: expected Module, got \{'in_channels': 3\} \(dict\) — a Module config needs a 'type:' key"):
        parts.build({"type": "Net", "stem": {"in_channels": 3}, "blocks": []}, "model")
    with pytest.raises(BuildError, match=r"model.blocks.1: expected a Module config \(a mapping with 'type:'\), got 5"):
        parts.build({"type": "Net", "stem": {"type": "Conv", "in_channels": 3}, "blocks": [{"type": "Conv", "in_channels": 8}, 5]}, "model")


def test_node_without_type(parts):
    with pytest.raises(BuildError, match=r"model: expected a mapping with a 'type:' key naming a PARTS member"):
        parts.build({"in_channels": 3}, "model")


def test_register_twice_needs_force():
    reg = Registry("R")

    @reg.register(name="A")
    def first(x: int = 1):
        return ("first", x)

    def second(x: int = 1):
        return ("second", x)

    with pytest.raises(KeyError, match="R already has 'A'"):
        reg.register(name="A")(second)
    reg.register(name="A", force=True)(second)
    assert reg.build({"type": "A", "x": 2}) == ("second", 2)
    assert "A" in reg and reg.names() == ["A"]


class Step:
    """A base class no registry holds itself (like a transform base class)."""


def test_children_come_from_the_registry_that_holds_their_class():
    steps, datasets = Registry("STEPS"), Registry("SETS")

    @steps.register()
    class Flip(Step):
        def __init__(self, p: float = 0.5):
            self.p = p

    @datasets.register()
    class Folder:
        def __init__(self, root: str, pipeline: list[Step]):
            self.root, self.pipeline = root, pipeline

    built = datasets.build({"type": "Folder", "root": "/x", "pipeline": [{"type": "Flip", "p": 1.0}]}, "data.train")
    assert isinstance(built.pipeline[0], Flip) and built.pipeline[0].p == 1.0
    with pytest.raises(BuildError, match=r"data.train.pipeline.0.type: unknown STEPS type 'Flp' \(did you mean 'Flip'\?\)"):
        datasets.build({"type": "Folder", "root": "/x", "pipeline": [{"type": "Flp"}]}, "data.train")


def test_build_section_parses_a_dataclass_with_the_same_checks():
    import dataclasses

    @dataclasses.dataclass
    class Schedule:
        max_epochs: int = 12
        warmup: Literal["linear", "constant"] | None = "linear"

    assert build_section(Schedule, {"max_epochs": 3}, "train") == Schedule(3, "linear")
    assert build_section(Schedule, None, "train") == Schedule()
    with pytest.raises(BuildError, match=r"train.max_epoch: Schedule has no argument 'max_epoch' \(did you mean 'max_epochs'\?\)"):
        build_section(Schedule, {"max_epoch": 3}, "train")
    with pytest.raises(BuildError, match=r"train: expected a mapping, got \[1\]"):
        build_section(Schedule, [1], "train")
