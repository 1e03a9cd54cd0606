"""The FPN's top-down 2x nearest upsampling (`keras_focal.models.fpn.UpsampleLike`): one nearest-neighbour resize to
the finer map's size, equal to "repeat every row and column twice, then crop" for even and odd sizes, and one
RESIZE_NEAREST_NEIGHBOR op in TFLite (no TILE)."""

import numpy as np
import pytest
import tensorflow as tf


def _repeat_and_crop(coarse, height, width):
    """The float64 NumPy reference: each pixel repeated 2x2, cropped to (height, width)."""
    return np.repeat(np.repeat(np.asarray(coarse, np.float64), 2, axis=1), 2, axis=2)[:, :height, :width]


# (h, w) of the coarse map and (H, W) of the finer one: H in {2h, 2h - 1} (stride-2 'same' convs give ceil(H / 2)),
# every parity mix, from 1 pixel to sizes where float rounding of i * h / H would matter first.
SIZES = [((1, 1), (1, 2)), ((1, 1), (2, 2)), ((2, 3), (4, 5)), ((3, 2), (5, 4)), ((4, 4), (8, 8)),
         ((7, 5), (13, 10)), ((64, 63), (128, 125)), ((257, 300), (513, 600))]


@pytest.mark.parametrize("coarse_size,fine_size", SIZES)
def test_upsample_like_equals_repeat_and_crop(coarse_size, fine_size):
    from keras_focal.models.fpn import UpsampleLike

    rng = np.random.default_rng(sum(coarse_size))
    coarse = rng.normal(size=(2, *coarse_size, 3)).astype(np.float32)
    reference = np.zeros((2, *fine_size, 1), np.float32)
    got = UpsampleLike()([coarse, reference]).numpy()
    assert got.shape == (2, *fine_size, 3)
    np.testing.assert_array_equal(got, _repeat_and_crop(coarse, *fine_size))
    # The reference can fail: the crop taken at the other end (first row and column dropped) differs for odd sizes.
    if fine_size[0] % 2 and fine_size[0] > 1:
        wrong = np.repeat(np.repeat(coarse, 2, axis=1), 2, axis=2)[:, -fine_size[0]:, -fine_size[1]:]
        assert not np.array_equal(got, wrong)


def test_upsample_like_in_a_graph_with_unknown_sizes_and_mixed_precision():
    from keras_focal.models.fpn import UpsampleLike

    layer = UpsampleLike(dtype="mixed_float16")  # what the FPN gets under mixed precision
    spec = tf.TensorSpec([None, None, None, None], tf.float16)
    run = tf.function(lambda a, b: layer([a, b]), input_signature=[spec, spec])
    coarse = np.arange(2 * 3 * 3 * 2, dtype=np.float16).reshape(2, 3, 3, 2)
    got = run(coarse, np.zeros((2, 5, 6, 4), np.float16)).numpy()
    assert got.dtype == np.float16
    np.testing.assert_array_equal(got, _repeat_and_crop(coarse, 5, 6))


def test_fpn_upsampling_is_one_resize_nearest_neighbor_in_tflite():
    import keras
    from ai_edge_litert.interpreter import Interpreter

    from keras_focal.models.fpn import feature_pyramid

    inputs = [keras.Input((s, s, c), batch_size=1) for s, c in ((16, 8), (8, 8), (4, 8))]
    model = keras.Model(inputs, feature_pyramid(*inputs, width=8))
    content = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    names = [op["op_name"] for op in Interpreter(model_content=content)._get_ops_details()]
    assert names.count("RESIZE_NEAREST_NEIGHBOR") == 2, names
    assert not {"TILE", "STRIDED_SLICE", "RESHAPE"} & set(names), names
