"""What every raydet command line shares: the ``CFG [--set k=v ...]`` arguments.

Errors are reported by ``raydet.errors.report_user_errors``: a user error
(bad config, bad data, missing file) is one ``error: ...`` line on stderr and
exit code 2 — never a traceback.
"""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from .config import Config, load_config

if TYPE_CHECKING:  # the command lines import torch only once they run
    import torch


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="YAML config file")
    parser.add_argument(
        "--set", dest="overrides", metavar="KEY=VALUE", action="extend", nargs="+", default=[],
        help="override a config key (VALUE is parsed as YAML; a.list.0.b indexes lists); "
        "prefix the key with + to add a key the config does not have",
    )


def config_from_args(args: argparse.Namespace) -> Config:
    return load_config(args.config, args.overrides)


def add_checkpoint_arguments(parser: argparse.ArgumentParser) -> None:
    """``CHECKPOINT`` (a file, or an MLflow model with its config: then ``CFG`` may be left out), its store, and
    the actor pool that runs it (``raydet.test``, ``raydet.infer``)."""
    parser.add_argument("checkpoint", nargs="?",
                        help="checkpoint.pt or its folder: a path or a URI (s3://…, gs://…); or an MLflow model: "
                             "models:/NAME/VERSION, models:/NAME@ALIAS, models:/MODEL_ID, runs:/RUN_ID/model "
                             "(CFG may then be left out: the model carries its config)")
    parser.add_argument("--tracking-uri", help="the MLflow store of a models:/ or runs:/ CHECKPOINT "
                                               "(default: MLFLOW_TRACKING_URI)")
    parser.add_argument("--num-workers", type=int, default=1, help="model replicas (Ray actors) predicting at once")
    parser.add_argument("--use-gpu", action="store_true", help="one GPU per model replica")


def resolve_model_arguments(args: argparse.Namespace, rest: str | None = None) -> None:
    """An MLflow model as ``CHECKPOINT``: fetch it, in place of the argument, its checkpoint file; with ``CFG``
    left out (the model's URI is then the first positional, and the others move up one, into ``rest``, a
    list argument such as ``raydet.infer``'s inputs), its config becomes ``CFG``."""
    from .config import ConfigError
    from .engine.mlflow_models.model_uri import fetch_model, is_model_uri

    if is_model_uri(args.config):
        if rest is not None and args.checkpoint is not None:
            setattr(args, rest, [args.checkpoint, *getattr(args, rest)])
        elif args.checkpoint is not None:
            raise ConfigError(f"{args.checkpoint}: give CFG first, then CHECKPOINT ({args.config} is a model)")
        args.config, args.checkpoint = None, args.config
    if args.checkpoint is None:
        raise ConfigError("CHECKPOINT is missing: give CFG CHECKPOINT, or an MLflow model (models:/NAME/VERSION) "
                          "alone")
    if is_model_uri(args.checkpoint):
        fetched = fetch_model(args.checkpoint, args.tracking_uri)
        args.checkpoint = fetched.checkpoint
        args.config = args.config or fetched.config


def check_checkpoint(model: torch.nn.Module, config_yaml: str, checkpoint: str, num_workers: int) -> None:
    """``ConfigError`` unless ``checkpoint`` exists and restores ``model`` (the config's, as ``check_config``
    built it, from ``config_yaml``; checked here, once, before an actor pool starts: one clear error, not one
    per actor), and ``num_workers >= 1``."""
    from . import storage
    from .config import ConfigError
    from .engine.checkpoint import CheckpointError, OtherModelCheckpoint, load_checkpoint_of

    if num_workers < 1:
        raise ConfigError(f"--num-workers must be at least 1, got {num_workers}")
    try:
        load_checkpoint_of(checkpoint, model, config_yaml)
    except FileNotFoundError:
        raise ConfigError(f"checkpoint not found: {checkpoint}") from None
    except OSError as err:  # permissions, the network, a store that refused
        raise ConfigError(f"cannot read checkpoint {checkpoint}: {storage.describe(err)}") from None
    except OtherModelCheckpoint as err:
        raise ConfigError(f"{checkpoint} is {err}") from None
    except CheckpointError as err:
        raise ConfigError(str(err)) from None


def check_gpus(num_workers: int, use_gpu: bool) -> None:
    """With ``use_gpu``, on a Ray started by this process (no autoscaler): ``ConfigError`` when it has fewer
    GPUs than ``num_workers`` (an actor pool would wait for them forever).  On a cluster (``RAY_ADDRESS``)
    the autoscaler may still add them."""
    import os
    import sys

    import ray

    from .config import ConfigError

    gpus = ray.cluster_resources().get("GPU", 0)
    if not use_gpu or gpus >= num_workers:
        return
    have = f"{gpus:g} GPU{'' if gpus == 1 else 's'}"
    if not os.environ.get("RAY_ADDRESS"):
        raise ConfigError(f"--use-gpu --num-workers {num_workers}: one GPU per model replica, but this Ray has "
                          f"{have}; lower --num-workers or drop --use-gpu")
    print(f"waiting for GPUs: --num-workers {num_workers} with --use-gpu needs one each and the cluster has {have} "
          "now; its autoscaler must add them (Ctrl+C to stop)", file=sys.stderr)


def labelled(label: str, lines: list[str]) -> list[str]:
    """``lines`` under one label in a CLI's closing summary: ``"  MLflow:      first"``, the rest aligned."""
    return [f"  {label if i == 0 else '':<13}{line}" for i, line in enumerate(lines)]
