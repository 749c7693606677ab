"""Config loading: _base_ merging, --set overrides, custom_imports, dump/load, errors."""
from __future__ import annotations

import sys

import pytest

from raydet.config import Config, ConfigError, load_config
from tests.helpers import write


@pytest.fixture
def tree(tmp_path):
    write(tmp_path / "_base_/models/net.yaml", """
model:
  type: Net
  backbone: {type: ResNet, depth: 50, out_indices: [0, 1, 2, 3]}
  neck: {type: FPN, in_channels: [256, 512], out_channels: 256}
optimizer: {type: SGD, lr: 0.02}
""")
    write(tmp_path / "_base_/schedule.yaml", """
optimizer: {type: SGD, lr: 0.01, momentum: 0.9}
epochs: 12
""")
    write(tmp_path / "det/child.yaml", """
_base_: [../_base_/models/net.yaml, ../_base_/schedule.yaml]
model:
  backbone: {depth: 18, out_indices: [3]}
  neck: {_delete_: true, type: PAFPN, out_channels: 64}
pipeline:
  - {type: Resize, scale: [1333, 800]}
  - {type: RandomFlip, prob: 0.5}
""")
    return tmp_path


def test_base_files_merge_recursively_child_wins(tree):
    cfg = load_config(tree / "det/child.yaml")
    assert cfg["model"]["backbone"] == {"type": "ResNet", "depth": 18, "out_indices": [3]}  # list replaced
    assert cfg["model"]["neck"] == {"type": "PAFPN", "out_channels": 64}  # _delete_ replaced the dict
    assert cfg["optimizer"] == {"type": "SGD", "lr": 0.01, "momentum": 0.9}  # later base wins
    assert cfg["epochs"] == 12
    assert "_base_" not in cfg


def test_sources_say_which_file_set_a_key(tree):
    cfg = load_config(tree / "det/child.yaml", ["model.backbone.depth=34"])
    assert cfg.source_of("model.neck.type").endswith("det/child.yaml")
    assert cfg.source_of("model.backbone.type").endswith("_base_/models/net.yaml")
    assert cfg.source_of("optimizer.momentum").endswith("_base_/schedule.yaml")
    assert cfg.source_of("model.backbone.depth") == "--set model.backbone.depth=34"


def test_overrides_set_index_and_add(tree):
    cfg = load_config(tree / "det/child.yaml", [
        "model.neck.type=FPN", "pipeline.0.scale=[640, 480]", "optimizer.lr=0.5", "+model.neck.num_outs=5",
        "+runtime.seed=3", "model.backbone={type: Tiny}",
    ])
    assert cfg["model"]["neck"] == {"type": "FPN", "out_channels": 64, "num_outs": 5}
    assert cfg["pipeline"][0]["scale"] == [640, 480]
    assert cfg["optimizer"]["lr"] == 0.5
    assert cfg["runtime"] == {"seed": 3}
    assert cfg["model"]["backbone"] == {"type": "Tiny"}


@pytest.mark.parametrize("override,message", [
    ("model.nek.type=FPN", "model.nek does not exist in the config; did you mean 'model.neck'? "
                           "(write --set +model.nek.type=... to add a new key)"),
    ("pipeline.2.prob=1", "pipeline.2 — pipeline has 2 items; index with 0..1"),
    ("pipeline.x=1", "pipeline.x — pipeline has 2 items"),
    ("epochs.x=1", "epochs is a number, not a mapping or a list"),
    ("optimizer.lr=fast", "optimizer.lr is a number (0.01) in the config, got a text ('fast')"),
    ("optimizer.lr=1e-4", "PyYAML reads 1e-4 as text; write it with a dot, e.g. 0.0001"),
    ("model.neck=[1, 2]", "model.neck is a mapping"),
    ("model.neck.type", "an override looks like key.path=value"),
    ("epochs=[1", "the value is not valid YAML"),
])
def test_bad_overrides(tree, override, message):
    with pytest.raises(ConfigError) as err:
        load_config(tree / "det/child.yaml", [override])
    assert message in str(err.value)
    assert str(err.value).startswith(f"--set {override}:")


def test_null_replaces_and_is_replaced_by_anything(tree):
    cfg = load_config(tree / "det/child.yaml", ["model.neck=null", "epochs=null"])
    assert cfg["model"]["neck"] is None and cfg["epochs"] is None


def test_dump_and_load_back_identically(tree):
    cfg = load_config(tree / "det/child.yaml", ["+extra.values=[1.5, null, true, 'x: y']"])
    dumped = write(tree / "dumped.yaml", cfg.to_yaml())
    again = load_config(dumped)
    assert again == cfg and isinstance(again, Config)
    assert load_config(dumped) == cfg


def test_config_pickles_with_its_sources(tree):
    import pickle

    cfg = load_config(tree / "det/child.yaml")
    again = pickle.loads(pickle.dumps(cfg))
    assert again == cfg and again.sources == cfg.sources and again.filename == cfg.filename


@pytest.mark.parametrize("files,entry,message", [
    ({}, "missing.yaml", "config file not found: {tmp}/missing.yaml"),
    ({"a.yaml": "_base_: b.yaml\n", "b.yaml": "_base_: [a.yaml]\n"}, "a.yaml",
     "cyclic _base_: {tmp}/a.yaml -> {tmp}/b.yaml -> {tmp}/a.yaml"),
    ({"a.yaml": "_base_: nothere.yaml\n"}, "a.yaml",
     "{tmp}/a.yaml: _base_ file 'nothere.yaml' not found (looked for {tmp}/nothere.yaml)"),
    ({"a.yaml": "model:\n  type: X\n  depth: [1, 2\n"}, "a.yaml",
     "{tmp}/a.yaml:4:1: malformed YAML: expected ',' or ']', but got '<stream end>' "
     "(while parsing a flow sequence that starts at line 3, column 10)"),
    ({"a.yaml": "model:\n  type: X\n   depth: 1\n"}, "a.yaml",
     "{tmp}/a.yaml:3:9: malformed YAML: mapping values are not allowed here"),
    ({"a.yaml": "- 1\n- 2\n"}, "a.yaml", "{tmp}/a.yaml: a config must be a mapping of keys to values, got a list"),
    ({"a.yaml": "_base_: {x: 1}\n"}, "a.yaml",
     "{tmp}/a.yaml: _base_ must be a file name or a list of file names, got {{'x': 1}}"),
])
def test_bad_files(tmp_path, files, entry, message):
    for name, text in files.items():
        write(tmp_path / name, text)
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / entry)
    assert str(err.value) == message.format(tmp=tmp_path.resolve())


def test_custom_imports_register_user_components(tmp_path, monkeypatch):
    write(tmp_path / "my_parts_for_config_test.py", """
import torch
from raydet.registry import MODELS

@MODELS.register()
class ConfigTestNeck(torch.nn.Module):
    def __init__(self, width: int = 4):
        super().__init__()
        self.width = width
""")
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg_file = write(tmp_path / "c.yaml", "custom_imports: [my_parts_for_config_test]\nmodel: {type: ConfigTestNeck}\n")
    load_config(cfg_file)
    from raydet.registry import MODELS

    assert MODELS.build({"type": "ConfigTestNeck", "width": 7}).width == 7
    sys.modules.pop("my_parts_for_config_test")


@pytest.mark.parametrize("text,message", [
    ("custom_imports: [no_such_module_xyz]\n",
     "custom_imports: cannot import 'no_such_module_xyz' (No module named 'no_such_module_xyz'); "
     "make sure its folder is on PYTHONPATH (on a cluster: inside the --working-dir)"),
    ("custom_imports: no_such_module_xyz\n",
     "custom_imports: expected a list of module names, got 'no_such_module_xyz'"),
])
def test_bad_custom_imports(tmp_path, text, message):
    cfg_file = write(tmp_path / "c.yaml", text)
    with pytest.raises(ConfigError) as err:
        load_config(cfg_file)
    assert str(err.value) == f"{cfg_file}: {message}"


def test_custom_import_that_raises_is_reported(tmp_path, monkeypatch):
    write(tmp_path / "broken_user_mod_xyz.py", "raise RuntimeError('boom')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match=r"importing 'broken_user_mod_xyz' failed: RuntimeError: boom"):
        load_config(write(tmp_path / "c.yaml", "custom_imports: [broken_user_mod_xyz]\n"))
