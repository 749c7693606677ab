"""Config -> objects: builds the buildable nodes of a resolved config.

Everything that turns config into objects goes through here, so every failure
becomes a ``ConfigError`` naming the file and key path (``model.neck.type``)
the user has to change.  ``check_config`` builds everything without training;
``python -m raydet.config CFG --check`` and the training launcher call it on
the driver before any worker starts.
"""
from __future__ import annotations

import os
from typing import Any

import torch

from .config import Config, ConfigError, format_key_path, import_custom_modules, parse_key_path
from .data.datasets import DetectionDataset
from .data.image_io import is_uri, join_path
from .data.problems import DataError
from .data.section import SPLITS, DataSection
from .data.transforms import Compose
from .engine.checkpoint import CheckpointSettings
from .engine.lr_schedule import LrConfig
from .engine.optim import OptimizerConfig, build_optimizer
from .engine.settings import EvaluationSettings, LogSettings, MlflowSettings, RunnerSettings, ScalingSettings
from .registry import DATASETS, MODELS, TRANSFORMS, BuildError, Registry, build_section, did_you_mean

# Plain sections, each parsed into its dataclass (defaults when absent).
SECTIONS: dict[str, type] = {
    "optimizer_config": OptimizerConfig,
    "lr_config": LrConfig,
    "runner": RunnerSettings,
    "evaluation": EvaluationSettings,
    "checkpoint_config": CheckpointSettings,
    "log_config": LogSettings,
    "scaling": ScalingSettings,
    "mlflow": MlflowSettings,
}

# Top-level keys a config may have, and what each one is.
TOP_LEVEL_KEYS = {
    "custom_imports": "modules to import so their registered components exist",
    "seed": "random seed: model initialisation, data order and augmentation",
    "model": "the detector (MODELS)",
    "data": "datasets and their pipelines (DATASETS, TRANSFORMS), batch sizes, decoding resources",
    "optimizer": "the torch optimizer (OPTIMIZERS), e.g. {type: SGD, lr: 0.02, momentum: 0.9}",
    **{key: section.__doc__.splitlines()[0] for key, section in SECTIONS.items()},
}


def lookup(config: dict, key_path: str) -> Any:
    """The value at ``key_path``; a missing key is a ``ConfigError``."""
    node: Any = config
    path = parse_key_path(key_path)
    for depth, key in enumerate(path):
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError):
            where = config.source_of(path[:depth]) if isinstance(config, Config) else "config"
            raise ConfigError(f"{where}: {format_key_path(path[: depth + 1])} is missing") from None
    return node


def build_node(config: Config, key_path: str, registry: Registry, **defaults: Any) -> Any:
    """Build the ``type:`` node at ``key_path`` from ``registry``; errors name file and key path.

    Imports the config's ``custom_imports`` first, so this works unchanged in any
    process the config was shipped to (Ray Train workers, Ray Data tasks).
    """
    import_custom_modules(config)
    node = lookup(config, key_path)
    try:
        return registry.build(node, key_path, **defaults)
    except BuildError as err:
        raise ConfigError(f"{config.source_of(err.key_path)}: {err}") from err


def build_model(config: Config) -> torch.nn.Module:
    return build_node(config, "model", MODELS)


def section(config: Config, key: str) -> Any:
    """The plain section ``key`` parsed into its dataclass (its defaults when absent)."""
    try:
        return build_section(SECTIONS[key], config.get(key), key)
    except BuildError as err:
        raise ConfigError(f"{config.source_of(err.key_path)}: {err}") from err


def optimizer_for(config: Config, model: torch.nn.Module) -> torch.optim.Optimizer:
    """The configured optimizer over ``model``'s trainable parameters."""
    try:
        return build_optimizer(model, lookup(config, "optimizer"), section(config, "optimizer_config"))
    except BuildError as err:
        raise ConfigError(f"{config.source_of(err.key_path)}: {err}") from err


def seed_of(config: Config) -> int:
    """The config's ``seed`` (0 when absent)."""
    seed = config.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ConfigError(f"{config.source_of(('seed',))}: seed: expected an int, got {seed!r}")
    return seed


def data_section(config: Config) -> DataSection:
    """The checked ``data:`` section."""
    try:
        return build_section(DataSection, lookup(config, "data"), "data")
    except BuildError as err:
        raise ConfigError(f"{config.source_of(err.key_path)}: {err}") from err


def _absolute(path: str, root: str) -> str:
    """``path`` joined to ``root`` unless it is absolute or a URI; local results made absolute."""
    joined = join_path(root, path)
    return joined if is_uri(joined) else os.path.abspath(joined)


def with_absolute_data_root(config: Config) -> Config:
    """A copy of ``config`` whose ``data.data_root`` is absolute (or a URI).

    Relative paths mean "from where you started the command"; Ray workers run in
    another working directory, so the driver resolves them before shipping the config.
    """
    if "data" not in config:
        return config
    root = _absolute(data_section(config).data_root, os.getcwd())
    return Config({**config, "data": {**config["data"], "data_root": root}}, config.filename, config.sources)


def _dataset_node(config: Config, split: str) -> dict:
    """``data.<split>`` with its ``ann_file`` / ``img_prefix`` made absolute (see ``build_dataset``)."""
    data = data_section(config)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    node = data.split(split)
    if node is None:
        raise ConfigError(f"{config.source_of(('data',))}: data.{split} is missing")
    if not isinstance(node, dict):
        raise ConfigError(f"{config.source_of(('data', split))}: data.{split}: expected a dataset mapping with 'type:', got {node!r}")
    root = _absolute(data.data_root, os.getcwd())
    import_custom_modules(config)
    return {**node, **{key: _absolute(node[key], root) for key in ("ann_file", "img_prefix") if isinstance(node.get(key), str)}}


def build_dataset(config: Config, split: str) -> DetectionDataset:
    """Build ``data.<split>`` (reads and checks its annotations) with its pipeline.

    Relative ``ann_file`` / ``img_prefix`` are joined to ``data.data_root``
    (itself relative to the current directory) and made absolute here, on the
    driver.  Bad annotations are reported per the node's ``on_bad_record``;
    with ``error`` the first one raises ``DataError``.
    """
    node = _dataset_node(config, split)
    try:
        return DATASETS.build(node, f"data.{split}")
    except BuildError as err:
        if isinstance(err.__cause__, DataError):
            raise DataError(f"data.{split}: {err.__cause__}") from None
        raise ConfigError(f"{config.source_of(err.key_path)}: {err}") from err


def check_dataset(config: Config, split: str) -> list[str]:
    """Summary lines for ``data.<split>``: the dataset built and its problems, or — when its
    annotation file is not on this machine (it lives on the cluster) — its arguments and
    pipeline checked without reading it."""
    node = _dataset_node(config, split)
    ann_file = node.get("ann_file")
    if isinstance(ann_file, str) and not is_uri(ann_file) and not os.path.exists(ann_file):
        try:
            DATASETS.check(node, f"data.{split}")
        except BuildError as err:
            raise ConfigError(f"{config.source_of(err.key_path)}: {err}") from err
        return [f"data.{split}: {node['type']} arguments and pipeline OK; {ann_file} is not on this machine, "
                "so its annotations were not read"]
    dataset = build_dataset(config, split)
    return [f"data.{split}: {type(dataset).__name__} {dataset.summary()}",
            *(f"    {line}" for line in dataset.problems.lines())]


def build_pipeline(config: Config, split: str) -> Compose:
    """Only the transforms of ``data.<split>.pipeline`` (no annotation reading: for decode workers)."""
    nodes = lookup(config, f"data.{split}").get("pipeline") or []
    if not isinstance(nodes, list):
        raise ConfigError(f"{config.where(f'data.{split}.pipeline')}: expected a list of transforms")
    return Compose([build_node(config, f"data.{split}.pipeline.{i}", TRANSFORMS) for i in range(len(nodes))])


def check_top_level_keys(config: Config) -> None:
    for key in config:
        if key not in TOP_LEVEL_KEYS:
            known = ", ".join(TOP_LEVEL_KEYS)
            raise ConfigError(
                f"{config.source_of((key,))}: {key!r} is not a raydet config key"
                f"{did_you_mean(str(key), TOP_LEVEL_KEYS)}; known keys: {known}"
            )


def check_config(config: Config) -> list[str]:
    """Build every buildable node of ``config``; one summary line per node."""
    check_top_level_keys(config)
    seed_of(config)
    lines = []
    if "model" in config:
        model = build_model(config)
        n_params = sum(p.numel() for p in model.parameters())
        lines.append(f"model: {config['model']['type']} built ({n_params:,} parameters)")
        if "optimizer" in config:
            optimizer = optimizer_for(config, model)
            lines.append(f"optimizer: {type(optimizer).__name__} over {len(optimizer.param_groups)} parameter group(s)")
    for key in SECTIONS:
        if key in config:
            lines.append(f"{key}: {section(config, key)}")
    if "data" in config:
        data = data_section(config)
        for split in SPLITS:
            if data.split(split) is not None:
                lines.extend(check_dataset(config, split))
    return lines


__all__ = ["build_node", "build_model", "build_dataset", "build_pipeline", "check_config", "data_section", "lookup",
           "optimizer_for", "section", "seed_of", "SECTIONS", "TOP_LEVEL_KEYS"]
