"""The TOOD head (Feng et al. 2021, "TOOD: Task-aligned One-stage Object Detection"; mmdetection's `TOODHead` in
`dense_heads/tood_head.py`, config `tood_r50_fpn_1x_coco.py`).

Data flow:
- `head(features, num_classes)`, the T-head (Sec. 3.1, Fig. 3), its layers shared across the levels P3-P7:
  - task-interactive features: `num_convs` (6) stacked 3x3 conv + GroupNorm(32) + ReLU, each output kept, joined
    to ``X`` ``[B, H, W, 6 width]``;
  - task decomposition with layer attention (Eq. 1-2), once for the class branch and once for the box branch:
    ``w = sigmoid(conv1x1(relu(conv1x1(avgpool(X)))))`` gives one weight per stacked conv, and
    ``Y = relu(GN(conv1x1(concat_k w_k X_k)))`` (mmdetection folds ``w`` into the conv weight; the product is the
    same);
  - class alignment (Eq. 4): class logits from a 3x3 conv on the class branch, an alignment logit ``M`` from
    ``conv3x3(relu(conv1x1(X)))``; the score is ``sqrt(sigmoid(logit) * sigmoid(M))`` (`scores`, which the decoder
    and the exported graph use);
  - boxes, anchor-free (mmdetection `anchor_type='anchor_free'`): distances (left, top, right, bottom) in strides,
    ``scale_l * exp(conv3x3(box branch))`` with one learnable scale per level;
  - box alignment (Eq. 5; `box_alignment=True`, the default): each of the 4 box sides, as an absolute
    coordinate, is read at its own learnt offset ``(dy, dx) = conv3x3(relu(conv1x1(X)))`` (8 channels, zero at the
    start) by bilinear sampling, written with gathers (`BoxAlignment`), for mmdetection's `deform_sampling`; a
    sampled box whose sides cross keeps the unsampled one.
  Outputs: "class_logits" [B, A, C], "alignment_logits" [B, A, 1], "box_outputs" [B, A, 4] distances.
- `head.assign_targets`: the task-aligned assigner (`TaskAlignedAssigner(topk=13, alpha=1, beta=6)`) on the
  detached scores and decoded boxes; during the warm-up (the first `warmup_fraction` of `total_steps`, from the
  train-step counter, so a resumed run picks the phase its step says) `ATSSAssigner(topk=9)` instead.
- `head.loss`: after the warm-up, Quality Focal Loss (beta 2, on the scores) against ``t_hat`` at the ground-truth
  class, and GIoU (weight 2.0) weighted by ``t_hat``, both divided by the sum of ``t_hat`` over the global batch.
  During the warm-up, focal loss (alpha 0.25, gamma 2, on the scores) against the one-hot targets divided by the
  number of positives, and GIoU weighted by the centerness of the anchor in its box, divided by the sum of those
  weights (mmdetection `TOODHead.loss_by_feat_single`, `initial_loss_cls`, `centerness_target`).
- Decoding: the scores above, distances, NMS at IoU 0.6, 100 detections (mmdetection `test_cfg`).

How it differs from GFL: GFL learns a distribution per box side and scores the IoU of a box with its ground truth,
with static ATSS targets; TOOD predicts one distance per side and learns soft targets chosen by its own predictions
(the anchors whose score and box are both good), and aligns both tasks in the head (layer attention, the alignment
score, the box sampling).
"""

import keras
import tensorflow as tf
from keras import ops

from keras_focal.assigners import ATSSAssigner
from keras_focal.assigners.base import resolve_assigner
from keras_focal.assigners.task_aligned import TaskAlignedAssigner
from keras_focal.boxes import centers
from keras_focal.layers import AnchorGenerator, DistanceCoder, Scale
from keras_focal.losses import focal_loss, giou_loss, quality_focal_loss
from keras_focal.losses import _common as C
from keras_focal.models.heads import base, towers
from keras_focal.models.heads.normalizers import global_sums
from keras_focal.models.heads.registry import register_head
from keras_focal.models.heads.user_loss import expects_logits, per_element

# mmdetection `tood_r50_fpn_1x_coco.py`: `stacked_convs=6`; `initial_epoch=4` of the 12-epoch schedule with
# `initial_assigner=ATSSAssigner(topk=9)` and `initial_loss_cls=FocalLoss(alpha=0.25, gamma=2.0, activated=True)`;
# `loss_cls=QualityFocalLoss(beta=2.0, activated=True)`, `loss_bbox=GIoULoss(loss_weight=2.0)`.
STACKED_CONVS = 6
WARMUP_FRACTION = 4 / 12
QFL_BETA = 2.0
GIOU_WEIGHT = 2.0
WARMUP_FOCAL_ALPHA = 0.25
WARMUP_FOCAL_GAMMA = 2.0
# mmdetection `TaskDecomposition(feat_channels, stacked_convs, la_down_rate=stacked_convs * 8)`: the layer
# attention's hidden width is `stacked_convs * width / (stacked_convs * 8)` = width / 8.
LAYER_ATTENTION_DOWN_RATE = 8
# mmdetection `init_weights`: layer attention and offset convs N(0, 0.001), the others N(0, 0.01); the last offset
# conv starts at zero (no sampling offset), the alignment logit at the prior bias.
ATTENTION_INIT = {"class_name": "RandomNormal", "config": {"mean": 0.0, "stddev": 0.001}}
# torch's GroupNorm epsilon (mmdetection `norm_cfg=dict(type='GN', num_groups=32)`).
GROUP_NORM_EPSILON = 1e-5


# ------------------------------------------------------------------------------------------------- layers
@keras.saving.register_keras_serializable(package="keras_focal")
class StackScale(keras.layers.Layer):
    """Layer attention's product: ``features`` ``[B, H, W, S * C]`` (S stacked maps of C channels) times one weight
    per map, ``weights`` ``[B, 1, 1, S]`` -> ``[B, H, W, S * C]``."""

    def __init__(self, stacks, **kwargs):
        super().__init__(**kwargs)
        self.stacks = int(stacks)

    def call(self, features, weights):
        shape = ops.shape(features)
        channels = features.shape[-1] // self.stacks
        stacked = ops.reshape(features, (shape[0], shape[1], shape[2], self.stacks, channels))
        scaled = stacked * ops.cast(weights, stacked.dtype)[..., None]
        return ops.reshape(scaled, (shape[0], shape[1], shape[2], self.stacks * channels))

    def compute_output_shape(self, features_shape, weights_shape):
        return features_shape

    def get_config(self):
        config = super().get_config()
        config.update(stacks=self.stacks)
        return config


@keras.saving.register_keras_serializable(package="keras_focal")
class BoxAlignment(keras.layers.Layer):
    """TOOD's box alignment (Sec. 3.1, Eq. 5): each box side is read, bilinearly, at its own offset.

    ``distances`` ``[B, H, W, 4]`` (left, top, right, bottom, in strides) and ``offsets`` ``[B, H, W, 8]`` (``(dy,
    dx)`` per side, in cells) -> ``[B, H, W, 4]`` distances. The sides become absolute coordinates on the level's
    grid (cell ``(i, j)`` has its centre at ``(i + c, j + c)``, ``c`` the anchors' centre offset): ``x1 = j + c - l``,
    ``y1 = i + c - t``, ``x2 = j + c + r``, ``y2 = i + c + b``; side ``k`` is sampled at ``(i + dy_k, j + dx_k)``
    from the four cells around it, zero outside the map (as mmcv's deformable conv, which mmdetection's
    `deform_sampling` uses with a 1x1 identity kernel), and turned back into distances from cell ``(i, j)``. A
    sampled box with ``x1 > x2`` or ``y1 > y2`` keeps the unsampled box (mmdetection: "some boxes will become
    invalid ... which will make the GIoULoss negative"). The sampling is four gathers from the flattened map.
    """

    def __init__(self, center_offset=0.5, **kwargs):
        super().__init__(**kwargs)
        self.center_offset = float(center_offset)

    def call(self, distances, offsets):
        distances = ops.cast(distances, "float32")
        offsets = ops.cast(offsets, "float32")
        shape = ops.shape(distances)
        b, h, w = shape[0], shape[1], shape[2]
        row = ops.cast(ops.arange(h), "float32")[None, :, None] + self.center_offset  # [1, H, 1]
        col = ops.cast(ops.arange(w), "float32")[None, None, :] + self.center_offset  # [1, 1, W]
        left, top, right, bottom = (distances[..., k] for k in range(4))
        box = ops.stack([col - left, row - top, col + right, row + bottom], axis=-1)  # x1 y1 x2 y2 [B, H, W, 4]

        dy, dx = offsets[..., 0::2], offsets[..., 1::2]  # [B, H, W, 4], side k's offset
        y = ops.cast(ops.arange(h), "float32")[None, :, None, None] + dy
        x = ops.cast(ops.arange(w), "float32")[None, None, :, None] + dx
        y0, x0 = ops.floor(y), ops.floor(x)
        fy, fx = y - y0, x - x0
        flat = ops.reshape(box, (-1,))
        base_index = (ops.arange(b, dtype="int32") * (h * w * 4))[:, None, None, None] + ops.arange(4, dtype="int32")
        sampled = 0.0
        for oy, ox, weight in ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx), (1, 0, fy * (1 - fx)),
                               (1, 1, fy * fx)):
            yi, xi = ops.cast(y0, "int32") + oy, ops.cast(x0, "int32") + ox
            inside = ops.logical_and(ops.logical_and(yi >= 0, yi < h), ops.logical_and(xi >= 0, xi < w))
            index = base_index + (ops.clip(yi, 0, h - 1) * w + ops.clip(xi, 0, w - 1)) * 4
            sampled = sampled + ops.where(inside, ops.take(flat, index, axis=0) * weight, 0.0)
        crossed = ops.logical_or(sampled[..., 0] > sampled[..., 2], sampled[..., 1] > sampled[..., 3])
        sampled = ops.where(crossed[..., None], box, sampled)
        return ops.stack([col - sampled[..., 0], row - sampled[..., 1], sampled[..., 2] - col,
                          sampled[..., 3] - row], axis=-1)

    def compute_output_shape(self, distances_shape, offsets_shape):
        return distances_shape

    def get_config(self):
        config = super().get_config()
        config.update(center_offset=self.center_offset)
        return config


def _conv1x1(filters, name, activation=None, use_bias=True, initializer=towers.HEAD_KERNEL_INIT):
    return keras.layers.Conv2D(filters, 1, activation=activation, use_bias=use_bias, name=name,
                               kernel_initializer=keras.initializers.get(initializer))


def _group_norm(width, name):
    return keras.layers.GroupNormalization(groups=min(32, width), epsilon=GROUP_NORM_EPSILON, name=name)


def log_alignment_score(class_logits, alignment_logits):
    """``log sqrt(sigmoid(class) * sigmoid(alignment))`` (TOOD Eq. 4, mmdetection `sigmoid_geometric_mean`),
    from log-sigmoids, so that its gradient stays finite where a sigmoid underflows."""
    return 0.5 * (ops.log_sigmoid(class_logits) + ops.log_sigmoid(alignment_logits))


# -------------------------------------------------------------------------------------------------- head
@register_head("tood")
@keras.saving.register_keras_serializable(package="keras_focal")
class TOODHead(base.DenseHead):
    """The TOOD head: the T-head, task-aligned targets after an ATSS warm-up, QFL + GIoU, decoding defaults.

    Args:
        num_convs: stacked task-interactive convs (6, mmdetection `stacked_convs`).
        box_alignment: sample each box side at a learnt offset (`BoxAlignment`, Eq. 5; True, as the paper).
            False drops the sampling and its offset branch: a faster trace and export, and on the built-in
            dataset 3.1 AP less (`benchmarks/heads.py`, `docs/heads.md`).
        qfl_beta: Quality Focal Loss exponent (2.0).
        giou_weight: weight of the GIoU term (2.0).
        warmup_fraction: the part of training, from step 0, with the ATSS assigner and focal loss (4 / 12).
        total_steps: the number of train steps of the run, set by the training entry point
            (`head.total_steps = epochs * steps_per_epoch`); None: no warm-up, task-aligned from the first step.
        warmup_alpha, warmup_gamma: the warm-up's focal loss (0.25, 2.0).
        anchor_generator: None for one square anchor of 8 x stride per location on P3-P7 (mmdetection
            `octave_base_scale=8, scales_per_octave=1`; the anchor-free head uses its centre, the warm-up's ATSS
            its box), an AnchorGenerator (one anchor per location) or its config.
        assigner: None for `TaskAlignedAssigner()`, or another assigner that gives "alignment".
        warmup_assigner: None for `ATSSAssigner(topk=9)`, or any static assigner.
        box_coder: None for `DistanceCoder()` (the head predicts distances).

    The head's step-dependent choice needs the train-step counter (`assign_targets(..., step=...)`, which the
    detector passes from `optimizer.iterations`): a run resumed from a checkpoint restores the counter, and so the
    phase. `compile(classification_loss=...)` replaces the QFL term after the warm-up (per (anchor, class) element,
    on the alignment targets and the scores, or their logits for a loss that takes logits);
    `compile(box_loss=...)` replaces GIoU (per box, normalized yxyx) in both phases.
    """

    fpn_extra_levels_from = "p5"  # mmdetection `add_extra_convs='on_output'`
    nms_iou_threshold = 0.6  # mmdetection `test_cfg=dict(nms=dict(type='nms', iou_threshold=0.6), max_per_img=100)`
    assignment_keys = ("alignment",)

    def __init__(self, num_convs=STACKED_CONVS, box_alignment=True, qfl_beta=QFL_BETA, giou_weight=GIOU_WEIGHT,
                 warmup_fraction=WARMUP_FRACTION, total_steps=None, warmup_alpha=WARMUP_FOCAL_ALPHA,
                 warmup_gamma=WARMUP_FOCAL_GAMMA, anchor_generator=None, assigner=None, warmup_assigner=None,
                 box_coder=None):
        super().__init__(num_convs=num_convs, anchor_generator=anchor_generator, assigner=assigner,
                         box_coder=box_coder)
        if self.num_convs < 1:
            raise ValueError(f"TOODHead needs num_convs >= 1 (its layer attention weighs the stacked convs), got "
                             f"{num_convs}")
        if self.anchor_generator.anchors_per_location != 1:
            raise ValueError("TOODHead is anchor-free: its anchor_generator must give one anchor per location, got "
                             f"{self.anchor_generator.anchors_per_location}")
        if not isinstance(self.box_coder, DistanceCoder):
            raise ValueError(f"TOODHead predicts distances: box_coder must be a DistanceCoder, got {self.box_coder!r}")
        self.warmup_assigner = resolve_assigner(warmup_assigner, ATSSAssigner)
        if self.warmup_assigner.needs_predictions:
            raise ValueError("TOODHead's warmup_assigner must be static (it runs before the predictions mean "
                             f"anything), got {self.warmup_assigner!r}")
        if not 0.0 <= float(warmup_fraction) <= 1.0:
            raise ValueError(f"warmup_fraction must be in [0, 1], got {warmup_fraction}")
        if total_steps is not None and int(total_steps) < 0:
            raise ValueError(f"total_steps must be None or >= 0, got {total_steps}")
        self.box_alignment = bool(box_alignment)
        self.qfl_beta = C.check_non_negative(qfl_beta, "qfl_beta")
        self.giou_weight = C.check_non_negative(giou_weight, "giou_weight")
        self.warmup_fraction = float(warmup_fraction)
        self.total_steps = None if total_steps is None else int(total_steps)
        self.warmup_alpha = C.check_alpha(warmup_alpha)
        self.warmup_gamma = C.check_non_negative(warmup_gamma, "warmup_gamma")

    def default_anchor_generator(self):
        return AnchorGenerator(min_level=3, max_level=7, anchor_size=8.0, num_scales=1, aspect_ratios=(1.0,))

    def default_assigner(self):
        return TaskAlignedAssigner()

    def default_box_coder(self):
        return DistanceCoder()

    @property
    def warmup_steps(self):
        """The steps with the warm-up assigner and loss: ``round(warmup_fraction * total_steps)``, 0 without
        `total_steps`."""
        return 0 if self.total_steps is None else int(round(self.warmup_fraction * self.total_steps))

    # ------------------------------------------------------------------------------------------- graph
    def __call__(self, features, num_classes):
        width = features[0].shape[-1]
        stacks = self.num_convs
        inter = towers.tower(width, stacks, "tood_inter", group_norm=True, conv_bias=False,
                             epsilon=GROUP_NORM_EPSILON)
        pool = keras.layers.GlobalAveragePooling2D(keepdims=True, name="tood_pool")
        hidden = max(1, width // LAYER_ATTENTION_DOWN_RATE)
        branches = {}
        for task in ("class", "box"):
            branches[task] = [
                _conv1x1(hidden, f"tood_{task}_attention0", "relu", initializer=ATTENTION_INIT),
                _conv1x1(stacks, f"tood_{task}_attention1", "sigmoid", initializer=ATTENTION_INIT),
                StackScale(stacks, name=f"tood_{task}_stack_scale"),
                _conv1x1(width, f"tood_{task}_reduction", use_bias=False),
                _group_norm(width, f"tood_{task}_reduction_gn"),
                keras.layers.ReLU(name=f"tood_{task}_reduction_relu"),
            ]
        class_out = towers.conv3x3(num_classes, "tood_cls", bias=towers.prior_bias())
        box_out = towers.conv3x3(4, "tood_reg")
        exp = keras.layers.Activation("exponential", name="tood_reg_exp")
        alignment = [_conv1x1(max(1, width // 4), "tood_cls_prob0", "relu"),
                     towers.conv3x3(1, "tood_cls_prob1", bias=towers.prior_bias())]
        if self.box_alignment:
            offsets = [_conv1x1(max(1, width // 4), "tood_reg_offset0", "relu", initializer=ATTENTION_INIT),
                       keras.layers.Conv2D(8, 3, padding="same", kernel_initializer="zeros",
                                           name="tood_reg_offset1")]
            sampler = BoxAlignment(self.anchor_generator.center_offset, name="tood_box_alignment")
        join = keras.layers.Concatenate(name="tood_inter_concat") if stacks > 1 else None

        class_maps, alignment_maps, box_maps = [], [], []
        for level, x in zip(self.anchor_generator.levels, features):
            stacked = []
            for i in range(stacks):
                x = towers.apply(inter[3 * i:3 * i + 3], x)
                stacked.append(x)
            joined = join(stacked) if join is not None else stacked[0]
            avg = pool(joined)
            task_features = {}
            for task, (att0, att1, scale, reduce, norm, relu) in branches.items():
                task_features[task] = relu(norm(reduce(scale(joined, att1(att0(avg))))))
            class_maps.append(class_out(task_features["class"]))
            alignment_maps.append(towers.apply(alignment, joined))
            distances = Scale(name=f"tood_scale_p{level}")(exp(box_out(task_features["box"])))
            if self.box_alignment:
                distances = sampler(distances, towers.apply(offsets, joined))
            box_maps.append(distances)
        return {
            "class_logits": towers.flatten_levels(class_maps, num_classes, "class_logits"),
            "alignment_logits": towers.flatten_levels(alignment_maps, 1, "alignment_logits"),
            "box_outputs": towers.flatten_levels(box_maps, 4, "box_outputs"),
        }

    # --------------------------------------------------------------------------------------- inference
    def scores(self, outputs):
        """``sqrt(sigmoid(class logit) * sigmoid(alignment logit))`` [B, A, C] (Eq. 4)."""
        return ops.exp(self._log_scores(outputs))

    @staticmethod
    def _log_scores(outputs):
        return log_alignment_score(ops.cast(outputs["class_logits"], "float32"),
                                   ops.cast(outputs["alignment_logits"], "float32"))

    # ---------------------------------------------------------------------------------------- training
    def anchor_encoder(self):
        return None  # the task-aligned assigner runs in the train step, the warm-up's ATSS there too

    def assign_targets(self, targets, outputs, image_height, image_width, step=None):
        """The targets of the phase the train step is in: "class_targets", "matched_indices", "alignment" and
        "warmup" (a scalar bool). ``step`` is the train-step counter (the optimizer's `iterations`); without it,
        or without `total_steps`, the task-aligned phase."""
        if "class_targets" in targets:
            return targets
        classes = ops.cast(targets["classes"], "int32")
        if "is_crowd" in targets:  # crowd regions are never training targets
            classes = ops.where(ops.cast(targets["is_crowd"], "int32") > 0, -1, classes)
        boxes = ops.cast(targets["boxes"], "float32")

        def aligned():
            predictions = {"scores": ops.stop_gradient(self.scores(outputs)),
                           "boxes": ops.stop_gradient(self.decode_boxes(outputs, image_height, image_width))}
            assignment = self.assigner.assign(self.anchor_generator, boxes, classes, image_height, image_width,
                                              predictions=predictions)
            out = base.targets_from_assignment(assignment, classes)
            return {k: out[k] for k in ("class_targets", "matched_indices", "alignment")}

        def warmup():
            assignment = self.warmup_assigner.assign(self.anchor_generator, boxes, classes, image_height,
                                                     image_width)
            out = base.targets_from_assignment(assignment, classes)
            # mmdetection's warm-up: every positive counts 1 (`bbox_weights`), the box loss weighs by centerness
            out["alignment"] = ops.cast(out["class_targets"] >= 0, "float32")
            return {k: out[k] for k in ("class_targets", "matched_indices", "alignment")}

        if step is None or self.warmup_steps == 0:
            return {**targets, **aligned(), "warmup": ops.convert_to_tensor(False)}
        in_warmup = ops.less(ops.cast(step, "int64"), self.warmup_steps)
        return {**targets, **tf.cond(in_warmup, warmup, aligned), "warmup": in_warmup}

    def loss(self, targets, outputs, image_height, image_width, classification_loss=None, box_loss=None):
        """targets: from `assign_targets` ("class_targets", the matched boxes, "alignment", "warmup");
        outputs: the head's. Returns (classification term, weighted GIoU term), this replica's share."""
        anchors = self.anchor_generator(image_height, image_width)
        log_scores = self._log_scores(outputs)
        scores = ops.exp(log_scores)
        predicted = self.decode_boxes(outputs, image_height, image_width)
        class_targets = ops.cast(targets["class_targets"], "int32")
        positive_mask = class_targets >= 0
        positive = ops.cast(positive_mask, "float32")
        # Non-positive anchors get a harmless dummy box, so no NaN can leak through a zero weight.
        dummy = ops.convert_to_tensor([0.0, 0.0, 1.0, 1.0])
        matched = ops.where(positive_mask[..., None], base.matched_ground_truth(targets), dummy)
        one_hot = ops.one_hot(ops.maximum(class_targets, 0), ops.shape(scores)[-1]) * positive[..., None]
        if "alignment" not in targets:
            raise ValueError(f"TOODHead's loss needs the 'alignment' targets of its assigner; got keys "
                             f"{sorted(targets)}")
        alignment = ops.cast(targets["alignment"], "float32") * positive

        def aligned_phase():
            soft = one_hot * alignment[..., None]
            if classification_loss is None:  # QFL on the scores (mmdetection `activated=True`)
                values = quality_focal_loss(soft, scores, beta=self.qfl_beta, from_logits=False)
            else:
                class_input = scores
                if expects_logits(classification_loss):  # the score's logit, log p - log(1 - p)
                    class_input = log_scores - ops.log(-ops.expm1(ops.minimum(log_scores, -1e-7)))
                values = per_element(classification_loss, soft, class_input, name="classification_loss")
            return ops.sum(values), ops.sum(alignment), alignment

        def warmup_phase():
            values = focal_loss(one_hot, scores, alpha=self.warmup_alpha, gamma=self.warmup_gamma)
            return ops.sum(values), ops.sum(positive), centerness(anchors, matched) * positive

        warm = targets.get("warmup")
        if warm is None:
            class_sum, class_norm, weight = aligned_phase()
        else:
            class_sum, class_norm, weight = tf.cond(ops.convert_to_tensor(warm), warmup_phase, aligned_phase)

        overlap_loss = giou_loss if box_loss is None else box_loss
        overlap = per_element(overlap_loss, matched, predicted, element_axes=1, name="box_loss")
        totals = global_sums({"class": class_norm, "box": ops.sum(weight)})
        # mmdetection divides both by their sums over the batch, at least 1 (`.clamp_(min=1)`)
        class_loss = class_sum / ops.maximum(totals["class"], 1.0)
        box_loss_value = self.giou_weight * ops.sum(overlap * weight) / ops.maximum(totals["box"], 1.0)
        return class_loss, box_loss_value

    def get_config(self):
        config = super().get_config()
        config.update(box_alignment=self.box_alignment, qfl_beta=self.qfl_beta, giou_weight=self.giou_weight,
                      warmup_fraction=self.warmup_fraction, total_steps=self.total_steps,
                      warmup_alpha=self.warmup_alpha, warmup_gamma=self.warmup_gamma,
                      warmup_assigner=keras.saving.serialize_keras_object(self.warmup_assigner))
        return config


def centerness(anchors, boxes):
    """FCOS centerness of each anchor centre in its box (mmdetection `TOODHead.centerness_target`):
    ``sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b))`` with the distances l, t, r, b from the centre to the
    sides; ``anchors`` ``[A, 4]`` and ``boxes`` ``[..., A, 4]`` normalized yxyx -> ``[..., A]``, 0 where the centre
    is not inside."""
    c = centers(anchors)
    cy, cx = c[..., 0], c[..., 1]
    top, left = cy - boxes[..., 0], cx - boxes[..., 1]
    bottom, right = boxes[..., 2] - cy, boxes[..., 3] - cx
    ratio_x = ops.minimum(left, right) / ops.maximum(ops.maximum(left, right), 1e-12)
    ratio_y = ops.minimum(top, bottom) / ops.maximum(ops.maximum(top, bottom), 1e-12)
    return ops.sqrt(ops.relu(ratio_x) * ops.relu(ratio_y))
