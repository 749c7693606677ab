"""Registry: registration checked against the base class, checked recursive build with children from the
declared registries only, errors that name the key path, constructor bugs that keep their traceback."""
from __future__ import annotations

import sys
import traceback
from typing import Literal

import pytest
import torch

from raydet.registry import BuildError, Registry, build_section


@pytest.fixture
def parts():
    reg = Registry("PARTS", base=torch.nn.Module)

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
        parts.build({"type": "Net", "stem": {"type": "Conv", "in_channels": 3}, "blocks": [],
                     "neck": {"type": "PAFNP", "widths": [1]}}, "model")
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
    with pytest.raises(BuildError, match=r"model.stem: expected Module, got \{'in_channels': 3\} \(dict\) "
                                         r"— a Module config needs a 'type:' key"):
        parts.build({"type": "Net", "stem": {"in_channels": 3}, "blocks": []}, "model")
    with pytest.raises(BuildError, match=r"model.blocks.1: expected a Module config \(a mapping with 'type:'\), got 5"):
        parts.build({"type": "Net", "stem": {"type": "Conv", "in_channels": 3},
                     "blocks": [{"type": "Conv", "in_channels": 8}, 5]}, "model")


def test_node_without_type(parts):
    with pytest.raises(BuildError, match=r"model: expected a mapping with a 'type:' key naming a PARTS member"):
        parts.build({"in_channels": 3}, "model")


def test_register_twice_needs_force():
    reg = Registry("R", base=tuple, factories=True)

    @reg.register(name="A")
    def first(x: int = 1) -> tuple:
        return ("first", x)

    def second(x: int = 1) -> tuple:
        return ("second", x)

    with pytest.raises(KeyError, match="R already has 'A'"):
        reg.register(name="A")(second)
    reg.register(name="A", force=True)(second)
    assert reg.build({"type": "A", "x": 2}) == ("second", 2)
    assert "A" in reg and reg.names() == ["A"]


class Step:
    """A base class no registry holds itself (like a transform base class)."""


class Source:
    """Another one (like a dataset base class)."""


def test_children_come_from_the_declared_registry_that_builds_their_class():
    steps = Registry("STEPS", base=Step)
    datasets = Registry("SETS", base=object, children=[steps])

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
    with pytest.raises(BuildError,
                       match=r"data.train.pipeline.0.type: unknown STEPS type 'Flp' \(did you mean 'Flip'\?\)"):
        datasets.build({"type": "Folder", "root": "/x", "pipeline": [{"type": "Flp"}]}, "data.train")


def test_build_section_parses_a_dataclass_with_the_same_checks():
    import dataclasses

    @dataclasses.dataclass
    class Schedule:
        max_epochs: int = 12
        warmup: Literal["linear", "constant"] | None = "linear"

    assert build_section(Schedule, {"max_epochs": 3}, "train") == Schedule(3, "linear")
    assert build_section(Schedule, None, "train") == Schedule()
    with pytest.raises(BuildError,
                       match=r"train.max_epoch: Schedule has no argument 'max_epoch' \(did you mean 'max_epochs'\?\)"):
        build_section(Schedule, {"max_epoch": 3}, "train")
    with pytest.raises(BuildError, match=r"train: expected a mapping, got \[1\]"):
        build_section(Schedule, [1], "train")


def test_undeclared_registries_are_never_consulted():
    steps = Registry("STEPS_ELSEWHERE", base=Step)  # e.g. made by another test: it must not leak into others

    @steps.register()
    class Blur(Step):
        pass

    datasets = Registry("SETS", base=Source)

    @datasets.register()
    class Folder(Source):
        def __init__(self, pipeline: list[Step]):
            self.pipeline = pipeline

    with pytest.raises(BuildError, match=r"^data.train.pipeline: nothing here builds a Step \(SETS builds Source\)$"):
        datasets.build({"type": "Folder", "pipeline": [{"type": "Blur"}]}, "data.train")


class Coder:
    """Not a module (like a box coder)."""


class Loss(torch.nn.Module):
    pass


class Head(torch.nn.Module):
    def __init__(self, coder: Coder, loss: torch.nn.Module):
        super().__init__()
        self.coder, self.loss = coder, loss


def test_the_most_specific_base_builds_a_child():
    utils = Registry("UTILS", base=object)
    models = Registry("NETS", base=torch.nn.Module, children=[utils])
    utils.register()(Coder)
    models.register()(Loss)
    models.register()(Head)
    head = models.build({"type": "Head", "coder": {"type": "Coder"}, "loss": {"type": "Loss"}}, "model")
    assert isinstance(head.coder, Coder) and isinstance(head.loss, Loss)
    with pytest.raises(BuildError, match=r"model.loss.type: unknown NETS type 'Coder'"):
        models.build({"type": "Head", "coder": {"type": "Coder"}, "loss": {"type": "Coder"}}, "model")


class Stem(torch.nn.Module):
    """A contract: only its subclasses may be a ``StrictNet``'s stem."""


class ConvStem(Stem):
    def __init__(self, width: int = 4):
        super().__init__()


class StrictNet(torch.nn.Module):
    def __init__(self, stem: Stem):
        super().__init__()
        self.stem = stem


def test_a_child_of_the_wrong_kind_is_refused_before_it_is_built(parts):
    parts.register()(ConvStem)
    parts.register()(StrictNet)
    assert isinstance(parts.build({"type": "StrictNet", "stem": {"type": "ConvStem"}}).stem, ConvStem)
    with pytest.raises(BuildError) as err:  # Conv would reject 'width'; the kind is what is wrong
        parts.build({"type": "StrictNet", "stem": {"type": "Conv", "width": 3}}, "model")
    assert str(err.value) == "model.stem.type: expected a Stem, but Conv is not one; Stem types in PARTS: ConvStem"


def test_a_member_must_build_the_base():
    reg = Registry("NETS", base=torch.nn.Module)
    with pytest.raises(TypeError,
                       match=r"NETS holds subclasses of torch.nn.modules.module.Module; .*Assigner is not one"):
        @reg.register()
        class Assigner:
            pass

    with pytest.raises(TypeError, match=r"NETS holds subclasses of .*Module; .*make_net is not a class"):
        @reg.register()
        def make_net() -> torch.nn.Module:
            return torch.nn.Identity()

    factories = Registry("OPTIMS", base=torch.optim.Optimizer, factories=True)
    with pytest.raises(TypeError,
                       match=r"a function in OPTIMS must be annotated to return a torch.optim.optimizer.Optimizer"):
        @factories.register()
        def make_sgd(params, lr: float):
            return torch.optim.SGD(params, lr)

    @factories.register()
    def make_adam(params, lr: float) -> torch.optim.Adam:
        return torch.optim.Adam(params, lr)

    optimizer = factories.build({"type": "make_adam", "lr": 0.1}, params=[torch.nn.Parameter(torch.zeros(1))])
    assert isinstance(optimizer, torch.optim.Adam)


def test_a_base_declared_later_by_the_base_class():
    late = Registry("LATE")
    with pytest.raises(TypeError, match=r"LATE has no base class yet; declare it with @LATE.declare_base first"):
        late.register()(Step)

    @late.declare_base
    class Part:
        pass

    @late.register()
    class Wheel(Part):
        pass

    assert late.base is Part and isinstance(late.build({"type": "Wheel"}), Wheel)
    with pytest.raises(TypeError, match=r"LATE already builds .*Part; cannot make .*Step its base"):
        late.declare_base(Step)


class Brittle(torch.nn.Module):
    """A component whose constructor has a bug in it for some arguments (``mode``)."""

    def __init__(self, channels: int, mode: Literal["ok", "typo", "runtime", "value"] = "ok"):
        super().__init__()
        self.conv = torch.nn.Conv2d(channels, channels, 1)
        if mode == "typo":
            self.conv.wieght.zero_()  # the bug: AttributeError
        if mode == "runtime":
            raise RuntimeError("the user's own runtime error")
        if mode == "value":
            raise ValueError("mode 'value' is not supported with this many channels")


class Holder(torch.nn.Module):
    def __init__(self, part: torch.nn.Module):
        super().__init__()
        self.part = part


@pytest.fixture
def brittle():
    reg = Registry("BRITTLE", base=torch.nn.Module)
    reg.register()(Brittle)
    reg.register()(Holder)
    return reg


def test_a_bug_in_a_constructor_keeps_its_traceback(brittle):
    node = {"type": "Holder", "part": {"type": "Brittle", "channels": 2, "mode": "typo"}}
    with pytest.raises(AttributeError, match="wieght") as err:
        brittle.build(node, "model")
    users_frames = [frame for frame in traceback.extract_tb(err.value.__traceback__) if frame.filename == __file__]
    assert users_frames[-1].line == "self.conv.wieght.zero_()  # the bug: AttributeError"
    if sys.version_info >= (3, 11):
        assert err.value.__notes__ == ["while building model.part (Brittle)"]
    with pytest.raises(RuntimeError, match="the user's own runtime error"):
        brittle.build({"type": "Brittle", "channels": 2, "mode": "runtime"}, "model")


def test_arguments_a_constructor_rejects_are_one_line(brittle):
    with pytest.raises(BuildError) as err:
        brittle.build({"type": "Holder", "part": {"type": "Brittle", "channels": 2, "mode": "value"}}, "model")
    assert str(err.value) == ("model.part: Brittle rejected its arguments: ValueError: "
                              "mode 'value' is not supported with this many channels")
    with pytest.raises(BuildError) as err:  # torch's RuntimeError for a size it cannot make
        brittle.build({"type": "Brittle", "channels": -2}, "model")
    assert str(err.value).startswith("model: Brittle rejected its arguments: RuntimeError: ")
    assert "negative dimension" in str(err.value)
