"""COCO / VOC readers on real and hand-made files, and the COCO writer's round trips."""
from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from raydet.data import CocoDataset, VOCDataset, detections_to_coco, records_to_coco, write_json
from raydet.data.coco import read_coco
from raydet.data.decode import prepare_sample
from raydet.data.problems import ProblemReport
from raydet.data.records import record_at, records_to_table
from raydet.data.voc import read_voc
from tests.data.data_helpers import NEON, NEON_XML, coco_json, needs_neon, write_png


@needs_neon
@pytest.mark.timeout(60)
def test_voc_reader_on_the_neon_orthophoto():
    dataset = VOCDataset(str(NEON_XML), str(NEON))
    (record,) = dataset.records
    assert dataset.classes == ["Tree"] and dataset.cat_ids == [1]
    assert (record["height"], record["width"]) == (2472, 2299)
    assert record["boxes"].shape == (574, 4) and record["boxes"].dtype == np.float32
    assert (record["labels"] == 0).all() and not record["ignore"].any()
    assert record["boxes"][0].tolist() == [681, 369, 699, 386]  # the first <object> of the xml
    boxes = record["boxes"]
    assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
    assert boxes[:, 2].max() <= 2299 and boxes[:, 3].max() <= 2472
    assert not dataset.problems


@needs_neon
@pytest.mark.timeout(60)
def test_voc_reader_on_soap_with_two_classes_and_a_given_class_order():
    discovered = VOCDataset(str(NEON / "SOAP_061.xml"), str(NEON))
    assert discovered.classes == ["Alive", "Dead"]
    assert np.bincount(discovered.records[0]["labels"]).tolist() == [9, 28]
    ordered = VOCDataset(str(NEON / "SOAP_061.xml"), str(NEON), classes=["Dead", "Alive"])
    assert np.bincount(ordered.records[0]["labels"]).tolist() == [28, 9]


VOC_XML = """<annotation><filename>{name}</filename><size><width>{w}</width><height>{h}</height><depth>3</depth></size>
{objects}</annotation>"""
VOC_OBJECT = ("<object><name>{name}</name><difficult>{difficult}</difficult>"
              "<bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>")


def voc_xml(path, name, w, h, objects):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(VOC_XML.format(name=name, w=w, h=h, objects="".join(VOC_OBJECT.format(**o) for o in objects)))
    return path


@pytest.mark.timeout(30)
def test_voc_devkit_layout_and_difficult_boxes_become_ignore(tmp_path):
    year = tmp_path / "VOC2007"
    for image_id in ("000005", "000007"):
        write_png(year / "JPEGImages" / f"{image_id}.jpg", 40, 60)
    voc_xml(year / "Annotations" / "000005.xml", "000005.jpg", 60, 40, [
        dict(name="dog", difficult=0, x1=1, y1=2, x2=30, y2=20),
        dict(name="cat", difficult=1, x1=5, y1=5, x2=50, y2=35)])
    voc_xml(year / "Annotations" / "000007.xml", "000007.jpg", 60, 40, [
        dict(name="cat", difficult=0, x1=0, y1=0, x2=10, y2=10)])
    (year / "ImageSets" / "Main").mkdir(parents=True)
    (year / "ImageSets" / "Main" / "trainval.txt").write_text("000007\n000005\n")
    result = read_voc(str(year / "ImageSets/Main/trainval.txt"), str(year), ProblemReport())
    assert result.classes == ["cat", "dog"] and result.cat_ids == [1, 2]
    first = result.records[0]
    assert first["path"].endswith("VOC2007/JPEGImages/000005.jpg")
    assert first["labels"].tolist() == [1, 0] and first["ignore"].tolist() == [False, True]


def _coco_files(tmp_path):
    for name, (h, w) in {"a.png": (30, 40), "b.png": (50, 20), "c.png": (25, 25)}.items():
        write_png(tmp_path / "img" / name, h, w)
    images = [{"id": 7, "file_name": "a.png", "height": 30, "width": 40},
              {"id": 3, "file_name": "b.png", "height": 50, "width": 20},
              {"id": 9, "file_name": "c.png", "height": 25, "width": 25}]
    annotations = [
        {"id": 1, "image_id": 7, "category_id": 18, "bbox": [1, 2, 10, 5], "iscrowd": 0},
        {"id": 2, "image_id": 7, "category_id": 4, "bbox": [20, 10, 15, 15], "iscrowd": 1},
        {"id": 3, "image_id": 3, "category_id": 90, "bbox": [0, 0, 20, 50], "iscrowd": 0},
    ]
    categories = [{"id": 90, "name": "z"}, {"id": 4, "name": "a"}, {"id": 18, "name": "m"}]
    return coco_json(tmp_path / "ann.json", images, annotations, categories)


@pytest.mark.timeout(30)
def test_coco_reader_maps_sparse_category_ids_to_sorted_labels_and_crowd_to_ignore(tmp_path):
    dataset = CocoDataset(str(_coco_files(tmp_path)), str(tmp_path / "img"))
    assert dataset.cat_ids == [4, 18, 90] and dataset.classes == ["a", "m", "z"]
    by_id = {r["image_id"]: r for r in dataset.records}
    assert [r["image_id"] for r in dataset.records] == [3, 7, 9]
    assert by_id[7]["boxes"].tolist() == [[1, 2, 11, 7], [20, 10, 35, 25]]
    assert by_id[7]["labels"].tolist() == [1, 0] and by_id[7]["ignore"].tolist() == [False, True]
    assert by_id[3]["labels"].tolist() == [2]
    assert by_id[9]["boxes"].shape == (0, 4)  # an image without boxes is kept
    assert not dataset.problems


@pytest.mark.timeout(30)
def test_records_to_coco_json_to_records_round_trip(tmp_path):
    original = CocoDataset(str(_coco_files(tmp_path)), str(tmp_path / "img"))
    write_json(records_to_coco(original.records, original.classes, original.cat_ids, str(tmp_path / "img")),
               tmp_path / "out.json")
    again = CocoDataset(str(tmp_path / "out.json"), str(tmp_path / "img"))
    assert (again.classes, again.cat_ids) == (original.classes, original.cat_ids)
    assert len(original.records) == 3  # the records compared below
    for a, b in zip(original.records, again.records, strict=True):
        assert ((a["image_id"], a["path"], a["height"], a["width"])
                == (b["image_id"], b["path"], b["height"], b["width"]))
        for key in ("boxes", "labels", "ignore"):
            np.testing.assert_array_equal(a[key], b[key])
    # and through the Arrow table the Ray edge ships
    table = records_to_table(original.records)
    for a, b in zip(original.records, [record_at(table, row) for row in range(table.num_rows)], strict=True):
        assert a["path"] == b["path"] and a["image_id"] == b["image_id"]
        np.testing.assert_array_equal(a["boxes"], b["boxes"])


@pytest.mark.timeout(30)
def test_voc_records_to_coco_round_trip_keeps_difficult_as_crowd(tmp_path):
    write_png(tmp_path / "x.png", 40, 60)
    voc_xml(tmp_path / "x.xml", "x.png", 60, 40, [dict(name="dog", difficult=1, x1=1, y1=2, x2=30, y2=20)])
    voc = VOCDataset(str(tmp_path / "x.xml"), str(tmp_path))
    write_json(records_to_coco(voc.records, voc.classes, voc.cat_ids, str(tmp_path)), tmp_path / "x.json")
    coco = CocoDataset(str(tmp_path / "x.json"), str(tmp_path))
    assert coco.records[0]["ignore"].tolist() == [True]
    np.testing.assert_array_equal(coco.records[0]["boxes"], voc.records[0]["boxes"])


@pytest.mark.timeout(30)
def test_detections_to_coco_maps_labels_back_and_pycocotools_scores_them(tmp_path):
    dataset = CocoDataset(str(_coco_files(tmp_path)), str(tmp_path / "img"))
    gt = records_to_coco(dataset.records, dataset.classes, dataset.cat_ids)
    detections = [{"boxes": torch.from_numpy(r["boxes"][~r["ignore"]]), "scores": torch.ones(int((~r["ignore"]).sum())),
                   "labels": torch.from_numpy(r["labels"][~r["ignore"]])} for r in dataset.records]
    results = detections_to_coco([r["image_id"] for r in dataset.records], detections, dataset.cat_ids)
    assert {(d["image_id"], d["category_id"]) for d in results} == {(7, 18), (3, 90)}
    assert results[0]["bbox"] == [0.0, 0.0, 20.0, 50.0]  # image 3, xywh
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = json.loads(json.dumps(gt))
        coco_gt.createIndex()
        evaluation = COCOeval(coco_gt, coco_gt.loadRes(results), "bbox")
        evaluation.evaluate(), evaluation.accumulate(), evaluation.summarize()
    assert evaluation.stats[1] == pytest.approx(1.0)  # AP@0.5 of the ground truth itself


@pytest.mark.timeout(30)
def test_image_paths_may_be_uris_read_through_pyarrow(tmp_path):
    _coco_files(tmp_path)
    dataset = CocoDataset(str(tmp_path / "ann.json"), f"file://{tmp_path / 'img'}")
    assert dataset.records[0]["path"] == f"file://{tmp_path}/img/b.png"
    sample = prepare_sample(dataset.records[0], dataset.pipeline, np.random.default_rng(0))
    assert sample.img.shape == (3, 50, 20)


@pytest.mark.timeout(30)
def test_records_may_carry_the_encoded_image(tmp_path):
    from raydet.data import load_sample, make_record

    encoded = write_png(tmp_path / "e.png", 12, 18).read_bytes()
    record = make_record(5, encoded, 12, 18, boxes=[[1, 1, 5, 5]], labels=[0])
    table = records_to_table([record])
    (back,) = [record_at(table, row) for row in range(table.num_rows)]
    assert back["path"] == encoded
    assert load_sample(back).img.shape == (3, 12, 18)


@pytest.mark.timeout(30)
def test_read_coco_reports_where_it_found_no_images(tmp_path):
    from raydet.data.problems import DataError

    with pytest.raises(DataError, match="empty annotations"):
        read_coco(str(coco_json(tmp_path / "e.json", [], [])), str(tmp_path), ProblemReport())
