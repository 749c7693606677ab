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


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint written by ``save_checkpoint`` (tensors on the CPU); ``FileNotFoundError`` when missing."""
    data = storage.read_bytes(checkpoint_file(path))
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
