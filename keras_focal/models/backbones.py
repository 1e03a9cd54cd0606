"""ResNet backbones that expose C3, C4 and C5 for the feature pyramid.

The ResNets come from keras-hub's `ResNetBackbone`, the maintained Keras 3 implementation that covers every depth
the detectors need (keras.applications has no ResNet-18/34). keras-hub builds the stem as a 7x7/2 conv and a 3x3/2
max-pool, so C3, C4 and C5 have strides 8, 16 and 32 and spatial sizes ceil(H / stride).
"""

import os

import keras

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
        if not os.path.exists(weights):
            raise FileNotFoundError(f"Backbone weights file {weights!r} does not exist")
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
                   sync_batchnorm=False):
    """Returns a Keras model mapping normalized images [B, H, W, 3] to [C3, C4, C5].

    Args:
        backbone: "resnet18" | "resnet34" | "resnet50" | "resnet101" | "resnet152", or a Keras model (see
            `_feature_outputs` for what it must expose).
        weights: None (random init), "imagenet" (keras-hub preset, needs a network) or a local
            `.weights.h5` file saved from the same backbone.
        freeze_stem: freeze the 7x7 stem (Detectron / mmdetection `frozen_stages=1`).
        freeze_batchnorm: run every BatchNorm in inference mode with fixed statistics and affine parameters
            (mmdetection `norm_eval=True`); sensible with pretrained weights and small per-device batches.
        sync_batchnorm: compute the training-mode BatchNorm statistics over the global batch, across all replicas
            and workers (`keras.layers.BatchNormalization(synchronized=True)`, TensorFlow backend); one small
            all-reduce per BatchNorm layer and step; a no-op on one device. Excludes freeze_batchnorm.
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
