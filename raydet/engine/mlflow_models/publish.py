"""A run's best checkpoint logged as an MLflow model linked to the run; optionally registered as a new
version of a named model, with the run's metrics and an alias.

The model is a ``DetectorModel`` pyfunc (``raydet.engine.mlflow_models.detector_model``): its artifacts are the
checkpoint, the resolved config and the training classes, and raydet's own package travels with it as code,
so ``mlflow.pyfunc.load_model`` works where raydet is not installed (its dependencies, pinned to the versions
that trained it, are the model's ``pip_requirements``).
"""
from __future__ import annotations

import importlib.metadata
import io
import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ... import storage
from .layout import CHECKPOINT_ARTIFACT, CLASSES_ARTIFACT, CONFIG_ARTIFACT, IMAGE_COLUMN, RAYDET_METADATA
from .store import using_store

#: The distributions a raydet model needs to load and predict, pinned to this environment's versions.
MODEL_REQUIREMENTS = ("torch", "torchvision", "numpy", "pillow", "pycocotools", "pyyaml", "pyarrow")
#: The metrics a registered version carries (those the run has).
VERSION_METRICS = ("bbox_mAP", "bbox_mAP_50", "bbox_mAP_75", "segm_mAP", "segm_mAP_50", "segm_mAP_75")


@dataclass(frozen=True)
class PublishedModel:
    """What ``log_detector`` made: the logged model's ``models:/<model_id>`` URI and id, and the registered
    version (None when not registered)."""

    model_uri: str
    model_id: str
    registered_name: str | None = None
    version: str | None = None


def pinned_requirements() -> list[str]:
    return [f"{name}=={importlib.metadata.version(name)}" for name in MODEL_REQUIREMENTS]


def _example_image() -> bytes:
    """A small encoded PNG: the input example logged with the model."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (120, 160, 200)).save(buffer, format="PNG")
    return buffer.getvalue()


def code_paths(config_yaml: str) -> list[str]:
    """What the model needs as code: raydet's package, and the config's ``custom_imports`` (their files or
    packages, as this process imported them), so its registered components exist where it is loaded."""
    import importlib.util

    import yaml

    from ... import __file__ as raydet_init

    paths = [str(Path(raydet_init).parent)]
    for name in (yaml.safe_load(config_yaml) or {}).get("custom_imports") or []:
        top = str(name).split(".")[0]
        spec = importlib.util.find_spec(top)
        if spec is not None and spec.origin not in (None, "built-in", "frozen"):
            origin = Path(spec.origin)
            paths.append(str(origin.parent if origin.name == "__init__.py" else origin))
    return list(dict.fromkeys(paths))


def log_detector(tracking_uri: str, run_id: str, checkpoint: str, config_yaml: str, classes: list[str],
                 cat_ids: list[int], metrics: dict[str, float], step: int = 0,
                 registered_name: str | None = None, alias: str | None = None,
                 tags: dict[str, str] | None = None) -> PublishedModel:
    """Log ``checkpoint`` (a ``checkpoint.pt``, a path or a URI) as the model ``model`` of run ``run_id``, with
    ``metrics`` (the run's final ones) at ``step``; with ``registered_name``, register it as a new version of
    that model (its metrics and ``tags`` on the version) and point ``alias`` at that version."""
    import mlflow
    import mlflow.pyfunc
    import pandas as pd
    from mlflow.models import ModelSignature
    from mlflow.tracking import MlflowClient
    from mlflow.types import ColSpec, Schema

    from .detector_model import DetectorModel

    client = MlflowClient(tracking_uri)
    with tempfile.TemporaryDirectory(prefix="raydet-model-") as folder:
        local = Path(folder)
        (local / CHECKPOINT_ARTIFACT).write_bytes(storage.read_bytes(checkpoint))
        (local / CONFIG_ARTIFACT).write_text(config_yaml)
        (local / CLASSES_ARTIFACT).write_text(json.dumps({"classes": list(classes), "cat_ids": list(cat_ids)}))
        with using_store(tracking_uri), mlflow.start_run(run_id=run_id, log_system_metrics=False):
            info = mlflow.pyfunc.log_model(
                name="model", python_model=DetectorModel(),
                artifacts={name: str(local / name) for name in (CHECKPOINT_ARTIFACT, CONFIG_ARTIFACT,
                                                                CLASSES_ARTIFACT)},
                code_paths=code_paths(config_yaml),
                signature=ModelSignature(inputs=Schema([ColSpec("binary", IMAGE_COLUMN)])),
                input_example=pd.DataFrame({IMAGE_COLUMN: [_example_image()]}),
                pip_requirements=pinned_requirements(), metadata={RAYDET_METADATA: {"classes": list(classes)}},
                step=step, model_type="object-detection")
            scores = {name: float(metrics[name]) for name in VERSION_METRICS if metrics.get(name) is not None}
            mlflow.log_metrics(scores, step=step, model_id=info.model_id)  # the model's (and its versions') metrics
    published = PublishedModel(info.model_uri, info.model_id)
    if not registered_name:
        return published
    with using_store(tracking_uri):
        version = mlflow.register_model(info.model_uri, registered_name, tags=tags or {})
    if alias:
        client.set_registered_model_alias(registered_name, alias, version.version)
    return PublishedModel(info.model_uri, info.model_id, registered_name, str(version.version))


def log_detector_or_warn(what: str, tracking_uri: str, run_id: str, checkpoint: str, *args,
                         **kwargs) -> PublishedModel | None:
    """``log_detector``; a model that cannot be logged (the store's, the registry's or the files' errors alike)
    is one warning line naming ``what`` and where its checkpoint stays, and None: the training is done."""
    try:
        return log_detector(tracking_uri, run_id, checkpoint, *args, **kwargs)
    except Exception as err:  # noqa: BLE001
        print(f"warning: {what} was not logged to MLflow ({type(err).__name__}: "
              f"{(str(err).strip().splitlines() or [''])[0]}); its checkpoint is {checkpoint}", file=sys.stderr)
        return None
