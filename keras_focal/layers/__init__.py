"""Detection layers: anchors, box coders, the tf.data adapter of a static assigner, decoding with NMS, GFL integral.

Box geometry (IoU, the valid-box rule) lives in `keras_focal.boxes`, the assigners in `keras_focal.assigners`,
anchor-coverage tools in `keras_focal.diagnostics`.
"""

from keras_focal.layers.anchor_generator import AnchorGenerator
from keras_focal.layers.box_coders import (
    BBOX_XFORM_CLIP,
    BoxCoder,
    DeltaCoder,
    DistanceCoder,
    decode_deltas,
    decode_distances,
    encode_deltas,
    encode_distances,
)
from keras_focal.layers.anchor_encoder import AnchorEncoder
from keras_focal.layers.detection_decoder import DetectionDecoder
from keras_focal.layers.integral import Integral, Scale

__all__ = [
    "AnchorGenerator",
    "AnchorEncoder",
    "BoxCoder",
    "DeltaCoder",
    "DetectionDecoder",
    "DistanceCoder",
    "Integral",
    "Scale",
    "BBOX_XFORM_CLIP",
    "encode_deltas",
    "decode_deltas",
    "encode_distances",
    "decode_distances",
]
