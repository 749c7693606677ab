"""``python -m raydet.train`` on bad input: one line, exit code 2 (no worker started, or the run stopped by a
NaN loss); hostile images skipped and counted while the rest trains."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from tests.demo_helpers import DEMO_CONFIG, printed_metrics, quick_overrides
from tests.helpers import own_lines, run_cli


@pytest.mark.timeout(120)
def test_unbuildable_model_fails_before_ray_starts(small_shapes, tmp_path):
    out = run_cli("raydet.train", str(DEMO_CONFIG), "--work-dir", str(tmp_path / "wd"), "--set",
                  *quick_overrides(small_shapes), "model.neck.type=PAFNP")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [out.stderr.strip()]
    assert "model.neck.type: unknown MODELS type 'PAFNP' (did you mean 'PAFPN'?)" in out.stderr
    assert "Traceback" not in out.stderr
    assert "Ray instance" not in out.stdout + out.stderr  # failed before Ray, let alone a worker


@pytest.mark.timeout(120)
def test_num_classes_that_do_not_match_the_data_fail_before_ray_starts(small_shapes, tmp_path):
    out = run_cli("raydet.train", str(DEMO_CONFIG), "--work-dir", str(tmp_path / "wd"), "--set",
                  *quick_overrides(small_shapes), "model.bbox_head.num_classes=2")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip() == ("error: --set model.bbox_head.num_classes=2: model.bbox_head.num_classes is 2 but "
                                  "data.train has 3 classes (rectangle, ellipse, triangle); set it to 3")
    assert "Ray instance" not in out.stdout + out.stderr


@pytest.mark.timeout(120)
def test_dataset_without_usable_images_says_so(tmp_path):
    images = [{"id": i, "file_name": f"missing_{i}.png", "width": 64, "height": 64} for i in (1, 2)]
    annotations = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 10, 10], "area": 100, "iscrowd": 0}]
    (tmp_path / "ann.json").write_text(json.dumps({"images": images, "annotations": annotations,
                                                  "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"},
                                                                 {"id": 3, "name": "c"}]}))
    out = run_cli("raydet.train", str(DEMO_CONFIG), "--work-dir", str(tmp_path / "wd"), "--set",
                  f"data.data_root={tmp_path}", "data.train.ann_file=ann.json", "data.train.img_prefix=.",
                  "data.val.ann_file=ann.json", "data.val.img_prefix=.", "data.test.ann_file=ann.json",
                  "data.test.img_prefix=.", timeout=100)
    assert out.returncode == 2, out.stderr[-2000:]
    assert "Traceback" not in out.stderr
    last = own_lines(out.stderr)[-1]
    assert last.startswith("error: data.train") and "no usable images" in last and "missing_image" in last
    assert not (tmp_path / "wd" / "ray_results").exists()  # no worker ever started


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_nan_loss_stops_the_run_with_one_error_line(small_shapes, tmp_path):
    """SGD at lr 1e20 blows the weights up in one step: iteration 2's losses are NaN.  raydet says so in
    one last line (Ray's own streamed worker logs, prefixed ``(… pid=…)``, may show the worker's traceback)."""
    out = run_cli("raydet.train", str(DEMO_CONFIG), "--work-dir", str(tmp_path / "wd"), "--set",
                  *quick_overrides(small_shapes), "scaling.num_workers=1", "optimizer.type=SGD", "optimizer.lr=1.0e+20",
                  "optimizer_config.grad_clip=null", "lr_config.warmup=null", timeout=380)
    assert out.returncode == 2, out.stderr[-3000:]
    raydet_lines = own_lines(out.stderr)
    assert not any("Traceback" in line for line in raydet_lines), out.stderr[-3000:]
    last = raydet_lines[-1]
    assert last.startswith("error: non-finite loss at iteration 2 (epoch 1): "), last
    assert "loss_cls=nan" in last and "optimizer.lr" in last and "grad_clip" in last


@pytest.mark.timeout(300)
def test_hostile_images_are_skipped_and_counted_and_the_rest_trains_and_is_scored(ray_session, small_shapes, tmp_path,
                                                                                   capsys):
    """A decompression bomb and a PNG that crashes torchvision's decoder among the training images, a JPEG cut
    short under a .png name among the validation images: training ends, each counted by kind, and
    ``raydet.test`` on its checkpoint scores the rest."""
    from raydet import evaluate
    from raydet.config import load_config
    from raydet.engine.launcher import launch
    from tests.hostile_images import encoded, png_declaring

    data = tmp_path / "shapes"
    shutil.copytree(small_shapes, data)
    (data / "images/train_000004.png").write_bytes(png_declaring(60000, 60000))
    (data / "images/train_000007.png").write_bytes(png_declaring(64, 64))
    (data / "images/val_000001.png").write_bytes(encoded(np.zeros((64, 64, 3), np.uint8), "JPEG")[:-100])
    overrides = [*quick_overrides(data), "scaling.num_workers=0"]
    outcome = launch(load_config(DEMO_CONFIG, overrides), tmp_path / "wd")
    problems = outcome.final_metrics["decode_problems"]
    assert set(problems) == {"oversized_image", "corrupt_image"} and outcome.final_metrics["iters"] > 0, problems
    assert outcome.final_metrics["bbox_mAP"] >= 0
    capsys.readouterr()
    assert evaluate.main([str(DEMO_CONFIG), outcome.final_metrics["best_checkpoint"], "--set", *overrides]) == 0
    printed = capsys.readouterr()
    assert "found while decoding: 1 corrupt_image" in printed.err and "val_000001.png" in printed.err
    assert "bbox_mAP" in printed_metrics(printed.out)
