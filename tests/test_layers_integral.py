import keras
import numpy as np

from keras_focal.layers import Integral, Scale


def test_integral_one_hot_returns_bin_index():
    x = np.full((2, 5, 4 * 17), -1e4, "float32")
    bins = np.array([[0, 16, 7, 3], [1, 2, 3, 4]])
    for s in range(4):
        x[0, :, s * 17 + bins[0, s]] = 0.0
        x[1, :, s * 17 + bins[1, s]] = 0.0
    out = Integral()(x).numpy()
    assert out.shape == (2, 5, 4)
    np.testing.assert_allclose(out[:, 0], bins, atol=1e-4)


def test_integral_matches_numpy_softmax_expectation():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 4 * 9)).astype("float32")
    z = x.reshape(3, 4, 9).astype("float64")
    p = np.exp(z - z.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    np.testing.assert_allclose(Integral(reg_max=8)(x).numpy(), (p * np.arange(9)).sum(-1), atol=1e-5)
    assert Integral.from_config(Integral(reg_max=8).get_config()).reg_max == 8


def test_integral_float16_input_gives_float32():
    out = Integral()(np.zeros((1, 68), "float16"))
    assert keras.backend.standardize_dtype(out.dtype) == "float32"
    np.testing.assert_allclose(out.numpy(), 8.0, atol=1e-3)


def test_scale_layer():
    layer = Scale()
    x = np.arange(6, dtype="float32").reshape(2, 3)
    np.testing.assert_allclose(layer(x).numpy(), x)
    assert len(layer.trainable_weights) == 1 and layer.trainable_weights[0].shape == ()
    layer.trainable_weights[0].assign(2.5)
    np.testing.assert_allclose(layer(x).numpy(), 2.5 * x)
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(Scale(scale=0.5)))
    np.testing.assert_allclose(clone(x).numpy(), 0.5 * x)
