"""``models:/`` (and ``runs:/``) URIs where raydet takes a checkpoint: the model's checkpoint and config,
fetched from the MLflow store it is registered in.

    models:/shapes-fcos/3            version 3 of a registered model
    models:/shapes-fcos@champion     the version an alias points at
    models:/m-0123456789abcdef       a logged model, by its id
    runs:/<run id>/model             the model a run logged

The store is ``--tracking-uri``, else ``MLFLOW_TRACKING_URI`` (a training run's default store is
``sqlite:///<work dir>/mlflow.db``).  A version that does not exist, a store that cannot be reached, or a
model that is not raydet's is one ``UserError``.  The files are fetched into a temporary folder that lives
as long as the process (actors on this host read them; a multi-node pool needs a store every node reaches).
"""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ...errors import UserError
from ..environment import environment_defaults
from .layout import CHECKPOINT_ARTIFACT, CONFIG_ARTIFACT, RAYDET_METADATA
from .store import using_store

MODEL_URI_PREFIXES = ("models:/", "runs:/")


def is_model_uri(text: str | None) -> bool:
    return bool(text) and text.startswith(MODEL_URI_PREFIXES)


@dataclass(frozen=True)
class ModelFiles:
    """A raydet model fetched from MLflow: its ``checkpoint.pt`` and resolved ``config.yaml`` (local paths)."""

    uri: str
    checkpoint: str
    config: str


def tracking_uri_for(uri: str, given: str | None) -> str:
    """The store ``uri`` is read from: ``given``, else ``MLFLOW_TRACKING_URI``; a ``sqlite:///`` store must
    exist (MLflow would create an empty one)."""
    tracking_uri = given or os.environ.get("MLFLOW_TRACKING_URI")
    if not tracking_uri:
        raise UserError(f"{uri}: which MLflow store? Give --tracking-uri URI or set MLFLOW_TRACKING_URI (a "
                          "training run's default store is sqlite:///<its work dir>/mlflow.db)")
    if tracking_uri.startswith("sqlite:///") and not Path(tracking_uri[len("sqlite:///"):]).is_file():
        raise UserError(f"{uri}: no MLflow store at {tracking_uri} (no such file)")
    return tracking_uri


#: No progress bar (an error stays one line), and an HTTP store that does not answer fails in seconds, not after
#: MLflow's minutes of retries (unless the environment sets its own).
QUIET_AND_QUICK = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
                   "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}


def fetch_model(uri: str, tracking_uri: str | None = None) -> ModelFiles:
    """Download the raydet model ``uri`` from its store (see the module's docstring); ``UserError`` when
    it cannot."""
    import mlflow
    from mlflow.exceptions import MlflowException

    store = tracking_uri_for(uri, tracking_uri)
    folder = tempfile.mkdtemp(prefix="raydet-model-")
    atexit.register(shutil.rmtree, folder, True)
    try:
        # the store set for the process while it downloads: download_artifacts's registry_uri misses models:/
        with environment_defaults(QUIET_AND_QUICK), using_store(store):
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=folder))
    except MlflowException as err:
        reason = str(err.message if hasattr(err, "message") else err).strip().splitlines()[0]
        if err.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise UserError(f"{uri}: no such model in {store} ({reason})") from None
        raise UserError(f"{uri}: cannot be read from {store}: {reason}") from None
    except Exception as err:  # noqa: BLE001 — a store that cannot be reached fails in many ways (requests, OS)
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise UserError(f"{uri}: cannot be read from {store}: {reason}") from None
    return _raydet_files(uri, local)


def _raydet_files(uri: str, local: Path) -> ModelFiles:
    """The checkpoint and config of a downloaded model folder; ``UserError`` unless it is raydet's."""
    import yaml

    mlmodel = local / "MLmodel"
    metadata = (yaml.safe_load(mlmodel.read_text()) or {}).get("metadata") or {} if mlmodel.is_file() else {}
    checkpoint, config = local / "artifacts" / CHECKPOINT_ARTIFACT, local / "artifacts" / CONFIG_ARTIFACT
    if RAYDET_METADATA not in metadata or not checkpoint.is_file() or not config.is_file():
        raise UserError(f"{uri} is not a raydet model (raydet's models hold artifacts/{CHECKPOINT_ARTIFACT} "
                          f"and artifacts/{CONFIG_ARTIFACT}; python -m raydet.train logs them)")
    return ModelFiles(uri, str(checkpoint), str(config))
