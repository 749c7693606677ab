"""``python -m raydet.check``: checks, prints, and turns every bad input into one line + exit 2."""
from __future__ import annotations

import pytest
import yaml

from tests.helpers import run_cli, write

USER_MODULE = """
import torch
from raydet.registry import MODELS


@MODELS.register()
class CliTestNeck(torch.nn.Module):
    def __init__(self, channels: int = 8):
        super().__init__()
        self.proj = torch.nn.Conv2d(channels, channels, 1)


@MODELS.register()
class CliTestNet(torch.nn.Module):
    def __init__(self, neck: torch.nn.Module, depth: int = 2):
        super().__init__()
        self.neck = neck
"""


@pytest.fixture
def project(tmp_path):
    write(tmp_path / "cli_test_parts.py", USER_MODULE)
    write(tmp_path / "base.yaml", "model:\n  type: CliTestNet\n  neck: {type: CliTestNeck, channels: 4}\n")
    write(tmp_path / "cfg.yaml", "_base_: base.yaml\ncustom_imports: [cli_test_parts]\nmodel:\n  depth: 3\n")
    return tmp_path


def raydet_check(project, *args):
    return run_cli("raydet.check", *args, cwd=project, env={"PYTHONPATH": str(project)})


def raydet_check_here(project, monkeypatch, capsys, *args) -> tuple[int, str]:
    """``python -m raydet.check`` run in this process (its ``main``): ``(exit code, stderr)``."""
    from raydet.check import main

    monkeypatch.chdir(project)
    monkeypatch.syspath_prepend(str(project))
    code = main(list(args))
    return code, capsys.readouterr().err


def test_prints_the_resolved_config(project):
    out = raydet_check(project, "cfg.yaml", "--print", "--set", "model.neck.channels=16")
    assert out.returncode == 0, out.stderr
    assert yaml.safe_load(out.stdout) == {
        "model": {"type": "CliTestNet", "neck": {"type": "CliTestNeck", "channels": 16}, "depth": 3},
        "custom_imports": ["cli_test_parts"],
    }


def test_check_builds_the_model(project):
    out = raydet_check(project, "cfg.yaml")
    assert out.returncode == 0, out.stderr
    assert "model: CliTestNet built (20 parameters)" in out.stdout
    assert out.stdout.strip().endswith("config OK")


@pytest.mark.parametrize("args,message", [
    (["missing.yaml"], "error: config file not found: {p}/missing.yaml"),
    (["cfg.yaml", "--set", "model.neck.type=CliTestNek"],
     "error: --set model.neck.type=CliTestNek: model.neck.type: unknown MODELS type 'CliTestNek' "
     "(did you mean 'CliTestNeck'?)"),
    (["cfg.yaml", "--set", "model.neck.channels=4.5"],
     "error: --set model.neck.channels=4.5: model.neck.channels: expected int, got 4.5 (float)"),
    (["cfg.yaml", "--set", "+model.neck.chanels=4"],
     "error: --set +model.neck.chanels=4: model.neck.chanels: CliTestNeck has no argument 'chanels' "
     "(did you mean 'channels'?)"),
    (["cfg.yaml", "--set", "model.neck.chanels=4"],
     "error: --set model.neck.chanels=4: model.neck.chanels does not exist in the config; "
     "did you mean 'model.neck.channels'?"),
    (["cfg.yaml", "--set", "model.depth=deep"],
     "error: --set model.depth=deep: model.depth is a number (3) in the config, got a text ('deep')"),
    (["cfg.yaml", "--set", "+modle={}"],
     "error: --set +modle={{}}: 'modle' is not a raydet config key (did you mean 'model'?)"),
    (["cfg.yaml", "--set", "model.neck.channels=-2"],
     "error: {p}/base.yaml: model.neck: CliTestNeck rejected its arguments: RuntimeError:"),
    (["cfg.yaml", "--set", "+scaling={num_workers: [2, 1]}"],
     "error: --set +scaling={{num_workers: [2, 1]}}: scaling: ScalingSettings rejected its arguments: ValueError: "
     "num_workers [2, 1]: the minimum is above the maximum; write [MIN, MAX]"),
    (["cfg.yaml", "--set", "+scaling={num_workers: [0, 2]}"],
     "error: --set +scaling={{num_workers: [0, 2]}}: scaling: ScalingSettings rejected its arguments: ValueError: "
     "num_workers [0, 2]: a range needs at least 1 worker"),
    (["cyclic.yaml"], "error: cyclic _base_: {p}/cyclic.yaml -> {p}/cyclic.yaml"),
    (["malformed.yaml"], "error: {p}/malformed.yaml:2:10: malformed YAML: mapping values are not allowed here"),
])
def test_bad_input_is_one_line_and_exit_code_2(project, monkeypatch, capsys, args, message):
    write(project / "cyclic.yaml", "_base_: cyclic.yaml\n")
    write(project / "malformed.yaml", "model:\n  type: a: b\n")
    code, stderr = raydet_check_here(project, monkeypatch, capsys, *args)
    assert code == 2
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert stderr.startswith(message.format(p=project.resolve())), stderr


def test_bad_input_from_the_real_command_line(project):
    out = raydet_check(project, "cfg.yaml", "--set", "model.neck.type=CliTestNek")
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert out.stderr.count("\n") == 1 and out.stderr.startswith(
        "error: --set model.neck.type=CliTestNek: model.neck.type: unknown MODELS type 'CliTestNek' "
        "(did you mean 'CliTestNeck'?); available: ")
    available = out.stderr.strip().split("; available: ")[1].split(", ")
    assert available == sorted(set(available))  # each name once, in order
    # the user's classes (so custom_imports ran before the error) and raydet's own
    assert {"CliTestNeck", "CliTestNet", "FPN", "PAFPN", "ResNet", "RetinaNet", "FCOS", "FasterRCNN"} <= set(available)


def test_unknown_type_in_a_base_file_names_that_file(project, monkeypatch, capsys):
    write(project / "typo_base.yaml", "model:\n  type: CliTestNet\n  neck: {type: CliTestNek}\n")
    write(project / "typo.yaml", "_base_: typo_base.yaml\ncustom_imports: [cli_test_parts]\n")
    code, stderr = raydet_check_here(project, monkeypatch, capsys, "typo.yaml")
    assert code == 2
    assert stderr.startswith(f"error: {project.resolve()}/typo_base.yaml: "
                             "model.neck.type: unknown MODELS type 'CliTestNek'")


@pytest.mark.parametrize("setting", ["optimizer.lr=1.0e+300", "optimizer.lr=-.inf"])
def test_an_optimizer_setting_beyond_float32_is_refused(setting, capsys):
    """The config fuzzer's find: ``lr: 1e+300`` passed the check, then the first step failed to convert it."""
    from raydet import check
    from tests.demo_helpers import DEMO_CONFIG

    assert check.main([str(DEMO_CONFIG), "--set", setting]) == 2
    stderr = capsys.readouterr().err.strip().splitlines()
    assert len(stderr) == 1 and f"{setting.split('=')[0]}: " in stderr[0] and "does not fit in float32" in stderr[0]
