"""The GFL head (Li et al. 2020, "Generalized Focal Loss"; mmdetection's `GFLHead`).

Data flow:
- `head(features, num_classes)`: GroupNorm(32) towers, one square anchor per location, a joint class-quality logit per
  class (`class_logits` [B, A, C]) and a distribution over `reg_max + 1` bins for each of the 4 box sides (left,
  top, right, bottom, in strides), scaled by one learnable scalar per level (`box_outputs` [B, A, 4 (reg_max + 1)]).
- `head.box_predictions`: the Integral, `sum_i i P(i)` per side (Sec. 3.3): the expected distances its
  `DistanceCoder` decodes.
- `head.loss(targets, outputs, ...)`: targets from the ATSS assigner by default (`ATSSAssigner(topk=9)`). Quality Focal Loss (beta 2) against the IoU of
  the (detached) predicted box with its ground truth at the ground-truth class, divided by the number of positives;
  GIoU (weight 2.0) and DFL (weight 0.25, averaged over the 4 sides), each weighted per positive anchor by its
  detached best class score and divided by the sum of those weights (mmdetection `GFLHead.loss_by_feat`).
- Decoding: scores are the sigmoid of the joint class-quality logits; NMS at IoU 0.6 (mmdetection
  `gfl_r50_fpn_1x`).
"""

import functools

import keras
from keras import ops

from keras_focal.assigners import ATSSAssigner
from keras_focal.boxes import aligned_iou
from keras_focal.layers import AnchorGenerator, DistanceCoder, Integral, Scale
from keras_focal.losses import distribution_focal_loss, giou_loss, quality_focal_loss
from keras_focal.losses import checks
from keras_focal.models.heads import base, towers
from keras_focal.models.heads.normalizers import global_sums
from keras_focal.models.heads.registry import register_head
from keras_focal.models.heads.user_loss import expects_logits, per_element

# mmdetection `bbox2distance(..., max_dis=reg_max - 0.1)`: distance targets stay inside the last bin.
DISTANCE_TARGET_MARGIN = 0.1


@register_head("gfl")
@keras.saving.register_keras_serializable(package="keras_focal")
class GFLHead(base.DenseHead):
    """The GFL head: its towers, anchors, ATSS targets, QFL + GIoU + DFL loss, Integral and decoding defaults.

    Args:
        num_convs: convs per tower (4 in the paper).
        reg_max: bins per side minus one (16 -> 17 bins, distances 0..16 strides).
        qfl_beta: Quality Focal Loss exponent (2.0).
        giou_weight, dfl_weight: weights of the GIoU and DFL terms (2.0, 0.25).
        anchor_generator: None for one square anchor of 8 x stride per location on P3-P7 (ATSS / GFL
            `octave_base_scale=8, scales_per_octave=1`), an AnchorGenerator or its config.
        assigner: None for `ATSSAssigner()` (the paper's), or any static assigner.
        box_coder: None for `DistanceCoder()`; the loss's DFL reads distances, so keep a DistanceCoder.

    `compile(classification_loss=...)` replaces QFL (per (anchor, class) element, on the IoU-quality targets and
    the logits); `compile(box_loss=...)` replaces the GIoU term (per box, on the matched and predicted normalized
    yxyx boxes), which keeps its weight and normalizer; DFL always stays.
    """

    fpn_extra_levels_from = "p5"  # mmdetection `add_extra_convs='on_output'`
    nms_iou_threshold = 0.6

    def __init__(self, num_convs=4, reg_max=16, qfl_beta=2.0, giou_weight=2.0, dfl_weight=0.25,
                 anchor_generator=None, assigner=None, box_coder=None):
        super().__init__(num_convs=num_convs, anchor_generator=anchor_generator, assigner=assigner,
                         box_coder=box_coder)
        if not isinstance(self.box_coder, DistanceCoder):
            raise ValueError(f"GFLHead's DFL learns distances: box_coder must be a DistanceCoder, got {self.box_coder!r}")
        if int(reg_max) < 1:
            raise ValueError(f"reg_max must be >= 1, got {reg_max}")
        self.reg_max = int(reg_max)
        self.qfl_beta = checks.check_non_negative(qfl_beta, "qfl_beta")
        self.giou_weight = checks.check_non_negative(giou_weight, "giou_weight")
        self.dfl_weight = checks.check_non_negative(dfl_weight, "dfl_weight")
        self.integral = Integral(reg_max=self.reg_max, name="integral")

    def default_anchor_generator(self):
        return AnchorGenerator(min_level=3, max_level=7, anchor_size=8.0, num_scales=1, aspect_ratios=(1.0,))

    def default_assigner(self):
        return ATSSAssigner()

    def default_box_coder(self):
        return DistanceCoder()

    def box_predictions(self, outputs):
        return self.integral(outputs["box_outputs"])

    def __call__(self, features, num_classes):
        width = features[0].shape[-1]
        bins = self.reg_max + 1
        class_tower = towers.tower(width, self.num_convs, "class_subnet", group_norm=True)
        box_tower = towers.tower(width, self.num_convs, "box_subnet", group_norm=True)
        class_out = towers.conv3x3(num_classes, "class_subnet_logits", bias=towers.prior_bias())
        box_out = towers.conv3x3(4 * bins, "box_subnet_distribution")
        levels = self.anchor_generator.levels
        class_maps = [class_out(towers.apply(class_tower, f)) for f in features]
        box_maps = [Scale(name=f"box_scale_p{level}")(box_out(towers.apply(box_tower, f)))
                    for level, f in zip(levels, features)]
        return {
            "class_logits": towers.flatten_levels(class_maps, num_classes, "class_logits"),
            "box_outputs": towers.flatten_levels(box_maps, 4 * bins, "box_outputs"),
        }

    def loss(self, targets, outputs, image_height, image_width, classification_loss=None, box_loss=None):
        """targets: "class_targets" int [B, A] and the matched boxes (normalized yxyx, see
        `base.matched_ground_truth`) from the ATSS encoder. outputs: "class_logits" [B, A, C] and "box_outputs"
        [B, A, 4 (reg_max + 1)] distribution logits.
        Returns (quality focal term, GIoU + DFL terms)."""
        anchors = self.anchor_generator(image_height, image_width)
        strides = self.anchor_generator.anchor_strides(image_height, image_width)
        logits = ops.cast(outputs["class_logits"], "float32")
        distribution = ops.reshape(ops.cast(outputs["box_outputs"], "float32"),
                                   (ops.shape(logits)[0], -1, 4, self.reg_max + 1))
        class_targets = ops.cast(targets["class_targets"], "int32")
        positive_mask = class_targets >= 0
        positive = ops.cast(positive_mask, "float32")

        # Predicted boxes: expected distance per side (the Integral), decoded around the anchor centres.
        predicted = self.box_coder.decode(anchors, self.box_predictions(outputs), image_height, image_width, strides)
        # Non-positive anchors get a harmless dummy box so no NaN can leak through a zero weight.
        dummy = ops.convert_to_tensor([0.0, 0.0, 1.0, 1.0])
        matched = ops.where(positive_mask[..., None], base.matched_ground_truth(targets), dummy)

        # QFL target: IoU of the (detached) prediction with its ground truth, at the ground-truth class (Sec. 3.2).
        quality = ops.stop_gradient(aligned_iou(matched, predicted)) * positive
        one_hot = ops.one_hot(ops.maximum(class_targets, 0), ops.shape(logits)[-1]) * quality[..., None]
        weight = ops.stop_gradient(ops.max(ops.sigmoid(logits), axis=-1)) * positive
        totals = global_sums({"positive": ops.sum(positive), "weight": ops.sum(weight)})
        num_positive = ops.maximum(totals["positive"], 1.0)
        weight_sum = ops.maximum(totals["weight"], 1.0)

        if classification_loss is None:
            classification_loss = functools.partial(quality_focal_loss, beta=self.qfl_beta, from_logits=True)
        class_input = logits if expects_logits(classification_loss) else ops.sigmoid(logits)
        class_values = per_element(classification_loss, one_hot, class_input, name="classification_loss")
        class_loss = ops.sum(class_values) / num_positive

        overlap_loss = giou_loss if box_loss is None else box_loss
        overlap_values = per_element(overlap_loss, matched, predicted, element_axes=1, name="box_loss")
        overlap = ops.sum(overlap_values * weight) / weight_sum
        distance_targets = self.box_coder.encode(anchors, matched, image_height, image_width, strides)
        distance_targets = ops.clip(distance_targets, 0.0, self.reg_max - DISTANCE_TARGET_MARGIN)
        dfl = distribution_focal_loss(distance_targets, distribution, from_logits=True)  # [B, A, 4]
        dfl = ops.sum(ops.mean(dfl, axis=-1) * weight) / weight_sum
        return class_loss, self.giou_weight * overlap + self.dfl_weight * dfl

    def get_config(self):
        config = super().get_config()
        config.update(reg_max=self.reg_max, qfl_beta=self.qfl_beta, giou_weight=self.giou_weight,
                      dfl_weight=self.dfl_weight)
        return config
