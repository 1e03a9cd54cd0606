"""The ATSS assigner (Zhang et al. 2020, "Bridging the Gap Between Anchor-based and Anchor-free Detection via
Adaptive Training Sample Selection", Alg. 1; mmdetection's `ATSSAssigner`), used by GFL.

For each ground truth the `topk` (9) anchors per level closest to its centre (L2 distance in pixels) are
candidates; threshold = mean + std (unbiased, as `torch.std`) of the candidates' IoUs; a candidate is positive if
its IoU >= threshold and its centre lies strictly inside the box (by more than 0.01 pixel, as mmdetection). An
anchor positive for several boxes takes the one with the highest IoU (the first box on ties). No ignore band:
everything else is background.

Two paths with the same candidates, IoU values and result:
- dense: `[B, A, M]` arrays (any anchors, dynamic image sizes);
- grid (static image size, anchors on a grid per level, `base.anchor_grid`): only the candidates are computed,
  `[B, M, levels x topk]` arrays.
"""

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from keras_focal.assigners.base import BACKGROUND, Assigner, anchor_grid, pad_dummy
from keras_focal.boxes import aligned_iou, centers, pairwise_iou, valid_boxes_mask


@keras.saving.register_keras_serializable(package="keras_focal")
class ATSSAssigner(Assigner):
    """ATSS (see the module docstring); static: runs in tf.data."""

    def __init__(self, topk=9):
        if int(topk) < 1:
            raise ValueError(f"ATSSAssigner needs topk >= 1, got {topk}")
        self.topk = int(topk)

    def assign(self, anchor_generator, boxes, classes, image_height, image_width, predictions=None):
        boxes = tf.cast(boxes, "float32")
        classes = tf.cast(classes, "int32")
        grid = anchor_grid(anchor_generator, image_height, image_width)
        if grid is not None and grid["levels"] is not None:
            return {"assignment": self.assign_grid(grid, boxes, classes, image_height, image_width)}
        anchors = anchor_generator(image_height, image_width) if grid is None else grid["anchors"]
        return {"assignment": self.assign_dense(anchor_generator, anchors, boxes, classes, image_height, image_width)}

    def assign_dense(self, anchor_generator, anchors, boxes, classes, image_height, image_width):
        """int32 [B, A] (the box row, or -1) from dense ``[B, A, M]`` arrays."""
        anchors = ops.convert_to_tensor(anchors)
        boxes, classes = pad_dummy(boxes, classes)
        valid = valid_boxes_mask(boxes, classes)  # [B, M]
        h_img = ops.cast(image_height, "float32")
        w_img = ops.cast(image_width, "float32")
        iou = pairwise_iou(anchors, boxes)  # [B, A, M]
        a_ctr = centers(anchors)  # [A, 2]
        g_ctr = centers(boxes)  # [B, M, 2]
        dy = (a_ctr[None, :, None, 0] - g_ctr[:, None, :, 0]) * h_img
        dx = (a_ctr[None, :, None, 1] - g_ctr[:, None, :, 1]) * w_img
        dist = ops.sqrt(dy * dy + dx * dx)  # [B, A, M], pixels
        dist_t = ops.transpose(dist, (0, 2, 1))  # [B, M, A]

        sizes = anchor_generator.level_sizes(image_height, image_width)
        per_level = anchor_generator.split_levels(dist_t, image_height, image_width, axis=2)
        b = ops.shape(boxes)[0]
        m = ops.shape(boxes)[1]
        masks, chosen, start = [], [], 0
        for d_l, n_l in zip(per_level, sizes):
            k = ops.minimum(ops.cast(n_l, "int32"), self.topk) if not isinstance(n_l, int) else min(n_l, self.topk)
            _, idx = ops.top_k(-d_l, k=k, sorted=True)  # [B, M, k], the first anchor on ties
            idx = ops.cast(idx, "int32")
            chosen.append(ops.sort(idx, axis=-1) + start)
            start = start + n_l
            k_dyn = ops.shape(idx)[2]
            bi = ops.broadcast_to(ops.arange(b, dtype="int32")[:, None, None], ops.shape(idx))
            mi = ops.broadcast_to(ops.arange(m, dtype="int32")[None, :, None], ops.shape(idx))
            indices = ops.reshape(ops.stack([bi, mi, idx], axis=-1), (-1, 3))
            updates = ops.ones((b * m * k_dyn,), "float32")
            masks.append(ops.scatter(indices, updates, (b, m, n_l)))
        candidate = ops.transpose(ops.concatenate(masks, axis=2), (0, 2, 1)) > 0.5  # [B, A, M]
        candidate = ops.logical_and(candidate, valid[:, None, :])
        chosen_iou = tf.gather(ops.transpose(iou, (0, 2, 1)), ops.concatenate(chosen, axis=2), batch_dims=2)
        thr = threshold(chosen_iou)  # [B, M]

        inside = centre_inside(a_ctr[None, :, None, :], boxes[:, None, :, :], h_img, w_img)  # [B, A, M]
        pos_pair = ops.logical_and(ops.logical_and(candidate, inside), iou >= thr[:, None, :])
        scored = ops.where(pos_pair, iou, -1.0)
        match = ops.cast(ops.argmax(scored, axis=2), "int32")
        return tf.where(ops.any(pos_pair, axis=2), match, BACKGROUND)

    def assign_grid(self, grid, boxes, classes, image_height, image_width):
        """`assign_dense` for anchors on a grid, with the same candidates, IoU values and decisions, computed
        only for the candidates: ``[B, M, C]`` arrays, C = levels x ``topk`` (45), instead of ``[B, A, M]``.

        The squared centre distance of the anchor in row i and column j is ``dy[i]**2 + dx[j]**2``, so one of the
        ``t`` nearest anchors of a level is in one of the ``t + 1`` rows nearest in y and one of the ``t + 1``
        columns nearest in x (each choice the first on ties, as top_k): ``t`` rows already hold ``t`` anchors at
        least as near, and the extra row covers a box centred between two rows, whose distances can round to a
        tie. The ``t`` nearest are then chosen among those ``(t + 1)**2`` per anchor shape, in anchor order.
        """
        anchors, levels = grid["anchors"], grid["levels"]
        boxes, classes = pad_dummy(boxes, classes)
        valid = valid_boxes_mask(boxes, classes)  # [B, M]
        h_img = ops.cast(image_height, "float32")
        w_img = ops.cast(image_width, "float32")
        g_ctr = centers(boxes)  # [B, M, 2]
        chosen = ops.concatenate(
            [self._level_candidates(level, g_ctr, h_img, w_img) for level in levels], axis=2)  # [B, M, C]
        cand = tf.gather(anchors, chosen)  # [B, M, C, 4]
        gt = boxes[:, :, None, :]
        iou = aligned_iou(cand, gt)  # [B, M, C], the values of pairwise_iou(anchors, boxes)
        thr = threshold(iou)
        inside = centre_inside(centers(cand), gt, h_img, w_img)  # [B, M, C]
        pos_pair = ops.logical_and(ops.logical_and(inside, iou >= thr[..., None]), valid[..., None])

        # An anchor positive for several boxes takes the highest IoU, the first box on ties: per anchor of the
        # batch, the largest IoU of its positive pairs, then the smallest box index among the pairs reaching it.
        b, m = tf.shape(boxes)[0], tf.shape(boxes)[1]
        n = anchors.shape[0]
        flat = tf.reshape(tf.range(b)[:, None, None] * n + chosen, [-1])
        scored = tf.reshape(tf.where(pos_pair, iou, -1.0), [-1])
        best = tf.math.unsorted_segment_max(scored, flat, b * n)
        winner = tf.logical_and(tf.reshape(pos_pair, [-1]), tf.equal(scored, tf.gather(best, flat)))
        box_index = tf.reshape(tf.broadcast_to(tf.range(m)[None, :, None], tf.shape(chosen)), [-1])
        first = tf.reshape(tf.math.unsorted_segment_min(tf.where(winner, box_index, m), flat, b * n), (b, n))
        return tf.where(first < m, first, BACKGROUND)

    def _level_candidates(self, level, g_ctr, h_img, w_img):
        """int32 ``[B, M, t]``: the indices, ascending, of the ``t = min(topk, level size)`` anchors of one
        grid level nearest to each box centre (``g_ctr`` ``[B, M, 2]``), the first anchor on ties."""
        cy, cx = level["cy"], level["cx"]  # [fh, k], [fw, k]
        fh, k = cy.shape
        fw = cx.shape[0]
        t = min(self.topk, fh * fw * k)

        def nearest(centres, g, size, count):  # -> squared distances [B, M, k, count], their lines ascending
            d = (centres[None, None] - g[:, :, None, None]) * size  # [B, M, lines, k], as assign_dense
            d2 = ops.transpose(d * d, (0, 1, 3, 2))
            _, lines = ops.top_k(-d2, k=count, sorted=True)
            lines = ops.sort(ops.cast(lines, "int32"), axis=-1)
            return tf.gather(d2, lines, batch_dims=3), lines

        dy2, rows = nearest(cy, g_ctr[..., 0], h_img, min(fh, t + 1))  # [B, M, k, r]
        dx2, cols = nearest(cx, g_ctr[..., 1], w_img, min(fw, t + 1))  # [B, M, k, c]
        dist = ops.sqrt(dy2[..., :, None] + dx2[..., None, :])  # [B, M, k, r, c]
        index = (rows[..., :, None] * fw + cols[..., None, :]) * k + np.arange(k, dtype="int32")[:, None, None]
        shape = ops.shape(dist)
        dist = ops.reshape(dist, (shape[0], shape[1], -1))
        index = ops.reshape(index, (shape[0], shape[1], -1))
        if k > 1:  # rows and columns differ per shape: put the candidates in anchor order, for the ties
            order = ops.cast(tf.argsort(index, axis=-1), "int32")
            dist = tf.gather(dist, order, batch_dims=2)
            index = tf.gather(index, order, batch_dims=2)
        _, pick = ops.top_k(-dist, k=t, sorted=True)
        return ops.sort(tf.gather(index, ops.cast(pick, "int32"), batch_dims=2), axis=-1) + level["start"]

    def get_config(self):
        return {"topk": self.topk}


def threshold(iou):
    """ATSS's IoU threshold per box, mean + std (unbiased) of its candidates' IoUs: ``[B, M, C] -> [B, M]``. The
    candidates come in anchor order, so that both assignment paths sum in the same order."""
    n = ops.cast(ops.shape(iou)[-1], "float32")
    mean = ops.sum(iou, axis=-1) / ops.maximum(n, 1.0)
    var = ops.sum(ops.square(iou - mean[..., None]), axis=-1) / ops.maximum(n - 1.0, 1.0)
    return mean + ops.sqrt(var)


def centre_inside(centres, boxes, h_img, w_img):
    """ATSS's inside test: the anchor centre ``(cy, cx)`` lies inside the box by more than 0.01 pixel on every
    side (as mmdetection). ``centres [..., 2]`` and ``boxes [..., 4]`` broadcast against each other."""
    eps_y = 0.01 / h_img
    eps_x = 0.01 / w_img
    cy, cx = centres[..., 0], centres[..., 1]
    return ops.logical_and(
        ops.logical_and(cy - boxes[..., 0] > eps_y, boxes[..., 2] - cy > eps_y),
        ops.logical_and(cx - boxes[..., 1] > eps_x, boxes[..., 3] - cx > eps_x),
    )
