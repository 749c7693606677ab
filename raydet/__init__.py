"""raydet: object detection assembled from YAML, trained on Ray.

Importing the package imports nothing else: each registry (``raydet.registry``)
imports the built-in components it names the first time it is used, so a
process that only records a run or controls Ray Train stays light, while every
process that builds something resolves the same names.
"""
__version__ = "0.1.0"
