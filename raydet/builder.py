"""Config -> objects: builds the buildable nodes of a resolved config.

Everything that turns config into objects goes through here, so every failure
becomes a ``ConfigError`` naming the file and key path (``model.neck.type``)
the user has to change.  ``check_config`` builds everything without training;
``python -m raydet.check CFG`` and the training launcher call it on the driver
before any worker starts.

The builder is the only reader of a ``Config``: it hands built objects and
typed settings (``raydet.config.schema``) inward, so the data and engine code
never reach back up to the config.  It imports data/, models/ and the
optimizers, never engine/.
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
import os
from typing import Any, Callable

import torch

from . import storage
from .config import Config, ConfigError, format_key_path, import_custom_modules, parse_key_path
from .config.schema import SECTIONS, SPLITS, TOP_LEVEL_KEYS, DataSection
from .data.datasets import DetectionDataset
from .data.decode import BatchRecipe
from .data.problems import DataError
from .data.transforms import Compose
from .optimizers import build_optimizer
from .registry import DATASETS, MODELS, TRANSFORMS, BuildError, Registry, build_section, did_you_mean


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
    return storage.absolute(storage.join(root, path))


def _absolute_weights(node: Any) -> Any:
    """``node`` with every ``{type: Pretrained, checkpoint: <relative local path>}`` in it made absolute."""
    if isinstance(node, list):
        return [_absolute_weights(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _absolute_weights(value) for key, value in node.items()}
    if node.get("type") == "Pretrained" and isinstance(node.get("checkpoint"), str):
        node["checkpoint"] = storage.absolute(node["checkpoint"])  # URIs (torchvision://, s3://) stay as written
    return node


def with_absolute_paths(config: Config) -> Config:
    """A copy of ``config`` whose ``data.data_root`` and ``Pretrained`` weights are absolute (or URIs).

    Relative paths mean "from where you started the command"; Ray workers run in
    another working directory, so the driver resolves them before shipping the config.
    """
    resolved = dict(config)
    if "data" in config:
        resolved["data"] = {**config["data"], "data_root": _absolute(data_section(config).data_root, os.getcwd())}
    if "model" in config:
        resolved["model"] = _absolute_weights(config["model"])
    return Config(resolved, config.filename, config.sources)


def _dataset_node(config: Config, split: str) -> dict:
    """``data.<split>`` with its ``ann_file`` / ``img_prefix`` made absolute (see ``build_dataset``)."""
    data = data_section(config)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    node = data.split(split)
    if node is None:
        raise ConfigError(f"{config.source_of(('data',))}: data.{split} is missing")
    if not isinstance(node, dict):
        raise ConfigError(f"{config.source_of(('data', split))}: data.{split}: "
                          f"expected a dataset mapping with 'type:', got {node!r}")
    root = _absolute(data.data_root, os.getcwd())
    import_custom_modules(config)
    paths = {key: _absolute(node[key], root) for key in ("ann_file", "img_prefix") if isinstance(node.get(key), str)}
    return {**node, **paths}


def build_dataset(config: Config, split: str, classes: list[str] | None = None) -> DetectionDataset:
    """Build ``data.<split>`` (reads and checks its annotations) with its pipeline.

    Relative ``ann_file`` / ``img_prefix`` are joined to ``data.data_root``
    (itself relative to the current directory) and made absolute here, on the
    driver.  Bad annotations are reported per the node's ``on_bad_record``;
    with ``error`` the first one raises ``DataError``.  ``classes`` is given to
    a dataset type that takes a class list when its node names none (the
    training split's classes, so every split numbers its labels alike).
    """
    node = _dataset_node(config, split)
    if classes is not None and node.get("classes") is None and _takes_classes(node):
        node = {**node, "classes": list(classes)}
    try:
        return DATASETS.build(node, f"data.{split}")
    except BuildError as err:
        if isinstance(err.__cause__, DataError):
            raise DataError(f"data.{split}: {err.__cause__}") from None
        raise ConfigError(f"{config.source_of(err.key_path)}: {err}") from err


def _takes_classes(node: dict) -> bool:
    """Whether ``node``'s dataset type takes a ``classes`` list (and infers one when it is not given)."""
    kind = node.get("type")
    return isinstance(kind, str) and kind in DATASETS and "classes" in inspect.signature(DATASETS.get(kind)).parameters


def _needs_training_classes(config: Config, split: str) -> bool:
    """Whether ``data.<split>`` would infer its own class list (it takes ``classes`` and names none)."""
    node = data_section(config).split(split)
    return isinstance(node, dict) and node.get("classes") is None and _takes_classes(node)


def build_datasets(config: Config, splits: tuple[str, ...] = ("train", "val")) -> dict[str, DetectionDataset]:
    """Build the ``splits`` the config has, every one labelled with the training split's classes.

    A dataset that infers its classes from the names it finds (``VOCDataset``
    without ``classes:``) is given the training split's list, so a val set
    lacking a class still numbers the others as training does; a name the
    training split lacks is then reported (``unknown_category``) and dropped.
    The training split is read for its classes when only another split is
    asked for but needs them.  Splits whose classes still differ (two COCO
    files with other categories) are a ``DataError``.
    """
    present = [split for split in splits if data_section(config).split(split) is not None]
    datasets: dict[str, DetectionDataset] = {}
    train = None
    if "train" in present or any(_needs_training_classes(config, split) for split in present):
        if data_section(config).split("train") is not None:
            train = build_dataset(config, "train")
    for split in present:
        datasets[split] = train if split == "train" else build_dataset(config, split, train.classes if train else None)
    if train is not None:
        for split, dataset in datasets.items():
            if dataset.classes != train.classes:
                raise DataError(
                    f"data.{split} ({dataset.ann_file}) has the classes {dataset.classes} but data.train "
                    f"({train.ann_file}) has {train.classes}: label numbers would mean other classes in evaluation; "
                    "give every split the same categories, in the same order (or one `classes:` list)")
    return datasets


def num_classes_nodes(node: Any, path: tuple = ("model",)) -> list[tuple[tuple, int]]:
    """``(key path, value)`` of every ``num_classes`` in a model config node, depth first."""
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "num_classes":
                found.append((path + (key,), value))
            else:
                found.extend(num_classes_nodes(value, path + (key,)))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found.extend(num_classes_nodes(value, path + (index,)))
    return found


def check_num_classes(config: Config, classes: list[str], split: str = "train") -> None:
    """Every ``num_classes`` in ``model`` must be the number of ``classes`` (those of ``data.<split>``)."""
    for path, value in num_classes_nodes(config.get("model")):
        if value != len(classes):
            raise ConfigError(
                f"{config.source_of(path)}: {format_key_path(path)} is {value} but data.{split} has {len(classes)} "
                f"classes ({', '.join(classes)}); set it to {len(classes)}")


def batch_recipe(config: Config, split: str) -> BatchRecipe:
    """How ``data.<split>``'s planned batches are decoded: its pipeline, the data section's settings
    (without the dataset nodes: those are the builder's business), the seed."""
    settings = dataclasses.replace(data_section(config), train=None, val=None, test=None)
    return BatchRecipe(build_pipeline(config, split), settings, seed_of(config))


def _only(config: Config, keys: tuple[str, ...]) -> Config:
    """A config holding only the top-level ``keys`` (with where each came from)."""
    return Config({key: config[key] for key in keys if key in config}, config.filename,
                  {path: origin for path, origin in config.sources.items() if path and path[0] in keys})


def model_factory(config: Config) -> Callable[[], torch.nn.Module]:
    """``() -> model``, carrying only the ``model`` node (and ``custom_imports``): for building on a worker."""
    return functools.partial(build_model, _only(config, ("custom_imports", "model")))


def optimizer_factory(config: Config) -> Callable[[torch.nn.Module], torch.optim.Optimizer]:
    """``model -> optimizer``, carrying only the ``optimizer`` and ``optimizer_config`` nodes."""
    return functools.partial(optimizer_for, _only(config, ("custom_imports", "optimizer", "optimizer_config")))


def is_elsewhere(config: Config, split: str) -> bool:
    """Whether ``data.<split>``'s annotation file is a local path missing here (it lives on the cluster)."""
    ann_file = _dataset_node(config, split).get("ann_file")
    return isinstance(ann_file, str) and not storage.is_uri(ann_file) and not os.path.exists(ann_file)


def check_data(config: Config) -> list[str]:
    """Summary lines for every split: the datasets built (with their problems), their classes checked
    against each other and against the model's ``num_classes``.  A split whose annotation file is not
    on this machine (it lives on the cluster) has its arguments and pipeline checked without reading it."""
    data = data_section(config)
    present = [split for split in SPLITS if data.split(split) is not None]
    elsewhere = {split for split in present if is_elsewhere(config, split)}
    lines_of: dict[str, list[str]] = {}
    for split in elsewhere:
        node = _dataset_node(config, split)
        try:
            DATASETS.check(node, f"data.{split}")
        except BuildError as err:
            raise ConfigError(f"{config.source_of(err.key_path)}: {err}") from err
        lines_of[split] = [f"data.{split}: {node['type']} arguments and pipeline OK; {node['ann_file']} is not on "
                           "this machine, so its annotations were not read"]
    readable = tuple(split for split in present if split not in elsewhere)
    if "train" in elsewhere:  # the training classes are on the cluster: each split alone
        datasets = {split: build_dataset(config, split) for split in readable}
    else:
        datasets = build_datasets(config, readable)
    for split, dataset in datasets.items():
        lines_of[split] = [f"data.{split}: {type(dataset).__name__} {dataset.summary()}",
                           *(f"    {line}" for line in dataset.problems.lines())]
    lines = [line for split in present for line in lines_of[split]]
    if "train" in datasets and "model" in config:
        check_num_classes(config, datasets["train"].classes)
    elif "train" in elsewhere:
        lines.append("data: classes across splits and the model's num_classes not checked: data.train's "
                     "annotations are not on this machine")
    return lines


def build_pipeline(config: Config, split: str) -> Compose:
    """Only the transforms of ``data.<split>.pipeline`` (no annotation reading: for decode workers)."""
    nodes = lookup(config, f"data.{split}").get("pipeline") or []
    if not isinstance(nodes, list):
        raise ConfigError(f"{config.where(f'data.{split}.pipeline')}: expected a list of transforms")
    return Compose([build_node(config, f"data.{split}.pipeline.{i}", TRANSFORMS) for i in range(len(nodes))])


def check_top_level_keys(config: Config) -> None:
    for key in config:
        if key in ("search", "tune"):
            raise ConfigError(f"{config.source_of((key,))}: {key}: is a sweep section: run this file with "
                              "python -m raydet.tune (python -m raydet.train trains one config)")
        if key not in TOP_LEVEL_KEYS:
            known = ", ".join(TOP_LEVEL_KEYS)
            raise ConfigError(
                f"{config.source_of((key,))}: {key!r} is not a raydet config key"
                f"{did_you_mean(str(key), TOP_LEVEL_KEYS)}; known keys: {known}"
            )


def check_masks_match(config: Config, model: torch.nn.Module) -> None:
    """A detector with a mask head trains on masks (``data.train.with_mask: true``), one without does not;
    ``evaluation.save_best: segm_*`` needs a detector that segments."""
    segments = bool(getattr(getattr(model, "final_head", None), "with_mask", False))
    name = config["model"].get("type")
    train = (config.get("data") or {}).get("train")
    if isinstance(train, dict) and bool(train.get("with_mask", False)) != segments:
        where = config.where("data.train.with_mask")
        if segments:
            raise ConfigError(f"{where}: {name} has a mask head and trains on instance masks: set "
                              "data.train.with_mask: true (a COCO json with segmentations, e.g. "
                              "_base_/datasets/coco_instance.yaml)")
        raise ConfigError(f"{where}: {name} has no mask head, so it cannot train on masks: drop with_mask "
                          "(or use a detector with a mask head, e.g. MaskRCNN)")
    save_best = (config.get("evaluation") or {}).get("save_best", "")
    if isinstance(save_best, str) and save_best.startswith("segm_") and not segments:
        raise ConfigError(f"{config.where('evaluation.save_best')}: {save_best} needs a detector that segments; "
                          f"{name} predicts boxes only (use a bbox_* metric)")


def check_config(config: Config, data: bool = True) -> list[str]:
    """Build every buildable node of ``config`` (the datasets, reading their annotations, only with
    ``data``); one summary line per node."""
    check_top_level_keys(config)
    seed_of(config)
    lines = []
    if "model" in config:
        model = build_model(config)
        n_params = sum(p.numel() for p in model.parameters())
        lines.append(f"model: {config['model']['type']} built ({n_params:,} parameters)")
        check_masks_match(config, model)
        if "optimizer" in config:
            optimizer = optimizer_for(config, model)
            lines.append(f"optimizer: {type(optimizer).__name__} over {len(optimizer.param_groups)} parameter group(s)")
    for key in SECTIONS:
        if key in config:
            lines.append(f"{key}: {section(config, key)}")
    if data and "data" in config:
        lines.extend(check_data(config))
    return lines
