"""The IoU assigner (RetinaNet, Lin et al. 2017, Sec. 4 "Anchors"; torchvision's `Matcher`).

An anchor whose best IoU with a ground-truth box is >= `positive_threshold` (0.5) is positive for that box,
< `negative_threshold` (0.4) background, in between ignored. With `low_quality_matches` (torchvision's
`allow_low_quality_matches`), every anchor whose IoU with some ground truth equals that ground truth's best IoU
(ties included, and only if that best IoU is > 0) becomes positive, with the ground truth it overlaps most (its own
argmax): every box keeps at least one anchor. An anchor overlapping several boxes takes the one with the highest
IoU (the first one on ties).

Two paths with the same IoU values, decisions and result:
- dense: the `[B, A, M]` IoU table (any anchors, dynamic image sizes);
- grid (static image size, anchors on a grid per level, `base.anchor_grid`): the overlaps factor into rows and
  columns, compiled with XLA (`IoUAssigner._grid_function`).
"""

import keras
import tensorflow as tf
from keras import ops

from keras_focal.assigners.base import BACKGROUND, IGNORED, Assigner, anchor_grid, pad_dummy
from keras_focal.boxes import pairwise_iou, valid_boxes_mask

# Where non-real boxes are moved for the grid IoU: no anchor reaches it, so their IoU is exactly 0.
FAR_AWAY = 1e9


# The padded box counts of the compiled grid assignment: 8, 12, 16, 24, 32, 48, ... (2**k and 3 * 2**(k - 1)).
BOX_BUCKETS = tuple(sorted({8 * 2**k for k in range(22)} | {12 * 2**k for k in range(22)}))


def box_bucket(count):
    """The padded box count for `count` boxes (int32 scalar tensor): the smallest of `BOX_BUCKETS` that is >= count.
    At most 1.5x the boxes are processed, and the counts 1-1000 (a mosaic carries the boxes of four images) fall
    into 15 shapes, each compiled once."""
    buckets = tf.constant(BOX_BUCKETS, tf.int32)
    return buckets[tf.searchsorted(buckets, tf.reshape(tf.cast(count, tf.int32), [1]), side="left")[0]]


def _assignment(match, positive, ignored):
    return tf.where(positive, tf.cast(match, "int32"), tf.where(ignored, IGNORED, BACKGROUND))


@keras.saving.register_keras_serializable(package="keras_focal")
class IoUAssigner(Assigner):
    """RetinaNet's assignment by IoU thresholds (see the module docstring); static: runs in tf.data."""

    def __init__(self, positive_threshold=0.5, negative_threshold=0.4, low_quality_matches=True):
        positive_threshold, negative_threshold = float(positive_threshold), float(negative_threshold)
        if not 0.0 <= negative_threshold <= positive_threshold <= 1.0:
            raise ValueError("IoUAssigner needs 0 <= negative_threshold <= positive_threshold <= 1, got "
                             f"negative_threshold={negative_threshold}, positive_threshold={positive_threshold}")
        self.positive_threshold = positive_threshold
        self.negative_threshold = negative_threshold
        self.low_quality_matches = bool(low_quality_matches)

    def assign(self, anchor_generator, boxes, classes, image_height, image_width, predictions=None):
        boxes = tf.cast(boxes, "float32")
        classes = tf.cast(classes, "int32")
        grid = anchor_grid(anchor_generator, image_height, image_width)
        if grid is not None and grid["levels"] is not None:
            return {"assignment": self.assign_grid(grid, boxes, classes)}
        anchors = anchor_generator(image_height, image_width) if grid is None else grid["anchors"]
        return {"assignment": self.assign_dense(anchors, boxes, classes)}

    def assign_dense(self, anchors, boxes, classes):
        """int32 [B, A] from the dense [B, A, M] IoU table."""
        boxes, classes = pad_dummy(boxes, classes)
        valid = valid_boxes_mask(boxes, classes)  # [B, M]
        iou = pairwise_iou(ops.convert_to_tensor(anchors), boxes)  # [B, A, M]
        iou = ops.where(valid[:, None, :], iou, -1.0)
        max_iou = ops.max(iou, axis=2)  # [B, A]
        match = ops.cast(ops.argmax(iou, axis=2), "int32")
        positive = max_iou >= self.positive_threshold
        ignored = ops.logical_and(max_iou >= self.negative_threshold, ops.logical_not(positive))
        if self.low_quality_matches:
            gt_best = ops.max(iou, axis=1)  # [B, M]
            is_best = ops.logical_and(
                ops.equal(iou, gt_best[:, None, :]),
                ops.logical_and(gt_best[:, None, :] > 0.0, valid[:, None, :]),
            )
            low_quality = ops.any(is_best, axis=2)  # [B, A]
            positive = ops.logical_or(positive, low_quality)
            ignored = ops.logical_and(ignored, ops.logical_not(low_quality))
        return _assignment(match, positive, ignored)

    def assign_grid(self, grid, boxes, classes):
        """`assign_dense` for anchors on a grid, with the same IoU values, decisions and result.

        An anchor's vertical overlap with a box depends only on its row and shape, the horizontal one only on
        its column and shape: ``inter[m, i, j, s] = ih[m, i, s] * iw[m, j, s]``. The min / max work is then
        ``(fh + fw) * k * M`` instead of ``fh * fw * k * M``; the [A, M] work left is one product, the union,
        the division and the reductions. Non-real boxes are moved far outside the image (IoU exactly 0
        instead of -1): they come after the real ones, so argmax ties still pick the same real box, a 0 never
        reaches ``negative_threshold`` > 0 nor the low-quality rule (best IoU > 0), and images without a real box
        are background everywhere.
        """
        boxes, classes = pad_dummy(boxes, classes)
        # The box count is rounded up to a `box_bucket` with more non-real rows, so the compiled assignment below
        # is built for a handful of shapes only; those rows come last and never win a tie.
        pad = box_bucket(tf.shape(boxes)[1]) - tf.shape(boxes)[1]
        boxes = tf.pad(boxes, [[0, 0], [0, pad], [0, 0]], constant_values=-1.0)
        classes = tf.pad(classes, [[0, 0], [0, pad]], constant_values=-1)
        return self._grid_function(grid)(boxes, valid_boxes_mask(boxes, classes))

    def _grid_function(self, grid):
        """``(boxes [B, M, 4], valid [B, M]) -> int32 [B, A]`` over the anchor grid, compiled with XLA: the
        ``[B, M, A]`` IoU values are reduced where they are made instead of in a pass over memory per step. The
        box axis comes first, so the reductions over boxes are element-wise maxima over whole slices of anchors,
        which vectorise. One compiled function per image size, cached; XLA compiles it once per box count (a
        `box_bucket`)."""
        cache = self.__dict__.setdefault("_grid_functions", {})
        key = id(grid)
        if key in cache:
            return cache[key][1]
        levels = grid["levels"]

        def overlap(lo_a, hi_a, lo_b, hi_b):  # [n, k] anchor extents x [B, M] box extents -> [B, M, n, k]
            lo_b, hi_b = lo_b[:, :, None, None], hi_b[:, :, None, None]
            return tf.maximum(tf.minimum(hi_a[None, None], hi_b) - tf.maximum(lo_a[None, None], lo_b), 0.0)

        def assign(boxes, valid):
            batch, m = tf.shape(boxes)[0], tf.shape(boxes)[1]
            far = tf.where(valid[..., None], boxes, FAR_AWAY)
            area_b = tf.maximum(far[..., 2] - far[..., 0], 0.0) * tf.maximum(far[..., 3] - far[..., 1], 0.0)
            box_index = tf.range(m)[None, :, None, None, None]
            ious, max_iou, match, gt_best = [], [], [], None
            for level in levels:
                ih = overlap(level["y"][..., 0], level["y"][..., 1], far[..., 0], far[..., 2])  # [B, M, fh, k]
                iw = overlap(level["x"][..., 0], level["x"][..., 1], far[..., 1], far[..., 3])  # [B, M, fw, k]
                inter = ih[:, :, :, None] * iw[:, :, None]  # [B, M, fh, fw, k]
                union = level["area"][None, None] + area_b[:, :, None, None, None] - inter
                iou = tf.math.divide_no_nan(inter, union)  # 0 where the union is 0, as boxes.pairwise_iou
                ious.append(iou)
                top = tf.reduce_max(iou, axis=1)  # [B, fh, fw, k]
                max_iou.append(tf.reshape(top, (batch, -1)))
                # argmax over the boxes, the first one on ties
                first = tf.reduce_min(tf.where(tf.equal(iou, top[:, None]), box_index, m), axis=1)
                match.append(tf.reshape(first, (batch, -1)))
                best = tf.reduce_max(iou, axis=(2, 3, 4))  # [B, M]
                gt_best = best if gt_best is None else tf.maximum(gt_best, best)
            max_iou, match = tf.concat(max_iou, 1), tf.concat(match, 1)
            has_box = tf.reduce_any(valid, axis=1)[:, None]
            positive = tf.logical_and(max_iou >= self.positive_threshold, has_box)
            ignored = tf.logical_and(tf.logical_and(max_iou >= self.negative_threshold, tf.logical_not(positive)),
                                     has_box)
            if self.low_quality_matches:
                # an IoU never equals +inf: boxes whose best IoU is 0 (or that are not real) keep no anchor
                target = tf.where(gt_best > 0.0, gt_best, float("inf"))[:, :, None, None, None]
                low_quality = tf.concat(
                    [tf.reshape(tf.reduce_any(tf.equal(iou, target), axis=1), (batch, -1)) for iou in ious], 1)
                positive = tf.logical_or(positive, low_quality)
                ignored = tf.logical_and(ignored, tf.logical_not(low_quality))
            return _assignment(match, positive, ignored)

        function = tf.function(assign, jit_compile=True, reduce_retracing=True)
        cache[key] = (grid, function)  # grid kept alive so that its id stays this entry's
        return function

    def get_config(self):
        return {"positive_threshold": self.positive_threshold, "negative_threshold": self.negative_threshold,
                "low_quality_matches": self.low_quality_matches}
