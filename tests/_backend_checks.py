"""The loss checks run once per Keras backend, in a process whose KERAS_BACKEND is set before Keras is imported
(tests/test_losses_backends.py starts one per backend). Prints one line `ok <backend> <number of checks>`.

Values are compared with the float64 NumPy references; a tiny `fit` trains on each backend. Under JAX and
PyTorch, the script also asserts that importing and running the losses did not import TensorFlow.
"""

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # tests/, for _loss_refs

import _loss_refs as ref  # noqa: E402
import keras  # noqa: E402

from keras_focal import losses as L  # noqa: E402

BACKEND = keras.backend.backend()
R = np.random.default_rng(0)
C = 4
X = R.normal(0, 2.0, (2, 3, 3, C)).astype("float32")
LABELS = R.integers(0, C, (2, 3, 3))
LABELS[0, 0] = 255
MULTI = (R.uniform(size=X.shape) < 0.3).astype("float32")
MULTI[1, 1, 1, :2] = -1
SW = R.uniform(0.5, 2.0, (2, 3, 3)).astype("float32")
ALPHA = [0.2, 0.4, 0.6, 0.8]
WEIGHTS = [0.5, 1.5, 1.0, 1.0]
CHECKS = []


def check(fn):
    CHECKS.append(fn)
    return fn


def close(actual, expected, rtol=2e-5, atol=1e-6):
    np.testing.assert_allclose(keras.ops.convert_to_numpy(actual), expected, rtol=rtol, atol=atol)


@check
def elementwise_values():
    y = (MULTI > 0).astype("float32")
    for from_logits in (True, False):
        x = X if from_logits else (ref.sigmoid(X) * 0.98 + 0.01).astype("float32")
        close(L.focal_loss(y, x, alpha=ALPHA, gamma=2.0, from_logits=from_logits),
              ref.focal(y, x, np.array(ALPHA), 2.0, from_logits))
        close(L.focal_loss(y, x, alpha=0.25, gamma=0.5, from_logits=from_logits, label_smoothing=0.1),
              ref.focal(y, x, 0.25, 0.5, from_logits, 0.1))
    labels = np.where(LABELS == 255, 0, LABELS)
    one_hot = np.eye(C)[labels].astype("float32")
    close(L.categorical_focal_loss(one_hot, X, alpha=WEIGHTS, from_logits=True),
          ref.categorical(one_hot, X, 1.0, 2.0, True) * np.array(WEIGHTS)[labels])
    close(L.sparse_categorical_focal_loss(labels, X, gamma=1.5, from_logits=True),
          ref.sparse_categorical(labels, X, 0.25, 1.5, True))
    close(L.quality_focal_loss(y * 0.7, X, from_logits=True), ref.qfl(y * 0.7, X, 2.0, True))


@check
def ignore_class_reductions():
    kept = MULTI != -1
    values = ref.focal(np.where(kept, MULTI, 0.0), X, np.array(ALPHA), 2.0, True) * kept
    loss = L.FocalLoss(alpha=ALPHA, from_logits=True, ignore_class=-1)
    close(loss(MULTI, X, sample_weight=SW), ref.masked_reduce(values, kept, SW))
    labels = np.where(LABELS == 255, 0, LABELS)
    per_pixel = ref.categorical(np.eye(C)[labels], X, 1.0, 2.0, True) * np.array(WEIGHTS)[labels]
    sparse = L.SparseCategoricalFocalLoss(alpha=WEIGHTS, from_logits=True, ignore_class=255)
    close(sparse(LABELS, X, sample_weight=SW), ref.masked_reduce(per_pixel, LABELS != 255, SW))
    one_hot = np.eye(C, dtype="float32")[labels] * (LABELS != 255)[..., None]
    categorical = L.CategoricalFocalLoss(alpha=WEIGHTS, from_logits=True, ignore_class=255,
                                         reduction="mean_with_sample_weight")
    close(categorical(one_hot, X, sample_weight=SW),
          ref.masked_reduce(per_pixel, LABELS != 255, SW, "mean_with_sample_weight"))
    balanced = L.BalancedCrossentropy(alpha=0.3, from_logits=True, ignore_class=-1, reduction="sum")
    close(balanced(MULTI, X),
          (ref.focal(np.where(kept, MULTI, 0.0), X, 0.3, 0.0, True) * kept).mean(-1).sum(), rtol=1e-5)


@check
def from_counts():
    counts = [900, 60, 30, 10]
    expected = ref.class_balanced_weights(counts)
    close(L.SparseCategoricalFocalLoss.from_counts(counts).alpha, expected, rtol=1e-12)
    close(L.class_weights_from_counts(counts, "inverse"), ref.class_balanced_weights(counts, "inverse"), rtol=1e-12)


@check
def zero_gradient_at_ignored_entries():
    loss = L.SparseCategoricalFocalLoss(alpha=WEIGHTS, from_logits=True, ignore_class=255)
    focal = L.FocalLoss(alpha=ALPHA, from_logits=True, ignore_class=-1)
    for fn, y, ignored in ((loss, LABELS, np.broadcast_to((LABELS == 255)[..., None], X.shape)),
                           (focal, MULTI, MULTI == -1)):
        grad = _gradient(lambda x: fn(y, x, sample_weight=SW), X)
        assert np.isfinite(grad).all() and np.all(grad[ignored] == 0.0), BACKEND
        assert np.count_nonzero(grad[~ignored]) > 0


def _gradient(f, x):
    if BACKEND == "jax":
        import jax

        return np.asarray(jax.grad(lambda v: f(v))(x))
    if BACKEND == "torch":
        import torch

        v = torch.tensor(x, requires_grad=True)
        f(v).backward()
        return v.grad.numpy()
    import tensorflow as tf

    v = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(v)
        value = f(v)
    return tape.gradient(value, v).numpy()


@check
def tiny_fit():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((3, 3, 2))
    model = keras.Model(inputs, keras.layers.Conv2D(C, 1)(inputs))
    model.compile(optimizer=keras.optimizers.Adam(0.05),
                  loss=L.SparseCategoricalFocalLoss.from_counts([9, 5, 3, 1], from_logits=True, ignore_class=255))
    images = R.normal(size=(8, 3, 3, 2)).astype("float32")
    labels = np.argmax(images @ R.normal(size=(2, C)), -1)
    labels[0, 0] = 255
    history = model.fit(images, labels, epochs=8, batch_size=4, verbose=0).history["loss"]
    assert np.isfinite(history).all() and history[-1] < history[0], history
    binary = keras.Sequential([keras.Input((2,)), keras.layers.Dense(C)])
    binary.compile(optimizer="adam", loss=L.FocalLoss(alpha=ALPHA, from_logits=True, ignore_class=-1))
    targets = (R.uniform(size=(8, C)) < 0.3).astype("float32")
    targets[0, 0] = -1
    assert np.isfinite(binary.fit(R.normal(size=(8, 2)), targets, epochs=2, verbose=0).history["loss"]).all()


if __name__ == "__main__":
    for fn in CHECKS:
        if fn is tiny_fit and BACKEND != "tensorflow":
            # Everything so far ran the losses; Keras' own `fit` data adapters may import TensorFlow when it is
            # installed, which is not the losses' doing.
            assert "tensorflow" not in sys.modules, "the losses imported TensorFlow under " + BACKEND
        fn()
    print(f"ok {BACKEND} {len(CHECKS)}")
