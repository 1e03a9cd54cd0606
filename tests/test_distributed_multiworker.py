"""MultiWorkerMirroredStrategy with two worker processes on 127.0.0.1 and the custom training loop.

Both workers end with identical weights, equal to a single-process run on the same global batches; only the chief
writes the checkpoint; a rerun asking for one more epoch resumes and trains only that epoch.
Each process runs this file as a script (`python tests/test_distributed_multiworker.py <mode> ...`).
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from _tiny import built_in_heads

HERE = os.path.dirname(os.path.abspath(__file__))
STEPS_PER_EPOCH = 2  # one pass over the 8 examples in global batches of 4


def _env(**extra):
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": "tensorflow", "PYTHONUNBUFFERED": "1",
            **extra}


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _result(text):
    lines = [line for line in text.splitlines() if line.startswith("RESULT ")]
    return json.loads(lines[-1][len("RESULT "):]) if lines else None


def _run_workers(tmp_path, epochs, tag, head, timeout=240):
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs, logs = [], []
    for index in range(2):
        config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        log = open(tmp_path / f"{tag}_worker{index}.log", "w")
        logs.append(log)
        procs.append(subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "train", str(tmp_path), str(epochs), f"{tag}_worker{index}",
             head],
            stdout=log, stderr=subprocess.STDOUT, env=_env(TF_CONFIG=config), start_new_session=True))
    deadline = time.time() + timeout
    try:
        while time.time() < deadline and any(p.poll() is None for p in procs):
            if any(p.poll() not in (None, 0) for p in procs):
                break  # one failed: the other would wait for it forever
            time.sleep(0.5)
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        for log in logs:
            log.close()
    texts = [(tmp_path / f"{tag}_worker{i}.log").read_text() for i in range(2)]
    for p, text in zip(procs, texts):
        assert p.returncode == 0 and _result(text), f"worker failed (rc {p.returncode}):\n{text[-4000:]}"
    return [_result(t) for t in texts]


def _run_single(tmp_path, epochs, tag, head):
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "train", str(tmp_path), str(epochs), tag, head],
                          capture_output=True, text=True, timeout=240, env=_env())
    assert proc.returncode == 0 and _result(proc.stdout), (proc.stdout + proc.stderr)[-4000:]
    return _result(proc.stdout)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("head", built_in_heads())
def test_two_workers_match_single_process_and_resume(tmp_path, head):
    import numpy as np

    single = _run_single(tmp_path, 3, "single", head)  # also writes the initial weights both workers start from
    assert single["epochs_run"] == [0, 1, 2]

    first = _run_workers(tmp_path, 2, "first", head)
    assert [r["chief"] for r in first] == [True, False]
    assert all(r["replicas"] == 2 and r["epochs_run"] == [0, 1] for r in first), first
    # Only the chief wrote into the model dir; the other worker's temporary checkpoint dir is gone.
    run_dir = tmp_path / "first_worker0_run"  # the chief's model_dir, shared by both workers (see _train)
    assert sorted(os.listdir(run_dir)) == ["checkpoint", "ckpt-2.data-00000-of-00001", "ckpt-2.index"]
    assert first[1]["write_dir"] != first[0]["write_dir"] and not os.path.exists(first[1]["write_dir"])

    second = _run_workers(tmp_path, 3, "first", head)  # same tag: the same model_dir, so it resumes
    assert all(r["epochs_run"] == [2] for r in second), second
    assert all(r["iterations"] == 3 * STEPS_PER_EPOCH for r in second), second
    assert sorted(os.listdir(run_dir)) == ["checkpoint", "ckpt-3.data-00000-of-00001", "ckpt-3.index"]

    reference = np.load(tmp_path / "single_weights.npz")
    workers = [np.load(tmp_path / f"first_worker{i}_weights.npz") for i in range(2)]
    assert sorted(reference.files) == sorted(workers[0].files)
    initial = np.load(tmp_path / "initial.npz")
    moved = max(float(np.max(np.abs(reference[k] - initial[k]))) for k in reference.files)
    assert moved > 1e-3, "training did not move the weights"
    for key in reference.files:
        np.testing.assert_array_equal(workers[0][key], workers[1][key], err_msg=key)
        np.testing.assert_allclose(workers[0][key], reference[key], rtol=1e-5, atol=1e-5, err_msg=key)
    # The reported global-batch loss agrees too.
    assert abs(second[0]["loss"] - single["loss"]) < 1e-4 * max(1.0, abs(single["loss"]))


# ------------------------------------------------------------------------------------------ subprocess side
def _dataset():
    import numpy as np
    import tensorflow as tf

    from _tiny import padded_targets

    rng = np.random.RandomState(0)
    images = rng.uniform(0, 255, (8, 64, 64, 3)).astype("float32")
    boxes = [[[0.1, 0.1, 0.6, 0.5]], [[0.3, 0.2, 0.9, 0.9], [0.05, 0.5, 0.4, 0.95]], [], [],
             [[0.2, 0.2, 0.7, 0.7]], [], [[0.5, 0.5, 0.95, 0.9]], [[0.0, 0.0, 0.5, 0.5]]]
    classes = [[0], [1, 2], [], [], [2], [], [1], [0]]
    # Deterministic global batches of 4, no shuffle; distribute_dataset shards them with AutoShardPolicy.DATA.
    return tf.data.Dataset.from_tensor_slices((images, padded_targets(boxes, classes))).batch(4).repeat()


def _train(out_dir, epochs, tag, head):
    sys.path.insert(0, HERE)
    import keras
    import numpy as np
    import tensorflow as tf

    from _tiny import tiny_model
    from keras_focal import training

    out_dir = os.path.abspath(out_dir)
    keras.utils.set_random_seed(0)
    strategy = training.select_strategy()
    chief = training.is_chief(strategy)
    with strategy.scope():
        model = tiny_model(head)
        model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    initial = os.path.join(out_dir, "initial.npz")
    if not os.path.exists(initial):
        # TOOD's box alignment starts with every sample exactly on a cell (zero offsets), where bilinear sampling
        # has a kink: summation-order noise then picks the side of the kink and the runs part. A quarter-cell offset
        # keeps every sample inside one cell, so one process and two workers take the same branch.
        for v in model.trainable_variables:
            if "tood_reg_offset1" in v.path and v.path.endswith("bias"):
                v.assign(np.full(v.shape, 0.25, "float32"))
        np.savez(initial, *model.get_weights())
    model.set_weights([w for _, w in sorted(np.load(initial).items(), key=lambda kv: int(kv[0].split("_")[1]))])

    # Both workers use the chief's model_dir (as on a shared disk); the chief is worker 0.
    model_dir = os.path.join(out_dir, tag.replace("worker1", "worker0") + "_run")
    trainer = training.DistributedTrainer(model, strategy)
    history = trainer.fit(_dataset(), epochs=int(epochs), steps_per_epoch=STEPS_PER_EPOCH, model_dir=model_dir,
                          verbose=2 if chief else 0)
    np.savez(os.path.join(out_dir, f"{tag}_weights.npz"), *model.get_weights())
    print("RESULT " + json.dumps({
        "chief": chief,
        "replicas": strategy.num_replicas_in_sync,
        "strategy": type(strategy).__name__,
        "epochs_run": history.epoch,
        "loss": history.history["loss"][-1] if history.history.get("loss") else None,
        "iterations": int(model.optimizer.iterations.numpy()),
        "write_dir": trainer.last_write_dir,
    }))
    sys.stdout.flush()
    os._exit(0)  # skip the collective runtime's teardown, which can wait for the other worker


if __name__ == "__main__":
    {"train": _train}[sys.argv[1]](*sys.argv[2:])
