"""Sweep files: the search space, the tune section, and ``python -m raydet.tune --check`` (no Ray, no training)."""
from __future__ import annotations

import sys

import pytest

from raydet.config import ConfigError, load_config
from raydet.tune.__main__ import main as tune_main
from raydet.tune.space import parse_search
from raydet.tune.sweep import check_sweep, load_sweep
from tests.helpers import REPO, write

DEMO_SWEEP = REPO / "configs/tune/demo_shapes.yaml"
NECK = "{type: %s, in_channels: [32, 64, 128], out_channels: 64, num_outs: 5, add_extra_convs: on_output}"


def sweep_file(tmp_path, data_root, text: str, name: str = "sweep.yaml"):
    """A sweep on the demo's base config and ``data_root``; ``text`` replaces the search section (and adds more)."""
    return write(tmp_path / name, f"_base_: {DEMO_SWEEP}\ndata: {{data_root: {data_root}}}\n{text}")


def tune_cli(capsys, *args) -> tuple[int, str, str]:
    code = tune_main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.timeout(60)
def test_the_demo_sweep_builds_every_choice(small_shapes, capsys):
    code, out, err = tune_cli(capsys, DEMO_SWEEP, "--check", "--set", f"data.data_root={small_shapes}")
    assert code == 0, err
    assert "search: 2 path(s); 4 trial config(s) built: model.neck (choice), optimizer.lr (loguniform)" in out
    assert "tune: max bbox_mAP_50 over 4 sample(s), searcher random, scheduler ASHA by epochs" in out
    assert out.rstrip().endswith("sweep OK")


@pytest.mark.timeout(120)
def test_the_gpu_cluster_sweep_builds_every_choice_without_its_data(capsys):
    """RetinaNet R50 on COCO: the annotations are on the cluster, every neck x anchor-size choice is built here."""
    code, out, err = tune_cli(capsys, REPO / "configs/tune/retinanet_coco_gpu.yaml", "--check")
    assert code == 0, err
    assert "model.neck (choice)" in out and "optimizer.lr (loguniform)" in out
    assert "model.bbox_head.anchor_generator.octave_base_scale" not in out  # sizes are searched as whole lists
    assert "model.bbox_head.anchor_generator.sizes (choice)" in out
    assert "is not on this machine" in out
    assert out.rstrip().endswith("sweep OK")


def test_the_space_parses_every_distribution(tmp_path):
    config = load_config(write(tmp_path / "s.yaml", """
search:
  model.neck: {choice: [{type: FPN, a: 1}, {type: PAFPN, a: 1}, {type: FPN, a: 2}]}
  optimizer.lr: {loguniform: [1.0e-4, 1.0e-2]}
  optimizer.weight_decay: {uniform: [0.0, 0.1]}
  data.samples_per_gpu: {randint: [2, 9]}
  lr_config.warmup_ratio: {quniform: [0.0, 0.5, 0.1]}
  model.bbox_head.sizes: {grid: [[[32], [64]], [[24], [48]]]}
  runner.max_epochs: {choice: [1, 2]}
  optimizer.momentum: {choice: [0.9, 0.90000001]}
"""))
    space = parse_search(config)
    neck, lr, wd, batch, warmup, sizes, epochs, momentum = space.dimensions
    assert neck.keys() == ["FPN#0", "PAFPN", "FPN#2"]  # searchers pick labels: readable in Tune's tables
    assert neck.value("FPN#2") == {"type": "FPN", "a": 2}
    assert momentum.keys() == [0, 1] and momentum.label(1) == "0.9"  # labels that clash: indices
    assert sizes.keys() == ["[[32], [64]]", "[[24], [48]]"] and sizes.value("[[24], [48]]") == [[24], [48]]
    assert epochs.keys() == ["1", "2"] and epochs.value("2") == 2
    assert batch.value(4.0) == 4 and lr.label(0.00123456) == "0.001235"
    assert lr.extremes() == [1e-4, 1e-2] and batch.extremes() == [2, 8]
    points = list(space.check_points())
    assert len(points) == 3 * 2 * 2 * 2 * 2  # every list combination, bounds all low then all high
    assert {p["optimizer.weight_decay"] for p in points} == {0.0, 0.1}
    assert len(list(space.check_points(limit=4))) == 1 + 2 + 7  # one value at a time: neck has 2 more, the rest 1


@pytest.mark.parametrize("search, message", [
    ("optimizer.lr: {lognormal: [1, 2]}", "search.optimizer.lr: unknown distribution 'lognormal'; known: choice, grid"),
    ("optimizer.lr: {loguniform: [0.0, 0.1]}", "loguniform takes [low, high] with 0 < low < high, got [0.0, 0.1] "
                                               "(a log scale needs low > 0)"),
    ("optimizer.lr: {uniform: [0.1, 0.01]}", "(low must be below high)"),
    ("optimizer.lr: {uniform: [0.1]}", "uniform takes [low, high], got [0.1]"),
    ("optimizer.lr: {randint: [1, 2.5]}", "(integers)"),
    ("optimizer.lr: {quniform: [0, 1, 2]}", "(0 < q <= high - low)"),
    ("optimizer.lr: {choice: []}", "choice takes a non-empty list"),
    ("optimizer.lr: 0.01", "expected one distribution"),
    ("optimizer..lr: {choice: [1]}", "a search key is a dotted config path"),
])
def test_malformed_distributions_name_the_path(tmp_path, search, message):
    config = load_config(write(tmp_path / "s.yaml", f"search:\n  {search}\n"))
    with pytest.raises(ConfigError, match="s.yaml: search.") as raised:
        parse_search(config)
    assert message in str(raised.value)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("text, message", [
    ("search: {_delete_: true, optimizer.lrr: {choice: [0.1]}}",
     "sweep.yaml: search.optimizer.lrr: optimizer.lrr does not exist in the config; did you mean 'optimizer.lr'?"),
    ("search: {_delete_: true, model.neck: {choice: [" + NECK % "FPN" + ", " + NECK % "PAFPNX" + "]}}",
     "sweep.yaml: search.model.neck: model.neck.type: unknown MODELS type 'PAFPNX' (did you mean 'PAFPN'?)"),
    ("search: {_delete_: true, model.neck: {choice: [{type: FPN, in_channels: [32, 64, 128], out_channel: 8, "
     "num_outs: 5}]}}", "sweep.yaml: search.model.neck: model.neck.out_channel: FPN has no argument 'out_channel' "
                        "(did you mean 'out_channels'?)"),
    ("search: {_delete_: true, optimizer.lr: {choice: [fast]}}", "optimizer.lr is a number (0.004) in the config, "
     "got a text ('fast')"),
    ("tune: {metric: mAP}", "metric 'mAP' is never reported by training; choose one of bbox_mAP, bbox_mAP_50"),
    ("tune: {mode: maximise}", "tune.mode"),
    ("tune: {scheduler: {type: ASHA, grace_period: 3}}", "tune.scheduler.grace_period (3) must be below "
     "runner.max_epochs (3)"),
    ("tune: {scheduler: {type: Hyperband}}", "tune.scheduler.type"),
    ("tune: {searcher: grid}", "tune.searcher grid tries every combination of choice/grid lists; optimizer.lr is not"),
    ("tune: {searcher: optuna}\nsearch: {optimizer.lr: {_delete_: true, grid: [0.1, 0.2]}}",
     "tune.searcher optuna samples; it cannot enumerate grid: optimizer.lr (write choice: instead)"),
    ("data: {val: null}", "tune.metric: bbox_mAP_50 is computed on data.val, which this config does not have"),
    ("tune: {metric: segm_mAP}", "tune.metric: segm_mAP scores masks, which this config's FCOS does not make"),
    ("tune: {trial: {num_gpus: 1}}", "tune.trial"),
])
def test_a_bad_sweep_is_one_error_line_before_any_trial(tmp_path, small_shapes, capsys, text, message):
    path = sweep_file(tmp_path, small_shapes, text)
    code, out, err = tune_cli(capsys, path, "--check")
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert message in err


@pytest.mark.timeout(60)
def test_a_choice_that_fails_names_every_chosen_value(tmp_path, small_shapes, capsys):
    """Each trial config is checked against the data too: a head for 5 classes on 3-class shapes."""
    path = sweep_file(tmp_path, small_shapes, "search:\n  _delete_: true\n"
                      "  model.bbox_head.num_classes: {choice: [3, 5]}\n  optimizer.lr: {choice: [0.1, 0.2]}\n")
    code, out, err = tune_cli(capsys, path, "--check")
    assert code == 2
    assert err.startswith("error: with model.bbox_head.num_classes=5, optimizer.lr=0.1: "), err
    assert "num_classes" in err and "3 classes" in err


@pytest.mark.timeout(60)
def test_without_optuna_the_error_names_the_extra(tmp_path, small_shapes, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)  # as if it were not installed
    path = sweep_file(tmp_path, small_shapes, "tune: {searcher: optuna}\n")
    code, out, err = tune_cli(capsys, path, "--check")
    assert code == 2
    assert "tune.searcher optuna needs Optuna, which is not installed: pip install 'raydet[optuna]'" in err


def test_a_training_config_is_not_a_sweep_and_a_sweep_does_not_train(tmp_path, small_shapes, capsys):
    from raydet.train import main as train_main

    code, out, err = tune_cli(capsys, REPO / "configs/demo/fcos_tiny_shapes.yaml", "--check")
    assert code == 2 and "no search: section" in err and "python -m raydet.train" in err
    assert train_main([str(DEMO_SWEEP), "--set", f"data.data_root={small_shapes}"]) == 2
    assert "search: is a sweep section: run this file with python -m raydet.tune" in capsys.readouterr().err


def test_a_trial_config_replaces_the_chosen_node_whole(tmp_path, small_shapes):
    sweep = load_sweep(DEMO_SWEEP, [f"data.data_root={small_shapes}"])
    config = sweep.trial_config({"model.neck": "PAFPN", "optimizer.lr": 0.002})
    assert config["model"]["neck"]["type"] == "PAFPN" and "_delete_" not in config["model"]["neck"]
    assert config["optimizer"]["lr"] == 0.002
    assert config.source_of("optimizer.lr").endswith("demo_shapes.yaml: search.optimizer.lr")
    assert config["scaling"]["num_workers"] == 1 and config["scaling"]["max_failures"] == 0  # tune.trial applied
    assert "search" not in config and "tune" not in config
    assert config["data"]["data_root"] == str(small_shapes)
    assert check_sweep(sweep)[-1].startswith("tune: max bbox_mAP_50")
