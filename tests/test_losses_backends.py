"""The losses under every Keras backend: TensorFlow, JAX and PyTorch, one subprocess each (the backend is chosen
when Keras is imported). tests/_backend_checks.py holds the checks: values against the float64 references
(per-class alpha, ignore_class with sample_weight on [B, H, W, C], from_counts), exactly zero gradients at
ignored entries, a tiny `fit`; under JAX and PyTorch no TensorFlow import."""

import importlib.util
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NEEDS = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}


@pytest.mark.parametrize("backend", ["tensorflow", "jax", "torch"])
def test_loss_checks_under_backend(backend):
    if importlib.util.find_spec(NEEDS[backend]) is None:
        pytest.skip(f"{NEEDS[backend]} is not installed (pip install .[test])")
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "_backend_checks.py")], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0 and f"ok {backend}" in result.stdout, (result.stdout + result.stderr)[-4000:]
