import numpy as np
import pytest
import tensorflow as tf

"""DetectionDecoder: top-k per level, thresholds and class-aware NMS on per-class scores and decoded boxes."""

from keras_focal.layers import AnchorGenerator, DeltaCoder, DetectionDecoder, DistanceCoder

S = 256.0
# 4 x 4 non-overlapping 64-px tiles (see test_layers_encoder.py): anchor i*4+j = [64i, 64j, 64i+64, 64j+64] px
TILES = AnchorGenerator(min_level=6, max_level=6, anchor_size=1.0, num_scales=1, aspect_ratios=(1.0,))
METHODS = ["combined", "padded"]


def logit(p):
    p = np.asarray(p, "float64")
    return np.log(p / (1 - p))


def run(dec, logits, codes, h, w, coder=DeltaCoder()):
    """The decoder on what a head gives it: sigmoid scores and boxes decoded by `coder`."""
    gen = dec.anchor_generator
    scores = tf.sigmoid(tf.cast(logits, tf.float32))
    return dec(scores, coder.decode(gen(h, w), codes, h, w, gen.anchor_strides(h, w)), h, w)


def _inputs(num_classes=3, batch=1):
    logits = np.full((batch, 16, num_classes), -20.0, "float32")
    deltas = np.zeros((batch, 16, 4), "float32")
    return logits, deltas


@pytest.mark.parametrize("method", METHODS)
def test_duplicates_removed_within_class_not_across(method):
    logits, deltas = _inputs()
    logits[0, 0, 0] = logit(0.9)
    logits[0, 1, 0] = logit(0.8)  # anchor 1 shifted one tile left: the same box as anchor 0, same class
    logits[0, 1, 1] = logit(0.7)  # ... but also class 1: not suppressed by the class-0 box
    deltas[0, 1, 1] = -1.0
    logits[0, 10, 2] = logit(0.6)  # an unrelated box
    out = run(DetectionDecoder(TILES, nms_method=method), logits, deltas, 256, 256)
    n = int(out["num_detections"][0])
    assert n == 3
    np.testing.assert_allclose(out["detection_scores"][0, :3], [0.9, 0.7, 0.6], atol=1e-5)
    np.testing.assert_array_equal(out["detection_classes"][0, :3], [0, 1, 2])
    np.testing.assert_allclose(out["detection_boxes"][0, 0] * S, [0, 0, 64, 64], atol=1e-3)
    np.testing.assert_allclose(out["detection_boxes"][0, 1] * S, [0, 0, 64, 64], atol=1e-3)
    np.testing.assert_allclose(out["detection_boxes"][0, 2] * S, [128, 128, 192, 192], atol=1e-3)
    assert np.all(out["detection_scores"][0, 3:] == 0) and np.all(out["detection_boxes"][0, 3:] == 0)
    assert np.all(out["detection_classes"][0, 3:] == 0)


@pytest.mark.parametrize("method", METHODS)
def test_max_detections_sorted_and_shapes(method):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 16, 3)).astype("float32")
    deltas = np.zeros((2, 16, 4), "float32")
    dec = DetectionDecoder(TILES, max_detections=5, score_threshold=0.0, nms_method=method)
    out = run(dec, logits, deltas, 256, 256)
    assert out["detection_boxes"].shape == (2, 5, 4) and out["detection_boxes"].dtype == tf.float32
    assert out["detection_scores"].shape == (2, 5) and out["detection_scores"].dtype == tf.float32
    assert out["detection_classes"].shape == (2, 5) and out["detection_classes"].dtype == tf.int32
    assert out["num_detections"].shape == (2,) and out["num_detections"].dtype == tf.int32
    np.testing.assert_array_equal(out["num_detections"], [5, 5])
    scores = out["detection_scores"].numpy()
    assert np.all(np.diff(scores, axis=1) <= 0)
    # tiles don't overlap, so the top-5 (anchor, class) scores survive NMS
    expected = np.sort((1 / (1 + np.exp(-logits))).reshape(2, -1), axis=1)[:, ::-1][:, :5]
    np.testing.assert_allclose(scores, expected, atol=1e-6)


@pytest.mark.parametrize("method", METHODS)
def test_nothing_passes_threshold(method):
    logits, deltas = _inputs(batch=2)
    logits[1, 3, 1] = logit(0.5)
    out = run(DetectionDecoder(TILES, score_threshold=0.5, nms_method=method), logits, deltas, 256, 256)
    np.testing.assert_array_equal(out["num_detections"], [0, 0])  # 0.5 is not > 0.5
    assert np.all(out["detection_scores"].numpy() == 0) and np.all(out["detection_boxes"].numpy() == 0)
    out = run(DetectionDecoder(TILES, nms_method=method), logits, deltas, 256, 256)
    np.testing.assert_array_equal(out["num_detections"], [0, 1])


def test_pre_nms_topk_and_clipping():
    logits, deltas = _inputs()
    logits[0, :, 0] = logit(np.linspace(0.2, 0.9, 16))
    deltas[0, 15] = [0.5, 0.5, 0.0, 0.0]  # tile (3,3) moved half a tile down-right, then clipped to the image
    out = run(DetectionDecoder(TILES, pre_nms_topk=2), logits, deltas, 256, 256)
    assert int(out["num_detections"][0]) == 2
    np.testing.assert_allclose(out["detection_boxes"][0, 0] * S, [224, 224, 256, 256], atol=1e-3)


def test_gfl_distances():
    gen = AnchorGenerator(min_level=3, max_level=3, anchor_size=8, num_scales=1, aspect_ratios=(1.0,))
    logits = np.full((1, 64, 2), -20.0, "float32")
    dist = np.zeros((1, 64, 4), "float32")
    logits[0, 9, 1] = 3.0  # cell (1, 1), centre (12, 12) px, stride 8
    dist[0, 9] = [1.0, 0.5, 2.0, 3.0]  # left, top, right, bottom in strides
    out = run(DetectionDecoder(gen, iou_threshold=0.6), logits, dist, 64, 64, coder=DistanceCoder())
    np.testing.assert_allclose(out["detection_boxes"][0, 0] * 64, [8, 4, 36, 28], atol=1e-3)
    assert int(out["detection_classes"][0, 0]) == 1


@pytest.mark.parametrize("method", METHODS)
def test_tf_function_unknown_shapes_and_float16(method):
    gen = AnchorGenerator()
    dec = DetectionDecoder(gen, nms_method=method)

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, None, None], tf.float16),
            tf.TensorSpec([None, None, 4], tf.float16),
            tf.TensorSpec([], tf.int32),
            tf.TensorSpec([], tf.int32),
        ]
    )
    def f(logits, boxes, h, w):
        return dec(tf.sigmoid(logits), boxes, h, w)

    for h, w in [(96, 128), (130, 70)]:
        a = gen.num_anchors(h, w)
        rng = np.random.default_rng(1)
        logits = rng.normal(-3, 2, size=(2, a, 4)).astype("float16")
        boxes = rng.normal(0, 0.2, size=(2, a, 4)).astype("float16")
        out = f(logits, boxes, h, w)
        eager = dec(tf.sigmoid(logits.astype("float32")), boxes.astype("float32"), h, w)
        assert out["detection_boxes"].dtype == tf.float32 and out["detection_classes"].dtype == tf.int32
        np.testing.assert_array_equal(out["num_detections"], eager["num_detections"])
        np.testing.assert_allclose(out["detection_scores"], eager["detection_scores"], atol=2e-3)
        b = out["detection_boxes"].numpy()
        assert b.min() >= 0 and b.max() <= 1


def test_methods_agree():
    gen = AnchorGenerator()
    rng = np.random.default_rng(2)
    a = gen.num_anchors(128, 128)
    logits = rng.normal(-4, 2, size=(2, a, 5)).astype("float32")
    boxes = rng.normal(0, 0.3, size=(2, a, 4)).astype("float32")
    o1 = run(DetectionDecoder(gen, nms_method="combined"), logits, boxes, 128, 128)
    o2 = run(DetectionDecoder(gen, nms_method="padded"), logits, boxes, 128, 128)
    np.testing.assert_array_equal(o1["num_detections"], o2["num_detections"])
    np.testing.assert_allclose(o1["detection_scores"], o2["detection_scores"], atol=1e-6)


def test_get_config_round_trip():
    import keras

    dec = DetectionDecoder(TILES, score_threshold=0.5, iou_threshold=0.6, max_detections=7)
    clone = DetectionDecoder.from_config(dec.get_config())
    assert clone.get_config() == dec.get_config()
    clone2 = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(dec))
    assert clone2.anchor_generator.get_config() == TILES.get_config() and clone2.max_detections == 7
