"""Bad input: each problem counted by kind, a few examples kept, and the skip / error policy.

Readers report every problem they find in an annotation file or image to a
``ProblemReport``.  With ``on_bad_record: skip`` (the default) the bad part is
dropped — a box, an annotation, an image — and everything valid is kept; with
``on_bad_record: error`` the first problem that would lose data raises a
``DataError`` naming the file and where in it.  Problems that are repaired
without losing anything (a box clipped to its image) are reported under both
policies but never raise.
"""
from __future__ import annotations

from typing import Literal

from ..errors import UserError

OnBadRecord = Literal["skip", "error"]

PROBLEM_KINDS: dict[str, str] = {
    "malformed_file": "annotation file or entry that cannot be parsed (entry skipped)",
    "missing_image": "image file not found (image skipped)",
    "empty_image": "image file of zero bytes or with zero width/height (image skipped)",
    "corrupt_image": "image that cannot be decoded (image skipped)",
    "oversized_image": "image whose header declares more pixels than raydet.data.image_io.MAX_IMAGE_PIXELS: a "
                       "decompression bomb or an image to tile (refused before decoding, image skipped)",
    "crashed_decoder": "image whose decoding or transforms crashed the process (a native crash; the retry "
                       "skipped the image)",
    "duplicate_image_id": "image id already used by an earlier image (later image skipped)",
    "unknown_image": "annotation for an image id that is not in the image list (dropped)",
    "unknown_category": "annotation of a category that is not in the category list (dropped)",
    "invalid_box": "box with x2 <= x1, y2 <= y1 or non-numeric coordinates (dropped)",
    "box_outside_image": "box entirely outside its image (dropped)",
    "box_clipped": "box partly outside its image (clipped to the image, kept)",
    "invalid_mask": "missing or malformed segmentation (polygons, RLE) of an annotation read with masks (dropped)",
    "empty_mask": "segmentation that covers no pixel (annotation dropped)",
    "mask_outside_box": "segmentation that does not overlap its annotation's bbox (annotation dropped)",
    "size_mismatch": "decoded image size differs from the annotation (boxes clipped, kept)",
}
# Problems that are repaired without losing data: reported, never an error.
REPAIRED_KINDS = frozenset({"box_clipped", "size_mismatch"})


class DataError(UserError):
    """Input data that cannot be used: the message names the file and where in it."""


class ProblemReport:
    """Counts of problems by kind plus the first few examples of each.

    Args:
        policy: ``"skip"`` records problems; ``"error"`` raises ``DataError`` on
            the first one that drops data.
        max_examples: examples kept per kind.
    """

    def __init__(self, policy: OnBadRecord = "skip", max_examples: int = 3):
        if policy not in ("skip", "error"):
            raise ValueError(f"on_bad_record must be 'skip' or 'error', got {policy!r}")
        self.policy = policy
        self.max_examples = max_examples
        self.counts: dict[str, int] = {}
        self.examples: dict[str, list[str]] = {}

    def add(self, kind: str, where: str, message: str) -> None:
        """Record one problem of ``kind`` at ``where`` (``"ann.json: annotations[7]"``)."""
        if kind not in PROBLEM_KINDS:
            raise KeyError(f"unknown problem kind {kind!r}; known: {', '.join(PROBLEM_KINDS)}")
        text = f"{where}: {message}"
        if self.policy == "error" and kind not in REPAIRED_KINDS:
            raise DataError(f"{text} [{kind}; set on_bad_record: skip to skip such records]")
        self.counts[kind] = self.counts.get(kind, 0) + 1
        examples = self.examples.setdefault(kind, [])
        if len(examples) < self.max_examples:
            examples.append(text)

    def merge(self, other: "ProblemReport") -> None:
        """Add ``other``'s counts and examples to this report (no policy check)."""
        for kind, count in other.counts.items():
            self.counts[kind] = self.counts.get(kind, 0) + count
            examples = self.examples.setdefault(kind, [])
            examples.extend(other.examples.get(kind, [])[: self.max_examples - len(examples)])

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def __bool__(self) -> bool:
        return self.total > 0

    def __repr__(self) -> str:
        return f"ProblemReport({self.counts})"

    def short(self) -> str:
        """``"3 invalid_box, 1 missing_image"`` or ``"no problems"``."""
        if not self.counts:
            return "no problems"
        return ", ".join(f"{count} {kind}" for kind, count in sorted(self.counts.items()))

    def lines(self) -> list[str]:
        """One line per kind with its count, meaning and first examples."""
        lines = []
        for kind, count in sorted(self.counts.items()):
            lines.append(f"{count} {kind}: {PROBLEM_KINDS[kind]}")
            lines.extend(f"    e.g. {example}" for example in self.examples.get(kind, []))
        return lines

    def to_dict(self) -> dict:
        return {"counts": dict(self.counts), "examples": {k: list(v) for k, v in self.examples.items()}}

    @classmethod
    def from_dict(cls, data: dict, policy: OnBadRecord = "skip") -> "ProblemReport":
        report = cls(policy)
        report.counts = dict(data.get("counts", {}))
        report.examples = {k: list(v) for k, v in data.get("examples", {}).items()}
        return report
