"""Detection models: `RetinaNet` (RetinaNet and GFL heads) and its building blocks."""

from keras_focal.models.backbones import build_backbone
from keras_focal.models.retinanet import RetinaNet
from keras_focal.models.torchvision import from_torchvision

__all__ = ["RetinaNet", "build_backbone", "from_torchvision"]
