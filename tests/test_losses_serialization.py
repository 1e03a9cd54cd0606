"""get_config / from_config, keras.saving serialization and .keras round trips with safe_mode=True."""

import keras
import numpy as np
import pytest

import keras_focal  # noqa: F401  (registers the losses, as any user import does)
from keras_focal.losses import (
    BalancedCrossentropy,
    CategoricalFocalLoss,
    DistributionFocalLoss,
    FocalLoss,
    GIoULoss,
    QualityFocalLoss,
    SmoothL1Loss,
    SparseCategoricalFocalLoss,
)

NON_DEFAULT = [
    FocalLoss(alpha=None, gamma=0.5, from_logits=True, label_smoothing=0.1, reduction="sum", name="fl"),
    FocalLoss(alpha=0.3, gamma=3.0, dtype="float64"),
    BalancedCrossentropy(alpha=0.9, from_logits=True, label_smoothing=0.05, reduction=None),
    CategoricalFocalLoss(alpha=0.5, gamma=1.0, from_logits=True, label_smoothing=0.2, reduction="mean"),
    SparseCategoricalFocalLoss(alpha=None, gamma=4.0, from_logits=True, ignore_class=-1, name="sfl"),
    QualityFocalLoss(beta=1.5, from_logits=True, reduction="mean_with_sample_weight"),
    DistributionFocalLoss(from_logits=True, reduction="sum"),
    GIoULoss(reduction="sum", name="g"),
    SmoothL1Loss(beta=0.2, reduction=None),
]



@pytest.mark.parametrize("loss", NON_DEFAULT, ids=lambda l: l.name)
def test_get_config_from_config_round_trip(loss):
    config = loss.get_config()
    clone = loss.__class__.from_config(config)
    assert clone.get_config() == config
    assert clone.reduction == loss.reduction and clone.name == loss.name


@pytest.mark.parametrize("loss", NON_DEFAULT, ids=lambda l: l.name)
def test_keras_serialize_deserialize(loss):
    serialized = keras.saving.serialize_keras_object(loss)
    assert serialized["registered_name"].startswith("keras_focal>")
    clone = keras.saving.deserialize_keras_object(serialized)
    assert type(clone) is type(loss)
    assert clone.get_config() == loss.get_config()
    assert keras.losses.get(serialized).get_config() == loss.get_config()


def test_config_is_complete():
    """Every constructor argument shows up in get_config."""
    import inspect

    for loss in NON_DEFAULT:
        params = set(inspect.signature(loss.__class__.__init__).parameters) - {"self"}
        assert params <= set(loss.get_config()), (loss.__class__.__name__, params - set(loss.get_config()))


def _model_and_data(loss):
    """A tiny model whose output fits the loss, with matching targets."""
    x = np.random.default_rng(0).normal(size=(8, 3)).astype("float32")
    rng = np.random.default_rng(1)
    if isinstance(loss, (FocalLoss, BalancedCrossentropy, QualityFocalLoss)):
        out, y = keras.layers.Dense(2), rng.uniform(size=(8, 2)).round().astype("float32")
    elif isinstance(loss, CategoricalFocalLoss):
        out, y = keras.layers.Dense(3), np.eye(3, dtype="float32")[rng.integers(0, 3, 8)]
    elif isinstance(loss, SparseCategoricalFocalLoss):
        out, y = keras.layers.Dense(3), rng.integers(0, 3, 8)
    elif isinstance(loss, DistributionFocalLoss):
        out = keras.Sequential([keras.layers.Dense(4 * 9), keras.layers.Reshape((4, 9))])
        y = rng.uniform(0, 8, size=(8, 4)).astype("float32")
    else:  # box losses
        out = keras.layers.Dense(4, activation="sigmoid")
        lo = rng.uniform(0, 0.5, size=(8, 2))
        y = np.concatenate([lo, lo + 0.3], -1).astype("float32")
    inputs = keras.Input((3,))
    return keras.Model(inputs, out(inputs)), x, y


@pytest.mark.parametrize(
    "loss",
    [
        FocalLoss(alpha=0.3, gamma=1.5, from_logits=True),
        BalancedCrossentropy(alpha=0.8, from_logits=True),
        CategoricalFocalLoss(from_logits=True),
        SparseCategoricalFocalLoss(from_logits=True, ignore_class=-1),
        QualityFocalLoss(from_logits=True),
        DistributionFocalLoss(from_logits=True),
        GIoULoss(),
        SmoothL1Loss(beta=0.11),
    ],
    ids=lambda l: l.__class__.__name__,
)
def test_model_saved_as_keras_and_reloaded_safe_mode(loss, tmp_path):
    model, x, y = _model_and_data(loss)
    model.compile(optimizer="sgd", loss=loss)
    before = model.evaluate(x, y, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path, safe_mode=True)  # no custom_objects
    assert type(reloaded.loss) is type(loss)
    assert reloaded.loss.get_config() == loss.get_config()
    np.testing.assert_allclose(reloaded.evaluate(x, y, verbose=0), before, rtol=1e-6)
