"""The interface every dense detection head implements (`DenseHead`), and what turns ground truth into its
training targets.

A head is a plain serializable object (not a layer): called on the FPN levels it creates its Keras layers in the
detector's functional graph, so the layer names (`class_subnet_conv{i}`, `box_subnet_deltas`, ...) stay top-level
names of the detector, which saved weights and checkpoint converters rely on. It owns everything that differs
between detectors, each as an object or a method:

- `anchor_generator`: its anchors (an `AnchorGenerator`);
- `assigner`: which ground truth each anchor learns from (`keras_focal.assigners`); static ones run in the
  tf.data pipeline through `anchor_encoder()`, dynamic ones (`assigner.needs_predictions`) in the train step;
- `box_coder`: what its box outputs encode (`DeltaCoder`, `DistanceCoder`);
- `scores(outputs)`: its per-class scores (the sigmoid of the class logits by default);
- `decode_boxes(outputs, H, W)`: its predicted boxes, normalized yxyx;
- `loss(...)`: its loss, normalized over the global batch (`normalizers.global_sums`, once);
- `fpn_extra_levels_from` and `nms_iou_threshold`: the FPN's P6 input and the decoding default.

The detector (`keras_focal.models.RetinaNet`) calls, in this order:
1. `outputs = head(features, num_classes)` while it builds its graph;
2. training: `targets = head.assign_targets(targets, outputs, H, W, step)`, then
   `head.loss(targets, outputs, H, W, classification_loss, box_loss)`;
3. inference: `DetectionDecoder(head.scores(outputs), head.decode_boxes(outputs, H, W), H, W)`.
"""

import keras
from keras import ops

from keras_focal.assigners.base import resolve_assigner
from keras_focal.boxes import BACKGROUND, IGNORED
from keras_focal.layers import AnchorEncoder, AnchorGenerator
from keras_focal.layers.box_coders import resolve_box_coder


def matched_ground_truth(targets):
    """float32 ``[B, A, 4]``: the ground-truth box assigned to each anchor, 0 where it is not positive. Read from
    the targets' "matched_boxes", or gathered from "boxes" ``[B, M, 4]`` at "matched_indices" ``[B, A]`` (what a
    head's own encoder returns: the boxes are already in the batch, so the pipeline does not carry an [A, 4] copy)."""
    if "matched_boxes" in targets:
        return ops.cast(targets["matched_boxes"], "float32")
    if "matched_indices" not in targets or "boxes" not in targets:
        raise ValueError("the anchor targets need 'matched_boxes', or 'matched_indices' with 'boxes' "
                         f"(the AnchorEncoder outputs); got keys {sorted(targets)}")
    index = ops.cast(targets["matched_indices"], "int32")
    boxes = ops.cast(targets["boxes"], "float32")
    b, m = ops.shape(boxes)[0], ops.shape(boxes)[1]
    # one gather from the flattened boxes plus a zero row, which the non-positive anchors (index -1) read
    flat = ops.concatenate([ops.reshape(boxes, (-1, 4)), ops.zeros((1, 4), "float32")], axis=0)
    rows = ops.where(index >= 0, index + (ops.arange(b, dtype="int32") * m)[:, None], b * m)
    return ops.take(flat, rows, axis=0)


def targets_from_assignment(assignment, classes):
    """The head targets from an assigner's dict (`keras_focal.assigners.base`): "class_targets" int32 [B, A] (the
    class of the assigned box, -1 background, -2 ignored), "matched_indices" int32 [B, A] (-1 where not positive)
    and the assigner's extra per-anchor entries."""
    index = ops.cast(assignment["assignment"], "int32")
    positive = index >= 0
    rows = ops.maximum(index, 0)
    matched_class = ops.take_along_axis(ops.cast(classes, "int32"), rows, axis=1)
    out = {k: v for k, v in assignment.items() if k != "assignment"}
    out["class_targets"] = ops.where(positive, matched_class, ops.where(index == IGNORED, IGNORED, BACKGROUND))
    out["matched_indices"] = ops.where(positive, index, -1)
    return out


class DenseHead:
    """Base of the detection heads. A subclass is registered with `register_head(name)` and implements
    `default_anchor_generator`, `default_assigner`, `default_box_coder`, `__call__` and `loss`; it may override
    `scores` (sigmoid of the class logits) and `box_predictions` (the box outputs as they are).

    Class attributes:
    - `name`: set by `register_head`; what `RetinaNet(head=...)` and `model.head` call it;
    - `detector_name`: the detector's default Keras name (the head's name unless the class sets it);
    - `fpn_extra_levels_from`: whether the FPN computes P6 from "c5" or "p5";
    - `nms_iou_threshold`: the decoding default;
    - `assignment_keys`: the assigner's extra outputs its loss reads (an assigner without them is refused).

    Args:
        num_convs: convs per tower.
        anchor_generator: None for the head's default, an AnchorGenerator or its config.
        assigner: None for the head's paper default, an assigner object (`keras_focal.assigners`) or its config.
        box_coder: None for the head's default, a box coder object (`keras_focal.layers.box_coders`) or its config.
    """

    name = None
    detector_name = property(lambda self: self.name)
    fpn_extra_levels_from = "c5"
    nms_iou_threshold = 0.5
    assignment_keys = ()
    # The number of train steps of the run, set by the training entry point (`keras-focal train`); heads whose
    # targets change during training (TOOD's warm-up) read it.
    total_steps = None

    def __init__(self, num_convs=4, anchor_generator=None, assigner=None, box_coder=None):
        if int(num_convs) < 0:
            raise ValueError(f"num_convs must be >= 0, got {num_convs}")
        self.num_convs = int(num_convs)
        self.anchor_generator = (self.default_anchor_generator() if anchor_generator is None
                                 else AnchorGenerator.resolve(anchor_generator))
        self.assigner = resolve_assigner(assigner, self.default_assigner)
        missing = set(self.assignment_keys) - set(getattr(self.assigner, "assignment_keys", ()))
        if missing:
            raise ValueError(f"{type(self).__name__}'s loss needs {sorted(missing)} from its assigner, which "
                             f"{type(self.assigner).__name__} does not give")
        self.box_coder = resolve_box_coder(box_coder, self.default_box_coder)

    # ---------------------------------------------------------------------------------------- defaults
    def default_anchor_generator(self):
        raise NotImplementedError

    def default_assigner(self):
        raise NotImplementedError

    def default_box_coder(self):
        raise NotImplementedError

    # ------------------------------------------------------------------------------------------- graph
    def __call__(self, features, num_classes):
        """features: the FPN levels [B, H_l, W_l, width]. Returns {"class_logits": [B, A, C], "box_outputs":
        [B, A, K], ...} (more keys allowed), float32."""
        raise NotImplementedError

    # --------------------------------------------------------------------------------------- inference
    def scores(self, outputs):
        """float32 [B, A, C]: the per-class scores in [0, 1] the decoder ranks and thresholds."""
        return ops.sigmoid(ops.cast(outputs["class_logits"], "float32"))

    def box_predictions(self, outputs):
        """The codes `box_coder.decode` reads, [B, A, 4]: the box outputs as they are by default."""
        return ops.cast(outputs["box_outputs"], "float32")

    def decode_boxes(self, outputs, image_height, image_width):
        """float32 [B, A, 4]: the predicted boxes, normalized yxyx (not clipped)."""
        anchors = self.anchor_generator(image_height, image_width)
        strides = self.anchor_generator.anchor_strides(image_height, image_width)
        return self.box_coder.decode(anchors, self.box_predictions(outputs), image_height, image_width, strides)

    # ---------------------------------------------------------------------------------------- training
    def anchor_encoder(self):
        """The AnchorEncoder giving this head's training targets in the tf.data pipeline (or in-graph): the
        class targets and the matched indices. None when the assigner needs predictions (it runs in the step)."""
        if self.assigner.needs_predictions:
            return None
        return AnchorEncoder(anchor_generator=self.anchor_generator, assigner=self.assigner,
                             outputs=("class_targets", "matched_indices"))

    def assign_targets(self, targets, outputs, image_height, image_width, step=None):
        """The targets the loss reads, from the batch's `targets`: as they are when the pipeline encoded them
        ("class_targets" present); else the assigner runs here, on "boxes" [B, M, 4] and "classes" [B, M]
        (crowd boxes, "is_crowd" > 0, are never assigned), with the head's detached scores and decoded boxes
        when it needs predictions. Returns `targets` plus "class_targets", "matched_indices" and the assigner's
        extra entries. `step` is the train-step counter (the optimizer's `iterations`), for heads whose targets
        change during training; unused here."""
        if "class_targets" in targets:
            return targets
        classes = ops.cast(targets["classes"], "int32")
        if "is_crowd" in targets:
            classes = ops.where(ops.cast(targets["is_crowd"], "int32") > 0, -1, classes)
        if not self.assigner.needs_predictions:
            encoded = self.anchor_encoder()(targets["boxes"], classes, image_height, image_width)
            return {**targets, **encoded}
        predictions = {"scores": ops.stop_gradient(self.scores(outputs)),
                       "boxes": ops.stop_gradient(self.decode_boxes(outputs, image_height, image_width))}
        boxes = ops.cast(targets["boxes"], "float32")
        assignment = self.assigner.assign(self.anchor_generator, boxes, classes, image_height, image_width,
                                          predictions=predictions)
        return {**targets, **targets_from_assignment(assignment, classes)}

    def loss(self, targets, outputs, image_height, image_width, classification_loss=None, box_loss=None):
        """(class_loss, box_loss): this replica's share of the global-batch loss (local sums over global
        normalizers, `normalizers.global_sums` called once), so that the replicas' gradients sum to the one-device
        gradient. `targets` come from `assign_targets`; `classification_loss` / `box_loss` are None (the head's
        own) or user losses evaluated with `user_loss.per_element`."""
        raise NotImplementedError

    # ------------------------------------------------------------------------------------ serialization
    def get_config(self):
        return {"num_convs": self.num_convs,
                "anchor_generator": keras.saving.serialize_keras_object(self.anchor_generator),
                "assigner": keras.saving.serialize_keras_object(self.assigner),
                "box_coder": keras.saving.serialize_keras_object(self.box_coder)}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
