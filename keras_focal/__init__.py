"""keras_focal: the focal-loss family and dense detectors (RetinaNet, GFL, TOOD heads) for Keras 3, exportable to TF
Serving and TFLite."""

import importlib

from keras_focal.version import __version__
from keras_focal.losses import (
    BalancedCrossentropy,
    CategoricalFocalLoss,
    DistributionFocalLoss,
    FocalLoss,
    GIoULoss,
    QualityFocalLoss,
    SmoothL1Loss,
    SparseCategoricalFocalLoss,
)

_SUBMODULES = ("assigners", "layers", "models", "data", "evaluation", "export", "training")


def __getattr__(name):
    # Submodules load on first use, so `import keras_focal` stays light (no tfds, no keras-hub).
    if name in _SUBMODULES:
        return importlib.import_module(f"keras_focal.{name}")
    raise AttributeError(f"module 'keras_focal' has no attribute {name!r}")
