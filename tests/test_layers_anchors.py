import math

import numpy as np
import pytest
import tensorflow as tf

from keras_focal.layers import AnchorGenerator
from _layers_refs import ref_anchors


@pytest.mark.parametrize("h,w", [(512, 512), (100, 130), (129, 257), (640, 384), (33, 1000)])
def test_anchor_count(h, w):
    gen = AnchorGenerator()
    expected = sum(math.ceil(h / 2**l) * math.ceil(w / 2**l) * 9 for l in range(3, 8))
    assert gen.num_anchors(h, w) == expected
    assert gen(h, w).shape == (expected, 4)
    assert gen.level_sizes(h, w) == [math.ceil(h / 2**l) * math.ceil(w / 2**l) * 9 for l in range(3, 8)]
    strides = gen.anchor_strides(h, w).numpy()
    assert strides.shape == (expected,)
    assert np.all(np.diff(strides) >= 0) and set(strides.tolist()) == {8, 16, 32, 64, 128}


def test_anchors_by_hand():
    gen = AnchorGenerator()
    a = gen(512, 256).numpy() * np.array([512, 256, 512, 256])
    s = math.sqrt(2.0)
    # P3, cell (0, 0), centre (4, 4); first anchor type: scale 1, ratio 0.5 (h/w): h = 32/sqrt2, w = 32*sqrt2
    np.testing.assert_allclose(a[0], [4 - 16 / s, 4 - 16 * s, 4 + 16 / s, 4 + 16 * s], atol=1e-3)
    # ratio 1: a 32 x 32 square around (4, 4)
    np.testing.assert_allclose(a[1], [-12, -12, 20, 20], atol=1e-3)
    # scale 2^(1/3), ratio 2: h = 32*2^(1/3)*sqrt2, w = 32*2^(1/3)/sqrt2
    size = 32 * 2 ** (1 / 3)
    np.testing.assert_allclose(a[5], [4 - size * s / 2, 4 - size / s / 2, 4 + size * s / 2, 4 + size / s / 2], atol=1e-3)
    # P3, row 0, column 1 -> centre (4, 12); the 9 anchors of (0, 0) come first
    np.testing.assert_allclose(a[9 + 1], [-12, -4, 20, 28], atol=1e-3)
    # P3, row 1, column 0 -> index (1 * 32 + 0) * 9; centre (12, 4)
    np.testing.assert_allclose(a[32 * 9 + 1], [-4, -12, 28, 20], atol=1e-3)
    # first anchor of P4: after 64*32*9 P3 anchors; centre (8, 8), square 64
    np.testing.assert_allclose(a[64 * 32 * 9 + 1], [-24, -24, 40, 40], atol=1e-3)
    # last anchor: P7 (stride 128) cell (3, 1) centre (448, 192); scale 2^(2/3), ratio 2
    size = 512 * 2 ** (2 / 3)
    np.testing.assert_allclose(a[-1], [448 - size * s / 2, 192 - size / s / 2, 448 + size * s / 2, 192 + size / s / 2], atol=1e-2)


def test_center_offset_zero_and_gfl_config():
    gen = AnchorGenerator(anchor_size=8, num_scales=1, aspect_ratios=(1.0,), center_offset=0.0)
    a = gen(64, 64).numpy() * 64
    assert gen.anchors_per_location == 1
    np.testing.assert_allclose(a[0], [-32, -32, 32, 32], atol=1e-4)
    np.testing.assert_allclose(a[1], [-32, -24, 32, 40], atol=1e-4)


@pytest.mark.parametrize("h,w", [(100, 130), (128, 128)])
def test_matches_reference(h, w):
    np.testing.assert_allclose(AnchorGenerator()(h, w).numpy(), ref_anchors(h, w), atol=1e-5)


def test_dynamic_sizes_in_tf_function_and_tf_data():
    gen = AnchorGenerator()

    @tf.function(input_signature=[tf.TensorSpec([], tf.int32)] * 2)
    def f(h, w):
        return gen(h, w), gen.anchor_strides(h, w)

    for h, w in [(100, 130), (257, 64)]:
        anchors, strides = f(h, w)
        np.testing.assert_allclose(anchors.numpy(), gen(h, w).numpy(), atol=1e-6)
        assert strides.shape[0] == anchors.shape[0]
    ds = tf.data.Dataset.from_tensor_slices(tf.constant([[100, 130]])).map(lambda s: gen(s[0], s[1]))
    assert next(iter(ds)).shape == (gen.num_anchors(100, 130), 4)


def test_get_config_round_trip():
    gen = AnchorGenerator(min_level=2, max_level=6, anchor_size=8, num_scales=2, aspect_ratios=(1.0, 3.0), center_offset=0.0)
    clone = AnchorGenerator.from_config(gen.get_config())
    assert clone.get_config() == gen.get_config()
    np.testing.assert_array_equal(clone(96, 80).numpy(), gen(96, 80).numpy())
