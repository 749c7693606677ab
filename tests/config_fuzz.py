"""A seeded config fuzzer: the demo, Mask R-CNN and sweep configs mutated key by key, run through
``raydet.check`` (``raydet.tune --check`` for the sweep) in this process.

Each case mutates one thing: a key's value made the wrong type, negative, zero, huge, NaN or empty; a key
removed; a key added where none is known; a component's ``type`` misspelt; two files whose ``_base_`` name
each other; a ``--set`` with broken syntax.  The verdict is ``accepted`` (exit code 0), ``error line`` (exit
code 2 and one stderr line ``error: …``) or ``broken`` (anything else: an exception out of ``main`` (a
traceback), another exit code, more than one line).  ``broken`` is a bug.  An accepted demo or Mask R-CNN case
can also be trained one step (``train_one_step``): accepted must mean runs (or, where the data is elsewhere,
one clear error when it does not).

Used by ``tests/test_config_fuzz.py`` (a few hundred cases) and ``benchmarks/config_fuzz.py --cases N``.
"""
from __future__ import annotations

import contextlib
import copy
import io
import math
import signal
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
SOURCES = {
    "demo": REPO / "configs/demo/fcos_tiny_shapes.yaml",
    "mask_rcnn": REPO / "configs/demo/mask_rcnn_tiny_shapes.yaml",
    "sweep": REPO / "configs/tune/demo_shapes.yaml",
}
KINDS = ("wrong_type", "negative", "zero", "huge", "nan", "empty", "missing", "extra_key", "misspelt_type",
         "base_loop", "bad_set")
BAD_SETS = ["model.backbone", "=3", "model..neck=1", "model.neck.in_channels=[1, 2", "optimizer={lr: 1",
            "data.samples_per_gpu=", "runner.max_epochs=3=4", "model.neck.in_channels.99=1", "+=1",
            "data.train.pipeline.x=1", "seed: 3", "model.bbox_head.num_classes=[3", "' '=1"]


@dataclass
class Case:
    """One mutated config: ``files`` (name -> YAML text; the first is the one checked) and ``--set`` args."""

    number: int
    source: str
    kind: str
    what: str
    files: dict[str, str]
    overrides: list[str] = field(default_factory=list)


@dataclass
class Outcome:
    case: Case
    verdict: str  # "accepted", "error line" or "broken"
    code: int | None
    output: str


def resolved(source: str, data_root: Path) -> dict:
    """A source config as one self-contained dict: a training config fully resolved; the sweep as written, its
    ``_base_`` made absolute (a sweep's own keys are its ``search``, ``tune`` and the overrides it makes)."""
    from raydet.config import load_config

    path = SOURCES[source]
    if source == "sweep":
        raw = yaml.safe_load(path.read_text())
        raw["_base_"] = str((path.parent / raw["_base_"]).resolve())
        raw.setdefault("data", {})["data_root"] = str(data_root)
        return raw
    return yaml.safe_load(load_config(path, [f"data.data_root={data_root}"]).to_yaml())


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path in ``node`` (dicts and lists), parents before children."""
    found = []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        if key == "_base_":
            continue
        found.append(prefix + (key,))
        found.extend(_paths(value, prefix + (key,)))
    return found


def _get(node: Any, path: tuple) -> Any:
    for key in path:
        node = node[key]
    return node


def _mutated_value(kind: str, value: Any) -> Any:
    if kind == "wrong_type":
        if isinstance(value, bool):
            return "maybe"
        if isinstance(value, (int, float)):
            return "abc"
        if isinstance(value, str):
            return 12345
        if isinstance(value, list):
            return {"x": 1}
        if isinstance(value, dict):
            return [1, 2]
        return "abc"
    if kind == "negative":
        return -abs(value) - 1 if isinstance(value, (int, float)) and not isinstance(value, bool) else -1
    if kind == "zero":
        return 0
    if kind == "huge":
        return 1e300 if isinstance(value, float) else 10 ** 15
    if kind == "nan":
        return float("nan")
    if kind == "empty":
        empty = {str: "", list: [], dict: {}}
        return empty.get(type(value))
    raise ValueError(kind)


def _misspelt(name: str, rng: np.random.Generator) -> str:
    at = int(rng.integers(len(name)))
    return name[:at] + name[at + 1:] if len(name) > 3 and rng.random() < 0.5 else name[:at] + "x" + name[at:]


def make_case(number: int, rng: np.random.Generator, bases: dict[str, dict]) -> Case:
    """The ``number``-th case of the sequence ``rng`` draws (sources and kinds in turn)."""
    source = list(SOURCES)[number % len(SOURCES)]
    kind = KINDS[(number // len(SOURCES)) % len(KINDS)]
    config = copy.deepcopy(bases[source])
    name = f"{source}.yaml"
    if kind == "base_loop":
        other = "other.yaml"
        config["_base_"] = other
        return Case(number, source, kind, f"{name} and {other} name each other as _base_",
                    {name: yaml.safe_dump(config), other: yaml.safe_dump({"_base_": name, "seed": 1})})
    if kind == "bad_set":
        text = BAD_SETS[int(rng.integers(len(BAD_SETS)))]
        return Case(number, source, kind, f"--set {text}", {name: yaml.safe_dump(config)}, [text])
    paths = _paths(config)
    if kind == "extra_key":
        dicts = [()] + [path for path in paths if isinstance(_get(config, path), dict)]
        path = dicts[int(rng.integers(len(dicts)))]
        _get(config, path)["colour_of_the_day"] = 7
        what = f"{'.'.join(map(str, path + ('colour_of_the_day',)))}: 7"
    elif kind == "misspelt_type":
        typed = [path for path in paths if path[-1] == "type" and isinstance(_get(config, path), str)]
        path = typed[int(rng.integers(len(typed)))]
        parent = _get(config, path[:-1])
        parent["type"] = _misspelt(parent["type"], rng)
        what = f"{'.'.join(map(str, path))}: {parent['type']}"
    else:
        path = paths[int(rng.integers(len(paths)))]
        parent, key = _get(config, path[:-1]), path[-1]
        if kind == "missing":
            del parent[key]
            what = f"{'.'.join(map(str, path))} removed"
        else:
            parent[key] = _mutated_value(kind, parent[key])
            what = f"{'.'.join(map(str, path))}: {parent[key]!r}"
    return Case(number, source, kind, what, {name: yaml.safe_dump(config)})


#: A check that takes longer than this is broken (a model of 10**15 FPN levels never finishes building).
CASE_SECONDS = 30


class CaseTimeout(BaseException):
    """Raised in a case that ran past ``CASE_SECONDS``."""


@contextlib.contextmanager
def _time_limit(seconds: int):
    def expire(signum, frame):
        raise CaseTimeout(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    started, outer = time.monotonic(), signal.alarm(seconds)  # outer: an alarm already set (pytest-timeout's)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        if outer:
            signal.alarm(max(1, round(outer - (time.monotonic() - started))))


def run_case(case: Case, folder: Path) -> Outcome:
    """Write the case's files into ``folder`` and run its command's ``main`` here, capturing what it prints."""
    from raydet import check
    from raydet.tune import __main__ as tune_cli

    folder.mkdir(parents=True, exist_ok=True)
    for name, text in case.files.items():
        (folder / name).write_text(text)
    first = str(folder / next(iter(case.files)))
    argv = [first] + (["--set", *case.overrides] if case.overrides else [])
    out, err = io.StringIO(), io.StringIO()
    code = None
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), _time_limit(CASE_SECONDS):
        try:
            code = tune_cli.main(argv + ["--check"]) if case.source == "sweep" else check.main(argv)
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
        except BaseException:  # noqa: BLE001 - a traceback (or a check that never ends) is the finding
            err.write(traceback.format_exc())
    lines = [line for line in err.getvalue().splitlines() if line.strip()]
    if code == 0:
        verdict = "accepted"
    elif code == 2 and len(lines) == 1 and lines[0].startswith("error: "):
        verdict = "error line"
    else:
        verdict = "broken"
    return Outcome(case, verdict, code, err.getvalue()[-3000:])


def train_one_step(case: Case, folder: Path) -> float:
    """Build an accepted training config's model and optimizer and take one optimizer step on its first training
    batch, here; returns the loss (raises what the step raises)."""
    from raydet.builder import batch_recipe, build_dataset, build_model, optimizer_factory
    from raydet.config import load_config
    from raydet.config.parsed import parse_config
    from raydet.data.collate import to_device
    from raydet.data.decode import decode_planned_batch

    config = load_config(folder / next(iter(case.files)), case.overrides)
    parsed = parse_config(config)
    model = build_model(parsed)
    optimizer = optimizer_factory(parsed)(model)
    recipe = batch_recipe(parsed, "train")
    table = build_dataset(parsed, "train").table()
    count = min(2, table.num_rows)
    batch, _ = decode_planned_batch(table, np.arange(count), np.arange(count), recipe.pipeline,
                                    recipe.data.size_divisor, with_gt=True)
    model.train()
    losses = model(**to_device(batch), return_loss=True)
    loss = sum(value for key, value in losses.items() if "loss" in key)
    loss.backward()
    optimizer.step()
    return float(loss)


def fuzz(count: int, seed: int, data_root: Path, folder: Path, train_sample: int = 20) -> dict:
    """``count`` cases from ``seed``: the counts per verdict, every broken case, and the first ``train_sample``
    accepted training configs trained one step: those that fail are listed, except where training says what
    ``raydet.check`` could not know (the data is not on this machine, or there is none) in one line."""
    from raydet.errors import UserError

    rng = np.random.default_rng(seed)
    bases = {source: resolved(source, data_root) for source in SOURCES}
    counts = {"cases": count, "accepted": 0, "error line": 0, "broken": 0}
    broken, trained, refused_to_train, untrainable = [], 0, 0, []
    for number in range(count):
        case = make_case(number, rng, bases)
        outcome = run_case(case, folder / f"case_{number}")
        counts[outcome.verdict] += 1
        if outcome.verdict == "broken":
            broken.append(f"{case.source} {case.kind} {case.what}: code {outcome.code}: {outcome.output[-800:]}")
        elif outcome.verdict == "accepted" and case.source != "sweep" and trained < train_sample:
            trained += 1
            try:
                with _time_limit(CASE_SECONDS):
                    loss = train_one_step(case, folder / f"case_{number}")
                if not math.isfinite(loss) and case.kind not in ("huge", "negative"):
                    untrainable.append(f"{case.source} {case.kind} {case.what}: loss {loss}")
            except UserError:  # what check cannot know (data not on this machine, none at all): one line too
                refused_to_train += 1
            except (Exception, CaseTimeout) as err:  # noqa: BLE001 - accepted but does not run: the finding
                untrainable.append(f"{case.source} {case.kind} {case.what}: {type(err).__name__}: {err}"[:800])
    return {**counts, "trained_one_step": trained, "refused_to_train": refused_to_train, "broken_cases": broken,
            "untrainable": untrainable}
