"""The RetinaNet head (Lin et al. 2017, "Focal Loss for Dense Object Detection", Sec. 4 and Fig. 3).

Data flow:
- `head(features, num_classes)`: each FPN level goes through a class subnet and a box subnet (four 3x3 convs + ReLU
  each, weights shared across levels, not between the two subnets) to `num_anchors x num_classes` logits and
  `num_anchors x 4` deltas per location, flattened to `class_logits` [B, A, C] and `box_outputs` [B, A, 4].
- `head.loss(targets, outputs, ...)`: targets from the IoU assigner by default (`IoUAssigner`: >= 0.5 positive,
  < 0.4 background, in between ignored); `RetinaNetHead(assigner=ATSSAssigner())` is the ATSS paper's RetinaNet
  (Zhang et al. 2020, Table 3). Focal loss (alpha 0.25, gamma 2) summed over all non-ignored anchors and all classes, plus smooth-L1
  (beta 0.11, Detectron) summed over the positive anchors and the 4 deltas; both divided by the number of positive
  anchors in the global batch, at least 1 (Sec. 3.3 and 4.1).
- Decoding: scores are the sigmoid of the logits, boxes the deltas decoded by the head's `DeltaCoder`; NMS at
  IoU 0.5 (Sec. 4, "Inference").

`group_norm=True` puts a GroupNorm(32) after every tower conv (torchvision's `retinanet_resnet50_fpn_v2` head): as
torchvision's `Conv2dNormActivation`, the conv then has no bias and the GroupNorm torch's epsilon 1e-5.
"""

import functools

import keras
from keras import ops

from keras_focal.assigners import IoUAssigner
from keras_focal.boxes import IGNORED
from keras_focal.layers import AnchorGenerator, DeltaCoder
from keras_focal.losses import focal_loss, smooth_l1_loss
from keras_focal.losses import checks
from keras_focal.models.heads import base, towers
from keras_focal.models.heads.normalizers import global_sums
from keras_focal.models.heads.registry import register_head
from keras_focal.models.heads.user_loss import expects_logits, per_element


@register_head("retina")
@keras.saving.register_keras_serializable(package="keras_focal")
class RetinaNetHead(base.DenseHead):
    """RetinaNet's class and box subnets, its anchors, targets, loss and decoding defaults.

    Args:
        num_convs: convs per subnet tower (4 in the paper).
        group_norm: GroupNorm after every tower conv (torchvision v2); False in the paper.
        alpha, gamma: the focal loss (0.25, 2.0; Sec. 3.2 and Table 1b).
        smooth_l1_beta: the box loss's transition point (0.11, Detectron's RetinaNet config).
        anchor_generator: None for the paper's anchors (sizes 32-512 on P3-P7, 3 scales x 3 aspect ratios), an
            AnchorGenerator or its config.
        extra_levels_from: None for the paper's "c5", or "p5": the FPN input of P6 (torchvision's v1 uses P5).
        assigner: None for `IoUAssigner()` (the paper's), or any static assigner (`ATSSAssigner()`).
        box_coder: None for `DeltaCoder()` (weights 1, as torchvision and mmdetection), or a DeltaCoder.
    """

    detector_name = "retinanet"
    fpn_extra_levels_from = "c5"  # "P6 is obtained via a 3x3 stride-2 conv on C5" (Sec. 4)
    nms_iou_threshold = 0.5

    def __init__(self, num_convs=4, group_norm=False, alpha=0.25, gamma=2.0, smooth_l1_beta=0.11,
                 anchor_generator=None, extra_levels_from=None, assigner=None, box_coder=None):
        super().__init__(num_convs=num_convs, anchor_generator=anchor_generator, assigner=assigner,
                         box_coder=box_coder)
        self.group_norm = bool(group_norm)
        if extra_levels_from is not None:
            if extra_levels_from not in ("c5", "p5"):
                raise ValueError(f"extra_levels_from must be 'c5' or 'p5', got {extra_levels_from!r}")
            self.fpn_extra_levels_from = extra_levels_from
        self.alpha = checks.check_alpha(alpha)
        self.gamma = checks.check_non_negative(gamma, "gamma")
        self.smooth_l1_beta = checks.check_non_negative(smooth_l1_beta, "smooth_l1_beta")

    def default_anchor_generator(self):
        # Sec. 4 "Anchors": areas 32^2..512^2 on P3..P7 (4 x stride), scales 2^{0, 1/3, 2/3}, ratios {1:2, 1:1, 2:1}.
        return AnchorGenerator(min_level=3, max_level=7, anchor_size=4.0, num_scales=3,
                               aspect_ratios=(0.5, 1.0, 2.0))

    def default_assigner(self):
        return IoUAssigner()

    def default_box_coder(self):
        return DeltaCoder()

    def __call__(self, features, num_classes):
        width = features[0].shape[-1]
        num_anchors = self.anchor_generator.anchors_per_location
        # torchvision's Conv2dNormActivation: no conv bias before a norm layer; torch's GroupNorm epsilon 1e-5.
        tower = dict(group_norm=self.group_norm, conv_bias=not self.group_norm, epsilon=1e-5)
        class_tower = towers.tower(width, self.num_convs, "class_subnet", **tower)
        box_tower = towers.tower(width, self.num_convs, "box_subnet", **tower)
        class_out = towers.conv3x3(num_anchors * num_classes, "class_subnet_logits", bias=towers.prior_bias())
        box_out = towers.conv3x3(num_anchors * 4, "box_subnet_deltas")
        class_maps = [class_out(towers.apply(class_tower, f)) for f in features]
        box_maps = [box_out(towers.apply(box_tower, f)) for f in features]
        return {
            "class_logits": towers.flatten_levels(class_maps, num_classes, "class_logits"),
            "box_outputs": towers.flatten_levels(box_maps, 4, "box_outputs"),
        }

    def loss(self, targets, outputs, image_height, image_width, classification_loss=None, box_loss=None):
        """targets: "class_targets" int [B, A] (class, -1 background, -2 ignored), and "box_targets" [B, A, 4] or
        what gives the matched boxes (`base.matched_ground_truth`), which the box coder encodes against the anchors.
        outputs: "class_logits" [B, A, C], "box_outputs" [B, A, 4] deltas.
        classification_loss: per (anchor, class) element, on the one-hot targets and the logits (probabilities if
        it is a Loss with from_logits=False); box_loss: per delta. Both default to the paper's losses."""
        logits = ops.cast(outputs["class_logits"], "float32")
        deltas = ops.cast(outputs["box_outputs"], "float32")
        class_targets = ops.cast(targets["class_targets"], "int32")
        positive = ops.cast(class_targets >= 0, "float32")
        not_ignored = ops.cast(class_targets != IGNORED, "float32")
        num_positive = ops.maximum(global_sums({"positive": ops.sum(positive)})["positive"], 1.0)

        one_hot = ops.one_hot(ops.maximum(class_targets, 0), ops.shape(logits)[-1]) * positive[..., None]
        if classification_loss is None:
            classification_loss = functools.partial(focal_loss, alpha=self.alpha, gamma=self.gamma, from_logits=True)
        class_input = logits if expects_logits(classification_loss) else ops.sigmoid(logits)
        class_values = per_element(classification_loss, one_hot, class_input, name="classification_loss")
        class_loss = ops.sum(class_values * not_ignored[..., None]) / num_positive

        if "box_targets" in targets:
            box_targets = ops.cast(targets["box_targets"], "float32")
        else:
            anchors = self.anchor_generator(image_height, image_width)
            # non-positive anchors are encoded against themselves: zero deltas, finite, weighted 0 below
            matched = ops.where(class_targets[..., None] >= 0, base.matched_ground_truth(targets), anchors[None])
            box_targets = self.box_coder.encode(anchors, matched, image_height, image_width)
        if box_loss is None:
            box_loss = functools.partial(smooth_l1_loss, beta=self.smooth_l1_beta)
        box_values = per_element(box_loss, box_targets, deltas, name="box_loss")
        regression_loss = ops.sum(box_values * positive[..., None]) / num_positive
        return class_loss, regression_loss

    def get_config(self):
        config = super().get_config()
        config.update(group_norm=self.group_norm, alpha=self.alpha, gamma=self.gamma,
                      smooth_l1_beta=self.smooth_l1_beta, extra_levels_from=self.fpn_extra_levels_from)
        return config
