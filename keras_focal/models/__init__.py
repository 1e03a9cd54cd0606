"""Detection models: `RetinaNet` (backbone + FPN + a head: `RetinaNetHead` or `GFLHead`) and its building blocks."""

from keras_focal.models.backbones import build_backbone
from keras_focal.models.heads import DenseHead, GFLHead, RetinaNetHead
from keras_focal.models.retinanet import RetinaNet
from keras_focal.models.torchvision import from_torchvision

__all__ = ["DenseHead", "GFLHead", "RetinaNet", "RetinaNetHead", "build_backbone", "from_torchvision"]
