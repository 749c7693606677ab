"""YAML configs: ``_base_`` composition, ``--set`` overrides, ``custom_imports``.

A config file is plain YAML read with ``yaml.safe_load``.  ``_base_: FILE`` or
``_base_: [FILES]`` (relative to the including file) are merged first, in order;
the including file wins.  Mappings merge recursively; a mapping with
``_delete_: true`` replaces what it would merge into; lists and scalars replace.

``--set a.b.c=VALUE`` overrides a key of the merged config (VALUE is parsed as
YAML, ``a.list.0.x`` indexes lists).  The key must exist unless the override
starts with ``+`` (``--set +a.b=1``), so typos do not pass silently; the new
value must be of the same kind (number, text, bool, list, mapping) as the old
one unless either is null.

The typed plain sections are in ``raydet.config.schema``; ``raydet.builder``
turns a config into objects; ``python -m raydet.check CFG [--set ...]``
builds everything without training (``--print``: prints the resolved config).
"""
from __future__ import annotations

import copy
import importlib
import math
import os
from pathlib import Path
from typing import Any, Callable, Iterable

import yaml

from ..errors import UserError
from ..registry import nearest_names

KeyPath = tuple[Any, ...]  # ("model", "neck", "type") or ("data", "train", "pipeline", 0)


class ConfigError(UserError):
    """A problem in a user's config; the message says what, where and what to do."""


class Config(dict):
    """The resolved config: a plain nested dict, plus where each key came from.

    ``source_of(("model", "neck"))`` is the file (or ``--set ...``) that set the
    deepest recorded prefix of the key path.  Pickles as a dict subclass, so it
    travels to Ray workers unchanged.
    """

    def __init__(self, data: dict, filename: str = "<dict>", sources: dict[KeyPath, str] | None = None):
        super().__init__(data)
        self.filename = filename
        self.sources = dict(sources or {})

    def source_of(self, key_path: str | KeyPath) -> str:
        path = parse_key_path(key_path) if isinstance(key_path, str) else tuple(key_path)
        for end in range(len(path), 0, -1):
            if path[:end] in self.sources:
                return self.sources[path[:end]]
        return self.filename

    def where(self, key_path: str) -> str:
        """``"file: key.path"`` for messages."""
        return f"{self.source_of(key_path)}: {key_path}"

    def to_yaml(self) -> str:
        return yaml.safe_dump(dict(self), sort_keys=False, default_flow_style=None, width=100)


def parse_key_path(text: str) -> KeyPath:
    """``"data.train.pipeline.0"`` -> ``("data", "train", "pipeline", 0)``."""
    return tuple(int(part) if part.isdigit() else part for part in text.split("."))


def format_key_path(path: Iterable[Any]) -> str:
    return ".".join(str(p) for p in path)


# --------------------------------------------------------------------------- files


def _read_yaml(path: Path) -> dict:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except OSError as err:
        raise ConfigError(f"cannot read config file {path}: {err.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        context, context_mark = getattr(err, "context", None), getattr(err, "context_mark", None)
        if context and context_mark:
            context += f" that starts at line {context_mark.line + 1}, column {context_mark.column + 1}"
        raise ConfigError(f"{where}: malformed YAML: {problem}" + (f" ({context})" if context else "")) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a mapping of keys to values, got a {type(data).__name__}")
    return data


def _record_all(node: Any, origin: str, path: KeyPath = ()) -> dict[KeyPath, str]:
    """Every key path in ``node`` -> ``origin``."""
    records = {path: origin}
    if isinstance(node, dict):
        for key, value in node.items():
            records.update(_record_all(value, origin, path + (key,)))
    return records


def _without_delete(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _without_delete(v) for k, v in node.items() if k != "_delete_"}
    return node


def _merge(base: Any, child: Any, sources: dict[KeyPath, str], child_sources: dict[KeyPath, str],
           path: KeyPath = ()) -> Any:
    """Merge ``child`` into ``base`` (child wins); ``sources`` takes the child's records where it wins."""
    if isinstance(child, dict) and isinstance(base, dict) and not child.get("_delete_", False):
        merged = dict(base)
        for key, value in child.items():
            if key != "_delete_":
                merged[key] = _merge(base.get(key), value, sources, child_sources, path + (key,))
        return merged
    for recorded in [p for p in sources if p[: len(path)] == path]:
        del sources[recorded]
    sources.update({p: origin for p, origin in child_sources.items() if p[: len(path)] == path})
    return _without_delete(child)


def _load_file(path: Path, chain: tuple[Path, ...] = ()) -> tuple[dict, dict[KeyPath, str]]:
    """A file merged onto its ``_base_`` files, and where each key path came from."""
    path = path.resolve()
    if path in chain:
        cycle = " -> ".join(str(p) for p in chain[chain.index(path):] + (path,))
        raise ConfigError(f"cyclic _base_: {cycle}")
    data = _read_yaml(path)
    bases = data.pop("_base_", [])
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"{path}: _base_ must be a file name or a list of file names, got {bases!r}")
    merged: dict = {}
    sources: dict[KeyPath, str] = {}
    for base in bases:
        base_path = path.parent / base
        if not base_path.is_file():
            raise ConfigError(f"{path}: _base_ file {base!r} not found (looked for {base_path})")
        base_data, base_sources = _load_file(base_path, chain + (path,))
        merged = _merge(merged, base_data, sources, base_sources)
    return _merge(merged, data, sources, _record_all(data, str(path))), sources


# --------------------------------------------------------------------------- overrides


#: Keys that hold a number or a ``[MIN, MAX]`` range (a worker count or an elastic group): an override may
#: turn one into the other.
NUMBER_OR_RANGE_KEYS = {("scaling", "num_workers"), ("tune", "trial", "num_workers")}


def _kind(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "mapping"
    return type(value).__name__


def _is_float_text(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def apply_override(data: dict, override: str, sources: dict[KeyPath, str]) -> None:
    """Apply one ``[+]a.b.c=VALUE`` to ``data`` in place."""
    origin = f"--set {override}"
    text, eq, raw_value = override.partition("=")
    if not eq or not text.lstrip("+"):
        raise ConfigError(f"{origin}: an override looks like key.path=value")
    try:
        value = yaml.safe_load(raw_value)
    except yaml.YAMLError as err:
        raise ConfigError(f"{origin}: the value is not valid YAML: {getattr(err, 'problem', err)}") from None
    set_key(data, text.lstrip("+"), value, origin, sources, add_new=text.startswith("+"), from_command_line=True)


def set_key(data: dict, key_path: str, value: Any, origin: str, sources: dict[KeyPath, str],
            add_new: bool = False, from_command_line: bool = False) -> None:
    """Set ``key_path`` of ``data`` to ``value`` in place (a mapping replaces the node whole) and record
    ``origin`` as its source.  The key must exist (unless ``add_new``) and keep its kind (number,
    text, bool, list, mapping) unless either value is null; errors start with ``origin`` (and tell how to
    add a new key ``from_command_line``)."""
    path = parse_key_path(key_path)
    node: Any = data
    for depth, key in enumerate(path):
        here = format_key_path(path[: depth + 1])
        last = depth == len(path) - 1
        if isinstance(node, list):
            if not isinstance(key, int) or not 0 <= key < len(node):
                raise ConfigError(f"{origin}: {here} — {format_key_path(path[:depth]) or 'the list'} "
                                  f"has {len(node)} items; index with 0..{len(node) - 1}")
        elif isinstance(node, dict):
            if key not in node:
                if not add_new:
                    hint = nearest_names(str(key), [str(k) for k in node])
                    suggestion = f"; did you mean {format_key_path(path[:depth] + (hint[0],))!r}?" if hint else ""
                    how = f" (write --set +{key_path}=... to add a new key)" if from_command_line else ""
                    raise ConfigError(f"{origin}: {here} does not exist in the config{suggestion}{how}")
                if not last:
                    node[key] = {}
        else:
            raise ConfigError(f"{origin}: {format_key_path(path[:depth])} is a {_kind(node)}, not a mapping or a list")
        if last:
            old = node[key] if (isinstance(node, list) or key in node) else None
            either = path in NUMBER_OR_RANGE_KEYS and {_kind(old), _kind(value)} <= {"number", "list"}
            if None not in (_kind(old), _kind(value)) and _kind(old) != _kind(value) and not either:
                hint = ""
                if isinstance(value, str) and _kind(old) == "number" and _is_float_text(value):
                    hint = f" — PyYAML reads {value} as text; write it with a dot, e.g. {float(value)!r}"
                raise ConfigError(f"{origin}: {here} is a {_kind(old)} ({old!r}) in the config, "
                                  f"got a {_kind(value)} ({value!r}){hint}")
            node[key] = _without_delete(value)
            for recorded in [p for p in sources if p[: len(path)] == path]:
                del sources[recorded]
            sources[path] = origin
            return
        node = node[key]


def with_values(config: Config, values: dict[str, Any], origin: Callable[[str], str]) -> Config:
    """A copy of ``config`` with each ``key.path -> value`` of ``values`` set as ``set_key`` sets it
    (a mapping replaces the node whole, as ``_delete_: true`` would); ``origin(key_path)`` is the
    source recorded for it and the start of any error message."""
    data = copy.deepcopy(dict(config))
    sources = dict(config.sources)
    for key_path, value in values.items():
        set_key(data, key_path, copy.deepcopy(value), origin(key_path), sources)
    return Config(data, config.filename, sources)


# --------------------------------------------------------------------------- public API


def load_config(path: str | os.PathLike, overrides: Iterable[str] = ()) -> Config:
    """Read ``path`` with its ``_base_`` files, apply ``--set`` overrides and import ``custom_imports``."""
    path = Path(path)
    data, sources = _load_file(path)
    for override in overrides:
        apply_override(data, override, sources)
    config = Config(data, str(path.resolve()), sources)
    _refuse_nan(config, config)
    import_custom_modules(config)
    return config


def _refuse_nan(config: Config, node: Any, path: KeyPath = ()) -> None:
    """``ConfigError`` at the first NaN value (YAML's ``.nan``): no setting means "not a number"."""
    if isinstance(node, float) and math.isnan(node):
        raise ConfigError(f"{config.where(format_key_path(path))}: .nan is not a number a setting can take")
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        _refuse_nan(config, value, path + (key,))


def import_custom_modules(config: dict) -> list[str]:
    """Import the modules named in ``custom_imports`` so their registered components exist.

    Call it in every process that builds from the config (the driver, each Ray
    Train worker, each Ray Data task's constructor); imports are cached, so
    repeated calls are cheap.
    """
    modules = config.get("custom_imports") or []
    if isinstance(modules, str) or not isinstance(modules, list) or not all(isinstance(m, str) for m in modules):
        raise ConfigError(_where(config, "custom_imports") + f": expected a list of module names, got {modules!r}")
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise ConfigError(
                _where(config, "custom_imports")
                + f": cannot import {module!r} ({err}); make sure its folder is on PYTHONPATH "
                "(on a cluster: inside the --working-dir)"
            ) from None
        except Exception as err:
            raise ConfigError(
                _where(config, "custom_imports") + f": importing {module!r} failed: {type(err).__name__}: {err}"
            ) from err
    return modules


def _where(config: dict, key_path: str) -> str:
    return config.where(key_path) if isinstance(config, Config) else key_path
