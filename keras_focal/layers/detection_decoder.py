"""Final detections from decoded boxes and per-class scores: top-k per level, threshold, class-aware NMS."""

import keras
import tensorflow as tf
from keras import ops

from keras_focal.layers.anchor_generator import AnchorGenerator

NMS_METHODS = ("combined", "padded")


@keras.saving.register_keras_serializable(package="keras_focal")
class DetectionDecoder(keras.layers.Layer):
    """Turns ``scores [B, A, C]`` and ``boxes [B, A, 4]`` into at most ``max_detections`` detections.

    ``dec(scores, boxes, image_height, image_width)``: the per-class scores in [0, 1] and the decoded boxes
    (normalized yxyx) of every anchor, as a head gives them (``head.scores(outputs)``,
    ``head.decode_boxes(outputs, H, W)``). Nothing here depends on the head. Returns exactly::

        {"detection_boxes":   float32 [B, N, 4]  normalized yxyx, clipped to [0, 1],
         "detection_scores":  float32 [B, N]     sorted descending,
         "detection_classes": int32   [B, N],
         "num_detections":    int32   [B]}

    with ``N = max_detections``; rows ``>= num_detections`` are zeros. Steps, as Detectron / torchvision
    RetinaNet (Focal Loss paper §5 "Inference"):

    1. boxes clipped to [0, 1];
    2. per FPN level (the anchor generator says where each level's anchors are), the ``pre_nms_topk`` (1000)
       highest (anchor, class) scores;
    3. candidates with score <= ``score_threshold`` (0.05) dropped (torchvision keeps ``score > thresh``);
    4. class-aware NMS at ``iou_threshold`` (0.5; GFL uses 0.6), ``max_detections`` (100) kept per image.

    ``nms_method="combined"`` (default) uses ``tf.image.combined_non_max_suppression``, chosen with
    ``benchmarks/nms.py`` (512 px, 49104 anchors, 80 classes, batch 2, CPU): ~5-6 ms against ~8-9 ms for
    the offset trick below and ~60 s for per-class ``non_max_suppression_padded``. ``"padded"`` runs
    ``tf.image.non_max_suppression_padded`` once per image with each class's boxes shifted by 2 * class id
    (class-aware by construction, same detections); use it where combined NMS is unavailable (it has no
    GPU kernel and no ONNX / TFLite conversion).

    The layer computes in float32 whatever the inputs' dtype (mixed precision) and traces in
    ``tf.function`` with unknown batch, H and W, so it can sit inside an exported SavedModel.
    """

    def __init__(
        self,
        anchor_generator=None,
        score_threshold=0.05,
        pre_nms_topk=1000,
        iou_threshold=0.5,
        max_detections=100,
        nms_method="combined",
        **kwargs,
    ):
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        anchor_generator = AnchorGenerator.resolve(anchor_generator)
        if nms_method not in NMS_METHODS:
            raise ValueError(f"nms_method must be one of {NMS_METHODS}, got {nms_method!r}")
        self.anchor_generator = anchor_generator
        self.score_threshold = float(score_threshold)
        self.pre_nms_topk = int(pre_nms_topk)
        self.iou_threshold = float(iou_threshold)
        self.max_detections = int(max_detections)
        self.nms_method = nms_method
        self.built = True

    def __call__(self, scores, boxes, image_height, image_width, **kwargs):
        # Keras only accepts tensors as positional arguments; the image size may be a python int.
        return super().__call__(scores, boxes, image_height=image_height, image_width=image_width, **kwargs)

    # ------------------------------------------------------------------ decoding
    def _candidates(self, scores, boxes, image_height, image_width):
        """Top ``pre_nms_topk`` (anchor, class) pairs of each level of ``scores``
        -> scores [B,K], boxes [B,K,4], classes [B,K]."""
        gen = self.anchor_generator
        num_classes = ops.shape(scores)[-1]
        batch = ops.shape(scores)[0]
        sizes = gen.level_sizes(image_height, image_width)
        s_levels = gen.split_levels(scores, image_height, image_width, axis=1)
        b_levels = gen.split_levels(boxes, image_height, image_width, axis=1)
        out_s, out_b, out_c = [], [], []
        for s_l, b_l, n_l in zip(s_levels, b_levels, sizes):
            flat = ops.reshape(s_l, (batch, -1))
            if isinstance(n_l, int) and isinstance(num_classes, int):
                k = min(self.pre_nms_topk, n_l * num_classes)
            else:
                k = ops.minimum(ops.cast(n_l, "int32") * ops.cast(num_classes, "int32"), self.pre_nms_topk)
            top_s, top_i = ops.top_k(flat, k=k, sorted=False)
            top_i = ops.cast(top_i, "int32")
            anchor_i = top_i // num_classes
            class_i = top_i % num_classes
            out_s.append(top_s)
            out_b.append(ops.take_along_axis(b_l, anchor_i[..., None], axis=1))
            out_c.append(class_i)
        return (
            ops.concatenate(out_s, axis=1),
            ops.concatenate(out_b, axis=1),
            ops.concatenate(out_c, axis=1),
        )

    def call(self, scores, boxes, image_height, image_width):
        scores = ops.cast(scores, "float32")
        boxes = ops.clip(ops.cast(boxes, "float32"), 0.0, 1.0)
        num_classes = ops.shape(scores)[-1]
        cand_s, cand_b, cand_c = self._candidates(scores, boxes, image_height, image_width)
        if self.nms_method == "combined":
            return self._nms_combined(cand_s, cand_b, cand_c, num_classes)
        return self._nms_padded(cand_s, cand_b, cand_c)

    # ------------------------------------------------------------------ NMS back ends
    def _nms_combined(self, cand_s, cand_b, cand_c, num_classes):
        # Each candidate is one (anchor, class) pair: a [B, K, C] score table with its score in its class
        # column and -1 elsewhere (below any threshold >= 0) and one shared box per candidate (q = 1).
        onehot = tf.one_hot(cand_c, num_classes, on_value=True, off_value=False, dtype=tf.bool)
        table = tf.where(onehot, cand_s[..., None], -1.0)
        below = cand_s <= self.score_threshold
        table = tf.where(below[..., None], -1.0, table)
        nmsed_boxes, nmsed_scores, nmsed_classes, valid = tf.image.combined_non_max_suppression(
            boxes=cand_b[:, :, None, :],
            scores=table,
            max_output_size_per_class=self.max_detections,
            max_total_size=self.max_detections,
            iou_threshold=self.iou_threshold,
            score_threshold=max(self.score_threshold, 0.0),
            pad_per_class=False,
            clip_boxes=False,
        )
        return self._finalize(nmsed_boxes, nmsed_scores, tf.cast(nmsed_classes, tf.int32), valid)

    def _nms_padded(self, cand_s, cand_b, cand_c):
        # Class-aware NMS in one call: shift each class's boxes (all inside [0, 1]) by 2 * class id, so
        # boxes of different classes never overlap.
        offset = tf.cast(cand_c, tf.float32)[..., None] * 2.0
        cand_s = tf.where(cand_s <= self.score_threshold, -1.0, cand_s)
        idx, valid = tf.image.non_max_suppression_padded(
            cand_b + offset,
            cand_s,
            max_output_size=self.max_detections,
            iou_threshold=self.iou_threshold,
            score_threshold=max(self.score_threshold, 0.0),
            pad_to_max_output_size=True,
        )
        n = self.max_detections
        idx = tf.cast(idx, tf.int32)
        sel_b = tf.gather(cand_b, idx, batch_dims=1)
        sel_s = tf.gather(cand_s, idx, batch_dims=1)
        sel_c = tf.gather(cand_c, idx, batch_dims=1)
        mask = tf.range(n)[None, :] < tf.cast(valid, tf.int32)[:, None]
        sel_s = tf.where(mask, sel_s, -1.0)
        order = tf.argsort(sel_s, axis=1, direction="DESCENDING", stable=True)
        sel_b = tf.gather(sel_b, order, batch_dims=1)
        sel_s = tf.gather(sel_s, order, batch_dims=1)
        sel_c = tf.gather(sel_c, order, batch_dims=1)
        return self._finalize(sel_b, sel_s, sel_c, valid)

    def _finalize(self, boxes, scores, classes, valid):
        n = self.max_detections
        valid = tf.cast(valid, tf.int32)
        mask = tf.range(n)[None, :] < valid[:, None]
        boxes = tf.where(mask[..., None], tf.clip_by_value(tf.cast(boxes, tf.float32), 0.0, 1.0), 0.0)
        scores = tf.where(mask, tf.cast(scores, tf.float32), 0.0)
        classes = tf.where(mask, tf.cast(classes, tf.int32), 0)
        # Fix the static detection dimension (combined NMS leaves it as N already; padded may not).
        boxes = tf.ensure_shape(tf.reshape(boxes, [-1, n, 4]), [None, n, 4])
        scores = tf.ensure_shape(tf.reshape(scores, [-1, n]), [None, n])
        classes = tf.ensure_shape(tf.reshape(classes, [-1, n]), [None, n])
        return {
            "detection_boxes": boxes,
            "detection_scores": scores,
            "detection_classes": classes,
            "num_detections": valid,
        }

    def compute_output_spec(self, scores, boxes, image_height=None, image_width=None):
        batch = scores.shape[0]
        n = self.max_detections
        return {
            "detection_boxes": keras.KerasTensor((batch, n, 4), dtype="float32"),
            "detection_scores": keras.KerasTensor((batch, n), dtype="float32"),
            "detection_classes": keras.KerasTensor((batch, n), dtype="int32"),
            "num_detections": keras.KerasTensor((batch,), dtype="int32"),
        }

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "anchor_generator": keras.saving.serialize_keras_object(self.anchor_generator),
                "score_threshold": self.score_threshold,
                "pre_nms_topk": self.pre_nms_topk,
                "iou_threshold": self.iou_threshold,
                "max_detections": self.max_detections,
                "nms_method": self.nms_method,
            }
        )
        return config
