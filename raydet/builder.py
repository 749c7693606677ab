"""Config -> objects: builds the buildable nodes of a resolved config.

Everything that turns config into objects goes through here, so every failure
becomes a ``ConfigError`` naming the file and key path (``model.neck.type``)
the user has to change.  ``check_config`` builds everything without training;
``python -m raydet.config CFG --check`` and the training launcher call it on
the driver before any worker starts.
"""
from __future__ import annotations

from typing import Any

import torch

from .config import Config, ConfigError, format_key_path, import_custom_modules, parse_key_path
from .registry import MODELS, BuildError, Registry, did_you_mean

# Top-level keys a config may have, and what each one is.
TOP_LEVEL_KEYS = {
    "custom_imports": "modules to import so their registered components exist",
    "model": "the detector (MODELS)",
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
    lines = []
    model = build_model(config)
    n_params = sum(p.numel() for p in model.parameters())
    lines.append(f"model: {config['model']['type']} built ({n_params:,} parameters)")
    return lines


__all__ = ["build_node", "build_model", "check_config", "lookup", "TOP_LEVEL_KEYS"]
