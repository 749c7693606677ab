"""Transform geometry (boxes follow the pixels), test-time mapping back, decoding of odd images."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as tvf

from raydet.data.collate import collate
from raydet.data.image_io import ImageError, decode_rgb, load_rgb
from raydet.data.sample import Sample
from raydet.data.transforms import (
    Compose,
    Normalize,
    Pad,
    PhotoMetricDistortion,
    RandomCrop,
    RandomFlip,
    RandomRotate90,
    Resize,
    boxes_to_original,
)
from raydet.data.transforms.rotate import rotate90_boxes
from raydet.registry import TRANSFORMS, BuildError
from tests.data.data_helpers import jpeg_with_orientation, write_png

pytestmark = pytest.mark.timeout(30)


def make_sample(height=60, width=100, boxes=((10, 5, 30, 25), (50, 20, 95, 58)), ignore=(False, True)) -> Sample:
    img = torch.arange(3 * height * width, dtype=torch.int64).reshape(3, height, width).remainder(251).to(torch.uint8)
    boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    return Sample(img=img, boxes=boxes, labels=torch.arange(len(boxes)), ignore=torch.tensor(ignore, dtype=torch.bool),
                  image_id=1, ori_shape=(height, width), img_shape=(height, width), pad_shape=(height, width))


def paint_boxes(sample: Sample) -> Sample:
    """An image that is 255 inside box 0 and 0 elsewhere, to check pixels and boxes move together."""
    sample.img = torch.zeros_like(sample.img)
    x1, y1, x2, y2 = sample.boxes[0].int().tolist()
    sample.img[:, y1:y2, x1:x2] = 255
    return sample


def bright_extent(img: torch.Tensor) -> list[int]:
    ys, xs = torch.nonzero(img[0] > 127, as_tuple=True)
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


@pytest.mark.parametrize("direction", ["horizontal", "vertical", "diagonal"])
def test_flip_twice_is_the_identity_and_boxes_follow_pixels(direction):
    original = paint_boxes(make_sample())
    flip = RandomFlip(flip_ratio=1.0, direction=direction)
    once = flip(paint_boxes(make_sample()), np.random.default_rng(0))
    assert once.flip and once.flip_direction == direction
    assert bright_extent(once.img) == once.boxes[0].int().tolist()
    twice = flip(once, np.random.default_rng(0))
    assert torch.equal(twice.img, original.img)
    torch.testing.assert_close(twice.boxes, original.boxes)


def test_horizontal_flip_values():
    flipped = RandomFlip(flip_ratio=1.0)(make_sample(), np.random.default_rng(0))
    assert flipped.boxes[0].tolist() == [70, 5, 90, 25]  # x1' = w - x2, x2' = w - x1 with w = 100
    assert flipped.labels.tolist() == [0, 1] and flipped.ignore.tolist() == [False, True]


def test_flip_ratio_zero_records_no_flip_and_ratio_half_flips_about_half():
    assert not RandomFlip(flip_ratio=0.0)(make_sample(), np.random.default_rng(0)).flip
    rng = np.random.default_rng(0)
    flips = sum(RandomFlip(flip_ratio=0.5)(make_sample(), rng).flip for _ in range(400))
    assert 150 < flips < 250


def test_resize_keep_ratio_follows_mmdetection_img_scale():
    sample = Resize(img_scale=[1333, 800])(make_sample(600, 1000, boxes=((100, 60, 300, 240),), ignore=(False,)), None)
    assert sample.img_shape == (800, 1333) and tuple(sample.img.shape) == (3, 800, 1333)
    assert sample.scale_factor == pytest.approx((1.333, 800 / 600, 1.333, 800 / 600))
    torch.testing.assert_close(sample.boxes, torch.tensor([[133.3, 80.0, 399.9, 320.0]]))
    tall = Resize(img_scale=[1333, 800])(make_sample(2000, 500, boxes=(), ignore=()), None)
    assert tall.img_shape == (1333, 333)  # the long edge hits 1333 first


def test_resize_multiscale_range_and_value():
    rng = np.random.default_rng(0)
    ranged = Resize(img_scale=[[1333, 640], [1333, 800]], multiscale_mode="range")
    shorts = {ranged(make_sample(600, 1000, boxes=(), ignore=()), rng).img_shape[0] for _ in range(30)}
    assert min(shorts) >= 640 and max(shorts) <= 800 and len(shorts) > 10
    valued = Resize(img_scale=[[400, 200], [800, 400]], multiscale_mode="value")
    shorts = {valued(make_sample(100, 200, boxes=(), ignore=()), rng).img_shape[0] for _ in range(30)}
    assert shorts == {200, 400}


def test_resize_by_a_factor_of_the_images_own_size_fixed_and_jittered():
    doubled = Resize(scale_factor=2.0)(make_sample(60, 100, boxes=((10, 5, 30, 25),), ignore=(False,)), None)
    assert doubled.img_shape == (120, 200) and doubled.scale_factor == pytest.approx((2.0, 2.0, 2.0, 2.0))
    torch.testing.assert_close(doubled.boxes, torch.tensor([[20.0, 10.0, 60.0, 50.0]]))
    tile = Resize(scale_factor=2.0)(make_sample(333, 1000, boxes=(), ignore=()), None)
    assert tile.img_shape == (666, 2000)  # any tile size: the factor, not a target size
    rng = np.random.default_rng(0)
    jitter = Resize(scale_factor=[0.5, 1.5])
    heights = {jitter(make_sample(100, 100, boxes=(), ignore=()), rng).img_shape[0] for _ in range(40)}
    assert min(heights) >= 50 and max(heights) <= 150 and len(heights) > 20
    for bad in ({}, {"img_scale": [64, 32], "scale_factor": 2.0}, {"scale_factor": 0}, {"scale_factor": [2, 1]}):
        with pytest.raises(ValueError):
            Resize(**bad)


def rng_turning(turns: int) -> np.random.Generator:
    """A generator with which ``RandomRotate90(prob=1)`` turns ``turns`` times (it draws random(), then turns)."""
    for seed in range(100):
        probe = np.random.default_rng(seed)
        probe.random()
        if int(probe.integers(1, 4)) == turns:
            return np.random.default_rng(seed)
    raise AssertionError("no seed")


@pytest.mark.parametrize("turns", [1, 2, 3])
def test_rotate90_boxes_follow_pixels_and_four_turns_are_the_identity(turns):
    rotate = RandomRotate90(prob=1.0)
    rng = rng_turning(turns)
    original = paint_boxes(make_sample())
    once = rotate(paint_boxes(make_sample()), rng)
    assert once.img_shape == ((100, 60) if turns % 2 else (60, 100)) and tuple(once.img.shape[-2:]) == once.img_shape
    assert bright_extent(once.img) == once.boxes[0].int().tolist()
    assert torch.equal(once.img, torch.rot90(original.img, turns, dims=(-2, -1)))
    back = make_sample()
    for _ in range(4):
        back.boxes = rotate90_boxes(back.boxes, back.img_shape, turns)
        back.img_shape = back.img_shape[::-1] if turns % 2 else back.img_shape
    torch.testing.assert_close(back.boxes, make_sample().boxes)


def test_rotate90_turns_uniformly_and_prob_zero_never_turns():
    rng = np.random.default_rng(0)
    shapes = [RandomRotate90(prob=0.75)(make_sample(), rng).img_shape for _ in range(400)]
    turned = sum(shape == (100, 60) for shape in shapes) / len(shapes)
    assert 0.4 < turned < 0.6  # turns 1 and 3 of 0..3
    assert all(RandomRotate90(prob=0.0)(make_sample(), rng).img_shape == (60, 100) for _ in range(20))


def test_exact_resize_without_keep_ratio():
    sample = Resize(img_scale=[64, 32], keep_ratio=False)(make_sample(), None)
    assert sample.img_shape == (32, 64) and sample.scale_factor == pytest.approx((0.64, 32 / 60, 0.64, 32 / 60))


@pytest.mark.parametrize("flip_ratio", [0.0, 1.0])
def test_test_pipeline_then_boxes_to_original_gives_back_the_original_boxes(flip_ratio):
    original = make_sample(375, 500, boxes=((12.5, 30, 250, 374), (0, 0, 500, 375)), ignore=(False, False))
    expected = original.boxes.clone()
    pipeline = Compose([Resize(img_scale=[1333, 800]), RandomFlip(flip_ratio=flip_ratio),
                        Normalize(mean=[0, 0, 0], std=[1, 1, 1]), Pad(size_divisor=32)])
    batch = collate([pipeline(original, np.random.default_rng(0))])
    meta = batch["img_metas"][0]
    assert meta["flip"] == bool(flip_ratio) and meta["ori_shape"] == (375, 500)
    predictions = batch["gt_bboxes"][0]  # a perfect detector predicts the targets
    torch.testing.assert_close(boxes_to_original(predictions, meta), expected, atol=1e-3, rtol=0)


def test_pad_to_divisor_and_fixed_size_keep_boxes():
    sample = Pad(size_divisor=32)(make_sample(), None)
    assert sample.pad_shape == (64, 128) and tuple(sample.img.shape) == (3, 64, 128) and sample.img_shape == (60, 100)
    assert torch.equal(sample.img[:, 60:], torch.zeros(3, 4, 128, dtype=torch.uint8))
    assert Pad(size_divisor=None, size=[70, 110])(make_sample(), None).pad_shape == (70, 110)


def test_normalize_gives_torchvision_s_values_and_leaves_its_input_alone():
    sample = make_sample()
    source = sample.img = sample.img.float()  # a float input: Normalize's float copy must still be its own
    before = source.clone()
    out = Normalize(mean=[1.0, 2.0, 3.0], std=[2.0, 4.0, 8.0])(sample, None)
    assert torch.equal(out.img, tvf.normalize_image(before, [1.0, 2.0, 3.0], [2.0, 4.0, 8.0]))
    assert torch.equal(source, before)


def test_random_crop_clips_boxes_and_drops_empty_ones_with_their_labels_and_flags():
    sample = make_sample(100, 100, boxes=((0, 0, 20, 20), (40, 40, 60, 60), (80, 80, 100, 100)),
                         ignore=(False, True, False))
    cropped = RandomCrop(crop_size=[50, 50], allow_negative_crop=True)
    rng = np.random.default_rng(3)
    kept_labels, dropped = set(), 0
    for _ in range(20):
        out = cropped(make_sample(100, 100, boxes=sample.boxes.tolist(), ignore=sample.ignore.tolist()), rng)
        assert tuple(out.img.shape) == (3, 50, 50) and out.img_shape == (50, 50)
        assert len(out.boxes) == len(out.labels) == len(out.ignore)
        assert (out.boxes >= 0).all() and (out.boxes <= 50).all()
        assert ((out.boxes[:, 2] > out.boxes[:, 0]) & (out.boxes[:, 3] > out.boxes[:, 1])).all()
        for label, flag in zip(out.labels.tolist(), out.ignore.tolist()):
            assert flag == (label == 1)  # flags stay with their boxes
        kept_labels.update(out.labels.tolist())
        dropped += len(sample.boxes) - len(out.boxes)
    assert kept_labels == {0, 1, 2} and dropped > 0  # the checks above saw every box, flagged or not, and drops


def test_random_crop_keeps_a_target_or_leaves_the_image_whole():
    crop = RandomCrop(crop_size=[10, 10], max_tries=3)
    rng = np.random.default_rng(0)
    for _ in range(20):
        out = crop(make_sample(100, 100, boxes=((0, 0, 5, 5),), ignore=(False,)), rng)
        assert (len(out.boxes) == 1) and (out.img_shape in ((10, 10), (100, 100)))


def test_normalize_and_bgr():
    sample = make_sample()
    raw = sample.img.float()
    out = Normalize(mean=[10, 20, 30], std=[2, 4, 8], to_bgr=True)(sample, None)
    assert out.img.dtype == torch.float32
    torch.testing.assert_close(out.img[0], (raw[2] - 10) / 2)
    torch.testing.assert_close(out.img[1], (raw[1] - 20) / 4)
    torch.testing.assert_close(out.img[2], (raw[0] - 30) / 8)


def test_photometric_distortion_is_seeded_and_keeps_geometry():
    a = PhotoMetricDistortion()(make_sample(), np.random.default_rng(5))
    b = PhotoMetricDistortion()(make_sample(), np.random.default_rng(5))
    assert torch.equal(a.img, b.img) and a.img.dtype == torch.uint8 and a.img.shape == (3, 60, 100)
    assert not torch.equal(a.img, make_sample().img)
    with pytest.raises(TypeError, match="before Normalize"):
        PhotoMetricDistortion()(Normalize([0, 0, 0], [1, 1, 1])(make_sample(), None), np.random.default_rng(0))


def test_transforms_build_from_config_with_checked_arguments():
    resize = TRANSFORMS.build({"type": "Resize", "img_scale": [1333, 800]})
    assert isinstance(resize, Resize) and resize.img_scale == [1333, 800] and resize.keep_ratio is True
    with pytest.raises(BuildError, match=r"pipeline\.0\.flip_ration.*flip_ratio"):
        TRANSFORMS.build({"type": "RandomFlip", "flip_ration": 0.5}, "pipeline.0")
    with pytest.raises(BuildError, match=r"pipeline\.1\.direction"):
        TRANSFORMS.build({"type": "RandomFlip", "direction": "sideways"}, "pipeline.1")


@pytest.mark.parametrize("mode", ["L", "RGBA", "I;16", "RGB"])
def test_grayscale_rgba_and_16_bit_images_decode_to_rgb_uint8(tmp_path, mode):
    value = 40000 if mode == "I;16" else 200
    img = load_rgb(str(write_png(tmp_path / "x.png", 7, 9, mode=mode, value=value)))
    assert img.shape == (3, 7, 9) and img.dtype == torch.uint8
    assert int(img[0, 0, 0]) == (value >> 8 if mode == "I;16" else value)


def test_exif_orientation_is_applied(tmp_path):
    upright = load_rgb(str(jpeg_with_orientation(tmp_path / "a.jpg", 20, 40, orientation=1)))
    rotated = load_rgb(str(jpeg_with_orientation(tmp_path / "b.jpg", 20, 40, orientation=6)))  # 90° clockwise
    assert upright.shape == (3, 20, 40) and rotated.shape == (3, 40, 20)
    assert rotated[0, :, -1].float().mean() > 200 and rotated[0, :, 0].float().mean() < 50  # the white top went right


def test_corrupt_and_missing_images_raise_image_errors(tmp_path):
    with pytest.raises(ImageError) as corrupt:
        decode_rgb(b"\x89PNG\r\n\x1a\n-not-really", "x.png")
    assert corrupt.value.kind == "corrupt_image"
    with pytest.raises(ImageError) as missing:
        load_rgb(str(tmp_path / "nope.png"))
    assert missing.value.kind == "missing_image"
    with pytest.raises(ImageError) as missing_uri:
        load_rgb(f"file://{tmp_path}/nope.png")
    assert missing_uri.value.kind == "missing_image"
