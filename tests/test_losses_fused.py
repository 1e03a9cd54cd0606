"""The fused (XLA-compiled) closed-form kernels of the logits path give what the same maths op by op gives, in every
calling context a user has: eager, tf.function and an XLA-compiled step."""

import functools

import numpy as np
import pytest
import tensorflow as tf

from keras_focal.losses import _common as C
from keras_focal.losses import distribution_focal_loss, focal_loss, quality_focal_loss

R = np.random.default_rng(7)
LOGITS = np.concatenate([R.normal(0, 3, 60), [-1e4, -80.0, -1e-3, 0.0, 1e-3, 80.0, 1e4]]).astype("float32")


def _cases():
    x = LOGITS.reshape(1, -1)
    hard = (R.uniform(size=x.shape) < 0.3).astype("float32")
    soft = R.uniform(size=x.shape).astype("float32")
    return [
        ("focal", lambda y, x: focal_loss(y, x, alpha=0.25, gamma=2.0, from_logits=True), hard, x),
        ("focal_gamma_0.5", lambda y, x: focal_loss(y, x, alpha=None, gamma=0.5, from_logits=True), soft, x),
        ("balanced", lambda y, x: focal_loss(y, x, alpha=0.4, gamma=0.0, from_logits=True), hard, x),
        ("focal_vector_alpha", lambda y, x: focal_loss(
            y, x, alpha=np.linspace(0.1, 0.9, x.shape[-1]).tolist(), gamma=2.0, from_logits=True), hard, x),
        ("qfl", lambda y, x: quality_focal_loss(y, x, beta=2.0, from_logits=True), soft * hard, x),
        ("qfl_beta_1.5", lambda y, x: quality_focal_loss(y, x, beta=1.5, from_logits=True), soft, x),
        ("dfl", lambda y, x: distribution_focal_loss(y, x, from_logits=True),
         R.uniform(0, 8, (3, 4)).astype("float32"), R.normal(0, 2, (3, 4, 9)).astype("float32")),
    ]


def _value_and_grad(fn, y, x):
    """sum(w * loss) with fixed random weights w (so that every element's upstream gradient differs) and its
    gradient with respect to the logits."""
    x = tf.convert_to_tensor(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = fn(y, x)
        weights = tf.constant(np.random.default_rng(0).uniform(0.5, 2.0, loss.shape).astype("float32"))
        value = tf.reduce_sum(weights * loss)
    return value, tape.gradient(value, x)


def _unfused(monkeypatch):
    monkeypatch.setattr(C, "fused_elementwise", lambda kernel, **static: functools.partial(kernel, **static))


@pytest.mark.parametrize("name,fn,y,x", _cases(), ids=[c[0] for c in _cases()])
def test_fused_kernel_matches_the_same_maths_op_by_op(name, fn, y, x, monkeypatch):
    fused = [t.numpy() for t in _value_and_grad(fn, y, x)]
    _unfused(monkeypatch)
    op_by_op = [t.numpy() for t in _value_and_grad(fn, y, x)]
    assert np.isfinite(fused[0]).all() and np.isfinite(fused[1]).all()
    np.testing.assert_allclose(fused[0], op_by_op[0], rtol=1e-6)
    np.testing.assert_allclose(fused[1], op_by_op[1], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("jit_compile", [False, True], ids=["tf.function", "jit_compile"])
@pytest.mark.parametrize("name,fn,y,x", _cases(), ids=[c[0] for c in _cases()])
def test_same_result_inside_tf_function_and_xla(name, fn, y, x, jit_compile):
    eager = [t.numpy() for t in _value_and_grad(fn, y, x)]
    compiled = tf.function(lambda y, x: _value_and_grad(fn, y, x), jit_compile=jit_compile)(y, x)
    np.testing.assert_allclose(compiled[0].numpy(), eager[0], rtol=1e-6)
    np.testing.assert_allclose(compiled[1].numpy(), eager[1], rtol=1e-5, atol=1e-7)


def test_the_tensorflow_backend_compiles_the_kernel_with_xla_once_per_static_arguments():
    def double(x, scale):
        return x * scale

    kernel = C.fused_elementwise(double, scale=2.0)
    assert isinstance(kernel, tf.types.experimental.PolymorphicFunction)
    assert kernel(tf.ones([3])).numpy().tolist() == [2.0, 2.0, 2.0]
    assert C.fused_elementwise(double, scale=2.0) is kernel  # cached: no new trace, no new compilation
    assert C.fused_elementwise(double, scale=3.0) is not kernel
