"""The one-way architecture, checked on the source: no import cycles between raydet's
units, model code without Ray, data and models below the builder, the builder below the engine."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO

PACKAGE = REPO / "raydet"
pytestmark = pytest.mark.timeout(60)


def module_name(path: Path) -> str:
    """``raydet/data/coco.py`` -> ``raydet.data.coco``; a package's ``__init__.py`` is the package."""
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, at module level or inside functions, as absolute names."""
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            found.add(prefix)
            found.update(f"{prefix}.{alias.name}" for alias in node.names)  # `from . import data`
    return found


def unit(module: str) -> str | None:
    """raydet's unit of a module: its subpackage (``data``) or top-level module (``builder``)."""
    parts = module.split(".")
    return parts[1] if parts[0] == "raydet" and len(parts) > 1 else None


def is_unit(name: str) -> bool:
    return (PACKAGE / name).is_dir() or (PACKAGE / f"{name}.py").is_file()


def unit_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        source = unit(module_name(path))
        if source is None:
            continue
        targets = {unit(m) for m in imported_modules(path)}
        graph.setdefault(source, set()).update(t for t in targets if t and t != source and is_unit(t))
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as ``[a, b, ..., a]``, or None."""
    state: dict[str, str] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = "open"
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                return path[path.index(target):] + [node, target] if target in path else [node, target]
            if target not in state and (cycle := visit(target, path + [node])):
                return cycle
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start, [])):
            return cycle
    return None


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycles_between_raydet_units():
    graph = unit_graph()
    assert {"builder", "config", "data", "engine", "models"} <= set(graph)  # the graph was read
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def python_files(under: Path) -> list[Path]:
    """``under`` (one file) or the Python files under it (a folder): at least one, else a check of them means
    nothing (a folder that moved)."""
    paths = [under] if under.is_file() else sorted(under.rglob("*.py"))
    assert paths, f"no Python file at {under}"
    return paths


def importers(prefixes: tuple[str, ...], under: Path) -> list[str]:
    """Files under ``under`` (a folder or one file) that import a module starting with one of ``prefixes``."""
    return sorted(str(path.relative_to(REPO)) for path in python_files(under)
                  if any(m == p or m.startswith(p + ".") for m in imported_modules(path) for p in prefixes))


def test_the_import_scans_find_imports_that_are_there():
    """The checks below expect empty answers: the same scans find the imports that raydet does make."""
    assert importers(("ray",), PACKAGE / "engine") != []
    assert importers(("torch",), PACKAGE / "models") != []
    assert importers(("raydet.engine",), PACKAGE / "train.py") == ["raydet/train.py"]
    assert config_imports_beyond_the_schema(PACKAGE / "engine") != []


def test_model_code_never_imports_ray():
    assert importers(("ray",), PACKAGE / "models") == []


def test_the_speed_paths_stay_out_of_the_model_zoo():
    """The model zoo computes torchvision's functions: ``raydet.accel`` changes a built model from outside
    (the engine applies it), is Ray-free, and reads only the config's schema."""
    assert importers(("raydet.accel",), PACKAGE / "models") == []
    assert importers(("ray",), PACKAGE / "accel") == []
    assert config_imports_beyond_the_schema(PACKAGE / "accel") == []


def test_ray_free_modules_stay_ray_free():
    for name in ("data/decode.py", "engine/trainer.py", "engine/hooks.py", "engine/stopwatch.py", "builder.py",
                 "config/schema.py", "config/parsed.py", "tune/space.py", "tune/settings.py", "tune/sweep.py",
                 "tune/results.py", "tune/__main__.py"):
        assert (PACKAGE / name).is_file(), name
        assert importers(("ray",), PACKAGE / name) == [], name


def test_data_and_models_never_reach_up_to_the_builder_engine_or_command_lines():
    upper = ("raydet.builder", "raydet.engine", "raydet.cli", "raydet.check", "raydet.train", "raydet.test",
             "raydet.evaluate", "raydet.infer")
    assert importers(upper, PACKAGE / "data") == []
    assert importers(upper, PACKAGE / "models") == []
    assert importers(upper, PACKAGE / "accel") == []


def test_the_builder_never_imports_the_engine():
    assert importers(("raydet.engine",), PACKAGE / "builder.py") == []


def test_ray_free_modules_do_not_import_ray_even_indirectly():
    """Imported in a fresh interpreter, the Ray-free parts leave ``ray`` out of ``sys.modules``
    (``python -m raydet.tune --check`` among them: it checks a sweep without starting Ray)."""
    modules = ["raydet.data.decode", "raydet.engine.trainer", "raydet.engine.hooks", "raydet.builder",
               "raydet.config.schema", "raydet.models", "raydet.tune.sweep", "raydet.tune.results",
               "raydet.tune.__main__"]
    code = (f"import sys\nfor m in {modules!r}: __import__(m)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'ray'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_processes_that_build_nothing_stay_light():
    """The helper actors started for every run import neither torch nor mlflow when they start: the run
    recorder (its MLflow client is made on its first record) and the data stream runner (whose pipelines name
    a light task body); ``import raydet`` and ``import raydet.data`` import nothing: a registry imports its
    built-ins on first use."""
    code = ("import sys, raydet, raydet.engine.recorder, raydet.data.stream_runner\n"
            "from raydet.engine.tracking import MlflowRun\n"
            "run = MlflowRun('sqlite:////nonexistent/mlflow.db', 'run-id')\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'torchvision', 'mlflow'}),"
            " sorted(m for m in sys.modules if m.startswith(('raydet.models', 'raydet.data'))))\n"
            "from raydet.registry import MODELS, TRANSFORMS, DATASETS\n"
            "print('FCOS' in MODELS, 'Resize' in TRANSFORMS, 'VOCDataset' in DATASETS)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["[] ['raydet.data', 'raydet.data.decode_tasks', 'raydet.data.stream_runner']",
                                       "True True True"]


def config_imports_beyond_the_schema(under: Path) -> list[str]:
    """Files under ``under`` importing ``raydet.builder`` or any of ``raydet.config`` but its schema."""
    found = []
    for path in python_files(under):
        for module in imported_modules(path):
            if module.startswith("raydet.builder") or (module.startswith("raydet.config")
                                                       and not module.startswith("raydet.config.schema")):
                found.append(f"{path.relative_to(REPO)}: {module}")
    return sorted(found)


def test_only_the_launcher_reads_the_config_in_the_engine_and_data_models_use_only_its_schema():
    # the two entry points that start from a config: a training run, and a logged model loaded by MLflow
    engine = [line for line in config_imports_beyond_the_schema(PACKAGE / "engine")
              if not line.startswith(("raydet/engine/launcher.py", "raydet/engine/mlflow_models/detector_model.py"))]
    assert engine == []
    assert config_imports_beyond_the_schema(PACKAGE / "data") == []
    assert config_imports_beyond_the_schema(PACKAGE / "models") == []


def code_lines(path: Path) -> dict[str, int]:
    """``{qualified function name: lines of code}`` of every function in ``path``: docstrings, comments and
    blank lines not counted."""
    source = path.read_text().splitlines()
    sizes = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                first = child.body[0]
                docstring = (range(first.lineno, first.end_lineno + 1) if isinstance(first, ast.Expr)
                             and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str)
                             else range(0))
                sizes[prefix + child.name] = sum(
                    1 for number in range(child.lineno, child.end_lineno + 1)
                    if number not in docstring and source[number - 1].strip()
                    and not source[number - 1].strip().startswith("#"))
                visit(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")

    visit(ast.parse(path.read_text()), "")
    return sizes


def test_code_lines_counts_code_only(tmp_path):
    path = tmp_path / "sample.py"
    path.write_text('def f():\n    """Doc.\n\n    More."""\n    # a comment\n\n    return 1\n\n'
                    "class C:\n    def g(self):\n        x = 1\n        return x\n")
    assert code_lines(path) == {"f": 2, "C.g": 3}


def test_the_orchestration_stays_small():
    """``launch`` and the worker loop read as their phases; no function of raydet is over 60 lines of code."""
    assert code_lines(PACKAGE / "engine/launcher.py")["launch"] < 40
    assert code_lines(PACKAGE / "engine/train_loop.py")["train_loop_per_worker"] < 40
    sizes = {f"{path.relative_to(PACKAGE)}: {name}": size for path in PACKAGE.rglob("*.py")
             for name, size in code_lines(path).items()}
    assert len(sizes) > 500
    assert {name: size for name, size in sizes.items() if size > 60} == {}
