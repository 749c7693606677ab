"""Training batches that come out empty: a neighbour takes each one's step, without Ray."""
from __future__ import annotations

import subprocess
import sys

import pytest

from raydet.data.empty_batches import replace_empty_batches
from raydet.data.problems import DataError, ProblemReport
from tests.helpers import REPO


def batch(*image_ids: int) -> dict:
    return {"img_metas": [{"image_id": image_id} for image_id in image_ids]}


def yielded(batches: list[dict]) -> list[tuple[list[int], bool]]:
    return [([meta["image_id"] for meta in found["img_metas"]], repeated)
            for found, repeated in replace_empty_batches(batches, ProblemReport())]


def test_batches_with_images_pass_as_they_are():
    assert yielded([batch(1, 2), batch(3)]) == [([1, 2], False), ([3], False)]
    assert yielded([]) == []


def test_an_empty_batch_repeats_the_previous_one():
    assert yielded([batch(1), batch(), batch(), batch(4)]) == [([1], False), ([1], True), ([1], True), ([4], False)]


def test_empty_first_batches_repeat_the_first_one_with_images():
    assert yielded([batch(), batch(), batch(3), batch(), batch(5)]) == [
        ([3], False), ([3], True), ([3], True), ([3], True), ([5], False)]


def test_every_step_yields_one_batch():
    for pattern in ["x..x", "..x.", ".x", "x.", "x", "xx.x..x"]:
        batches = [batch(i) if mark == "x" else batch() for i, mark in enumerate(pattern)]
        assert len(yielded(batches)) == len(pattern), pattern
        assert sum(repeated for _, repeated in yielded(batches)) == pattern.count("."), pattern


def test_every_batch_empty_raises_naming_the_count_and_the_problems():
    problems = ProblemReport()
    problems.add("corrupt_image", "image 5", "cannot decode")
    with pytest.raises(DataError, match=r"every image in this worker's 3 batches was unusable: .*corrupt_image"):
        list(replace_empty_batches([batch(), batch(), batch()], problems))


@pytest.mark.timeout(120)
def test_the_module_does_not_import_ray():
    code = ("import sys, raydet.data.empty_batches\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'ray'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
