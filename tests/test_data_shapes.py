"""The built-in `keras_focal_shapes` tfds dataset: offline tfds.load, determinism, object counts."""

import glob
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

import keras_focal.data as kd


@pytest.fixture(scope="session")
def shapes_dir(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("tfds_shapes"))
    kd.build_shapes_dataset(d, config="small")
    return d


def test_tfds_load_offline(shapes_dir):
    ds, info = tfds.load("keras_focal_shapes/small", split="validation", data_dir=shapes_dir, with_info=True)
    assert info.splits["train"].num_examples == 64
    assert info.splits["validation"].num_examples == 16
    assert info.features["objects"]["label"].names == list(kd.SHAPES_CLASS_NAMES)
    counts = []
    for ex in ds:
        assert ex["image"].shape == (128, 128, 3) and ex["image"].dtype == np.uint8
        boxes = ex["objects"]["bbox"].numpy()
        counts.append(len(boxes))
        if len(boxes):
            assert (boxes >= 0).all() and (boxes <= 1).all()
            assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
            # objects are at least ~8 px on a side
            assert ((boxes[:, 2:] - boxes[:, :2]) * 128 >= 7).all()
    assert min(counts) >= 0 and max(counts) <= 10 and sum(counts) > 0


def test_load_contract_format(shapes_dir):
    ds = kd.load("shapes/small", split="train", data_dir=shapes_dir)
    n = 0
    for image, targets in ds.take(8):
        assert image.dtype.name == "uint8" and image.shape[-1] == 3
        assert targets["boxes"].dtype.name == "float32" and targets["boxes"].shape[-1] == 4
        assert targets["classes"].dtype.name == "int32"
        assert targets["boxes"].shape[0] == targets["classes"].shape[0]
        n += int(targets["classes"].shape[0])
        assert ((targets["classes"].numpy() >= 0) & (targets["classes"].numpy() < 5)).all()
    assert n > 0


def test_build_is_deterministic(shapes_dir, tmp_path):
    kd.build_shapes_dataset(str(tmp_path), config="small")
    a = sorted(glob.glob(os.path.join(shapes_dir, "keras_focal_shapes", "small", "*", "*.tfrecord*")))
    b = sorted(glob.glob(os.path.join(str(tmp_path), "keras_focal_shapes", "small", "*", "*.tfrecord*")))
    assert len(a) == len(b) >= 3
    for fa, fb in zip(a, b):
        assert os.path.basename(fa) == os.path.basename(fb)
        with open(fa, "rb") as f1, open(fb, "rb") as f2:
            assert f1.read() == f2.read()


def test_generate_example_properties():
    cfg = kd.ShapesConfig(name="default")
    counts = []
    for i in range(40):
        image, boxes, labels = kd.generate_example("train", i, cfg)
        again = kd.generate_example("train", i, cfg)
        np.testing.assert_array_equal(image, again[0])
        np.testing.assert_array_equal(boxes, again[1])
        counts.append(len(labels))
        assert len(boxes) == len(labels)
    assert min(counts) <= 2 and max(counts) >= 8  # 0 to about 10 objects
    # different splits give different images
    assert not np.array_equal(kd.generate_example("train", 0, cfg)[0], kd.generate_example("test", 0, cfg)[0])


def test_dataset_info_and_unknown_name():
    info = kd.dataset_info("shapes")
    assert info.num_classes == 5 and info.class_names[0] == "circle"
    coco = kd.dataset_info("coco/2017")
    assert coco.num_classes == 80 and len(coco.category_ids) == 80 and coco.category_ids[-1] == 90
    assert kd.dataset_info("voc/2012").num_classes == 20
    with pytest.raises(ValueError, match="keras_focal_shapes.*coco/2017.*voc/2007.*voc/2012"):
        kd.load("no_such_dataset")
    with pytest.raises(ValueError, match="Available"):
        kd.dataset_info("imagenet2012")
