"""``python -m raydet.tune SWEEP.yaml [--set k=v ...] [--work-dir DIR] [--resume] [--check]``.

Runs a Ray Tune sweep over the training config in SWEEP.yaml: every trial is a
whole raydet training with the values its ``search:`` paths were given; ASHA
stops weak trials after evaluations.  Writes ``results.csv``,
``best_config.yaml`` and an MLflow parent run with one child run per trial.
``--check`` builds every choice's config and trains nothing; ``--resume``
continues an interrupted sweep (finished trials are not run again).  A bad
sweep file is one ``error: ...`` line and exit code 2.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..cli import add_config_arguments, labelled
from ..errors import report_user_errors
from .sweep import check_sweep, load_sweep


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m raydet.tune",
                                     description="Search a training config's components and hyper-parameters with "
                                                 "Ray Tune.")
    add_config_arguments(parser)
    parser.add_argument("--work-dir", type=Path, help="output folder (default: work_dirs/<sweep name>)")
    parser.add_argument("--resume", action="store_true", help="continue the interrupted sweep in the work dir")
    parser.add_argument("--check", action="store_true",
                        help="build the base config and every choice's config; train nothing")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        sweep = load_sweep(args.config, args.overrides)
        if args.check:
            for line in check_sweep(sweep):
                print(line)
            print("sweep OK")
            return 0
        from ..engine.tracking import ui_lines
        from .driver import run_sweep  # with Ray: keep --help and --check fast

        work_dir = args.work_dir or Path("work_dirs") / sweep.name
        outcome = run_sweep(sweep, work_dir, resume=args.resume)
        lines = [f"  results:     {outcome.work_dir / 'results.csv'}"]
        if outcome.best is not None:
            best = outcome.best
            lines = [f"best trial {best.trial_id}: {sweep.settings.metric} {best.metric:.4f} ("
                     + ", ".join(f"{path} {label}" for path, label in best.labels.items()) + ")",
                     f"  config:      {outcome.work_dir / 'best_config.yaml'}   "
                     "(python -m raydet.train that file trains it alone)",
                     f"  checkpoint:  {best.checkpoint}", *lines]
        else:
            lines.insert(0, f"no trial reported {sweep.settings.metric}")
        lines += labelled("MLflow:", ui_lines(outcome.mlflow_uri, outcome.mlflow_run_id))
        if outcome.interrupted:
            lines.append(f"the sweep was interrupted: continue it with python -m raydet.tune {args.config} "
                         f"--work-dir {outcome.work_dir} --resume")
        print("\n".join(["", *lines]))
        return 1 if outcome.interrupted else 0

    return report_user_errors(body)


if __name__ == "__main__":
    sys.exit(main())
