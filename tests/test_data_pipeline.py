"""Loaders through the real tfds.load path (offline, tfds.testing.mock_data) and the batched pipeline."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import keras_focal.data as kd


def _check_batch(images, targets, batch, size, max_boxes):
    assert images.shape == (batch, size[0], size[1], 3) and images.dtype == tf.float32
    im = images.numpy()
    assert im.min() >= 0.0 and im.max() <= 255.0
    boxes, classes = targets["boxes"].numpy(), targets["classes"].numpy()
    assert boxes.shape == (batch, max_boxes, 4) and boxes.dtype == np.float32
    assert classes.shape == (batch, max_boxes) and classes.dtype == np.int32
    valid = classes >= 0
    pad = ~valid
    assert (boxes[pad] == -1).all()
    vb = boxes[valid]
    assert (vb >= 0).all() and (vb <= 1).all()
    assert (vb[:, 0] <= vb[:, 2]).all() and (vb[:, 1] <= vb[:, 3]).all()
    # valid entries come first, padding after
    for row in valid:
        n = row.sum()
        assert row[:n].all() and not row[n:].any()
    return int(valid.sum())


@pytest.mark.parametrize("name,num_classes", [("coco/2017", 80), ("voc/2007", 20), ("voc/2012", 20)])
def test_mock_tfds_pipeline(name, num_classes):
    with tfds.testing.mock_data(num_examples=6):
        ds = kd.load(name, split="train")
        n_raw = 0
        for image, targets in ds:
            b = targets["boxes"].numpy()
            assert b.shape[0] == targets["classes"].shape[0]
            assert (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all()  # inverted mock boxes dropped
            assert ((targets["classes"].numpy() >= 0) & (targets["classes"].numpy() < num_classes)).all()
            n_raw += b.shape[0]
        batches = kd.make_dataset(ds, image_size=(64, 48), batch_size=3, max_boxes=20, drop_remainder=True)
        n = 0
        count = 0
        for images, targets in batches:
            n += _check_batch(images, targets, 3, (64, 48), 20)
            count += 1
        assert count == 2 and n > 0


def test_mock_coco_crowd_handling():
    with tfds.testing.mock_data(num_examples=4):
        raw = tfds.load("coco/2017", split="train")
        kept = kd.load("coco/2017", split="train", keep_crowd=True)
        dropped = kd.load("coco/2017", split="train")
        for ex, (_, tk), (_, td) in zip(raw, kept, dropped):
            crowd = tk["is_crowd"].numpy()
            assert len(crowd) == len(tk["classes"])
            assert len(td["classes"]) == len(tk["classes"]) - int(crowd.sum())
        batches = kd.make_dataset(kept, image_size=(32, 32), batch_size=2, max_boxes=50)
        for _, targets in batches:
            assert targets["is_crowd"].shape == (2, 50)


def test_clean_annotations_rules():
    boxes = tf.constant([[0.1, 0.1, 0.5, 0.5],    # ok
                         [0.6, 0.2, 0.3, 0.4],    # inverted y -> dropped
                         [0.2, 0.2, 0.2, 0.6],    # zero height -> dropped
                         [-0.2, 0.5, 0.4, 1.3],   # clipped to [0, 1]
                         [0.1, 0.1, 0.2, 0.2]])   # no label (mismatched lengths) -> cut
    labels = tf.constant([3, 1, 2, 0])
    crowd = tf.constant([False, False, False, True, True, True])  # longer than the rest
    b, c, _ = kd.clean_annotations(boxes, labels)
    np.testing.assert_allclose(b.numpy(), [[0.1, 0.1, 0.5, 0.5], [0.0, 0.5, 0.4, 1.0]])
    np.testing.assert_array_equal(c.numpy(), [3, 0])
    b, c, _ = kd.clean_annotations(boxes, labels, exclude=crowd)
    np.testing.assert_array_equal(c.numpy(), [3])
    b, c, _ = kd.clean_annotations(tf.zeros([0, 4]), tf.zeros([3], tf.int64))
    assert b.shape == (0, 4) and c.shape == (0,)


def _synthetic(n=5):
    def gen():
        rng = np.random.default_rng(0)
        for i in range(n):
            m = i % 3  # includes images without objects
            y0 = rng.uniform(0, 0.5, size=(m, 2))
            boxes = np.concatenate([y0, y0 + 0.3], axis=1).astype(np.float32)[:, [0, 1, 2, 3]]
            yield (rng.integers(0, 256, size=(40 + i, 50, 3), dtype=np.uint8),
                   {"boxes": boxes, "classes": np.arange(m, dtype=np.int32)})
    return tf.data.Dataset.from_generator(gen, output_signature=(
        tf.TensorSpec([None, None, 3], tf.uint8),
        {"boxes": tf.TensorSpec([None, 4], tf.float32), "classes": tf.TensorSpec([None], tf.int32)}))


def test_pipeline_with_stand_in_encoder():
    num_anchors = 7

    def encoder(boxes, classes, height, width):
        # Stand-in following the AnchorEncoder interface: unbatched [M,4]/[M] -> per-anchor targets.
        assert boxes.shape.rank == 2 and classes.shape.rank == 1
        n_valid = tf.reduce_sum(tf.cast(classes >= 0, tf.int32))
        cls = tf.fill([num_anchors], n_valid)
        return {"class_targets": cls,
                "box_targets": tf.zeros([num_anchors, 4]) + tf.cast(height, tf.float32),
                "matched_boxes": tf.zeros([num_anchors, 4]) + tf.cast(width, tf.float32)}

    ds = kd.make_dataset(_synthetic(5), image_size=(32, 24), batch_size=2, encoder=encoder, max_boxes=4,
                         deterministic=True)
    shapes = []
    for images, t in ds:
        shapes.append(images.shape[0])
        assert t["class_targets"].shape == (images.shape[0], num_anchors)
        assert t["box_targets"].shape == (images.shape[0], num_anchors, 4)
        np.testing.assert_array_equal(t["class_targets"][:, 0].numpy(), (t["classes"].numpy() >= 0).sum(1))
        assert (t["box_targets"].numpy() == 32).all() and (t["matched_boxes"].numpy() == 24).all()
    assert shapes == [2, 2, 1]  # images without objects are kept, last partial batch too


def test_max_boxes_truncation_and_determinism():
    ds = kd.make_dataset(_synthetic(6), image_size=(16, 16), batch_size=6, max_boxes=1, augment=True,
                         shuffle=True, deterministic=True, seed=3)
    a = [(x.numpy(), y["boxes"].numpy()) for x, y in ds]
    ds2 = kd.make_dataset(_synthetic(6), image_size=(16, 16), batch_size=6, max_boxes=1, augment=True,
                          shuffle=True, deterministic=True, seed=3)
    b = [(x.numpy(), y["boxes"].numpy()) for x, y in ds2]
    assert a[0][1].shape == (6, 1, 4)
    np.testing.assert_array_equal(a[0][0], b[0][0])
    np.testing.assert_array_equal(a[0][1], b[0][1])
