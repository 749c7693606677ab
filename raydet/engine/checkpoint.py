"""Training checkpoints: one ``checkpoint.pt`` holding everything needed to resume.

Loaded with ``torch.load(weights_only=True)``: a checkpoint from somewhere else
cannot run code.  The resolved config travels inside as YAML text: a record of
what was trained (``python -m raydet.test`` builds the model from its CFG argument).
Checkpoints are read and written through ``raydet.storage``: a local path or a
URI (``s3://…/checkpoint_…/checkpoint.pt``, or the folder holding it).
"""
from __future__ import annotations

import io
import os
from typing import Any

import torch

from .. import storage

CHECKPOINT_FILE = "checkpoint.pt"


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside a DistributedDataParallel wrapper (or the model itself)."""
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def save_checkpoint(directory: str | os.PathLike, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: Any, scaler: Any, epoch: int, iteration: int, config_yaml: str,
                    **extra: Any) -> str:
    """Write ``directory/checkpoint.pt`` (a local folder or a URI); ``epoch`` is the number of finished epochs."""
    path = storage.join(directory, CHECKPOINT_FILE)
    buffer = io.BytesIO()
    torch.save({
        "model": unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "epoch": epoch,
        "iteration": iteration,
        "config": config_yaml,
        **extra,
    }, buffer)
    storage.write_bytes(path, buffer.getbuffer())
    return path


def checkpoint_file(path: str | os.PathLike) -> str:
    """``path`` itself, or ``path/checkpoint.pt`` when ``path`` is a checkpoint folder."""
    path = str(path)
    return storage.join(path, CHECKPOINT_FILE) if storage.is_dir(path) else path


class CheckpointError(Exception):
    """A file that is not a readable raydet checkpoint (truncated by a partial upload, garbage, another kind of
    file); the message names it and says why."""


class OtherModelCheckpoint(CheckpointError):
    """A readable checkpoint of another model; the message (``"a checkpoint of X, not of this config's Y: …"``)
    names both and the tensors that differ."""


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint written by ``save_checkpoint`` (tensors on the CPU).

    Raises:
        FileNotFoundError: nothing there.
        OSError: it cannot be read (permissions, the network).
        CheckpointError: it is not a readable raydet checkpoint.
    """
    file = checkpoint_file(path)
    data = storage.read_bytes(file)
    try:
        saved = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:  # torch.load's zip reader and unpickler raise many kinds
        first_line = str(err).splitlines()[0] if str(err) else ""
        raise CheckpointError(f"{file} is not a readable checkpoint ({len(data)} bytes; {type(err).__name__}: "
                              f"{first_line})") from None
    if not isinstance(saved, dict) or not isinstance(saved.get("model"), dict):
        raise CheckpointError(f"{file} is not a raydet checkpoint (a torch file without raydet's 'model' entry: "
                              "its weights)")
    return saved


def checkpoint_folders(run_folder: str) -> list[str]:
    """The names of a run folder's ``checkpoint_…`` folders, oldest first (Ray's names sort by time)."""
    try:
        names = storage.list_dir(run_folder)
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(name for name in names if name.startswith("checkpoint_") and not name.endswith(".json"))


def latest_checkpoint(run_folder: str) -> str | None:
    """The newest ``checkpoint_…`` folder of a run folder (Ray's names sort by time), if any."""
    names = checkpoint_folders(run_folder)
    return storage.join(run_folder, names[-1]) if names else None


def newest_readable_checkpoint(run_folder: str) -> str | None:
    """The newest checkpoint folder of a run folder that can be read (``load_newest_readable``), if any: what a
    stopped run reports, as its newest may have been cut short by the stop."""
    try:
        found = load_newest_readable(run_folder)
    except CheckpointError:
        return None
    return found[1] if found else None


def load_newest_readable(run_folder: str, newest: str | None = None) -> tuple[dict[str, Any], str, list[str]] | None:
    """The newest checkpoint of ``run_folder`` that can be read, from ``newest`` (a folder name) back: a latest
    checkpoint cut short by a partial upload gives way to the one before it.

    Returns:
        ``(checkpoint, its folder, one warning per unreadable newer checkpoint)``, or None when the run folder
        holds no checkpoint.

    Raises:
        CheckpointError: none of them can be read.
    """
    names = [name for name in checkpoint_folders(run_folder) if newest is None or name <= newest]
    warnings = []
    for name in reversed(names):
        folder = storage.join(run_folder, name)
        try:
            saved = load_checkpoint(folder)
        except (CheckpointError, FileNotFoundError) as err:
            reason = str(err) if isinstance(err, CheckpointError) else f"{checkpoint_file(folder)} is missing"
            warnings.append(f"warning: {reason} (a partial upload?); continuing from the checkpoint before it")
            continue
        return saved, folder, warnings
    if not names:
        return None
    raise CheckpointError(f"no checkpoint of {run_folder} can be read: {'; '.join(warnings)}")


def load_checkpoint_of(path: str | os.PathLike, model: torch.nn.Module, config_yaml: str) -> dict[str, Any]:
    """``load_checkpoint``, and ``OtherModelCheckpoint`` unless its weights restore ``model`` (built from
    ``config_yaml``)."""
    saved = load_checkpoint(path)
    mismatch = state_mismatch(model, saved["model"])
    if mismatch:
        raise OtherModelCheckpoint(f"a checkpoint of {model_summary(saved.get('config'))}, not of this config's "
                                   f"{model_summary(config_yaml)}: {mismatch}")
    return saved


def model_summary(config_yaml: str | None) -> str:
    """A config's model in a few words: ``"FCOS (backbone ResNet, neck FPN, bbox_head FCOSHead)"``."""
    import yaml

    if not config_yaml:
        return "a model it does not name (no config inside)"
    try:
        model = (yaml.safe_load(config_yaml) or {}).get("model") or {}
    except yaml.YAMLError:
        return "an unknown model"
    parts = [f"{key} {value['type']}" for key, value in model.items() if isinstance(value, dict) and "type" in value]
    return f"{model.get('type', 'a model')}" + (f" ({', '.join(parts)})" if parts else "")


def state_mismatch(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> str | None:
    """What stops ``state`` from restoring ``model`` (missing, unexpected and reshaped tensors, with an example
    of each), or None when it fits."""
    own = model.state_dict()
    missing = [key for key in own if key not in state]
    unexpected = [key for key in state if key not in own]
    reshaped = [key for key in own if key in state and tuple(own[key].shape) != tuple(state[key].shape)]
    parts = []
    if missing:
        parts.append(f"{len(missing)} of this model's {len(own)} tensors are not in it (e.g. {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} of its tensors have no place in this model (e.g. {unexpected[0]})")
    if reshaped:
        key = reshaped[0]
        parts.append(f"{len(reshaped)} differ in shape (e.g. {key}: {list(state[key].shape)} in the checkpoint, "
                     f"{list(own[key].shape)} in this model)")
    return "; ".join(parts) or None
