"""Every loss against an independent NumPy float64 reference (tests/_loss_refs.py), and the contract identities."""

import keras
import numpy as np
import pytest

import _loss_refs as ref
from keras_focal.losses import (
    BalancedCrossentropy,
    CategoricalFocalLoss,
    DistributionFocalLoss,
    FocalLoss,
    GIoULoss,
    QualityFocalLoss,
    SmoothL1Loss,
    SparseCategoricalFocalLoss,
    balanced_crossentropy,
    categorical_focal_loss,
    distribution_focal_loss,
    focal_loss,
    giou_loss,
    quality_focal_loss,
    smooth_l1_loss,
    sparse_categorical_focal_loss,
)

RTOL = 1e-6
ATOL = 1e-7  # only matters where values are ~0
SHAPES = [(5,), (3, 5), (2, 3, 4), (2, 2, 3, 4)]  # ranks 1 to 4
REDUCTIONS = ["sum_over_batch_size", "sum", "mean", "mean_with_sample_weight", "none"]


def close(actual, expected, rtol=RTOL, atol=ATOL):
    actual = keras.ops.convert_to_numpy(actual)
    assert actual.dtype == np.float32, actual.dtype
    np.testing.assert_allclose(actual.astype(np.float64), expected, rtol=rtol, atol=atol)


def rng():
    return np.random.default_rng(7)


def logits(shape, scale=3.0):
    return (rng().normal(size=shape) * scale).astype("float32")


def probabilities(shape):
    return rng().uniform(0.001, 0.999, size=shape).astype("float32")


def labels(shape, soft):
    r = np.random.default_rng(11)
    if soft:
        return r.uniform(0, 1, size=shape).astype("float32")
    return (r.uniform(size=shape) < 0.3).astype("float32")


# ----------------------------------------------------------------------------------------------------------------
# Plain functions, element-wise


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize("from_logits", [True, False])
@pytest.mark.parametrize("alpha,gamma,ls", [(0.25, 2.0, 0.0), (None, 0.5, 0.0), (0.6, 5.0, 0.1), (0.25, 0.0, 0.2),
                                            (None, 1.0, 0.0), (0.25, 1.5, 0.0)])
def test_focal_loss_elementwise(shape, soft, from_logits, alpha, gamma, ls):
    y = labels(shape, soft)
    x = logits(shape) if from_logits else probabilities(shape)
    out = focal_loss(y, x, alpha=alpha, gamma=gamma, from_logits=from_logits, label_smoothing=ls)
    assert tuple(out.shape) == shape
    close(out, ref.focal(y, x, alpha, gamma, from_logits, ls))


@pytest.mark.parametrize("from_logits", [True, False])
def test_balanced_crossentropy_elementwise(from_logits):
    y = labels((4, 6), False)
    x = logits((4, 6)) if from_logits else probabilities((4, 6))
    close(balanced_crossentropy(y, x, alpha=0.7, from_logits=from_logits), ref.focal(y, x, 0.7, 0.0, from_logits))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("from_logits", [True, False])
@pytest.mark.parametrize("alpha,gamma,ls", [(0.25, 2.0, 0.0), (None, 0.5, 0.1), (0.5, 0.0, 0.0), (1.0, 5.0, 0.0)])
def test_categorical_elementwise(shape, from_logits, alpha, gamma, ls):
    num_classes = shape[-1]
    y = np.eye(num_classes, dtype="float32")[np.random.default_rng(3).integers(0, num_classes, size=shape[:-1])]
    x = logits(shape) if from_logits else probabilities(shape)
    out = categorical_focal_loss(y, x, alpha=alpha, gamma=gamma, from_logits=from_logits, label_smoothing=ls)
    assert tuple(out.shape) == shape[:-1]
    close(out, ref.categorical(y, x, alpha, gamma, from_logits, ls))


def test_categorical_soft_labels():
    y = np.random.default_rng(3).dirichlet(np.ones(5), size=(4,)).astype("float32")
    x = logits((4, 5))
    close(categorical_focal_loss(y, x, from_logits=True), ref.categorical(y, x, 0.25, 2.0, True))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("from_logits", [True, False])
@pytest.mark.parametrize("ignore_class", [None, -1, 2])
def test_sparse_categorical_elementwise(shape, from_logits, ignore_class):
    num_classes = shape[-1]
    y = np.random.default_rng(5).integers(0, num_classes, size=shape[:-1])
    if ignore_class == -1 and y.size > 1:
        y.reshape(-1)[::3] = -1
    x = logits(shape) if from_logits else probabilities(shape)
    out = sparse_categorical_focal_loss(y, x, gamma=1.5, from_logits=from_logits, ignore_class=ignore_class)
    close(out, ref.sparse_categorical(y, x, 0.25, 1.5, from_logits, ignore_class))
    if ignore_class is not None:
        assert np.all(keras.ops.convert_to_numpy(out)[y == ignore_class] == 0)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("from_logits", [True, False])
@pytest.mark.parametrize("beta", [2.0, 0.0, 1.0, 0.5, 3.0])
def test_qfl_elementwise(shape, from_logits, beta):
    y = labels(shape, soft=True) * (np.random.default_rng(2).uniform(size=shape) < 0.5)  # IoU or 0
    x = logits(shape) if from_logits else probabilities(shape)
    close(quality_focal_loss(y, x, beta=beta, from_logits=from_logits), ref.qfl(y, x, beta, from_logits))


@pytest.mark.parametrize("target_shape", [(), (3,), (2, 4), (2, 3, 4)])
@pytest.mark.parametrize("from_logits", [True, False])
def test_dfl_elementwise(target_shape, from_logits):
    n = 16
    y = np.random.default_rng(4).uniform(0, n, size=target_shape).astype("float32")
    if y.size:
        y.reshape(-1)[0] = n  # a target equal to n
    x = logits(target_shape + (n + 1,)) if from_logits else probabilities(target_shape + (n + 1,))
    out = distribution_focal_loss(y, x, from_logits=from_logits)
    assert tuple(out.shape) == target_shape
    close(out, ref.dfl(y, x, from_logits), rtol=2e-6)


def boxes(shape, seed):
    r = np.random.default_rng(seed)
    lo = r.uniform(0, 0.6, size=shape + (2,))
    hi = lo + r.uniform(0.01, 0.4, size=shape + (2,))
    return np.concatenate([lo, hi], axis=-1).astype("float32")


@pytest.mark.parametrize("shape", [(4,), (3, 5), (2, 3, 4)])
def test_giou_elementwise(shape):
    a, b = boxes(shape, 1), boxes(shape, 2)
    b.reshape(-1, 4)[0] = a.reshape(-1, 4)[0]  # a perfect match
    out = giou_loss(a, b)
    assert tuple(out.shape) == shape
    close(out, ref.giou(a, b), atol=1e-6)


def test_giou_degenerate_boxes_are_finite():
    zero = np.zeros((2, 4), "float32")
    out = keras.ops.convert_to_numpy(giou_loss(zero, zero))
    np.testing.assert_allclose(out, [1.0, 1.0])


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("beta", [0.11, 0.0, 1.0])
def test_smooth_l1_elementwise(shape, beta):
    y = logits(shape, 0.2)
    x = np.random.default_rng(9).normal(size=shape).astype("float32") * 0.2
    close(smooth_l1_loss(y, x, beta=beta), ref.smooth_l1(y, x, beta))


def test_smooth_l1_vs_huber():
    """The documented relation: keras Huber(delta=b) == b * smoothL1(beta=b) (mean over the last axis)."""
    y, x = logits((4, 4), 0.2), logits((4, 4), 0.3)[::-1].copy()
    huber = keras.losses.Huber(delta=0.11, reduction=None)(y, x)
    ours = keras.ops.mean(smooth_l1_loss(y, x, beta=0.11), axis=-1) * 0.11
    np.testing.assert_allclose(keras.ops.convert_to_numpy(huber), keras.ops.convert_to_numpy(ours), rtol=1e-5)


# ----------------------------------------------------------------------------------------------------------------
# Loss classes: last-axis reduction, sample_weight, every reduction


def _cases():
    y_b, x_b = labels((3, 4, 5), soft=True), logits((3, 4, 5))
    y_c = np.eye(5, dtype="float32")[np.random.default_rng(1).integers(0, 5, size=(3, 4))]
    y_s = np.random.default_rng(1).integers(0, 5, size=(3, 4))
    y_d = np.random.default_rng(1).uniform(0, 8, size=(3, 4)).astype("float32")
    x_d = logits((3, 4, 9))
    box_t, box_p = boxes((3, 4), 1), boxes((3, 4), 2)
    return [
        (FocalLoss(alpha=0.3, gamma=2.0, from_logits=True, label_smoothing=0.1), y_b, x_b,
         ref.focal(y_b, x_b, 0.3, 2.0, True, 0.1).mean(-1)),
        (FocalLoss(alpha=None, gamma=0.5, from_logits=True), y_b, x_b, ref.focal(y_b, x_b, None, 0.5, True).mean(-1)),
        (BalancedCrossentropy(alpha=0.8, from_logits=True), y_b, x_b, ref.focal(y_b, x_b, 0.8, 0.0, True).mean(-1)),
        (CategoricalFocalLoss(from_logits=True), y_c, x_b, ref.categorical(y_c, x_b, 0.25, 2.0, True)),
        (SparseCategoricalFocalLoss(from_logits=True), y_s, x_b, ref.sparse_categorical(y_s, x_b, 0.25, 2.0, True)),
        (QualityFocalLoss(from_logits=True), y_b, x_b, ref.qfl(y_b, x_b, 2.0, True).mean(-1)),
        (DistributionFocalLoss(from_logits=True), y_d, x_d, ref.dfl(y_d, x_d, True)),
        (GIoULoss(), box_t, box_p, ref.giou(box_t, box_p)),
        (SmoothL1Loss(), box_t, box_p, ref.smooth_l1(box_t, box_p).sum(-1)),
    ]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True])
def test_classes_reduction_and_sample_weight(reduction, weighted):
    for loss, y, x, per_sample in _cases():
        loss = loss.__class__.from_config({**loss.get_config(), "reduction": reduction})
        sw = np.random.default_rng(0).uniform(0, 2, size=per_sample.shape).astype("float32") if weighted else None
        out = loss(y, x, sample_weight=sw)
        expected = ref.reduce(per_sample, sw, reduction)
        try:
            close(out, expected, rtol=2e-6, atol=1e-6)
        except AssertionError as error:
            raise AssertionError(f"{loss.__class__.__name__}, reduction={reduction}: {error}") from None


def test_classes_accept_keras_unit_axis_convention():
    y = np.array([1.0, 0.0, 1.0], "float32")
    x = logits((3, 1))
    close(FocalLoss(from_logits=True, reduction=None)(y, x), ref.focal(y[:, None], x, from_logits=True).mean(-1))


# ----------------------------------------------------------------------------------------------------------------
# Contract identities


@pytest.mark.parametrize("from_logits", [True, False])
@pytest.mark.parametrize("alpha,gamma,ls", [(0.25, 2.0, 0.0), (0.4, 0.5, 0.0), (0.25, 5.0, 0.1), (0.9, 0.0, 0.0)])
def test_identity_keras_binary_focal(from_logits, alpha, gamma, ls):
    y = labels((6, 7), soft=False)
    x = logits((6, 7)) if from_logits else probabilities((6, 7))
    ours = FocalLoss(alpha=alpha, gamma=gamma, from_logits=from_logits, label_smoothing=ls, reduction=None)(y, x)
    keras_core = keras.losses.BinaryFocalCrossentropy(
        apply_class_balancing=True, alpha=alpha, gamma=gamma, from_logits=from_logits, label_smoothing=ls,
        reduction=None,
    )(y, x)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(ours), keras.ops.convert_to_numpy(keras_core), rtol=2e-5)


@pytest.mark.parametrize("from_logits", [True, False])
@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (0.5, 0.0), (1.0, 3.5)])
def test_identity_keras_categorical_focal(from_logits, alpha, gamma):
    y = np.eye(6, dtype="float32")[np.random.default_rng(8).integers(0, 6, size=(5,))]
    x = logits((5, 6)) if from_logits else probabilities((5, 6))
    ours = CategoricalFocalLoss(alpha=alpha, gamma=gamma, from_logits=from_logits, reduction=None)(y, x)
    keras_core = keras.losses.CategoricalFocalCrossentropy(
        alpha=alpha, gamma=gamma, from_logits=from_logits, reduction=None
    )(y, x)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(ours), keras.ops.convert_to_numpy(keras_core), rtol=2e-5,
                               atol=1e-7)


@pytest.mark.parametrize("from_logits", [True, False])
def test_identity_focal_gamma0_is_balanced(from_logits):
    y = labels((4, 9), soft=True)
    x = logits((4, 9)) if from_logits else probabilities((4, 9))
    a = FocalLoss(alpha=0.35, gamma=0.0, from_logits=from_logits)(y, x)
    b = BalancedCrossentropy(alpha=0.35, from_logits=from_logits)(y, x)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b), rtol=1e-7)


def test_from_counts():
    loss = BalancedCrossentropy.from_counts(10, 990, from_logits=True)
    assert loss.alpha / (1 - loss.alpha) == pytest.approx(990 / 10)
    assert loss.from_logits


# ----------------------------------------------------------------------------------------------------------------
# The tests can fail: deliberately wrong references (a 10 ppm error, alpha on the wrong class) are caught.


def test_a_wrong_reference_is_caught():
    y, x = labels((4, 5), soft=False), logits((4, 5))
    wrong = ref.focal(y, x, 0.25, 2.0, True) * (1 + 1e-5)  # a 10 ppm error
    with pytest.raises(AssertionError):
        close(focal_loss(y, x, from_logits=True), wrong)
    wrong_alpha = ref.focal(y, x, 0.75, 2.0, True)  # alpha applied to the wrong class
    with pytest.raises(AssertionError):
        close(focal_loss(y, x, from_logits=True), wrong_alpha)
