"""What Tune is given: the search space, the searchers (Optuna real), the trial count, what fits (no trials run)."""
from __future__ import annotations

import pytest

from raydet.tune.driver import expected_trials, param_space, trial_demand, trials_that_fit
from raydet.tune.sweep import load_sweep
from tests.helpers import REPO

DEMO_SWEEP = REPO / "configs/tune/demo_shapes.yaml"


@pytest.fixture
def demo_sweep(small_shapes):
    return load_sweep(DEMO_SWEEP, [f"data.data_root={small_shapes}"])


@pytest.mark.timeout(60)
def test_optuna_searches_whole_components_by_label(demo_sweep):
    """Optuna holds only numbers and text: it picks a neck's label, the trial builds the mapping."""
    from ray.tune.search.optuna import OptunaSearch

    searcher = OptunaSearch(seed=0)
    assert searcher.set_search_properties("bbox_mAP_50", "max", param_space(demo_sweep.space, grid=False))
    suggested = [searcher.suggest(f"trial_{i}") for i in range(6)]
    assert {s["model.neck"] for s in suggested} == {"FPN", "PAFPN"}
    assert all(1e-4 <= s["optimizer.lr"] <= 1e-2 for s in suggested)
    config = demo_sweep.trial_config(suggested[0])
    assert config["model"]["neck"]["type"] == suggested[0]["model.neck"]
    assert config["model"]["neck"]["in_channels"] == [32, 64, 128]


def test_grid_searcher_enumerates_choices_and_counts_trials(demo_sweep):
    import ray.tune

    space = param_space(demo_sweep.space, grid=True)
    assert space["model.neck"] == ray.tune.grid_search(["FPN", "PAFPN"])
    assert expected_trials(demo_sweep) == 4  # random: num_samples; choices are sampled
    grid = load_sweep(DEMO_SWEEP, ["tune.searcher=grid", "tune.num_samples=3"])
    assert expected_trials(grid) == 3 * 2


def test_concurrency_defaults_to_what_the_cluster_holds(demo_sweep):
    demand = trial_demand(demo_sweep)
    assert demand == {"CPU": 1 + 1 + 0.1}  # one worker, one decode task, the trial function
    assert trials_that_fit({"CPU": 8.0}, demand) == 3
    assert trials_that_fit({"CPU": 1.0}, demand) == 1  # never 0: one waits for resources
    gpu = load_sweep(REPO / "configs/tune/retinanet_coco_gpu.yaml")
    demand = trial_demand(gpu)
    assert demand["GPU"] == 8 and demand["CPU"] == pytest.approx(8 * 4 + 1 + 0.1)
    assert trials_that_fit({"CPU": 128.0, "GPU": 16.0}, demand) == 2


def test_elastic_trials_are_counted_at_their_maximum(small_shapes):
    """``tune.trial.num_workers: [1, 3]``: every trial an elastic group; what fits counts its 3 workers."""
    sweep = load_sweep(DEMO_SWEEP, [f"data.data_root={small_shapes}", "tune.trial.num_workers=[1,3]"])
    assert sweep.base.scaling.num_workers == (1, 3) and sweep.base.scaling.elastic
    assert trial_demand(sweep) == {"CPU": 3 + 1 + 0.1}
    assert trials_that_fit({"CPU": 8.0}, trial_demand(sweep)) == 1
