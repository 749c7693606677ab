"""Training checkpoints: one ``checkpoint.pt`` holding everything needed to resume.

Loaded with ``torch.load(weights_only=True)``: a checkpoint from somewhere else
cannot run code.  The resolved config travels inside as YAML text: a record of
what was trained (``python -m raydet.test`` builds the model from its CFG argument).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

CHECKPOINT_FILE = "checkpoint.pt"


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside a DistributedDataParallel wrapper (or the model itself)."""
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def save_checkpoint(directory: str | os.PathLike, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: Any, scaler: Any, epoch: int, iteration: int, config_yaml: str,
                    **extra: Any) -> Path:
    """Write ``directory/checkpoint.pt``; ``epoch`` is the number of finished epochs."""
    path = Path(directory) / CHECKPOINT_FILE
    torch.save({
        "model": unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "epoch": epoch,
        "iteration": iteration,
        "config": config_yaml,
        **extra,
    }, path)
    return path


def checkpoint_file(path: str | os.PathLike) -> Path:
    """``path`` itself, or ``path/checkpoint.pt`` when ``path`` is a checkpoint directory."""
    path = Path(path)
    return path / CHECKPOINT_FILE if path.is_dir() else path


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint written by ``save_checkpoint`` (tensors on the CPU)."""
    return torch.load(checkpoint_file(path), map_location="cpu", weights_only=True)
