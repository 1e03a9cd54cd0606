"""RetinaNet (Lin et al. 2017, "Focal Loss for Dense Object Detection") and its GFL head variant
(Li et al. 2020, "Generalized Focal Loss"), as one functional Keras model.

The story, in the order the data flows:
1. Images, RGB in [0, 255] of any size and dtype, are normalized inside the model (ImageNet mean / std).
2. A ResNet backbone gives C3-C5 (strides 8-32); the FPN turns them into P3-P7 (Sec. 4, "Feature Pyramid
   Network Backbone").
3. Two subnets shared across levels predict, for every anchor, class logits and box regressions (Sec. 4,
   "Classification Subnet", "Box Regression Subnet"). `model(images)` returns these raw outputs.
4. Training (`compute_loss`): the AnchorEncoder assigns ground truth to anchors (IoU >= 0.5 positive, < 0.4
   background, Sec. 4 "Anchors"; ATSS for GFL), normally in the tf.data pipeline, and the focal loss is normalized
   by the number of positive anchors (Sec. 4.1).
5. Inference (`detect`, used by `predict` and by the SavedModel export): the DetectionDecoder keeps the top 1000
   candidates per level above score 0.05, decodes boxes and applies per-class NMS at IoU 0.5, 100 detections
   (Sec. 4, "Inference").
"""

import keras
from keras import ops

from keras_focal import layers as kf_layers
from keras_focal.models import detection_loss
from keras_focal.models.backbones import build_backbone
from keras_focal.models.fpn import feature_pyramid
from keras_focal.models.heads import gfl_head, retina_head

# ImageNet statistics, the normalization of the keras-hub ResNet presets.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

HEADS = ("retina", "gfl")


@keras.saving.register_keras_serializable(package="keras_focal")
class ImageNormalization(keras.layers.Layer):
    """Casts RGB images in [0, 255] (uint8 or float) to float and applies (x / 255 - mean) / std."""

    def call(self, images):
        images = ops.cast(images, self.compute_dtype)
        mean = ops.convert_to_tensor([255.0 * m for m in IMAGENET_MEAN], dtype=self.compute_dtype)
        std = ops.convert_to_tensor([255.0 * s for s in IMAGENET_STD], dtype=self.compute_dtype)
        return (images - mean) / std


def default_anchor_generator(head):
    if head == "retina":
        # Sec. 4 "Anchors": areas 32^2..512^2 on P3..P7 (4 x stride), scales 2^{0, 1/3, 2/3}, ratios {1:2, 1:1, 2:1}.
        return kf_layers.AnchorGenerator(min_level=3, max_level=7, anchor_size=4.0, num_scales=3,
                                         aspect_ratios=(0.5, 1.0, 2.0))
    # GFL: one square anchor of 8 x stride per location (ATSS/GFL `octave_base_scale=8, scales_per_octave=1`).
    return kf_layers.AnchorGenerator(min_level=3, max_level=7, anchor_size=8.0, num_scales=1, aspect_ratios=(1.0,))


@keras.saving.register_keras_serializable(package="keras_focal")
class RetinaNet(keras.Model):
    """RetinaNet or GFL detector as a functional Keras model.

    Args:
        num_classes: number of foreground classes (no background class: the heads use sigmoids).
        backbone: "resnet18" | "resnet34" | "resnet50" | "resnet101" | "resnet152", or a Keras model exposing
            C3-C5 (keras-hub `pyramid_outputs` with keys P3-P5, or exactly three outputs).
        head: "retina" (focal loss, 9 anchors per location) or "gfl" (QFL + DFL + GIoU, ATSS, 1 anchor).
        fpn_width: channels of the FPN and of the head convs; 256 in both papers.
        head_convs: convs per subnet tower; 4 in both papers.
        image_size: (height, width) the model is trained and served at; the SavedModel export resizes to it.
        backbone_weights: None (random init), "imagenet" (keras-hub preset, needs a network) or a local file.
        freeze_stem, freeze_batchnorm: freeze the backbone's stem / run its BatchNorms in inference mode
            (Detectron, mmdetection). `freeze_batchnorm=None` freezes them exactly when pretrained weights are loaded
            (and `sync_batchnorm` is not True).
        sync_batchnorm: training-mode BatchNorms of the backbone compute their statistics over the global batch,
            across replicas and workers (`BatchNormalization(synchronized=True)`). `None` (default) synchronizes
            exactly when the BatchNorms are not frozen and the model is built under a strategy with more than one
            replica, so the result does not depend on how the global batch is split; see README.md, "Scale out".
        score_threshold, iou_threshold, pre_nms_topk, max_detections: decoding (0.05, 0.5 or 0.6 for GFL, 1000, 100).
        focal_alpha, focal_gamma: focal loss of the RetinaNet head (0.25, 2.0; Sec. 3.2 and Table 1b).
        reg_max: GFL distribution bins minus one (16 -> 17 bins).
        anchor_generator: an `AnchorGenerator` (or its config) replacing the head's default anchors, e.g.
            torchvision's conventions (see `keras_focal.models.torchvision`).
        extra_levels_from: "c5" or "p5", the input of P6 (None: C5 for the RetinaNet head, P5 for GFL).
        group_norm: GroupNorm(32) in the RetinaNet head towers (torchvision's v2 head).
        symmetric_padding: pad the FPN's stride-2 convs (P6, P7) on every side, as torch does.
        trainable_backbone_layers: torchvision's meaning: how many of the backbone's stages, counted from C5
            down to the stem (layer4, layer3, layer2, layer1, conv1), are trained; None trains all (0-5).
        letterbox: images are resized keeping their aspect ratio and padded to `image_size`
            (`keras_focal.letterbox`) by the SavedModel export, `evaluate_model` and `examples/predict.py`, instead
            of stretched; pass the same to `data.make_dataset` for training.
    """

    def __init__(self, num_classes, backbone="resnet50", head="retina", fpn_width=256, head_convs=4,
                 image_size=(512, 512), backbone_weights=None, freeze_stem=False, freeze_batchnorm=None,
                 score_threshold=0.05, iou_threshold=None, pre_nms_topk=1000, max_detections=100,
                 focal_alpha=0.25, focal_gamma=2.0, reg_max=16, sync_batchnorm=None,
                 anchor_generator=None, extra_levels_from=None, group_norm=False, symmetric_padding=False,
                 trainable_backbone_layers=None, letterbox=False, **kwargs):
        if head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {head!r}")
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if freeze_batchnorm is None:
            freeze_batchnorm = backbone_weights is not None and not sync_batchnorm
        if sync_batchnorm is None:
            import tensorflow as tf

            sync_batchnorm = not freeze_batchnorm and tf.distribute.get_strategy().num_replicas_in_sync > 1
        if isinstance(backbone, dict):  # from get_config
            backbone = keras.saving.deserialize_keras_object(backbone)

        images = keras.Input(shape=(None, None, 3), name="images")
        if group_norm and head != "retina":
            raise ValueError("group_norm is an option of the 'retina' head (the GFL head always has GroupNorm)")
        features = build_backbone(backbone, backbone_weights, freeze_stem, freeze_batchnorm, sync_batchnorm,
                                  trainable_backbone_layers=trainable_backbone_layers)
        c3, c4, c5 = features(ImageNormalization(name="normalization")(images))
        if extra_levels_from is None:
            extra_levels_from = "c5" if head == "retina" else "p5"
        pyramid = feature_pyramid(c3, c4, c5, fpn_width, extra_levels_from=extra_levels_from,
                                  symmetric_padding=symmetric_padding)
        if anchor_generator is None:
            anchor_generator = default_anchor_generator(head)
        else:
            anchor_generator = kf_layers.AnchorGenerator.resolve(anchor_generator)
        if head == "retina":
            outputs = retina_head(pyramid, num_classes, anchor_generator.anchors_per_location, fpn_width, head_convs,
                                  group_norm=group_norm)
        else:
            outputs = gfl_head(pyramid, num_classes, fpn_width, head_convs, reg_max)
        name = kwargs.pop("name", f"{head}net" if head == "retina" else "gfl")
        super().__init__(inputs=images, outputs=outputs, name=name, **kwargs)

        self.num_classes = int(num_classes)
        self.backbone_spec = backbone
        self.head = head
        self.fpn_width = fpn_width
        self.head_convs = head_convs
        self.image_size = tuple(int(s) for s in image_size)
        self.backbone_weights = backbone_weights
        self.freeze_stem = freeze_stem
        self.freeze_batchnorm = freeze_batchnorm
        self.sync_batchnorm = bool(sync_batchnorm)
        self.score_threshold = score_threshold
        self.iou_threshold = iou_threshold
        self.pre_nms_topk = pre_nms_topk
        self.max_detections = max_detections
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        self.reg_max = reg_max
        self.extra_levels_from = extra_levels_from
        self.group_norm = bool(group_norm)
        self.symmetric_padding = bool(symmetric_padding)
        self.trainable_backbone_layers = trainable_backbone_layers
        self.letterbox = bool(letterbox)

        self.anchor_generator = anchor_generator
        self.anchor_encoder = kf_layers.AnchorEncoder(
            anchor_generator=anchor_generator, assigner="iou" if head == "retina" else "atss")
        self.decoder = kf_layers.DetectionDecoder(
            anchor_generator=anchor_generator,
            box_format="deltas" if head == "retina" else "distances",
            score_threshold=score_threshold,
            # Sec. 4 "Inference": NMS at 0.5; GFL (mmdetection gfl_r50_fpn_1x) uses 0.6.
            iou_threshold=iou_threshold if iou_threshold is not None else (0.5 if head == "retina" else 0.6),
            pre_nms_topk=pre_nms_topk,
            max_detections=max_detections,
        )
        if head == "gfl":
            self.integral = kf_layers.Integral(reg_max=reg_max)
        self.classification_loss = None
        self.box_loss = None
        self.class_loss_tracker = keras.metrics.Mean(name="class_loss")
        self.box_loss_tracker = keras.metrics.Mean(name="box_loss")

    # ----------------------------------------------------------------------------------------------- training
    def compile(self, optimizer="sgd", classification_loss=None, box_loss=None, **kwargs):
        """Compiles with the paper's losses; `classification_loss` / `box_loss` replace the defaults with any
        Keras or keras_focal loss object (RetinaNet head; logits are passed when the loss has from_logits=True)."""
        if "loss" in kwargs:
            raise ValueError("RetinaNet computes its own loss; use classification_loss= and box_loss= instead of loss=")
        self.classification_loss = keras.losses.get(classification_loss) if classification_loss else None
        self.box_loss = keras.losses.get(box_loss) if box_loss else None
        super().compile(optimizer=optimizer, **kwargs)

    def encode_targets(self, images, targets):
        """Adds anchor targets to `targets` unless the tf.data pipeline already did (the fast path)."""
        if "class_targets" in targets:
            return targets
        height, width = ops.shape(images)[1], ops.shape(images)[2]
        encoded = self.anchor_encoder(targets["boxes"], targets["classes"], height, width)
        return {**targets, **encoded}

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if not isinstance(y, dict) or not ({"class_targets"} <= set(y) or {"boxes", "classes"} <= set(y)):
            raise ValueError(
                "RetinaNet expects targets as a dict with 'boxes' [B, M, 4] and 'classes' [B, M] "
                f"(padded with -1), got {type(y).__name__}"
                + (f" with keys {sorted(y)}" if isinstance(y, dict) else ""))
        targets = self.encode_targets(x, y)
        if self.head == "retina":
            total, class_loss, box_loss = detection_loss.retinanet_loss(
                targets, y_pred, self.focal_alpha, self.focal_gamma,
                classification_loss=self.classification_loss, box_loss=self.box_loss)
        else:
            height, width = ops.shape(x)[1], ops.shape(x)[2]
            total, class_loss, box_loss = detection_loss.gfl_loss(
                targets, y_pred, self.anchor_generator(height, width),
                self.anchor_generator.anchor_strides(height, width), height, width, reg_max=self.reg_max)
        # Trackers show the global-batch values: each replica holds its share (Keras' own unscale convention).
        replicas = detection_loss.num_replicas()
        self.class_loss_tracker.update_state(class_loss * replicas)
        self.box_loss_tracker.update_state(box_loss * replicas)
        losses = self.losses  # regularization terms, if any
        return total + ops.sum(losses) / replicas if losses else total

    # ---------------------------------------------------------------------------------------------- inference
    def detect(self, images):
        """Decoded detections for images [B, H, W, 3] in [0, 255]: the contract's output dict."""
        images = ops.convert_to_tensor(images)
        outputs = self(images, training=False)
        height, width = ops.shape(images)[1], ops.shape(images)[2]
        boxes = outputs["box_outputs"]
        if self.head == "gfl":
            boxes = self.integral(boxes)
        return self.decoder(outputs["class_logits"], boxes, height, width)

    def predict_step(self, data):
        x = data[0] if isinstance(data, (tuple, list)) else data
        return self.detect(x)

    # -------------------------------------------------------------------------------------------- persistence
    def get_config(self):
        backbone = self.backbone_spec
        if isinstance(backbone, keras.Model):
            backbone = keras.saving.serialize_keras_object(backbone)
        return {
            "name": self.name,
            "num_classes": self.num_classes,
            "backbone": backbone,
            "head": self.head,
            "fpn_width": self.fpn_width,
            "head_convs": self.head_convs,
            "image_size": list(self.image_size),
            # Weights travel with the saved model; never re-download or re-read a file when reloading.
            "backbone_weights": None,
            "freeze_stem": self.freeze_stem,
            "freeze_batchnorm": self.freeze_batchnorm,
            "sync_batchnorm": self.sync_batchnorm,
            "score_threshold": self.score_threshold,
            "iou_threshold": self.iou_threshold,
            "pre_nms_topk": self.pre_nms_topk,
            "max_detections": self.max_detections,
            "focal_alpha": self.focal_alpha,
            "focal_gamma": self.focal_gamma,
            "reg_max": self.reg_max,
            "anchor_generator": keras.saving.serialize_keras_object(self.anchor_generator),
            "extra_levels_from": self.extra_levels_from,
            "group_norm": self.group_norm,
            "symmetric_padding": self.symmetric_padding,
            "trainable_backbone_layers": self.trainable_backbone_layers,
            "letterbox": self.letterbox,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)
