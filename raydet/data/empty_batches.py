"""Training batches that come out empty, Ray-free: every planned step still yields a batch.

A planned batch loses an image that turns out unusable while decoding, and
every image when all of them are.  Such an empty batch still counts as a
step: each rank takes the same number of steps (DDP's all-reduce runs once
per step on every rank), so a neighbouring batch is yielded in its place —
the previous one, or the next one when there is no previous one yet.
"""
from __future__ import annotations

from typing import Iterable, Iterator

from .collate import Batch
from .problems import DataError, ProblemReport


def replace_empty_batches(batches: Iterable[Batch], problems: ProblemReport) -> Iterator[tuple[Batch, bool]]:
    """One ``(batch, repeated)`` per batch of ``batches``, in order: a batch with images as it is
    (``repeated`` false); an empty one (no ``img_metas``) replaced by the previous batch, or by the
    next batch with images when none came before (``repeated`` true).

    Raises:
        DataError: every batch was empty (nothing to yield in their place); the message counts the
            batches and sums up ``problems`` (what made them empty).
    """
    previous: Batch | None = None
    owed = 0  # empty batches before the first batch with images
    steps = 0
    for batch in batches:
        steps += 1
        if batch["img_metas"]:
            yield batch, False
            for _ in range(owed):
                yield batch, True
            previous, owed = batch, 0
        elif previous is None:
            owed += 1
        else:
            yield previous, True
    if owed:
        raise DataError(f"every image in this worker's {steps} batches was unusable: {problems.short()}")
