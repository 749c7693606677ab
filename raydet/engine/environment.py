"""Settings read from the environment (by Ray, MLflow), given for a while where the environment has none."""
from __future__ import annotations

import contextlib
import os
from typing import Iterator


@contextlib.contextmanager
def environment_defaults(settings: dict[str, str]) -> Iterator[None]:
    """Within: each of ``settings`` set where the environment does not set it already.  After: those removed."""
    added = {name: value for name, value in settings.items() if name not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)
