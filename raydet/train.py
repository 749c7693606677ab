"""``python -m raydet.train CFG [--set k=v ...] [--work-dir DIR] [--num-workers N|MIN-MAX] [--use-gpu]
[--resume auto|PATH] [--register NAME]``.

Trains on the Ray cluster this process runs in (``RAY_ADDRESS``, set inside a
``ray job submit`` job), else on a local Ray it starts itself.  A run stopped by
a NaN or inf loss ends like a bad config: one ``error: ...`` line, exit code 2.
Ctrl+C, SIGTERM or ``ray job stop`` stop the workers, end the MLflow run
KILLED and print how to continue (exit code 130 or 143, as the shell gives a
process ended by the signal).
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from .cli import add_config_arguments, config_from_args, labelled
from .engine.stop_signals import RunStopped
from .engine.trainer import NonFiniteLossError
from .errors import report_user_errors


def worker_count(text: str) -> int | tuple[int, int]:
    """``--num-workers``: ``N``, or ``MIN-MAX`` for an elastic group."""
    try:
        low, _, high = text.partition("-")
        return (int(low), int(high)) if high else int(low)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give a number of workers (2) or a range MIN-MAX (1-4)") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m raydet.train", description="Train a detector on Ray.")
    add_config_arguments(parser)
    parser.add_argument("--work-dir", type=Path, help="output folder (default: work_dirs/<config name>)")
    parser.add_argument("--num-workers", type=worker_count, metavar="N|MIN-MAX",
                        help="training workers, or an elastic range (overrides scaling.num_workers)")
    parser.add_argument("--use-gpu", action="store_true", default=None,
                        help="one GPU per worker (overrides scaling.use_gpu)")
    parser.add_argument("--resume", metavar="auto|PATH",
                        help="'auto': continue the latest run in the work dir; PATH: start from that checkpoint "
                             "(a path, a URI, or an MLflow model: models:/NAME/VERSION, from the run's MLflow store)")
    parser.add_argument("--register", metavar="NAME",
                        help="register the run's model as a new version of NAME (sets mlflow.registered_model_name)")
    return parser


def stopped_lines(stop: RunStopped, argv: list[str], work_dir: Path) -> str:
    """What a stopped run prints: what stopped it, where it got to, and the command that continues it: this
    command line with its work dir named and, once the run has a checkpoint, ``--resume auto`` in place of any
    ``--resume`` (before its first checkpoint, a ``--resume PATH`` is still where the run starts)."""
    kept: list[str] = []
    skip = False
    for arg in argv:
        if stop.latest_checkpoint and (skip or arg == "--resume" or arg.startswith("--resume=")):
            skip = arg == "--resume"
            continue
        kept.append(arg)
    if not any(arg == "--work-dir" or arg.startswith("--work-dir=") for arg in kept):
        kept += ["--work-dir", str(work_dir)]
    if stop.latest_checkpoint:
        kept += ["--resume", "auto"]
    reached = (f"latest checkpoint: {stop.latest_checkpoint}" if stop.latest_checkpoint
               else "no checkpoint was written yet")
    return "\n".join([
        "",
        f"training stopped ({stop.signal_name}): the workers were stopped and the MLflow run ended KILLED; {reached}",
        "  continue it with: " + shlex.join(["python", "-m", "raydet.train", *kept]),
    ])


def model_lines(model: dict | None) -> list[str]:
    """The run's MLflow model, as ``training finished`` lists it: its URI, and the registered version's."""
    if not model:
        return []
    lines = labelled("model:", [model["model_uri"]])
    if model.get("version"):
        alias = f", alias @{model['alias']}" if model.get("alias") else ""
        lines += labelled("registered:", [f"models:/{model['registered_model']}/{model['version']}{alias}"])
    return lines


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int | None:
        import ray  # with the launcher: keep --help fast

        from .config.parsed import parse_config
        from .engine.launcher import launch
        from .engine.mlflow_models.model_uri import fetch_model, is_model_uri
        from .engine.tracking import ui_lines

        if args.register:
            args.overrides = [*args.overrides, f"+mlflow.registered_model_name={args.register}"]
        config = config_from_args(args)
        work_dir = args.work_dir or Path("work_dirs") / Path(args.config).stem
        if is_model_uri(args.resume):  # from the store this run logs to
            store = parse_config(config).mlflow.resolved_uri(work_dir)[0]
            args.resume = fetch_model(args.resume, store).checkpoint
        try:
            outcome = launch(config, work_dir, resume=args.resume, num_workers=args.num_workers, use_gpu=args.use_gpu)
        except NonFiniteLossError:
            ray.shutdown()  # prints the workers' last streamed log lines now, so that the error line comes last
            raise
        except RunStopped as stop:
            ray.shutdown()
            print(stopped_lines(stop, argv if argv is not None else sys.argv[1:], work_dir), file=sys.stderr)
            return stop.exit_code
        final = outcome.final_metrics
        print("\n".join([
            "",
            "training finished: " + "  ".join(f"{k} {final[k]:.4f}" for k in final
                                              if k.startswith(("bbox_mAP", "segm_mAP"))),
            f"  iterations {final['iters']}, epochs {final['epochs']}, {final['wall_time_s']} s",
            f"  metrics:     {outcome.work_dir / 'final_metrics.json'}",
            f"  checkpoint:  {final['best_checkpoint']}",
            f"  pictures:    {outcome.work_dir / 'predictions.png'}",
            *labelled("MLflow:", ui_lines(outcome.mlflow_uri, outcome.mlflow_run_id)),
            *model_lines(final.get("mlflow_model")),
        ]))

    return report_user_errors(body)


if __name__ == "__main__":
    sys.exit(main())
