"""RetinaNet (Lin et al. 2017, "Focal Loss for Dense Object Detection"): backbone + FPN + head, one functional Keras
model. The head is an object (`keras_focal.models.heads`): RetinaNet's own (`RetinaNetHead`), GFL's (`GFLHead`, Li
et al. 2020, "Generalized Focal Loss") or any registered one; by name it comes from the head registry.

The story, in the order the data flows:
1. Images, RGB in [0, 255] of any size and dtype, are normalized inside the model (ImageNet mean / std).
2. A ResNet backbone gives C3-C5 (strides 8-32); the FPN turns them into P3-P7 (Sec. 4, "Feature Pyramid
   Network Backbone"); the head says whether P6 comes from C5 or P5.
3. The head, shared across levels, predicts class logits and box outputs for every anchor (Sec. 4,
   "Classification Subnet", "Box Regression Subnet"). `model(images)` returns these raw outputs.
4. Training (`compute_loss`): the head's assigner gives each anchor its ground truth. A static assigner runs in
   the tf.data pipeline (`make_dataset(encoder=model.anchor_encoder)`) or, when the targets carry only boxes and
   classes, in the train step; a dynamic one (`assigner.needs_predictions`) in the train step, with the head's
   detached predictions (`head.assign_targets`). The head's loss is normalized over the global batch.
5. Inference (`detect`, used by `predict` and by the SavedModel export): the head turns its outputs into
   per-class scores (`head.scores`) and boxes (`head.decode_boxes`, its box coder), and `model.prediction_decoder`
   keeps the top 1000 candidates per level above score 0.05 and applies per-class NMS (IoU 0.5 for RetinaNet,
   0.6 for GFL), 100 detections (Sec. 4, "Inference"). The decoding settings live in the decoder only: `model.score_threshold = 0.3` (or
   `max_detections`, `iou_threshold`, `pre_nms_topk`) replaces it, and `predict` and the export both follow.
"""

import keras
from keras import ops

from keras_focal.layers import DetectionDecoder
from keras_focal.models.backbones import build_backbone
from keras_focal.models.fpn import feature_pyramid
from keras_focal.models.heads import HEADS, get_head
from keras_focal.models.heads.normalizers import num_replicas
from keras_focal.models.heads.user_loss import resolve_loss

# ImageNet statistics, the normalization of the keras-hub ResNet presets.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# The decoder's settings that `RetinaNet` exposes as attributes; `iou_threshold=None` means the head's default.
DECODING_SETTINGS = ("score_threshold", "iou_threshold", "pre_nms_topk", "max_detections")


# Configurations written before heads were objects name the head and carry its arguments beside it; each maps
# to the head constructor's argument of the same meaning, where the named head has one.
LEGACY_HEAD_ARGUMENTS = {"focal_alpha": "alpha", "focal_gamma": "gamma", "reg_max": "reg_max",
                         "head_convs": "num_convs"}


def _legacy_head(name, legacy):
    """The head object of an old configuration: `name` with the legacy arguments its constructor takes."""
    import inspect

    head_class = HEADS.get(name)
    if head_class is None:
        return name  # get_head names the problem
    accepted = inspect.signature(head_class).parameters
    arguments = {LEGACY_HEAD_ARGUMENTS[k]: v for k, v in legacy.items()
                 if v is not None and LEGACY_HEAD_ARGUMENTS[k] in accepted}
    return keras.saving.serialize_keras_object(head_class(**arguments))


@keras.saving.register_keras_serializable(package="keras_focal")
class ImageNormalization(keras.layers.Layer):
    """Casts RGB images in [0, 255] (uint8 or float) to float and applies (x / 255 - mean) / std."""

    def call(self, images):
        images = ops.cast(images, self.compute_dtype)
        mean = ops.convert_to_tensor([255.0 * m for m in IMAGENET_MEAN], dtype=self.compute_dtype)
        std = ops.convert_to_tensor([255.0 * s for s in IMAGENET_STD], dtype=self.compute_dtype)
        return (images - mean) / std


@keras.saving.register_keras_serializable(package="keras_focal")
class RetinaNet(keras.Model):
    """A one-stage detector, backbone + FPN + head, as a functional Keras model.

    Args:
        num_classes: number of foreground classes (no background class: the heads use sigmoids).
        backbone: "resnet18" | "resnet34" | "resnet50" | "resnet101" | "resnet152", or a Keras model exposing
            C3-C5 (keras-hub `pyramid_outputs` with keys P3-P5, or exactly three outputs).
        head: a registered head name (`sorted(keras_focal.models.HEADS)`: "retina", focal loss, 9 anchors per
            location; "gfl", QFL + DFL + GIoU, ATSS, 1 anchor), built with its defaults, or a head object with its
            own hyper-parameters and assigner (`RetinaNetHead(alpha=0.5, assigner=ATSSAssigner())`, `GFLHead(...)`).
        fpn_width: channels of the FPN, and so of the head convs; 256 in both papers.
        head_convs: convs per tower of a head given by name (every head's `num_convs`; 4 in both papers); with a
            head object set `num_convs` on it.
        image_size: (height, width) the model is trained and served at; the SavedModel export resizes to it.
        backbone_weights: None (random init), "imagenet" (keras-hub preset, needs a network) or a local file.
        freeze_stem, freeze_batchnorm: freeze the backbone's stem / run its BatchNorms in inference mode
            (Detectron, mmdetection). `freeze_batchnorm=None` freezes them exactly when pretrained weights are loaded
            (and `sync_batchnorm` is not True).
        sync_batchnorm: training-mode BatchNorms of the backbone compute their statistics over the global batch,
            across replicas and workers (`BatchNormalization(synchronized=True)`). `None` (default) synchronizes
            exactly when the BatchNorms are not frozen and the model is built under a strategy with more than one
            replica, so the result does not depend on how the global batch is split; see docs/distributed.md.
        score_threshold, iou_threshold, pre_nms_topk, max_detections: decoding (0.05, the head's NMS IoU when
            None: 0.5 RetinaNet, 0.6 GFL, 1000, 100). Attributes of the same names change them later.
        class_names: None, or one name per class (index = detection class); kept in `get_config`, so a `.keras`
            file knows them, and written beside an exported SavedModel as `assets/labels.txt`.
        symmetric_padding: pad the FPN's stride-2 convs (P6, P7) on every side, as torch does.
        trainable_backbone_layers: torchvision's meaning: how many of the backbone's stages, counted from C5
            down to the stem (layer4, layer3, layer2, layer1, conv1), are trained; None trains all (0-5).
        letterbox: images are resized keeping their aspect ratio and padded to `image_size`
            (`keras_focal.letterbox`) by the SavedModel export, `evaluate_model` and `keras-focal predict`, instead
            of stretched; pass the same to `data.make_dataset` for training.
    """

    def __init__(self, num_classes, backbone="resnet50", head="retina", fpn_width=256, head_convs=None,
                 image_size=(512, 512), backbone_weights=None, freeze_stem=False, freeze_batchnorm=None,
                 score_threshold=0.05, iou_threshold=None, pre_nms_topk=1000, max_detections=100,
                 sync_batchnorm=None, class_names=None, symmetric_padding=False, trainable_backbone_layers=None,
                 letterbox=False, **kwargs):
        misplaced = sorted(set(kwargs) & set(LEGACY_HEAD_ARGUMENTS))
        if misplaced:
            raise ValueError(f"{misplaced} are arguments of the head object, not of RetinaNet: e.g. "
                             "head=GFLHead(reg_max=8) or head=RetinaNetHead(alpha=0.5)")
        if head_convs is not None and not isinstance(head, str):
            raise ValueError("head_convs only applies to a head given by name; set num_convs on the head object")
        head = get_head(head, **({} if head_convs is None else {"num_convs": head_convs}))
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if class_names is not None:
            class_names = tuple(str(n) for n in class_names)
            if len(class_names) != int(num_classes) or any("\n" in n or "\r" in n for n in class_names):
                raise ValueError(f"class_names must be {num_classes} one-line names, got {list(class_names)}")
        if freeze_batchnorm is None:
            freeze_batchnorm = backbone_weights is not None and not sync_batchnorm
        if sync_batchnorm is None:
            import tensorflow as tf

            sync_batchnorm = not freeze_batchnorm and tf.distribute.get_strategy().num_replicas_in_sync > 1
        if isinstance(backbone, dict):  # from get_config
            backbone = keras.saving.deserialize_keras_object(backbone)

        images = keras.Input(shape=(None, None, 3), name="images")
        features = build_backbone(backbone, backbone_weights, freeze_stem, freeze_batchnorm, sync_batchnorm,
                                  trainable_backbone_layers=trainable_backbone_layers)
        c3, c4, c5 = features(ImageNormalization(name="normalization")(images))
        pyramid = feature_pyramid(c3, c4, c5, fpn_width, extra_levels_from=head.fpn_extra_levels_from,
                                  symmetric_padding=symmetric_padding)
        outputs = head(pyramid, int(num_classes))
        name = kwargs.pop("name", head.detector_name)
        super().__init__(inputs=images, outputs=outputs, name=name, **kwargs)

        self.num_classes = int(num_classes)
        self.class_names = class_names
        self.backbone_spec = backbone
        self.detection_head = head
        self.fpn_width = fpn_width
        self.image_size = tuple(int(s) for s in image_size)
        self.backbone_weights = backbone_weights
        self.freeze_stem = freeze_stem
        self.freeze_batchnorm = freeze_batchnorm
        self.sync_batchnorm = bool(sync_batchnorm)
        self.symmetric_padding = bool(symmetric_padding)
        self.trainable_backbone_layers = trainable_backbone_layers
        self.letterbox = bool(letterbox)

        self.anchor_generator = head.anchor_generator
        self.anchor_encoder = head.anchor_encoder()
        self._decoder = DetectionDecoder(
            anchor_generator=head.anchor_generator,
            score_threshold=score_threshold,
            iou_threshold=head.nms_iou_threshold if iou_threshold is None else iou_threshold,
            pre_nms_topk=pre_nms_topk,
            max_detections=max_detections,
        )
        self.classification_loss = None
        self.box_loss = None
        self.class_loss_tracker = keras.metrics.Mean(name="class_loss")
        self.box_loss_tracker = keras.metrics.Mean(name="box_loss")

    @property
    def head(self):
        """The head's registered name ("retina", "gfl", ...); the head object is `detection_head`."""
        return self.detection_head.name

    @property
    def head_convs(self):
        return self.detection_head.num_convs

    # -------------------------------------------------------------------------------------- decoding settings
    @property
    def prediction_decoder(self):
        """The DetectionDecoder that `detect`, `predict` and the SavedModel export use: the one place the decoding
        settings live. Assigning a new one (or one of the attributes in `DECODING_SETTINGS`) takes effect at the
        next `predict` and export."""
        return self._decoder

    @prediction_decoder.setter
    def prediction_decoder(self, decoder):
        if not isinstance(decoder, DetectionDecoder):
            raise TypeError(f"prediction_decoder must be a DetectionDecoder, got {type(decoder).__name__}")
        self._decoder = decoder
        self.predict_function = None  # traced with the old decoder

    def _set_decoding(self, **settings):
        config = {k: getattr(self._decoder, k) for k in DECODING_SETTINGS + ("nms_method",)}
        config.update(settings)
        self.prediction_decoder = DetectionDecoder(anchor_generator=self.anchor_generator, **config)

    score_threshold = property(lambda self: self._decoder.score_threshold,
                               lambda self, value: self._set_decoding(score_threshold=value),
                               doc="Minimum score of a detection (0.05).")
    iou_threshold = property(lambda self: self._decoder.iou_threshold,
                             lambda self, value: self._set_decoding(
                                 iou_threshold=self.detection_head.nms_iou_threshold if value is None else value),
                             doc="NMS IoU (the head's: 0.5 RetinaNet, 0.6 GFL).")
    pre_nms_topk = property(lambda self: self._decoder.pre_nms_topk,
                            lambda self, value: self._set_decoding(pre_nms_topk=value),
                            doc="Candidates per level before NMS (1000).")
    max_detections = property(lambda self: self._decoder.max_detections,
                              lambda self, value: self._set_decoding(max_detections=value),
                              doc="Detections per image (100), N in the outputs.")

    # ----------------------------------------------------------------------------------------------- training
    def compile(self, optimizer="sgd", classification_loss=None, box_loss=None, **kwargs):
        """Compiles with the head's losses (the papers'); `classification_loss` / `box_loss` replace them.

        Each is a Keras or keras_focal Loss object (or its name / config) or a plain function `fn(y_true, y_pred)`,
        evaluated element by element with its reduction set aside (`keras_focal.models.heads.user_loss.per_element`),
        then summed and normalized as the head's own loss:
        - classification_loss: one value per (anchor, class), from the one-hot (RetinaNet) or IoU-quality (GFL)
          targets and the logits, or the probabilities for a Loss with `from_logits=False`;
        - box_loss: RetinaNet head, one value per box delta (`SmoothL1Loss(beta=0.11)` is the default); GFL head,
          one value per box on normalized yxyx boxes, replacing the GIoU term (`GIoULoss()` is the default).
        """
        if "loss" in kwargs:
            raise ValueError("RetinaNet computes its own loss; use classification_loss= and box_loss= instead of loss=")
        self.classification_loss = resolve_loss(classification_loss)
        self.box_loss = resolve_loss(box_loss)
        super().compile(optimizer=optimizer, **kwargs)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if not isinstance(y, dict) or not ({"class_targets"} <= set(y) or {"boxes", "classes"} <= set(y)):
            raise ValueError(
                "RetinaNet expects targets as a dict with 'boxes' [B, M, 4] and 'classes' [B, M] "
                f"(padded with -1), got {type(y).__name__}"
                + (f" with keys {sorted(y)}" if isinstance(y, dict) else ""))
        height, width = ops.shape(x)[1], ops.shape(x)[2]
        # anchor targets from the pipeline, or the head's assigner here (static, or dynamic with the predictions)
        # the step counter, for heads whose targets change during training (TOOD); a checkpoint restores it
        step = None if self.optimizer is None else self.optimizer.iterations
        targets = self.detection_head.assign_targets(y, y_pred, height, width, step=step)
        class_loss, box_loss = self.detection_head.loss(
            targets, y_pred, height, width, classification_loss=self.classification_loss, box_loss=self.box_loss)
        # Trackers show the global-batch values: each replica holds its share (Keras' own unscale convention).
        replicas = num_replicas()
        self.class_loss_tracker.update_state(class_loss * replicas)
        self.box_loss_tracker.update_state(box_loss * replicas)
        total = class_loss + box_loss
        losses = self.losses  # regularization terms, if any
        return total + ops.sum(losses) / replicas if losses else total

    # ---------------------------------------------------------------------------------------------- inference
    def detect(self, images):
        """Decoded detections for images [B, H, W, 3] in [0, 255]: the SavedModel's output dict."""
        images = ops.convert_to_tensor(images)
        outputs = self(images, training=False)
        height, width = ops.shape(images)[1], ops.shape(images)[2]
        scores = self.detection_head.scores(outputs)
        boxes = self.detection_head.decode_boxes(outputs, height, width)
        return self.prediction_decoder(scores, boxes, height, width)

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
            "head": keras.saving.serialize_keras_object(self.detection_head),
            "fpn_width": self.fpn_width,
            "image_size": list(self.image_size),
            # Weights travel with the saved model; never re-download or re-read a file when reloading.
            "backbone_weights": None,
            "freeze_stem": self.freeze_stem,
            "freeze_batchnorm": self.freeze_batchnorm,
            "sync_batchnorm": self.sync_batchnorm,
            **{k: getattr(self, k) for k in DECODING_SETTINGS},
            "class_names": None if self.class_names is None else list(self.class_names),
            "symmetric_padding": self.symmetric_padding,
            "trainable_backbone_layers": self.trainable_backbone_layers,
            "letterbox": self.letterbox,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        legacy = {key: config.pop(key) for key in ("focal_alpha", "focal_gamma", "reg_max") if key in config}
        if isinstance(config.get("head"), str) and any(v is not None for v in legacy.values()):
            legacy["head_convs"] = config.pop("head_convs", None)
            config["head"] = _legacy_head(config["head"], legacy)
        return cls(**config)


__all__ = ["HEADS", "ImageNormalization", "RetinaNet"]
