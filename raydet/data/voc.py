"""Pascal VOC xml -> records.

``ann_file`` is one of:

- an image-set list (``VOC2007/ImageSets/Main/trainval.txt``, one id per line):
  the devkit layout, ``{img_prefix}/Annotations/{id}.xml`` and images under
  ``{img_prefix}/JPEGImages/`` (mmdetection's ``img_prefix: VOC2007/``);
- a folder of ``.xml`` files, or a single ``.xml`` file: images are
  ``{img_prefix}/{<filename>}``.

Coordinates are read as written (``xmin`` … ``ymax`` in pixels, no 1-pixel
shift).  ``difficult`` objects become ``ignore`` flags.  Labels follow
``classes`` when given, otherwise the sorted set of names found; category ids
(for COCO json) are ``1..K`` in label order.  Image ids are positions in the
sorted list of annotation ids.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET

from .. import storage
from .image_io import ImageError, load_rgb, local_file_problem
from .problems import DataError, ProblemReport
from .records import ReadResult, check_box, make_record


def _annotation_files(ann_file: str, img_prefix: str) -> list[tuple[str, str]]:
    """``(xml path, image folder)`` pairs, sorted by annotation id."""
    if storage.is_dir(ann_file):
        names = [n for n in storage.list_dir(ann_file) if n.endswith(".xml")]
        return [(storage.join(ann_file, n), img_prefix) for n in names]
    if ann_file.endswith(".xml"):
        if not storage.is_file(ann_file):
            raise DataError(f"annotation file not found: {ann_file}")
        return [(ann_file, img_prefix)]
    try:
        ids = sorted({line.strip() for line in storage.read_text(ann_file).splitlines() if line.strip()})
    except FileNotFoundError:
        raise DataError(f"annotation file not found: {ann_file}") from None
    except OSError as err:
        raise DataError(f"cannot read annotation file {ann_file}: {storage.describe(err)}") from None
    return [(storage.join(img_prefix, "Annotations", f"{i}.xml"), storage.join(img_prefix, "JPEGImages"))
            for i in ids]


def _number(node: ET.Element | None, tag: str) -> float:
    child = node.find(tag) if node is not None else None
    if child is None or child.text is None:
        raise ValueError(f"no <{tag}>")
    return float(child.text)


def _parse(xml_path: str, image_folder: str, image_id: int, label_of: dict[str, int] | None,
           problems: ProblemReport, check_files: bool) -> tuple[dict, list[tuple[str, list, bool]]] | None:
    """One xml -> (image info, objects as (name, box, difficult)); None when the file is unusable."""
    try:
        root = ET.fromstring(storage.read_bytes(xml_path))
    except FileNotFoundError:
        problems.add("malformed_file", xml_path, "annotation file not found")
        return None
    except OSError as err:
        problems.add("malformed_file", xml_path, f"cannot read: {storage.describe(err)}")
        return None
    except ET.ParseError as err:
        line, column = err.position
        problems.add("malformed_file", f"{xml_path}:{line}:{column + 1}", f"malformed XML: {str(err).split(':')[0]}")
        return None
    filename = root.findtext("filename")
    if not filename:
        problems.add("malformed_file", xml_path, "no <filename>")
        return None
    path = storage.join(image_folder, filename.strip())
    missing = local_file_problem(path) if check_files else None
    if missing is not None:
        problems.add(missing.kind, xml_path, str(missing))
        return None
    try:
        width, height = int(_number(root.find("size"), "width")), int(_number(root.find("size"), "height"))
    except ValueError:
        width = height = 0
    if width <= 0 or height <= 0:  # no usable <size>: the image itself says
        try:
            img = load_rgb(path)
        except ImageError as err:
            problems.add(err.kind, xml_path, f"no usable <size> and {err}")
            return None
        height, width = int(img.shape[-2]), int(img.shape[-1])
    objects = []
    for k, obj in enumerate(root.iter("object")):
        where = f"{xml_path}: object[{k}]"
        name = (obj.findtext("name") or "").strip()
        if label_of is not None and name not in label_of:
            problems.add("unknown_category", where, f"class {name!r} is not one of {sorted(label_of)}")
            continue
        try:
            bndbox = obj.find("bndbox")
            raw = [_number(bndbox, tag) for tag in ("xmin", "ymin", "xmax", "ymax")]
        except ValueError as err:
            problems.add("invalid_box", where, f"<bndbox>: {err}")
            continue
        box = check_box(raw, height, width, where, problems)
        if box is not None:
            objects.append((name, box, (obj.findtext("difficult") or "0").strip() == "1"))
    return {"image_id": image_id, "path": path, "height": height, "width": width}, objects


def read_voc(ann_file: str, img_prefix: str, problems: ProblemReport, classes: list[str] | None = None,
             check_files: bool = True) -> ReadResult:
    """Read Pascal VOC xml annotations into records (see the module docstring for the layouts)."""
    files = _annotation_files(ann_file, img_prefix)
    if not files:
        raise DataError(f"{ann_file}: empty annotations: no .xml files")
    label_of = {name: i for i, name in enumerate(classes)} if classes is not None else None
    parsed = [_parse(xml, folder, image_id, label_of, problems, check_files)
              for image_id, (xml, folder) in enumerate(files)]
    parsed = [p for p in parsed if p is not None]
    if not parsed:
        raise DataError(f"{ann_file}: no usable images ({problems.short()})")
    if classes is None:
        classes = sorted({name for _, objects in parsed for name, _, _ in objects})
        label_of = {name: i for i, name in enumerate(classes)}
    records = [
        make_record(image["image_id"], image["path"], image["height"], image["width"],
                    boxes=[box for _, box, _ in objects], labels=[label_of[name] for name, _, _ in objects],
                    ignore=[difficult for _, _, difficult in objects])
        for image, objects in parsed
    ]
    return ReadResult(records, list(classes), list(range(1, len(classes) + 1)))
