"""AnchorEncoder: the tf.data adapter of a static assigner (the assigners themselves: test_assigners.py)."""

import numpy as np
import pytest
import tensorflow as tf

from _layers_refs import random_ground_truth
from keras_focal.assigners import ATSSAssigner
from keras_focal.layers import AnchorEncoder, AnchorGenerator, DeltaCoder

# 4 x 4 non-overlapping 64-px tiles on a 256 x 256 image: anchor (i, j) = [64i, 64j, 64i+64, 64j+64] px,
# index i * 4 + j. A box inside one tile has IoU (its area / 4096) with that tile and 0 with the others.
S = 256.0
TILES = AnchorGenerator(min_level=6, max_level=6, anchor_size=1.0, num_scales=1, aspect_ratios=(1.0,))


def _px(*boxes):
    return np.array(boxes, "float32") / S


def test_tiles_layout():
    np.testing.assert_allclose(TILES(256, 256).numpy()[5] * S, [64, 64, 128, 128], atol=1e-4)


def test_padding_zero_area_and_degenerate_boxes_are_ignored():
    enc = AnchorEncoder(TILES)
    real = _px([0, 0, 64, 38.4])
    padded = np.concatenate([real, -np.ones((3, 4), "float32")])
    bad = np.concatenate([real, _px([64, 64, 64, 128]), _px([200, 200, 150, 250])])  # zero-area, inverted
    a = enc(real, np.array([2]), 256, 256)
    b = enc(padded, np.array([2, -1, -1, -1]), 256, 256)
    c = enc(bad, np.array([2, 6, 8]), 256, 256)
    for out in (b, c):
        for k in a:
            np.testing.assert_array_equal(out[k].numpy(), a[k].numpy())
    # a valid box whose class is the padding value is ignored too
    d = enc(real, np.array([-1]), 256, 256)["class_targets"].numpy()
    assert np.all(d == -1)


def test_inside_tf_data_map_and_tf_function():
    gen = AnchorGenerator()
    enc = AnchorEncoder(gen)
    rng = np.random.default_rng(7)
    b0, c0 = random_ground_truth(rng, 3)
    eager = enc(b0, c0, 100, 120)

    ds = tf.data.Dataset.from_tensors((b0, c0)).map(lambda b, c: enc(b, c, tf.constant(100), tf.constant(120)))
    out = next(iter(ds))
    for k in eager:
        np.testing.assert_allclose(out[k].numpy(), eager[k].numpy(), atol=1e-6)

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, None, 4], tf.float32),
            tf.TensorSpec([None, None], tf.int32),
            tf.TensorSpec([], tf.int32),
            tf.TensorSpec([], tf.int32),
        ]
    )
    def f(b, c, h, w):
        return enc(b, c, h, w)

    out = f(b0[None], c0[None], 100, 120)
    for k in eager:
        np.testing.assert_allclose(out[k].numpy()[0], eager[k].numpy(), atol=1e-6)
    out = f(np.zeros((2, 0, 4), "float32"), np.zeros((2, 0), "int32"), 64, 64)
    assert np.all(out["class_targets"].numpy() == -1)


def test_get_config_round_trip():
    enc = AnchorEncoder(AnchorGenerator(anchor_size=8, num_scales=1, aspect_ratios=(1.0,)), assigner=ATSSAssigner(5),
                        box_coder=DeltaCoder(weights=(10, 10, 5, 5)))
    clone = AnchorEncoder.from_config(enc.get_config())
    assert clone.get_config() == enc.get_config()
    assert clone.anchor_generator.anchor_size == 8.0
    import keras

    clone2 = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(enc))
    assert isinstance(clone2, AnchorEncoder) and isinstance(clone2.assigner, ATSSAssigner)
    assert clone2.assigner.topk == 5 and clone2.box_coder.weights == (10.0, 10.0, 5.0, 5.0)


def test_dynamic_image_size_uses_the_dense_path_with_the_same_targets():
    enc = AnchorEncoder(AnchorGenerator())
    b, c = random_ground_truth(np.random.default_rng(2), 6)
    static = enc(b, c, 96, 128)
    dynamic = tf.function(lambda b, c, h, w: enc(b, c, h, w))(b, c, tf.constant(96), tf.constant(128))
    for k in static:
        np.testing.assert_allclose(dynamic[k].numpy(), static[k].numpy(), rtol=0, atol=1e-6)


@pytest.mark.parametrize("head_name", ["retinanet", "gfl"])
def test_a_heads_encoder_returns_classes_and_matched_indices(head_name):
    from keras_focal.models.heads import GFLHead, RetinaNetHead

    head = RetinaNetHead() if head_name == "retinanet" else GFLHead()
    own = head.anchor_encoder()
    full = AnchorEncoder(head.anchor_generator, assigner=head.assigner)
    b, c = random_ground_truth(np.random.default_rng(4), 6)
    out, ref = own(b, c, 128, 128), full(b, c, 128, 128)
    assert set(out) == {"class_targets", "matched_indices"}
    for k in out:
        np.testing.assert_array_equal(out[k].numpy(), ref[k].numpy())
    clone = AnchorEncoder.from_config(own.get_config())
    assert clone.outputs == own.outputs
    with pytest.raises(ValueError, match="outputs"):
        AnchorEncoder(outputs=("class_targets", "anchors"))




def test_box_targets_are_the_box_coders_codes():
    from _layers_refs import ref_encode
    from keras_focal.layers import DistanceCoder

    gen = AnchorGenerator(anchor_size=8, num_scales=1, aspect_ratios=(1.0,))
    b, c = random_ground_truth(np.random.default_rng(6), 4)
    deltas = AnchorEncoder(gen, assigner=ATSSAssigner())(b, c, 128, 128)
    distances = AnchorEncoder(gen, assigner=ATSSAssigner(), box_coder=DistanceCoder())(b, c, 128, 128)
    positive = deltas["class_targets"].numpy() >= 0
    assert positive.sum() > 0
    anchors = gen(128, 128).numpy().astype(np.float64)[positive]
    matched = deltas["matched_boxes"].numpy().astype(np.float64)[positive]
    strides = gen.anchor_strides(128, 128).numpy()[positive]
    ref = [ref_encode(a, m) for a, m in zip(anchors, matched)]
    np.testing.assert_allclose(deltas["box_targets"].numpy()[positive], ref, atol=1e-4)
    # distances (left, top, right, bottom) from the anchor centre, in strides
    cy, cx = (anchors[:, 0] + anchors[:, 2]) / 2, (anchors[:, 1] + anchors[:, 3]) / 2
    ltrb = np.stack([cx - matched[:, 1], cy - matched[:, 0], matched[:, 3] - cx, matched[:, 2] - cy], -1)
    np.testing.assert_allclose(distances["box_targets"].numpy()[positive], ltrb * 128 / strides[:, None], atol=1e-3)
