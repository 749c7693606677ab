"""``python -m raydet.check CFG [--set k=v ...] [--print]``: check a config before it runs anywhere.

Builds every buildable node (model, optimizer, every section, the datasets
with their transforms — reading the annotations that are on this machine)
without training, and checks that the splits share one class list and that
the model's ``num_classes`` matches it; prints one line per node and
``config OK``.  Run it before submitting a job to a cluster.  ``--print``
prints the fully resolved config as YAML instead.  Exit code 0 when
everything builds, 2 with a one-line message otherwise.
"""
from __future__ import annotations

import argparse
import sys

from .builder import check_config
from .cli import add_config_arguments, config_from_args
from .errors import report_user_errors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m raydet.check",
        description="Build every buildable node of a config (no training); --print prints the resolved config instead.",
    )
    add_config_arguments(parser)
    parser.add_argument("--print", dest="print_config", action="store_true",
                        help="print the fully resolved config as YAML (nothing is built)")
    args = parser.parse_args(argv)

    def body() -> None:
        config = config_from_args(args)
        if args.print_config:
            sys.stdout.write(config.to_yaml())
            return
        for line in check_config(config).lines:
            print(line)
        print("config OK")

    return report_user_errors(body)


if __name__ == "__main__":
    sys.exit(main())
