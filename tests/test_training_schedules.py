"""The learning-rate schedule and the optimizer factory of keras_focal.training."""

import keras
import numpy as np
import pytest

from keras_focal.training import WarmupStepDecay, make_optimizer


def _rates(schedule, steps):
    return np.array([float(schedule(step)) for step in steps])


def test_warmup_then_step_decay_by_hand():
    schedule = WarmupStepDecay(0.01, warmup_steps=100, boundaries=[300, 400], decay_rate=0.1, warmup_factor=1 / 3)
    steps = [0, 50, 100, 299, 300, 399, 400, 10_000]
    expected = [0.01 / 3, 0.01 * (1 / 3 + (2 / 3) * 0.5), 0.01, 0.01, 0.001, 0.001, 0.0001, 0.0001]
    np.testing.assert_allclose(_rates(schedule, steps), expected, rtol=1e-6)


def test_schedule_without_warmup_or_boundaries_is_constant():
    np.testing.assert_allclose(_rates(WarmupStepDecay(0.5, warmup_steps=0), [0, 1, 10**6]), 0.5, rtol=1e-7)


def test_schedule_config_round_trip():
    schedule = WarmupStepDecay(0.02, warmup_steps=7, boundaries=[20, 30], decay_rate=0.5, warmup_factor=0.1)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(schedule))
    steps = [0, 3, 7, 20, 31]
    np.testing.assert_allclose(_rates(restored, steps), _rates(schedule, steps), rtol=1e-7)


def _optimizer_rates(optimizer, steps):
    rates = []
    for step in steps:
        optimizer.iterations.assign(step)
        rates.append(float(optimizer.learning_rate))
    return np.array(rates)


def test_make_optimizer_adamw_defaults_decay_at_two_thirds_and_eight_ninths():
    opt = make_optimizer("adamw", steps_per_epoch=10, epochs=9, warmup_steps=0)
    assert isinstance(opt, keras.optimizers.AdamW)
    assert opt.global_clipnorm == 10.0 and opt.weight_decay == pytest.approx(1e-4)
    np.testing.assert_allclose(_optimizer_rates(opt, [0, 59, 60, 79, 80]), [1e-3, 1e-3, 1e-4, 1e-4, 1e-5], rtol=1e-5)


def test_make_optimizer_sgd_scales_the_rate_with_the_batch():
    opt = make_optimizer("sgd", steps_per_epoch=5, epochs=3, batch_size=8, warmup_steps=0, decay_epochs=[2],
                         clipnorm=0)
    assert isinstance(opt, keras.optimizers.SGD)
    assert opt.momentum == pytest.approx(0.9) and opt.global_clipnorm is None
    np.testing.assert_allclose(_optimizer_rates(opt, [0, 9, 10]), [0.005, 0.005, 0.0005], rtol=1e-6)


def test_make_optimizer_rejects_unknown_kind():
    with pytest.raises(ValueError, match="'adam'"):
        make_optimizer("adam")
    with pytest.raises(ValueError, match="'linear'"):
        make_optimizer("adamw", schedule="linear")
    with pytest.raises(ValueError, match="ema_momentum"):
        make_optimizer("adamw", ema=True, ema_momentum=1.0)


def _cosine_reference(step, base, warmup, total, factor, final):
    """float64: linear from factor * base to base over `warmup` steps, then half a cosine down to final * base."""
    step = np.asarray(step, np.float64)
    t = np.clip(step - warmup, 0, total - warmup) / (total - warmup)
    cosine = base * (final + (1 - final) * 0.5 * (1 + np.cos(np.pi * t)))
    return np.where(step < warmup, base * (factor + (1 - factor) * step / warmup), cosine)


def test_cosine_schedule_at_warmup_end_and_last_step():
    # 4 epochs of 250 steps, 200 warm-up steps: the main job's budget.
    opt = make_optimizer("adamw", steps_per_epoch=250, epochs=4, schedule="cosine", warmup_steps=200)
    assert isinstance(opt._learning_rate, keras.optimizers.schedules.CosineDecay)
    steps = [0, 100, 199, 200, 600, 999, 1000, 5000]
    expected = _cosine_reference(steps, 1e-3, 200, 1000, 1 / 3, 0.01)
    got = _optimizer_rates(opt, steps)
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert got[3] == pytest.approx(1e-3, rel=1e-6)  # the warm-up ends at the base rate
    assert got[5] == pytest.approx(1e-3 * (0.01 + 0.99 * 0.5 * (1 + np.cos(np.pi * 799 / 800))), rel=1e-5)  # last step
    assert got[6] == pytest.approx(1e-5, rel=1e-5) and got[7] == pytest.approx(1e-5, rel=1e-5)  # stays at 0.01 base
    # The reference with the cosine over all 1000 steps (a wrong decay length) differs.
    assert not np.allclose(got, _cosine_reference(steps, 1e-3, 200, 1200, 1 / 3, 0.01), rtol=1e-3)


def test_make_optimizer_ema_options():
    opt = make_optimizer("sgd", schedule="cosine", ema=True, ema_momentum=0.95, warmup_steps=0, epochs=2,
                         steps_per_epoch=5)
    assert opt.use_ema and opt.ema_momentum == pytest.approx(0.95)
    assert not make_optimizer("adamw").use_ema
    np.testing.assert_allclose(_optimizer_rates(opt, [0, 10]), [0.01, 1e-4], rtol=1e-5)
