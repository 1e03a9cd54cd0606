"""The tf.data adapter of a static assigner: ground truth -> anchor training targets."""

import keras
import tensorflow as tf
from keras import ops

from keras_focal.assigners import IoUAssigner
from keras_focal.assigners.base import resolve_assigner
from keras_focal.boxes import BACKGROUND, IGNORED, valid_boxes_mask
from keras_focal.layers.anchor_generator import AnchorGenerator
from keras_focal.layers.box_coders import DeltaCoder, resolve_box_coder

# What the encoder can return (``outputs=``), in this order.
OUTPUTS = ("class_targets", "box_targets", "matched_boxes", "matched_indices")


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
    """Runs a static assigner (`keras_focal.assigners`) on the ground truth and encodes the training targets.

    ``enc(boxes, classes, image_height, image_width)`` with normalized yxyx ``boxes`` ``[M, 4]`` and int
    ``classes`` ``[M]`` (inside a ``tf.data`` map) or batched ``[B, M, 4]`` / ``[B, M]`` (in-graph), padded
    with -1. Padded rows (class < 0), non-finite and zero-area / inverted boxes are never matched. ``M``
    may be 0. Returns a dict of the keys named in ``outputs`` (all four by default; a head's own encoder asks
    for the class targets and matched indices, and its loss gathers the matched boxes from the ground truth):

    * ``class_targets`` int32 ``[..., A]``: class id (>= 0) for positives, -1 background, -2 ignored;
    * ``box_targets`` float32 ``[..., A, 4]``: ``box_coder.encode`` of the matched box (the deltas of
      ``DeltaCoder()`` by default), 0 where not positive;
    * ``matched_boxes`` float32 ``[..., A, 4]``: the assigned ground-truth box (yxyx), 0 where not positive;
    * ``matched_indices`` int32 ``[..., A]``: the row of M of the assigned ground-truth box, -1 where not positive.

    Only the real boxes reach the assigner (``compact_real_boxes``): the cost grows with the number of objects,
    not with the padded M; a batch costs as much as its most crowded image.

    Args:
        anchor_generator: an AnchorGenerator or its config.
        assigner: a static assigner object (default ``IoUAssigner()``) or its config.
        box_coder: what ``box_targets`` encode (default ``DeltaCoder()``).
        outputs: the keys to return.
    """

    def __init__(self, anchor_generator=None, assigner=None, box_coder=None, outputs=OUTPUTS, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.anchor_generator = AnchorGenerator.resolve(anchor_generator)
        self.assigner = resolve_assigner(assigner, IoUAssigner)
        if self.assigner.needs_predictions:
            raise ValueError(f"{type(self.assigner).__name__} needs the head's predictions: it runs in the train "
                             "step, not in an AnchorEncoder (tf.data)")
        self.box_coder = resolve_box_coder(box_coder, DeltaCoder)
        unknown = set(outputs) - set(OUTPUTS)
        if unknown or not outputs:
            raise ValueError(f"outputs must be a non-empty subset of {OUTPUTS}, got {tuple(outputs)!r}")
        self.outputs = tuple(k for k in OUTPUTS if k in outputs)

    def __call__(self, boxes, classes, image_height, image_width, **kwargs):
        # Keras only accepts tensors as positional arguments; the image size may be a python int.
        return super().__call__(boxes, classes, image_height=image_height, image_width=image_width, **kwargs)

    def call(self, boxes, classes, image_height, image_width):
        boxes = ops.cast(boxes, "float32")
        classes = ops.cast(classes, "int32")
        unbatched = len(boxes.shape) == 2
        if unbatched:
            boxes, classes = boxes[None], classes[None]
        # Only the real boxes are matched: padding would cost one [A] column of every pairwise op each.
        boxes, classes, source_index = compact_real_boxes(boxes, classes)
        assignment = self.assigner.assign(self.anchor_generator, boxes, classes, image_height, image_width)
        out = self._encode(assignment["assignment"], boxes, classes, source_index, image_height, image_width)
        return {k: v[0] for k, v in out.items()} if unbatched else out

    def _encode(self, assignment, boxes, classes, source_index, image_height, image_width):
        """The requested ``outputs`` from ``assignment`` [B, A] (rows of the compacted ``boxes`` [B, K, 4] /
        ``classes``, -1, -2); ``source_index`` [B, K] maps those rows back to the rows of M."""
        positive = assignment >= 0
        match = tf.where(positive, assignment, 0)
        # one more row, so that the gathers below are defined when no box is real (K == 0)
        boxes = tf.pad(boxes, [[0, 0], [0, 1], [0, 0]], constant_values=-1.0)
        classes = tf.pad(classes, [[0, 0], [0, 1]], constant_values=-1)
        source_index = tf.pad(source_index, [[0, 0], [0, 1]], constant_values=-1)
        out = {}
        if "class_targets" in self.outputs:
            out["class_targets"] = tf.where(positive, _gather_rows(classes, match),
                                            tf.where(assignment == IGNORED, IGNORED, BACKGROUND))
        if "matched_indices" in self.outputs:
            out["matched_indices"] = tf.where(positive, _gather_rows(source_index, match), -1)
        if "box_targets" in self.outputs or "matched_boxes" in self.outputs:
            # Box targets exist only for the positive anchors (a few hundred of tens of thousands): they are
            # encoded there and scattered into zeros.
            where = tf.where(positive)  # [P, 2] (image, anchor)
            rows = tf.cast(tf.gather_nd(match, where), tf.int64)
            pos_boxes = tf.gather_nd(boxes, tf.stack([where[:, 0], rows], 1))
            shape = tf.concat([tf.shape(positive, out_type=tf.int64), [4]], axis=0)
            if "box_targets" in self.outputs:
                gen = self.anchor_generator
                anchors = tf.gather(gen(image_height, image_width), where[:, 1])
                strides = tf.gather(gen.anchor_strides(image_height, image_width), where[:, 1])
                codes = self.box_coder.encode(anchors, pos_boxes, image_height, image_width, strides)
                out["box_targets"] = tf.scatter_nd(where, codes, shape)
            if "matched_boxes" in self.outputs:
                out["matched_boxes"] = tf.scatter_nd(where, pos_boxes, shape)
        return out

    def get_config(self):
        config = super().get_config()
        config.update(
            anchor_generator=keras.saving.serialize_keras_object(self.anchor_generator),
            assigner=keras.saving.serialize_keras_object(self.assigner),
            box_coder=keras.saving.serialize_keras_object(self.box_coder),
            outputs=list(self.outputs),
        )
        return config


def _gather_rows(params, index):
    """``params[b, index[b, a]]``: ``[B, K, ...] x int [B, A] -> [B, A, ...]``, as one gather from the params
    flattened to ``[B * K, ...]`` (much faster on CPU than a gather with ``batch_dims``)."""
    shape = tf.shape(params)
    offset = tf.range(shape[0]) * shape[1]
    flat = tf.reshape(params, tf.concat([[-1], shape[2:]], 0))
    return tf.gather(flat, index + offset[:, None])
