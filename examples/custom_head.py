"""A head of your own: subclass a head, register a name, and the detector builds it by that name.

    python examples/custom_head.py

`register_head` also registers the class with Keras serialization, so a `.keras` file of this model reloads wherever
this module is imported. Here: RetinaNet's head with GroupNorm in its subnets (the ATSS / GFL subnets' choice) and
its focal loss at gamma 1.5.
"""

import numpy as np

import keras_focal
from keras_focal.models import RetinaNetHead, register_head


@register_head("retina_gn")
class GroupNormRetinaNetHead(RetinaNetHead):
    def __init__(self, group_norm=True, gamma=1.5, **kwargs):
        super().__init__(group_norm=group_norm, gamma=gamma, **kwargs)


if __name__ == "__main__":
    model = keras_focal.models.RetinaNet(num_classes=5, backbone="resnet18", head="retina_gn", fpn_width=64,
                                         image_size=(128, 128))
    print(type(model.detection_head).__name__, model.detection_head.get_config())
    outputs = model.predict(np.zeros((1, 128, 128, 3), np.uint8))
    print({name: value.shape for name, value in outputs.items()})
