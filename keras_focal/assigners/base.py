"""The assigner protocol: which ground-truth box, if any, each anchor learns from.

An assigner is a plain serializable object (`get_config` / `from_config`, registered with Keras). It is called as

    assignment = assigner.assign(anchor_generator, boxes, classes, image_height, image_width, predictions=None)

- `anchor_generator`: the head's `keras_focal.layers.AnchorGenerator`; `anchor_generator(H, W)` gives the anchors
  `[A, 4]` (normalized yxyx, in (level, y, x, anchor) order), and for a static image size the assigner may use the
  grid structure of its levels (`anchor_grid(anchor_generator, H, W)`) for a faster path with the same result.
- `boxes` float32 `[B, M, 4]` normalized yxyx, `classes` int32 `[B, M]`: the ground truth, padded with -1. Rows that
  `keras_focal.boxes.valid_boxes_mask` rejects (class < 0, non-finite, empty) are never assigned. `M` may be 0.
- `image_height`, `image_width`: python ints (static size) or scalar tensors.
- `predictions` (dynamic assigners only, `needs_predictions = True`): `{"scores": float32 [B, A, C] per-class
  scores in [0, 1] (the head's `scores`), "boxes": float32 [B, A, 4] decoded predicted boxes, normalized yxyx}`,
  both already outside the gradient (`stop_gradient`).

It returns a dict:
- `"assignment"` int32 `[B, A]`: the row of `boxes` (in `[0, M)`) assigned to each anchor, or `BACKGROUND` (-1),
  or `IGNORED` (-2: no loss at all);
- optionally more per-anchor float32 `[B, A]` entries the head's loss may read (a dynamic assigner's soft targets,
  e.g. a normalized alignment metric); they pass through `DenseHead.assign_targets` to `DenseHead.loss` unchanged.

Static assigners (`needs_predictions = False`: IoU, ATSS) see only anchors and ground truth, so they run in the
`tf.data` pipeline through `keras_focal.layers.AnchorEncoder(assigner=...)`, or in the train step when the targets
carry only boxes. Dynamic assigners (task-aligned) rank anchors by the current predictions, so they run in the
train step only: `DenseHead.assign_targets` computes the head's scores and decoded boxes, stops their gradients and
passes them in.
"""

import keras
import numpy as np
import tensorflow as tf

from keras_focal.boxes import BACKGROUND, IGNORED
from keras_focal.configurable import Configurable

__all__ = ["Assigner", "BACKGROUND", "IGNORED", "anchor_grid", "pad_dummy", "resolve_assigner"]


class Assigner(Configurable):
    """Base of the assigners. A subclass implements `assign` (see the module docstring) and `get_config`.

    - `needs_predictions`: False for a static assigner (anchors + ground truth, runs in tf.data), True for a
      dynamic one (also the head's detached scores and decoded boxes, runs in the train step);
    - `assignment_keys`: the extra per-anchor entries `assign` returns besides "assignment" (a head whose loss
      reads them, `DenseHead.assignment_keys`, refuses an assigner without them).
    """

    needs_predictions = False
    assignment_keys = ()

    def assign(self, anchor_generator, boxes, classes, image_height, image_width, predictions=None):
        raise NotImplementedError


def resolve_assigner(value, default):
    """None (-> `default()`), an Assigner, or its serialized config -> an Assigner."""
    return Assigner.resolve(value, default, "assigner", "an Assigner object (keras_focal.assigners)")


def pad_dummy(boxes, classes):
    """Appends one non-real ground truth so that argmax / max over M are defined when M == 0."""
    b = tf.shape(boxes)[0]
    dummy_box = tf.zeros((b, 1, 4), "float32") - 1.0
    dummy_cls = tf.zeros((b, 1), "int32") - 1
    return tf.concat([boxes, dummy_box], axis=1), tf.concat([classes, dummy_cls], axis=1)


def _is_static(x):
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def anchor_grid(anchor_generator, image_height, image_width):
    """For a static image size, the anchors (numpy, computed once per generator and size) and, when every level's
    anchors form a grid (rows share their y extents, columns their x extents, `k` shapes per location), per level:
    `y` [fh, k, 2] (ymin, ymax), `x` [fw, k, 2] (xmin, xmax), `area` [fh, fw, k], the centres `cy` [fh, k] and
    `cx` [fw, k] (as `boxes.centers` computes them) and `start`, the index of the level's first anchor
    (`levels` is None when a level is not a grid). None for a dynamic size."""
    if not (_is_static(image_height) and _is_static(image_width)):
        return None
    key = (int(image_height), int(image_width))
    cache = anchor_generator.__dict__.setdefault("_grid_cache", {})
    if key in cache:
        return cache[key]
    with tf.init_scope():  # eager even while a tf.data map or tf.function is being traced
        anchors = keras.ops.convert_to_numpy(anchor_generator(*key)).astype("float32")
    k = anchor_generator.anchors_per_location
    levels, start = [], 0
    for fh, fw in anchor_generator.feature_sizes(*key):
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

