"""tf.data service: a dispatcher and two workers in this process feed make_dataset batches and a short fit."""

import collections

import numpy as np
import pytest
import tensorflow as tf

from _tiny import tiny_model
from keras_focal.data import make_dataset, service

N = 24


@pytest.fixture(scope="module")
def dispatcher():
    server = service.start_dispatcher()
    workers = [service.start_worker(server.target) for _ in range(2)]
    yield server
    for w in workers:
        w.stop()
    server.stop()


def _examples(size=64):
    """N examples whose image i is filled with the value i, so a batch says which examples it holds."""
    images = np.stack([np.full((size, size, 3), i, np.uint8) for i in range(N)])
    boxes = np.tile(np.array([[[0.2, 0.2, 0.7, 0.6]]], "float32"), (N, 1, 1))
    classes = (np.arange(N) % 3).astype("int32")[:, None]
    return tf.data.Dataset.from_tensor_slices((images, {"boxes": boxes, "classes": classes}))


def _seen(ds):
    """Example ids of one pass over `ds`, and the anchor targets' presence."""
    ids = []
    for images, targets in ds:
        assert "class_targets" in targets
        ids += [int(v) for v in np.round(images.numpy().max(axis=(1, 2, 3)))]
    return collections.Counter(ids)


def test_every_example_once_per_epoch_with_dynamic_sharding(dispatcher):
    model = tiny_model()
    ds = make_dataset(_examples(), image_size=(64, 64), batch_size=4, encoder=model.anchor_encoder, augment=True,
                      shuffle=True, max_boxes=4)
    seen = _seen(service.distribute(ds, dispatcher.target, policy="dynamic"))
    assert sorted(seen) == list(range(N)) and set(seen.values()) == {1}
    # ShardingPolicy.OFF: each of the two workers produces the whole dataset
    seen = _seen(service.distribute(ds, dispatcher.target, policy="off"))
    assert sorted(seen) == list(range(N)) and set(seen.values()) == {2}


def test_short_training_run_from_workers(dispatcher):
    model = tiny_model()
    model.compile(optimizer="adam")
    ds = make_dataset(_examples(), image_size=(64, 64), batch_size=4, encoder=model.anchor_encoder,
                      augment=True, shuffle=True, repeat=True, max_boxes=4)
    history = model.fit(service.distribute(ds, dispatcher.target), epochs=1, steps_per_epoch=3, verbose=0)
    assert np.isfinite(history.history["loss"][0]) and history.history["loss"][0] > 0


def test_multi_scale_batches_from_workers(dispatcher):
    """Multi-scale batches (a size drawn per batch, encoded at it) come through the workers whole: every example
    once, each batch one of the sizes, its anchor targets for that size."""
    model = tiny_model()
    ds = make_dataset(_examples(), image_size=(64, 64), batch_size=4, encoder=model.anchor_encoder, augment=True,
                      shuffle=True, max_boxes=4, seed=1, multi_scale=(32, 96))
    ids, sizes = [], set()
    for images, targets in service.distribute(ds, dispatcher.target, policy="dynamic"):
        size = images.shape[1]
        assert images.shape[1:3] == (size, size) and size in (32, 64, 96)
        anchors = model.anchor_encoder.anchor_generator(size, size).shape[0]
        assert targets["class_targets"].shape[1] == anchors, (size, targets["class_targets"].shape)
        sizes.add(size)
        ids += [int(v) for v in np.round(images.numpy().max(axis=(1, 2, 3)))]
    assert sorted(ids) == list(range(N)) and len(sizes) > 1, (ids, sizes)


def test_bad_arguments():
    ds = tf.data.Dataset.range(3)
    with pytest.raises(ValueError, match="grpc://"):
        service.distribute(ds, "localhost:5050")
    with pytest.raises(ValueError, match="policy"):
        service.distribute(ds, "grpc://localhost:5050", policy="static")
