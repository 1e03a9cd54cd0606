"""Replica equivalence: one step under MirroredStrategy on 2 (logical CPU) replicas equals one step on one device.

The logical devices must be configured before TensorFlow initializes, so each check runs this file as a script
in a fresh process (`python tests/test_distributed.py equivalence ...`) and reads its JSON verdict.
"""

import json
import os
import subprocess
import sys

import pytest

from _tiny import built_in_heads

HERE = os.path.dirname(os.path.abspath(__file__))
TOL = 1e-5


def _run(*args, timeout=480):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": "tensorflow", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=os.path.dirname(HERE))
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, (proc.stdout + proc.stderr)[-4000:]
    return json.loads(lines[-1][len("RESULT "):])


@pytest.mark.timeout(540)
@pytest.mark.parametrize("head", built_in_heads())
def test_two_replicas_match_one_device(head):
    result = _run("equivalence", head, "tiny")
    for case in result["cases"]:
        where = f"{head} batch {case['batch']} ({case['path']})"
        assert case["positives_per_replica"][0] > 0, where
        if case["batch"] == "one_replica_empty":
            assert case["positives_per_replica"][1] == 0, where
        # The reported loss is the global-batch loss on both, and the weight updates (lr 1, plain SGD: minus the
        # gradient) agree.
        assert abs(case["loss_replicas"] - case["loss_single"]) <= TOL * max(1.0, abs(case["loss_single"])), case
        assert case["max_update_diff"] <= TOL, (where, case["max_update_diff"], case["max_update"])
        assert case["max_update"] > 1e-4, where  # the step really moved the weights
    # The loss sums its normalizers over the replicas in one all-reduce per replica: two independent collectives
    # have no order between them, and replicas that issue them in different orders fail or deadlock.
    assert result["loss_all_reduces_per_replica"] == 1


@pytest.mark.timeout(540)
def test_two_replicas_match_one_device_resnet_batchnorm():
    """A real ResNet-18 with BatchNorm: frozen (the pretrained default) and synchronized across replicas."""
    result = _run("equivalence", "retina", "resnet18")
    assert result["default_sync"] == {"single": False, "mirrored": True}
    assert {c["bn"] for c in result["cases"]} == {"frozen", "sync", "local"}
    for case in result["cases"]:
        if case["bn"] == "local":  # per-replica statistics: the split changes the step (so sync really syncs)
            assert case["max_update_diff"] > 100 * TOL, case
            continue
        assert abs(case["loss_replicas"] - case["loss_single"]) <= TOL * max(1.0, abs(case["loss_single"])), case
        assert case["max_update_diff"] <= TOL * max(1.0, case["max_update"]), case


def test_batchnorm_options_and_config():
    import keras

    from keras_focal.models import RetinaNet

    def batchnorms(model):
        return [l for l in model._flatten_layers() if isinstance(l, keras.layers.BatchNormalization)]

    kwargs = dict(backbone="resnet18", fpn_width=8, head_convs=1, image_size=(64, 64))
    default = RetinaNet(2, **kwargs)  # random init, one device: trainable, unsynchronized BatchNorm
    assert default.freeze_batchnorm is False and default.sync_batchnorm is False
    synced = RetinaNet(2, sync_batchnorm=True, **kwargs)
    bns = batchnorms(synced)
    assert bns and all(l.synchronized and l.trainable for l in bns)
    config = synced.get_config()
    assert config["sync_batchnorm"] is True and config["freeze_batchnorm"] is False
    assert all(l.synchronized for l in batchnorms(RetinaNet.from_config(config)))
    frozen = RetinaNet(2, freeze_batchnorm=True, **kwargs)
    assert all(not l.trainable and not l.synchronized for l in batchnorms(frozen))
    with pytest.raises(ValueError, match="exclude"):
        RetinaNet(2, freeze_batchnorm=True, sync_batchnorm=True, **kwargs)


# ------------------------------------------------------------------------------------------ subprocess side
def _split_cpu(n=2):
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * n)


def _batches(size=64):
    import numpy as np

    from _tiny import padded_targets

    rng = np.random.RandomState(0)
    images = rng.uniform(0, 255, (4, size, size, 3)).astype("float32")
    boxes = [[[0.1, 0.1, 0.6, 0.5]], [[0.3, 0.2, 0.9, 0.9], [0.05, 0.5, 0.4, 0.95]],
             [[0.2, 0.2, 0.7, 0.7]], [[0.5, 0.5, 0.95, 0.9]]]
    classes = [[0], [1, 2], [2], [1]]
    full = (images, padded_targets(boxes, classes))
    # Replica 1 gets images 2 and 3: no boxes, so no positive anchors on that replica.
    empty = (images[::-1].copy(), padded_targets(boxes[:2] + [[], []], classes[:2] + [[], []]))
    return {"all_positive": full, "one_replica_empty": empty}


def _build(head, backbone, bn, strategy):
    import keras

    from _tiny import tiny_model
    from keras_focal.models import RetinaNet

    with strategy.scope():
        if backbone == "tiny":
            model = tiny_model(head)
        else:
            model = RetinaNet(3, backbone=backbone, head=head, fpn_width=16, head_convs=1, image_size=(64, 64),
                              freeze_batchnorm=bn == "frozen", sync_batchnorm=bn == "sync")
        model.compile(optimizer=keras.optimizers.SGD(1.0))
    return model


def _one_step(model, strategy, batch, path):
    import numpy as np
    import tensorflow as tf

    from keras_focal.training import DistributedTrainer

    before = [np.array(w) for w in model.trainable_weights]
    dataset = tf.data.Dataset.from_tensors(batch)
    if path == "fit":
        history = model.fit(dataset, epochs=1, verbose=0)
        loss = history.history["loss"][0]
    else:
        trainer = DistributedTrainer(model, strategy)
        logs = trainer.train_step(iter(trainer.strategy.experimental_distribute_dataset(dataset)))
        loss = float(logs["loss"])
    updates = [np.array(w) - b for w, b in zip(model.trainable_weights, before)]
    return loss, updates


def _loss_all_reduces(model, strategy, batch):
    """Number of collective all-reduces one replica's `compute_loss` issues (in the traced step's graph)."""
    import tensorflow as tf

    images, targets = batch

    @tf.function
    def step(x, y):
        return strategy.run(lambda a, b: model.compute_loss(a, b, model(a, training=True)), args=(x, y))

    split = images.shape[0] // strategy.num_replicas_in_sync
    graph = step.get_concrete_function(images[:split], {k: v[:split] for k, v in targets.items()}).graph
    ops = [op for f in [graph, *graph._functions.values()] for op in getattr(f, "get_operations", lambda: [])()]
    collectives = [op for op in ops if op.type.startswith("CollectiveReduce")]
    return len(collectives) // strategy.num_replicas_in_sync


def equivalence(head, backbone, paths=None, bns=None):
    _split_cpu(2)
    import keras
    import numpy as np
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    single = tf.distribute.OneDeviceStrategy("/cpu:0")
    if bns is None:
        bns = "none" if backbone == "tiny" else "frozen,sync,local"
    bns = bns.split(",")
    if paths is None:
        paths = "loop,fit" if backbone == "tiny" else "loop"
    paths = paths.split(",")
    cases = []
    for bn in bns:
        reference = _build(head, backbone, bn, single)
        initial = reference.get_weights()
        for name, batch in _batches().items():
            if backbone != "tiny" and name != "one_replica_empty":
                continue
            images = tf.constant(batch[0])
            encoded = reference.detection_head.assign_targets(batch[1], reference(images), *images.shape[1:3])
            positives = np.sum(np.asarray(encoded["class_targets"]) >= 0, axis=1)
            for path in paths:
                if path == "fit" and name != "one_replica_empty":  # fit: the harder batch only, to bound CI time
                    continue
                results = []
                for strategy in (single, mirrored):
                    model = _build(head, backbone, bn, strategy)
                    model.set_weights(initial)
                    results.append(_one_step(model, strategy, batch, path))
                (loss_1, upd_1), (loss_2, upd_2) = results
                cases.append({
                    "batch": name, "path": path, "bn": bn,
                    "positives_per_replica": [int(positives[:2].sum()), int(positives[2:].sum())],
                    "loss_single": loss_1, "loss_replicas": loss_2,
                    "max_update": max(float(np.max(np.abs(u))) for u in upd_1),
                    "max_update_diff": max(float(np.max(np.abs(a - b))) for a, b in zip(upd_1, upd_2)),
                })
    counted = _build(head, backbone, bns[0], mirrored)
    loss_all_reduces = _loss_all_reduces(counted, mirrored, _batches()["all_positive"])
    auto = {}
    if backbone != "tiny" and "local" in bns:  # the default BatchNorm mode: synchronized under >1 replica (random init), else plain
        from keras_focal.models import RetinaNet

        for name, strategy in (("single", single), ("mirrored", mirrored)):
            with strategy.scope():
                auto[name] = RetinaNet(3, backbone=backbone, fpn_width=8, head_convs=1).sync_batchnorm
    print("RESULT " + json.dumps({"cases": cases, "default_sync": auto,
                                  "loss_all_reduces_per_replica": loss_all_reduces}))


if __name__ == "__main__":
    sys.path.insert(0, HERE)
    {"equivalence": equivalence}[sys.argv[1]](*sys.argv[2:])
