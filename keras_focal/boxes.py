"""Box geometry, in one place: IoU (pairwise and aligned), the valid-box rule, centres and the anchor label codes.

Every box is normalized `[ymin, xmin, ymax, xmax]` (the tensorflow-datasets convention used end to end), float32
(float64 kept), and every function is written with `keras.ops`, so it runs in a `tf.data` map, inside a model and
under `tf.function`.

IoU divides by the union only where the union is positive and is 0 elsewhere (empty boxes), with finite gradients
(the double-`where` form). It is exact: `keras.utils.bounding_boxes.compute_iou` divides by `union + 1e-7`, which
in normalized coordinates (the union of a small anchor is ~1e-4) moves an IoU of exactly 0.5 to 0.4995 and flips an
anchor across the RetinaNet positive threshold. torchvision's `box_iou` computes the exact value too.
"""

import keras
from keras import ops

# Labels of an anchor that is not positive (positives hold their class id >= 0). RetinaNet (Lin et al. 2017, Sec. 4,
# "Anchors"): IoU < 0.4 is background, 0.4 <= IoU < 0.5 is ignored (no loss at all).
BACKGROUND = -1
IGNORED = -2


def _float(boxes):
    boxes = ops.convert_to_tensor(boxes)
    dtype = "float64" if keras.backend.standardize_dtype(boxes.dtype) == "float64" else "float32"
    return ops.cast(boxes, dtype)


def _sides(boxes):
    return boxes[..., 0], boxes[..., 1], boxes[..., 2], boxes[..., 3]


def area(boxes):
    """`[..., 4] -> [...]`: height x width, 0 for an inverted box (ymax < ymin or xmax < xmin)."""
    ymin, xmin, ymax, xmax = _sides(_float(boxes))
    return ops.relu(ymax - ymin) * ops.relu(xmax - xmin)


def centers(boxes):
    """`[..., 4] -> [..., 2]`: the centres `(cy, cx)`."""
    boxes = _float(boxes)
    return (boxes[..., :2] + boxes[..., 2:]) * 0.5


def safe_divide(numerator, denominator):
    """numerator / denominator, 0 where the denominator is not positive, with finite gradients (double where)."""
    positive = ops.greater(denominator, 0.0)
    safe = ops.where(positive, denominator, ops.ones_like(denominator))
    return ops.where(positive, numerator / safe, ops.zeros_like(numerator))


def intersection_union_enclosure(boxes1, boxes2):
    """Areas of the intersection, the union and the smallest enclosing box of `boxes1` and `boxes2`, which
    broadcast against each other (`[..., 4]` each -> three `[...]`)."""
    boxes1, boxes2 = _float(boxes1), _float(boxes2)
    y1a, x1a, y2a, x2a = _sides(boxes1)
    y1b, x1b, y2b, x2b = _sides(boxes2)
    inter = ops.relu(ops.minimum(y2a, y2b) - ops.maximum(y1a, y1b)) * ops.relu(
        ops.minimum(x2a, x2b) - ops.maximum(x1a, x1b))
    union = area(boxes1) + area(boxes2) - inter
    enclosure = ops.relu(ops.maximum(y2a, y2b) - ops.minimum(y1a, y1b)) * ops.relu(
        ops.maximum(x2a, x2b) - ops.minimum(x1a, x1b))
    return inter, union, enclosure


def aligned_iou(boxes1, boxes2):
    """IoU of `boxes1[i]` with `boxes2[i]`, element by element: `[..., 4] x [..., 4] -> [...]`."""
    inter, union, _ = intersection_union_enclosure(boxes1, boxes2)
    return safe_divide(inter, union)


def pairwise_iou(boxes1, boxes2):
    """IoU of every box of `boxes1` with every box of `boxes2`: `[..., N, 4] x [..., M, 4] -> [..., N, M]`.

    The leading axes broadcast: anchors `[N, 4]` against batched ground truth `[B, M, 4]` give `[B, N, M]`.
    """
    boxes1, boxes2 = _float(boxes1), _float(boxes2)
    return aligned_iou(ops.expand_dims(boxes1, -2), ops.expand_dims(boxes2, -3))


def valid_boxes_mask(boxes, classes):
    """bool `[..., M]`: a real ground-truth box, i.e. class >= 0 (padding is -1), finite coordinates and strictly
    positive height and width. Only valid boxes are ever matched to anchors or counted as objects."""
    boxes = _float(boxes)
    ymin, xmin, ymax, xmax = _sides(boxes)
    finite = ops.all(ops.isfinite(boxes), axis=-1)
    has_area = ops.logical_and(ops.greater(ymax - ymin, 0.0), ops.greater(xmax - xmin, 0.0))
    labelled = ops.greater_equal(ops.cast(classes, "int32"), 0)
    return ops.logical_and(ops.logical_and(labelled, finite), has_area)
