"""Small models and data shared by the model tests (fast enough for a 2-core CI machine)."""

import keras
import numpy as np

from keras_focal.models import RetinaNet


def tiny_backbone():
    """A 5-conv stand-in for ResNet exposing C3-C5 (strides 8, 16, 32)."""
    images = keras.Input((None, None, 3))
    x = images
    for filters in (16, 24, 32):
        x = keras.layers.Conv2D(filters, 3, strides=2, padding="same", activation="relu")(x)
    c3 = x
    c4 = keras.layers.Conv2D(48, 3, strides=2, padding="same", activation="relu")(c3)
    c5 = keras.layers.Conv2D(64, 3, strides=2, padding="same", activation="relu")(c4)
    return keras.Model(images, [c3, c4, c5], name="tiny")


def built_in_heads():
    """Every head the package registers (heads registered by test modules live only in this process)."""
    from keras_focal.models import HEADS

    return [name for name, cls in sorted(HEADS.items()) if cls.__module__.startswith("keras_focal.")]


def tiny_model(head="retina", num_classes=3, **kwargs):
    return RetinaNet(num_classes, backbone=tiny_backbone(), head=head, fpn_width=32, head_convs=2,
                     image_size=(128, 128), **kwargs)


def padded_targets(boxes, classes, max_boxes=4):
    """Lists of per-image boxes / classes -> the contract's padded {"boxes", "classes"} arrays."""
    b = np.full((len(boxes), max_boxes, 4), -1.0, "float32")
    c = np.full((len(boxes), max_boxes), -1, "int32")
    for i, (bx, cl) in enumerate(zip(boxes, classes)):
        b[i, : len(bx)] = np.asarray(bx, "float32").reshape(-1, 4)
        c[i, : len(cl)] = cl
    return {"boxes": b, "classes": c}
