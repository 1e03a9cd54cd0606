"""Detection heads: everything that differs between RetinaNet and GFL, behind one interface (`DenseHead`)."""

import keras

from keras_focal.models.heads.base import DenseHead
from keras_focal.models.heads.gfl import GFLHead
from keras_focal.models.heads.retina import RetinaNetHead

HEADS = {RetinaNetHead.name: RetinaNetHead, GFLHead.name: GFLHead}


def get_head(head, **kwargs):
    """A head object from its name ("retina", "gfl") and constructor arguments, its serialized config, or itself.

    `kwargs` set the arguments of a named head; they are not accepted with a head object or a config (set them
    on the object).
    """
    if isinstance(head, str):
        if head not in HEADS:
            raise ValueError(f"head must be one of {tuple(HEADS)} or a DenseHead object, got {head!r}")
        return HEADS[head](**kwargs)
    if isinstance(head, dict):
        head = keras.saving.deserialize_keras_object(head)
    if not isinstance(head, DenseHead):
        raise ValueError(f"head must be one of {tuple(HEADS)} or a DenseHead object, got {type(head).__name__}")
    if kwargs:
        raise ValueError(f"{sorted(kwargs)} only apply to a head given by name; set them on the "
                         f"{type(head).__name__} object instead")
    return head


__all__ = ["DenseHead", "GFLHead", "HEADS", "RetinaNetHead", "get_head"]
