"""The Ray edge: planned, seeded streams of collated batches; corrupt images mid-epoch; sharding over 2 workers."""
from __future__ import annotations

import json
import logging
import shutil
import sys

import numpy as np
import pytest
import ray
import torch

from raydet.builder import batch_recipe, build_dataset, build_datasets
from raydet.config.parsed import parse_config
from raydet.data.collate import to_device
from raydet.data.sampling import aspect_groups, train_steps_per_epoch
from tests.data.data_helpers import shapes_config


def stream_ids(batches) -> list[list[int]]:
    return [[m["image_id"] for m in batch["img_metas"]] for batch in batches]


@pytest.fixture(scope="module")
def shapes_records(ray_session, shapes_dir):
    config = shapes_config(shapes_dir)
    return config, ray_session.put(build_dataset(config, "train").table())


@pytest.mark.timeout(180)
def test_train_stream_is_seeded_reshuffled_per_epoch_and_grouped_by_aspect(shapes_records):
    from raydet.data.ray_stream import train_stream
    from raydet.data.stream_runner import process_stream_runner

    config, records = shapes_records
    recipe = batch_recipe(config, "train")
    stream = train_stream(recipe, records, epoch=0)
    first, again = list(stream), list(train_stream(recipe, records, epoch=0))
    table = ray.get(records)
    groups = aspect_groups(table["height"].to_numpy(), table["width"].to_numpy())
    assert len(first) == len(stream) == train_steps_per_epoch(groups, 4, 1)
    assert stream_ids(first) == stream_ids(again)
    for a, b in zip(first, again):
        assert torch.equal(a["img"], b["img"]) and a["img_metas"] == b["img_metas"]  # same augmentations too
    next_epoch = stream_ids(train_stream(recipe, records, epoch=1))
    assert next_epoch != stream_ids(first)
    assert set(sum(next_epoch, [])) == set(sum(stream_ids(first), [])) == set(range(1, 17))  # every image, each epoch
    for batch in first:  # uint8 pixels on the way, normalised where they arrive
        assert batch["img"].dtype == torch.uint8 and to_device(batch)["img"].dtype == torch.float32
        assert batch["img"].shape[-1] % 32 == 0 and batch["img"].shape[-2] % 32 == 0
        landscape = {m["ori_shape"][1] > m["ori_shape"][0] for m in batch["img_metas"]}
        assert len(landscape) == 1  # one aspect-ratio group per batch
        assert len(batch["gt_bboxes"]) == len(batch["gt_labels"]) == len(batch["img_metas"])
    # the runner that ran these pipelines never loaded torch (the decode tasks did)
    runner = process_stream_runner()
    loaded = ray.get(runner.__ray_call__.remote(lambda _: sorted({"torch", "torchvision"} & set(sys.modules))))
    assert loaded == []


@pytest.mark.timeout(180)
def test_eval_stream_shares_out_every_image_exactly_once(ray_session, shapes_dir):
    from raydet.data.ray_stream import eval_stream

    config = shapes_config(shapes_dir)
    records = ray_session.put(build_dataset(config, "val").table())
    seen = []
    for rank in range(4):
        batches = list(eval_stream(batch_recipe(config, "val"), records, rank, world_size=4))
        assert all(set(batch) == {"img", "img_metas", "img_norm"} for batch in batches)
        seen += sum(stream_ids(batches), [])
    assert sorted(seen) == list(range(1, 7))


@pytest.mark.parametrize("per_gpu", [4, 1])
@pytest.mark.timeout(180)
def test_corrupt_image_mid_epoch_is_skipped_with_a_warning_and_the_step_count_holds(ray_session, shapes_dir, tmp_path,
                                                                                   per_gpu, caplog):
    from raydet.data.ray_stream import train_stream

    data = tmp_path / "shapes"
    shutil.copytree(shapes_dir, data)
    (data / "images/train_000004.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)  # image id 5, not decodable
    config = shapes_config(data, f"data.samples_per_gpu={per_gpu}")
    stream = train_stream(batch_recipe(config, "train"), build_dataset(config, "train").table(), epoch=0)
    with caplog.at_level(logging.WARNING, logger="raydet.data.ray_stream"):
        batches = list(stream)
    assert len(batches) == len(stream)
    ids = sum(stream_ids(batches), [])
    assert 5 not in ids and set(ids) == set(range(1, 17)) - {5}
    planned = int((stream.plan == 4).sum())  # record 4 is image id 5; a group's fill-up may repeat it
    assert stream.problems.counts == {"corrupt_image": planned}
    assert "image 5" in stream.problems.examples["corrupt_image"][0]
    assert any("corrupt_image" in record.message for record in caplog.records)
    if per_gpu == 1:
        assert stream.repeated_batches == planned  # its batch was empty: a neighbour was yielded twice
    else:
        assert stream.repeated_batches == 0
        assert sorted(len(b["img_metas"]) for b in batches) == sorted(int((row != 4).sum()) for row in stream.plan)


@pytest.mark.timeout(120)
def test_an_error_inside_the_decode_tasks_reaches_the_training_loop(ray_session, shapes_dir):
    from raydet.data.ray_stream import train_stream

    config = shapes_config(shapes_dir, "data.train.pipeline.3={type: Pad, size_divisor: null, size: [16, 16]}")
    with pytest.raises(Exception, match="smaller than the"):
        list(train_stream(batch_recipe(config, "train"), build_dataset(config, "train").table(), epoch=0))


@pytest.mark.timeout(120)
def test_share_records_puts_every_split_in_the_object_store_and_a_summary(ray_session, shapes_dir, capsys):
    from raydet.data.shared_records import share_records

    config = shapes_config(shapes_dir)
    samples_per_gpu = parse_config(config).data.samples_per_gpu
    records, summary = share_records(build_datasets(config), samples_per_gpu)
    train = ray.get(records["train"])
    assert set(records) == {"train", "val"} and train.num_rows == 16 and ray.get(records["val"]).num_rows == 6
    assert train["image_id"].to_pylist() == sorted(train["image_id"].to_pylist())
    assert "data.train: CocoDataset" in capsys.readouterr().out
    assert summary.metrics()["data/val/images"] == 6
    assert summary.splits["train"].classes == ["rectangle", "ellipse", "triangle"]
    sizes = summary.splits["train"].group_sizes
    assert sum(sizes) == 16 and summary.train_steps_per_epoch(1) == sum(-(-n // 4) for n in sizes)
    assert summary.train_steps_per_epoch(2) == -(-summary.train_steps_per_epoch(1) // 2)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_torch_trainer_workers_get_equal_reshuffled_shares_and_see_val_once(ray_session, shapes_dir, tmp_path):
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from raydet.data.shared_records import share_records

    def train_loop(loop_config):  # defined here: Ray pickles it by value
        import ray.train

        from raydet.data.ray_stream import iter_eval_batches, iter_train_batches

        def ids(batches):
            return [[m["image_id"] for m in batch["img_metas"]] for batch in batches]

        recipes, records, out = loop_config["recipes"], loop_config["records"], loop_config["out"]
        seen = {"steps": [], "epochs": []}
        for epoch in range(2):
            batches = iter_train_batches(recipes["train"], records["train"], epoch)
            seen["steps"].append(len(batches))
            seen["epochs"].append(ids(batches))
        seen["val"] = sum(ids(iter_eval_batches(recipes["val"], records["val"])), [])
        with open(f"{out}/rank{ray.train.get_context().get_world_rank()}.json", "w") as stream:
            json.dump(seen, stream)

    config = shapes_config(shapes_dir, "data.samples_per_gpu=3")
    records, summary = share_records(build_datasets(config), 3, verbose=False)
    recipes = {split: batch_recipe(config, split) for split in ("train", "val")}
    trainer = TorchTrainer(
        train_loop, train_loop_config={"recipes": recipes, "records": records, "out": str(tmp_path)},
        scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 0.5}),
        run_config=RunConfig(storage_path=str(tmp_path / "runs"), name="sharding"),
    )
    trainer.fit()
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    steps = summary.train_steps_per_epoch(2)
    for epoch in range(2):
        assert [r["steps"][epoch] for r in ranks] == [steps, steps]
        assert [len(r["epochs"][epoch]) for r in ranks] == [steps, steps]  # the steps announced are the steps yielded
        assert set(sum(ranks[0]["epochs"][epoch] + ranks[1]["epochs"][epoch], [])) == set(range(1, 17))
    assert ranks[0]["epochs"][0] != ranks[0]["epochs"][1]  # reshuffled per epoch
    assert sorted(ranks[0]["val"] + ranks[1]["val"]) == list(range(1, 7))  # none lost, none twice


def test_decode_tasks_grow_1_2_4_then_batches_per_task_and_cover_every_step_once():
    from raydet.data.ray_stream import task_bounds

    assert task_bounds(0, 8).tolist() == [0]
    assert task_bounds(1, 8).tolist() == [0, 1]
    assert task_bounds(7, 8).tolist() == [0, 1, 3, 7]
    assert task_bounds(40, 8).tolist() == [0, 1, 3, 7, 15, 23, 31, 39, 40]
    assert task_bounds(5, 1).tolist() == [0, 1, 2, 3, 4, 5]
    for steps in range(0, 50):
        bounds = task_bounds(steps, 4)
        assert bounds[0] == 0 and bounds[-1] == steps and (np.diff(bounds) >= 1).all() and (np.diff(bounds) <= 4).all()
