"""Ray Data batch inference: a split's images decoded by Ray Data tasks, detected by an actor pool.

    rows = detections_dataset(recipes, records_ref, model_factory, checkpoint, num_workers=2, accel=accel_settings)
    for row in rows.iter_rows() if rows is not None else ():   # None: nothing to predict
        detections, problems = unpack_detections(row)
        ...   # detections: [(image_id, {"boxes": [K,4], "scores": [K], "labels": [K]})] of one batch
              # (and "masks": K COCO RLE dicts from a mask detector, as raydet.engine.evaluation.predict makes)

The batches are the evaluation plan's (``raydet.data.sampling.plan_eval`` with
one rank: aspect-sorted, every image in exactly one batch).  ``map_batches``
tasks read, decode and transform each planned batch once per recipe (one
recipe: plain inference; several: the views of test-time augmentation, e.g.
each scale unflipped and flipped), and ``map_batches`` with
``ActorPoolStrategy(size=num_workers)`` runs them through ``Detector`` actors,
each holding one model (and one GPU with ``use_gpu``).  Results stream back
batch by batch: the split is never in memory at once, only its detections.
On CPUs Ray Data fuses the two steps (their resources match): each actor
decodes its own batches, and no image goes through the object store; with
``use_gpu`` decoding stays in CPU tasks that feed the GPU actors.
"""
from __future__ import annotations

import json
import os
import pickle
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa
import ray
import ray.data
import torch

from .. import storage
from ..accel import AccelSettings, apply_accel
from ..data.collate import pack_batch, to_device, unpack_batch
from ..data.decode import BatchRecipe, decode_planned_batch
from ..data.problems import ProblemReport
from ..data.ray_stream import task_bounds
from ..data.sampling import augment_seeds, plan_eval
from ..data.transforms import Compose
from .checkpoint import load_checkpoint
from .evaluation import Detections, predict

#: Separates a view's number from a packed column's name (``"1:img"``: view 1's images).
_VIEW_SEPARATOR = ":"


def _decode_views(rows: dict[str, np.ndarray], bounds: np.ndarray, records_ref: ray.ObjectRef, plan: np.ndarray,
                  seeds: np.ndarray, pipelines: list[Compose], size_divisor: int) -> Iterator[dict[str, np.ndarray]]:
    """Ray Data task body: decode task -> each of its planned steps' batch decoded once per view
    (``pipelines``), packed into one row (columns ``"<view>:<name>"``), with the images found unusable
    (the same in every view)."""
    (task,) = rows["id"]
    records = ray.get(records_ref)
    for step in range(bounds[task], bounds[task + 1]):
        packed, skipped = {}, ProblemReport()
        for view, pipeline in enumerate(pipelines):
            batch, problems = decode_planned_batch(records, plan[step], seeds[step], pipeline, size_divisor,
                                                   with_gt=False)
            if view == 0:
                skipped = problems
            packed.update({f"{view}{_VIEW_SEPARATOR}{key}": value for key, value in pack_batch(batch).items()})
        packed["problems"] = np.array(json.dumps(skipped.to_dict()))
        yield {key: np.expand_dims(value, 0) for key, value in packed.items()}


class Detector:
    """A ``map_batches`` actor: one model, restored from ``checkpoint``, predicting packed batches.

    Args:
        build_model: ``() -> model`` (``raydet.builder.model_factory``).
        checkpoint: a ``checkpoint.pt`` or its folder, a path or a URI.
        use_gpu: run on this actor's GPU (Ray assigns one per actor).
        workers: actors in the pool: each takes its node's CPUs / ``workers`` torch threads (at least one),
            so one actor uses the whole machine, as a plain loop would, and no node is oversubscribed.
        accel: the CPU speed paths applied to the model (``raydet.accel.apply_accel``).
    """

    def __init__(self, build_model: Callable[[], torch.nn.Module], checkpoint: str, use_gpu: bool, workers: int,
                 accel: AccelSettings):
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))
        self.device = torch.device("cuda" if use_gpu else "cpu")
        model = build_model()
        model.load_state_dict(load_checkpoint(checkpoint)["model"])
        self.model = apply_accel(model.to(self.device).eval(), accel)

    def __call__(self, row: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One packed row (``_decode_views``) -> its detections (pickled ``[(image_id, Detections)]``)."""
        views: dict[int, dict[str, np.ndarray]] = {}
        for column, value in row.items():
            if _VIEW_SEPARATOR in column:
                view, key = column.split(_VIEW_SEPARATOR, 1)
                views.setdefault(int(view), {})[key] = value[0]
        batches = [unpack_batch(views[view]) for view in sorted(views)]
        if not batches[0]["img_metas"]:  # every image of the batch was unusable
            detections = []
        elif len(batches) == 1:
            detections = predict(self.model, batches, self.device)
        else:
            views = [to_device(b, self.device) for b in batches]  # each view normalised on the model's device
            detections = predict(self.model, [{"img": [v["img"] for v in views],
                                               "img_metas": [v["img_metas"] for v in views]}], self.device)
        return {"detections": np.array([pickle.dumps(detections)], dtype=object), "problems": row["problems"]}


def detections_dataset(recipes: list[BatchRecipe], records_ref: ray.ObjectRef,
                       build_model: Callable[[], torch.nn.Module], checkpoint: str, num_workers: int = 1,
                       use_gpu: bool = False, cpus_per_worker: float = 1.0,
                       plan: np.ndarray | None = None, *, accel: AccelSettings) -> ray.data.Dataset | None:
    """Every image of a split once, as a Ray Dataset not yet run: one row per batch, its ``detections``
    (pickled) and the images skipped while decoding (``problems``, JSON), both read by ``unpack_detections``;
    None when there is nothing to predict.

    Args:
        recipes: one per view (``len > 1``: test-time augmentation, merged by the model's ``aug_test``);
            batch size, padding and decode resources come from the first.
        records_ref: the split's records table in the object store.
        build_model: ``() -> model``; each of the ``num_workers`` actors builds one and loads ``checkpoint``.
        use_gpu: one GPU per actor.
        cpus_per_worker: CPUs each actor reserves.
        plan: ``[batches, batch_size]`` record indices (``-1`` = empty slot); default: the evaluation plan
            (aspect-sorted by the records' sizes).
        accel: the CPU speed paths applied to each actor's model (the config's ``accel`` section).
    """
    data = recipes[0].data
    if plan is None:
        table = ray.get(records_ref)
        plan = plan_eval(table["height"].to_numpy(), table["width"].to_numpy(), data.eval_samples_per_gpu, 1)[0]
    if not len(plan):
        return None
    seeds = augment_seeds(recipes[0].seed, 0, plan.shape)
    bounds = task_bounds(len(plan), data.batches_per_task)
    # Blocks made here (no read task: on CPUs the decoding fuses into the actors, which may hold every CPU)
    tasks = ray.data.from_items([{"id": task} for task in range(len(bounds) - 1)], override_num_blocks=len(bounds) - 1)
    dataset = tasks.map_batches(
        _decode_views, batch_size=1, num_cpus=data.decode_num_cpus,
        fn_kwargs={"bounds": bounds, "records_ref": records_ref, "plan": plan, "seeds": seeds,
                   "pipelines": [recipe.pipeline for recipe in recipes], "size_divisor": data.size_divisor},
    ).map_batches(
        Detector, batch_size=1, compute=ray.data.ActorPoolStrategy(size=num_workers),
        num_cpus=cpus_per_worker, num_gpus=1 if use_gpu else 0,
        fn_constructor_kwargs={"build_model": build_model, "checkpoint": checkpoint, "use_gpu": use_gpu,
                               "workers": num_workers, "accel": accel},
    )
    context = dataset.context
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    return dataset


def unpack_detections(row: dict) -> tuple[list[tuple[int, Detections]], ProblemReport]:
    """A row of ``detections_dataset`` -> ``([(image_id, detections)], images skipped while decoding)``."""
    return pickle.loads(row["detections"]), ProblemReport.from_dict(json.loads(str(row["problems"])))


def picture_names(paths: list[str]) -> list[str]:
    """A unique ``.png`` name per image: its file name, with a number added where two are the same."""
    names, taken = [], set()
    for path in paths:
        stem = os.path.splitext(storage.name_of(path))[0]
        name, number = f"{stem}.png", 1
        while name in taken:
            number += 1
            name = f"{stem}_{number}.png"
        taken.add(name)
        names.append(name)
    return names


_RECORDS_INDEX: dict[ray.ObjectRef, tuple[pa.Table, dict[int, int], list[str]]] = {}


def _records_index(records_ref: ray.ObjectRef) -> tuple[pa.Table, dict[int, int], list[str]]:
    """The records table, each image id's row and each row's picture name: made once per process."""
    if records_ref not in _RECORDS_INDEX:
        _RECORDS_INDEX.clear()
        table = ray.get(records_ref)
        row_of = {int(image_id): row for row, image_id in enumerate(table["image_id"].to_numpy())}
        paths = [path if isinstance(path, str) else f"image_{image_id}" for path, image_id
                 in zip(table["path"].to_pylist(), table["image_id"].to_pylist())]
        _RECORDS_INDEX[records_ref] = (table, row_of, picture_names(paths))
    return _RECORDS_INDEX[records_ref]


def _draw_pictures(rows: dict[str, np.ndarray], records_ref: ray.ObjectRef, out_dir: str, classes: list[str],
                   score_threshold: float, ground_truth: bool) -> dict[str, np.ndarray]:
    """Ray Data task body: rows of detections drawn on their original images (masks too, from a mask
    detector) and written as PNGs (``out_dir/<image file name>.png``); the rows pass on unchanged."""
    from ..data.image_io import ImageError, load_rgb
    from ..data.records import record_at
    from ..visualization import comparison_png, detections_png, ground_truth_of

    table, row_of, names = _records_index(records_ref)
    for pickled, problems in zip(rows["detections"], rows["problems"]):
        for image_id, detections in unpack_detections({"detections": pickled, "problems": problems})[0]:
            record = record_at(table, row_of[image_id])
            try:
                image = load_rgb(record["path"])
            except ImageError:  # decoded once already, unreadable since: no picture, the detections stand
                continue
            if ground_truth:
                png = comparison_png([(image, ground_truth_of(record), detections)], classes, score_threshold,
                                     size=max(image.shape[1:]))
            else:
                png = detections_png(image, detections, classes, score_threshold)
            storage.write_bytes(storage.join(out_dir, names[row_of[image_id]]), png)
    return rows


def with_pictures(dataset: ray.data.Dataset, records_ref: ray.ObjectRef, out_dir: str, classes: list[str],
                  score_threshold: float = 0.3, ground_truth: bool = False) -> ray.data.Dataset:
    """``detections_dataset``'s rows, unchanged, once Ray Data tasks have drawn each image's detections
    (score ``>= score_threshold``; ``ground_truth``: beside the record's boxes) into
    ``out_dir/<image file name>.png`` (a folder or a URI), masks filled where the detector makes them."""
    return dataset.map_batches(_draw_pictures, batch_size=1, fn_kwargs={
        "records_ref": records_ref, "out_dir": out_dir, "classes": classes, "score_threshold": score_threshold,
        "ground_truth": ground_truth})
