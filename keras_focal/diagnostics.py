"""Anchor-matching diagnostics: "do my anchors cover my objects?"

Low or zero mAP from anchors that never match the objects is a classic RetinaNet failure (small objects
below the P3 anchors, extreme aspect ratios, images resized so boxes shrink). These tools tell you, per FPN
level, what fraction of the ground-truth boxes got at least one positive anchor, and how many positives an
image gets::

    enc = AnchorEncoder(AnchorGenerator())
    t = enc(boxes, classes, 512, 512)                       # batched [B, M, 4] / [B, M]
    stats = matching_statistics(t["class_targets"], t["matched_indices"], boxes, classes,
                                enc.anchor_generator, 512, 512)
    print(format_matching_statistics(stats, enc.anchor_generator))

or, on a dataset, ``anchor_coverage(dataset, enc, image_size=(512, 512))``; during training the metrics
``MatchedGroundTruthFraction`` / ``PositiveAnchorsPerImage`` or the ``MatchingStatisticsCallback``.

With the low-quality matches of the IoU assigner every valid box gets at least one positive, so a matched
fraction below 1 there means boxes lost to degenerate coordinates; the per-level fractions and the
``max_iou`` histogram are what show the coverage (a box whose best IoU is 0.2 trains from one poor anchor).
"""

import keras
import numpy as np
from keras import ops

from keras_focal.boxes import IGNORED, pairwise_iou, valid_boxes_mask
from keras_focal.layers.anchor_encoder import AnchorEncoder


def _batched(class_targets, matched_indices, gt_boxes, gt_classes):
    """Adds a batch axis to the targets and ground truth of one unbatched image (``class_targets`` of rank 1)."""
    class_targets = ops.convert_to_tensor(class_targets)
    if len(class_targets.shape) != 1:
        return class_targets, matched_indices, gt_boxes, gt_classes
    return (class_targets[None], ops.convert_to_tensor(matched_indices)[None],
            ops.convert_to_tensor(gt_boxes)[None], ops.convert_to_tensor(gt_classes)[None])


def ground_truth_match_mask(matched_indices, gt_boxes, gt_classes):
    """bool ``[B, A, M]``: anchor ``a`` is positive and assigned to ground-truth box ``m``.

    ``matched_indices`` int ``[B, A]`` is the encoder's assignment (the index into ``M``, -1 where not positive).
    """
    matched_indices = ops.cast(matched_indices, "int32")
    m = ops.shape(gt_classes)[-1]
    assigned = ops.equal(matched_indices[:, :, None], ops.arange(m, dtype="int32")[None, None, :])  # [B, A, M]
    return ops.logical_and(assigned, valid_boxes_mask(gt_boxes, gt_classes)[:, None, :])


def matching_statistics(
    class_targets,
    matched_indices,
    gt_boxes,
    gt_classes,
    anchor_generator,
    image_height,
    image_width,
):
    """Per-level and overall anchor-matching statistics of a batch of encoded targets.

    Args:
        class_targets: int ``[B, A]`` (or ``[A]``) from ``AnchorEncoder`` (>= 0 positive).
        matched_indices: int ``[B, A]`` from ``AnchorEncoder``: the assigned box's index, -1 if not positive.
        gt_boxes, gt_classes: the ground truth given to the encoder, ``[B, M, 4]`` / ``[B, M]`` padded with -1.
        anchor_generator: the encoder's ``AnchorGenerator``.
        image_height, image_width: the image size the targets were encoded for.

    Returns:
        dict of tensors:

        * ``matched_fraction_per_level`` float32 ``[L]``: fraction of the valid boxes with at least one
          positive anchor on level ``min_level + i`` (levels in ``anchor_generator.levels``);
        * ``matched_fraction`` float32 ``[]``: fraction of valid boxes with at least one positive anywhere
          (1.0 when there are no boxes);
        * ``positives_per_image`` float32 ``[B]`` and ``mean_positives_per_image`` ``[]``;
        * ``ignored_per_image`` float32 ``[B]``;
        * ``num_ground_truth`` int32 ``[]``: valid boxes in the batch;
        * ``gt_matched`` bool ``[B, M]`` and ``gt_matched_per_level`` bool ``[B, M, L]``: which boxes were
          matched (find the objects your anchors miss).
    """
    class_targets, matched_indices, gt_boxes, gt_classes = _batched(
        class_targets, matched_indices, gt_boxes, gt_classes)
    match = ground_truth_match_mask(matched_indices, gt_boxes, gt_classes)  # [B, A, M]
    per_level = anchor_generator.split_levels(match, image_height, image_width, axis=1)
    per_level = ops.stack([ops.any(m, axis=1) for m in per_level], axis=-1)  # [B, M, L]
    matched = ops.any(per_level, axis=-1)  # [B, M]
    valid = valid_boxes_mask(gt_boxes, gt_classes)
    valid_f = ops.cast(valid, "float32")
    n_valid = ops.sum(valid_f)
    denom = ops.maximum(n_valid, 1.0)
    frac_level = ops.sum(ops.cast(per_level, "float32") * valid_f[..., None], axis=(0, 1)) / denom
    frac = ops.where(n_valid > 0, ops.sum(ops.cast(matched, "float32") * valid_f) / denom, 1.0)
    ct = ops.cast(class_targets, "int32")
    positives = ops.sum(ops.cast(ct >= 0, "float32"), axis=1)
    ignored = ops.sum(ops.cast(ct == IGNORED, "float32"), axis=1)
    return {
        "matched_fraction_per_level": frac_level,
        "matched_fraction": frac,
        "positives_per_image": positives,
        "mean_positives_per_image": ops.mean(positives),
        "ignored_per_image": ignored,
        "num_ground_truth": ops.cast(n_valid, "int32"),
        "gt_matched": matched & valid,
        "gt_matched_per_level": per_level & valid[..., None],
    }


def best_anchor_iou(gt_boxes, gt_classes, anchor_generator, image_height, image_width):
    """float32 ``[B, M]``: each box's best IoU with any anchor (-1 for padding). Below ~0.5 the box
    trains only through the low-quality match; near 0 your anchors do not fit it."""
    gt_boxes = ops.convert_to_tensor(gt_boxes)
    gt_classes = ops.convert_to_tensor(gt_classes)
    unbatched = len(gt_classes.shape) == 1
    if unbatched:
        gt_boxes, gt_classes = gt_boxes[None], gt_classes[None]
    anchors = anchor_generator(image_height, image_width)
    iou = ops.max(pairwise_iou(anchors, gt_boxes), axis=1)  # max over anchors: [B, M]
    out = ops.where(valid_boxes_mask(gt_boxes, gt_classes), iou, -1.0)
    return out[0] if unbatched else out


def format_matching_statistics(stats, anchor_generator):
    """A short human-readable report of :func:`matching_statistics`."""
    lines = [
        f"ground-truth boxes: {int(stats['num_ground_truth'])}, "
        f"matched: {100 * float(stats['matched_fraction']):.1f}%, "
        f"positives per image: {float(stats['mean_positives_per_image']):.1f}"
    ]
    for level, f in zip(anchor_generator.levels, np.asarray(stats["matched_fraction_per_level"])):
        lines.append(f"  P{level} (stride {2 ** level}): {100 * float(f):5.1f}% of boxes have a positive anchor")
    return "\n".join(lines)


def anchor_coverage(dataset, encoder, image_size, max_batches=None):
    """Runs ``encoder`` over a dataset of ``(images, {"boxes", "classes"})`` or ``{"boxes", "classes"}``
    batches and returns the aggregated statistics (numpy): per-level and overall matched fraction,
    positives per image, and the best-anchor IoU of every box (for a histogram)."""
    h, w = image_size
    gen = encoder.anchor_generator
    n_gt = matched = 0.0
    per_level = np.zeros(gen.num_levels)
    positives = []
    best_ious = []
    for i, batch in enumerate(dataset):
        if max_batches is not None and i >= max_batches:
            break
        y = batch[1] if isinstance(batch, (tuple, list)) else batch
        boxes, classes = y["boxes"], y["classes"]
        t = encoder(boxes, classes, h, w)
        s = matching_statistics(t["class_targets"], t["matched_indices"], boxes, classes, gen, h, w)
        n = float(s["num_ground_truth"])
        n_gt += n
        matched += float(s["matched_fraction"]) * n
        per_level += np.asarray(s["matched_fraction_per_level"]) * n
        positives.extend(np.atleast_1d(np.asarray(s["positives_per_image"])).tolist())
        ious = np.asarray(best_anchor_iou(boxes, classes, gen, h, w)).ravel()
        best_ious.extend(ious[ious >= 0].tolist())
    return {
        "num_ground_truth": int(n_gt),
        "matched_fraction": matched / n_gt if n_gt else 1.0,
        "matched_fraction_per_level": per_level / max(n_gt, 1.0),
        "positives_per_image": np.asarray(positives),
        "mean_positives_per_image": float(np.mean(positives)) if positives else 0.0,
        "best_anchor_iou": np.asarray(best_ious),
    }


class _EncodingMetric(keras.metrics.Metric):
    """Base: ``update_state(y_true, y_pred=None, sample_weight=None)`` where ``y_true`` is either the raw
    ground truth ``{"boxes", "classes"}`` (encoded here with ``encoder`` at ``image_size``) or already
    encoded targets ``{"class_targets", "matched_indices", "boxes", "classes"}``. ``y_pred`` is unused."""

    def __init__(self, encoder=None, image_size=None, name=None, **kwargs):
        super().__init__(name=name, **kwargs)
        if isinstance(encoder, dict):
            encoder = keras.saving.deserialize_keras_object(encoder)
        self.encoder = encoder if encoder is not None else AnchorEncoder()
        if image_size is None:
            raise ValueError(f"{type(self).__name__} needs image_size=(H, W), the size the targets are for")
        self.image_size = tuple(int(s) for s in image_size)

    def _targets(self, y_true):
        if not isinstance(y_true, dict):
            raise ValueError(f"{type(self).__name__} expects y_true as a dict with 'boxes' and 'classes'")
        if "class_targets" in y_true:
            return y_true
        h, w = self.image_size
        t = dict(self.encoder(y_true["boxes"], y_true["classes"], h, w))
        t.update(boxes=y_true["boxes"], classes=y_true["classes"])
        return t

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "encoder": keras.saving.serialize_keras_object(self.encoder),
                "image_size": list(self.image_size),
            }
        )
        return config


@keras.saving.register_keras_serializable(package="keras_focal")
class PositiveAnchorsPerImage(_EncodingMetric):
    """Mean number of positive anchors per image (RetinaNet on COCO: typically tens to a few hundred)."""

    def __init__(self, encoder=None, image_size=None, name="positive_anchors_per_image", **kwargs):
        super().__init__(encoder=encoder, image_size=image_size, name=name, **kwargs)
        self.total = self.add_variable(shape=(), initializer="zeros", name="total")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")

    def update_state(self, y_true, y_pred=None, sample_weight=None):
        t = self._targets(y_true)
        ct = ops.convert_to_tensor(t["class_targets"])
        if len(ct.shape) == 1:
            ct = ct[None]
        pos = ops.sum(ops.cast(ops.cast(ct, "int32") >= 0, "float32"), axis=1)
        self.total.assign_add(ops.sum(pos))
        self.count.assign_add(ops.cast(ops.shape(ct)[0], "float32"))

    def result(self):
        return self.total / ops.maximum(self.count, 1.0)


@keras.saving.register_keras_serializable(package="keras_focal")
class MatchedGroundTruthFraction(_EncodingMetric):
    """Fraction of valid ground-truth boxes with at least one positive anchor (on ``level`` if given)."""

    def __init__(self, encoder=None, image_size=None, level=None, name=None, **kwargs):
        name = name or ("matched_gt_fraction" if level is None else f"matched_gt_fraction_p{level}")
        super().__init__(encoder=encoder, image_size=image_size, name=name, **kwargs)
        self.level = None if level is None else int(level)
        self.matched = self.add_variable(shape=(), initializer="zeros", name="matched")
        self.total = self.add_variable(shape=(), initializer="zeros", name="total")

    def update_state(self, y_true, y_pred=None, sample_weight=None):
        t = self._targets(y_true)
        h, w = self.image_size
        gen = self.encoder.anchor_generator
        s = matching_statistics(t["class_targets"], t["matched_indices"], t["boxes"], t["classes"], gen, h, w)
        if self.level is None:
            matched = s["gt_matched"]
        else:
            matched = s["gt_matched_per_level"][..., self.level - gen.min_level]
        self.matched.assign_add(ops.sum(ops.cast(matched, "float32")))
        self.total.assign_add(ops.cast(s["num_ground_truth"], "float32"))

    def result(self):
        return ops.where(self.total > 0, self.matched / ops.maximum(self.total, 1.0), 1.0)

    def get_config(self):
        config = super().get_config()
        config["level"] = self.level
        return config


class MatchingStatisticsCallback(keras.callbacks.Callback):
    """Logs anchor coverage on ``dataset`` (a few batches) at the start of training and every
    ``every_n_epochs``: ``matched_gt_fraction``, ``matched_gt_fraction_p{l}`` and
    ``positive_anchors_per_image`` are added to the epoch logs (so History / TensorBoard see them)."""

    def __init__(self, dataset, encoder, image_size, max_batches=4, every_n_epochs=1, verbose=1):
        super().__init__()
        self.dataset = dataset
        self.encoder = encoder
        self.image_size = tuple(image_size)
        self.max_batches = max_batches
        self.every_n_epochs = every_n_epochs
        self.verbose = verbose
        self.last = None

    def _compute(self):
        self.last = anchor_coverage(self.dataset, self.encoder, self.image_size, self.max_batches)
        return self.last

    def on_train_begin(self, logs=None):
        s = self._compute()
        if self.verbose:
            gen = self.encoder.anchor_generator
            per = ", ".join(
                f"P{l} {100 * f:.0f}%" for l, f in zip(gen.levels, s["matched_fraction_per_level"])
            )
            print(
                f"[anchors] {s['num_ground_truth']} boxes, matched {100 * s['matched_fraction']:.1f}% "
                f"({per}), {s['mean_positives_per_image']:.1f} positives/image"
            )

    def on_epoch_end(self, epoch, logs=None):
        if logs is None or (epoch + 1) % self.every_n_epochs:
            return
        s = self.last if self.last is not None else self._compute()
        logs["matched_gt_fraction"] = float(s["matched_fraction"])
        logs["positive_anchors_per_image"] = float(s["mean_positives_per_image"])
        for level, f in zip(self.encoder.anchor_generator.levels, s["matched_fraction_per_level"]):
            logs[f"matched_gt_fraction_p{level}"] = float(f)
