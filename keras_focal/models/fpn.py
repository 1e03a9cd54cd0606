"""Feature Pyramid Network, P3-P7 (Lin et al. 2017, "Focal Loss for Dense Object Detection", Sec. 4)."""

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="keras_focal")
class UpsampleLike(keras.layers.Layer):
    """Nearest-neighbour 2x upsampling cropped to the spatial size of a reference map.

    Stride-2 'same' convolutions give ceil(H / 2) outputs, so doubling a coarse map can overshoot its finer
    neighbour by one row or column; the crop keeps any input size working.

    One op: a nearest-neighbour resize of the coarse map [B, h, w, C] straight to the reference's (H, W), with
    H in {2h, 2h - 1} (the same for W), `align_corners=False` and `half_pixel_centers=False`, which reads source
    row floor(i * h / H) for output row i. That is i // 2, the row of "repeat each row twice, then crop":
        H = 2h:      i * h / H = i / 2, floor i // 2.
        H = 2h - 1:  row i = 2k: k + k / (2h - 1), row 2k + 1: k + 1/2 + (k + 1/2) / (2h - 1); both added fractions
                     are below 1/2 for the rows that exist (k <= h - 1, resp. k <= h - 2), so floor = k, at least
                     1 / (2h - 1) away from the next integer (float rounding cannot cross it).
    It lowers to one RESIZE_NEAREST_NEIGHBOR in TFLite, which has int8 kernels and is on the Edge TPU's list of
    operations (`ops.repeat` and a slice would lower to RESHAPE, TILE, which is not on that list, and
    STRIDED_SLICE).
    `tests/test_fpn_upsample.py` compares it with the repeat + crop for even and odd sizes. The layer has no
    weights or arguments: `.keras` files saved with either form load as this one.
    """

    def call(self, inputs):
        coarse, reference = inputs
        return tf.raw_ops.ResizeNearestNeighbor(images=coarse, size=tf.shape(reference)[1:3], align_corners=False,
                                                half_pixel_centers=False)

    def compute_output_shape(self, input_shapes):
        coarse, reference = input_shapes
        return (coarse[0], reference[1], reference[2], coarse[3])


def feature_pyramid(c3, c4, c5, width=256, extra_levels_from="c5", symmetric_padding=False, name="fpn"):
    """Builds P3..P7 from C3..C5 with functional Keras layers.

    P3-P5: 1x1 lateral convs, top-down nearest upsampling and addition, then a 3x3 conv (Lin et al. 2017, FPN
    Sec. 3). P6: 3x3 stride-2 conv on C5 ("computed via a 3x3 stride-2 conv on C5", RetinaNet Sec. 4), or on P5
    for the GFL head (mmdetection `add_extra_convs='on_output'`). P7: ReLU then a 3x3 stride-2 conv on P6.

    `symmetric_padding=True` pads the stride-2 convs of P6 and P7 by one pixel on every side, as torch's
    `Conv2d(..., 3, 2, padding=1)` does (torchvision's `LastLevelP6P7`). TF's 'same' pads an even-sized input by
    one pixel at the bottom and right only, so the two sample different windows; both give ceil(H / 2) outputs.
    """
    if extra_levels_from not in ("c5", "p5"):
        raise ValueError(f"extra_levels_from must be 'c5' or 'p5', got {extra_levels_from!r}")

    def conv(kernel, stride, label):
        return keras.layers.Conv2D(width, kernel, strides=stride, padding="same", name=f"{name}_{label}")

    def downsample(x, label):
        if not symmetric_padding:
            return conv(3, 2, label)(x)
        x = keras.layers.ZeroPadding2D(1, name=f"{name}_{label}_pad")(x)
        return keras.layers.Conv2D(width, 3, strides=2, padding="valid", name=f"{name}_{label}")(x)

    lateral5 = conv(1, 1, "lateral5")(c5)
    lateral4 = conv(1, 1, "lateral4")(c4)
    lateral3 = conv(1, 1, "lateral3")(c3)
    merged4 = keras.layers.Add(name=f"{name}_merge4")([lateral4, UpsampleLike(name=f"{name}_up5")([lateral5, lateral4])])
    merged3 = keras.layers.Add(name=f"{name}_merge3")([lateral3, UpsampleLike(name=f"{name}_up4")([merged4, lateral3])])
    p3 = conv(3, 1, "p3")(merged3)
    p4 = conv(3, 1, "p4")(merged4)
    p5 = conv(3, 1, "p5")(lateral5)
    p6 = downsample(c5 if extra_levels_from == "c5" else p5, "p6")
    p7 = downsample(keras.layers.ReLU(name=f"{name}_p6_relu")(p6), "p7")
    return [p3, p4, p5, p6, p7]
