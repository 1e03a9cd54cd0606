"""torchvision's COCO RetinaNets as keras_focal RetinaNets: `from_torchvision(checkpoint, variant, ...)`.

torchvision publishes two RetinaNet ResNet-50 FPN checkpoints (`torchvision.models.detection`):

    retinanet_resnet50_fpn     P6 from P5 (`LastLevelP6P7(256, 256)`), towers of conv + ReLU
    retinanet_resnet50_fpn_v2  P6 from C5 (`LastLevelP6P7(2048, 256)`), towers of conv (no bias) + GroupNorm(32)
                               + ReLU

Both are the keras_focal RetinaNet with torchvision's conventions switched on, then filled tensor by tensor:

- backbone: torchvision's ResNet-50 is keras-hub's `ResNetBackbone` layer for layer (`models/backbones.py`); its
  BatchNorms (torchvision's FrozenBatchNorm2d, eps 1e-5) stay frozen;
- FPN: `inner_blocks.{0,1,2}` are the lateral 1x1 convs on C3, C4, C5, `layer_blocks.{0,1,2}` the 3x3 convs giving
  P3, P4, P5, `extra_blocks.p6 / p7` the stride-2 convs, padded on every side as torch pads them;
- head: `classification_head.conv.{i}` and `regression_head.conv.{i}` are the tower convs (`.0`) and GroupNorms
  (`.1`, v2); `cls_logits` and `bbox_reg` the final convs. Each location's outputs are anchor-major in both
  frameworks (channel `a * K + k`), so the class conv needs no reordering; torchvision's box deltas are
  (dx, dy, dw, dh) and keras_focal's (dy, dx, dh, dw), so the box conv's output channels are swapped in pairs;
- anchors: torchvision's `_default_anchorgen` as `AnchorGenerator(center_offset=0, integer_sizes=True,
  round_corners=True, order="ratio_major")`; box coder weights (1, 1, 1, 1) with the log(1000 / 16) clamp, the
  keras_focal default;
- decoding: torchvision's `RetinaNet` defaults, score > 0.05, the top 1000 (anchor, class) pairs per level,
  per-class NMS at IoU 0.5, 300 detections.

Inputs are RGB images in [0, 255] as for every keras_focal model; the model normalizes them with the ImageNet mean
and std, as torchvision's `GeneralizedRCNNTransform` does with images in [0, 1]. The class outputs keep
torchvision's label indices (91 for COCO: index = COCO category id, 0 and the gaps never trained) unless
`num_classes` replaces them.
"""

from keras_focal import layers as kf_layers
from keras_focal.models import torch_weights
from keras_focal.models.backbones import RESNET_CONFIGS
from keras_focal.models.heads import RetinaNetHead
from keras_focal.models.retinanet import RetinaNet

VARIANTS = ("retinanet_resnet50_fpn", "retinanet_resnet50_fpn_v2")

# torchvision.models.detection.RetinaNet defaults (score_thresh, topk_candidates, nms_thresh, detections_per_img).
TORCHVISION_DECODING = {"score_threshold": 0.05, "pre_nms_topk": 1000, "iou_threshold": 0.5, "max_detections": 300}

# torchvision `retinanet_resnet50_fpn*(trainable_backbone_layers=None)` with pretrained weights trains 3 stages.
TRAINABLE_BACKBONE_LAYERS = 3

# keras_focal box channel j of an anchor comes from torchvision channel BOX_CHANNELS[j]: (dy, dx, dh, dw) from
# (dx, dy, dw, dh).
BOX_CHANNELS = (1, 0, 3, 2)

BACKBONE_PREFIX = "backbone.body."
FPN_PREFIX = "backbone.fpn."
CLASS_HEAD = "head.classification_head"
BOX_HEAD = "head.regression_head"


def torchvision_anchor_generator():
    """torchvision's RetinaNet anchors: sizes (x, int(x 2^(1/3)), int(x 2^(2/3))) for x = 32..512, ratios 0.5, 1,
    2, corners rounded, centres at i * stride, ratio-major within a location."""
    return kf_layers.AnchorGenerator(min_level=3, max_level=7, anchor_size=4.0, num_scales=3,
                                     aspect_ratios=(0.5, 1.0, 2.0), center_offset=0.0, integer_sizes=True,
                                     round_corners=True, order="ratio_major")


def _checkpoint_classes(state, num_anchors):
    name = f"{CLASS_HEAD}.cls_logits.weight"
    if name not in state:
        raise KeyError(f"{state.source} has no tensor {name!r}: not a torchvision RetinaNet state_dict")
    channels = state.tensors[name].shape[0]
    if channels % num_anchors:
        raise ValueError(f"Tensor {name!r} has {channels} output channels, not a multiple of {num_anchors} anchors")
    return channels // num_anchors


def _load_fpn(layers, state):
    for level, index in ((3, 0), (4, 1), (5, 2)):
        torch_weights.assign_conv(layers[f"fpn_lateral{level}"], state, f"{FPN_PREFIX}inner_blocks.{index}.0")
        torch_weights.assign_conv(layers[f"fpn_p{level}"], state, f"{FPN_PREFIX}layer_blocks.{index}.0")
    for level in (6, 7):
        torch_weights.assign_conv(layers[f"fpn_p{level}"], state, f"{FPN_PREFIX}extra_blocks.p{level}")


def _load_head(layers, state, num_convs, group_norm, replace_classes):
    for keras_tower, torch_head in (("class_subnet", CLASS_HEAD), ("box_subnet", BOX_HEAD)):
        for i in range(num_convs):
            torch_weights.assign_conv(layers[f"{keras_tower}_conv{i}"], state, f"{torch_head}.conv.{i}.0")
            if group_norm:
                torch_weights.assign_group_norm(layers[f"{keras_tower}_gn{i}"], state, f"{torch_head}.conv.{i}.1")
    if replace_classes:
        state.skip(f"{CLASS_HEAD}.cls_logits.")  # the new class conv keeps its focal prior initialisation
    else:
        torch_weights.assign_conv(layers["class_subnet_logits"], state, f"{CLASS_HEAD}.cls_logits")
    box_layer = layers["box_subnet_deltas"]
    anchors = box_layer.kernel.shape[-1] // 4
    order = [4 * a + c for a in range(anchors) for c in BOX_CHANNELS]
    torch_weights.assign_conv(box_layer, state, f"{BOX_HEAD}.bbox_reg", channel_order=order)


def from_torchvision(checkpoint, variant="retinanet_resnet50_fpn", num_classes=None, image_size=(800, 800),
                     **kwargs):
    """A keras_focal `RetinaNet` holding a torchvision RetinaNet checkpoint.

    Args:
        checkpoint: a `.pth` state_dict saved with `torch.save(model.state_dict(), path)` (reading it needs torch,
            `pip install keras_focal[torch]`), or a mapping name -> array (NumPy or torch tensors).
        variant: "retinanet_resnet50_fpn" or "retinanet_resnet50_fpn_v2".
        num_classes: None keeps the checkpoint's class outputs and its label indices (91 for COCO, index = COCO
            category id); an integer K replaces the final class conv by a new one with K outputs at the focal prior
            bias, for fine-tuning, and keeps every other weight.
        image_size: (height, width) the model is served at (the SavedModel resizes to it).
        **kwargs: other `RetinaNet` arguments; the defaults here are torchvision's decoding (score 0.05, top 1000
            per level, NMS 0.5, 300 detections), frozen BatchNorm, `trainable_backbone_layers=3` and
            `letterbox=True` (torchvision resizes keeping the aspect ratio and pads with the mean colour, as
            `keras_focal.letterbox` does; train with `make_dataset(..., letterbox=True)` to keep it so).

    Every tensor of the state_dict must find its layer and every layer its tensor: a missing tensor (KeyError), an
    unexpected one or one of the wrong shape (ValueError) is an error naming it.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    source = f"checkpoint {checkpoint!r}" if isinstance(checkpoint, str) else "state_dict"
    state = torch_weights.StateDict(torch_weights.read_state_dict(checkpoint), source)
    checkpoint_classes = _checkpoint_classes(state, torchvision_anchor_generator().anchors_per_location)
    model = torchvision_retinanet(variant, checkpoint_classes if num_classes is None else num_classes, image_size,
                                  **kwargs)
    load_torchvision_weights(model, state, variant, replace_classes=num_classes is not None)
    return model


def torchvision_retinanet(variant, num_classes, image_size=(800, 800), **kwargs):
    """The keras_focal RetinaNet with the architecture of torchvision's `variant`, randomly initialised."""
    # letterbox: torchvision trains and evaluates on aspect-preserving resizes, never on stretched images.
    options = dict(TORCHVISION_DECODING, freeze_batchnorm=True, trainable_backbone_layers=TRAINABLE_BACKBONE_LAYERS,
                   letterbox=True)
    options.update(kwargs)
    for fixed in ("backbone", "head", "symmetric_padding", "backbone_weights", "fpn_width", "head_convs"):
        if fixed in options:
            raise ValueError(f"{fixed!r} is fixed by the torchvision variant and cannot be passed to from_torchvision")
    v2 = variant == "retinanet_resnet50_fpn_v2"
    head = RetinaNetHead(num_convs=4, group_norm=v2, anchor_generator=torchvision_anchor_generator(),
                         extra_levels_from="c5" if v2 else "p5")
    return RetinaNet(
        int(num_classes),
        backbone="resnet50",
        head=head,
        image_size=image_size,
        symmetric_padding=True,
        name=options.pop("name", variant),
        **options,
    )


def load_torchvision_weights(model, state, variant, replace_classes=False):
    """Assigns every tensor of `state` (a `torch_weights.StateDict` or a mapping) to `model`'s layers by name.

    `replace_classes=True` leaves the model's final class conv as it is (a new one for other classes) and ignores
    the checkpoint's `cls_logits`.
    """
    if not isinstance(state, torch_weights.StateDict):
        state = torch_weights.StateDict(torch_weights.read_state_dict(state))
    layers = torch_weights.layers_by_name(model)
    block_type, blocks = RESNET_CONFIGS["resnet50"]
    torch_weights.load_resnet(model, state, blocks, block_type, BACKBONE_PREFIX)
    _load_fpn(layers, state)
    _load_head(layers, state, model.head_convs, variant == "retinanet_resnet50_fpn_v2", replace_classes)
    state.finish()
