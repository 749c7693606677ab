"""raydet: object detection assembled from YAML, trained on Ray.

Importing the package registers every built-in component, so any process
(driver, Ray Train worker, Ray Data task) resolves the same config names.
"""
__version__ = "0.1.0"

from . import data, models, optimizers  # noqa: E402,F401  (register datasets, transforms, the model zoo, optimizers)
