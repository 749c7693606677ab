"""What every raydet command line shares: ``CFG [--set k=v ...]`` and error handling.

A user error (bad config, bad data, missing file) prints one ``error: ...``
line on stderr and exits with code 2 — never a traceback.
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable

from .config import ConfigError, load_config, Config
from .data.problems import DataError

USER_ERRORS: tuple[type[Exception], ...] = (ConfigError, DataError)
EXIT_USER_ERROR = 2


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="YAML config file")
    parser.add_argument(
        "--set", dest="overrides", metavar="KEY=VALUE", action="extend", nargs="+", default=[],
        help="override a config key (VALUE is parsed as YAML; a.list.0.b indexes lists); "
        "prefix the key with + to add a key the config does not have",
    )


def config_from_args(args: argparse.Namespace) -> Config:
    return load_config(args.config, args.overrides)


def run(main: Callable[[], int | None], more_user_errors: tuple[type[Exception], ...] = ()) -> int:
    """Run a CLI's body; user errors (``USER_ERRORS``, and the command's own ``more_user_errors``)
    become one stderr line and exit code 2."""
    try:
        return main() or 0
    except USER_ERRORS + more_user_errors as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
