"""The launcher's check phase, without Ray: what a run must have, and which error comes first."""
from __future__ import annotations

import pytest

from raydet.config import ConfigError, load_config
from raydet.config.parsed import parse_config
from raydet.engine.launcher import check_run
from tests.demo_helpers import DEMO_CONFIG, quick_overrides


@pytest.mark.timeout(60)
@pytest.mark.parametrize("key", ["optimizer", "model"])
def test_a_run_without_a_model_or_an_optimizer_fails_in_the_check(key, small_shapes):
    config = load_config(DEMO_CONFIG, quick_overrides(small_shapes))
    del config[key]
    with pytest.raises(ConfigError, match=f"^{DEMO_CONFIG.resolve()}: {key} is missing$"):
        check_run(parse_config(config), resume=None, num_workers=None, use_gpu=None)


@pytest.mark.timeout(60)
def test_a_missing_resume_checkpoint_is_said_before_the_annotations_are_read(tmp_path):
    config = load_config(DEMO_CONFIG, [f"data.data_root={tmp_path / 'nowhere'}"])  # no annotation file there
    with pytest.raises(ConfigError, match="--resume .*missing.pt: checkpoint not found"):
        check_run(parse_config(config), resume=str(tmp_path / "missing.pt"), num_workers=None, use_gpu=None)


@pytest.mark.timeout(60)
def test_a_bad_worker_group_is_said_before_the_annotations_are_read(tmp_path):
    config = load_config(DEMO_CONFIG, [f"data.data_root={tmp_path / 'nowhere'}"])
    with pytest.raises(ConfigError, match="--num-workers: num_workers must be at least 0, got -1"):
        check_run(parse_config(config), resume=None, num_workers=-1, use_gpu=None)  # --num-workers -1
    with pytest.raises(ConfigError, match=r"--num-workers: num_workers \[3, 2\]: the minimum is above the maximum"):
        check_run(parse_config(config), resume=None, num_workers=(3, 2), use_gpu=None)  # --num-workers 3-2


@pytest.mark.timeout(60)
def test_an_elastic_group_plans_its_global_batch_at_its_maximum(small_shapes):
    """``--num-workers 1-3``: Ray Train's elastic scaling, the global batch of 3 workers, and a checkpoint every
    ``DEFAULT_ELASTIC_CHECKPOINT_ITERS`` iterations unless the config says otherwise."""
    from raydet.config.schema import DEFAULT_ELASTIC_CHECKPOINT_ITERS
    from raydet.engine.launcher import plan_run

    overrides = [*quick_overrides(small_shapes), "scaling.resize_check_interval_s=5"]
    parsed = parse_config(load_config(DEMO_CONFIG, overrides))
    checked, workers = check_run(parsed, None, (1, 3), None)
    assert (workers.min_workers, workers.num_workers, workers.elastic) == (1, 3, True)
    assert workers.scaling_config.elastic_resize_monitor_interval_s == 5
    assert (workers.scaling_config.min_workers, workers.scaling_config.max_workers) == (1, 3)
    spec = plan_run(parsed, checked, workers, small_shapes, None, None).spec
    assert spec.global_batch.reference_workers == 3
    assert spec.checkpoint_interval_iters == DEFAULT_ELASTIC_CHECKPOINT_ITERS
    fixed = plan_run(parsed, *check_run(parsed, None, 2, None), small_shapes, None, None).spec
    assert (fixed.global_batch.reference_workers, fixed.checkpoint_interval_iters) == (2, 0)


@pytest.mark.timeout(60)
def test_the_check_returns_the_model_and_the_datasets_it_read(small_shapes):
    checked, workers = check_run(parse_config(load_config(DEMO_CONFIG, quick_overrides(small_shapes))), None, 2, None)
    assert type(checked.model).__name__ == "FCOS"
    assert {split: len(dataset) for split, dataset in checked.datasets.items()} == {"train": 48, "val": 16}
    assert checked.lines[0].startswith("model: FCOS built") and checked.lines[-1].startswith("data.val: ")
    assert (workers.num_workers, workers.use_gpu, workers.resources) == (2, False, {"CPU": 1})
