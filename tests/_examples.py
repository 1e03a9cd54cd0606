"""The scripts in examples/ imported as modules, so tests call their functions in process."""

import importlib.util
import os

ROOT = os.path.join(os.path.dirname(__file__), "..")


def load_example(name):
    """examples/<name>.py as a module."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", os.path.join(ROOT, "examples", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
