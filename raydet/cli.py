"""What every raydet command line shares: the ``CFG [--set k=v ...]`` arguments.

Errors are reported by ``raydet.errors.report_user_errors``: a user error
(bad config, bad data, missing file) is one ``error: ...`` line on stderr and
exit code 2 — never a traceback.
"""
from __future__ import annotations

import argparse

from .config import Config, load_config


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="YAML config file")
    parser.add_argument(
        "--set", dest="overrides", metavar="KEY=VALUE", action="extend", nargs="+", default=[],
        help="override a config key (VALUE is parsed as YAML; a.list.0.b indexes lists); "
        "prefix the key with + to add a key the config does not have",
    )


def config_from_args(args: argparse.Namespace) -> Config:
    return load_config(args.config, args.overrides)
