"""A resolved config parsed once: its typed sections, data splits and seed, paths made absolute.

``parse_config`` is the one place a ``Config`` is read into settings.  Every
command parses once and hands the ``ParsedConfig`` on (the builder, the
launcher, the workers' ``TrainingSpec``), so no section is parsed, no seed
read and no YAML dumped twice.  The sections keep their config key as their
attribute name (``parsed.checkpoint_config``, ``parsed.log_config``): there is
no second name to learn.  The raw ``model`` and ``optimizer`` nodes stay in
``parsed.config``, for the builder to build.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
from dataclasses import dataclass
from typing import Any, Iterator

from .. import storage
from ..registry import BuildError, build_section, did_you_mean
from . import Config, ConfigError, KeyPath
from .schema import (
    SECTIONS,
    TOP_LEVEL_KEYS,
    AccelSettings,
    CheckpointSettings,
    DataSection,
    EvaluationSettings,
    LogSettings,
    LrConfig,
    MlflowSettings,
    OptimizerConfig,
    RunnerSettings,
    ScalingSettings,
)

#: Top-level keys of a sweep file that a training config must not have.
SWEEP_KEYS = ("search", "tune")


@contextlib.contextmanager
def config_errors(config: Config) -> Iterator[None]:
    """Turn a ``BuildError`` raised inside into a ``ConfigError`` that names the file its key path came from."""
    try:
        yield
    except BuildError as err:
        raise ConfigError(f"{config.source_of(err.key_path)}: {err}") from err


@dataclass(frozen=True)
class ParsedConfig:
    """One config, parsed: what every command reads instead of the raw dict.

    Attributes:
        config: the resolved config with ``data.data_root`` and ``Pretrained`` weights absolute (Ray
            workers run in another working directory); its raw ``model`` / ``optimizer`` nodes and
            where each key came from (``config.source_of``).
        yaml: ``config`` dumped as YAML (the work dir's and every checkpoint's ``config.yaml``).
        seed: the config's ``seed`` (0 when absent).
        data: the ``data:`` section (None when the config has none).
        optimizer_config … accel: the plain sections (``raydet.config.schema.SECTIONS``), defaults
            when absent.
    """

    config: Config
    yaml: str
    seed: int
    data: DataSection | None
    optimizer_config: OptimizerConfig
    lr_config: LrConfig
    runner: RunnerSettings
    evaluation: EvaluationSettings
    checkpoint_config: CheckpointSettings
    log_config: LogSettings
    scaling: ScalingSettings
    mlflow: MlflowSettings
    accel: AccelSettings

    def source_of(self, key_path: str | KeyPath) -> str:
        return self.config.source_of(key_path)

    def split(self, name: str) -> dict | None:
        """The ``data.<name>`` dataset node (None when absent)."""
        return self.data.split(name) if self.data is not None else None

    def require_data(self) -> DataSection:
        """The ``data:`` section; a ``ConfigError`` when the config has none."""
        if self.data is None:
            raise ConfigError(f"{self.config.filename}: data is missing")
        return self.data


def check_top_level_keys(config: Config) -> None:
    """Every top-level key is one raydet knows (a sweep's ``search`` / ``tune`` are named as such)."""
    for key in config:
        if key in SWEEP_KEYS:
            raise ConfigError(f"{config.source_of((key,))}: {key}: is a sweep section: run this file with "
                              "python -m raydet.tune (python -m raydet.train trains one config)")
        if key not in TOP_LEVEL_KEYS:
            known = ", ".join(TOP_LEVEL_KEYS)
            raise ConfigError(
                f"{config.source_of((key,))}: {key!r} is not a raydet config key"
                f"{did_you_mean(str(key), TOP_LEVEL_KEYS)}; known keys: {known}"
            )


def _seed(config: Config) -> int:
    seed = config.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ConfigError(f"{config.source_of(('seed',))}: seed: expected an int, got {seed!r}")
    return seed


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


def absolute_from_cwd(path: str) -> str:
    """``path`` joined to the current directory unless it is absolute or a URI; local results made absolute."""
    return storage.absolute(storage.join(os.getcwd(), path))


def parse_config(config: Config) -> ParsedConfig:
    """Check the top-level keys and the seed, parse every section once, make paths absolute.

    Relative ``data.data_root`` and ``Pretrained`` weights mean "from where you started the command";
    Ray workers run in another working directory, so they are resolved here, on the driver.
    """
    check_top_level_keys(config)
    seed = _seed(config)
    with config_errors(config):
        sections = {key: build_section(cls, config.get(key), key) for key, cls in SECTIONS.items()}
        if "data" in config:
            data = build_section(DataSection, config["data"], "data")
        else:
            data = None
    resolved = dict(config)
    if data is not None:
        data = dataclasses.replace(data, data_root=absolute_from_cwd(data.data_root))
        resolved["data"] = {**config["data"], "data_root": data.data_root}
    if "model" in config:
        resolved["model"] = _absolute_weights(config["model"])
    resolved = Config(resolved, config.filename, config.sources)
    return ParsedConfig(config=resolved, yaml=resolved.to_yaml(), seed=seed, data=data, **sections)


def as_parsed(config: Config | ParsedConfig) -> ParsedConfig:
    """``config`` itself when it is parsed already, else ``parse_config(config)``."""
    return config if isinstance(config, ParsedConfig) else parse_config(config)
