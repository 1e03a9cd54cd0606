"""Anchor assignment (IoU matcher for RetinaNet, ATSS for GFL) and training-target encoding."""

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from keras_focal.boxes import BACKGROUND, IGNORED, aligned_iou, centers, pairwise_iou, valid_boxes_mask
from keras_focal.layers import box_coding
from keras_focal.layers.anchor_generator import AnchorGenerator

# Where non-real boxes are moved for the grid IoU: no anchor reaches it, so their IoU is exactly 0.
FAR_AWAY = 1e9
# What the encoder can return (``outputs=``), in this order.
OUTPUTS = ("class_targets", "box_targets", "matched_boxes", "matched_indices")


def _is_static(x):
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def compact_real_boxes(boxes, classes):
    """Moves the real boxes of each image to the front, in their order, and cuts the batch to its largest count.

    ``boxes [B, M, 4]``, ``classes [B, M]`` -> ``boxes [B, K, 4]``, ``classes [B, K]`` and ``source_index`` int32
    ``[B, K]`` (the row of M each came from), where K is the largest number of real boxes of one image
    (``valid_boxes_mask``). Rows past an image's own count are padding: class -1, box -1, index -1. The order of
    the real boxes is kept, so "the first box on ties" means the same box before and after.
    """
    valid = valid_boxes_mask(boxes, classes)  # [B, M]
    if boxes.shape[0] == 1:  # one image (the tf.data map): a plain gather of its real rows
        rows = tf.cast(tf.where(valid[0])[:, 0], "int32")
        return tf.gather(boxes[0], rows)[None], tf.gather(classes[0], rows)[None], rows[None]
    count = ops.sum(ops.cast(valid, "int32"), axis=1)  # [B]
    k = ops.max(ops.concatenate([count, ops.zeros((1,), "int32")], axis=0))
    # A stable sort on "is padding" puts the real rows first, each group in its original order.
    order = ops.cast(tf.argsort(ops.cast(ops.logical_not(valid), "int32"), axis=1, stable=True), "int32")[:, :k]
    keep = ops.arange(k, dtype="int32")[None, :] < count[:, None]  # [B, K]
    boxes = ops.where(keep[..., None], ops.take_along_axis(boxes, order[..., None], axis=1), -1.0)
    classes = ops.where(keep, ops.take_along_axis(classes, order, axis=1), -1)
    return boxes, classes, ops.where(keep, order, -1)


@keras.saving.register_keras_serializable(package="keras_focal")
class AnchorEncoder(keras.layers.Layer):
    """Assigns ground-truth boxes to anchors and encodes the training targets.

    ``enc(boxes, classes, image_height, image_width)`` with normalized yxyx ``boxes`` ``[M, 4]`` and int
    ``classes`` ``[M]`` (inside a ``tf.data`` map) or batched ``[B, M, 4]`` / ``[B, M]`` (in-graph), padded
    with -1. Padded rows (class < 0), non-finite and zero-area / inverted boxes are never matched. ``M``
    may be 0. Returns a dict of the keys named in ``outputs`` (all four by default; a head's own encoder asks
    for the class targets and matched indices, and its loss gathers the matched boxes from the ground truth):

    * ``class_targets`` int32 ``[..., A]``: class id (>= 0) for positives, -1 background, -2 ignored;
    * ``box_targets`` float32 ``[..., A, 4]``: ``(dy, dx, log dh, log dw) * box_weights`` of the matched box
      (see ``box_coding.encode_deltas``), 0 where not positive;
    * ``matched_boxes`` float32 ``[..., A, 4]``: the assigned ground-truth box (yxyx), 0 where not positive;
    * ``matched_indices`` int32 ``[..., A]``: the row of M of the assigned ground-truth box, -1 where not positive.

    Only the real boxes are compared with the anchors (``compact_real_boxes``): the cost grows with the number
    of objects, not with the padded M; a batch costs as much as its most crowded image.

    ``assigner="iou"`` (RetinaNet, Focal Loss paper §4): IoU >= ``positive_iou`` (0.5) positive,
    < ``negative_iou`` (0.4) background, in between ignored. With ``allow_low_quality_matches`` (as
    torchvision's ``Matcher``), every anchor whose IoU with some ground truth equals that ground truth's
    best IoU (ties included, and only if that best IoU is > 0) becomes positive, with the ground truth it
    overlaps most (its own argmax). An anchor overlapping several boxes takes the one with the highest IoU
    (the first one on ties).

    ``assigner="atss"`` (GFL, Zhang et al. 2020, as mmdetection's ``ATSSAssigner``): for each ground truth
    the ``atss_topk`` (9) anchors per level closest to its centre (L2 distance in pixels) are candidates;
    threshold = mean + std (unbiased, as ``torch.std``) of the candidates' IoUs; a candidate is positive if
    its IoU >= threshold and its centre lies strictly inside the box (by more than 0.01 pixel, as mmdet).
    An anchor positive for several boxes takes the one with the highest IoU. No ignore band: everything
    else is background.
    """

    def __init__(
        self,
        anchor_generator=None,
        assigner="iou",
        positive_iou=0.5,
        negative_iou=0.4,
        allow_low_quality_matches=True,
        box_weights=(1.0, 1.0, 1.0, 1.0),
        atss_topk=9,
        outputs=OUTPUTS,
        **kwargs,
    ):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        anchor_generator = AnchorGenerator.resolve(anchor_generator)
        if assigner not in ("iou", "atss"):
            raise ValueError(f"assigner must be 'iou' or 'atss', got {assigner!r}")
        if negative_iou > positive_iou:
            raise ValueError("negative_iou must be <= positive_iou")
        self.anchor_generator = anchor_generator
        self.assigner = assigner
        self.positive_iou = float(positive_iou)
        self.negative_iou = float(negative_iou)
        self.allow_low_quality_matches = bool(allow_low_quality_matches)
        self.box_weights = tuple(float(w) for w in box_weights)
        self.atss_topk = int(atss_topk)
        unknown = set(outputs) - set(OUTPUTS)
        if unknown or not outputs:
            raise ValueError(f"outputs must be a non-empty subset of {OUTPUTS}, got {tuple(outputs)!r}")
        self.outputs = tuple(k for k in OUTPUTS if k in outputs)

    def __call__(self, boxes, classes, image_height, image_width, **kwargs):
        # Keras only accepts tensors as positional arguments; the image size may be a python int.
        return super().__call__(
            boxes, classes, image_height=image_height, image_width=image_width, **kwargs
        )

    def call(self, boxes, classes, image_height, image_width):
        boxes = ops.cast(boxes, "float32")
        classes = ops.cast(classes, "int32")
        unbatched = len(boxes.shape) == 2
        if unbatched:
            boxes = boxes[None]
            classes = classes[None]
        anchors = self._anchors(image_height, image_width)
        # Only the real boxes are matched: padding would cost one [A] column of every pairwise op each.
        boxes, classes, source_index = compact_real_boxes(boxes, classes)
        grid = self._anchor_grid(image_height, image_width)
        on_grid = grid is not None and grid["levels"] is not None
        if self.assigner == "iou" and on_grid:
            out = self._encode_iou_grid(grid, boxes, classes, source_index)
            return {k: v[0] for k, v in out.items()} if unbatched else out
        if self.assigner == "iou":
            match, positive, ignored = self._assign_iou(anchors, boxes, classes)
        elif on_grid:
            match, positive, ignored = self._assign_atss_grid(
                grid["anchors"], grid["levels"], boxes, classes, image_height, image_width)
        else:
            match, positive, ignored = self._assign_atss(
                anchors, boxes, classes, image_height, image_width
            )
        # match indexes the compacted boxes, then the assigner's padding: source_index maps it back to M.
        source_index = ops.pad(source_index, [[0, 0], [0, ops.shape(match[1])[1] - ops.shape(source_index)[1]]],
                               constant_values=-1)
        out = self._encode(anchors, source_index, match, positive, ignored)
        if unbatched:
            out = {k: v[0] for k, v in out.items()}
        return out

    def _anchors(self, image_height, image_width):
        """The anchors ``[A, 4]``; for a static image size computed once and kept as a constant."""
        grid = self._anchor_grid(image_height, image_width)
        if grid is None:
            return self.anchor_generator(image_height, image_width)
        return ops.convert_to_tensor(grid["anchors"])

    def _anchor_grid(self, image_height, image_width):
        """For a static image size, the anchors (numpy, computed once) and, when every level's anchors form a
        grid (rows share their y extents, columns their x extents, ``k`` shapes per location), per level:
        ``y`` [fh, k, 2] (ymin, ymax), ``x`` [fw, k, 2] (xmin, xmax), ``area`` [fh, fw, k], the centres ``cy``
        [fh, k] and ``cx`` [fw, k] (as ``boxes.centers`` computes them) and ``start``, the index of the level's
        first anchor. None for a dynamic size."""
        if not (_is_static(image_height) and _is_static(image_width)):
            return None
        key = (int(image_height), int(image_width))
        cache = self.__dict__.setdefault("_grid_cache", {})
        if key in cache:
            return cache[key]
        with tf.init_scope():  # eager even while a tf.data map or tf.function is being traced
            anchors = ops.convert_to_numpy(self.anchor_generator(*key)).astype("float32")
        gen = self.anchor_generator
        k = gen.anchors_per_location
        levels, start = [], 0
        for fh, fw in gen.feature_sizes(*key):
            grid = anchors[start:start + fh * fw * k].reshape(fh, fw, k, 4)
            start += fh * fw * k
            y, x = grid[:, :1, :, 0::2], grid[:1, :, :, 1::2]
            if not (np.array_equal(np.broadcast_to(y, grid[..., 0::2].shape), grid[..., 0::2])
                    and np.array_equal(np.broadcast_to(x, grid[..., 1::2].shape), grid[..., 1::2])):
                levels = None
                break
            # the same float32 operations as pairwise_iou's anchor area
            area = np.maximum(grid[..., 2] - grid[..., 0], 0) * np.maximum(grid[..., 3] - grid[..., 1], 0)
            levels.append({"y": y[:, 0], "x": x[0], "area": area.astype("float32"), "start": start - fh * fw * k,
                           "cy": (y[:, 0, :, 0] + y[:, 0, :, 1]) * np.float32(0.5),
                           "cx": (x[0, :, :, 0] + x[0, :, :, 1]) * np.float32(0.5)})
        cache[key] = {"anchors": anchors, "levels": levels}
        return cache[key]

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _pad_dummy(boxes, classes):
        """Appends one invalid ground truth so that argmax/max over M are defined when M == 0."""
        b = ops.shape(boxes)[0]
        dummy_box = ops.zeros((b, 1, 4), "float32") - 1.0
        dummy_cls = ops.zeros((b, 1), "int32") - 1
        return ops.concatenate([boxes, dummy_box], axis=1), ops.concatenate([classes, dummy_cls], axis=1)

    def _assign_iou(self, anchors, boxes, classes):
        boxes, classes = self._pad_dummy(boxes, classes)
        valid = valid_boxes_mask(boxes, classes)  # [B, M]
        iou = pairwise_iou(anchors, boxes)  # [B, A, M]
        iou = ops.where(valid[:, None, :], iou, -1.0)
        max_iou = ops.max(iou, axis=2)  # [B, A]
        match = ops.cast(ops.argmax(iou, axis=2), "int32")
        positive = max_iou >= self.positive_iou
        ignored = ops.logical_and(max_iou >= self.negative_iou, ops.logical_not(positive))
        if self.allow_low_quality_matches:
            gt_best = ops.max(iou, axis=1)  # [B, M]
            is_best = ops.logical_and(
                ops.equal(iou, gt_best[:, None, :]),
                ops.logical_and(gt_best[:, None, :] > 0.0, valid[:, None, :]),
            )
            low_quality = ops.any(is_best, axis=2)  # [B, A]
            positive = ops.logical_or(positive, low_quality)
            ignored = ops.logical_and(ignored, ops.logical_not(low_quality))
        return (match, boxes, classes), positive, ignored

    def _encode_iou_grid(self, grid, boxes, classes, source_index):
        """``_assign_iou`` and ``_encode`` for anchors on a grid, with the same IoU values, decisions and targets.

        An anchor's vertical overlap with a box depends only on its row and shape, the horizontal one only on
        its column and shape: ``inter[m, i, j, s] = ih[m, i, s] * iw[m, j, s]``. The min / max work is then
        ``(fh + fw) * k * M`` instead of ``fh * fw * k * M``; the [A, M] work left is one product, the union,
        the division and the reductions. Non-real boxes are moved far outside the image (IoU exactly 0
        instead of -1): they come after the real ones, so argmax ties still pick the same real box, a 0 never
        reaches ``negative_iou`` > 0 nor the low-quality rule (best IoU > 0), and images without a real box
        are background everywhere.
        """
        boxes, classes = self._pad_dummy(boxes, classes)
        # The box count is rounded up to a multiple of 8 with more non-real rows, so the compiled assignment
        # below is built for a handful of shapes only; those rows come last and never win a tie.
        pad = (-tf.shape(boxes)[1]) % 8
        boxes = tf.pad(boxes, [[0, 0], [0, pad], [0, 0]], constant_values=-1.0)
        classes = tf.pad(classes, [[0, 0], [0, pad]], constant_values=-1)
        source_index = tf.pad(source_index, [[0, 0], [0, tf.shape(boxes)[1] - tf.shape(source_index)[1]]],
                              constant_values=-1)
        return self._grid_function(grid)(boxes, classes, valid_boxes_mask(boxes, classes), source_index)

    def _grid_function(self, grid):
        """``(boxes [B, M, 4], classes [B, M], valid [B, M], source_index [B, M]) -> the outputs``, over the
        anchor grid, compiled with XLA: the ``[B, M, A]`` IoU values are reduced where they are made instead of
        in a pass over memory per step, and the targets come from the same function. The box axis comes first,
        so the reductions over boxes are element-wise maxima over whole slices of anchors, which vectorise. One
        compiled function per image size, cached; XLA compiles it once per box count (a multiple of 8)."""
        cache = self.__dict__.setdefault("_grid_functions", {})
        key = id(grid)
        if key in cache:
            return cache[key][1]
        levels, anchors = grid["levels"], grid["anchors"]

        def overlap(lo_a, hi_a, lo_b, hi_b):  # [n, k] anchor extents x [B, M] box extents -> [B, M, n, k]
            lo_b, hi_b = lo_b[:, :, None, None], hi_b[:, :, None, None]
            return tf.maximum(tf.minimum(hi_a[None, None], hi_b) - tf.maximum(lo_a[None, None], lo_b), 0.0)

        def assign(boxes, classes, valid, source_index):
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
            positive = tf.logical_and(max_iou >= self.positive_iou, has_box)
            ignored = tf.logical_and(tf.logical_and(max_iou >= self.negative_iou, tf.logical_not(positive)), has_box)
            if self.allow_low_quality_matches:
                # an IoU never equals +inf: boxes whose best IoU is 0 (or that are not real) keep no anchor
                target = tf.where(gt_best > 0.0, gt_best, float("inf"))[:, :, None, None, None]
                low_quality = tf.concat(
                    [tf.reshape(tf.reduce_any(tf.equal(iou, target), axis=1), (batch, -1)) for iou in ious], 1)
                positive = tf.logical_or(positive, low_quality)
                ignored = tf.logical_and(ignored, tf.logical_not(low_quality))
            return self._encode(anchors, source_index, (match, boxes, classes), positive, ignored, dense=True)

        function = tf.function(assign, jit_compile=True, reduce_retracing=True)
        cache[key] = (grid, function)  # grid kept alive so that its id stays this entry's
        return function

    def _assign_atss(self, anchors, boxes, classes, image_height, image_width):
        """ATSS on any anchors, as dense ``[B, A, M]`` arrays (the path of a dynamic image size)."""
        boxes, classes = self._pad_dummy(boxes, classes)
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

        gen = self.anchor_generator
        sizes = gen.level_sizes(image_height, image_width)
        per_level = gen.split_levels(dist_t, image_height, image_width, axis=2)
        b = ops.shape(boxes)[0]
        m = ops.shape(boxes)[1]
        masks, chosen, start = [], [], 0
        for d_l, n_l in zip(per_level, sizes):
            k = ops.minimum(ops.cast(n_l, "int32"), self.atss_topk) if not isinstance(n_l, int) else min(
                n_l, self.atss_topk
            )
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
        thr = _atss_threshold(chosen_iou)  # [B, M]

        inside = _centre_inside(a_ctr[None, :, None, :], boxes[:, None, :, :], h_img, w_img)  # [B, A, M]
        pos_pair = ops.logical_and(ops.logical_and(candidate, inside), iou >= thr[:, None, :])
        scored = ops.where(pos_pair, iou, -1.0)
        match = ops.cast(ops.argmax(scored, axis=2), "int32")
        positive = ops.any(pos_pair, axis=2)
        ignored = ops.zeros_like(positive)
        return (match, boxes, classes), positive, ignored

    def _assign_atss_grid(self, anchors, levels, boxes, classes, image_height, image_width):
        """``_assign_atss`` for anchors on a grid, with the same candidates, IoU values and decisions, computed
        only for the candidates: ``[B, M, C]`` arrays, C = levels x ``atss_topk`` (45), instead of ``[B, A, M]``.

        The squared centre distance of the anchor in row i and column j is ``dy[i]**2 + dx[j]**2``, so one of the
        ``t`` nearest anchors of a level is in one of the ``t + 1`` rows nearest in y and one of the ``t + 1``
        columns nearest in x (each choice the first on ties, as top_k): ``t`` rows already hold ``t`` anchors at
        least as near, and the extra row covers a box centred between two rows, whose distances can round to a
        tie. The ``t`` nearest are then chosen among those ``(t + 1)**2`` per anchor shape, in anchor order.
        """
        boxes, classes = self._pad_dummy(boxes, classes)
        valid = valid_boxes_mask(boxes, classes)  # [B, M]
        h_img = ops.cast(image_height, "float32")
        w_img = ops.cast(image_width, "float32")
        g_ctr = centers(boxes)  # [B, M, 2]
        chosen = ops.concatenate(
            [self._atss_level_candidates(level, g_ctr, h_img, w_img) for level in levels], axis=2)  # [B, M, C]
        cand = tf.gather(anchors, chosen)  # [B, M, C, 4]
        gt = boxes[:, :, None, :]
        iou = aligned_iou(cand, gt)  # [B, M, C], the values of pairwise_iou(anchors, boxes)
        thr = _atss_threshold(iou)
        inside = _centre_inside(centers(cand), gt, h_img, w_img)  # [B, M, C]
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
        positive = first < m
        return (tf.where(positive, first, 0), boxes, classes), positive, tf.zeros_like(positive)

    def _atss_level_candidates(self, level, g_ctr, h_img, w_img):
        """int32 ``[B, M, t]``: the indices, ascending, of the ``t = min(atss_topk, level size)`` anchors of one
        grid level nearest to each box centre (``g_ctr`` ``[B, M, 2]``), the first anchor on ties."""
        cy, cx = level["cy"], level["cx"]  # [fh, k], [fw, k]
        fh, k = cy.shape
        fw = cx.shape[0]
        t = min(self.atss_topk, fh * fw * k)

        def nearest(centres, g, size, count):  # -> squared distances [B, M, k, count], their lines ascending
            d = (centres[None, None] - g[:, :, None, None]) * size  # [B, M, lines, k], as _assign_atss
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

    def _encode(self, anchors, source_index, match, positive, ignored, dense=False):
        """The requested ``outputs`` from the assignment: ``match`` is ``(index [B, A] into the boxes the
        assigner saw, those boxes [B, K', 4], their classes [B, K'])``, meaningful where ``positive``;
        ``source_index`` [B, K'] maps them back to the rows of M. ``dense``: box targets computed for every
        anchor and masked (inside XLA, where shapes are static) instead of only at the positives."""
        match_idx, boxes_p, classes_p = match
        match_idx = tf.where(positive, match_idx, 0)
        out = {}
        if "class_targets" in self.outputs:
            matched_cls = _gather_rows(classes_p, match_idx)  # [B, A]
            out["class_targets"] = tf.where(positive, matched_cls, tf.where(ignored, IGNORED, BACKGROUND))
        if "matched_indices" in self.outputs:
            out["matched_indices"] = tf.where(positive, _gather_rows(source_index, match_idx), -1)
        if dense and ("box_targets" in self.outputs or "matched_boxes" in self.outputs):
            matched = _gather_rows(boxes_p, match_idx)  # [B, A, 4]
            keep = positive[..., None]
            if "box_targets" in self.outputs:
                deltas = box_coding.encode_deltas(anchors, matched, self.box_weights)
                out["box_targets"] = tf.where(keep, deltas, 0.0)
            if "matched_boxes" in self.outputs:
                out["matched_boxes"] = tf.where(keep, matched, 0.0)
        elif "box_targets" in self.outputs or "matched_boxes" in self.outputs:
            # Box targets exist only for the positive anchors (a few hundred of tens of thousands): they are
            # encoded there and scattered into zeros.
            where = tf.where(positive)  # [P, 2] (image, anchor)
            rows = tf.cast(tf.gather_nd(match_idx, where), tf.int64)
            pos_boxes = tf.gather_nd(boxes_p, tf.stack([where[:, 0], rows], 1))
            shape = tf.concat([tf.shape(positive, out_type=tf.int64), [4]], axis=0)
            if "box_targets" in self.outputs:
                deltas = box_coding.encode_deltas(tf.gather(anchors, where[:, 1]), pos_boxes, self.box_weights)
                out["box_targets"] = tf.scatter_nd(where, deltas, shape)
            if "matched_boxes" in self.outputs:
                out["matched_boxes"] = tf.scatter_nd(where, pos_boxes, shape)
        return out

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "anchor_generator": keras.saving.serialize_keras_object(self.anchor_generator),
                "assigner": self.assigner,
                "positive_iou": self.positive_iou,
                "negative_iou": self.negative_iou,
                "allow_low_quality_matches": self.allow_low_quality_matches,
                "box_weights": list(self.box_weights),
                "atss_topk": self.atss_topk,
                "outputs": list(self.outputs),
            }
        )
        return config


def _atss_threshold(iou):
    """ATSS's IoU threshold per box, mean + std (unbiased) of its candidates' IoUs: ``[B, M, C] -> [B, M]``. The
    candidates come in anchor order, so that both assignment paths sum in the same order."""
    n = ops.cast(ops.shape(iou)[-1], "float32")
    mean = ops.sum(iou, axis=-1) / ops.maximum(n, 1.0)
    var = ops.sum(ops.square(iou - mean[..., None]), axis=-1) / ops.maximum(n - 1.0, 1.0)
    return mean + ops.sqrt(var)


def _centre_inside(centres, boxes, h_img, w_img):
    """ATSS's inside test: the anchor centre ``(cy, cx)`` lies inside the box by more than 0.01 pixel on every
    side (as mmdetection). ``centres [..., 2]`` and ``boxes [..., 4]`` broadcast against each other."""
    eps_y = 0.01 / h_img
    eps_x = 0.01 / w_img
    cy, cx = centres[..., 0], centres[..., 1]
    return ops.logical_and(
        ops.logical_and(cy - boxes[..., 0] > eps_y, boxes[..., 2] - cy > eps_y),
        ops.logical_and(cx - boxes[..., 1] > eps_x, boxes[..., 3] - cx > eps_x),
    )


def _gather_rows(params, index):
    """``params[b, index[b, a]]``: ``[B, K, ...] x int [B, A] -> [B, A, ...]``, as one gather from the params
    flattened to ``[B * K, ...]`` (much faster on CPU than a gather with ``batch_dims``)."""
    shape = tf.shape(params)
    offset = tf.range(shape[0]) * shape[1]
    flat = tf.reshape(params, tf.concat([[-1], shape[2:]], 0))
    return tf.gather(flat, index + offset[:, None])
