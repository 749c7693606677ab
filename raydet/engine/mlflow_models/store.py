"""MLflow's fluent API pointed at one store for a while, and the process's settings as they were afterwards.

``mlflow.set_tracking_uri`` and ``set_registry_uri`` also set ``MLFLOW_TRACKING_URI`` / ``MLFLOW_REGISTRY_URI``
in the environment (for subprocesses), and raydet reads ``MLFLOW_TRACKING_URI`` as the store of every later
run of the process (a sweep's driver, a notebook, the tests): logging one run's model must not move them.
"""
from __future__ import annotations

import contextlib
import os
from typing import Iterator

ENVIRONMENT = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


@contextlib.contextmanager
def using_store(uri: str) -> Iterator[None]:
    """Within: MLflow's tracking and registry URIs are ``uri``.  After: both, and the environment, as before."""
    import mlflow
    from mlflow.tracking._model_registry import utils as registry
    from mlflow.tracking._tracking_service import utils as tracking

    saved_environment = {name: os.environ.get(name) for name in ENVIRONMENT}
    saved = (tracking._tracking_uri, registry._registry_uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(saved[0])
        registry._registry_uri = saved[1]  # its setter cannot unset
        for name, value in saved_environment.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
