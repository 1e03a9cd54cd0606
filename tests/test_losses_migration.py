"""Each row of the migration table in docs/losses.md, numerically: the keras_focal call gives the other library's
value. Keras' own losses are called; tf-addons, keras-cv and torchvision are not installed in the tests (tf-addons
does not install on TF 2.21, torchvision's CPU wheel does not import beside torch 2.13 here), so their rows are
checked against float64 transcriptions of their published source (tests/_loss_refs.py)."""

import keras
import numpy as np
import pytest

from keras_focal.losses import CategoricalFocalLoss, FocalLoss, focal_loss
import _loss_refs as ref

R = np.random.default_rng(11)
C = 6
Y = (R.uniform(size=(4, 3, C)) < 0.3).astype("float32")
X = R.normal(0, 2.0, Y.shape).astype("float32")
P = (ref.sigmoid(X) * 0.98 + 0.01).astype("float32")


def close(actual, expected, rtol=2e-5):
    np.testing.assert_allclose(keras.ops.convert_to_numpy(actual), expected, rtol=rtol, atol=1e-6)


@pytest.mark.parametrize("from_logits", [True, False])
@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (0.0, 2.0), (0.6, 0.0)])
def test_tfa_sigmoid_focal_crossentropy(from_logits, alpha, gamma):
    x = X if from_logits else P
    expected = ref.tfa_sigmoid_focal_crossentropy(Y, x, alpha, gamma, from_logits)  # reduction NONE
    ours_alpha = alpha or None  # tf-addons skips the weighting when alpha == 0 (`if alpha:`)
    ours = keras.ops.sum(focal_loss(Y, x, alpha=ours_alpha, gamma=gamma, from_logits=from_logits), axis=-1)
    close(ours, expected)
    close(C * FocalLoss(alpha=ours_alpha, gamma=gamma, from_logits=from_logits, reduction=None)(Y, x), expected)


@pytest.mark.parametrize("from_logits", [True, False])
def test_keras_binary_focal_crossentropy_with_and_without_class_balancing(from_logits):
    x = X if from_logits else P
    balanced = keras.losses.BinaryFocalCrossentropy(apply_class_balancing=True, alpha=0.3, gamma=2.0,
                                                    from_logits=from_logits)(Y, x)
    close(FocalLoss(alpha=0.3, gamma=2.0, from_logits=from_logits)(Y, x), keras.ops.convert_to_numpy(balanced))
    # Without apply_class_balancing Keras ignores alpha: that is alpha=None here.
    plain = keras.losses.BinaryFocalCrossentropy(alpha=0.3, gamma=2.0, from_logits=from_logits)(Y, x)
    close(FocalLoss(alpha=None, gamma=2.0, from_logits=from_logits)(Y, x), keras.ops.convert_to_numpy(plain))
    assert not np.isclose(float(plain), float(FocalLoss(alpha=0.3, gamma=2.0, from_logits=from_logits)(Y, x)))


@pytest.mark.parametrize("alpha", [0.25, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]])
def test_keras_categorical_focal_crossentropy(alpha):
    y = np.eye(C, dtype="float32")[R.integers(0, C, (4, 3))]
    theirs = keras.losses.CategoricalFocalCrossentropy(alpha=alpha, gamma=2.0, from_logits=True)(y, X)
    close(CategoricalFocalLoss(alpha=alpha, gamma=2.0, from_logits=True)(y, X), keras.ops.convert_to_numpy(theirs))


@pytest.mark.parametrize("from_logits", [True, False])
def test_keras_cv_focal_loss_sums_over_classes(from_logits):
    x = X if from_logits else P
    expected = ref.keras_cv_focal(Y, x, 0.25, 2.0, from_logits)
    close(C * FocalLoss(alpha=0.25, gamma=2.0, from_logits=from_logits)(Y, x), expected)


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("alpha", [0.25, -1])
def test_torchvision_sigmoid_focal_loss(reduction, alpha):
    expected = ref.torchvision_sigmoid_focal_loss(X, Y, alpha, 2.0, reduction)  # (inputs=logits, targets)
    a = None if alpha < 0 else alpha
    ours = {
        "none": lambda: focal_loss(Y, X, alpha=a, gamma=2.0, from_logits=True),
        "mean": lambda: FocalLoss(alpha=a, gamma=2.0, from_logits=True)(Y, X),
        "sum": lambda: C * FocalLoss(alpha=a, gamma=2.0, from_logits=True, reduction="sum")(Y, X),
    }[reduction]()
    close(ours, expected)


def test_the_transcriptions_can_fail():
    """A mean where keras-cv sums (the trap the table warns about) is off by the number of classes."""
    mean_instead_of_sum = float(FocalLoss(alpha=0.25, gamma=2.0, from_logits=True)(Y, X))
    assert not np.isclose(mean_instead_of_sum, ref.keras_cv_focal(Y, X, 0.25, 2.0, True), rtol=0.1)
