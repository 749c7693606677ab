"""Each command parses its config once: every section is built once, the YAML dumped once."""
from __future__ import annotations

from collections import Counter

import pytest

from raydet import check, registry
from raydet.config import Config, load_config
from raydet.config.schema import SECTIONS, DataSection
from raydet.engine.launcher import launch
from tests.demo_helpers import DEMO_CONFIG, quick_overrides

SECTION_CLASSES = {DataSection, *SECTIONS.values()}


@pytest.fixture
def parses(monkeypatch) -> Counter:
    """How many times each section class is parsed (``build_section``), and the config dumped as YAML."""
    counts: Counter = Counter()
    call_checked, to_yaml = registry.call_checked, Config.to_yaml

    def counting_call(factory, *args, **kwargs):
        if factory in SECTION_CLASSES:
            counts[factory.__name__] += 1
        return call_checked(factory, *args, **kwargs)

    def counting_dump(self):
        counts["to_yaml"] += 1
        return to_yaml(self)

    monkeypatch.setattr(registry, "call_checked", counting_call)
    monkeypatch.setattr(Config, "to_yaml", counting_dump)
    return counts


def once_each() -> dict[str, int]:
    return {**{cls.__name__: 1 for cls in SECTION_CLASSES}, "to_yaml": 1}


def test_the_check_command_parses_once(parses, small_shapes, capsys):
    assert check.main([str(DEMO_CONFIG), "--set", f"data.data_root={small_shapes}"]) == 0
    assert capsys.readouterr().out.endswith("config OK\n")
    assert dict(parses) == once_each()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_launch_parses_once(parses, ray_session, small_shapes, tmp_path):
    """The whole run in this process (num_workers 0: the worker loop too) parses every section once.  (Logging
    the run's MLflow model is left out: MLflow checks a logged model by loading it as any user would, from the
    model's own copy of the config.)"""
    outcome = launch(load_config(DEMO_CONFIG, [*quick_overrides(small_shapes), "scaling.num_workers=0",
                                               "mlflow.log_model=false"]), tmp_path / "run")
    assert outcome.final_metrics["iters"] == 12
    assert dict(parses) == once_each()
