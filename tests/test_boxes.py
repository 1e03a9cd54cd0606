"""keras_focal.boxes against NumPy float64 and torchvision-style IoU written independently."""

import numpy as np
import pytest
import tensorflow as tf

from keras_focal import boxes
from keras_focal.layers import AnchorEncoder, AnchorGenerator


def _random_boxes(rng, n):
    lo = rng.uniform(0, 0.8, (n, 2))
    return np.concatenate([lo, lo + rng.uniform(0, 0.4, (n, 2))], -1)


def _iou_reference(a, b):
    """float64 [N, M] by explicit loops over the two sets (torchvision box_iou's definition, yxyx)."""
    out = np.zeros((len(a), len(b)))
    for i, p in enumerate(a):
        for j, q in enumerate(b):
            ih = max(0.0, min(p[2], q[2]) - max(p[0], q[0]))
            iw = max(0.0, min(p[3], q[3]) - max(p[1], q[1]))
            inter = ih * iw
            union = (p[2] - p[0]) * (p[3] - p[1]) + (q[2] - q[0]) * (q[3] - q[1]) - inter
            out[i, j] = inter / union if union > 0 else 0.0
    return out


def test_pairwise_and_aligned_iou_match_the_reference():
    rng = np.random.default_rng(0)
    a, b = _random_boxes(rng, 7), _random_boxes(rng, 5)
    b[0] = a[0]  # identical boxes: IoU 1
    b[1] = [0.3, 0.3, 0.3, 0.5]  # zero area: IoU 0, not NaN
    expected = _iou_reference(a, b)
    np.testing.assert_allclose(boxes.pairwise_iou(a, b), expected, atol=1e-12)
    batched = boxes.pairwise_iou(a.astype("float32"), np.stack([b, b[::-1]]).astype("float32"))
    assert batched.shape == (2, 7, 5)
    np.testing.assert_allclose(batched[1], expected[:, ::-1], atol=1e-6)
    np.testing.assert_allclose(boxes.aligned_iou(a[:5], b), np.diag(expected[:5]), atol=1e-12)
    # Exactly 0.5 stays 0.5 (no epsilon in the denominator): a small box against its upper half.
    unit = np.array([[0.0, 0.0, 2.0**-6, 2.0**-6]], "float32")
    half = np.array([[0.0, 0.0, 2.0**-7, 2.0**-6]], "float32")
    assert float(boxes.pairwise_iou(unit, half)[0, 0]) == 0.5


def test_aligned_iou_has_finite_gradients_on_empty_boxes():
    empty = tf.constant([[0.2, 0.2, 0.2, 0.2]])
    with tf.GradientTape() as tape:
        tape.watch(empty)
        iou = boxes.aligned_iou(empty, empty)
    assert float(iou[0]) == 0.0 and np.all(np.isfinite(tape.gradient(iou, empty)))


def test_valid_boxes_mask_centers_and_area():
    b = np.array([[0.1, 0.1, 0.5, 0.3], [-1, -1, -1, -1], [0.2, 0.2, 0.2, 0.6], [0.5, 0.5, 0.4, 0.9],
                  [np.nan, 0, 1, 1], [0.1, 0.1, 0.5, 0.3]], "float32")
    c = np.array([0, -1, 1, 2, 3, -1])
    np.testing.assert_array_equal(boxes.valid_boxes_mask(b, c), [True, False, False, False, False, False])
    np.testing.assert_allclose(boxes.centers(b[:1]), [[0.3, 0.2]], atol=1e-7)
    np.testing.assert_allclose(boxes.area(b[[0, 3]]), [0.08, 0.0], atol=1e-7)
    assert (boxes.BACKGROUND, boxes.IGNORED) == (-1, -2)


@pytest.mark.parametrize("assigner", ["iou", "atss"])
def test_encoder_matched_indices_point_at_the_matched_box(assigner):
    generator = AnchorGenerator(min_level=3, max_level=5)
    from keras_focal.assigners import ATSSAssigner, IoUAssigner

    encoder = AnchorEncoder(generator, assigner=IoUAssigner() if assigner == "iou" else ATSSAssigner())
    gt = np.array([[[0.1, 0.1, 0.5, 0.4], [0.5, 0.5, 0.9, 0.95], [-1, -1, -1, -1]]], "float32")
    classes = np.array([[1, 0, -1]], "int32")
    t = encoder(gt, classes, 128, 128)
    index = np.asarray(t["matched_indices"])
    labels = np.asarray(t["class_targets"])
    assert index.dtype == np.int32 and set(np.unique(index)) <= {-1, 0, 1}
    np.testing.assert_array_equal(index >= 0, labels >= 0)
    positive = index >= 0
    np.testing.assert_allclose(np.asarray(t["matched_boxes"])[positive], gt[0][index[positive]])
    np.testing.assert_array_equal(labels[positive], classes[0][index[positive]])
    empty = encoder(np.zeros((0, 4), "float32"), np.zeros((0,), "int32"), 128, 128)
    assert np.all(np.asarray(empty["matched_indices"]) == -1)
