"""`python -m keras_focal train` survives kill -9: the rerun resumes from the last finished epoch and stops at --epochs."""

import os
import re
import signal
import subprocess
import sys
import time

import pytest



def _command(tmp_path, epochs):
    return [
        sys.executable, "-m", "keras_focal", "train",
        "--dataset", "keras_focal_shapes/small", "--data-dir", str(tmp_path / "data"),
        "--image-size", "64", "--backbone", "resnet18", "--fpn-width", "16", "--head-convs", "1",
        "--batch-size", "4", "--steps-per-epoch", "3", "--epochs", str(epochs), "--warmup-steps", "2",
        "--run-dir", str(tmp_path / "run"), "--export-dir", str(tmp_path / "export"),
    ]


def _env():
    return {**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}


@pytest.mark.timeout(600)
def test_killed_training_resumes_from_the_last_epoch(tmp_path):
    epochs = 4
    log = open(tmp_path / "first.log", "w")
    first = subprocess.Popen(_command(tmp_path, epochs), stdout=log, stderr=subprocess.STDOUT, env=_env(),
                             start_new_session=True)
    backup = tmp_path / "run" / "backup"
    deadline = time.time() + 400
    # Kill -9 as soon as the first epoch's training state is on disk (mid-way through the second epoch).
    while time.time() < deadline and first.poll() is None:
        if backup.exists() and any(backup.iterdir()) and "Epoch 2/" in (tmp_path / "first.log").read_text():
            break
        time.sleep(0.2)
    assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    log.close()
    assert not (tmp_path / "export").exists(), "the killed run must not have reached the export"

    second = subprocess.run(_command(tmp_path, epochs), capture_output=True, text=True, env=_env(), timeout=400)
    output = second.stdout + second.stderr
    assert second.returncode == 0, output[-3000:]
    started = [int(n) for n in re.findall(r"Epoch (\d+)/%d" % epochs, output)]
    assert started and started[0] >= 2, f"the rerun started again from epoch 1: {started}"
    assert started[-1] == epochs
    assert "AP50" in output
    assert (tmp_path / "export" / "1" / "saved_model.pb").exists()
