"""``python -m raydet.test``: COCO metrics of a checkpoint, plain and with test-time augmentation."""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torchvision
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from raydet.builder import build_dataset, build_model, build_pipeline
from raydet.config import Config, ConfigError, load_config
from raydet.config.parsed import parse_config
from raydet.data.coco_writer import detections_to_coco
from raydet.data.collate import collate
from raydet.data.sample import load_sample
from raydet.data.sampling import plan_eval
from raydet.data.transforms.flip import flip_boxes
from raydet.engine.evaluation import predict
from raydet.evaluate import TTA_FLIPS, main, parse_tta_flips, parse_tta_scales, tta_configs
from raydet.evaluation.box_pr import match_split
from raydet.evaluation.coco_metric import METRIC_NAMES, coco_from_dict, coco_metrics
from raydet.models.detectors.base import BaseDetector
from tests.demo_helpers import DEMO_CONFIG, printed_metrics, quick_overrides


def test_tta_views_are_each_scale_unflipped_and_flipped(small_shapes):
    config = load_config(DEMO_CONFIG, quick_overrides(small_shapes))
    views = tta_configs(config, "test", [[320, 256], [400, 320]])
    steps = [(v["data"]["test"]["pipeline"][0]["img_scale"], v["data"]["test"]["pipeline"][1]["flip_ratio"])
             for v in views]
    assert steps == [([320, 256], 0.0), ([320, 256], 1.0), ([400, 320], 0.0), ([400, 320], 1.0)]
    assert config["data"]["test"]["pipeline"][1]["flip_ratio"] == 0.0  # the original is untouched


def test_tta_scales_are_sizes_or_factors_of_each_images_size(small_shapes):
    assert parse_tta_scales("1333x800,1666x1000") == [[1333, 800], [1666, 1000]]
    assert parse_tta_scales("1.5,2") == [1.5, 2.0]
    for bad in ("", "1333x", "2x3x4", "0", "-1.5", "big", "nan", "inf"):
        with pytest.raises(ConfigError, match="--tta-scales"):
            parse_tta_scales(bad)
    config = load_config(DEMO_CONFIG, quick_overrides(small_shapes))
    by_factor, by_size = tta_configs(config, "test", [1.5, [320, 256]])[::2]
    resize = by_factor["data"]["test"]["pipeline"][0]
    assert resize["scale_factor"] == 1.5 and "img_scale" not in resize
    assert build_pipeline(by_factor, "test")(load_sample(build_dataset(by_factor, "test").records[0]),
                                             None).scale_factor == pytest.approx((1.5,) * 4, abs=0.01)
    resize = by_size["data"]["test"]["pipeline"][0]
    assert resize["img_scale"] == [320, 256] and "scale_factor" not in resize


def test_an_iou_given_in_percent_is_one_clear_error(small_shapes, tmp_path, capsys):
    assert main([str(DEMO_CONFIG), str(tmp_path / "checkpoint.pt"), "--pr-iou", "40",
                 "--set", *quick_overrides(small_shapes)]) == 2
    assert "--pr-iou: expected an IoU in (0, 1], got 40.0" in capsys.readouterr().err


def metrics_in_this_process(model: torch.nn.Module, views: list[Config]) -> dict[str, float]:
    """The test split scored without Ray and without ``raydet.test``: images decoded here, batched as the
    evaluation plan batches them (padding, and the head's GroupNorm over it, then match), one view per config."""
    dataset = build_dataset(views[0], "test")
    section = parse_config(views[0]).data
    pipelines = [build_pipeline(view, "test") for view in views]
    heights, widths = (np.array([r[key] for r in dataset.records]) for key in ("height", "width"))
    batches = []
    for row in plan_eval(heights, widths, section.eval_samples_per_gpu, 1)[0]:
        records = [dataset.records[i] for i in row if i >= 0]
        per_view = [collate([pipeline(load_sample(r), np.random.default_rng(0)) for r in records],
                            section.size_divisor, with_gt=False) for pipeline in pipelines]
        batches.append(per_view[0] if len(views) == 1 else
                       {"img": [b["img"] for b in per_view], "img_metas": [b["img_metas"] for b in per_view]})
    predictions = predict(model, batches, torch.device("cpu"))
    results = detections_to_coco([i for i, _ in predictions], [d for _, d in predictions], dataset.cat_ids)
    ground_truth = coco_from_dict(json.loads(Path(dataset.ann_file).read_text()))
    return coco_metrics(ground_truth, results, [int(r["image_id"]) for r in dataset.records], "bbox")[0]


BOX_PR_NAMES = ("box_precision", "box_recall", "box_f1", "box_score_thr", "box_iou_thr")


def box_pr_of_results(dataset, results: list[dict], iou_thr: float = 0.4) -> dict[str, float]:
    """Box precision / recall of a COCO results list at its best-F1 threshold, matched by ``box_pr``."""
    detections = []
    for record in dataset.records:
        mine = [r for r in results if r["image_id"] == int(record["image_id"])]
        boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in (r["bbox"] for r in mine)]).reshape(-1, 4)
        detections.append((boxes, np.array([r["score"] for r in mine])))
    matched = match_split([(r["boxes"], r["ignore"]) for r in dataset.records], detections, iou_thr)
    threshold = matched.best_f1_threshold()
    assert 0 < matched.at(threshold)["box_recall"]  # else the comparison means little
    return {**matched.at(threshold), "box_score_thr": threshold, "box_iou_thr": iou_thr}


def pycocotools_metrics(ann_file: str, results_file: Path) -> dict[str, float]:
    """What pycocotools itself gives for a results file against the annotation file (every image of it)."""
    with contextlib.redirect_stdout(io.StringIO()):
        ground_truth = COCO(ann_file)
        evaluator = COCOeval(ground_truth, ground_truth.loadRes(str(results_file)), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {name: round(float(value), 4) for name, value in zip(METRIC_NAMES, evaluator.stats)}


@pytest.mark.timeout(400)
def test_metrics_of_a_checkpoint_plain_and_augmented(ray_session, small_shapes, tmp_path, capsys):
    config = load_config(DEMO_CONFIG, quick_overrides(small_shapes))
    torch.manual_seed(0)
    model = build_model(config)
    with torch.no_grad():  # untrained, FCOS finds nothing (all APs 0): every point now predicts a box 4 strides wide
        model.bbox_head.conv_cls.bias.fill_(0.0)
        model.bbox_head.conv_reg.bias.fill_(2.0)
    torch.save({"model": model.state_dict()}, tmp_path / "checkpoint.pt")
    expected_plain = metrics_in_this_process(model, [config])
    expected_tta = metrics_in_this_process(model, tta_configs(config, "test", [[320, 256], [256, 192]]))
    assert expected_plain["bbox_mAP_50"] > 0 and expected_tta["bbox_mAP_50"] > 0  # else the comparison means nothing
    overrides = ["--set", *quick_overrides(small_shapes)]
    capsys.readouterr()
    assert main([str(DEMO_CONFIG), str(tmp_path / "checkpoint.pt"), "--out", str(tmp_path / "plain.json"),
                 "--show-dir", str(tmp_path / "show"), *overrides]) == 0
    printed = capsys.readouterr().out
    assert main([str(DEMO_CONFIG), str(tmp_path), "--aug-test", "--tta-scales", "320x256,256x192",
                 "--out", str(tmp_path / "tta.json"), *overrides]) == 0
    tta_printed = capsys.readouterr().out
    dataset = build_dataset(config, "test")
    for name, output, expected in (("plain.json", printed, expected_plain), ("tta.json", tta_printed, expected_tta)):
        printed_all = printed_metrics(output)
        assert set(printed_all) == set(METRIC_NAMES) | set(BOX_PR_NAMES)
        metrics = {key: printed_all[key] for key in METRIC_NAMES}
        assert metrics == pytest.approx(expected, abs=1e-4), name  # the checkpoint's detections, every image once
        # the results file, scored by pycocotools on its own against the annotation file, gives the same metrics
        assert pycocotools_metrics(dataset.ann_file, tmp_path / name) == metrics, name
        results = json.loads((tmp_path / name).read_text())
        # box precision / recall at IoU 0.4 and the best-F1 threshold: the same from the results file
        assert printed_all == pytest.approx({**metrics, **box_pr_of_results(dataset, results)}, abs=1e-4), name
        assert {key for result in results for key in result} == {"image_id", "category_id", "bbox", "score"}
        assert {result["category_id"] for result in results} <= set(dataset.cat_ids)
    for record in dataset.records:  # a picture per image: ground truth beside detections, at the image's size
        picture = torchvision.io.decode_png(torchvision.io.read_file(str(tmp_path / "show" / (
            Path(record["path"]).stem + ".png"))))
        side = max(record["height"], record["width"])
        assert picture.shape[-1] == 2 * side + 3 * 6  # two panels, make_grid's padding
    assert len(list((tmp_path / "show").iterdir())) == len(dataset.records)
    lines = printed.splitlines()
    header = lines.index(next(line for line in lines if line.startswith("category")))
    assert [line.split()[0] for line in lines[header + 1: header + 1 + len(dataset.classes)]] == list(dataset.classes)

    # two model replicas (actors, a thread each where one actor had two): every image still predicted exactly
    # once, the same detections up to the rounding that another thread count brings
    assert main([str(DEMO_CONFIG), str(tmp_path / "checkpoint.pt"), "--num-workers", "2",
                 "--out", str(tmp_path / "two.json"), *overrides]) == 0
    assert printed_metrics(capsys.readouterr().out) == pytest.approx(printed_metrics(printed), abs=1e-4)

    def per_image(name: str) -> dict[int, np.ndarray]:
        found: dict[int, list] = {}
        for r in json.loads((tmp_path / name).read_text()):
            found.setdefault(r["image_id"], []).append([r["category_id"], r["score"], *r["bbox"]])
        return {image: np.array(sorted(rows, key=lambda row: (row[0], -row[1]))) for image, rows in found.items()}

    one, two = per_image("plain.json"), per_image("two.json")
    assert one.keys() == two.keys() == {int(r["image_id"]) for r in dataset.records}
    for image in one:
        assert one[image].shape == two[image].shape and np.allclose(one[image], two[image], atol=1e-2), image
    assert main([str(DEMO_CONFIG), str(tmp_path / "nope.pt"), *overrides]) == 2
    assert "error: checkpoint not found" in capsys.readouterr().err


class ExtremesDetector(BaseDetector):
    """A detector that is symmetric under every flip by construction: label 0 boxes the brightest tenth of
    the image's pixels, label 1 the darkest tenth (inside ``img_shape``: padding ignored)."""

    final_head = SimpleNamespace(nms_iou_thr=0.5, max_per_img=100)

    def __init__(self):
        super().__init__(backbone=torch.nn.Identity())

    def forward_train(self, img, img_metas, gt_bboxes, gt_labels):
        raise NotImplementedError("never trained")

    def detect(self, img, img_metas):
        results = []
        for image, meta in zip(img, img_metas):
            height, width = meta["img_shape"]
            gray = image[:, :height, :width].mean(0)
            boxes = []
            for mask in (gray >= torch.quantile(gray, 0.9), gray <= torch.quantile(gray, 0.1)):
                rows, cols = torch.nonzero(mask, as_tuple=True)
                boxes.append(torch.stack([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]).float())
            results.append({"boxes": torch.stack(boxes), "scores": torch.tensor([0.9, 0.8]),
                            "labels": torch.tensor([0, 1])})
        return results


def test_a_symmetric_model_sees_each_flipped_view_as_the_flip_of_the_unflipped(small_shapes):
    """TTA geometry, every ``--tta-flips`` direction: each flipped view's detections, mapped back, are the
    unflipped view's; in the flipped frame they are the mirror image within the resized image (not the padded
    batch); aug_test merges all four views into the unflipped detections."""
    config = load_config(DEMO_CONFIG, quick_overrides(small_shapes))
    views_configs = tta_configs(config, "test", [1.1], list(TTA_FLIPS))
    assert [view["data"]["test"]["pipeline"][1].get("direction") for view in views_configs] == [
        None, "horizontal", "vertical", "diagonal"]
    section = parse_config(config).data
    model = ExtremesDetector().eval()
    padded_both_ways = 0
    for record in build_dataset(config, "test").records[:6]:
        views = [collate([build_pipeline(view, "test")(load_sample(record), np.random.default_rng(0))],
                         section.size_divisor, with_gt=False) for view in views_configs]
        img_shape = tuple(views[0]["img_metas"][0]["img_shape"])
        padded_both_ways += all(views[0]["img"].shape[-2:][i] > img_shape[i] for i in (0, 1))
        assert [view["img_metas"][0]["flip"] for view in views] == [False, True, True, True]
        in_frame = [model.detect(view["img"], view["img_metas"])[0]["boxes"] for view in views]
        for direction, boxes in zip(TTA_FLIPS[1:], in_frame[1:]):
            assert torch.equal(boxes, flip_boxes(in_frame[0], img_shape, direction)), direction
        original = [model.simple_test(view["img"], view["img_metas"])[0] for view in views]
        for result in original[1:]:
            assert torch.allclose(result["boxes"], original[0]["boxes"], atol=1e-4)
        merged = model.aug_test([view["img"] for view in views], [view["img_metas"] for view in views])[0]
        assert torch.allclose(merged["boxes"], original[0]["boxes"], atol=1e-4)
        assert torch.equal(merged["labels"], original[0]["labels"])
    assert padded_both_ways  # else a flip about the padded size would go unnoticed


def test_tta_flips_are_named_directions_each_once():
    assert parse_tta_flips("none,horizontal,vertical,diagonal") == list(TTA_FLIPS)
    assert parse_tta_flips("vertical") == ["vertical"]
    for bad, hint in (("none,vertcal", "did you mean 'vertical'"), ("none,none", "each once"), ("", "got ''")):
        with pytest.raises(ConfigError, match="--tta-flips") as error:
            parse_tta_flips(bad)
        assert hint in str(error.value)
