"""Detection layers: anchors, box coding, target assignment, decoding with NMS, GFL integral."""

from keras_focal.layers.anchor_generator import AnchorGenerator
from keras_focal.layers.box_coding import (
    BBOX_XFORM_CLIP,
    anchor_centers,
    decode_deltas,
    decode_distances,
    encode_deltas,
    encode_distances,
)
from keras_focal.layers.anchor_encoder import AnchorEncoder, pairwise_iou, valid_boxes_mask
from keras_focal.layers.detection_decoder import DetectionDecoder
from keras_focal.layers.integral import Integral, Scale

__all__ = [
    "AnchorGenerator",
    "AnchorEncoder",
    "DetectionDecoder",
    "Integral",
    "Scale",
    "BBOX_XFORM_CLIP",
    "anchor_centers",
    "encode_deltas",
    "decode_deltas",
    "encode_distances",
    "decode_distances",
    "pairwise_iou",
    "valid_boxes_mask",
]

from keras_focal.layers.diagnostics import (  # noqa: E402
    MatchedGroundTruthFraction,
    MatchingStatisticsCallback,
    PositiveAnchorsPerImage,
    anchor_coverage,
    best_anchor_iou,
    format_matching_statistics,
    matching_statistics,
)

__all__ += [
    "MatchedGroundTruthFraction",
    "MatchingStatisticsCallback",
    "PositiveAnchorsPerImage",
    "anchor_coverage",
    "best_anchor_iou",
    "format_matching_statistics",
    "matching_statistics",
]
