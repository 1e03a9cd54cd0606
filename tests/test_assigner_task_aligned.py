"""TaskAlignedAssigner (TOOD, Feng et al. 2021, Sec. 3.2) against a float64 NumPy reference written from the paper's
definitions and mmdetection's `task_aligned_assigner.py`, one box and one anchor at a time."""

import numpy as np
import pytest

from keras_focal.assigners.task_aligned import TaskAlignedAssigner
from keras_focal.layers import AnchorGenerator


# ------------------------------------------------------------------------------------------------ reference
def _iou(a, b):
    ih = max(min(a[2], b[2]) - max(a[0], b[0]), 0.0)
    iw = max(min(a[3], b[3]) - max(a[1], b[1]), 0.0)
    inter = ih * iw
    union = max(a[2] - a[0], 0) * max(a[3] - a[1], 0) + max(b[2] - b[0], 0) * max(b[3] - b[1], 0) - inter
    return inter / union if union > 0 else 0.0


def reference(anchors, strides, boxes, classes, scores, predicted, h, w, topk=13, alpha=1.0, beta=6.0,
              ensure_positive=True, inside_margin=0.01):
    """One image: boxes [M, 4], classes [M] (-1 padding), scores [A, C], predicted [A, 4]. float64 throughout."""
    anchors, boxes, scores, predicted = (np.asarray(x, np.float64) for x in (anchors, boxes, scores, predicted))
    a_count = len(anchors)
    real = [j for j in range(len(boxes))
            if classes[j] >= 0 and np.all(np.isfinite(boxes[j])) and boxes[j][2] > boxes[j][0]
            and boxes[j][3] > boxes[j][1]]
    cy = (anchors[:, 0] + anchors[:, 2]) / 2
    cx = (anchors[:, 1] + anchors[:, 3]) / 2
    u = np.zeros((a_count, len(boxes)))
    t = np.zeros((a_count, len(boxes)))
    pairs = set()
    for j in real:
        for i in range(a_count):
            u[i, j] = _iou(predicted[i], boxes[j])
            t[i, j] = scores[i, classes[j]] ** alpha * u[i, j] ** beta  # Eq. 3
        order = sorted(range(a_count), key=lambda i: (-t[i, j], i))[:topk]  # first anchor on ties
        y0, x0, y1, x1 = boxes[j]
        own = [i for i in order if t[i, j] > 0 and min((cy[i] - y0) * h, (y1 - cy[i]) * h, (cx[i] - x0) * w,
                                                      (x1 - cx[i]) * w) > inside_margin]
        if not own and ensure_positive:
            gy, gx = (y0 + y1) / 2, (x0 + x1) / 2
            finest = [i for i in range(a_count) if strides[i] == min(strides)]
            own = [min(finest, key=lambda i: (((cy[i] - gy) * h) ** 2 + ((cx[i] - gx) * w) ** 2, i))]
        pairs.update((i, j) for i in own)
    cls_t = np.full(a_count, -1)
    idx = np.full(a_count, -1)
    owner = {}
    for i in range(a_count):
        claims = [j for j in range(len(boxes)) if (i, j) in pairs]
        if claims:
            owner[i] = max(claims, key=lambda j: (u[i, j], -j))  # highest IoU, first box on ties
            cls_t[i], idx[i] = classes[owner[i]], owner[i]
    t_hat = np.zeros(a_count)
    for j in real:
        mine = [i for i in owner if owner[i] == j]
        if mine:
            tmax, umax = max(t[i, j] for i in mine), max(u[i, j] for i in mine)
            for i in mine:
                t_hat[i] = t[i, j] / (tmax + 1e-7) * umax  # Eq. 10, mmdetection's epsilon
    return cls_t, idx, t_hat


def grid_anchors(h, w, strides=(8, 16, 32)):
    """Square anchors of 8 x stride on a grid per level, normalized yxyx (TOOD's / GFL's), and their strides."""
    out, st = [], []
    for s in strides:
        for y in range(-(-h // s)):
            for x in range(-(-w // s)):
                cy, cx, half = (y + 0.5) * s, (x + 0.5) * s, 4 * s
                out.append([(cy - half) / h, (cx - half) / w, (cy + half) / h, (cx + half) / w])
                st.append(s)
    return np.asarray(out, np.float32), np.asarray(st, np.float32)


def run(assigner, anchors, strides, boxes, classes, scores, predicted, h, w):
    out = assigner.assign_anchors(anchors, strides, boxes, classes, scores, predicted, h, w)
    return {k: np.asarray(v) for k, v in out.items()}


def check(assigner, anchors, strides, boxes, classes, scores, predicted, h, w, **kw):
    got = run(assigner, anchors, strides, boxes, classes, scores, predicted, h, w)
    for bi in range(len(boxes)):
        cls_t, idx, t_hat = reference(anchors, strides, boxes[bi], classes[bi], scores[bi], predicted[bi], h, w,
                                      topk=assigner.topk, alpha=assigner.alpha, beta=assigner.beta,
                                      ensure_positive=assigner.ensure_positive, **kw)
        np.testing.assert_array_equal(got["assignment"][bi], idx)
        np.testing.assert_array_equal(np.where(idx >= 0, classes[bi][idx], -1), cls_t)
        np.testing.assert_allclose(got["alignment"][bi], t_hat, rtol=2e-4, atol=1e-6)
    return got


def random_case(rng, batch=2, m=5, h=64, w=64, classes=3):
    anchors, strides = grid_anchors(h, w)
    a = len(anchors)
    ctr = rng.uniform(0.1, 0.9, (batch, m, 2))
    size = rng.uniform(0.1, 0.6, (batch, m, 2))
    boxes = np.concatenate([ctr - size / 2, ctr + size / 2], -1).clip(0, 1).astype(np.float32)
    cls = rng.integers(0, classes, (batch, m)).astype(np.int32)
    cls[1, 3:] = -1  # padding
    boxes[1, 3:] = -1
    scores = rng.uniform(0.0, 1.0, (batch, a, classes)).astype(np.float32)
    # predicted boxes near their anchors, so that many overlap the ground truth
    c = (anchors[None, :, :2] + anchors[None, :, 2:]) / 2 + rng.normal(0, 0.03, (batch, a, 2))
    half = rng.uniform(0.05, 0.3, (batch, a, 2))
    predicted = np.concatenate([c - half, c + half], -1).astype(np.float32)
    return anchors, strides, boxes, cls, scores, predicted, h, w


# ------------------------------------------------------------------------------------------------ tests
@pytest.mark.parametrize("ensure_positive", [True, False])
def test_random_boxes_match_reference(ensure_positive):
    rng = np.random.default_rng(0)
    got = check(TaskAlignedAssigner(ensure_positive=ensure_positive), *random_case(rng))
    assert ((got["assignment"]) >= 0).sum() > 10  # the case is not trivial
    assert np.all(got["alignment"] <= 1.0)


def test_small_topk_and_other_exponents():
    rng = np.random.default_rng(1)
    check(TaskAlignedAssigner(topk=3, alpha=0.5, beta=2.0), *random_case(rng, m=8))


def test_tied_predictions_first_anchor_and_first_box():
    """Identical scores and boxes everywhere: the top-k choice and the IoU conflicts are decided by order alone."""
    h = w = 64
    anchors, strides = grid_anchors(h, w)
    a = len(anchors)
    boxes = np.array([[[0.2, 0.2, 0.7, 0.7], [0.2, 0.2, 0.7, 0.7], [0.3, 0.3, 0.6, 0.6], [-1, -1, -1, -1]]],
                     np.float32)
    classes = np.array([[0, 1, 2, -1]], np.int32)
    scores = np.full((1, a, 3), 0.5, np.float32)
    predicted = np.tile(np.array([0.25, 0.25, 0.65, 0.65], np.float32), (1, a, 1))
    got = check(TaskAlignedAssigner(), anchors, strides, boxes, classes, scores, predicted, h, w)
    # the two identical boxes claim the same anchors: the first one keeps them all
    assert (got["assignment"] == 0).sum() > 0 and (got["assignment"] == 1).sum() == 0


def test_empty_images():
    rng = np.random.default_rng(2)
    anchors, strides, boxes, cls, scores, predicted, h, w = random_case(rng)
    boxes[0] = -1.0
    cls[0] = -1
    got = check(TaskAlignedAssigner(), anchors, strides, boxes, cls, scores, predicted, h, w)
    assert np.all((got["assignment"])[0] == -1) and np.all(got["alignment"][0] == 0)
    # no box rows at all (M = 0)
    got = run(TaskAlignedAssigner(), anchors, strides, boxes[:, :0], cls[:, :0], scores, predicted, h, w)
    assert np.all((got["assignment"]) == -1) and np.all(got["assignment"] == -1)
    assert np.all(got["alignment"] == 0)


def test_tiny_boxes_get_the_nearest_finest_anchor():
    """Boxes smaller than the stride contain no anchor centre: without the rule they get no positive."""
    h = w = 64
    anchors, strides = grid_anchors(h, w)
    a = len(anchors)
    # 3-pixel boxes between anchor centres (centres at 4, 12, 20, ... px on the stride-8 level)
    boxes = np.array([[[5 / 64, 5 / 64, 8 / 64, 8 / 64], [30 / 64, 41 / 64, 33 / 64, 43 / 64],
                       [0.1, 0.5, 0.6, 0.9]]], np.float32)
    classes = np.array([[1, 0, 2]], np.int32)
    rng = np.random.default_rng(3)
    scores = rng.uniform(0.1, 1.0, (1, a, 3)).astype(np.float32)
    c = (anchors[None, :, :2] + anchors[None, :, 2:]) / 2
    predicted = np.concatenate([c - 0.05, c + 0.05], -1).astype(np.float32)
    got = check(TaskAlignedAssigner(), anchors, strides, boxes, classes, scores, predicted, h, w)
    for j in (0, 1):
        (rows,) = np.nonzero(got["assignment"][0] == j)
        assert len(rows) == 1 and strides[rows[0]] == 8
    without = check(TaskAlignedAssigner(ensure_positive=False), anchors, strides, boxes, classes, scores,
                    predicted, h, w)
    assert not np.isin([0, 1], without["assignment"][0]).any()


def test_predictions_are_detached():
    import tensorflow as tf

    rng = np.random.default_rng(4)
    anchors, strides, boxes, cls, scores, predicted, h, w = random_case(rng)
    scores, predicted = tf.Variable(scores), tf.Variable(predicted)
    with tf.GradientTape() as tape:
        out = TaskAlignedAssigner().assign_anchors(anchors, strides, boxes, cls, scores, predicted, h, w)
        total = tf.reduce_sum(out["alignment"])
    assert all(g is None for g in tape.gradient(total, [scores, predicted]))


def test_reference_can_fail():
    """The comparison is sharp: the reference with a deliberate error (beta 5, or no inside margin) differs."""
    rng = np.random.default_rng(0)
    case = random_case(rng)
    got = run(TaskAlignedAssigner(), *case)
    _, _, t_hat = reference(*[x[0] if i in (2, 3, 4, 5) else x for i, x in enumerate(case)], beta=5.0)
    assert not np.allclose(got["alignment"][0], t_hat, rtol=2e-4, atol=1e-6)


def test_bad_arguments():
    with pytest.raises(ValueError, match="topk"):
        TaskAlignedAssigner(topk=0)
    with pytest.raises(ValueError, match="alpha and beta"):
        TaskAlignedAssigner(beta=-1)
    rng = np.random.default_rng(0)
    anchors, strides, boxes, cls, scores, predicted, h, w = random_case(rng)
    with pytest.raises(ValueError, match="batched boxes"):
        TaskAlignedAssigner().assign_anchors(anchors, strides, boxes[0], cls[0], scores, predicted, h, w)
    with pytest.raises(ValueError, match="needs predictions"):
        TaskAlignedAssigner().assign(AnchorGenerator(), boxes, cls, h, w)


def test_assign_with_the_anchor_generator():
    """The protocol's entry point: anchors and strides from the head's generator (TOOD's: one 8 x stride square
    anchor per location on P3-P7)."""
    h = w = 64
    gen = AnchorGenerator(min_level=3, max_level=7, anchor_size=8.0, num_scales=1, aspect_ratios=(1.0,))
    anchors = np.asarray(gen(h, w))
    strides = np.asarray(gen.anchor_strides(h, w))
    rng = np.random.default_rng(5)
    _, _, boxes, cls, _, _, _, _ = random_case(rng)
    scores = rng.uniform(0.0, 1.0, (2, len(anchors), 3)).astype(np.float32)
    c = (anchors[None, :, :2] + anchors[None, :, 2:]) / 2
    predicted = np.repeat(np.concatenate([c - 0.15, c + 0.15], -1), 2, axis=0).astype(np.float32)
    out = TaskAlignedAssigner().assign(gen, boxes, cls, h, w, predictions={"scores": scores, "boxes": predicted})
    ref = run(TaskAlignedAssigner(), anchors, strides, boxes, cls, scores, predicted, h, w)
    np.testing.assert_array_equal(np.asarray(out["assignment"]), ref["assignment"])
    check(TaskAlignedAssigner(), anchors, strides, boxes, cls, scores, predicted, h, w)


def test_config_round_trip():
    assigner = TaskAlignedAssigner(topk=9, alpha=0.5, beta=4.0, ensure_positive=False)
    again = TaskAlignedAssigner.from_config(assigner.get_config())
    assert again.get_config() == assigner.get_config()
