"""A sweep file read and checked: the training config every trial starts from, the search space, the settings.

A sweep file is a normal training config (``_base_`` and all) plus two sections,
``search:`` (``raydet.tune.space``) and ``tune:`` (``raydet.tune.settings``).
Nothing here starts Ray: ``check_sweep`` builds every choice's config the way
``python -m raydet.check`` does, so a bad sweep fails in seconds, before any trial.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..builder import check_config, check_num_classes
from ..config import Config, ConfigError, load_config, with_values
from ..config.parsed import ParsedConfig, config_errors, parse_config
from ..registry import build_section
from .settings import SchedulerSettings, TrialSettings, TuneSettings
from .space import SearchSpace, parse_search

#: The sections a sweep file adds to a training config.
SWEEP_SECTIONS = ("search", "tune")


@dataclass(frozen=True)
class Sweep:
    """A parsed sweep file.

    Attributes:
        name: the sweep file's stem (the default work dir is ``work_dirs/<name>``).
        config: the whole resolved sweep file (``search`` and ``tune`` included).
        base: the training config every trial starts from, parsed: the file without ``search`` and
            ``tune``, ``tune.trial`` applied to ``scaling``, data paths made absolute.
        space: the searched paths and their distributions.
        settings: the ``tune`` section.
        scheduler: ASHA's settings, or None (every trial runs to the end).
    """

    name: str
    config: Config
    base: ParsedConfig
    space: SearchSpace
    settings: TuneSettings
    scheduler: SchedulerSettings | None

    def trial_config(self, sampled: dict[str, Any]) -> Config:
        """The training config of one trial: ``base`` with each searched path set to its sampled value."""
        return with_values(self.base.config, self.space.values(sampled),
                           lambda path: f"{self.config.source_of(('search', path))}: search.{path}")

    @property
    def max_epochs(self) -> int:
        return self.base.runner.max_epochs


def _section(config: Config, cls: type, node: Any, key_path: str) -> Any:
    with config_errors(config):
        return build_section(cls, node, key_path)


def load_sweep(path: str | Path, overrides: list[str] = ()) -> Sweep:
    """Read a sweep file (with ``--set`` overrides) into a ``Sweep``; malformed sections are ``ConfigError``s."""
    config = load_config(path, overrides)
    if "search" not in config:
        raise ConfigError(f"{config.filename}: no search: section. A sweep file is a training config plus search: "
                          "(config paths -> distributions) and tune: (metric, mode, num_samples, ...); "
                          "to train this config once, run python -m raydet.train")
    settings = _section(config, TuneSettings, config.get("tune"), "tune")
    scheduler = settings.scheduler
    if scheduler is None or scheduler == "none":
        scheduler = None
    else:
        scheduler = _section(config, SchedulerSettings, {"type": scheduler} if isinstance(scheduler, str)
                             else scheduler, "tune.scheduler")
        scheduler = scheduler if scheduler.type != "none" else None
    trial = _section(config, TrialSettings, settings.trial, "tune.trial")
    data = {key: value for key, value in config.items() if key not in SWEEP_SECTIONS}
    scaling = dict(data.get("scaling") or {})
    scaling.update({key: value for key, value in vars(trial).items() if value is not None})
    if scaling:
        data["scaling"] = scaling
    sources = {key: value for key, value in config.sources.items() if key[:1] not in {(s,) for s in SWEEP_SECTIONS}}
    base = parse_config(Config(data, config.filename, sources))
    return Sweep(Path(config.filename).stem, config, base, parse_search(config), settings, scheduler)


def check_sweep(sweep: Sweep) -> list[str]:
    """Build the base config and every choice's config, as ``python -m raydet.check`` does; check the
    settings against them.  Returns one summary line per check; raises ``ConfigError``."""
    where = sweep.config.source_of(("tune",))
    settings = sweep.settings
    checked = check_config(sweep.base)
    if settings.metric != "loss" and sweep.base.require_data().split("val") is None:
        raise ConfigError(f"{where}: tune.metric: {settings.metric} is computed on data.val, which this config "
                          "does not have; add data.val or optimise metric: loss (mode: min)")
    # check_config has just built the model and matched data.train.with_mask to its mask head: no second build
    if settings.metric.startswith("segm_") and not (sweep.base.split("train") or {}).get("with_mask"):
        raise ConfigError(f"{where}: tune.metric: {settings.metric} scores masks, which this config's "
                          f"{sweep.base.config['model']['type']} does not make (no mask head); optimise a bbox_* "
                          "metric")
    if sweep.scheduler is not None and sweep.scheduler.grace_period >= sweep.max_epochs:
        raise ConfigError(f"{where}: tune.scheduler.grace_period ({sweep.scheduler.grace_period}) must be below "
                          f"runner.max_epochs ({sweep.max_epochs}), or no trial can be stopped early")
    continuous = [d.path for d in sweep.space.dimensions if not d.discrete]
    if settings.searcher == "grid" and continuous:
        raise ConfigError(f"{where}: tune.searcher grid tries every combination of choice/grid lists; "
                          f"{', '.join(continuous)} {'is' if len(continuous) == 1 else 'are'} not a list "
                          "(use searcher: random, or list the values with grid:)")
    grids = [d.path for d in sweep.space.dimensions if d.kind == "grid"]
    if settings.searcher == "optuna":
        if grids:
            raise ConfigError(f"{where}: tune.searcher optuna samples; it cannot enumerate grid: "
                              f"{', '.join(grids)} (write choice: instead)")
        require_optuna()
    points = list(sweep.space.check_points())
    touches_data = any(d.path.split(".")[0] == "data" for d in sweep.space.dimensions)
    if sweep.base.require_data().split("train") is None:  # every trial trains
        raise ConfigError(f"{sweep.base.source_of(('data',))}: data.train is missing")
    train = checked.datasets.get("train")  # None when its annotations live on the cluster
    classes = train.classes if train is not None else None
    for point in points:
        config = sweep.trial_config(point)
        try:
            check_config(config, data=touches_data)
            if classes is not None and not touches_data:
                check_num_classes(config, classes)
        except ConfigError as err:
            if len(sweep.space.dimensions) == 1:
                raise
            chosen = ", ".join(f"{path}={label}" for path, label in sweep.space.labels(point).items())
            raise ConfigError(f"with {chosen}: {err}") from None
    scheduler = (f"ASHA by epochs (grace period {sweep.scheduler.grace_period}, reduction factor "
                 f"{sweep.scheduler.reduction_factor:g}, max {sweep.max_epochs})" if sweep.scheduler else "none")
    return [*checked.lines,
            f"search: {len(sweep.space.dimensions)} path(s); {len(points)} trial config(s) built: "
            + ", ".join(f"{d.path} ({d.kind})" for d in sweep.space.dimensions),
            f"tune: {settings.mode} {settings.metric} over {settings.num_samples} sample(s), searcher "
            f"{settings.searcher}, scheduler {scheduler}"]


def require_optuna() -> None:
    """``searcher: optuna`` needs the optional extra; say how to install it."""
    if importlib.util.find_spec("optuna") is None:
        raise ConfigError("tune.searcher optuna needs Optuna, which is not installed: pip install 'raydet[optuna]' "
                          "(or choose searcher: random / grid)")
