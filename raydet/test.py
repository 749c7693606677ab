"""``python -m raydet.test CFG CHECKPOINT …``: COCO metrics of a checkpoint.

The command keeps mmdetection's name (``tools/test.py``); its code is
``raydet.evaluate``, a name that pytest and readers do not take for a test.
"""
import sys

from .evaluate import main

if __name__ == "__main__":
    sys.exit(main())
