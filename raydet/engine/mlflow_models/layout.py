"""What a raydet MLflow model holds, shared by the code that writes it and the code that reads it (Ray-free,
MLflow-free)."""

#: The model's artifacts: the run's checkpoint, its resolved config, the training classes.
CHECKPOINT_ARTIFACT, CONFIG_ARTIFACT, CLASSES_ARTIFACT = "checkpoint.pt", "config.yaml", "classes.json"
#: The ``MLmodel`` metadata key that marks a model as raydet's.
RAYDET_METADATA = "raydet"
#: The pyfunc's input column: encoded image files.
IMAGE_COLUMN = "image"
