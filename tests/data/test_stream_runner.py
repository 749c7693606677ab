"""The stream runner's one use of a Ray Data developer API: a running Dataset's finished blocks, in order."""
from __future__ import annotations

import pytest
import ray
import ray.data
from ray.data.block import BlockAccessor


@pytest.mark.timeout(120)
def test_block_refs_yield_every_block_of_a_tiny_dataset_in_order(ray_session):
    from raydet.data.stream_runner import block_refs

    dataset = ray.data.range(6, override_num_blocks=3).map_batches(lambda rows: {"id": rows["id"] * 10})
    dataset.context.execution_options.preserve_order = True
    bundles = list(block_refs(dataset))
    assert bundles and all(refs and all(isinstance(ref, ray.ObjectRef) for ref in refs) for refs in bundles)
    rows = [int(value) for refs in bundles for ref in refs
            for value in BlockAccessor.for_block(ray.get(ref)).to_numpy()["id"]]
    assert rows == [0, 10, 20, 30, 40, 50]
