"""Trained detectors as MLflow models (``pytest -k mlflow_model``): each run logs its best checkpoint as a
model and registers it; ``models:/`` URIs work in ``raydet.test``, ``raydet.infer``, ``raydet.train --resume``
and in plain ``mlflow.pyfunc``; a bad URI is one error line."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from mlflow.tracking import MlflowClient
from pycocotools import mask as mask_utils

from raydet import evaluate as test_cli
from raydet import infer
from raydet import train as train_cli
from raydet.builder import build_dataset
from raydet.config import load_config
from raydet.config.parsed import parse_config
from raydet.engine.launcher import launch
from raydet.engine.mlflow_models.publish import log_detector
from raydet.engine.mlflow_models.store import ENVIRONMENT, using_store
from raydet.engine.tracking import EXPERIMENT_KIND, MlflowRun
from raydet.evaluation.coco_metric import METRIC_NAMES
from tests.demo_helpers import DEMO_CONFIG, printed_metrics, quick_overrides
from tests.engine.test_mask_rcnn_end_to_end import MASK_DEMO, rigged_mask_rcnn
from tests.helpers import with_repo_on_pythonpath
from tests.ray_nodes import free_port

NAME = "shapes-fcos"


def val_images(data_root: Path, count: int) -> list[Path]:
    return sorted((data_root / "images").glob("val_*.png"))[:count]


@pytest.fixture(scope="module")
def registered(ray_session, small_shapes, tmp_path_factory) -> SimpleNamespace:
    """Two demo-sized runs in one work dir (one MLflow store), each registering its model as a version of
    ``shapes-fcos`` and moving the alias ``champion`` to it: ``runs`` (their outcomes), ``store``, ``work``, and
    ``champion_after_first`` (the alias's version between the two runs)."""
    work = tmp_path_factory.mktemp("mlflow_models") / "wd"
    runs, champion_after_first = [], None
    environment = {name: os.environ.get(name) for name in ENVIRONMENT}
    for seed in (0, 1):
        config = load_config(DEMO_CONFIG, [*quick_overrides(small_shapes), "scaling.num_workers=1", f"seed={seed}",
                                           f"mlflow.run_name=seed{seed}", f"mlflow.registered_model_name={NAME}",
                                           "mlflow.alias=champion"])
        runs.append(launch(config, work))
        if champion_after_first is None:
            champion_after_first = str(MlflowClient(runs[0].mlflow_uri).get_model_version_by_alias(NAME,
                                                                                                   "champion").version)
    # MLflow's setters export the store: the process's next runs must not log there
    assert {name: os.environ.get(name) for name in ENVIRONMENT} == environment
    return SimpleNamespace(runs=runs, store=runs[0].mlflow_uri, work=work, champion_after_first=champion_after_first)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_mlflow_model_of_each_run_is_registered_and_the_alias_moves(registered):
    client = MlflowClient(registered.store)
    versions = {str(version.version): version for version in client.search_model_versions(f"name='{NAME}'")}
    assert sorted(versions) == ["1", "2"]
    for number, run in zip(("1", "2"), registered.runs):
        model = run.final_metrics["mlflow_model"]
        assert (model["registered_model"], model["version"], model["alias"]) == (NAME, number, "champion")
        assert versions[number].run_id == run.mlflow_run_id and versions[number].tags["raydet.config"]
        logged = client.get_logged_model(model["model_id"])  # the run's Logged Model, with its metrics
        assert logged.source_run_id == run.mlflow_run_id
        assert {m.key: m.value for m in logged.metrics}["bbox_mAP"] == pytest.approx(run.final_metrics["bbox_mAP"])
    assert (registered.champion_after_first, str(client.get_model_version_by_alias(NAME, "champion").version)) == (
        "1", "2")
    experiment = client.get_experiment_by_name("raydet-demo")
    assert experiment.tags[EXPERIMENT_KIND[0]] == EXPERIMENT_KIND[1]  # MLflow's UI opens it on its runs


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_mlflow_model_version_scored_by_raydet_test_gives_the_runs_metrics(registered, capsys):
    capsys.readouterr()
    assert test_cli.main([f"models:/{NAME}/1", "--split", "val", "--tracking-uri", registered.store]) == 0
    printed = printed_metrics(capsys.readouterr().out)
    first = registered.runs[0].final_metrics
    assert {name: printed[name] for name in METRIC_NAMES} == {name: first[name] for name in METRIC_NAMES}


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_mlflow_model_in_raydet_infer_and_in_plain_mlflow_pyfunc_gives_the_same_detections(
        registered, small_shapes, tmp_path):
    images = val_images(small_shapes, 5)
    out = tmp_path / "infer"
    assert infer.main([f"models:/{NAME}@champion", *map(str, images), "--out", str(out), "--score-thr", "0.05",
                       "--tracking-uri", registered.store]) == 0
    by_raydet = json.loads((out / "predictions.json").read_text())
    script = (
        "import json, sys, mlflow.pyfunc, pandas as pd\n"
        f"model = mlflow.pyfunc.load_model('models:/{NAME}@champion')\n"
        "images = pd.DataFrame({'image': [open(p, 'rb').read() for p in sys.argv[1:]]})\n"
        "print(json.dumps(model.predict(images)))\n")
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    env["MLFLOW_TRACKING_URI"] = registered.store
    done = subprocess.run([sys.executable, "-c", script, *map(str, images)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    by_pyfunc = json.loads(done.stdout.strip().splitlines()[-1])
    assert by_raydet and len(by_pyfunc) == len(by_raydet)
    classes = set(build_dataset(parse_config(load_config(DEMO_CONFIG, [f"data.data_root={small_shapes}"])),
                                "val").classes)
    for ours, theirs in zip(by_raydet, by_pyfunc):  # both in image order, each image's in the model's order
        assert (theirs["image_id"], theirs["category_id"]) == (ours["image_id"], ours["category_id"])
        assert theirs["bbox"] == pytest.approx(ours["bbox"], abs=1e-3)
        assert theirs["score"] == pytest.approx(ours["score"], abs=1e-3)
        assert theirs["category"] in classes


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_mlflow_model_continues_training_with_resume_and_registers_under_another_name(
        registered, small_shapes, tmp_path, capsys):
    overrides = [*quick_overrides(small_shapes, epochs=2), "scaling.num_workers=1",
                 f"mlflow.tracking_uri={registered.store}"]
    capsys.readouterr()
    assert train_cli.main([str(DEMO_CONFIG), "--work-dir", str(tmp_path / "wd"), "--resume", f"models:/{NAME}/1",
                           "--register", "shapes-fcos-continued", "--set", *overrides]) == 0
    assert "registered:  models:/shapes-fcos-continued/1" in capsys.readouterr().out
    final = json.loads((tmp_path / "wd" / "final_metrics.json").read_text())
    assert final["epochs"] == 2 and final["iters"] == 24  # epoch 1 was the model's
    assert (final["mlflow_model"]["registered_model"], final["mlflow_model"]["version"]) == (
        "shapes-fcos-continued", "1")
    assert "resumed at epoch 1, iteration 12" in (tmp_path / "wd" / "train.log").read_text()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_mlflow_model_uris_that_cannot_be_used_are_one_error_line(registered, small_shapes, tmp_path, capsys,
                                                                  monkeypatch):
    import mlflow
    import mlflow.pyfunc

    class Plain(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return model_input

    with using_store(registered.store), mlflow.start_run(
            experiment_id=MlflowClient(registered.store).create_experiment("other")):
        mlflow.pyfunc.log_model(name="model", python_model=Plain(), registered_model_name="plain")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    store, image = registered.store, str(val_images(small_shapes, 1)[0])
    cases = {
        (f"models:/{NAME}/9", "--tracking-uri", store): "no such model",
        ("models:/nothing@champion", "--tracking-uri", store): "no such model",
        ("models:/plain/1", "--tracking-uri", store): "is not a raydet model",
        (f"models:/{NAME}/1", "--tracking-uri", f"http://127.0.0.1:{free_port()}"): "cannot be read from",
        (f"models:/{NAME}/1", "--tracking-uri", f"sqlite:///{tmp_path / 'none.db'}"): "no MLflow store",
        (f"models:/{NAME}/1",): "which MLflow store?",
    }
    for command, (args, expected) in [(cli, case) for case in cases.items() for cli in ("test", "infer")]:
        capsys.readouterr()
        main = test_cli.main if command == "test" else infer.main
        code = main([*args[:1], *([image, "--out", str(tmp_path / "out")] if command == "infer" else []), *args[1:]])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and expected in err[0], (command, args,
                                                                                                   err)
    assert not (tmp_path / "none.db").exists()  # an unknown sqlite store is not created
    code = train_cli.main([str(DEMO_CONFIG), "--work-dir", str(tmp_path / "wd"), "--resume", f"models:/{NAME}/9",
                           "--set", f"mlflow.tracking_uri={store}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "no such model" in err[0], err


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_mlflow_model_of_mask_rcnn_returns_rle_masks(small_shapes, tmp_path):
    """A Mask R-CNN checkpoint whose every RoI is a confident "rectangle" filled by its mask (as in
    ``test_mask_rcnn_end_to_end``), logged as a model: its pyfunc gives each detection an RLE mask of the
    image's size."""
    import mlflow.pyfunc
    import pandas as pd

    config = load_config(MASK_DEMO, quick_overrides(small_shapes))
    parsed = parse_config(config)
    torch.save({"model": rigged_mask_rcnn(config).state_dict()}, tmp_path / "checkpoint.pt")
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run = MlflowRun.create(store, "masks", "rigged", artifact_location=(tmp_path / "artifacts").as_uri())
    train = build_dataset(parsed, "train")
    published = log_detector(store, run.run_id, str(tmp_path / "checkpoint.pt"), parsed.yaml, train.classes,
                             train.cat_ids, {"segm_mAP": 0.5})
    with using_store(store):
        loaded = mlflow.pyfunc.load_model(published.model_uri)
    images = val_images(small_shapes, 2)
    results = loaded.predict(pd.DataFrame({"image": [path.read_bytes() for path in images]}))
    assert results and {r["image_id"] for r in results} == {0, 1}
    for result in results:
        from PIL import Image

        width, height = Image.open(images[result["image_id"]]).size
        assert isinstance(result["segmentation"]["counts"], str)
        assert mask_utils.decode(result["segmentation"]).shape == (height, width)
        assert mask_utils.decode(result["segmentation"]).sum() > 0
        assert result["category"] in train.classes


def test_mlflow_model_settings_are_checked():
    from raydet.config import ConfigError

    for overrides, expected in ((["mlflow.alias=champion"], "needs registered_model_name"),
                                (["mlflow.registered_model_name=x", "mlflow.log_model=false"], "needs log_model"),
                                (["mlflow.registered_model_name=' '"], "must not be empty")):
        with pytest.raises(ConfigError, match=expected):
            parse_config(load_config(DEMO_CONFIG, overrides))


def test_mlflow_model_needs_no_ray():
    done = subprocess.run([sys.executable, "-c", "import sys, raydet.engine.mlflow_models.detector_model, "
                           "raydet.engine.mlflow_models.model_uri; print('ray' in sys.modules)"],
                          env=with_repo_on_pythonpath(dict(os.environ)), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "False", done.stderr[-2000:]
