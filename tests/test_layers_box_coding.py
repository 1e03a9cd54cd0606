"""Box coders (keras_focal.layers.box_coders) against float64 references; DeltaCoder / DistanceCoder objects."""

import keras
import numpy as np

from _layers_refs import ref_decode, ref_encode
from keras_focal.layers import (
    AnchorGenerator,
    DeltaCoder,
    DistanceCoder,
    decode_deltas,
    decode_distances,
    encode_deltas,
    encode_distances,
)


def _random_boxes(rng, n):
    c = rng.uniform(0.1, 0.9, size=(n, 2))
    hw = rng.uniform(0.02, 0.5, size=(n, 2))
    return np.concatenate([c - hw / 2, c + hw / 2], axis=1)


def test_encode_matches_reference_and_round_trips():
    rng = np.random.default_rng(0)
    anchors = _random_boxes(rng, 50)
    boxes = _random_boxes(rng, 50)
    for weights in [(1, 1, 1, 1), (10, 10, 5, 5)]:
        d = encode_deltas(anchors.astype("float32"), boxes.astype("float32"), weights).numpy()
        ref = np.stack([ref_encode(a, b, weights) for a, b in zip(anchors, boxes)])
        np.testing.assert_allclose(d, ref, atol=1e-4, rtol=1e-4)
        back = decode_deltas(anchors.astype("float32"), d, weights).numpy()
        np.testing.assert_allclose(back, boxes, atol=1e-4)
        np.testing.assert_allclose(back, np.stack([ref_decode(a, x, weights) for a, x in zip(anchors, ref)]), atol=1e-4)


def test_encode_batched():
    rng = np.random.default_rng(1)
    anchors = _random_boxes(rng, 7).astype("float32")
    boxes = np.stack([_random_boxes(rng, 7), _random_boxes(rng, 7)]).astype("float32")
    d = encode_deltas(anchors, boxes).numpy()
    assert d.shape == (2, 7, 4)
    np.testing.assert_allclose(d[1], encode_deltas(anchors, boxes[1]).numpy(), atol=1e-6)


def test_decode_clamps_log_size():
    anchors = np.array([[0.4, 0.4, 0.5, 0.5]], "float32")
    out = decode_deltas(anchors, np.array([[0.0, 0.0, 50.0, 50.0]], "float32")).numpy()
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out[0, 2] - out[0, 0], 0.1 * 1000 / 16, rtol=1e-4)
    np.testing.assert_allclose(out, [ref_decode(anchors[0], [0, 0, 50, 50])], rtol=1e-4)


def test_distances_by_hand_and_round_trip():
    h, w = 64, 128
    gen = AnchorGenerator(min_level=3, max_level=3, anchor_size=8, num_scales=1, aspect_ratios=(1.0,))
    anchors = gen(h, w)
    strides = gen.anchor_strides(h, w)
    # anchor 0 is centred at (4, 4) pixels; a box from (0, 2) to (20, 36) px:
    box = np.array([0 / h, 2 / w, 20 / h, 36 / w], "float32")
    boxes = np.tile(box, (anchors.shape[0], 1))
    d = encode_distances(anchors, boxes, strides, h, w).numpy()
    # left (4-2)/8, top (4-0)/8, right (36-4)/8, bottom (20-4)/8
    np.testing.assert_allclose(d[0], [0.25, 0.5, 4.0, 2.0], atol=1e-5)
    back = decode_distances(anchors, d, strides, h, w).numpy()
    np.testing.assert_allclose(back, boxes, atol=1e-5)


def test_coder_objects_encode_decode_and_round_trip_their_config():
    rng = np.random.default_rng(9)
    gen = AnchorGenerator(anchor_size=8, num_scales=1, aspect_ratios=(1.0,))
    anchors = gen(64, 96).numpy()
    strides = gen.anchor_strides(64, 96).numpy()
    boxes = _random_boxes(rng, len(anchors)).astype("float32")
    weights = (10.0, 10.0, 5.0, 5.0)  # keras-cv's variance (0.1, 0.1, 0.2, 0.2)
    for coder in (DeltaCoder(weights=weights), DistanceCoder()):
        clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(coder))
        assert type(clone) is type(coder) and clone.get_config() == coder.get_config()
        codes = clone.encode(anchors, boxes, 64, 96, strides)
        np.testing.assert_allclose(clone.decode(anchors, codes, 64, 96, strides), boxes, atol=1e-5)
    assert clone.get_config() == {} and DeltaCoder(weights=weights).get_config()["weights"] == list(weights)
    ref = np.stack([ref_encode(a, b, weights) for a, b in zip(anchors.astype(np.float64), boxes.astype(np.float64))])
    np.testing.assert_allclose(DeltaCoder(weights=weights).encode(anchors, boxes), ref, atol=1e-3)
    with np.testing.assert_raises(ValueError):
        DeltaCoder(weights=(1.0, 1.0, 0.0, 1.0))
