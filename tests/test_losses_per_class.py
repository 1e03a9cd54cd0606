"""Per-class alpha, from_counts, ignore_class and dense `[B, H, W, C]` inputs of the four focal / balanced losses,
against the float64 NumPy references of tests/_loss_refs.py."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_focal  # noqa: F401  (registers the losses)
from keras_focal.losses import (
    BalancedCrossentropy,
    CategoricalFocalLoss,
    FocalLoss,
    SparseCategoricalFocalLoss,
    categorical_focal_loss,
    class_weights_from_counts,
    focal_loss,
    sparse_categorical_focal_loss,
)
import _loss_refs as ref

C = 5
DENSE = (2, 3, 4)  # [B, H, W]
ALPHA = [0.1, 0.3, 0.5, 0.7, 0.9]
WEIGHTS = [0.2, 1.5, 0.5, 2.0, 0.8]
R = np.random.default_rng(3)
X = R.normal(0, 2.5, DENSE + (C,)).astype("float32")
P = (ref.sigmoid(X) * 0.98 + 0.01).astype("float32")
SOFTMAX = ref.softmax(X).astype("float32")
LABELS = R.integers(0, C, DENSE)
LABELS[0, 0, :3] = 255  # ignored pixels
LABELS[1, 2, 1] = 255
ONE_HOT = np.eye(C, dtype="float32")[np.where(LABELS == 255, 0, LABELS)] * (LABELS != 255)[..., None]
MULTI = (R.uniform(size=DENSE + (C,)) < 0.3).astype("float32")
MULTI[0, 1, 2, :2] = -1  # ignored label columns
MULTI[1, 0, 0, :] = -1  # a pixel with every column ignored
SW = R.uniform(0.2, 2.0, DENSE).astype("float32")


def close(actual, expected, rtol=2e-5, atol=1e-6):
    np.testing.assert_allclose(keras.ops.convert_to_numpy(actual), expected, rtol=rtol, atol=atol)


# ----------------------------------------------------------------------------------------------------------------
# Per-class alpha


@pytest.mark.parametrize("from_logits", [True, False])
def test_vector_alpha_binary_is_a_t_per_label_column(from_logits):
    y = (MULTI > 0).astype("float32")
    x = X if from_logits else P
    out = focal_loss(y, x, alpha=ALPHA, gamma=2.0, from_logits=from_logits)
    close(out, ref.focal(y, x, np.array(ALPHA), 2.0, from_logits))
    close(BalancedCrossentropy(alpha=ALPHA, from_logits=from_logits, reduction=None)(y, x),
          ref.focal(y, x, np.array(ALPHA), 0.0, from_logits).mean(-1))


@pytest.mark.parametrize("from_logits", [True, False])
def test_vector_alpha_categorical_weights_the_true_class(from_logits):
    x = X if from_logits else SOFTMAX
    labels = np.where(LABELS == 255, 1, LABELS)
    one_hot = np.eye(C, dtype="float32")[labels]
    expected = ref.categorical(one_hot, x, 1.0, 2.0, from_logits) * np.array(WEIGHTS)[labels]
    close(categorical_focal_loss(one_hot, x, alpha=WEIGHTS, from_logits=from_logits), expected)
    close(sparse_categorical_focal_loss(labels, x, alpha=WEIGHTS, from_logits=from_logits), expected)
    # a scalar stays a plain factor
    close(categorical_focal_loss(one_hot, x, alpha=0.4, from_logits=from_logits),
          ref.categorical(one_hot, x, 0.4, 2.0, from_logits))


@pytest.mark.parametrize("make", [
    lambda a: FocalLoss(alpha=a), lambda a: BalancedCrossentropy(alpha=a),
    lambda a: CategoricalFocalLoss(alpha=a), lambda a: SparseCategoricalFocalLoss(alpha=a),
], ids=["focal", "balanced", "categorical", "sparse"])
def test_wrong_length_alpha_names_both_lengths(make):
    loss = make([0.2, 0.3, 0.5])
    y = LABELS.clip(0, C - 1) if isinstance(loss, SparseCategoricalFocalLoss) else np.eye(C)[LABELS.clip(0, 4)]
    with pytest.raises(ValueError, match="alpha has 3 per-class weights but y_pred has 5 classes"):
        loss(y, SOFTMAX)


def test_binary_vector_alpha_above_one_warns():
    with pytest.warns(UserWarning, match=r"negative weight 1 - alpha_c"):
        FocalLoss(alpha=[0.5, 1.5])


# ----------------------------------------------------------------------------------------------------------------
# from_counts


COUNTS = [5000, 800, 120, 30, 7]


@pytest.mark.parametrize("method,beta", [("effective", 0.999), ("effective", 0.99), ("inverse", 0.999)])
def test_from_counts_weights(method, beta):
    expected = ref.class_balanced_weights(COUNTS, method, beta)
    assert np.isclose(expected.sum(), C)
    np.testing.assert_allclose(class_weights_from_counts(COUNTS, method, beta), expected, rtol=1e-12)
    for cls in (CategoricalFocalLoss, SparseCategoricalFocalLoss):
        loss = cls.from_counts(COUNTS, method=method, beta=beta, gamma=1.0, from_logits=True)
        assert isinstance(loss.alpha, list) and loss.gamma == 1.0 and loss.from_logits
        np.testing.assert_allclose(loss.alpha, expected, rtol=1e-12)
    # sigmoid: the weights become alpha as they are (they sum to C), with a warning about 1 - alpha_c < 0
    with pytest.warns(UserWarning, match="above 1"):
        alpha = np.array(FocalLoss.from_counts(COUNTS, method=method, beta=beta).alpha)
    np.testing.assert_allclose(alpha, expected, rtol=1e-12)


def test_from_counts_by_hand_and_errors():
    # counts (1, 2), beta 0.5: (1 - 0.5) / (1 - 0.5) = 1 and 0.5 / 0.75 = 2/3; scaled to sum to 2: (1.2, 0.8).
    np.testing.assert_allclose(class_weights_from_counts([1, 2], beta=0.5), [1.2, 0.8], rtol=1e-12)
    with pytest.raises(ValueError, match="class 2 has count 0"):
        SparseCategoricalFocalLoss.from_counts([3, 4, 0])
    with pytest.raises(ValueError, match="class 0 has count -1"):
        CategoricalFocalLoss.from_counts([-1, 4])
    with pytest.raises(ValueError, match="method must be one of"):
        FocalLoss.from_counts([3, 4], method="sqrt")
    with pytest.raises(ValueError, match=r"beta.*\[0, 1\)"):
        FocalLoss.from_counts([3, 4], beta=1.0)
    with pytest.raises(ValueError, match="from_counts computes alpha"):
        FocalLoss.from_counts([3, 4], alpha=0.5)
    assert BalancedCrossentropy.from_counts(10, 990).alpha == pytest.approx(0.99)  # keeps its meaning


# ----------------------------------------------------------------------------------------------------------------
# ignore_class on [B, H, W, C], every reduction, with and without sample_weight


def _sparse_values():
    labels = np.where(LABELS == 255, 0, LABELS)
    return ref.categorical(np.eye(C)[labels], X, 1.0, 2.0, True) * np.array(WEIGHTS)[labels]


def _cases():
    kept_multi = MULTI != -1
    y_multi = np.where(kept_multi, MULTI, 0.0)
    focal_el = ref.focal(y_multi, X, np.array(ALPHA), 2.0, True) * kept_multi
    balanced_el = ref.focal(y_multi, X, 0.3, 0.0, True) * kept_multi
    sparse = _sparse_values() * (LABELS != 255)
    return {
        "focal": (lambda **kw: FocalLoss(alpha=ALPHA, from_logits=True, ignore_class=-1, **kw), MULTI, focal_el,
                  kept_multi),
        "balanced": (lambda **kw: BalancedCrossentropy(alpha=0.3, from_logits=True, ignore_class=-1, **kw), MULTI,
                     balanced_el, kept_multi),
        "categorical": (lambda **kw: CategoricalFocalLoss(alpha=WEIGHTS, from_logits=True, ignore_class=255, **kw),
                        ONE_HOT, sparse, LABELS != 255),
        "sparse": (lambda **kw: SparseCategoricalFocalLoss(alpha=WEIGHTS, from_logits=True, ignore_class=255, **kw),
                   LABELS, sparse, LABELS != 255),
    }


def _expected(values, kept, sw, reduction, last_axis_mean):
    if reduction in ("sum_over_batch_size", "mean_with_sample_weight"):
        return ref.masked_reduce(values, kept, sw, reduction)
    per_example = values.mean(-1) if last_axis_mean else values  # ignored entries count as 0
    per_example = per_example * (1.0 if sw is None else sw)
    return per_example if reduction is None else per_example.sum()


@pytest.mark.parametrize("reduction", ["sum_over_batch_size", "mean_with_sample_weight", "sum", None])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("name", ["focal", "balanced", "categorical", "sparse"])
def test_ignore_class_dense_every_reduction(name, weighted, reduction):
    make, y, values, kept = _cases()[name]
    sw = SW if weighted else None
    out = make(reduction=reduction)(y, X, sample_weight=sw)
    close(out, _expected(values, kept, sw, reduction, name in ("focal", "balanced")), rtol=5e-6)


def test_the_ignore_reference_can_fail():
    """Dividing by every entry (ignored ones too) gives a different number: the tests above can tell."""
    make, y, values, kept = _cases()["sparse"]
    out = float(make()(y, X))
    assert not np.isclose(out, values.sum() / values.size, rtol=1e-3)
    make, y, values, kept = _cases()["focal"]
    assert not np.isclose(float(make()(y, X)), values.mean(), rtol=1e-3)


def test_no_ignored_entry_gives_the_plain_loss():
    y = (MULTI > 0).astype("float32")
    close(FocalLoss(alpha=ALPHA, from_logits=True, ignore_class=-1)(y, X, sample_weight=SW),
          FocalLoss(alpha=ALPHA, from_logits=True)(y, X, sample_weight=SW), rtol=1e-6)


@pytest.mark.parametrize("from_logits", [True, False])
@pytest.mark.parametrize("name", ["focal", "balanced", "categorical", "sparse"])
def test_gradient_is_exactly_zero_at_ignored_entries(name, from_logits):
    make, y, _, kept = _cases()[name]
    loss = make()
    loss.from_logits = from_logits
    x = tf.constant(X if from_logits else (P if name in ("focal", "balanced") else SOFTMAX))
    with tf.GradientTape() as tape:
        tape.watch(x)
        value = loss(y, x, sample_weight=SW)
    grad = tape.gradient(value, x).numpy()
    assert np.isfinite(grad).all()
    ignored = ~kept if kept.shape == grad.shape else np.broadcast_to(~kept[..., None], grad.shape)
    assert np.all(grad[ignored] == 0.0)
    assert np.count_nonzero(grad[~ignored]) > 0.9 * np.sum(~ignored)


# ----------------------------------------------------------------------------------------------------------------
# Dense prediction without ignored labels: sample_weight [B, H, W] and [B]


@pytest.mark.parametrize("sw_shape", [DENSE, DENSE[:1]], ids=["BHW", "B"])
def test_dense_sample_weight_of_the_leading_shape(sw_shape):
    sw = R.uniform(0.2, 2.0, sw_shape).astype("float32")
    sw_full = sw.reshape(sw_shape + (1,) * (3 - len(sw_shape)))
    labels = np.where(LABELS == 255, 0, LABELS)
    y = (MULTI > 0).astype("float32")
    per_pixel = {
        FocalLoss(alpha=ALPHA, from_logits=True): (y, ref.focal(y, X, np.array(ALPHA), 2.0, True).mean(-1)),
        SparseCategoricalFocalLoss(alpha=WEIGHTS, from_logits=True): (labels, _sparse_values()),
        CategoricalFocalLoss(from_logits=True): (np.eye(C)[labels], ref.categorical(np.eye(C)[labels], X, 0.25,
                                                                                    2.0, True)),
    }
    for loss, (y_true, values) in per_pixel.items():
        close(loss(y_true, X, sample_weight=sw), np.mean(values * sw_full), rtol=5e-6)


# ----------------------------------------------------------------------------------------------------------------
# Serialization with a vector alpha


def test_vector_alpha_config_round_trip_and_keras_file(tmp_path):
    loss = SparseCategoricalFocalLoss.from_counts([50, 10, 3], from_logits=True, ignore_class=255)
    config = loss.get_config()
    assert isinstance(config["alpha"], list) and config["ignore_class"] == 255
    assert SparseCategoricalFocalLoss.from_config(config).get_config() == config
    for other in (FocalLoss(alpha=[0.2, 0.4, 0.6], ignore_class=-1), CategoricalFocalLoss(alpha=(1.0, 2.0, 0.5))):
        assert isinstance(other.get_config()["alpha"], list)
        clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(other))
        assert clone.get_config() == other.get_config()

    inputs = keras.Input((4, 4, 2))
    model = keras.Model(inputs, keras.layers.Conv2D(3, 1)(inputs))
    model.compile(optimizer="sgd", loss=loss)
    x = np.random.default_rng(0).normal(size=(2, 4, 4, 2)).astype("float32")
    y = np.random.default_rng(1).integers(0, 3, (2, 4, 4))
    y[0, 0] = 255
    before = model.evaluate(x, y, verbose=0)
    model.save(tmp_path / "m.keras")
    reloaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    assert reloaded.loss.get_config() == config
    np.testing.assert_allclose(reloaded.evaluate(x, y, verbose=0), before, rtol=1e-6)
