"""``test_models_speedups.py`` still imports ``torchvision_reference`` by its name from before the tests were
packages; it moves to ``tests/accel/`` in a change of its own, which imports ``tests.helpers.REPO``.  Until then
that name is this package's module.  Delete this file with that move."""
from __future__ import annotations

import sys

from tests.models import torchvision_reference

sys.modules.setdefault("torchvision_reference", torchvision_reference)
