"""Config -> objects: builds the buildable nodes of a parsed config.

Everything that turns config into objects goes through here, so every failure
becomes a ``ConfigError`` naming the file and key path (``model.neck.type``)
the user has to change.  ``check_config`` is the one validation path: it
builds everything without training and returns what it built (the model, the
datasets, a line per node), which ``launch``, ``python -m raydet.check``,
sweeps and the test / infer commands reuse instead of building again.

Every function takes a ``ParsedConfig`` (``raydet.config.parsed``: a command
parses its config once and hands that on) or, for a quick call, a raw
``Config``, parsed on the spot.  The builder hands built objects and typed
settings inward, so the data and engine code never reach back up to the
config.  It imports data/, models/ and the optimizers, never engine/.
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import inspect
import os
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from . import storage
from .config import Config, ConfigError, format_key_path, import_custom_modules, parse_key_path
from .config.parsed import ParsedConfig, as_parsed, config_errors
from .config.schema import SECTIONS, SPLITS, OptimizerConfig
from .data.collate import collate
from .data.datasets import DetectionDataset
from .data.decode import BatchRecipe
from .data.problems import DataError
from .data.sample import Sample
from .data.transforms import Compose
from .optimizers import build_optimizer
from .registry import DATASETS, MODELS, TRANSFORMS, BuildError, Registry


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


def _raw(config: Config | ParsedConfig) -> Config:
    return config.config if isinstance(config, ParsedConfig) else config


def build_node(config: Config | ParsedConfig, key_path: str, registry: Registry, **defaults: Any) -> Any:
    """Build the ``type:`` node at ``key_path`` from ``registry``; errors name file and key path.

    Imports the config's ``custom_imports`` first, so this works unchanged in any
    process the config was shipped to (Ray Train workers, Ray Data tasks).
    """
    config = _raw(config)
    import_custom_modules(config)
    node = lookup(config, key_path)
    with config_errors(config):
        return registry.build(node, key_path, **defaults)


def build_model(config: Config | ParsedConfig) -> torch.nn.Module:
    return build_node(config, "model", MODELS)


def _optimizer(config: Config, settings: OptimizerConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    with config_errors(config):
        return build_optimizer(model, lookup(config, "optimizer"), settings)


def optimizer_for(config: Config | ParsedConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    """The configured optimizer over ``model``'s trainable parameters."""
    parsed = as_parsed(config)
    return _optimizer(parsed.config, parsed.optimizer_config, model)


def _dataset_node(parsed: ParsedConfig, split: str) -> dict:
    """``data.<split>`` with its ``ann_file`` / ``img_prefix`` made absolute (see ``build_dataset``)."""
    data = parsed.require_data()
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    node = data.split(split)
    if node is None:
        raise ConfigError(f"{parsed.source_of(('data',))}: data.{split} is missing")
    if not isinstance(node, dict):
        raise ConfigError(f"{parsed.source_of(('data', split))}: data.{split}: "
                          f"expected a dataset mapping with 'type:', got {node!r}")
    root = data.data_root
    import_custom_modules(parsed.config)
    paths = {key: storage.absolute(storage.join(root, node[key])) for key in ("ann_file", "img_prefix")
             if isinstance(node.get(key), str)}
    return {**node, **paths}


def build_dataset(config: Config | ParsedConfig, split: str, classes: list[str] | None = None) -> DetectionDataset:
    """Build ``data.<split>`` (reads and checks its annotations) with its pipeline.

    Relative ``ann_file`` / ``img_prefix`` are joined to ``data.data_root``
    (made absolute when the config was parsed) here, on the driver.  Bad
    annotations are reported per the node's ``on_bad_record``; with ``error``
    the first one raises ``DataError``.  ``classes`` is given to
    a dataset type that takes a class list when its node names none (the
    training split's classes, so every split numbers its labels alike).
    """
    parsed = as_parsed(config)
    node = _dataset_node(parsed, split)
    if classes is not None and node.get("classes") is None and _takes_classes(node):
        node = {**node, "classes": list(classes)}
    try:
        return DATASETS.build(node, f"data.{split}")
    except BuildError as err:
        if isinstance(err.__cause__, DataError):
            raise DataError(f"data.{split}: {err.__cause__}") from None
        raise ConfigError(f"{parsed.source_of(err.key_path)}: {err}") from err


def _takes_classes(node: dict) -> bool:
    """Whether ``node``'s dataset type takes a ``classes`` list (and infers one when it is not given)."""
    kind = node.get("type")
    return isinstance(kind, str) and kind in DATASETS and "classes" in inspect.signature(DATASETS.get(kind)).parameters


def _needs_training_classes(parsed: ParsedConfig, split: str) -> bool:
    """Whether ``data.<split>`` would infer its own class list (it takes ``classes`` and names none)."""
    node = parsed.split(split)
    return isinstance(node, dict) and node.get("classes") is None and _takes_classes(node)


def build_datasets(config: Config | ParsedConfig,
                   splits: tuple[str, ...] = ("train", "val")) -> dict[str, DetectionDataset]:
    """Build the ``splits`` the config has, every one labelled with the training split's classes.

    A dataset that infers its classes from the names it finds (``VOCDataset``
    without ``classes:``) is given the training split's list, so a val set
    lacking a class still numbers the others as training does; a name the
    training split lacks is then reported (``unknown_category``) and dropped.
    The training split is read for its classes when only another split is
    asked for but needs them.  Splits whose classes still differ (two COCO
    files with other categories) are a ``DataError``.
    """
    parsed = as_parsed(config)
    parsed.require_data()
    present = [split for split in splits if parsed.split(split) is not None]
    datasets: dict[str, DetectionDataset] = {}
    train = None
    if "train" in present or any(_needs_training_classes(parsed, split) for split in present):
        if parsed.split("train") is not None:
            train = build_dataset(parsed, "train")
    for split in present:
        datasets[split] = train if split == "train" else build_dataset(parsed, split, train.classes if train else None)
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


def check_num_classes(config: Config | ParsedConfig, classes: list[str], split: str = "train") -> None:
    """Every ``num_classes`` in ``model`` must be the number of ``classes`` (those of ``data.<split>``)."""
    config = _raw(config)
    for path, value in num_classes_nodes(config.get("model")):
        if value != len(classes):
            raise ConfigError(
                f"{config.source_of(path)}: {format_key_path(path)} is {value} but data.{split} has {len(classes)} "
                f"classes ({', '.join(classes)}); set it to {len(classes)}")


def batch_recipe(config: Config | ParsedConfig, split: str) -> BatchRecipe:
    """How ``data.<split>``'s planned batches are decoded: its pipeline, the data section's settings
    (without the dataset nodes: those are the builder's business), the seed."""
    parsed = as_parsed(config)
    settings = dataclasses.replace(parsed.require_data(), train=None, val=None, test=None)
    return BatchRecipe(build_pipeline(parsed, split), settings, parsed.seed)


def _only(config: Config, keys: tuple[str, ...]) -> Config:
    """A config holding only the top-level ``keys`` (with where each came from)."""
    return Config({key: config[key] for key in keys if key in config}, config.filename,
                  {path: origin for path, origin in config.sources.items() if path and path[0] in keys})


def model_factory(config: Config | ParsedConfig) -> Callable[[], torch.nn.Module]:
    """``() -> model``, carrying only the ``model`` node (and ``custom_imports``): for building on a worker."""
    return functools.partial(build_model, _only(as_parsed(config).config, ("custom_imports", "model")))


def optimizer_factory(config: Config | ParsedConfig) -> Callable[[torch.nn.Module], torch.optim.Optimizer]:
    """``model -> optimizer``, carrying only the ``optimizer`` node and the parsed ``optimizer_config``."""
    parsed = as_parsed(config)
    return functools.partial(_optimizer, _only(parsed.config, ("custom_imports", "optimizer")),
                             parsed.optimizer_config)


def is_elsewhere(config: Config | ParsedConfig, split: str) -> bool:
    """Whether ``data.<split>``'s annotation file is a local path missing here (it lives on the cluster)."""
    ann_file = _dataset_node(as_parsed(config), split).get("ann_file")
    return isinstance(ann_file, str) and not storage.is_uri(ann_file) and not os.path.exists(ann_file)


def _check_elsewhere(parsed: ParsedConfig, split: str) -> str:
    """Check ``data.<split>``'s arguments and pipeline without reading its annotations; its summary line."""
    node = _dataset_node(parsed, split)
    with config_errors(parsed.config):
        DATASETS.check(node, f"data.{split}")
    return (f"data.{split}: {node['type']} arguments and pipeline OK; {node['ann_file']} is not on "
            "this machine, so its annotations were not read")


def check_data(config: Config | ParsedConfig, splits: tuple[str, ...] = SPLITS,
               read_here: bool = False) -> tuple[dict[str, DetectionDataset], list[str]]:
    """``(datasets, summary lines)`` of ``splits``: the datasets built (with their problems), their classes
    checked against each other and against the model's ``num_classes``.  A split whose annotation file is
    not on this machine (it lives on the cluster) has its arguments and pipeline checked without reading
    it, unless ``read_here`` (a run that reads it here: a missing file is then its error)."""
    parsed = as_parsed(config)
    present = [split for split in splits if parsed.split(split) is not None]
    elsewhere = set() if read_here else {split for split in present if is_elsewhere(parsed, split)}
    lines_of = {split: [_check_elsewhere(parsed, split)] for split in elsewhere}
    readable = tuple(split for split in present if split not in elsewhere)
    if "train" in elsewhere:  # the training classes are on the cluster: each split alone
        datasets = {split: build_dataset(parsed, split) for split in readable}
    else:
        datasets = build_datasets(parsed, readable)
    for split, dataset in datasets.items():
        lines_of[split] = [f"data.{split}: {type(dataset).__name__} {dataset.summary()}",
                           *(f"    {line}" for line in dataset.problems.lines())]
    lines = [line for split in present for line in lines_of[split]]
    if "train" in datasets and "model" in parsed.config:
        check_num_classes(parsed, datasets["train"].classes)
    elif "train" in elsewhere:
        lines.append("data: classes across splits and the model's num_classes not checked: data.train's "
                     "annotations are not on this machine")
    return datasets, lines


def build_pipeline(config: Config | ParsedConfig, split: str) -> Compose:
    """Only the transforms of ``data.<split>.pipeline`` (no annotation reading: for decode workers)."""
    config = _raw(config)
    nodes = lookup(config, f"data.{split}").get("pipeline") or []
    if not isinstance(nodes, list):
        raise ConfigError(f"{config.where(f'data.{split}.pipeline')}: expected a list of transforms")
    return Compose([build_node(config, f"data.{split}.pipeline.{i}", TRANSFORMS) for i in range(len(nodes))])


#: The dummy image ``check_parts_fit`` trains on: large enough for a stride-128 level.
DRY_RUN_SIZE = 128


def check_parts_fit(config: Config | ParsedConfig, model: torch.nn.Module) -> None:
    """A ``ConfigError`` where the first training step would fail: the training pipeline is run on a dummy
    ``DRY_RUN_SIZE``² image with one box (and its mask, for a detector that segments) and must give a float
    image; then a copy of ``model`` makes one training forward pass (losses included, no step) on such an
    image: a neck's ``in_channels`` that are not the backbone's output channels, a head after a neck that is
    missing, a layer of 0 channels, a loss setting its function refuses."""
    from .models.detectors.base import BaseDetector

    parsed = as_parsed(config)
    if not isinstance(model, BaseDetector):  # a model of another kind trains on batches of its own
        return
    empty = [name for name, parameter in model.named_parameters() if parameter.numel() == 0]
    if empty:
        raise ConfigError(f"{parsed.config.where('model')}: {empty[0]} has no elements "
                          f"({list(dict(model.named_parameters())[empty[0]].shape)}): a layer of 0 channels")
    segments = bool(getattr(getattr(model, "final_head", None), "with_mask", False))
    train = parsed.split("train")
    if isinstance(train, dict) and train.get("pipeline") is not None:
        _check_pipeline_output(parsed, segments)
    sample = _dummy_sample(segments)
    sample.img = sample.img.float()
    batch = collate([sample], size_divisor=32, with_gt=True, with_mask=segments)
    trial = copy.deepcopy(model).train()  # the model's own BatchNorm statistics stay as built
    try:
        with torch.no_grad():
            trial(**batch, return_loss=True)
    except Exception as err:  # noqa: BLE001 - whatever the parts raise, said as a config error
        raise ConfigError(f"{parsed.config.where('model')}: the model's parts do not fit together: a training "
                          f"step on a {DRY_RUN_SIZE} x {DRY_RUN_SIZE} image fails with {_first_line(err)} (check "
                          "that each part's in_channels are the output channels of the part before it)") from None


def _dummy_sample(segments: bool) -> Sample:
    """A black uint8 ``DRY_RUN_SIZE``² image with one box (and its mask)."""
    size = DRY_RUN_SIZE
    masks = torch.zeros(1, size, size, dtype=torch.uint8)
    masks[0, 24:112, 16:96] = 1
    return Sample(img=torch.zeros(3, size, size, dtype=torch.uint8), boxes=torch.tensor([[16.0, 24.0, 96.0, 112.0]]),
                  labels=torch.zeros(1, dtype=torch.int64), ignore=torch.zeros(1, dtype=torch.bool), image_id=0,
                  ori_shape=(size, size), img_shape=(size, size), pad_shape=(size, size),
                  masks=masks if segments else None)


def _check_pipeline_output(parsed: ParsedConfig, segments: bool) -> None:
    where = parsed.config.where("data.train.pipeline")
    pipeline = batch_recipe(parsed, "train").pipeline
    try:
        out = pipeline(_dummy_sample(segments), np.random.default_rng(0))
    except Exception as err:  # noqa: BLE001 - a transform's own error, said as a config error
        raise ConfigError(f"{where}: fails on a {DRY_RUN_SIZE} x {DRY_RUN_SIZE} image with "
                          f"{_first_line(err)}") from None
    if not out.img.is_floating_point():
        raise ConfigError(f"{where}: its images reach the model as {out.img.dtype} (0-255); add "
                          "{type: Normalize, mean: [123.675, 116.28, 103.53], std: [58.395, 57.12, 57.375]} "
                          "after the geometric transforms, as mmdetection's pipelines do")


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__


def check_masks_match(config: Config | ParsedConfig, model: torch.nn.Module) -> None:
    """A detector with a mask head trains on masks (``data.train.with_mask: true``), one without does not;
    ``evaluation.save_best: segm_*`` needs a detector that segments."""
    parsed = as_parsed(config)
    segments = bool(getattr(getattr(model, "final_head", None), "with_mask", False))
    name = parsed.config["model"].get("type")
    train = parsed.split("train")
    if isinstance(train, dict) and bool(train.get("with_mask", False)) != segments:
        where = parsed.config.where("data.train.with_mask")
        if segments:
            raise ConfigError(f"{where}: {name} has a mask head and trains on instance masks: set "
                              "data.train.with_mask: true (a COCO json with segmentations, e.g. "
                              "_base_/datasets/coco_instance.yaml)")
        raise ConfigError(f"{where}: {name} has no mask head, so it cannot train on masks: drop with_mask "
                          "(or use a detector with a mask head, e.g. MaskRCNN)")
    save_best = parsed.evaluation.save_best
    if save_best.startswith("segm_") and not segments:
        raise ConfigError(f"{parsed.config.where('evaluation.save_best')}: {save_best} needs a detector that "
                          f"segments; {name} predicts boxes only (use a bbox_* metric)")


@dataclass(frozen=True)
class CheckedConfig:
    """What ``check_config`` built, for the command that asked to reuse.

    Attributes:
        parsed: the config, parsed once.
        model: the detector built from ``model`` (None without one).
        datasets: the splits read on this machine, each labelled with the training split's classes.
        lines: one summary line per node built.
    """

    parsed: ParsedConfig
    model: torch.nn.Module | None
    datasets: dict[str, DetectionDataset]
    lines: list[str]

    def require_model(self) -> torch.nn.Module:
        """The built model; a ``ConfigError`` (``<file>: model is missing``) when the config has none."""
        if self.model is None:
            lookup(self.parsed.config, "model")
        return self.model


def check_config(config: Config | ParsedConfig, data: bool = True, splits: tuple[str, ...] = SPLITS,
                 read_here: bool = False) -> CheckedConfig:
    """Build every buildable node of ``config`` — the model, its optimizer, every section and (with
    ``data``) the datasets of ``splits``, reading their annotations (``read_here``: every split must be
    readable on this machine) — and return what was built with one summary line per node."""
    parsed = as_parsed(config)
    lines, model = [], None
    if "model" in parsed.config:
        with warnings.catch_warnings():  # a layer of 0 channels: refused below, in one line
            warnings.filterwarnings("ignore", "Initializing zero-element tensors is a no-op")
            model = build_model(parsed)
        n_params = sum(p.numel() for p in model.parameters())
        lines.append(f"model: {parsed.config['model']['type']} built ({n_params:,} parameters)")
        check_masks_match(parsed, model)
        check_parts_fit(parsed, model)
        if "optimizer" in parsed.config:
            optimizer = optimizer_for(parsed, model)
            lines.append(f"optimizer: {type(optimizer).__name__} over {len(optimizer.param_groups)} parameter group(s)")
    lines.extend(f"{key}: {getattr(parsed, key)}" for key in SECTIONS if key in parsed.config)
    datasets = {}
    if data and parsed.data is not None:
        datasets, data_lines = check_data(parsed, splits, read_here)
        lines.extend(data_lines)
    return CheckedConfig(parsed, model, datasets, lines)
