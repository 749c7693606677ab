"""Instance masks in records: COCO segmentations read (polygons, crowd RLE), checked, kept through the records
table and the COCO writer, and decoded into samples."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from raydet.data import CocoDataset, VOCDataset, records_to_coco, write_json
from raydet.data.masks import decode_masks, encode_masks, rle_boxes
from raydet.data.problems import DataError
from raydet.data.records import make_record, record_at, records_to_table, table_has_masks
from raydet.data.sample import load_sample
from tests.data.data_helpers import coco_json, write_png
from tests.helpers import REPO

pytestmark = pytest.mark.timeout(30)

SQUARE = [[2, 3, 12, 3, 12, 9, 2, 9]]  # pixels x 2..11, y 3..8 (pycocotools fills the centres inside)
TWO_PARTS = [[20, 2, 28, 2, 28, 6, 20, 6], [30, 10, 36, 10, 36, 14]]  # a rectangle and a triangle, merged


def crowd_rle(height: int, width: int) -> dict:
    """COCO's crowd format: an uncompressed RLE (column-major runs) of rows 20..29, columns 5..24."""
    mask = np.zeros((height, width), np.uint8)
    mask[20:30, 5:25] = 1
    runs, current, length = [], 0, 0
    for value in mask.flatten(order="F"):
        if value != current:
            runs.append(length)
            current, length = value, 0
        length += 1
    return {"size": [height, width], "counts": runs + [length]}


def annotation(ann_id: int, bbox: list, segmentation: object = None, iscrowd: int = 0, image_id: int = 1) -> dict:
    ann = {"id": ann_id, "image_id": image_id, "category_id": 1, "bbox": bbox, "iscrowd": iscrowd}
    if segmentation is not None:
        ann["segmentation"] = segmentation
    return ann


def write_instances(tmp_path, annotations: list[dict], height: int = 40, width: int = 50):
    write_png(tmp_path / "img" / "a.png", height, width)
    return coco_json(tmp_path / "ann.json", [{"id": 1, "file_name": "a.png", "height": height, "width": width}],
                     annotations)


def read(tmp_path, annotations, policy="skip", **kwargs) -> CocoDataset:
    path = write_instances(tmp_path, annotations, **kwargs)
    return CocoDataset(str(path), str(tmp_path / "img"), on_bad_record=policy, with_mask=True)


def test_polygons_and_crowd_rle_are_read_into_compressed_rle_masks(tmp_path):
    compressed = mask_utils.frPyObjects(crowd_rle(40, 50), 40, 50)
    compressed_text = {"size": [40, 50], "counts": compressed["counts"].decode("ascii")}
    dataset = read(tmp_path, [
        annotation(1, [2, 3, 10, 6], SQUARE),
        annotation(2, [20, 2, 16, 12], TWO_PARTS),
        annotation(3, [5, 20, 20, 10], crowd_rle(40, 50), iscrowd=1),
        annotation(4, [5, 20, 20, 10], compressed_text),
    ])
    (record,) = dataset.records
    assert not dataset.problems and dataset.with_mask
    assert record["ignore"].tolist() == [False, False, True, False]
    assert all(isinstance(counts, bytes) for counts in record["masks"])
    masks = decode_masks(record["masks"], 40, 50)
    assert masks.shape == (4, 40, 50) and masks.dtype == np.uint8
    assert masks[0].sum() == 10 * 6 and masks[0][3:9, 2:12].all()
    assert masks[1][2:6, 20:28].all() and masks[1][11, 34] and not masks[1][8].any()  # both parts, one mask
    assert masks[1].sum() == 32 + 12
    assert masks[2].sum() == 200 and masks[2][20:30, 5:25].all() and np.array_equal(masks[2], masks[3])
    np.testing.assert_array_equal(rle_boxes(record["masks"], 40, 50)[[0, 2]], record["boxes"][[0, 2]])


def test_without_with_mask_records_have_no_masks_and_segmentations_are_not_checked(tmp_path):
    path = write_instances(tmp_path, [annotation(1, [2, 3, 10, 6], [[1, 2]])])  # a malformed polygon
    dataset = CocoDataset(str(path), str(tmp_path / "img"), on_bad_record="error")
    assert dataset.records[0]["masks"] is None and not dataset.with_mask and not dataset.problems


# (kind, the bad annotation); each dataset also holds one good annotation that must survive
BAD_MASKS = {
    "invalid_mask": [annotation(2, [2, 3, 10, 6]),  # no segmentation at all
                     annotation(3, [2, 3, 10, 6], [[1, 2, 3, 4]]),  # a polygon of two points
                     annotation(4, [2, 3, 10, 6], {"size": [40, 51], "counts": [2040]}),  # the wrong size
                     annotation(5, [2, 3, 10, 6], "polygon")],
    "empty_mask": [annotation(2, [2, 3, 10, 6], [[2, 3, 2.2, 3, 2.2, 3.2]])],  # covers no pixel centre
    "mask_outside_box": [annotation(2, [30, 20, 10, 10], SQUARE)],
}


@pytest.mark.parametrize("kind", sorted(BAD_MASKS))
def test_bad_masks_are_skipped_and_counted_and_the_valid_objects_kept(tmp_path, kind):
    good = annotation(1, [20, 2, 16, 12], TWO_PARTS)
    dataset = read(tmp_path, [good, *BAD_MASKS[kind]])
    assert dataset.problems.counts == {kind: len(BAD_MASKS[kind])}, dataset.problems.lines()
    (record,) = dataset.records  # the image stays, with its good object and that object's mask
    assert record["boxes"].tolist() == [[20, 2, 36, 14]] and len(record["masks"]) == 1
    assert record["masks"][0] == encode_masks(decode_masks(record["masks"], 40, 50))[0]
    first_bad = BAD_MASKS[kind][0]["id"]
    assert f"annotations[1] (id {first_bad}, image 1)" in dataset.problems.examples[kind][0]


def test_a_bad_mask_under_the_error_policy_names_the_file_and_the_annotation(tmp_path):
    with pytest.raises(DataError) as raised:
        read(tmp_path, [annotation(1, [2, 3, 10, 6], SQUARE), annotation(7, [2, 3, 10, 6], [[1, 2, 3, 4]])],
             policy="error")
    message = str(raised.value)
    assert str(tmp_path / "ann.json") in message and "annotations[1] (id 7, image 1)" in message
    assert "at least 3 x, y points" in message and "invalid_mask" in message and "on_bad_record: skip" in message


def test_a_bad_box_is_reported_as_a_box_not_as_a_mask(tmp_path):
    dataset = read(tmp_path, [annotation(1, [2, 3, 0, 6], SQUARE), annotation(2, [2, 3, 10, 6], SQUARE)])
    assert dataset.problems.counts == {"invalid_box": 1} and len(dataset.records[0]["masks"]) == 1


def test_masks_round_trip_through_the_records_table_next_to_records_without_masks(tmp_path):
    dataset = read(tmp_path, [annotation(1, [2, 3, 10, 6], SQUARE), annotation(2, [20, 2, 16, 12], TWO_PARTS)])
    without = make_record(2, "b.png", 40, 50, boxes=[[1, 1, 5, 5]], labels=[0])
    empty = make_record(3, "c.png", 40, 50, masks=[])
    table = records_to_table([*dataset.records, without, empty])
    assert str(table.schema.field("masks").type) == "list<item: binary>" and table.column("masks").null_count == 1
    back = [record_at(table, row) for row in range(table.num_rows)]
    assert back[0]["masks"] == dataset.records[0]["masks"] and back[1]["masks"] is None and back[2]["masks"] == []
    assert table_has_masks(table) and not table_has_masks(records_to_table([without]))


def test_box_only_records_table_is_unchanged_but_for_a_null_masks_column():
    record = make_record(2, "b.png", 40, 50, boxes=[[1, 1, 5, 5]], labels=[0])
    table = records_to_table([record])
    assert table.column_names == ["image_id", "path", "encoded", "height", "width", "boxes", "labels", "ignore",
                                  "masks"]
    assert table.drop_columns(["masks"]).to_pylist() == [{
        "image_id": 2, "path": "b.png", "encoded": None, "height": 40, "width": 50,
        "boxes": [1.0, 1.0, 5.0, 5.0], "labels": [0], "ignore": [False]}]


def test_make_record_checks_its_masks():
    counts = encode_masks(np.ones((1, 4, 5), np.uint8))
    with pytest.raises(ValueError, match="1 masks for 2 boxes"):
        make_record(1, "a.png", 4, 5, boxes=[[0, 0, 1, 1], [1, 1, 2, 2]], labels=[0, 0], masks=counts)
    with pytest.raises(ValueError, match="need the image's height and width"):
        make_record(1, "a.png", 0, 0, boxes=[[0, 0, 1, 1]], labels=[0], masks=counts)
    with pytest.raises(TypeError, match="compressed RLE counts"):
        make_record(1, "a.png", 4, 5, boxes=[[0, 0, 1, 1]], labels=[0], masks=[np.ones((4, 5))])


def test_records_to_coco_writes_rle_segmentations_with_mask_areas_that_read_back_the_same(tmp_path):
    dataset = read(tmp_path, [annotation(1, [2, 3, 10, 6], SQUARE), annotation(2, [20, 2, 16, 12], TWO_PARTS),
                              annotation(3, [5, 20, 20, 10], crowd_rle(40, 50), iscrowd=1)])
    written = records_to_coco(dataset.records, dataset.classes, dataset.cat_ids, str(tmp_path / "img"))
    segmentations = [a["segmentation"] for a in written["annotations"]]
    assert all(s["size"] == [40, 50] and isinstance(s["counts"], str) for s in segmentations)
    assert [a["area"] for a in written["annotations"]] == [60.0, 32.0 + 12.0, 200.0]
    assert [a["iscrowd"] for a in written["annotations"]] == [0, 0, 1]
    write_json(written, tmp_path / "out.json")
    again = CocoDataset(str(tmp_path / "out.json"), str(tmp_path / "img"), on_bad_record="error", with_mask=True)
    assert again.records[0]["masks"] == dataset.records[0]["masks"]
    box_only = records_to_coco([make_record(1, "a.png", 40, 50, boxes=[[2, 3, 12, 9]], labels=[0])], ["thing"], [1])
    assert box_only["annotations"] == [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [2.0, 3.0, 10.0, 6.0],
                                        "area": 60.0, "iscrowd": 0}]


def test_voc_datasets_have_no_masks(tmp_path):
    write_png(tmp_path / "x.png", 40, 60)
    (tmp_path / "x.xml").write_text(
        "<annotation><filename>x.png</filename><size><width>60</width><height>40</height></size>"
        "<object><name>dog</name><bndbox><xmin>1</xmin><ymin>2</ymin><xmax>30</xmax><ymax>20</ymax></bndbox></object>"
        "</annotation>")
    voc = VOCDataset(str(tmp_path / "x.xml"), str(tmp_path))
    assert voc.records[0]["masks"] is None and not voc.with_mask
    assert load_sample(voc.records[0]).masks is None


def test_load_sample_decodes_masks_in_the_images_frame(tmp_path):
    dataset = read(tmp_path, [annotation(1, [2, 3, 10, 6], SQUARE), annotation(2, [20, 2, 16, 12], TWO_PARTS)])
    sample = load_sample(dataset.records[0])
    assert sample.masks.dtype == torch.uint8 and sample.masks.shape == (2, 40, 50)
    assert torch.equal(sample.masks, torch.from_numpy(decode_masks(dataset.records[0]["masks"], 40, 50)))
    assert load_sample(dataset.records[0], with_masks=False).masks is None


def test_size_mismatch_crops_or_pads_masks_to_the_decoded_image_and_drops_emptied_instances(tmp_path):
    masks = np.zeros((3, 40, 50), np.uint8)
    masks[0, 2:10, 3:12] = 1  # stays
    masks[1, 32:38, 40:48] = 1  # its box keeps a strip in the smaller image, its mask nothing: dropped
    masks[2, 30:40, 25:35] = 1  # cut at the bottom
    boxes = [[3, 2, 12, 10], [38, 29, 48, 38], [25, 30, 35, 40]]
    path = write_png(tmp_path / "small.png", 31, 60)  # annotated as 40 x 50: shorter and wider
    record = make_record(1, str(path), 40, 50, boxes=boxes, labels=[0, 1, 2], masks=encode_masks(masks))
    sample = load_sample(record)
    assert sample.masks.shape == (2, 31, 60) and sample.labels.tolist() == [0, 2]
    assert torch.equal(sample.masks[0, :, :50], torch.from_numpy(masks[0, :31])) and sample.masks[:, :, 50:].sum() == 0
    assert sample.masks[1].sum() == 10 and sample.boxes[1].tolist() == [25, 30, 35, 31]


def test_configs_with_masks_build_datasets_with_masks(shapes_dir):
    from raydet.builder import build_datasets
    from raydet.config import load_config

    config = load_config(REPO / "configs/_base_/datasets/shapes_instance.yaml", [f"data.data_root={shapes_dir}"])
    datasets = build_datasets(config, ("train", "val", "test"))
    assert set(datasets) == {"train", "val", "test"}
    assert all(d.with_mask and d.records[0]["masks"] is not None for d in datasets.values())
    assert all(len(r["masks"]) == len(r["boxes"]) for d in datasets.values() for r in d.records)  # one per object
    coco = load_config(REPO / "configs/_base_/datasets/coco_instance.yaml")
    detection = load_config(REPO / "configs/_base_/datasets/coco_detection.yaml")
    for split in ("train", "val", "test"):
        node = coco["data"][split]
        assert node.pop("with_mask") is True and node == detection["data"][split]
    assert json.loads((shapes_dir / "annotations/val.json").read_text())["annotations"][0]["segmentation"]


def test_with_mask_on_a_file_without_any_segmentation_is_one_clear_error(tmp_path):
    # e.g. shapes data made before raydet wrote masks: not hundreds of skipped objects and an empty training set
    with pytest.raises(DataError, match=r"ann.json: with_mask: true, but no annotation has a 'segmentation'.*"
                                        r"prepare shapes again"):
        read(tmp_path, [annotation(1, [2, 3, 10, 6]), annotation(2, [20, 3, 30, 6])])
    with pytest.raises(DataError, match="no annotation has a 'segmentation'"):  # a box-only export's empty lists
        read(tmp_path, [annotation(1, [2, 3, 10, 6], []), annotation(2, [20, 3, 30, 6], [])])
