"""The detectors' training losses, normalized over the global batch.

RetinaNet (Lin et al. 2017, Sec. 3.3 and 4.1): focal loss summed over all non-ignored anchors and all classes, plus
smooth-L1 box regression (beta = 0.11, Detectron) summed over positive anchors and the 4 coordinates; both are divided
by the number of positive anchors, at least 1.

GFL (Li et al. 2020, Sec. 3 and mmdetection `GFLHead.loss_by_feat`): QFL with IoU-quality targets divided by the
number of positives; GIoU (weight 2.0) and DFL (weight 0.25, averaged over the 4 sides) weighted per positive by its
detached best class score and divided by the sum of those weights.

Under tf.distribute each replica returns its local sum divided by the *global* normalizer (summed over replicas with
an all-reduce). Keras sums the replicas' gradients, so N replicas produce exactly the gradient of one device on the
same global batch, and a replica without positives still trains its negatives.
"""

from keras import ops

from keras_focal.layers import box_coding
from keras_focal.layers.integral import expected_distances
from keras_focal.losses import distribution_focal_loss, focal_loss, giou_loss, quality_focal_loss, smooth_l1_loss
from keras_focal.losses.box import aligned_iou

BACKGROUND = -1
IGNORED = -2


def num_replicas():
    import tensorflow as tf

    return tf.distribute.get_strategy().num_replicas_in_sync


def global_sum(value):
    """Sums a scalar over all replicas and workers (identity outside tf.distribute)."""
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is not None and context.num_replicas_in_sync > 1:
        return context.all_reduce(tf.distribute.ReduceOp.SUM, value)
    return value


def _per_anchor(loss, y_true, logits):
    """Per-anchor value of a user-supplied Keras loss, summed (not averaged) over the last axis."""
    y_pred = logits if getattr(loss, "from_logits", True) else ops.sigmoid(logits)
    return loss.call(y_true, y_pred) * ops.cast(ops.shape(logits)[-1], "float32")


def retinanet_loss(targets, outputs, focal_alpha=0.25, focal_gamma=2.0, smooth_l1_beta=0.11,
                   classification_loss=None, box_loss=None):
    """Returns (total, class_loss, box_loss) for one replica's batch.

    targets: "class_targets" int [B, A] (class, -1 background, -2 ignored) and "box_targets" [B, A, 4].
    outputs: "class_logits" [B, A, C] and "box_outputs" [B, A, 4].
    classification_loss / box_loss: optional Keras loss objects replacing the focal and smooth-L1 defaults; their
    mean over the last axis is turned back into a sum.
    """
    logits = ops.cast(outputs["class_logits"], "float32")
    deltas = ops.cast(outputs["box_outputs"], "float32")
    class_targets = ops.cast(targets["class_targets"], "int32")
    positive = ops.cast(class_targets >= 0, "float32")
    not_ignored = ops.cast(class_targets != IGNORED, "float32")
    normalizer = ops.maximum(global_sum(ops.sum(positive)), 1.0)

    one_hot = ops.one_hot(ops.maximum(class_targets, 0), ops.shape(logits)[-1]) * positive[..., None]
    if classification_loss is None:
        per_anchor = ops.sum(focal_loss(one_hot, logits, alpha=focal_alpha, gamma=focal_gamma, from_logits=True), -1)
    else:
        per_anchor = _per_anchor(classification_loss, one_hot, logits)
    class_loss = ops.sum(per_anchor * not_ignored) / normalizer

    box_targets = ops.cast(targets["box_targets"], "float32")
    if box_loss is None:
        per_box = ops.sum(smooth_l1_loss(box_targets, deltas, beta=smooth_l1_beta), -1)
    else:
        per_box = box_loss.call(box_targets, deltas) * 4.0
    regression_loss = ops.sum(per_box * positive) / normalizer
    return class_loss + regression_loss, class_loss, regression_loss


def gfl_loss(targets, outputs, anchors, strides, image_height, image_width, reg_max=16, qfl_beta=2.0,
             dfl_weight=0.25, giou_weight=2.0):
    """Returns (total, quality_focal, box_loss) for one replica's batch (box_loss = GIoU + DFL terms).

    targets: "class_targets" int [B, A] and "matched_boxes" [B, A, 4] (normalized yxyx) from the ATSS encoder.
    outputs: "class_logits" [B, A, C] and "box_outputs" [B, A, 4 * (reg_max + 1)] distribution logits.
    anchors [A, 4] and strides [A] come from the GFL AnchorGenerator for this image size.
    """
    logits = ops.cast(outputs["class_logits"], "float32")
    bins = reg_max + 1
    distribution = ops.reshape(ops.cast(outputs["box_outputs"], "float32"), (ops.shape(logits)[0], -1, 4, bins))
    class_targets = ops.cast(targets["class_targets"], "int32")
    positive_mask = class_targets >= 0
    positive = ops.cast(positive_mask, "float32")

    # Predicted boxes: expected distance per side (the Integral of Sec. 3.3), decoded around the anchor centres.
    expected = expected_distances(outputs["box_outputs"], reg_max)
    predicted = box_coding.decode_distances(anchors, expected, strides, image_height, image_width)
    # Non-positive anchors get a harmless dummy box so no NaN can leak through a zero weight.
    dummy = ops.convert_to_tensor([0.0, 0.0, 1.0, 1.0])
    matched = ops.where(positive_mask[..., None], ops.cast(targets["matched_boxes"], "float32"), dummy)

    # QFL target: IoU of the (detached) prediction with its ground truth, at the ground-truth class (Sec. 3.2).
    quality = ops.stop_gradient(aligned_iou(matched, predicted)) * positive
    one_hot = ops.one_hot(ops.maximum(class_targets, 0), ops.shape(logits)[-1]) * quality[..., None]
    num_positive = ops.maximum(global_sum(ops.sum(positive)), 1.0)
    class_loss = ops.sum(quality_focal_loss(one_hot, logits, beta=qfl_beta, from_logits=True)) / num_positive

    weight = ops.stop_gradient(ops.max(ops.sigmoid(logits), axis=-1)) * positive
    weight_sum = ops.maximum(global_sum(ops.sum(weight)), 1.0)
    giou = ops.sum(giou_loss(matched, predicted) * weight) / weight_sum
    distance_targets = box_coding.encode_distances(anchors, matched, strides, image_height, image_width)
    distance_targets = ops.clip(distance_targets, 0.0, reg_max - 0.1)  # mmdetection bbox2distance eps = 0.1
    dfl = distribution_focal_loss(distance_targets, distribution, from_logits=True)  # [B, A, 4]
    dfl = ops.sum(ops.mean(dfl, axis=-1) * weight) / weight_sum
    box_loss = giou_weight * giou + dfl_weight * dfl
    return class_loss + box_loss, class_loss, box_loss
