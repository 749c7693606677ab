"""The ``search:`` section of a sweep file: dotted config paths -> distributions (Ray-free).

::

    search:
      model.neck: {choice: [{type: FPN, ...}, {type: PAFPN, ...}]}   # whole components
      optimizer.lr: {loguniform: [1.0e-3, 1.0e-2]}
      model.bbox_head.prior_generator.sizes: {grid: [[[32], [64]], [[24], [48]]]}

A ``choice`` or ``grid`` is searched as an index into its list (so searchers
that hold only numbers or strings, such as Optuna, search whole components
too); the trial sets the chosen value at the path, replacing the base
config's node whole (as ``_delete_: true`` would).
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Iterator

import yaml

from ..config import Config, ConfigError

#: Each distribution and the arguments it takes.
DISTRIBUTIONS = {
    "choice": "a non-empty list of values (numbers, text, lists, or whole components with type:)",
    "grid": "a non-empty list of values, every one of them tried",
    "uniform": "[low, high]",
    "loguniform": "[low, high] with 0 < low < high",
    "randint": "[low, high]: an integer from low to high - 1",
    "quniform": "[low, high, q]: a uniform number rounded to a multiple of q",
}
DISCRETE = ("choice", "grid")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class Dimension:
    """One searched config path.

    Attributes:
        path: the dotted config path, e.g. ``"optimizer.lr"``.
        kind: a key of ``DISTRIBUTIONS``.
        args: the values of a ``choice`` / ``grid``; the bounds (and ``q``) otherwise.
    """

    path: str
    kind: str
    args: tuple

    @property
    def discrete(self) -> bool:
        return self.kind in DISCRETE

    def _labels(self) -> list[str]:
        """Each list entry's label: a component's ``type`` (``#i`` when two share it), else its value's text."""
        types = [value.get("type") if isinstance(value, dict) else None for value in self.args]
        return [_label(value, types, index) for index, value in enumerate(self.args)]

    def keys(self) -> list[Any]:
        """What a searcher picks from for a ``choice`` / ``grid``: each value's label when those are unique
        (readable in Tune's tables and in Optuna), else its index."""
        labels = self._labels()
        return labels if len(set(labels)) == len(labels) else list(range(len(self.args)))

    def value(self, sampled: Any) -> Any:
        """The config value for what the searcher ``sampled`` (one of ``keys()`` for ``choice`` / ``grid``)."""
        if self.discrete:
            return self.args[self.keys().index(sampled)]
        if self.kind == "randint":
            return int(sampled)
        return float(sampled)

    def label(self, sampled: Any) -> str:
        """A short text for tables: a component's ``type`` (``#i`` when two share it), a value in YAML flow style."""
        if self.discrete:
            return self._labels()[self.keys().index(sampled)]
        return _label(self.value(sampled), [], 0)

    def extremes(self) -> list[Any]:
        """The sampled values a check should try: every key of a list, else both bounds."""
        if self.discrete:
            return self.keys()
        low, high = self.args[:2]
        return [low, high - 1] if self.kind == "randint" else [low, high]


@dataclass(frozen=True)
class SearchSpace:
    """The parsed ``search:`` section, in file order."""

    dimensions: tuple[Dimension, ...]

    def values(self, sampled: dict[str, Any]) -> dict[str, Any]:
        """``{path: sampled}`` from a searcher -> ``{path: config value}``."""
        return {d.path: d.value(sampled[d.path]) for d in self.dimensions}

    def labels(self, sampled: dict[str, Any]) -> dict[str, str]:
        return {d.path: d.label(sampled[d.path]) for d in self.dimensions}

    def check_points(self, limit: int = 64) -> Iterator[dict[str, Any]]:
        """Sampled points that together try every value of every dimension.

        Every combination of the lists' entries with all bounds low, then all high (when
        that is at most ``limit`` points, so components that must agree are checked
        together), else each dimension's values one at a time with the others at their first.
        """
        options = [d.extremes() for d in self.dimensions]
        discrete = [len(o) if d.discrete else 1 for d, o in zip(self.dimensions, options)]
        has_bounds = any(not d.discrete for d in self.dimensions)
        if math.prod(discrete) * (2 if has_bounds else 1) <= limit:
            for end in (0, 1) if has_bounds else (0,):
                lists = [o if d.discrete else [o[end]] for d, o in zip(self.dimensions, options)]
                for combo in itertools.product(*lists):
                    yield {d.path: value for d, value in zip(self.dimensions, combo)}
            return
        first = {d.path: o[0] for d, o in zip(self.dimensions, options)}
        yield first
        for d, o in zip(self.dimensions, options):
            for value in o[1:]:
                yield {**first, d.path: value}


def _label(value: Any, types: list[Any], index: int) -> str:
    if isinstance(value, dict) and "type" in value:
        return str(value["type"]) if types.count(value["type"]) == 1 else f"{value['type']}#{index}"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (dict, list)):
        return yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
    return str(value)


def parse_search(config: Config, key: str = "search") -> SearchSpace:
    """The ``search:`` mapping of ``config`` parsed and checked (the paths themselves are checked against
    the base config when a trial's config is made: ``raydet.tune.sweep``)."""
    node = config.get(key)
    where = config.source_of((key,))
    if not isinstance(node, dict) or not node:
        raise ConfigError(f"{where}: {key}: expected a mapping of config paths to distributions, e.g. "
                          "{optimizer.lr: {loguniform: [1.0e-3, 1.0e-2]}}, got " + repr(node))
    return SearchSpace(tuple(_dimension(config, key, path, spec) for path, spec in node.items()))


def _dimension(config: Config, key: str, path: Any, spec: Any) -> Dimension:
    where = f"{config.source_of((key, path))}: {key}.{path}"
    known = ", ".join(DISTRIBUTIONS)
    if not isinstance(path, str) or not path or path.startswith(".") or path.endswith(".") or ".." in path:
        raise ConfigError(f"{where}: a search key is a dotted config path such as optimizer.lr")
    if not isinstance(spec, dict) or len(spec) != 1:
        raise ConfigError(f"{where}: expected one distribution, e.g. {{loguniform: [1.0e-3, 1.0e-2]}}; known: {known}")
    (kind, args), = spec.items()
    if kind not in DISTRIBUTIONS:
        raise ConfigError(f"{where}: unknown distribution {kind!r}; known: {known}")
    usage = f"{kind} takes {DISTRIBUTIONS[kind]}, got {args!r}"
    if not isinstance(args, list) or not args:
        raise ConfigError(f"{where}: {usage}")
    if kind in DISCRETE:
        return Dimension(path, kind, tuple(args))
    if len(args) != (3 if kind == "quniform" else 2) or not all(_is_number(a) for a in args):
        raise ConfigError(f"{where}: {usage}")
    low, high = args[:2]
    if not low < high:
        raise ConfigError(f"{where}: {usage} (low must be below high)")
    if kind == "loguniform" and low <= 0:
        raise ConfigError(f"{where}: {usage} (a log scale needs low > 0)")
    if kind == "randint" and not all(isinstance(a, int) for a in args):
        raise ConfigError(f"{where}: {usage} (integers)")
    if kind == "quniform" and not 0 < args[2] <= high - low:
        raise ConfigError(f"{where}: {usage} (0 < q <= high - low)")
    return Dimension(path, kind, tuple(args))
