"""Data, checkpoints and results on S3, end to end: a real S3 HTTP server (moto) on loopback, the shapes
data uploaded to a bucket, ``python -m raydet.train`` with ``data_root`` and ``storage_path`` in it,
``python -m raydet.test`` on the ``best_checkpoint`` URI, ``python -m raydet.infer`` over an S3 folder, and
``--resume`` from that URI."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from raydet.config import load_config
from raydet.engine.launcher import launch
from tests.demo_helpers import DEMO_CONFIG, quick_overrides
from tests.helpers import REPO, own_lines, run_cli

BUCKET = "raydet-s3-test"


def upload_folder(client, folder: Path, prefix: str) -> str:
    """Every file under ``folder`` to ``s3://BUCKET/prefix/…``; returns that URI."""
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            client.upload_file(str(path), BUCKET, f"{prefix}/{path.relative_to(folder).as_posix()}")
    return f"s3://{BUCKET}/{prefix}"


def read_object(client, uri: str) -> bytes:
    bucket, key = uri.removeprefix("s3://").split("/", 1)
    return client.get_object(Bucket=bucket, Key=key)["Body"].read()


def no_local_s3_folders(*folders: Path) -> bool:
    """A URI taken for a local path would have made a folder named ``s3:``."""
    return not any(path.name.startswith("s3:") for folder in folders for path in folder.rglob("*"))


@pytest.fixture(scope="module")
def s3_shapes(s3_server, small_shapes) -> str:
    s3_server.create_bucket(Bucket=BUCKET)
    return upload_folder(s3_server, small_shapes, "data/shapes")


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_s3_data_checkpoints_test_cli_and_resume(ray_session, s3_server, s3_shapes, small_shapes, tmp_path):
    runs = f"s3://{BUCKET}/runs"
    work_dir = tmp_path / "wd"
    trained = run_cli("raydet.train", str(DEMO_CONFIG), "--work-dir", str(work_dir), "--set",
                      *quick_overrides(s3_shapes), f"scaling.storage_path={runs}", "scaling.num_workers=1",
                      cwd=tmp_path, timeout=300)
    assert trained.returncode == 0, trained.stdout[-3000:] + trained.stderr[-3000:]
    final = json.loads((work_dir / "final_metrics.json").read_text())
    checkpoint = final["best_checkpoint"]
    assert checkpoint.startswith(runs + "/") and checkpoint.endswith("/checkpoint.pt"), checkpoint
    assert len(read_object(s3_server, checkpoint)) > 1000
    run_folder = checkpoint.rsplit("/", 2)[0]  # runs/<run>/checkpoint_…/checkpoint.pt
    assert json.loads(read_object(s3_server, f"{run_folder}/final_metrics.json")) == final
    assert b"data_root: s3://" in read_object(s3_server, f"{run_folder}/config.yaml")
    assert final["epochs"] == 1 and final["iters"] == 12  # 48 images, 4 per batch, one worker

    tested = run_cli("raydet.test", str(DEMO_CONFIG), checkpoint, "--split", "val",
                     "--out", f"s3://{BUCKET}/eval/results.json", "--set", f"data.data_root={s3_shapes}",
                     cwd=tmp_path, timeout=240)
    assert tested.returncode == 0, tested.stdout[-3000:] + tested.stderr[-3000:]
    metrics = json.loads(own_lines(tested.stdout)[-1])
    results = json.loads(read_object(s3_server, f"s3://{BUCKET}/eval/results.json"))  # the detections, COCO format
    assert isinstance(results, list) and all(set(r) == {"image_id", "category_id", "bbox", "score"} for r in results)
    assert metrics["bbox_mAP_50"] == pytest.approx(final["bbox_mAP_50"], abs=1e-3)  # the same model on the same images

    # python -m raydet.infer over an S3 folder of images, its pictures and predictions written to S3
    images = sorted(path for path in (small_shapes / "images").iterdir() if path.name.startswith("val"))[:3]
    for path in images:
        s3_server.upload_file(str(path), BUCKET, f"new_images/{path.name}")
    inferred = run_cli("raydet.infer", str(DEMO_CONFIG), checkpoint, f"s3://{BUCKET}/new_images",
                       "--out", f"s3://{BUCKET}/inferred", "--set", f"data.data_root={s3_shapes}",
                       cwd=tmp_path, timeout=240)
    assert inferred.returncode == 0, inferred.stdout[-3000:] + inferred.stderr[-3000:]
    assert json.loads(own_lines(inferred.stdout)[-1])["detected"] == 3
    predictions = json.loads(read_object(s3_server, f"s3://{BUCKET}/inferred/predictions.json"))
    assert {p["file_name"] for p in predictions} <= {f"s3://{BUCKET}/new_images/{path.name}" for path in images}
    for path in images:
        assert read_object(s3_server, f"s3://{BUCKET}/inferred/pictures/{path.name}")[:8] == b"\x89PNG\r\n\x1a\n"

    # Resume from the URI without a worker group: the loop itself writes the checkpoints to S3.
    config = load_config(DEMO_CONFIG, [*quick_overrides(s3_shapes, epochs=2), f"scaling.storage_path={runs}"])
    resumed = launch(config, tmp_path / "resumed", resume=checkpoint, num_workers=0)
    assert resumed.final_metrics["epochs"] == 2 and resumed.final_metrics["iters"] == 24
    assert resumed.final_metrics["best_checkpoint"].startswith(runs + "/")
    saved = read_object(s3_server, resumed.final_metrics["best_checkpoint"])
    assert len(saved) > 1000
    assert no_local_s3_folders(tmp_path, REPO)


def test_s3_missing_checkpoint_is_one_clear_error(s3_server, s3_shapes, tmp_path):
    missing = f"s3://{BUCKET}/runs/nothing/checkpoint.pt"
    tested = run_cli("raydet.test", str(DEMO_CONFIG), missing, "--set", f"data.data_root={s3_shapes}", cwd=tmp_path)
    assert tested.returncode == 2
    assert own_lines(tested.stderr) == [f"error: checkpoint not found: {missing}"]
