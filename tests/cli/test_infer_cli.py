"""``python -m raydet.infer``: a detector over a folder of new images, one of them corrupt."""
from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
import torch
import torchvision

from raydet.builder import build_dataset, build_model
from raydet.config import load_config
from raydet.engine.batch_inference import picture_names
from raydet.infer import find_images, main
from tests.demo_helpers import DEMO_CONFIG, quick_overrides
from tests.hostile_images import encoded, png_declaring


@pytest.fixture()
def checkpoint(small_shapes, tmp_path):
    """The demo's FCOS, untrained but made to find boxes (every point predicts one 4 strides wide)."""
    config = load_config(DEMO_CONFIG, quick_overrides(small_shapes))
    torch.manual_seed(0)
    model = build_model(config)
    with torch.no_grad():
        model.bbox_head.conv_cls.bias.fill_(0.0)
        model.bbox_head.conv_reg.bias.fill_(2.0)
    torch.save({"model": model.state_dict()}, tmp_path / "checkpoint.pt")
    return tmp_path / "checkpoint.pt"


def test_inputs_are_files_folders_and_globs_each_once(tmp_path):
    (tmp_path / "a" / "deeper").mkdir(parents=True)
    for name in ("a/one.png", "a/deeper/two.jpg", "a/notes.txt", "three.PNG"):
        (tmp_path / name).write_bytes(b"x")
    found = find_images([str(tmp_path / "a"), str(tmp_path / "*.PNG"), str(tmp_path / "a" / "one.png")])
    assert found == [str(tmp_path / "a/deeper/two.jpg"), str(tmp_path / "a/one.png"), str(tmp_path / "three.PNG")]
    assert picture_names(["x/img.jpg", "y/img.png", "z/other.jpg"]) == ["img.png", "img_2.png", "other.png"]


@pytest.mark.timeout(300)
def test_a_folder_with_a_corrupt_image_gives_json_and_pictures_for_the_rest(ray_session, small_shapes, checkpoint,
                                                                            tmp_path, capsys, monkeypatch):
    config = load_config(DEMO_CONFIG, quick_overrides(small_shapes))
    records = build_dataset(config, "val").records[:4]
    inputs = tmp_path / "inputs"
    (inputs / "more").mkdir(parents=True)
    good = []
    for index, record in enumerate(records):  # three at the top, one in a sub-folder
        target = inputs / ("more" if index == 3 else "") / f"photo_{index}.png"
        shutil.copy(record["path"], target)
        good.append(target)
    (inputs / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    # hostile files: a decompression bomb, a PNG that crashes torchvision's decoder, an image whose preparation
    # crashes the process (a transform that segfaults on its size): each skipped, none an endless restart loop
    (inputs / "bomb.png").write_bytes(png_declaring(60000, 60000))
    (inputs / "too_little_data.png").write_bytes(png_declaring(64, 64))
    (inputs / "crasher.png").write_bytes(encoded(np.zeros((45, 67, 3), np.uint8), "PNG"))
    crash_on_size = ["+custom_imports=[tests.data.native_crash]",
                     "data.test.pipeline.1={type: CrashOnSize, height: 45, width: 67}"]
    out = tmp_path / "out"
    capsys.readouterr()
    assert main([str(DEMO_CONFIG), str(checkpoint), str(inputs), "--out", str(out), "--score-thr", "0.3",
                 "--num-workers", "2", "--set", *quick_overrides(small_shapes), *crash_on_size]) == 0
    printed = capsys.readouterr()
    summary = json.loads(printed.out.strip().splitlines()[-1])
    assert (summary["images"], summary["detected"], summary["skipped"]) == (8, 4, 4)
    assert "broken.jpg" in printed.err and "cannot decode" in printed.err  # the file and the reason
    for kind, name in [("oversized_image", "bomb.png"), ("corrupt_image", "too_little_data.png"),
                       ("crashed_decoder", "crasher.png")]:
        assert re.search(rf"skipped \({kind}\) image \d+: .*{name}", printed.err), (kind, printed.err[-3000:])
    assert "crasher.png crashed the process preparing it 2 times" in printed.err
    assert "img/s" in printed.err and "eta" in printed.err

    predictions = json.loads((out / "predictions.json").read_text())
    assert len(predictions) == summary["detections"] > 0
    assert {key for p in predictions for key in p} == {"image_id", "category_id", "bbox", "score", "file_name"}
    assert {p["file_name"] for p in predictions} == {str(path) for path in good}
    for path in good:  # one readable picture per good image, at the image's own size
        picture = torchvision.io.decode_png(torchvision.io.read_file(str(out / "pictures" / path.name)))
        original = torchvision.io.decode_png(torchvision.io.read_file(str(path)))
        assert picture.shape[-2:] == original.shape[-2:]
        assert not torch.equal(picture[:3], original[:3])  # detections were drawn on it
    assert sorted(p.name for p in (out / "pictures").iterdir()) == sorted(path.name for path in good)

    assert main([str(DEMO_CONFIG), str(checkpoint), str(tmp_path / "nothing_here"), "--out", str(out),
                 "--set", *quick_overrides(small_shapes)]) == 2
    assert "nothing_here: no such image file, folder with images, or glob match" in capsys.readouterr().err
    # a GPU per model replica on a Ray without GPUs (and no autoscaler): one line, not a pool waiting forever
    monkeypatch.delenv("RAY_ADDRESS", raising=False)  # as on a laptop: the Ray this command started
    assert main([str(DEMO_CONFIG), str(checkpoint), str(inputs), "--out", str(out), "--use-gpu",
                 "--set", *quick_overrides(small_shapes)]) == 2
    assert "one GPU per model replica, but this Ray has 0 GPUs" in capsys.readouterr().err
