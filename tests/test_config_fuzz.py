"""The config fuzzer in the suite (``tests/config_fuzz.py``; ``benchmarks/config_fuzz.py --cases N`` for
thousands): every mutated demo, Mask R-CNN and sweep config is accepted or one ``error:`` line with exit code 2,
never a traceback; the accepted training configs train one step."""
from __future__ import annotations

import json

import pytest

from tests.config_fuzz import KINDS, SOURCES, fuzz


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_fuzz_mutated_configs_are_accepted_or_one_error_line_and_accepted_ones_train(small_shapes, tmp_path):
    cases = 2 * len(SOURCES) * len(KINDS) * 4  # every kind on every source, 8 times: 264 cases
    result = fuzz(cases, seed=0, data_root=small_shapes, folder=tmp_path, train_sample=20)
    print(json.dumps({key: value for key, value in result.items() if not isinstance(value, list)}))
    assert result["broken"] == 0, "\n".join(result["broken_cases"])
    assert result["untrainable"] == [], "\n".join(result["untrainable"])
    assert result["accepted"] + result["error line"] == cases
    assert result["accepted"] >= 20 and result["trained_one_step"] >= 10
    assert result["error line"] >= cases // 2  # most mutations are mistakes, and said so
