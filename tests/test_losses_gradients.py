"""Gradients against float64 finite differences of the NumPy references, and numerical stability."""

import numpy as np
import pytest
import tensorflow as tf

import _loss_refs as ref
from keras_focal.losses import (
    FocalLoss,
    categorical_focal_loss,
    distribution_focal_loss,
    focal_loss,
    giou_loss,
    quality_focal_loss,
    smooth_l1_loss,
    sparse_categorical_focal_loss,
)


def autodiff(fn, x):
    """d sum(fn(x)) / dx in float64 through our implementation."""
    x = tf.constant(x, tf.float64)
    with tf.GradientTape() as tape:
        tape.watch(x)
        total = tf.reduce_sum(fn(x))
    return tape.gradient(total, x).numpy()


def finite_differences(fn, x, h=1e-6):
    """Central differences of sum(fn(x)) in float64, fn a NumPy reference."""
    x = np.asarray(x, np.float64)
    grad = np.zeros_like(x)
    for idx in np.ndindex(*x.shape):
        plus, minus = x.copy(), x.copy()
        plus[idx] += h
        minus[idx] -= h
        grad[idx] = (fn(plus).sum() - fn(minus).sum()) / (2 * h)
    return grad


def check(ours, reference, x, rtol=1e-5, atol=1e-8):
    np.testing.assert_allclose(autodiff(ours, x), finite_differences(reference, x), rtol=rtol, atol=atol)


R = np.random.default_rng(21)
X = R.normal(size=(3, 5)) * 2.5
Y_HARD = (R.uniform(size=(3, 5)) < 0.4).astype(np.float64)
Y_SOFT = R.uniform(size=(3, 5))
P = R.uniform(0.02, 0.98, size=(3, 5))


@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0, 2.0, 5.0, 1.5])
@pytest.mark.parametrize("alpha", [0.25, None])
@pytest.mark.parametrize("y", [Y_HARD, Y_SOFT], ids=["hard", "soft"])
def test_focal_gradient_from_logits(gamma, alpha, y):
    check(lambda x: focal_loss(y, x, alpha=alpha, gamma=gamma, from_logits=True),
          lambda x: ref.focal(y, x, alpha, gamma, True), X)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_focal_gradient_from_probabilities(gamma):
    check(lambda p: focal_loss(Y_SOFT, p, gamma=gamma, label_smoothing=0.1),
          lambda p: ref.focal(Y_SOFT, p, 0.25, gamma, False, 0.1), P)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
@pytest.mark.parametrize("from_logits", [True, False])
def test_categorical_gradients(gamma, from_logits):
    y = np.eye(5)[[0, 3, 4]]
    x = X if from_logits else P
    check(lambda x: categorical_focal_loss(y, x, gamma=gamma, from_logits=from_logits),
          lambda x: ref.categorical(y, x, 0.25, gamma, from_logits), x)
    labels = np.array([1, 2, 4])
    check(lambda x: sparse_categorical_focal_loss(labels, x, gamma=gamma, from_logits=from_logits),
          lambda x: ref.sparse_categorical(labels, x, 0.25, gamma, from_logits), x)


@pytest.mark.parametrize("beta", [2.0, 1.0, 0.5, 3.0])
@pytest.mark.parametrize("from_logits", [True, False])
def test_qfl_gradient(beta, from_logits):
    x = X if from_logits else P
    check(lambda x: quality_focal_loss(Y_SOFT, x, beta=beta, from_logits=from_logits),
          lambda x: ref.qfl(Y_SOFT, x, beta, from_logits), x)


@pytest.mark.parametrize("from_logits", [True, False])
def test_dfl_gradient(from_logits):
    y = np.array([[0.0, 2.5, 7.0], [3.3, 8.0, 6.999]])  # 8 == n
    x = R.normal(size=(2, 3, 9)) if from_logits else R.uniform(0.05, 1.0, size=(2, 3, 9))
    check(lambda x: distribution_focal_loss(y, x, from_logits=from_logits),
          lambda x: ref.dfl(y, x, from_logits), x, rtol=1e-5, atol=1e-7)


def test_giou_and_smooth_l1_gradients():
    t = np.array([[0.1, 0.1, 0.5, 0.6], [0.2, 0.3, 0.4, 0.5], [0.0, 0.0, 0.3, 0.3]])
    p = np.array([[0.15, 0.05, 0.45, 0.7], [0.5, 0.6, 0.8, 0.9], [0.01, 0.02, 0.31, 0.33]])  # overlap, disjoint
    check(lambda p: giou_loss(t, p), lambda p: ref.giou(t, p), p, rtol=1e-5, atol=1e-7)
    check(lambda p: smooth_l1_loss(t, p, beta=0.11), lambda p: ref.smooth_l1(t, p, 0.11), p)


def test_qfl_gradient_is_zero_where_sigma_equals_y():
    y = np.array([0.0, 0.3, 0.5, 0.77, 1.0])
    for beta in (2.0, 1.0, 0.5):
        x_at_y = np.log(np.clip(y, 1e-12, None)) - np.log(np.clip(1 - y, 1e-12, None))  # sigmoid(x) == y
        grad = autodiff(lambda x: quality_focal_loss(y[1:4], x, beta=beta, from_logits=True), x_at_y[1:4])
        np.testing.assert_allclose(grad, 0.0, atol=1e-12)
        grad = autodiff(lambda p: quality_focal_loss(y[1:4], p, beta=beta), y[1:4])
        np.testing.assert_allclose(grad, 0.0, atol=1e-12)


@pytest.mark.parametrize("target", [0.0, 2.25, 5.0, 7.5, 8.0])
def test_dfl_gradient_moves_mass_only_to_the_two_neighbouring_bins(target):
    n = 8
    y = np.array([target])
    left = min(int(np.floor(target)), n - 1)
    neighbours = {left, left + 1}
    # With respect to probabilities (normalised by their sum, as Keras does): every other bin gets the same
    # positive gradient (the normalisation), only y_l / y_r get a negative one.
    probs = np.full((1, n + 1), 1.0 / (n + 1))
    grad_p = autodiff(lambda s: distribution_focal_loss(y, s), probs)[0]
    others = [grad_p[k] for k in range(n + 1) if k not in neighbours]
    np.testing.assert_allclose(others, others[0], rtol=1e-12)
    assert {k for k in range(n + 1) if grad_p[k] < others[0]} <= neighbours
    # With respect to the logits: a descent step raises only y_l / y_r (those with weight > 0).
    for logits in (np.zeros((1, n + 1)), R.normal(size=(1, n + 1))):
        grad_x = autodiff(lambda x: distribution_focal_loss(y, x, from_logits=True), logits)[0]
        raised = {k for k in range(n + 1) if grad_x[k] < 0}
        assert raised and raised <= neighbours, (raised, neighbours)


def test_dfl_target_equal_to_n_works():
    n = 16
    logits = np.zeros((1, n + 1), "float32")
    logits[0, n] = 5.0
    out = distribution_focal_loss(np.array([float(n)], "float32"), logits, from_logits=True).numpy()
    logits64 = logits[0].astype(np.float64)
    expected = -(logits64[n] - np.log(np.exp(logits64).sum()))  # -log S[n]
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, [expected], rtol=2e-6)  # float32 log-softmax: x - lse cancels here


# ----------------------------------------------------------------------------------------------------------------
# Stability: |logit| = 1e4, every gamma


@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0, 2.0, 5.0])
@pytest.mark.parametrize("graph", [False, True])
def test_finite_at_huge_logits(gamma, graph):
    x = tf.constant([[1e4, -1e4, 1e4, -1e4, 0.0]])
    y = tf.constant([[1.0, 1.0, 0.0, 0.0, 0.7]])
    labels = tf.constant([0])
    onehot = tf.constant([[1.0, 0.0, 0.0, 0.0, 0.0]])
    quality = tf.constant([[1.0, 0.5, 0.0, 0.9, 0.2]])

    losses = {
        "focal": lambda x: focal_loss(y, x, gamma=gamma, from_logits=True),
        "focal_no_alpha": lambda x: focal_loss(y, x, alpha=None, gamma=gamma, from_logits=True),
        "focal_smoothed": lambda x: focal_loss(y, x, gamma=gamma, from_logits=True, label_smoothing=0.1),
        "categorical": lambda x: categorical_focal_loss(onehot, x, gamma=gamma, from_logits=True),
        "categorical_wrong": lambda x: categorical_focal_loss(onehot[:, ::-1], x, gamma=gamma, from_logits=True),
        "sparse": lambda x: sparse_categorical_focal_loss(labels, x, gamma=gamma, from_logits=True),
        "qfl": lambda x: quality_focal_loss(quality, x, beta=max(gamma, 0.5), from_logits=True),
        "dfl": lambda x: distribution_focal_loss(tf.constant([3.5]), x, from_logits=True),
        "focal_f16": lambda x: focal_loss(y, tf.cast(x, "float16"), gamma=gamma, from_logits=True),
    }

    def value_and_grad(fn, x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            total = tf.reduce_sum(fn(x))
        return total, tape.gradient(total, x)

    if graph:
        value_and_grad = tf.function(value_and_grad, reduce_retracing=True)
    for name, fn in losses.items():
        total, grad = value_and_grad(fn, x)
        assert np.isfinite(total.numpy()), (name, total)
        assert np.all(np.isfinite(grad.numpy())), (name, grad)


def test_logits_path_never_saturates():
    """Sigmoid-then-log would give log(0) = -inf (or a clipped 16.1): the softplus form gives the exact 1e4."""
    out = focal_loss(tf.constant([1.0]), tf.constant([-1e4]), alpha=None, gamma=0.0, from_logits=True)
    np.testing.assert_allclose(out.numpy(), [1e4], rtol=1e-7)


def test_jit_compile_matches_eager():
    loss = FocalLoss(from_logits=True)
    x = tf.constant(X, tf.float32)
    y = tf.constant(Y_HARD, tf.float32)

    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            value = loss(y, x)
        return value, tape.gradient(value, x)

    eager = step(x)
    jitted = tf.function(step, jit_compile=True)(x)
    np.testing.assert_allclose(jitted[0].numpy(), eager[0].numpy(), rtol=1e-6)
    np.testing.assert_allclose(jitted[1].numpy(), eager[1].numpy(), rtol=1e-5, atol=1e-9)
