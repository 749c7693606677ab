"""Hostile image files: refused or decoded, each with its problem kind, never a crash of the process; and a
native crash while preparing an image ends as that image skipped (``raydet.data.crash_journal``)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from raydet.data.crash_journal import CRASHES_BEFORE_SKIPPING, CrashJournal, image_key
from raydet.data.image_io import ImageError, decode_rgb, load_rgb
from tests.data.data_helpers import coco_json, jpeg_with_orientation
from tests.helpers import REPO
from tests.hostile_images import encoded, jpeg_declaring, png16_rgb, png_declaring

PIXELS = (np.random.default_rng(0).random((24, 32, 3)) * 255).astype(np.uint8)

REFUSED = {  # name: (bytes, problem kind)
    "bomb.png": (png_declaring(60000, 60000), "oversized_image"),  # 68 bytes declaring 3.6 G pixels
    "bomb.jpg": (jpeg_declaring(60000, 60000), "oversized_image"),
    "too_little_data.png": (png_declaring(64, 64), "corrupt_image"),  # torchvision's decode_png: SIGSEGV
    "truncated.png": (encoded(PIXELS, "PNG")[:300], "corrupt_image"),
    "truncated.jpg": (encoded(PIXELS, "JPEG")[:-200], "corrupt_image"),
    "empty.jpg": (b"", "empty_image"),
    "text.jpg": (b"just some text, named as a photo", "corrupt_image"),
}


@pytest.mark.parametrize("name", sorted(REFUSED))
@pytest.mark.timeout(30)
def test_a_hostile_file_is_refused_with_its_problem_kind(name):
    data, kind = REFUSED[name]
    with pytest.raises(ImageError) as refused:
        decode_rgb(data, name)
    assert refused.value.kind == kind and name in str(refused.value)
    if kind == "oversized_image":
        assert "60000 x 60000" in str(refused.value) and "refused before decoding" in str(refused.value)


def test_unusual_valid_images_decode_to_rgb_as_torchvision_would(tmp_path):
    high = (np.random.default_rng(1).random((24, 32, 3)) * 65535).astype(np.uint16)
    assert torch.equal(decode_rgb(png16_rgb(high)), torch.from_numpy((high >> 8).astype(np.uint8)).permute(2, 0, 1))
    rgb = torch.from_numpy(PIXELS).permute(2, 0, 1)
    for fmt in ("PNG", "BMP", "TIFF", "WEBP"):
        lossless = {"lossless": True} if fmt == "WEBP" else {}
        assert torch.equal(decode_rgb(encoded(PIXELS, fmt, **lossless)), rgb), fmt
    assert torch.equal(decode_rgb(encoded(PIXELS, "PNG", mode="RGBA")), rgb)  # alpha dropped
    gray = decode_rgb(encoded(PIXELS, "PNG", mode="L"))
    assert gray.shape == (3, 24, 32) and torch.equal(gray[0], gray[2])
    palette = decode_rgb(encoded(PIXELS, "PNG", mode="P"))
    assert palette.shape == (3, 24, 32) and (palette.float() - rgb.float()).abs().mean() < 40
    cmyk = decode_rgb(encoded(PIXELS, "JPEG", mode="CMYK", quality=95))
    assert cmyk.shape == (3, 24, 32) and (cmyk.float() - rgb.float()).abs().mean() < 12
    misnamed = tmp_path / "really_a_png.jpg"  # the content decides, not the extension
    misnamed.write_bytes(encoded(PIXELS, "PNG"))
    assert torch.equal(load_rgb(str(misnamed)), rgb)


def test_an_exif_rotated_photo_keeps_boxes_drawn_in_its_displayed_frame(tmp_path):
    """labelme and CVAT show the photo rotated by its EXIF tag and draw boxes there; the annotation's size is the
    displayed one, so no size_mismatch, and the box covers what it covered on screen (the white top half)."""
    from raydet.data import CocoDataset
    from raydet.data.sample import load_sample

    (tmp_path / "img").mkdir()
    jpeg_with_orientation(tmp_path / "img/turned.jpg", 20, 40, orientation=6)  # shown 20 wide, 40 high
    images = [{"id": 1, "file_name": "turned.jpg", "height": 40, "width": 20}]
    annotations = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [12, 2, 6, 36], "iscrowd": 0}]  # the right
    dataset = CocoDataset(str(coco_json(tmp_path / "ann.json", images, annotations)), str(tmp_path / "img"))
    sample = load_sample(dataset.records[0], dataset.problems)
    assert not dataset.problems and sample.img.shape == (3, 40, 20)
    x1, y1, x2, y2 = sample.boxes[0].int().tolist()
    assert sample.img[:, y1:y2, x1:x2].float().mean() > 200  # the displayed white half: the box's content


FUZZ = """
import json, sys
import numpy as np
from raydet.data.image_io import ImageError, decode_rgb
from tests.hostile_images import encoded, mutated
rng = np.random.default_rng(int(sys.argv[1]))
pixels = (rng.random((48, 64, 3)) * 255).astype(np.uint8)
sources = {fmt: encoded(pixels, fmt) for fmt in ("PNG", "JPEG", "WEBP", "GIF", "BMP")}
counts = {"decoded": 0}
for case in range(int(sys.argv[2])):
    fmt = list(sources)[case % len(sources)]
    try:
        decode_rgb(mutated(sources[fmt], rng), f"case {case}")
        counts["decoded"] += 1
    except ImageError as err:
        counts[err.kind] = counts.get(err.kind, 0) + 1
print(json.dumps(counts))
"""


@pytest.mark.timeout(120)
def test_fuzz_mutated_images_decode_or_are_refused_and_never_crash_the_process():
    """400 images with bytes flipped or cut short (PNG, JPEG, WebP, GIF, BMP) in one process: torchvision's PNG
    decoder alone ends the process on most mutated PNGs (``benchmarks/image_fuzz.py`` counts them)."""
    done = subprocess.run([sys.executable, "-c", FUZZ, "7", "400"], cwd=REPO, capture_output=True, text=True,
                          timeout=100)
    assert done.returncode == 0, done.stderr[-3000:]  # -11 would be a segmentation fault
    counts = json.loads(done.stdout.splitlines()[-1])
    assert sum(counts.values()) == 400 and counts["decoded"] > 0 and counts.get("corrupt_image", 0) > 0
    assert set(counts) <= {"decoded", "corrupt_image", "empty_image", "oversized_image"}


CRASH_WHILE_PREPARING = """
import ctypes, sys
from raydet.data.crash_journal import CrashJournal
journal = CrashJournal(sys.argv[1])
with journal.preparing(sys.argv[2]):
    ctypes.string_at(0)
"""


@pytest.mark.timeout(60)
def test_the_journal_counts_a_crash_against_the_image_being_prepared_and_clears_a_suspect(tmp_path):
    journal, key = CrashJournal(tmp_path), image_key("/data/bad.png")
    for crash in range(1, CRASHES_BEFORE_SKIPPING + 1):
        died = subprocess.run([sys.executable, "-c", CRASH_WHILE_PREPARING, str(tmp_path), key], cwd=REPO)
        assert died.returncode == -11
        journal.collect()
        assert journal.crashes(key) == crash
    assert journal.crashes(image_key("/data/good.png")) == 0
    assert os.listdir(tmp_path) == ["crashed"]  # the ended process's file was collected
    with journal.preparing(key):  # prepared without a crash (a kill from outside made it a suspect): cleared
        pass
    assert journal.crashes(key) == 0
    hold = ("import sys, time; from raydet.data.crash_journal import CrashJournal; "
            "held = CrashJournal(sys.argv[1]).preparing(sys.argv[2]); held.__enter__(); "
            "print('in', flush=True); time.sleep(60)")
    alive = subprocess.Popen([sys.executable, "-c", hold, str(tmp_path), key], cwd=REPO, stdout=subprocess.PIPE,
                             text=True)
    try:
        assert alive.stdout.readline() == "in\n"
        journal.collect()
        assert journal.crashes(key) == 0  # preparing it now, alive: not a crash
    finally:
        alive.kill()
        alive.wait()
    journal.collect()
    assert journal.crashes(key) == 1  # killed while preparing it: a suspect


@pytest.mark.timeout(240)
def test_an_image_that_crashes_the_decode_process_is_skipped_and_the_stream_goes_on(ray_session, shapes_dir,
                                                                                  tmp_path):
    """A segmentation fault while preparing one image (a native crash in a transform here): Ray retries the
    decode task, the retries skip that image, every other image of the epoch arrives."""
    from raydet.builder import batch_recipe, build_dataset
    from raydet.data.ray_stream import train_stream
    from tests.data.data_helpers import shapes_config
    from tests.data.test_ray_stream import stream_ids

    data = tmp_path / "shapes"
    shutil.copytree(shapes_dir, data)
    (data / "images/train_000004.png").write_bytes(encoded(np.zeros((45, 67, 3), np.uint8), "PNG"))  # image id 5
    config = shapes_config(data, "+custom_imports=[tests.data.native_crash]",
                           "data.train.pipeline.1={type: CrashOnSize, height: 45, width: 67}")
    records = build_dataset(config, "train").table()
    started = time.time()
    stream = train_stream(batch_recipe(config, "train"), records, epoch=0)
    batches = list(stream)
    assert len(batches) == len(stream)
    ids = sum(stream_ids(batches), [])
    assert set(ids) == set(range(1, 17)) - {5}
    planned = int((stream.plan == 4).sum())
    assert stream.problems.counts == {"crashed_decoder": planned}, stream.problems
    assert "train_000004.png crashed the process preparing it 2 times" in stream.problems.examples["crashed_decoder"][0]
    print(f"two crashes and the epoch's stream: {time.time() - started:.1f} s")
