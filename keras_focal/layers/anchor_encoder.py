"""Anchor assignment (IoU matcher for RetinaNet, ATSS for GFL) and training-target encoding."""

import keras
from keras import ops

from keras_focal.boxes import BACKGROUND, IGNORED, centers, pairwise_iou, valid_boxes_mask
from keras_focal.layers import box_coding
from keras_focal.layers.anchor_generator import AnchorGenerator

@keras.saving.register_keras_serializable(package="keras_focal")
class AnchorEncoder(keras.layers.Layer):
    """Assigns ground-truth boxes to anchors and encodes the training targets.

    ``enc(boxes, classes, image_height, image_width)`` with normalized yxyx ``boxes`` ``[M, 4]`` and int
    ``classes`` ``[M]`` (inside a ``tf.data`` map) or batched ``[B, M, 4]`` / ``[B, M]`` (in-graph), padded
    with -1. Padded rows (class < 0), non-finite and zero-area / inverted boxes are never matched. ``M``
    may be 0. Returns a dict:

    * ``class_targets`` int32 ``[..., A]``: class id (>= 0) for positives, -1 background, -2 ignored;
    * ``box_targets`` float32 ``[..., A, 4]``: ``(dy, dx, log dh, log dw) * box_weights`` of the matched box
      (see ``box_coding.encode_deltas``), 0 where not positive;
    * ``matched_boxes`` float32 ``[..., A, 4]``: the assigned ground-truth box (yxyx), 0 where not positive;
    * ``matched_indices`` int32 ``[..., A]``: the index into ``M`` of the assigned ground-truth box, -1 where the
      anchor is not positive.

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
        anchors = self.anchor_generator(image_height, image_width)
        if self.assigner == "iou":
            match, positive, ignored = self._assign_iou(anchors, boxes, classes)
        else:
            match, positive, ignored = self._assign_atss(
                anchors, boxes, classes, image_height, image_width
            )
        out = self._encode(anchors, boxes, classes, match, positive, ignored)
        if unbatched:
            out = {k: v[0] for k, v in out.items()}
        return out

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

    def _assign_atss(self, anchors, boxes, classes, image_height, image_width):
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
        masks = []
        for d_l, n_l in zip(per_level, sizes):
            k = ops.minimum(ops.cast(n_l, "int32"), self.atss_topk) if not isinstance(n_l, int) else min(
                n_l, self.atss_topk
            )
            _, idx = ops.top_k(-d_l, k=k, sorted=False)  # [B, M, k]
            k_dyn = ops.shape(idx)[2]
            bi = ops.broadcast_to(ops.arange(b, dtype="int32")[:, None, None], ops.shape(idx))
            mi = ops.broadcast_to(ops.arange(m, dtype="int32")[None, :, None], ops.shape(idx))
            indices = ops.stack([bi, mi, ops.cast(idx, "int32")], axis=-1)
            indices = ops.reshape(indices, (-1, 3))
            updates = ops.ones((b * m * k_dyn,), "float32")
            masks.append(ops.scatter(indices, updates, (b, m, n_l)))
        candidate = ops.transpose(ops.concatenate(masks, axis=2), (0, 2, 1)) > 0.5  # [B, A, M]
        candidate = ops.logical_and(candidate, valid[:, None, :])

        cand_f = ops.cast(candidate, "float32")
        count = ops.sum(cand_f, axis=1)  # [B, M]
        mean = ops.sum(iou * cand_f, axis=1) / ops.maximum(count, 1.0)
        var = ops.sum(ops.square(iou - mean[:, None, :]) * cand_f, axis=1) / ops.maximum(count - 1.0, 1.0)
        thr = mean + ops.sqrt(var)

        eps_y = 0.01 / h_img
        eps_x = 0.01 / w_img
        cy = a_ctr[None, :, None, 0]
        cx = a_ctr[None, :, None, 1]
        inside = ops.logical_and(
            ops.logical_and(cy - boxes[:, None, :, 0] > eps_y, boxes[:, None, :, 2] - cy > eps_y),
            ops.logical_and(cx - boxes[:, None, :, 1] > eps_x, boxes[:, None, :, 3] - cx > eps_x),
        )
        pos_pair = ops.logical_and(ops.logical_and(candidate, inside), iou >= thr[:, None, :])
        scored = ops.where(pos_pair, iou, -1.0)
        match = ops.cast(ops.argmax(scored, axis=2), "int32")
        positive = ops.any(pos_pair, axis=2)
        ignored = ops.zeros_like(positive)
        return (match, boxes, classes), positive, ignored

    def _encode(self, anchors, boxes, classes, match, positive, ignored):
        match_idx, boxes_p, classes_p = match
        matched_boxes = ops.take_along_axis(boxes_p, ops.expand_dims(match_idx, -1), axis=1)  # [B, A, 4]
        matched_cls = ops.take_along_axis(classes_p, match_idx, axis=1)  # [B, A]
        class_targets = ops.where(
            positive, matched_cls, ops.where(ignored, IGNORED, BACKGROUND)
        )
        class_targets = ops.cast(class_targets, "int32")
        pos4 = ops.expand_dims(positive, -1)
        safe_boxes = ops.where(pos4, matched_boxes, anchors[None])
        deltas = box_coding.encode_deltas(anchors, safe_boxes, self.box_weights)
        box_targets = ops.where(pos4, deltas, 0.0)
        matched_boxes = ops.where(pos4, matched_boxes, 0.0)
        return {
            "class_targets": class_targets,
            "box_targets": box_targets,
            "matched_boxes": matched_boxes,
            "matched_indices": ops.where(positive, match_idx, -1),
        }

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
            }
        )
        return config
