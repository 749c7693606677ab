"""A raydet detector as an MLflow pyfunc model, loadable without raydet's command lines.

    import mlflow, pandas as pd
    model = mlflow.pyfunc.load_model("models:/shapes-fcos@champion")    # model_config={"device": "cuda"}
    images = pd.DataFrame({"image": [open(path, "rb").read() for path in paths]})
    detections = model.predict(images)

Input: a DataFrame (or a list of dicts) with one column, ``image``: each row's encoded image file (JPEG,
PNG, WebP, GIF, BMP, TIFF bytes; MLflow's signature type ``binary``, base64 in a serving request).
Output: a list of COCO results, one dict per detection: ``image_id`` (the row's position in the input),
``category_id`` (the training annotations' id), ``category`` (its name), ``bbox`` ``[x, y, w, h]`` in the
image's pixels, ``score``, and from a detector that makes masks ``segmentation``, an RLE
``{"size": [h, w], "counts": str}`` that ``pycocotools.mask.decode`` reads.  Every detection the model keeps,
as ``raydet.infer`` writes them; an image that cannot be decoded is skipped (it has no detections).

The model's artifacts are the run's checkpoint (``checkpoint.pt``), its resolved ``config.yaml`` and the
training classes (``classes.json``); ``load_context`` builds the detector from the config with raydet
(shipped with the model as code) and loads the weights: no pickled module.  Images go through the config's
test (else val) pipeline in batches of ``data.eval_samples_per_gpu``, in input order, as ``raydet.infer``
batches them, so both give the same detections.
"""
from __future__ import annotations

import json
from typing import Any

import mlflow.pyfunc
import pandas as pd

from .layout import CHECKPOINT_ARTIFACT, CLASSES_ARTIFACT, CONFIG_ARTIFACT, IMAGE_COLUMN


def eval_split(parsed) -> str:
    """The split whose pipeline new images go through: ``test`` when the config has one, else ``val``."""
    return "test" if parsed.split("test") is not None else "val"


class DetectorModel(mlflow.pyfunc.PythonModel):
    """The pyfunc flavour of a raydet detector (see the module's docstring for its input and output)."""

    def load_context(self, context) -> None:
        import torch

        from ...accel import apply_accel
        from ...builder import batch_recipe, model_factory
        from ...config import load_config
        from ...config.parsed import parse_config
        from ..checkpoint import load_checkpoint

        settings = context.model_config or {}
        self.device = torch.device(settings.get("device", "cpu"))
        parsed = parse_config(load_config(context.artifacts[CONFIG_ARTIFACT]))
        with open(context.artifacts[CLASSES_ARTIFACT]) as file:
            classes = json.load(file)
        self.class_names, self.cat_ids = classes["classes"], classes["cat_ids"]
        self.recipe = batch_recipe(parsed, eval_split(parsed))
        model = model_factory(parsed)()
        model.load_state_dict(load_checkpoint(context.artifacts[CHECKPOINT_ARTIFACT])["model"])
        self.model = apply_accel(model.to(self.device).eval(), parsed.accel)

    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> list[dict]:
        """``model_input``'s ``image`` column (encoded image files) -> COCO results with ``category``."""
        images = _encoded_images(model_input)
        return predict_images(self.model, self.recipe, images, self.class_names, self.cat_ids, self.device)


def _encoded_images(model_input: pd.DataFrame | list[dict]) -> list[bytes]:
    """The ``image`` column of a DataFrame (or of a list of dicts, called directly), as bytes."""
    if isinstance(model_input, pd.DataFrame):
        return [bytes(value) for value in model_input[IMAGE_COLUMN]]
    return [bytes(row[IMAGE_COLUMN]) for row in model_input]


def predict_images(model, recipe, images: list[bytes], class_names: list[str], cat_ids: list[int],
                   device) -> list[dict]:
    """COCO results (with ``category``) of encoded ``images``: decoded and transformed by ``recipe`` in
    batches of ``eval_samples_per_gpu``, in order, then detected by ``model`` (eval mode, on ``device``)."""
    import numpy as np

    from ...data.coco_writer import detections_to_coco
    from ...data.decode import decode_planned_batch
    from ...data.records import make_record, records_to_table
    from ...data.sampling import augment_seeds
    from ..evaluation import predict

    if not images:
        return []
    batch = recipe.data.eval_samples_per_gpu
    plan = np.full((-(-len(images) // batch), batch), -1, np.int64)
    plan.flat[: len(images)] = np.arange(len(images))
    seeds = augment_seeds(recipe.seed, 0, plan.shape)  # as raydet.infer seeds them (eval pipelines draw none)
    records = records_to_table([make_record(i, image, 0, 0) for i, image in enumerate(images)])
    found = []
    for indices, batch_seeds in zip(plan, seeds):
        decoded, _ = decode_planned_batch(records, indices, batch_seeds, recipe.pipeline, recipe.data.size_divisor,
                                          with_gt=False)
        if decoded["img_metas"]:
            found.extend(predict(model, [decoded], device))
    results = detections_to_coco([image_id for image_id, _ in found], [detections for _, detections in found],
                                 cat_ids)
    names = dict(zip(cat_ids, class_names))
    return [{**result, "category": names[result["category_id"]]} for result in results]
