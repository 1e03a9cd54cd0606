"""The convolution towers the heads are built of, and the flattening of per-level maps into per-anchor rows."""

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


def conv3x3(filters, name, bias=0.0, use_bias=True):
    return keras.layers.Conv2D(
        filters,
        3,
        padding="same",
        use_bias=use_bias,
        kernel_initializer=keras.initializers.get(HEAD_KERNEL_INIT),
        bias_initializer=keras.initializers.Constant(bias),
        name=name,
    )


def tower(width, num_convs, name, group_norm, conv_bias=True, epsilon=1e-3):
    """num_convs x (3x3 conv, [GroupNorm(32)], ReLU); the layers are created once and shared across levels.
    `conv_bias=False` drops the conv biases (a GroupNorm follows); `epsilon` is the GroupNorm's."""
    layers = []
    for i in range(num_convs):
        layers.append(conv3x3(width, f"{name}_conv{i}", use_bias=conv_bias))
        if group_norm:
            layers.append(keras.layers.GroupNormalization(groups=min(32, width), epsilon=epsilon,
                                                          name=f"{name}_gn{i}"))
        layers.append(keras.layers.ReLU(name=f"{name}_relu{i}"))
    return layers


def apply(layers, x):
    for layer in layers:
        x = layer(x)
    return x


def flatten_levels(maps, channels, name):
    """[B, H_l, W_l, A*K] per level -> [B, sum_l H_l*W_l*A, K] in (level, y, x, anchor) order, float32."""
    flat = [keras.layers.Reshape((-1, channels), name=f"{name}_flat{i}")(m) for i, m in enumerate(maps)]
    joined = keras.layers.Concatenate(axis=1, name=f"{name}_concat")(flat)
    # Losses and NMS run in float32 under mixed precision (Micikevicius et al. 2018).
    return keras.layers.Activation("linear", dtype="float32", name=name)(joined)
