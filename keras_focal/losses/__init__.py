"""The focal-loss family, Generalized Focal Loss (QFL / DFL) and the box losses, for Keras 3.

Each loss is a plain function returning unreduced values plus a `keras.losses.Loss` subclass registered under the
"keras_focal" package. Everything here is written with `keras.ops` and runs under the TensorFlow, JAX and PyTorch
backends; `keras_focal.losses.checks` holds the argument checks.
"""

from keras_focal.losses.box import GIoULoss, SmoothL1Loss, giou_loss, smooth_l1_loss
from keras_focal.losses.focal import (
    BalancedCrossentropy,
    CategoricalFocalLoss,
    FocalLoss,
    SparseCategoricalFocalLoss,
    balanced_crossentropy,
    categorical_focal_loss,
    class_weights_from_counts,
    focal_loss,
    sparse_categorical_focal_loss,
)
from keras_focal.losses.generalized_focal import (
    DistributionFocalLoss,
    QualityFocalLoss,
    distribution_focal_loss,
    quality_focal_loss,
)

__all__ = [
    "BalancedCrossentropy",
    "CategoricalFocalLoss",
    "DistributionFocalLoss",
    "FocalLoss",
    "GIoULoss",
    "QualityFocalLoss",
    "SmoothL1Loss",
    "SparseCategoricalFocalLoss",
    "balanced_crossentropy",
    "categorical_focal_loss",
    "class_weights_from_counts",
    "distribution_focal_loss",
    "focal_loss",
    "giou_loss",
    "quality_focal_loss",
    "smooth_l1_loss",
    "sparse_categorical_focal_loss",
]
