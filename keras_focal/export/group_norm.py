"""GroupNorm in ops that quantize to int8 and keep tensors 4-D: what the full-integer TFLite export traces in place of
`keras.layers.GroupNormalization.call`.

Keras' GroupNormalization reshapes [B, H, W, C] to [B, H, W, G, C/G], takes `tf.nn.moments` over (H, W, C/G) and
folds the result into `x * inv + (-mean * inv + beta)`. In TFLite that is a 5-D RESHAPE, MEAN over three axes,
SQUARED_DIFFERENCE, and NEG and SQUARE, which have no int8 kernels: a full-integer file goes back to float around
every GroupNorm (a DEQUANTIZE / QUANTIZE pair each). `group_norm_4d` computes the same function as

    m    = MEAN_{H,W}(x)                  [B, 1, 1, C]   each channel's spatial mean
    mean = m @ P                          [B, 1, 1, C]   P [C, C] = 1 / (C/G) within a group, else 0: the mean of
                                                         the group's channel means = the group mean (every channel
                                                         has H*W values), broadcast back to each channel
    d    = x - mean
    var  = MEAN_{H,W}(d * d) @ P          [B, 1, 1, C]   the group's (biased) variance, as tf.nn.moments
    y    = d * (rsqrt(var + eps) * gamma) + beta

MEAN over H and W, a 1x1 CONV_2D with the constant P (every non-zero weight 1 / (C/G), so its int8 per-channel
quantization is exact), SUB, MUL, ADD and RSQRT: all int8 TFLite builtins, with no tensor of more than 4
dimensions and every MEAN along x and y only (what the Edge TPU maps). In float32 it is GroupNorm up to rounding:
the mean of means sums in another order (`tests/test_export_tflite_int8.py` compares it with the layer's own
call and the float32 file with the model's predictions).

`integer_group_norm(model)` swaps it in for every GroupNormalization layer of `model` (at any depth) for the
duration of a `with` block, the trace of the export; the model, its weights and its `.keras` format are not
changed.
"""

import contextlib

import keras
import numpy as np
import tensorflow as tf


def group_average_matrix(channels, groups):
    """P [C, C] float32 with P[i, j] = 1 / (C/G) when channels i and j are in the same group (consecutive blocks of
    C/G channels, Keras' grouping), else 0: `m @ P` replaces each channel's value by its group's mean."""
    size = channels // groups
    group = np.arange(channels) // size
    return (group[:, None] == group[None, :]).astype(np.float32) / size


def _group_average(x, matrix):
    """[B, 1, 1, C] @ P as a 1x1 convolution with constant weights (a CONV_2D in TFLite)."""
    return tf.nn.conv2d(x, tf.constant(matrix[None, None]), strides=1, padding="VALID")


def group_norm_4d(layer, inputs):
    """`layer(inputs)` (a keras.layers.GroupNormalization over the channels of an [B, H, W, C] input) in 4-D,
    int8-friendly ops (module docstring)."""
    x = tf.cast(inputs, tf.float32)
    channels = int(x.shape[-1])
    matrix = group_average_matrix(channels, layer.groups)
    mean = _group_average(tf.reduce_mean(x, axis=[1, 2], keepdims=True), matrix)
    centred = x - mean
    variance = _group_average(tf.reduce_mean(centred * centred, axis=[1, 2], keepdims=True), matrix)
    inv = tf.math.rsqrt(variance + layer.epsilon)
    if layer.scale:
        inv = inv * tf.cast(tf.reshape(layer.gamma, [1, 1, 1, channels]), tf.float32)
    outputs = centred * inv
    if layer.center:
        outputs = outputs + tf.cast(tf.reshape(layer.beta, [1, 1, 1, channels]), tf.float32)
    return tf.cast(outputs, layer.compute_dtype)


def _fits(layer):
    """GroupNorm over the last axis: the form `group_norm_4d` computes."""
    return layer.axis in (-1, 3)


@contextlib.contextmanager
def integer_group_norm(model):
    """Within the block, every `keras.layers.GroupNormalization` of `model` over the last axis computes
    `group_norm_4d`; restored on exit (also on error). Yields the number of layers swapped."""
    layers = [layer for layer in model._flatten_layers(include_self=True, recursive=True)
              if isinstance(layer, keras.layers.GroupNormalization) and _fits(layer)]
    original = {id(layer): layer.__dict__.get("call") for layer in layers}
    try:
        for layer in layers:
            object.__setattr__(layer, "call", lambda inputs, layer=layer: group_norm_4d(layer, inputs))
        yield len(layers)
    finally:
        for layer in layers:
            if original[id(layer)] is None:
                object.__delattr__(layer, "call")
            else:
                object.__setattr__(layer, "call", original[id(layer)])
