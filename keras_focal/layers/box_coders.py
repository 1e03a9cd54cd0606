"""Box coders: between normalized yxyx boxes and what a head's box outputs predict. A coder encodes the matched
ground truth for the loss and decodes the predictions for inference; a head holds one (`head.box_coder`).

``coder.encode(anchors, boxes, image_height, image_width, strides)`` and
``coder.decode(anchors, codes, image_height, image_width, strides)`` with anchors ``[A, 4]``, boxes / codes
``[..., A, 4]`` and ``strides`` ``[A]`` (``AnchorGenerator.anchor_strides``, pixels) broadcast over the leading axes.

``DeltaCoder`` (RetinaNet; ``encode_deltas`` / ``decode_deltas``)
    The R-CNN parameterisation used by Detectron, torchvision and mmdetection::

        dy = wy * (cy - cy_a) / h_a        dx = wx * (cx - cx_a) / w_a
        dh = wh * log(h / h_a)             dw = ww * log(w / w_a)

    with centre coordinates ``(cy, cx)`` and sizes ``(h, w)`` of the box and of the anchor ``a``. The
    weights ``(wy, wx, wh, ww)`` default to ``(1, 1, 1, 1)`` as in torchvision's RetinaNet and mmdetection
    (keras-cv uses a "variance" of (0.1, 0.1, 0.2, 0.2), i.e. weights (10, 10, 5, 5)). Because dy, dx and
    the log ratios are invariant to scaling each axis, the same numbers come out of pixel or normalized
    coordinates.

    The heavy lifting is ``keras.utils.bounding_boxes.encode_box_to_deltas`` / ``decode_deltas_to_boxes``
    with ``encoding_format="center_yxhw"``: their deltas are exactly the ones above in the order
    (dy, dx, log dh, log dw), and their ``variance`` *divides* the deltas on encoding, so
    ``variance = 1 / weights``. What they do not do is torchvision's clamp of the log-size deltas before
    ``exp`` (``log(1000 / 16)``), which keeps an untrained head from producing ``inf`` boxes; we apply it
    here before handing the deltas over.

``DistanceCoder`` (GFL, TOOD; ``encode_distances`` / ``decode_distances``)
    Distances (left, top, right, bottom) from the anchor centre to the box sides, in units of the anchor's
    stride (mmdetection's GFL head divides by the stride). In normalized coordinates a distance ``d`` (in
    strides) is ``d * stride / W`` along x and ``d * stride / H`` along y.
"""

import math

import keras
from keras import ops

from keras_focal.boxes import centers
from keras_focal.configurable import Configurable

BBOX_XFORM_CLIP = math.log(1000.0 / 16.0)

__all__ = [
    "BBOX_XFORM_CLIP",
    "BoxCoder",
    "DeltaCoder",
    "DistanceCoder",
    "encode_deltas",
    "decode_deltas",
    "encode_distances",
    "decode_distances",
]


def _variance(weights):
    if weights is None:
        return None
    weights = [float(w) for w in weights]
    if len(weights) != 4:
        raise ValueError(f"box weights must have 4 values (wy, wx, wh, ww), got {weights}")
    if any(w <= 0 for w in weights):
        raise ValueError(f"box weights must be positive, got {weights}")
    if all(w == 1.0 for w in weights):
        return None
    return [1.0 / w for w in weights]


def encode_deltas(anchors, boxes, weights=(1.0, 1.0, 1.0, 1.0)):
    """Encodes yxyx ``boxes`` relative to yxyx ``anchors`` as ``(dy, dx, log dh, log dw) * weights``.

    Args:
        anchors: float ``[A, 4]`` (or broadcastable to ``boxes``), normalized yxyx.
        boxes: float ``[..., A, 4]``, normalized yxyx.
        weights: ``(wy, wx, wh, ww)`` multiplying the deltas.

    Returns:
        float32 ``[..., A, 4]``. Degenerate sizes are clamped to ``keras.config.epsilon()`` before the log,
        so the result is always finite (mask it where the box is not a real match).
    """
    anchors = ops.cast(anchors, "float32")
    boxes = ops.cast(boxes, "float32")
    return keras.utils.bounding_boxes.encode_box_to_deltas(
        anchors=anchors,
        boxes=boxes,
        anchor_format="yxyx",
        box_format="yxyx",
        encoding_format="center_yxhw",
        variance=_variance(weights),
    )


def decode_deltas(anchors, deltas, weights=(1.0, 1.0, 1.0, 1.0), clip=BBOX_XFORM_CLIP):
    """Inverse of :func:`encode_deltas`; the log-size deltas are clamped to ``clip`` before ``exp``.

    Args:
        anchors: float ``[A, 4]`` normalized yxyx.
        deltas: float ``[..., A, 4]`` in the order (dy, dx, log dh, log dw), multiplied by ``weights``.
        weights: ``(wy, wx, wh, ww)``.
        clip: upper bound of ``log(h / h_a)`` after dividing by the weights (torchvision:
            ``log(1000 / 16)``); ``None`` disables it.

    Returns:
        float32 ``[..., A, 4]`` normalized yxyx (not clipped to the image).
    """
    anchors = ops.cast(anchors, "float32")
    deltas = ops.cast(deltas, "float32")
    if weights is not None:
        deltas = deltas / ops.convert_to_tensor([float(w) for w in weights], "float32")
    if clip is not None:
        deltas = ops.concatenate(
            [deltas[..., :2], ops.minimum(deltas[..., 2:], float(clip))], axis=-1
        )
    return keras.utils.bounding_boxes.decode_deltas_to_boxes(
        anchors=anchors,
        boxes_delta=deltas,
        anchor_format="yxyx",
        box_format="yxyx",
        encoded_format="center_yxhw",
        variance=None,
    )


def _stride_units(strides, image_height, image_width):
    """Per-anchor (y, x) size of one stride in normalized coordinates, ``[A, 2]``."""
    strides = ops.cast(strides, "float32")
    h = ops.cast(image_height, "float32")
    w = ops.cast(image_width, "float32")
    return ops.stack([strides / h, strides / w], axis=-1)


def encode_distances(anchors, boxes, strides, image_height, image_width):
    """Distances (left, top, right, bottom) from each anchor centre to the sides of ``boxes``.

    Args:
        anchors: ``[A, 4]`` normalized yxyx (only their centres are used).
        boxes: ``[..., A, 4]`` normalized yxyx.
        strides: ``[A]`` stride in pixels of each anchor (``AnchorGenerator.anchor_strides``).
        image_height, image_width: the image size in pixels (python numbers or scalar tensors).

    Returns:
        float32 ``[..., A, 4]`` in stride units, order ``(left, top, right, bottom)`` as in mmdetection.
        Not clamped (the GFL loss clamps to ``[0, reg_max - 0.1]``).
    """
    boxes = ops.cast(boxes, "float32")
    c = centers(anchors)
    unit = _stride_units(strides, image_height, image_width)
    cy, cx = c[..., 0], c[..., 1]
    uy, ux = unit[..., 0], unit[..., 1]
    left = (cx - boxes[..., 1]) / ux
    top = (cy - boxes[..., 0]) / uy
    right = (boxes[..., 3] - cx) / ux
    bottom = (boxes[..., 2] - cy) / uy
    return ops.stack([left, top, right, bottom], axis=-1)


def decode_distances(anchors, distances, strides, image_height, image_width):
    """Inverse of :func:`encode_distances`: ``[..., A, 4]`` ltrb stride units -> normalized yxyx."""
    distances = ops.cast(distances, "float32")
    c = centers(anchors)
    unit = _stride_units(strides, image_height, image_width)
    cy, cx = c[..., 0], c[..., 1]
    uy, ux = unit[..., 0], unit[..., 1]
    ymin = cy - distances[..., 1] * uy
    xmin = cx - distances[..., 0] * ux
    ymax = cy + distances[..., 3] * uy
    xmax = cx + distances[..., 2] * ux
    return ops.stack([ymin, xmin, ymax, xmax], axis=-1)


class BoxCoder(Configurable):
    """Base of the box coders: `encode` (boxes -> codes, for the loss) and `decode` (codes -> boxes, for
    inference and for losses on decoded boxes), both float32 ``[..., A, 4]``."""

    def encode(self, anchors, boxes, image_height, image_width, strides=None):
        raise NotImplementedError

    def decode(self, anchors, codes, image_height, image_width, strides=None):
        raise NotImplementedError


@keras.saving.register_keras_serializable(package="keras_focal")
class DeltaCoder(BoxCoder):
    """The R-CNN deltas ``(dy, dx, log dh, log dw) * weights`` (RetinaNet); ``clip`` bounds the log-size deltas
    before ``exp`` on decoding (torchvision's ``log(1000 / 16)``; None: no bound). Image size and strides unused."""

    def __init__(self, weights=(1.0, 1.0, 1.0, 1.0), clip=BBOX_XFORM_CLIP):
        _variance(weights)  # checks them
        self.weights = tuple(float(w) for w in weights)
        self.clip = None if clip is None else float(clip)

    def encode(self, anchors, boxes, image_height=None, image_width=None, strides=None):
        return encode_deltas(anchors, boxes, self.weights)

    def decode(self, anchors, codes, image_height=None, image_width=None, strides=None):
        return decode_deltas(anchors, codes, self.weights, clip=self.clip)

    def get_config(self):
        return {"weights": list(self.weights), "clip": self.clip}


@keras.saving.register_keras_serializable(package="keras_focal")
class DistanceCoder(BoxCoder):
    """Distances (left, top, right, bottom) from the anchor centre to the box sides, in strides (GFL, TOOD)."""

    def encode(self, anchors, boxes, image_height, image_width, strides=None):
        if strides is None:
            raise ValueError("DistanceCoder.encode needs the anchors' strides")
        return encode_distances(anchors, boxes, strides, image_height, image_width)

    def decode(self, anchors, codes, image_height, image_width, strides=None):
        if strides is None:
            raise ValueError("DistanceCoder.decode needs the anchors' strides")
        return decode_distances(anchors, codes, strides, image_height, image_width)


def resolve_box_coder(value, default):
    """None (-> `default()`), a BoxCoder, or its serialized config -> a BoxCoder."""
    return BoxCoder.resolve(value, default, "box_coder", "a BoxCoder object (DeltaCoder, DistanceCoder)")
