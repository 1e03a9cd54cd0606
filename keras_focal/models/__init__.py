"""Detection models: `RetinaNet` (backbone + FPN + a head object, by name from the head registry) and its
building blocks."""

from keras_focal.models.backbones import build_backbone
from keras_focal.models.heads import HEADS, DenseHead, GFLHead, RetinaNetHead, TOODHead, get_head, register_head
from keras_focal.models.retinanet import RetinaNet
from keras_focal.models.torchvision import from_torchvision

__all__ = ["DenseHead", "GFLHead", "HEADS", "RetinaNet", "RetinaNetHead", "TOODHead", "build_backbone",
           "from_torchvision", "get_head", "register_head"]
