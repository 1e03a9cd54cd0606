"""A check of a dataset against a detector before training, in the spirit of ultralytics' autoanchor: how many boxes
are too small at the training size, and how many get a positive anchor from the chosen head (its best-possible
recall: a box without a positive anchor is never learned).

    boxes = read_boxes("train/instances.json")                       # per-image normalized yxyx boxes, no pixels read
    report = check_boxes(boxes, head="gfl", image_size=512)
    print("\\n".join(report.lines()))                                 # shares, per-level coverage, advice
    report.suggested_image_size                                      # None, or the size that fixes "too small"

Sizes are measured as the model sees them: images are stretched to `image_size` x `image_size`, so a box of
normalized height h and width w is h * size by w * size pixels.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

# A box whose shorter side is under this many pixels at the training size hardly reaches a positive anchor: the
# smallest anchors are 32 px (RetinaNet, 4 x stride 8; Sec. 4 "Anchors") and 64 px (GFL / ATSS, 8 x stride 8).
SMALL_BOX_PX = 8.0
# More than this share of boxes under SMALL_BOX_PX is reported as a problem, with the image size that brings the
# share back to it.
MAX_SMALL_SHARE = 0.05
# Sizes are suggested in multiples of the coarsest stride the FPN uses (P5 = 32; P6 / P7 pad).
SIZE_MULTIPLE = 32


@dataclasses.dataclass
class BoxSet:
    """Ground truth of a split, per image (crowd regions left out): what the check needs."""

    class_names: tuple
    image_sizes: np.ndarray          # [N, 2] (height, width) in pixels, 0 where unknown
    boxes: list                      # N arrays [M_i, 4] normalized yxyx
    classes: list                    # N int arrays [M_i]
    crowd_boxes: int = 0


def read_boxes(source, split="train", *, image_dir=None, data_dir=None, class_names=None, max_images=None):
    """The BoxSet of a source: from the annotation files alone for a COCO / VOC / YOLO source (YOLO image sizes
    from the image headers), by reading the examples for a tfds name (the first `max_images`)."""
    import keras_focal.data as kd

    if kd.is_source_path(source):
        ann = kd.sources.read(source, split, image_dir=image_dir, class_names=class_names)
        if max_images:
            ann = ann.subset(range(min(max_images, len(ann))))
        sizes = [s if s[0] > 0 else kd.sources.image_size_from_header(p)
                 for s, p in zip(ann.image_sizes, ann.image_paths)]
        raw = list(zip(ann.boxes, ann.classes, ann.is_crowd))
        names = ann.class_names
    else:
        ds = kd.load(source, split, data_dir=data_dir, keep_crowd=True)
        if max_images:
            ds = ds.take(max_images)
        sizes, raw = [], []
        for image, t in ds:
            sizes.append(image.shape[:2])
            c = t["classes"].numpy()
            raw.append((t["boxes"].numpy(), c, t["is_crowd"].numpy() if "is_crowd" in t else np.zeros(len(c), bool)))
        names = kd.dataset_info(source).class_names
    boxes, classes, crowd = [], [], 0
    for b, c, k in raw:
        k = np.asarray(k, bool).reshape(-1)
        boxes.append(np.asarray(b, np.float64).reshape(-1, 4)[~k])
        classes.append(np.asarray(c, np.int64).reshape(-1)[~k])
        crowd += int(k.sum())
    return BoxSet(tuple(names), np.asarray(sizes, np.int64).reshape(-1, 2), boxes, classes, crowd)


def short_sides(boxes):
    """Normalized shorter side min(h, w) of every box, [M]."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    return np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])


def suggested_image_size(sides, image_size, min_px=SMALL_BOX_PX, max_share=MAX_SMALL_SHARE):
    """The smallest multiple of SIZE_MULTIPLE, at least `image_size`, at which at most `max_share` of the boxes of
    normalized shorter sides `sides` are under `min_px` pixels; None when `image_size` already does it.

    A box is small at size s when side * s < min_px. With q the `max_share` quantile of the sides, every side above
    q satisfies side * s >= min_px once s >= min_px / q, so the share of small boxes is then <= max_share.
    """
    sides = np.asarray(sides, np.float64).reshape(-1)
    if not sides.size or np.mean(sides * image_size < min_px) <= max_share:
        return None
    q = float(np.quantile(sides, max_share, method="higher"))
    if q <= 0:
        return None
    size = max(int(image_size), int(math.ceil(min_px / q / SIZE_MULTIPLE)) * SIZE_MULTIPLE)
    while np.mean(sides * size < min_px) > max_share:  # the quantile's rounding; at most a step or two
        size += SIZE_MULTIPLE
    return size


def anchor_coverage(box_set, head, image_size, max_images=500, batch_size=16):
    """`keras_focal.diagnostics.anchor_coverage` of a head object on the first `max_images` images, padded into
    batches at `image_size` x `image_size`."""
    import tensorflow as tf

    from keras_focal.data.pipeline import pad_targets
    from keras_focal.diagnostics import anchor_coverage as coverage

    encoder = head.anchor_encoder()
    if encoder is None:  # the head assigns anchors from its own predictions: no coverage before training
        return None
    boxes, classes = box_set.boxes[:max_images], box_set.classes[:max_images]
    max_boxes = max([len(c) for c in classes] + [1])
    padded = [pad_targets(b.astype(np.float32), c.astype(np.int32), max_boxes) for b, c in zip(boxes, classes)]
    if not padded:
        return coverage([], encoder, (image_size, image_size))
    batches = tf.data.Dataset.from_tensor_slices({k: tf.stack([p[k] for p in padded]) for k in ("boxes", "classes")})
    return coverage(batches.batch(batch_size), encoder, (image_size, image_size))


@dataclasses.dataclass
class CheckReport:
    head_name: str
    image_size: int
    num_boxes: int
    small_boxes: int
    coverage: dict | None
    anchor_generator: object
    coverage_images: int
    suggested_image_size: int | None

    @property
    def small_share(self):
        return self.small_boxes / max(self.num_boxes, 1)

    @property
    def best_possible_recall(self):
        return None if self.coverage is None else float(self.coverage["matched_fraction"])

    def lines(self):
        size, gen, cov = self.image_size, self.anchor_generator, self.coverage
        out = [f"boxes smaller than {SMALL_BOX_PX:g} px at {size}x{size}: {self.small_boxes} of {self.num_boxes} "
               f"({100 * self.small_share:.1f}%)"]
        if cov is None:
            return out + [f"anchor coverage: not measured, the {self.head_name} head assigns anchors from its own "
                          "predictions"] + self.warnings()
        out.append(f"anchor coverage, {self.head_name} head at {size}x{size} ({self.coverage_images} images, "
                   f"{cov['num_ground_truth']} boxes): best possible recall {100 * self.best_possible_recall:.1f}% "
                   f"(boxes with a positive anchor), {cov['mean_positives_per_image']:.1f} positives per image")
        for level, fraction in zip(gen.levels, cov["matched_fraction_per_level"]):
            out.append(f"  P{level} (stride {2 ** level:3d}, anchors {gen.anchor_size * 2 ** level:5.0f} px): "
                       f"{100 * fraction:5.1f}% of boxes")
        if cov["best_anchor_iou"].size:
            out.append(f"  best-anchor IoU below 0.5: {100 * np.mean(cov['best_anchor_iou'] < 0.5):.1f}% of boxes")
        out += self.warnings()
        return out

    def warnings(self):
        out = []
        if self.small_share > MAX_SMALL_SHARE:
            fix = (f"; --image-size {self.suggested_image_size} brings them to {100 * MAX_SMALL_SHARE:g}% or less"
                   if self.suggested_image_size else "")
            out.append(f"warning: {100 * self.small_share:.1f}% of the boxes are under {SMALL_BOX_PX:g} px at "
                       f"--image-size {self.image_size}, too small to be learned well{fix}")
        if self.num_boxes and self.coverage is not None and self.best_possible_recall < 0.9:
            out.append(f"warning: only {100 * self.best_possible_recall:.1f}% of the boxes get a positive anchor of "
                       f"the {self.head_name} head at {self.image_size}x{self.image_size}; the others are never "
                       "learned (a larger --image-size or another --head)")
        return out


def check_boxes(box_set, head="gfl", image_size=512, coverage_images=500):
    """The CheckReport of a BoxSet for a head (a registered name or a head object) at a square image size."""
    from keras_focal.models.heads import get_head

    head = get_head(head)
    image_size = int(image_size)
    all_boxes = np.concatenate(box_set.boxes) if box_set.boxes else np.zeros((0, 4))
    sides = short_sides(all_boxes)
    coverage = anchor_coverage(box_set, head, image_size, coverage_images)
    return CheckReport(head.name, image_size, len(sides), int(np.sum(sides * image_size < SMALL_BOX_PX)), coverage,
                       head.anchor_generator, min(len(box_set.boxes), coverage_images),
                       suggested_image_size(sides, image_size))
