"""The cluster files (cluster/) are valid for the tools that read them, and their commands are ones raydet
and Ray accept.

Nothing here starts Ray or reaches a cloud: Ray's own schema and validation for the launcher files, Ray's
click command line for the ``ray …`` commands, raydet's parsers and ``check_config`` for the training
commands, plain structure checks for the KubeRay manifests and the Dockerfile.
"""
from __future__ import annotations

import argparse
import json
import re
import shlex
from pathlib import Path

import click
import jsonschema
import pytest
import ray.autoscaler
import yaml
from packaging.requirements import Requirement
from packaging.version import Version

from raydet.builder import check_config
from raydet.config import Config, load_config
from raydet.evaluate import build_parser as build_test_parser
from raydet.train import build_parser
from raydet.tune.__main__ import build_parser as build_tune_parser
from raydet.tune.sweep import load_sweep
from tests.helpers import REPO

CLUSTER = REPO / "cluster"
LAUNCHER_FILES = ["aws.yaml", "gcp.yaml"]
#: what the GPU node type is called in the launcher files, the CPU one, and the KubeRay worker groups
GPU_TYPE, CPU_TYPE = "gpu_worker", "cpu_worker"
GPU_GROUP, CPU_GROUP = "gpu-workers", "cpu-workers"
#: importing Ray's command line imports ray.serve, whose pydantic models warn
pytestmark = pytest.mark.filterwarnings("ignore:Using extra keyword arguments on `Field`:DeprecationWarning")


# ---------------------------------------------------------------------------------------------- helpers


def pyproject() -> str:
    return (REPO / "pyproject.toml").read_text()


def ray_requirement() -> Requirement:
    block = re.search(r"^dependencies = \[(.*?)^\]", pyproject(), re.S | re.M)[1]
    requirements = [Requirement(text) for text in re.findall(r'"([^"]+)"', block)]
    return next(r for r in requirements if r.name == "ray")


def project_version() -> str:
    return re.search(r'^version = "([^"]+)"', pyproject(), re.M)[1]


def ray_image_version(image: str) -> str:
    """``2.60.0`` of ``rayproject/ray:2.60.0-py311-gpu``."""
    found = re.fullmatch(r"rayproject/ray:(\d+\.\d+\.\d+)-py3\d+-(gpu|cu\d+)", image)
    assert found, f"{image!r} is not a versioned GPU rayproject/ray image (rayproject/ray:X.Y.Z-py3NN-gpu)"
    return found[1]


def logical_commands(lines: list[str]) -> list[str]:
    """Shell command lines joined over ``\\`` continuations and quotes that span lines."""
    commands, pending = [], ""
    for line in lines:
        pending = f"{pending}\n{line}" if pending else line
        if pending.endswith("\\"):
            pending = pending[:-1]
            continue
        try:
            shlex.split(pending, comments=True)
        except ValueError:  # an open quote: the command goes on
            continue
        if pending.strip():
            commands.append(pending)
        pending = ""
    assert not pending, f"unterminated command: {pending!r}"
    return commands


def header_commands(path: Path) -> list[str]:
    """The commands in a file's opening comment block: the ``#   `` lines before its first bare ``#``."""
    lines = []
    for line in path.read_text().splitlines():
        if line.strip() == "#" or not line.startswith("#"):
            break
        if line.startswith("#   "):
            lines.append(line[4:])
    return logical_commands(lines)


def readme_commands() -> list[str]:
    blocks = re.findall(r"^```bash\n(.*?)^```", (CLUSTER / "README.md").read_text(), re.S | re.M)
    return [command for block in blocks for command in logical_commands(block.splitlines())]


def words(command: str) -> list[str]:
    """The words of one command, ``$(…)`` substitutions and leading ``NAME=value`` assignments dropped,
    up to a pipe or ``&``."""
    argv = shlex.split(re.sub(r"\$\([^)]*\)", "SUBSTITUTED", command), comments=True)
    while argv and re.fullmatch(r"[A-Z_]+=.*", argv[0]):
        argv.pop(0)
    for stop in ("|", "&", "&&", ";"):
        if stop in argv:
            argv = argv[: argv.index(stop)]
    return argv


def raydet_command(command: str) -> list[str] | None:
    """``["python", "-m", "raydet.…", …]`` of a command that runs raydet (directly or after ``--``), else None."""
    argv = words(command)
    if "--" in argv:
        argv = argv[argv.index("--") + 1:]
    return argv if argv[:2] == ["python", "-m"] and argv[2].startswith("raydet.") else None


def parse_args(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """``parser.parse_args(argv[3:])`` of ``python -m MODULE …``, failing with the command (argparse printed why)."""
    try:
        return parser.parse_args(argv[3:])
    except SystemExit:
        pytest.fail(f"`{shlex.join(argv)}` does not parse with {parser.prog}'s command line (see stderr)")


def parse_ray_cli(argv: list[str]) -> click.Context:
    """Parse ``ray …`` with this Ray's own click command line (nothing runs)."""
    from ray.scripts.scripts import cli

    assert argv[0] == "ray"
    command, args, names = cli, argv[1:], ["ray"]
    while isinstance(command, click.Group):
        name, args = args[0], args[1:]
        command = command.get_command(click.Context(command), name)
        assert command is not None, f"`{' '.join(names)} {name}` is not a command of Ray {ray.__version__}"
        names.append(name)
    return command.make_context(" ".join(names), args)


def checked_config(config_path: str, overrides: list[str], tmp_path: Path) -> tuple[Config, list[str]]:
    """The config a launch command names, and ``check_config``'s lines for it.  A ``data_root`` on remote
    storage is pointed at a local folder that does not exist, so the datasets' arguments and pipelines are
    checked without reading the annotations (as ``raydet.check`` does for a path that only the cluster has)."""
    config = load_config(REPO / config_path, overrides)
    if "://" in str(config["data"]["data_root"]):
        config["data"]["data_root"] = str(tmp_path / "only-on-the-cluster")
    return config, check_config(config).lines


def load_launcher(name: str) -> dict:
    return yaml.safe_load((CLUSTER / name).read_text())


def load_manifest(name: str) -> dict:
    return yaml.safe_load((CLUSTER / "kuberay" / name).read_text())


def worker_groups(cluster_spec: dict) -> dict[str, dict]:
    return {group["groupName"]: group for group in cluster_spec["workerGroupSpecs"]}


def container(group: dict) -> dict:
    (only,) = group["template"]["spec"]["containers"]
    return only


def pod_gpus(group: dict) -> int:
    return int(container(group)["resources"].get("limits", {}).get("nvidia.com/gpu", 0))


# ------------------------------------------------------------------------------- cluster launcher files


@pytest.mark.parametrize("name", LAUNCHER_FILES)
def test_cluster_launcher_file_passes_rays_schema_and_validation(name):
    config = load_launcher(name)
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(config, schema)  # the file as written: no unknown keys, the right types
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(config))  # what `ray up` does first: defaults merged, then checked
    assert ray_requirement().specifier.contains(ray_image_version(config["docker"]["image"])), (
        f"{name}: the nodes' Ray ({config['docker']['image']}) is not one pyproject.toml allows ({ray_requirement()})")


@pytest.mark.parametrize("name", LAUNCHER_FILES)
def test_cluster_launcher_gpu_workers_autoscale_from_zero_on_spot(name):
    config = load_launcher(name)
    node_types = config["available_node_types"]
    gpu_types = [key for key, node in node_types.items() if node["resources"].get("GPU")]
    assert gpu_types == [GPU_TYPE], f"{name}: expected one GPU node type, {GPU_TYPE!r}; found {gpu_types}"
    gpu = node_types[GPU_TYPE]
    assert gpu["min_workers"] == 0 < gpu["max_workers"], f"{name}: {GPU_TYPE} must scale from 0 up"
    node_config = gpu["node_config"]
    if config["provider"]["type"] == "aws":
        assert node_config.get("InstanceMarketOptions", {}).get("MarketType") == "spot", f"{name}: GPUs not on spot"
    else:
        scheduling = node_config["scheduling"]
        assert isinstance(scheduling, dict), f"{name}: GCE's scheduling is one mapping, not a list"
        assert scheduling.get("preemptible") is True or scheduling.get("provisioningModel") == "SPOT", (
            f"{name}: GPUs neither preemptible nor SPOT")
        assert scheduling.get("onHostMaintenance") == "TERMINATE", f"{name}: GPU VMs need onHostMaintenance TERMINATE"
        (accelerator,) = node_config["guestAccelerators"]
        assert accelerator["acceleratorCount"] == gpu["resources"]["GPU"], (
            f"{name}: {GPU_TYPE} advertises {gpu['resources']['GPU']} GPUs but attaches "
            f"{accelerator['acceleratorCount']}")


@pytest.mark.parametrize("name", LAUNCHER_FILES)
def test_cluster_launcher_has_cpu_workers_an_idle_timeout_and_a_head_that_does_not_train(name):
    from raydet.tune.driver import TRIAL_FUNCTION_CPUS

    config = load_launcher(name)
    node_types = config["available_node_types"]
    cpu = node_types[CPU_TYPE]
    assert not cpu["resources"].get("GPU") and cpu["resources"]["CPU"] > 0, f"{name}: {CPU_TYPE} is for decoding"
    assert cpu["min_workers"] == 0 < cpu["max_workers"], f"{name}: {CPU_TYPE} must scale from 0 up"
    assert config["idle_timeout_minutes"] > 0
    assert config["max_workers"] >= sum(node.get("max_workers", 0) for node in node_types.values()), (
        f"{name}: the global max_workers caps the node types' max_workers below their sum")
    head = node_types[config["head_node_type"]]
    assert not head["resources"].get("GPU"), f"{name}: the head must not take training workers"
    # a sweep's trial functions are pinned to the driver's node, the head for `ray job submit`
    assert TRIAL_FUNCTION_CPUS <= head["resources"]["CPU"] <= 2, (
        f"{name}: the head advertises {head['resources']['CPU']} CPUs; it needs at least "
        f"{TRIAL_FUNCTION_CPUS} for a sweep's trial functions, and more would draw decode tasks to it")


@pytest.mark.parametrize("name", LAUNCHER_FILES)
def test_cluster_launcher_installs_raydet_from_the_mounted_checkout(name):
    config = load_launcher(name)
    mounted = [remote for remote, local in config["file_mounts"].items() if local in (".", "./")]
    assert len(mounted) == 1, f"{name}: file_mounts must copy the checkout ('.': run `ray up` from the repo root)"
    commands = [*config["setup_commands"], *config.get("head_setup_commands", []),
                *config.get("worker_setup_commands", [])]
    installs = [c for c in commands if re.fullmatch(rf"pip install (-e )?{re.escape(mounted[0])}/?", c.strip())]
    assert installs and installs[0] in config["setup_commands"], (
        f"{name}: every node must `pip install [-e] {mounted[0]}` (setup_commands); found {commands}")
    # the dependencies come from pyproject.toml, not from a second list here
    assert not [c for c in commands if "pip install" in c and c not in installs], f"{name}: {commands}"
    # .venv (gigabytes), data/ and work_dirs/ stay on the laptop
    assert ".gitignore" in config.get("rsync_filter", []), f"{name}: rsync_filter must honour .gitignore"


@pytest.mark.parametrize("name", LAUNCHER_FILES)
def test_cluster_launcher_nodes_use_the_token_the_header_reads(name):
    config = load_launcher(name)
    options = " ".join(config["docker"]["run_options"])
    assert "RAY_AUTH_MODE=token" in options, (
        f"{name}: Ray 2.60's `ray start` enables tokens only with RAY_AUTH_MODE=token (or a token file in place)")
    token_path = re.search(r"RAY_AUTH_TOKEN_PATH=(\S+)", options)[1]
    mounted = {remote.replace("~/", "/home/ray/"): local for remote, local in config["file_mounts"].items()}
    assert mounted.get(token_path) == "~/.ray/auth_token", (
        f"{name}: {token_path} must be your ~/.ray/auth_token, mounted on every node")


@pytest.mark.parametrize("name", LAUNCHER_FILES)
def test_cluster_launcher_header_commands_are_what_ray_and_raydet_accept(name, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    config = load_launcher(name)
    commands = header_commands(CLUSTER / name)
    ray_commands = [words(c) for c in commands if words(c)[:1] == ["ray"]]
    ran = {tuple(argv[1:3]) if argv[1] == "job" else (argv[1],) for argv in ray_commands}
    assert {("up",), ("dashboard",), ("job", "submit"), ("down",)} <= ran, f"{name}: header lacks commands: {ran}"
    for argv in ray_commands:
        params = parse_ray_cli(argv).params
        if "cluster_config_file" in params:
            assert params["cluster_config_file"] == f"cluster/{name}", f"{name}: {argv}"
        if argv[1:3] == ["job", "submit"]:
            assert params["working_dir"] == "." and params["address"] == "http://127.0.0.1:8265", argv
    assert any("RAY_AUTH_MODE=token" in c and "ray get-auth-token" in c for c in commands), (
        f"{name}: the header must show how to send the cluster's token")

    (train,) = [argv for argv in map(raydet_command, commands) if argv]
    assert train[:3] == ["python", "-m", "raydet.train"]
    args = parse_args(build_parser(), train)
    built, lines = checked_config(args.config, args.overrides, tmp_path)
    assert any(line.startswith(f"model: {built['model']['type']} built") for line in lines)
    scaling = built["scaling"]
    assert scaling["storage_path"].startswith(("s3://", "gs://")), f"{name}: checkpoints must go where every node is"
    assert args.work_dir is not None and args.work_dir.is_absolute(), (
        f"{name}: a relative --work-dir lands in the job's temporary copy of the checkout")
    # the job fits: enough GPU nodes, and each holds whole training workers
    gpu = config["available_node_types"][GPU_TYPE]
    per_worker = {"CPU": 1, **(scaling["resources_per_worker"] or {})}
    workers_per_node = gpu["resources"]["GPU"] // per_worker.get("GPU", 1)
    assert isinstance(args.num_workers, tuple), f"{name}: spot GPU workers train as an elastic group (MIN-MAX)"
    assert args.use_gpu and args.num_workers[1] <= workers_per_node * gpu["max_workers"], (
        f"{name}: --num-workers {args.num_workers} needs more than {gpu['max_workers']} GPU nodes")
    assert gpu["resources"]["CPU"] >= workers_per_node * per_worker["CPU"], (
        f"{name}: a {GPU_TYPE} has {gpu['resources']['CPU']} CPUs, less than its {workers_per_node} training "
        f"worker(s) ask for ({per_worker})")


# ------------------------------------------------------------------------------------------ cluster/README


def test_cluster_readme_commands_are_what_ray_and_raydet_accept(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    commands = readme_commands()
    checked = set()
    for command in commands:
        argv = words(command)
        if argv[:1] == ["ray"]:
            params = parse_ray_cli(argv).params
            if params.get("runtime_env_json"):
                json.loads(params["runtime_env_json"])
            checked.add(" ".join(argv[1:3]) if argv[1] == "job" else argv[1])
        raydet = raydet_command(command)
        if raydet is None or "…" in raydet:
            continue
        module = raydet[2]
        if module == "raydet.train":
            args = parse_args(build_parser(), raydet)
            checked_config(args.config, args.overrides, tmp_path)
        elif module == "raydet.tune":
            args = parse_args(build_tune_parser(), raydet)
            load_sweep(REPO / args.config, args.overrides)
        elif module == "raydet.test":
            args = parse_args(build_test_parser(), raydet)
            assert args.checkpoint.endswith("/checkpoint.pt"), command
            load_config(REPO / args.config, args.overrides)
        else:
            continue
        checked.add(module)
    expected = {"up", "dashboard", "exec", "rsync-down", "down", "job submit", "job logs", "job stop",
                "raydet.train", "raydet.tune", "raydet.test"}
    assert expected <= checked, f"cluster/README.md lacks: {sorted(expected - checked)}"


def test_cluster_readme_spot_section_names_settings_that_exist():
    import dataclasses

    from ray.train.v2._internal import constants

    from raydet.config.schema import ScalingSettings

    text = (CLUSTER / "README.md").read_text()
    section = re.search(r"^## Spot preemption and node loss\n(.*?)^## ", text, re.S | re.M)[1]
    named = set(re.findall(r"scaling\.(\w+)", section))
    assert {"max_failures", "max_preemption_failures"} <= named <= {f.name for f in dataclasses.fields(ScalingSettings)}
    ray_variables = set(re.findall(r"RAY_TRAIN_\w+", section))
    assert ray_variables and ray_variables <= {value for value in vars(constants).values() if isinstance(value, str)}


# -------------------------------------------------------------------------------------------------- KubeRay


def test_cluster_kuberay_raycluster_autoscales_gpu_and_cpu_workers():
    manifest = load_manifest("raycluster.yaml")
    assert (manifest["apiVersion"], manifest["kind"]) == ("ray.io/v1", "RayCluster")
    check_cluster_spec(manifest["spec"], "raycluster.yaml")


def test_cluster_kuberay_raycluster_header_submits_a_job_that_checks_and_fits(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    commands = header_commands(CLUSTER / "kuberay" / "raycluster.yaml")
    for argv in (words(c) for c in commands if words(c)[:1] == ["ray"]):
        parse_ray_cli(argv)
    (train,) = [argv for argv in map(raydet_command, commands) if argv]
    args = parse_args(build_parser(), train)
    gpus = worker_groups(load_manifest("raycluster.yaml")["spec"])[GPU_GROUP]
    assert isinstance(args.num_workers, tuple), "spot GPU workers train as an elastic group (MIN-MAX)"
    assert args.use_gpu and args.num_workers[1] <= gpus["maxReplicas"] * pod_gpus(gpus)
    assert args.work_dir is not None and args.work_dir.is_absolute()
    checked_config(args.config, args.overrides, tmp_path)


def check_cluster_spec(spec: dict, where: str) -> None:
    assert spec["enableInTreeAutoscaling"] is True, f"{where}: the Ray autoscaler must run (in-tree)"
    assert Version(spec["rayVersion"]) == Version(ray_image_version_of_dockerfile()), (
        f"{where}: rayVersion {spec['rayVersion']} is not the image's Ray")
    head = spec["headGroupSpec"]
    assert not container(head)["resources"].get("limits", {}).get("nvidia.com/gpu"), f"{where}: the head trains not"
    assert int(head["rayStartParams"]["num-cpus"]) <= 1, f"{where}: the head only coordinates"
    groups = worker_groups(spec)
    assert set(groups) == {GPU_GROUP, CPU_GROUP}, f"{where}: worker groups {sorted(groups)}"
    for name, group in groups.items():
        assert group["minReplicas"] == 0 < group["maxReplicas"], f"{where}: {name} must scale from 0 up"
        assert group["minReplicas"] <= group.get("replicas", 0) <= group["maxReplicas"], f"{where}: {name} replicas"
        resources = container(group)["resources"]
        assert resources["limits"].get("cpu") and resources["limits"].get("memory"), f"{where}: {name} limits"
        if resources.get("requests", {}).get("nvidia.com/gpu"):
            assert resources["requests"]["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"], where
    assert pod_gpus(groups[GPU_GROUP]) >= 1, f"{where}: {GPU_GROUP} needs nvidia.com/gpu limits"
    assert pod_gpus(groups[CPU_GROUP]) == 0, f"{where}: {CPU_GROUP} is for decoding"


def test_cluster_kuberay_rayjob_runs_a_raydet_command_that_checks_and_fits(tmp_path):
    manifest = load_manifest("rayjob.yaml")
    assert (manifest["apiVersion"], manifest["kind"]) == ("ray.io/v1", "RayJob")
    spec = manifest["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    check_cluster_spec(spec["rayClusterSpec"], "rayjob.yaml")
    # the same worker groups as the long-lived cluster
    assert spec["rayClusterSpec"]["workerGroupSpecs"] == load_manifest("raycluster.yaml")["spec"]["workerGroupSpecs"]

    argv = shlex.split(spec["entrypoint"])
    assert argv[:3] == ["python", "-m", "raydet.train"], "the entrypoint runs in the submitter's shell: one command"
    args = parse_args(build_parser(), argv)
    gpus = worker_groups(spec["rayClusterSpec"])[GPU_GROUP]
    assert isinstance(args.num_workers, tuple), "spot GPU workers train as an elastic group (MIN-MAX)"
    assert args.use_gpu and args.num_workers[1] == gpus["maxReplicas"] * pod_gpus(gpus), (
        f"--num-workers {args.num_workers} is not {GPU_GROUP} maxReplicas x GPUs per pod "
        f"({gpus['maxReplicas']} x {pod_gpus(gpus)})")
    built, lines = checked_config(args.config, args.overrides, tmp_path)
    assert any(line.startswith("model: RetinaNet built") for line in lines)
    per_worker = {"CPU": 1, **(built["scaling"]["resources_per_worker"] or {})}
    assert float(container(gpus)["resources"]["limits"]["cpu"]) >= pod_gpus(gpus) * per_worker["CPU"], (
        f"a {GPU_GROUP} pod has fewer CPUs than its training workers ask for ({per_worker})")
    assert built["scaling"]["storage_path"].startswith(("s3://", "gs://")), "checkpoints must outlive the cluster"
    # the config path is relative: the image's working directory must hold configs/
    assert (REPO / args.config).is_file() and dockerfile_workdir_holds("configs")


# ---------------------------------------------------------------------------------------------- Dockerfile


def dockerfile() -> str:
    return (CLUSTER / "Dockerfile").read_text()


def ray_image_version_of_dockerfile() -> str:
    (base,) = re.findall(r"^FROM\s+(\S+)", dockerfile(), re.M)
    return ray_image_version(base)


def dockerfile_workdir_holds(name: str) -> bool:
    (workdir,) = re.findall(r"^WORKDIR\s+(\S+)", dockerfile(), re.M)
    copies = re.findall(r"^COPY\s+(?:--\S+\s+)*(.+)$", dockerfile(), re.M)
    return any(line.split()[:-1] == [name] and line.split()[-1].rstrip("/") in (f"./{name}", f"{workdir}/{name}")
               for line in copies)


def documented_image() -> str:
    (tag,) = re.findall(r"docker build -f cluster/Dockerfile -t (\S+) \.$", dockerfile(), re.M)
    return tag


def test_cluster_dockerfile_builds_on_the_ray_pyproject_allows_and_installs_raydet():
    assert ray_requirement().specifier.contains(ray_image_version_of_dockerfile()), (
        f"cluster/Dockerfile's Ray {ray_image_version_of_dockerfile()} is not one pyproject.toml allows "
        f"({ray_requirement()})")
    python = re.search(r"-py3(\d+)-", re.search(r"^FROM\s+(\S+)", dockerfile(), re.M)[1])[1]
    requires = re.search(r'^requires-python = "([^"]+)"', pyproject(), re.M)[1]
    assert Requirement(f"python{requires}").specifier.contains(f"3.{python}")
    assert re.search(r"^RUN pip install --no-cache-dir \.(\s|$)", dockerfile(), re.M), "the image must install raydet"
    for name in ("pyproject.toml", "README.md", "raydet"):  # what `pip install .` reads (README: readme =)
        assert re.search(rf"^COPY\s.*\b{re.escape(name)}\b", dockerfile(), re.M), f"cluster/Dockerfile must copy {name}"
    assert documented_image() == f"YOUR-REGISTRY/raydet:{project_version()}", (
        "cluster/Dockerfile's documented tag must be raydet's version (pyproject.toml)")
    # the build context is an allow-list (.venv alone is gigabytes) of what the Dockerfile copies
    patterns = [line for line in (CLUSTER / "Dockerfile.dockerignore").read_text().splitlines()
                if line and not line.startswith("#")]
    copies = re.findall(r"^COPY\s+(?:--\S+\s+)*(.+)$", dockerfile(), re.M)
    copied = {name for line in copies for name in line.split()[:-1]}
    assert patterns[0] == "*" and copied <= {p[1:] for p in patterns if p.startswith("!")}, (
        f"cluster/Dockerfile.dockerignore must exclude everything but {sorted(copied)}")


@pytest.mark.parametrize("name", ["raycluster.yaml", "rayjob.yaml"])
def test_cluster_kuberay_pods_run_the_documented_image(name):
    manifest = load_manifest(name)
    spec = manifest["spec"] if manifest["kind"] == "RayCluster" else manifest["spec"]["rayClusterSpec"]
    images = {container(group)["image"] for group in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]}
    assert images == {documented_image()}, f"{name}: pods run {images}, cluster/Dockerfile builds {documented_image()}"
