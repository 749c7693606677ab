"""Decoding, Ray-free: a record -> an augmented ``Sample``; a planned batch -> a collated ``Batch``.

The one place where images are read, decoded and transformed: one record at
a time (``prepare_sample``: a dataset's ``records[i]`` with its ``pipeline``,
e.g. in a DataLoader) or one planned batch at a time (``decode_planned_batch``:
the Ray Data tasks of ``raydet.data.ray_stream``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torchvision.transforms.v2.functional as tvf

from ..config.schema import DataSection
from .collate import Batch, collate
from .crash_journal import CRASHES_BEFORE_SKIPPING, image_key, process_journal
from .image_io import ImageError
from .problems import ProblemReport
from .records import Record, record_at, table_has_masks
from .sample import Sample, load_sample
from .transforms import Compose, Normalize, Pad, Transform


@dataclass(frozen=True)
class BatchRecipe:
    """How one split's planned batches become ``Batch``es; built from the config by ``raydet.builder.batch_recipe``.

    Attributes:
        pipeline: the split's transforms after decoding.
        data: the ``data:`` section (batch sizes, padding multiple, decode resources).
        seed: the config's seed (with epoch and slot it seeds each image's augmentation).
    """

    pipeline: Compose
    data: DataSection
    seed: int


def prepare_sample(record: Record, pipeline: Compose, rng: np.random.Generator,
                   problems: ProblemReport | None = None, with_masks: bool = True) -> Sample:
    """Read and decode ``record``'s image (and masks, unless ``with_masks`` is false) and run ``pipeline``
    on it (raises ``ImageError`` for a bad image)."""
    return pipeline(load_sample(record, problems, with_masks), rng)


def normalize_at_arrival(pipeline: Compose) -> tuple[Compose, Normalize | None]:
    """``(the pipeline without its Normalize, that Normalize)`` when normalising can wait for the collated
    batch's arrival (``raydet.data.collate.to_device``) with the same result: the ``Normalize`` is followed only
    by ``Pad``s filling 0 and preceded by no ``Pad`` (so what lies outside each image's ``img_shape`` is padding,
    0 after normalising).  Otherwise ``(pipeline, None)``: the batch is normalised here, as before."""
    kinds = [type(transform) for transform in pipeline.transforms]
    if kinds.count(Normalize) != 1:
        return pipeline, None
    at = kinds.index(Normalize)
    head, tail = pipeline.transforms[:at], pipeline.transforms[at + 1:]
    if any(isinstance(t, Pad) for t in head) or not all(isinstance(t, Pad) and t.pad_val == 0 for t in tail):
        return pipeline, None
    return Compose(head + [PaddedByCollate(pad) for pad in tail]), pipeline.transforms[at]


class PaddedByCollate(Transform):
    """A last ``Pad`` filling 0 whose pixels ``collate``'s zero-filled batch writes anyway: it records
    ``pad_shape`` and pads the masks (whose frame that is), not the image (a copy of every image less)."""

    def __init__(self, pad: Pad):
        self.pad = pad

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        height, width = sample.pad_shape
        pad_h, pad_w = self.pad.padded_shape(height, width)
        sample.map_masks(lambda masks: tvf.pad_mask(masks, [0, 0, pad_w - masks.shape[-1], pad_h - masks.shape[-2]]))
        sample.pad_shape = (pad_h, pad_w)
        return sample


def decode_planned_batch(records: pa.Table, indices: np.ndarray, seeds: np.ndarray, pipeline: Compose,
                         size_divisor: int, with_gt: bool) -> tuple[Batch, ProblemReport]:
    """One planned batch: the records at ``indices`` (``[B]``, ``-1`` = empty slot), each augmented with
    ``numpy.random.default_rng(seeds[i])``, collated and padded to a multiple of ``size_divisor``.  Where
    ``normalize_at_arrival`` allows, ``img`` stays uint8 and the batch carries ``img_norm``: normalised by
    ``to_device`` where it is used (``raydet.data.collate``).

    A corrupt or missing image is left out of the batch and reported in the returned ``ProblemReport``
    (the batch then holds fewer images; it may hold none); so is one that crashed the processes preparing it
    (``raydet.data.crash_journal``: Ray's retry of this task skips it).  Records with masks give ``gt_masks`` with
    ``with_gt`` (every batch of such records, even an empty one); without it their masks are not decoded.
    """
    pipeline, normalize = normalize_at_arrival(pipeline)
    samples, problems = [], ProblemReport()
    journal = process_journal()
    journal.collect()
    for index, seed in zip(indices, seeds):
        if index < 0:
            continue
        record = record_at(records, int(index))
        key = image_key(record["path"])
        crashes = journal.crashes(key)
        if crashes >= CRASHES_BEFORE_SKIPPING:
            problems.add("crashed_decoder", f"image {record['image_id']}",
                         f"{_name(record['path'])} crashed the process preparing it {crashes} times "
                         "(a native crash while decoding or transforming it); skipped")
            continue
        try:
            with journal.preparing(key, suspect=crashes > 0):
                samples.append(prepare_sample(record, pipeline, np.random.default_rng(int(seed)), problems, with_gt))
        except ImageError as err:
            problems.add(err.kind, f"image {record['image_id']}", str(err))
    batch = collate(samples, size_divisor, with_gt, with_mask=with_gt and table_has_masks(records))
    if normalize is not None:
        batch["img_norm"] = {"mean": list(normalize.mean), "std": list(normalize.std), "to_bgr": normalize.to_bgr}
    return batch, problems


def _name(path: str | bytes) -> str:
    return path if isinstance(path, str) else f"an image of {len(path)} bytes held in the record"
