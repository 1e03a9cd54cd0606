"""Classification and box subnets shared across FPN levels (RetinaNet Sec. 4, GFL Sec. 4 / mmdetection GFLHead)."""

import math

import keras

# "all new conv layers except the final one in the RetinaNet subnets are initialized with bias b = 0 and a Gaussian
# weight fill with sigma = 0.01" (RetinaNet Sec. 4.1, Initialization).
HEAD_KERNEL_INIT = {"class_name": "RandomNormal", "config": {"mean": 0.0, "stddev": 0.01}}
# Prior probability of foreground at the start of training, pi = 0.01 (RetinaNet Sec. 3.3 and 4.1).
PRIOR_PROBABILITY = 0.01


def prior_bias(prior=PRIOR_PROBABILITY):
    """b = -log((1 - pi) / pi): every anchor starts with foreground confidence about pi (-log(99) for 0.01)."""
    return -math.log((1.0 - prior) / prior)


def _conv(filters, name, bias=0.0, use_bias=True):
    return keras.layers.Conv2D(
        filters,
        3,
        padding="same",
        use_bias=use_bias,
        kernel_initializer=keras.initializers.get(HEAD_KERNEL_INIT),
        bias_initializer=keras.initializers.Constant(bias),
        name=name,
    )


def _tower(width, num_convs, name, group_norm, conv_bias=True, epsilon=1e-3):
    """num_convs x (3x3 conv, [GroupNorm], ReLU); the layers are created once and shared across levels."""
    layers = []
    for i in range(num_convs):
        layers.append(_conv(width, f"{name}_conv{i}", use_bias=conv_bias))
        if group_norm:
            layers.append(keras.layers.GroupNormalization(groups=min(32, width), epsilon=epsilon,
                                                          name=f"{name}_gn{i}"))
        layers.append(keras.layers.ReLU(name=f"{name}_relu{i}"))
    return layers


def _apply(layers, x):
    for layer in layers:
        x = layer(x)
    return x


def _flatten_levels(maps, channels, name):
    """[B, H_l, W_l, A*K] per level -> [B, sum_l H_l*W_l*A, K] in (level, y, x, anchor) order, float32."""
    flat = [keras.layers.Reshape((-1, channels), name=f"{name}_flat{i}")(m) for i, m in enumerate(maps)]
    joined = keras.layers.Concatenate(axis=1, name=f"{name}_concat")(flat)
    # Losses and NMS run in float32 under mixed precision (Micikevicius et al. 2018).
    return keras.layers.Activation("linear", dtype="float32", name=name)(joined)


def retina_head(features, num_classes, num_anchors=9, width=256, num_convs=4, group_norm=False):
    """RetinaNet subnets: four 3x3 convs + ReLU each, no weights shared between the class and box subnets,
    weights shared across levels; the class subnet's last conv starts at the prior bias (Sec. 4, Fig. 3).

    `group_norm=True` is torchvision's v2 head (`retinanet_resnet50_fpn_v2`): each tower conv has no bias and is
    followed by GroupNorm(32) with torch's epsilon 1e-5, before the ReLU."""
    tower = dict(group_norm=group_norm, conv_bias=not group_norm, epsilon=1e-5)
    class_tower = _tower(width, num_convs, "class_subnet", **tower)
    box_tower = _tower(width, num_convs, "box_subnet", **tower)
    class_out = _conv(num_anchors * num_classes, "class_subnet_logits", bias=prior_bias())
    box_out = _conv(num_anchors * 4, "box_subnet_deltas")
    class_maps = [class_out(_apply(class_tower, f)) for f in features]
    box_maps = [box_out(_apply(box_tower, f)) for f in features]
    return {
        "class_logits": _flatten_levels(class_maps, num_classes, "class_logits"),
        "box_outputs": _flatten_levels(box_maps, 4, "box_outputs"),
    }


def gfl_head(features, num_classes, width=256, num_convs=4, reg_max=16):
    """GFL head (Li et al. 2020): GroupNorm(32) towers, one anchor per location, a joint class-quality score and a
    (reg_max + 1)-bin distribution per box side, scaled by a learnable scalar per level (FCOS/GFL `Scale`)."""
    from keras_focal.layers import Scale

    class_tower = _tower(width, num_convs, "class_subnet", group_norm=True)
    box_tower = _tower(width, num_convs, "box_subnet", group_norm=True)
    class_out = _conv(num_classes, "class_subnet_logits", bias=prior_bias())
    box_out = _conv(4 * (reg_max + 1), "box_subnet_distribution")
    class_maps = [class_out(_apply(class_tower, f)) for f in features]
    box_maps = [Scale(name=f"box_scale_p{3 + i}")(box_out(_apply(box_tower, f))) for i, f in enumerate(features)]
    return {
        "class_logits": _flatten_levels(class_maps, num_classes, "class_logits"),
        "box_outputs": _flatten_levels(box_maps, 4 * (reg_max + 1), "box_outputs"),
    }
