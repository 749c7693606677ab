"""Bad input: every kind is reported (file and where), valid data is kept, ``error`` stops at the first."""
from __future__ import annotations

import pytest

from raydet.data import CocoDataset, VOCDataset
from raydet.data.problems import DataError
from tests.data.data_helpers import coco_json, write_png
from tests.helpers import run_cli, write


def _image(tmp_path, name="a.png", h=30, w=40, **extra):
    write_png(tmp_path / "img" / name, h, w)
    return {"id": extra.pop("id", 1), "file_name": name, "height": h, "width": w, **extra}


def _ann(image_id=1, bbox=(1, 1, 10, 10), category_id=1, **extra):
    return {"id": extra.pop("id", 1), "image_id": image_id, "category_id": category_id, "bbox": list(bbox),
            "iscrowd": 0, **extra}


def _read(tmp_path, images, annotations, policy="skip"):
    path = coco_json(tmp_path / "ann.json", images, annotations)
    return CocoDataset(str(path), str(tmp_path / "img"), on_bad_record=policy)


# (kind, images, annotations, what survives: {image_id: number of boxes})
CASES = {
    "invalid_box": (lambda p: [_image(p)],
                    [_ann(bbox=(5, 5, 0, 4)), _ann(bbox=(5, 5, -3, 4), id=2), _ann(id=3)], {1: 1}),
    "box_outside_image": (lambda p: [_image(p)], [_ann(bbox=(50, 5, 10, 10)), _ann(id=2)], {1: 1}),
    "unknown_category": (lambda p: [_image(p)], [_ann(category_id=42), _ann(id=2)], {1: 1}),
    "unknown_image": (lambda p: [_image(p)], [_ann(image_id=99), _ann(id=2)], {1: 1}),
    "duplicate_image_id": (lambda p: [_image(p), _image(p, "b.png")], [_ann()], {1: 1}),
    "missing_image": (lambda p: [_image(p), {"id": 2, "file_name": "gone.png", "height": 9, "width": 9}],
                      [_ann()], {1: 1}),
    "empty_image": (lambda p: [_image(p), {**_image(p, "z.png", id=2), "height": 0}], [_ann()], {1: 1}),
    "malformed_file": (lambda p: [_image(p), {"id": "two", "file_name": "b.png"}], [_ann()], {1: 1}),
}
# where each case's bad records are, as every example of the report names them after the file
WHERE = {
    "invalid_box": ["annotations[0] (id 1, image 1)", "annotations[1] (id 2, image 1)"],
    "box_outside_image": ["annotations[0] (id 1, image 1)"],
    "unknown_category": ["annotations[0] (id 1, image 1)"],
    "unknown_image": ["annotations[0] (id 1, image 99)"],
    "duplicate_image_id": ["images[1] (id 1)"],
    "missing_image": ["image 2"],
    "empty_image": ["images[1] (id 2)"],
    "malformed_file": ["images[1]"],
}


@pytest.mark.parametrize("kind", sorted(CASES))
@pytest.mark.timeout(30)
def test_each_bad_record_kind_is_skipped_counted_and_named(tmp_path, kind):
    images, annotations, survivors = CASES[kind]
    dataset = _read(tmp_path, images(tmp_path), annotations)
    assert {r["image_id"]: len(r["boxes"]) for r in dataset.records} == survivors
    assert dataset.problems.counts == {kind: len(WHERE[kind])}, dataset.problems  # each bad record, no other kind
    examples = dataset.problems.examples[kind]
    ann_file = str(tmp_path / "ann.json")
    assert [example.split(": ")[:2] for example in examples] == [[ann_file, where] for where in WHERE[kind]]
    with pytest.raises(DataError, match=kind):
        _read(tmp_path, images(tmp_path), annotations, policy="error")


@pytest.mark.timeout(30)
def test_zero_byte_image_file_is_an_empty_image(tmp_path):
    image = _image(tmp_path)
    (tmp_path / "img" / "a.png").write_bytes(b"")
    with pytest.raises(DataError, match="no usable images .*empty_image"):
        _read(tmp_path, [image], [_ann()])


@pytest.mark.timeout(30)
def test_partly_outside_box_is_clipped_and_kept_under_both_policies(tmp_path):
    for policy in ("skip", "error"):
        dataset = _read(tmp_path, [_image(tmp_path)], [_ann(bbox=(30, -5, 20, 15))], policy)
        assert dataset.records[0]["boxes"].tolist() == [[30, 0, 40, 10]]
        assert dataset.problems.counts == {"box_clipped": 1}


@pytest.mark.timeout(30)
def test_malformed_json_names_file_line_and_column(tmp_path):
    path = write(tmp_path / "bad.json", '{"images": [\n  {"id": 1,, "file_name": "a.png"}]}')
    with pytest.raises(DataError, match=r"bad\.json:2:12: malformed JSON"):
        CocoDataset(str(path), str(tmp_path))


@pytest.mark.timeout(30)
def test_empty_annotations_are_an_error(tmp_path):
    with pytest.raises(DataError, match="empty annotations"):
        _read(tmp_path, [], [])
    (tmp_path / "xmls").mkdir()
    with pytest.raises(DataError, match="empty annotations"):
        VOCDataset(str(tmp_path / "xmls"), str(tmp_path))


@pytest.mark.timeout(30)
def test_malformed_xml_is_skipped_with_file_line_and_column_and_the_rest_kept(tmp_path):
    write_png(tmp_path / "ok.png", 20, 20)
    write(tmp_path / "xmls" / "a.xml",
          "<annotation><filename>ok.png</filename><size><width>20</width><height>20</height></size>"
          "<object><name>t</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>9</xmax><ymax>9</ymax></bndbox></object></annotation>")
    write(tmp_path / "xmls" / "b.xml", "<annotation>\n<filename>ok.png</filename>\n<size></annotation>")
    dataset = VOCDataset(str(tmp_path / "xmls"), str(tmp_path))
    assert len(dataset) == 1 and dataset.problems.counts == {"malformed_file": 1}
    assert "b.xml:3:" in dataset.problems.examples["malformed_file"][0]
    with pytest.raises(DataError, match=r"b\.xml:3:\d+: malformed XML"):
        VOCDataset(str(tmp_path / "xmls"), str(tmp_path), on_bad_record="error")


@pytest.mark.timeout(60)
def test_config_check_prints_problem_summary_and_error_policy_is_one_line(tmp_path):
    coco_json(tmp_path / "ann.json", [_image(tmp_path)], [_ann(bbox=(5, 5, 0, 4)), _ann(id=2)])
    config = write(tmp_path / "c.yaml", f"""
data:
  data_root: {tmp_path}
  train: {{type: CocoDataset, ann_file: ann.json, img_prefix: img, pipeline: [{{type: Resize, img_scale: [64, 64]}}]}}
""")
    ok = run_cli("raydet.check", str(config))
    assert ok.returncode == 0, ok.stderr
    assert "data.train: CocoDataset 1 images" in ok.stdout and "1 invalid_box" in ok.stdout
    strict = run_cli("raydet.check", str(config), "--set", "+data.train.on_bad_record=error")
    assert strict.returncode == 2
    assert strict.stderr.count("\n") == 1 and strict.stderr.startswith("error: data.train: ")
    assert "ann.json: annotations[0]" in strict.stderr and "invalid_box" in strict.stderr
    typo = run_cli("raydet.check", str(config), "--set", "data.train.pipeline.0.img_scale=[64, 64]",
                   "--set", "+data.train.pipeline.0.keep_ration=true")
    assert typo.returncode == 2 and "data.train.pipeline.0.keep_ration" in typo.stderr and "keep_ratio" in typo.stderr
