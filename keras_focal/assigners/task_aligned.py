"""The task-aligned assigner of TOOD (Feng et al. 2021, "TOOD: Task-aligned One-stage Object Detection", Sec. 3.2;
mmdetection `task_modules/assigners/task_aligned_assigner.py`).

A dynamic assigner: it reads the head's own predictions (detached), so it runs in the train step, after the forward
pass. Data flow for a batch, B images, A anchors, M ground-truth rows (padded with class -1):

1. The real boxes are moved to the front and the batch cut to its largest count (`compact_real_boxes`), plus one
   never-valid row, so every reduction over boxes is defined when an image has none.
2. For every (anchor, box) pair ``[B, A, M]``: ``u`` the IoU of the anchor's predicted box with the box, ``s`` the
   anchor's predicted score of the box's class, and the alignment metric ``t = s^alpha * u^beta`` (Eq. 3).
3. Candidates: per box, the ``topk`` anchors with the largest ``t`` over all levels (the first anchor on ties); a
   candidate is positive when ``t > 0`` and its anchor centre lies inside the box by more than 0.01 pixel on every
   side (mmdetection's `is_in_gts`).
4. Small objects (``ensure_positive``): a box left without a positive candidate, in practice one that contains no
   anchor centre of the finest level (stride 8: a box narrower than the stride), gets the finest-level anchor
   nearest to its centre as a positive. Without it such a box is never a target. This is the aim of YOLO26's STAL;
   the rule here is this package's own.
5. An anchor positive for several boxes goes to the box its predicted box overlaps most (IoU ``u``; the first box
   on ties; mmdetection "the one with the highest iou will be selected").
6. Targets, per box over its positive anchors (Sec. 3.2.2, Eq. 10; mmdetection `TOODHead._get_targets_single`):
   ``t_hat = t / (max t + 1e-7) * max u``: the anchor best aligned with the box gets the best IoU reached for that
   box, the others in proportion to their alignment.

Everything is a batched tensor computation (no per-box loop), so it runs inside the compiled train step and under
`tf.distribute`; the cost is a few ``[B, A, M]`` tensors.
"""

import keras
import tensorflow as tf
from keras import ops

from keras_focal.boxes import BACKGROUND, aligned_iou, centers, valid_boxes_mask

# mmdetection `TaskAlignedAssigner(topk=13)` in `configs/tood/tood_r50_fpn_1x_coco.py`; alpha 1, beta 6 are the
# `TOODHead` train_cfg's `alpha=1, beta=6` (paper Sec. 4, "Implementation details": alpha = 1, beta = 6).
TOPK = 13
ALPHA = 1.0
BETA = 6.0
# mmdetection `_get_targets_single`: `pos_alignment_metrics / (pos_alignment_metrics.max() + 10e-8)`.
METRIC_EPSILON = 1e-7
# mmdetection `is_in_gts = ... .min(dim=1)[0] > 0.01`: the anchor centre is inside the box by more than 0.01 px.
INSIDE_MARGIN_PIXELS = 0.01


def _compact_real_boxes(boxes, classes):
    # Imported here: the encoder module lives in keras_focal.layers, which a lower floor must not import at load.
    from keras_focal.layers.anchor_encoder import compact_real_boxes

    return compact_real_boxes(boxes, classes)


def _gather_last(params, index):
    """``params[b, index[b, a]]`` for ``params [B, M]`` and int ``index [B, A]`` -> ``[B, A]``."""
    return ops.take_along_axis(params, index, axis=1)


@keras.saving.register_keras_serializable(package="keras_focal")
class TaskAlignedAssigner:
    """TOOD's task-aligned assignment (TAL): positives and soft targets from the predictions' alignment.

    Args:
        topk: candidates per box over all levels (13, mmdetection's TOOD config).
        alpha, beta: exponents of the score and of the IoU in ``t = s^alpha * u^beta`` (1.0, 6.0; TOOD Sec. 4).
        ensure_positive: a box without a positive candidate gets the finest-level anchor nearest its centre
            (step 4 of the module docstring); False is mmdetection's assigner exactly.

    ``assigner(anchors, strides, boxes, classes, scores, predicted_boxes, image_height, image_width)``:

    - ``anchors`` ``[A, 4]`` normalized yxyx (their centres are used) and ``strides`` ``[A]`` (pixels);
    - ``boxes`` ``[B, M, 4]`` normalized yxyx and ``classes`` ``[B, M]``, padded with -1 (M may be 0);
    - ``scores`` ``[B, A, C]``: the predicted per-class probabilities; ``predicted_boxes`` ``[B, A, 4]`` normalized
      yxyx. Both enter without gradient.

    Returns a dict: ``class_targets`` int32 ``[B, A]`` (the class, -1 background), ``matched_indices`` int32
    ``[B, A]`` (the row of M, -1 where not positive), ``alignment_targets`` float32 ``[B, A]`` (``t_hat``, 0 where
    not positive) and ``ious`` float32 ``[B, A]`` (``u`` with the assigned box, 0 where not positive).
    """

    needs_predictions = True

    def __init__(self, topk=TOPK, alpha=ALPHA, beta=BETA, ensure_positive=True):
        if int(topk) < 1:
            raise ValueError(f"topk must be >= 1, got {topk}")
        if float(alpha) < 0 or float(beta) < 0:
            raise ValueError(f"alpha and beta must be >= 0, got alpha={alpha}, beta={beta}")
        self.topk = int(topk)
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.ensure_positive = bool(ensure_positive)

    def __call__(self, anchors, strides, boxes, classes, scores, predicted_boxes, image_height, image_width):
        boxes = ops.cast(boxes, "float32")
        classes = ops.cast(classes, "int32")
        if len(boxes.shape) != 3 or len(classes.shape) != 2:
            raise ValueError("TaskAlignedAssigner expects batched boxes [B, M, 4] and classes [B, M], got shapes "
                             f"{tuple(boxes.shape)} and {tuple(classes.shape)}")
        anchors = ops.cast(anchors, "float32")
        strides = ops.cast(strides, "float32")
        scores = ops.stop_gradient(ops.cast(scores, "float32"))
        predicted = ops.stop_gradient(ops.cast(predicted_boxes, "float32"))
        h_img = ops.cast(image_height, "float32")
        w_img = ops.cast(image_width, "float32")

        # 1. real boxes first, plus one never-valid row
        boxes, classes, source_index = _compact_real_boxes(boxes, classes)
        b = ops.shape(boxes)[0]
        boxes = ops.concatenate([boxes, ops.zeros((b, 1, 4), "float32") - 1.0], axis=1)
        classes = ops.concatenate([classes, ops.zeros((b, 1), "int32") - 1], axis=1)
        source_index = ops.concatenate([source_index, ops.zeros((b, 1), "int32") - 1], axis=1)
        valid = valid_boxes_mask(boxes, classes)  # [B, M]
        m = ops.shape(boxes)[1]
        n = ops.shape(anchors)[0]

        # 2. IoU, score and alignment of every (anchor, box) pair, [B, A, M]
        ious = aligned_iou(predicted[:, :, None, :], boxes[:, None, :, :])
        label = ops.broadcast_to(ops.maximum(classes, 0)[:, None, :], (b, n, m))
        box_scores = ops.take_along_axis(scores, label, axis=2)
        metric = ops.power(box_scores, self.alpha) * ops.power(ious, self.beta)
        metric = ops.where(valid[:, None, :], metric, 0.0)

        # 3. top-k candidates per box over all anchors, positive if aligned and centred inside the box
        k = min(self.topk, int(anchors.shape[0])) if anchors.shape[0] is not None else self.topk
        top_metric, top_index = ops.top_k(ops.transpose(metric, (0, 2, 1)), k=k)  # [B, M, k]
        top_index = ops.cast(top_index, "int32")
        anchor_centres = centers(anchors)  # [A, 2]
        inside = _centre_inside(ops.take(anchor_centres, top_index, axis=0), boxes[:, :, None, :], h_img, w_img)
        positive_pair = ops.logical_and(ops.logical_and(top_metric > 0.0, inside), valid[:, :, None])

        # 4. a box without a positive gets the nearest anchor of the finest level
        if self.ensure_positive:
            scale = ops.stack([h_img, w_img])
            offset = (anchor_centres[None, None] - centers(boxes)[:, :, None, :]) * scale  # [B, M, A, 2] pixels
            distance = ops.sum(ops.square(offset), axis=-1)
            finest = ops.equal(strides, ops.min(strides))
            distance = ops.where(finest[None, None, :], distance, float("inf"))
            nearest = ops.cast(ops.argmin(distance, axis=-1), "int32")  # [B, M]
            lonely = ops.logical_and(valid, ops.logical_not(ops.any(positive_pair, axis=-1)))
            top_index = ops.concatenate([top_index, nearest[..., None]], axis=-1)
            positive_pair = ops.concatenate([positive_pair, lonely[..., None]], axis=-1)

        # the positive pairs as a dense [B, A, M] mask (a pair listed twice counts once)
        flat = (ops.arange(b, dtype="int32")[:, None, None] * m + ops.arange(m, dtype="int32")[None, :, None]) * n
        flat = ops.reshape(flat + top_index, (-1, 1))
        hits = tf.scatter_nd(flat, ops.reshape(ops.cast(positive_pair, "int32"), (-1,)), ops.reshape(b * m * n, (1,)))
        positive_mask = ops.transpose(ops.reshape(hits > 0, (b, m, n)), (0, 2, 1))

        # 5. an anchor claimed by several boxes goes to the highest IoU (the first box on ties)
        claimed = ops.where(positive_mask, ious, -1.0)
        assigned = ops.cast(ops.argmax(claimed, axis=2), "int32")  # [B, A]
        positive = ops.any(positive_mask, axis=2)
        owner = ops.logical_and(ops.equal(ops.arange(m, dtype="int32")[None, None, :], assigned[..., None]),
                                positive[..., None])  # [B, A, M]

        # 6. t_hat = t / (max t + eps) * max u, the maxima over each box's positive anchors
        own_metric = ops.where(owner, metric, 0.0)
        own_iou = ops.where(owner, ious, 0.0)
        max_metric = _gather_last(ops.max(own_metric, axis=1), assigned)
        max_iou = _gather_last(ops.max(own_iou, axis=1), assigned)
        anchor_metric = ops.sum(own_metric, axis=2)
        targets = anchor_metric / (max_metric + METRIC_EPSILON) * max_iou

        return {
            "class_targets": ops.where(positive, _gather_last(classes, assigned), BACKGROUND),
            "matched_indices": ops.where(positive, _gather_last(source_index, assigned), -1),
            "alignment_targets": ops.where(positive, targets, 0.0),
            "ious": ops.sum(own_iou, axis=2),
        }

    def get_config(self):
        return {"topk": self.topk, "alpha": self.alpha, "beta": self.beta, "ensure_positive": self.ensure_positive}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def _centre_inside(centres, boxes, h_img, w_img):
    """The anchor centre ``(cy, cx)`` lies inside the box by more than 0.01 pixel on every side (mmdetection's
    `is_in_gts`); ``centres [..., 2]`` and ``boxes [..., 4]`` broadcast."""
    eps_y = INSIDE_MARGIN_PIXELS / h_img
    eps_x = INSIDE_MARGIN_PIXELS / w_img
    cy, cx = centres[..., 0], centres[..., 1]
    return ops.logical_and(
        ops.logical_and(cy - boxes[..., 0] > eps_y, boxes[..., 2] - cy > eps_y),
        ops.logical_and(cx - boxes[..., 1] > eps_x, boxes[..., 3] - cx > eps_x),
    )
