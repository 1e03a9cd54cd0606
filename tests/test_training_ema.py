"""Weight EMA through the recipe (`Recipe(ema=True)`: Keras' `use_ema` + `SwapEMAWeights`): the EMA against a float64
NumPy reference of the recorded raw weights, what evaluation callbacks and the saved model see, resume after a kill,
and 2 replicas against one device (in a subprocess: logical devices are fixed before TensorFlow starts)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
MOMENTUM = 0.6
EPOCHS, STEPS = 3, 4


def _data():
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x = rng.normal(size=(STEPS * 4, 5)).astype("float32")  # every epoch the same batches: a resumed run sees them
    y = (x @ rng.normal(size=(5, 2)) + 0.1).astype("float32")
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(4).repeat()


def _model_and_recipe(seed=1):
    import keras

    from keras_focal.training import Recipe

    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3, activation="tanh"), keras.layers.Dense(2)])
    recipe = Recipe(schedule="cosine", warmup_steps=2, ema=True, ema_momentum=MOMENTUM)
    optimizer = recipe.optimizer("adamw", steps_per_epoch=STEPS, epochs=EPOCHS, batch_size=4, learning_rate=0.05)
    model.compile(optimizer=optimizer, loss="mse")
    return model, recipe, optimizer


def _weights(model):
    return [v.numpy().astype(np.float64) for v in model.trainable_variables]


def test_ema_is_what_evaluation_and_the_saved_model_see(tmp_path):
    import keras

    model, recipe, optimizer = _model_and_recipe()
    raw, seen_at_epoch_end = [], []

    class RecordRaw(keras.callbacks.Callback):  # at batch end the model holds the raw weights
        def on_train_batch_end(self, batch, logs=None):
            raw.append(_weights(self.model))

    class Evaluation(keras.callbacks.Callback):  # stands for COCOEvalCallback / ModelCheckpoint
        def on_epoch_end(self, epoch, logs=None):
            seen_at_epoch_end.append(_weights(self.model))

    path = str(tmp_path / "model.keras")
    callbacks = recipe.callbacks([RecordRaw(), Evaluation(), keras.callbacks.ModelCheckpoint(path)], optimizer,
                                 epochs=EPOCHS)
    assert isinstance(callbacks[0], keras.callbacks.SwapEMAWeights)
    model.fit(_data(), epochs=EPOCHS, steps_per_epoch=STEPS, verbose=0, callbacks=callbacks)

    # float64 reference: avg = w after the first step, then avg = m * avg + (1 - m) * w.
    ema = raw[0]
    expected_at_epoch_end = []
    for step, weights in enumerate(raw[1:], start=2):
        ema = [MOMENTUM * a + (1 - MOMENTUM) * w for a, w in zip(ema, weights)]
        if step % STEPS == 0:
            expected_at_epoch_end.append(ema)
    assert len(expected_at_epoch_end) == EPOCHS
    for seen, expected in zip(seen_at_epoch_end, expected_at_epoch_end):
        for a, b in zip(seen, expected):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # After fit the model holds the EMA (what is exported), and so does the last checkpoint.
    final = _weights(model)
    for a, b in zip(final, expected_at_epoch_end[-1]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert max(np.abs(a - b).max() for a, b in zip(final, raw[-1])) > 1e-3  # the EMA is not the raw weights
    saved = keras.saving.load_model(path)
    for a, b in zip(_weights(saved), final):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_resume_after_a_kill_restores_raw_and_ema(tmp_path):
    import keras

    class Kill(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 2:
                raise KeyboardInterrupt

    def run(kill, backup):
        model, recipe, optimizer = _model_and_recipe()
        callbacks = [keras.callbacks.BackupAndRestore(backup)] + ([Kill()] if kill else [])
        callbacks = recipe.callbacks(callbacks, optimizer, epochs=EPOCHS)
        assert isinstance(callbacks[0], keras.callbacks.BackupAndRestore)  # it saves before the swap
        model.fit(_data(), epochs=EPOCHS, steps_per_epoch=STEPS, verbose=0, callbacks=callbacks)
        return model, optimizer

    straight, _ = run(False, str(tmp_path / "a"))
    with pytest.raises(KeyboardInterrupt):
        run(True, str(tmp_path / "b"))
    resumed, optimizer = run(False, str(tmp_path / "b"))
    assert int(optimizer.iterations.numpy()) == EPOCHS * STEPS
    for a, b in zip(_weights(resumed), _weights(straight)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.timeout(300)
def test_two_replicas_give_the_ema_of_one_device():
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": "tensorflow", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "replicas"], capture_output=True, text=True,
                          timeout=280, env=env, cwd=os.path.dirname(HERE))
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, (proc.stdout + proc.stderr)[-4000:]
    result = json.loads(lines[-1][len("RESULT "):])
    assert result["max_ema_diff"] <= 1e-5, result
    assert result["ema_moved"] > 1e-3, result


# ------------------------------------------------------------------------------------------ subprocess side


def _replicas():
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

    def train(strategy):
        with strategy.scope():
            model, _, _ = _model_and_recipe()
        initial = _weights(model)
        model.fit(_data(), epochs=1, steps_per_epoch=STEPS * EPOCHS, verbose=0)  # ends with the EMA in the model
        return initial, _weights(model)

    init_one, ema_one = train(tf.distribute.OneDeviceStrategy("/cpu:0"))
    init_two, ema_two = train(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))
    assert all(np.array_equal(a, b) for a, b in zip(init_one, init_two))
    return {"max_ema_diff": max(float(np.abs(a - b).max()) for a, b in zip(ema_one, ema_two)),
            "ema_moved": max(float(np.abs(a - b).max()) for a, b in zip(ema_one, init_one))}


if __name__ == "__main__" and sys.argv[1:] == ["replicas"]:
    sys.path.insert(0, os.path.dirname(HERE))
    print("RESULT " + json.dumps(_replicas()))
