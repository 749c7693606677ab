"""``python -m raydet.config CFG [--set k=v ...] [--check]``.

Prints the fully resolved config as YAML.  With ``--check`` it instead builds
every buildable node (model, datasets and their transforms, optimizer, …)
without training, printing one line per node: run it before submitting a job
to a cluster.  Exit code 0 when everything builds, 2 with a message otherwise.
"""
from __future__ import annotations

import argparse
import sys

from ..builder import check_config
from ..cli import add_config_arguments, config_from_args, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m raydet.config",
        description="Print the fully resolved config; --check builds every buildable node instead.",
    )
    add_config_arguments(parser)
    parser.add_argument("--check", action="store_true", help="build every buildable node (no training)")
    args = parser.parse_args(argv)

    def body() -> None:
        config = config_from_args(args)
        if args.check:
            for line in check_config(config):
                print(line)
            print("config OK")
        else:
            sys.stdout.write(config.to_yaml())

    return run(body)


if __name__ == "__main__":
    sys.exit(main())
