"""Trained detectors as MLflow models: a pyfunc flavour (``detector_model``), logging and registering a run's
best checkpoint (``publish``), and ``models:/`` URIs read back as a checkpoint and its config
(``model_uri``)."""
