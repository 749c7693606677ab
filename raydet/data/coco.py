"""COCO json -> records (via pycocotools' index).

Category ids are sorted and mapped to labels ``0..K-1`` in that order (the
same mapping every time the file is read); ``iscrowd`` boxes become
``ignore`` flags.  COCO boxes are ``[x, y, w, h]``; records hold
``[x1, y1, x2, y2] = [x, y, x + w, y + h]``.  With ``with_mask`` each
annotation's ``segmentation`` (polygons; RLE for crowd regions) becomes the
record's compressed RLE mask, and an annotation whose segmentation cannot be
used is dropped like one with a bad box (``raydet.data.records.check_mask``).
"""
from __future__ import annotations

import contextlib
import io
import json

from pycocotools.coco import COCO

from .. import storage
from .image_io import local_file_problem
from .problems import DataError, ProblemReport
from .records import ReadResult, check_box, check_mask, make_record


def load_json(path: str) -> object:
    """Parse a json file; ``DataError`` naming the file, line and column when it is malformed."""
    try:
        return json.loads(storage.read_bytes(path))
    except FileNotFoundError:
        raise DataError(f"annotation file not found: {path}") from None
    except OSError as err:
        raise DataError(f"cannot read annotation file {path}: {storage.describe(err)}") from None
    except json.JSONDecodeError as err:
        raise DataError(f"{path}:{err.lineno}:{err.colno}: malformed JSON: {err.msg}") from None
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: malformed JSON: not UTF-8 text ({err.reason} at byte {err.start})") from None


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def read_coco(ann_file: str, img_prefix: str, problems: ProblemReport, check_files: bool = True,
              with_mask: bool = False) -> ReadResult:
    """Read a COCO detection (or instance segmentation) json into records.

    Args:
        ann_file: path of the json.
        img_prefix: folder or URI prefix that ``file_name`` is relative to.
        problems: where bad entries are reported (its policy decides skip / error).
        check_files: check that local image files exist and are not empty.
        with_mask: read each annotation's ``segmentation`` into the record's ``masks``
            (else ``masks`` is ``None`` and segmentations are not looked at).

    Raises:
        DataError: the file is missing, is not JSON, lacks ``images`` /
            ``categories``, or has no images at all.
    """
    coco_json = _load_coco_json(ann_file)
    categories = _read_categories(coco_json["categories"], ann_file)
    images = _read_images(coco_json["images"], ann_file, problems)
    annotations = _read_annotations(coco_json.get("annotations", []), images, categories, ann_file, problems,
                                    with_mask)

    # pycocotools builds the per-image and per-category index (it prints progress: silence it).
    coco = COCO()
    coco.dataset = {"images": list(images.values()), "annotations": annotations,
                    "categories": list(categories.values())}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()

    cat_ids = sorted(coco.getCatIds())
    label_of = {cat_id: label for label, cat_id in enumerate(cat_ids)}
    records = []
    for image_id in sorted(coco.getImgIds()):
        image = coco.imgs[image_id]
        path = storage.join(img_prefix, image["file_name"])
        file_problem = local_file_problem(path) if check_files else None
        if file_problem is not None:
            problems.add(file_problem.kind, f"{ann_file}: image {image_id}", str(file_problem))
            continue
        anns = coco.imgToAnns.get(image_id, [])
        records.append(make_record(
            image_id, path, image["height"], image["width"],
            boxes=[a["bbox_xyxy"] for a in anns],
            labels=[label_of[a["category_id"]] for a in anns],
            ignore=[bool(a.get("iscrowd", 0)) for a in anns],
            masks=[a["mask_rle"] for a in anns] if with_mask else None,
        ))
    if not records:
        raise DataError(f"{ann_file}: no usable images ({problems.short()})")
    return ReadResult(records, [coco.cats[c]["name"] for c in cat_ids], cat_ids)


def _load_coco_json(ann_file: str) -> dict:
    """The parsed json, its top level checked: ``images`` (not empty) and ``categories`` lists, ``annotations``
    a list when present."""
    coco_json = load_json(ann_file)
    if not isinstance(coco_json, dict):
        raise DataError(f"{ann_file}: malformed COCO file: the top level must be an object, "
                        f"got {type(coco_json).__name__}")
    for key in ("images", "categories"):
        if not isinstance(coco_json.get(key), list):
            raise DataError(f"{ann_file}: malformed COCO file: '{key}' must be a list")
    if not isinstance(coco_json.get("annotations", []), list):
        raise DataError(f"{ann_file}: malformed COCO file: 'annotations' must be a list")
    if not coco_json["images"]:
        raise DataError(f"{ann_file}: empty annotations: the file lists no images")
    return coco_json


def _read_categories(entries: list, ann_file: str) -> dict[int, dict]:
    """``{category id: entry}``; a malformed or repeated category is a ``DataError`` (labels depend on them all)."""
    categories = {}
    for i, cat in enumerate(entries):
        if not isinstance(cat, dict) or not _is_int(cat.get("id")) or not isinstance(cat.get("name"), str):
            raise DataError(f"{ann_file}: categories[{i}]: malformed category {cat!r} (needs an int 'id' and a 'name')")
        if cat["id"] in categories:
            raise DataError(f"{ann_file}: categories[{i}]: duplicate category id {cat['id']}")
        categories[cat["id"]] = cat
    return categories


def _read_images(entries: list, ann_file: str, problems: ProblemReport) -> dict[int, dict]:
    """``{image id: entry}`` of the usable image entries; the others are reported to ``problems``."""
    images = {}
    for i, image in enumerate(entries):
        where = f"{ann_file}: images[{i}]"
        if not isinstance(image, dict) or not _is_int(image.get("id")) or not isinstance(image.get("file_name"), str):
            problems.add("malformed_file", where, f"image entry {image!r} needs an int 'id' and a 'file_name'")
            continue
        where += f" (id {image['id']})"
        if image["id"] in images:
            problems.add("duplicate_image_id", where,
                         f"id {image['id']} is also used by {images[image['id']]['file_name']!r}")
            continue
        if not _is_int(image.get("width")) or not _is_int(image.get("height")):
            problems.add("malformed_file", where, "image entry needs int 'width' and 'height'")
            continue
        if image["width"] <= 0 or image["height"] <= 0:
            problems.add("empty_image", where, f"{image['file_name']} is {image['width']}x{image['height']}")
            continue
        images[image["id"]] = image
    return images


def _read_annotations(entries: list, images: dict[int, dict], categories: dict[int, dict], ann_file: str,
                      problems: ProblemReport, with_mask: bool) -> list[dict]:
    """The usable annotations, renumbered from 1, each with ``bbox_xyxy`` (absolute ``[x1, y1, x2, y2]``, checked
    against its image) and ``mask_rle`` (with ``with_mask``, else None); the others are reported to ``problems``."""
    if with_mask and entries and not any(isinstance(ann, dict) and ann.get("segmentation") for ann in entries):
        raise DataError(f"{ann_file}: with_mask: true, but no annotation has a 'segmentation' (instance masks; "
                        "box-only exports write empty ones): "
                        "use a file with masks, or drop with_mask (shapes data made before raydet wrote masks: "
                        "run python -m raydet.data.prepare shapes again)")
    annotations = []
    for i, ann in enumerate(entries):
        where = f"{ann_file}: annotations[{i}]"
        if not isinstance(ann, dict) or not _is_int(ann.get("image_id")) or not _is_int(ann.get("category_id")):
            problems.add("malformed_file", where, "annotation needs int 'image_id' and 'category_id'")
            continue
        where += f" (id {ann.get('id')}, image {ann['image_id']})"
        if ann["image_id"] not in images:
            problems.add("unknown_image", where, f"image id {ann['image_id']} is not in 'images'")
            continue
        if ann["category_id"] not in categories:
            problems.add("unknown_category", where, f"category id {ann['category_id']} is not in 'categories'")
            continue
        bbox = ann.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4 or not all(isinstance(v, (int, float)) for v in bbox):
            problems.add("invalid_box", where, f"bbox {bbox!r} is not [x, y, w, h]")
            continue
        image = images[ann["image_id"]]
        box = check_box([bbox[0], bbox[1], bbox[0] + bbox[2], bbox[1] + bbox[3]], image["height"], image["width"],
                        where, problems)
        if box is None:
            continue
        mask = (check_mask(ann.get("segmentation"), box, image["height"], image["width"], where, problems)
                if with_mask else None)
        if mask is not None or not with_mask:
            annotations.append({**ann, "id": len(annotations) + 1, "bbox_xyxy": box, "mask_rle": mask})
    return annotations
