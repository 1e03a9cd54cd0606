"""ResNet backbones that expose C3, C4 and C5 for the feature pyramid.

The ResNets come from keras-hub's `ResNetBackbone`, the maintained Keras 3 implementation that covers every depth
the detectors need (keras.applications has no ResNet-18/34). keras-hub builds the stem as a 7x7/2 conv and a 3x3/2
max-pool, so C3, C4 and C5 have strides 8, 16 and 32 and spatial sizes ceil(H / stride).

It is torchvision's ResNet layer for layer: ResNet v1.5 (the stride on the 3x3 conv of a bottleneck), BatchNorm
epsilon 1e-5, and explicit symmetric zero padding before the strided 7x7 stem conv, the stem max-pool (after a
ReLU, so zeros pad as torch's -inf does) and every strided 3x3 conv, where TF's 'same' would pad bottom/right only.
torchvision's ImageNet state_dicts (`resnet50(weights=...).state_dict()`) therefore load exactly
(`models.torch_weights.load_resnet`): C3, C4, C5 are torchvision's `layer2`, `layer3`, `layer4` outputs.
"""

import os

import keras

from keras_focal.models import torch_weights

# depth -> (block type, blocks per stage); He et al. 2016, Table 1.
RESNET_CONFIGS = {
    "resnet18": ("basic_block", [2, 2, 2, 2]),
    "resnet34": ("basic_block", [3, 4, 6, 3]),
    "resnet50": ("bottleneck_block", [3, 4, 6, 3]),
    "resnet101": ("bottleneck_block", [3, 4, 23, 3]),
    "resnet152": ("bottleneck_block", [3, 8, 36, 3]),
}

# keras-hub presets with ImageNet weights (downloaded from Kaggle, so they need a network).
IMAGENET_PRESETS = {
    "resnet18": "resnet_18_imagenet",
    "resnet50": "resnet_50_imagenet",
    "resnet101": "resnet_101_imagenet",
    "resnet152": "resnet_152_imagenet",
}

STEM_LAYER_PREFIXES = ("conv1_", "pool1_")
# torchvision's `trainable_layers`: the stages trained, counted from the top (`_resnet_fpn_extractor`).
TRAINABLE_STAGES = ("stack3_", "stack2_", "stack1_", "stack0_", STEM_LAYER_PREFIXES)
# torchvision ImageNet classifier tensors: not part of a detection backbone.
CLASSIFIER_TENSORS = ("fc.weight", "fc.bias")


def load_torchvision_resnet(backbone, name, checkpoint, prefix="", source=None):
    """Loads a torchvision ResNet state_dict (a `.pth` path or a mapping) into a keras-hub ResNet `backbone`."""
    block_type, blocks = RESNET_CONFIGS[name]
    state = torch_weights.StateDict(torch_weights.read_state_dict(checkpoint),
                                    source or (f"{checkpoint!r}" if isinstance(checkpoint, (str, os.PathLike))
                                               else "state_dict"))
    torch_weights.load_resnet(backbone, state, blocks, block_type, prefix)
    state.finish(ignore=CLASSIFIER_TENSORS)


def _keras_hub_resnet(name, weights):
    import keras_hub

    if weights == "imagenet":
        if name not in IMAGENET_PRESETS:
            raise ValueError(
                f"No ImageNet preset for {name!r}; available: {sorted(IMAGENET_PRESETS)}. "
                "Pass a local weights file instead."
            )
        return keras_hub.models.ResNetBackbone.from_preset(IMAGENET_PRESETS[name])
    block_type, blocks = RESNET_CONFIGS[name]
    backbone = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64],
        input_conv_kernel_sizes=[7],
        stackwise_num_filters=[64, 128, 256, 512],
        stackwise_num_blocks=blocks,
        stackwise_num_strides=[1, 2, 2, 2],
        block_type=block_type,
        use_pre_activation=False,
        image_shape=(None, None, 3),
        name=name,
    )
    if weights is not None:
        if isinstance(weights, (str, os.PathLike)) and not os.path.exists(weights):
            raise FileNotFoundError(f"Backbone weights file {weights!r} does not exist")
        if torch_weights.is_torch_checkpoint(weights):
            load_torchvision_resnet(backbone, name, weights)
        else:
            backbone.load_weights(weights)
    return backbone


def _feature_outputs(model):
    """C3, C4, C5 of a keras-hub style backbone (`pyramid_outputs`) or of a model with three outputs."""
    pyramid = getattr(model, "pyramid_outputs", None)
    if pyramid:
        # keras-hub names the stage outputs P2..P5 by stride 2^l; they are the paper's C2..C5.
        missing = [key for key in ("P3", "P4", "P5") if key not in pyramid]
        if missing:
            raise ValueError(f"Backbone pyramid_outputs lacks {missing}; it has {sorted(pyramid)}")
        return [pyramid["P3"], pyramid["P4"], pyramid["P5"]]
    if len(model.outputs) == 3:
        return list(model.outputs)
    raise ValueError(
        "A custom backbone must be a Keras model exposing `pyramid_outputs` with keys P3, P4, P5 (keras-hub "
        f"style) or have exactly three outputs C3, C4, C5 (strides 8, 16, 32); got {len(model.outputs)} outputs."
    )


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):  # nested models
            yield from _all_layers(layer)


def build_backbone(backbone="resnet50", weights=None, freeze_stem=False, freeze_batchnorm=False,
                   sync_batchnorm=False, trainable_backbone_layers=None):
    """Returns a Keras model mapping normalized images [B, H, W, 3] to [C3, C4, C5].

    Args:
        backbone: "resnet18" | "resnet34" | "resnet50" | "resnet101" | "resnet152", or a Keras model (see
            `_feature_outputs` for what it must expose).
        weights: None (random init), "imagenet" (keras-hub preset, needs a network), a local `.weights.h5`
            file saved from the same backbone, or torchvision's ImageNet ResNet weights: a `.pth` / `.pt`
            state_dict (needs torch) or a mapping name -> array (its `fc` classifier is left out).
        freeze_stem: freeze the 7x7 stem (Detectron / mmdetection `frozen_stages=1`).
        freeze_batchnorm: run every BatchNorm in inference mode with fixed statistics and affine parameters
            (mmdetection `norm_eval=True`); sensible with pretrained weights and small per-device batches.
        sync_batchnorm: compute the training-mode BatchNorm statistics over the global batch, across all replicas
            and workers (`keras.layers.BatchNormalization(synchronized=True)`, TensorFlow backend); one small
            all-reduce per BatchNorm layer and step; a no-op on one device. Excludes freeze_batchnorm.
        trainable_backbone_layers: None trains every stage; 0-5 trains that many of (C5 stage, C4 stage, C3 stage,
            C2 stage, stem), counted from the top, and freezes the rest (torchvision's `trainable_layers`; its
            detectors default to 3). Only for the named ResNets.
    """
    if freeze_batchnorm and sync_batchnorm:
        raise ValueError("freeze_batchnorm and sync_batchnorm exclude each other: a frozen BatchNorm uses no batch "
                         "statistics to synchronize")
    if isinstance(backbone, str):
        if backbone not in RESNET_CONFIGS:
            raise ValueError(f"Unknown backbone {backbone!r}; choose one of {sorted(RESNET_CONFIGS)} or pass a Keras model")
        model = _keras_hub_resnet(backbone, weights)
    elif isinstance(backbone, keras.Model):
        model = backbone
    else:
        raise TypeError(f"backbone must be a name or a keras.Model, got {type(backbone).__name__}")

    if trainable_backbone_layers is not None:
        if not isinstance(backbone, str):
            raise ValueError("trainable_backbone_layers needs a named ResNet backbone (its stages are known by name)")
        if not 0 <= int(trainable_backbone_layers) <= len(TRAINABLE_STAGES):
            raise ValueError(f"trainable_backbone_layers must be in 0..{len(TRAINABLE_STAGES)}, "
                             f"got {trainable_backbone_layers}")
        trained = TRAINABLE_STAGES[:int(trainable_backbone_layers)]
        trained = tuple(p for group in trained for p in ((group,) if isinstance(group, str) else group))
        for layer in model.layers:
            if layer.weights and not layer.name.startswith(trained):
                layer.trainable = False

    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    features = keras.Model(inputs, _feature_outputs(model), name=f"{model.name}_features")
    for layer in model.layers:
        if freeze_batchnorm and isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False  # Keras 3: a non-trainable BatchNorm also runs in inference mode.
        if freeze_stem and layer.name.startswith(STEM_LAYER_PREFIXES):
            layer.trainable = False
    if sync_batchnorm:
        for layer in _all_layers(model):
            if isinstance(layer, keras.layers.BatchNormalization):
                # Read at call time by Keras' BatchNormalization (ops.moments(..., synchronized=True)) and saved
                # in the layer's own config.
                layer.synchronized = True
    return features
