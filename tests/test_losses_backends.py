"""The losses under every Keras backend: TensorFlow, JAX and PyTorch. tests/_backend_checks.py holds one compact set
of checks: values against the float64 references (per-class alpha, ignore_class with sample_weight on
[B, H, W, C], from_counts), exactly zero gradients at ignored entries, a tiny `fit`; under JAX and PyTorch, no
TensorFlow import. TensorFlow (the suite's backend) runs them in this process; JAX and PyTorch in one subprocess
each (the backend is chosen when Keras is imported)."""

import importlib.util
import os
import subprocess
import sys

import keras
import pytest

import _backend_checks

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_loss_checks_under_tensorflow():
    assert keras.backend.backend() == "tensorflow"
    for check in _backend_checks.CHECKS:
        check()


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_loss_checks_under_backend(backend):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed (pip install .[test])")
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "",
           "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "_backend_checks.py")], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert f"ok {backend} {len(_backend_checks.CHECKS)}" in result.stdout, result.stdout[-2000:]
