"""The task-aligned assigner of TOOD (Feng et al. 2021, "TOOD: Task-aligned One-stage Object Detection", Sec. 3.2;
mmdetection `task_modules/assigners/task_aligned_assigner.py`).

A dynamic assigner: it reads the head's own predictions (detached), so it runs in the train step, after the forward
pass. Data flow for a batch, B images, A anchors, M ground-truth rows (padded with class -1):

1. One never-valid row is appended to the boxes (`base.pad_dummy`), so every reduction over boxes is defined when
   an image has none.
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

from keras_focal.assigners.atss import centre_inside
from keras_focal.assigners.base import BACKGROUND, Assigner, pad_dummy
from keras_focal.boxes import aligned_iou, centers, valid_boxes_mask

# mmdetection `TaskAlignedAssigner(topk=13)` in `configs/tood/tood_r50_fpn_1x_coco.py`; alpha 1, beta 6 are the
# `TOODHead` train_cfg's `alpha=1, beta=6` (paper Sec. 4, "Implementation details": alpha = 1, beta = 6).
TOPK = 13
ALPHA = 1.0
BETA = 6.0
# mmdetection `_get_targets_single`: `pos_alignment_metrics / (pos_alignment_metrics.max() + 10e-8)`.
METRIC_EPSILON = 1e-7


def _gather_last(params, index):
    """``params[b, index[b, a]]`` for ``params [B, M]`` and int ``index [B, A]`` -> ``[B, A]``."""
    return ops.take_along_axis(params, index, axis=1)


@keras.saving.register_keras_serializable(package="keras_focal")
class TaskAlignedAssigner(Assigner):
    """TOOD's task-aligned assignment (TAL): positives and soft targets from the predictions' alignment.

    Args:
        topk: candidates per box over all levels (13, mmdetection's TOOD config).
        alpha, beta: exponents of the score and of the IoU in ``t = s^alpha * u^beta`` (1.0, 6.0; TOOD Sec. 4).
        ensure_positive: a box without a positive candidate gets the finest-level anchor nearest its centre
            (step 4 of the module docstring); False is mmdetection's assigner exactly.

    ``assign(anchor_generator, boxes, classes, image_height, image_width, predictions)`` (`base.Assigner`), with
    ``predictions = {"scores": [B, A, C] per-class probabilities, "boxes": [B, A, 4] normalized yxyx}`` (a
    gradient through them is stopped here too). Returns ``assignment`` int32 ``[B, A]`` (the row of M, -1
    background; never ignored) and ``alignment`` float32 ``[B, A]`` (``t_hat``, 0 where not positive).
    """

    needs_predictions = True
    assignment_keys = ("alignment",)

    def __init__(self, topk=TOPK, alpha=ALPHA, beta=BETA, ensure_positive=True):
        if int(topk) < 1:
            raise ValueError(f"TaskAlignedAssigner needs topk >= 1, got {topk}")
        if float(alpha) < 0 or float(beta) < 0:
            raise ValueError(f"TaskAlignedAssigner needs alpha and beta >= 0, got alpha={alpha}, beta={beta}")
        self.topk = int(topk)
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.ensure_positive = bool(ensure_positive)

    def assign(self, anchor_generator, boxes, classes, image_height, image_width, predictions=None):
        if predictions is None or not {"scores", "boxes"} <= set(predictions):
            raise ValueError("TaskAlignedAssigner needs predictions={'scores': [B, A, C], 'boxes': [B, A, 4]}, "
                             f"got {None if predictions is None else sorted(predictions)}")
        anchors = ops.cast(anchor_generator(image_height, image_width), "float32")
        strides = ops.cast(anchor_generator.anchor_strides(image_height, image_width), "float32")
        return self.assign_anchors(anchors, strides, boxes, classes, predictions["scores"], predictions["boxes"],
                                   image_height, image_width)

    def assign_anchors(self, anchors, strides, boxes, classes, scores, predicted_boxes, image_height, image_width):
        """`assign` on explicit anchors ``[A, 4]`` and their strides ``[A]`` (pixels)."""
        boxes = ops.cast(boxes, "float32")
        classes = ops.cast(classes, "int32")
        if len(boxes.shape) != 3 or len(classes.shape) != 2:
            raise ValueError("TaskAlignedAssigner expects batched boxes [B, M, 4] and classes [B, M], got shapes "
                             f"{tuple(boxes.shape)} and {tuple(classes.shape)}")
        scores = ops.stop_gradient(ops.cast(scores, "float32"))
        predicted = ops.stop_gradient(ops.cast(predicted_boxes, "float32"))
        h_img = ops.cast(image_height, "float32")
        w_img = ops.cast(image_width, "float32")

        # 1. one never-valid row, so that the reductions over boxes are defined
        boxes, classes = pad_dummy(boxes, classes)
        valid = valid_boxes_mask(boxes, classes)  # [B, M]
        b, m, n = ops.shape(boxes)[0], ops.shape(boxes)[1], ops.shape(anchors)[0]

        # 2. IoU, score and alignment of every (anchor, box) pair, [B, A, M]
        ious = aligned_iou(predicted[:, :, None, :], boxes[:, None, :, :])
        label = ops.broadcast_to(ops.maximum(classes, 0)[:, None, :], (b, n, m))
        box_scores = ops.take_along_axis(scores, label, axis=2)
        metric = ops.power(box_scores, self.alpha) * ops.power(ious, self.beta)
        metric = ops.where(valid[:, None, :], metric, 0.0)

        # 3. top-k candidates per box over all anchors (first on ties), positive if aligned and centred inside
        k = self.topk if anchors.shape[0] is None else min(self.topk, int(anchors.shape[0]))
        top_metric, top_index = ops.top_k(ops.transpose(metric, (0, 2, 1)), k=k)  # [B, M, k]
        top_index = ops.cast(top_index, "int32")
        anchor_centres = centers(anchors)  # [A, 2]
        inside = centre_inside(ops.take(anchor_centres, top_index, axis=0), boxes[:, :, None, :], h_img, w_img)
        positive_pair = ops.logical_and(ops.logical_and(top_metric > 0.0, inside), valid[:, :, None])

        # 4. a box without a positive gets the nearest anchor of the finest level
        if self.ensure_positive:
            offset = (anchor_centres[None, None] - centers(boxes)[:, :, None, :]) * ops.stack([h_img, w_img])
            distance = ops.sum(ops.square(offset), axis=-1)  # [B, M, A], squared pixels
            finest = ops.equal(strides, ops.min(strides))
            distance = ops.where(finest[None, None, :], distance, float("inf"))
            nearest = ops.cast(ops.argmin(distance, axis=-1), "int32")  # [B, M], the first anchor on ties
            lonely = ops.logical_and(valid, ops.logical_not(ops.any(positive_pair, axis=-1)))
            top_index = ops.concatenate([top_index, nearest[..., None]], axis=-1)
            positive_pair = ops.concatenate([positive_pair, lonely[..., None]], axis=-1)

        # the positive pairs as a dense [B, A, M] mask (a pair listed twice counts once)
        rows = ops.arange(b, dtype="int32")[:, None, None] * m + ops.arange(m, dtype="int32")[None, :, None]
        flat = ops.reshape(rows * n + top_index, (-1, 1))
        hits = tf.scatter_nd(flat, ops.reshape(ops.cast(positive_pair, "int32"), (-1,)), tf.reshape(b * m * n, [1]))
        positive_mask = ops.transpose(ops.reshape(hits > 0, (b, m, n)), (0, 2, 1))

        # 5. an anchor claimed by several boxes goes to the highest IoU (the first box on ties)
        assigned = ops.cast(ops.argmax(ops.where(positive_mask, ious, -1.0), axis=2), "int32")  # [B, A]
        positive = ops.any(positive_mask, axis=2)
        owner = ops.logical_and(ops.equal(ops.arange(m, dtype="int32")[None, None, :], assigned[..., None]),
                                positive[..., None])  # [B, A, M]

        # 6. t_hat = t / (max t + eps) * max u, the maxima over each box's positive anchors
        own_metric = ops.where(owner, metric, 0.0)
        own_iou = ops.where(owner, ious, 0.0)
        max_metric = _gather_last(ops.max(own_metric, axis=1), assigned)
        max_iou = _gather_last(ops.max(own_iou, axis=1), assigned)
        alignment = ops.sum(own_metric, axis=2) / (max_metric + METRIC_EPSILON) * max_iou
        return {"assignment": ops.where(positive, assigned, BACKGROUND),
                "alignment": ops.where(positive, alignment, 0.0)}

    def get_config(self):
        return {"topk": self.topk, "alpha": self.alpha, "beta": self.beta, "ensure_positive": self.ensure_positive}
