"""Your own annotations as dataset sources: COCO JSON, Pascal VOC and YOLO, each written by the test, loaded back
and compared with the same boxes normalized in NumPy float64; the class order, crowd / difficult / unlabeled
images, image modes, and every bad-input message."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import keras_focal.data as kd
from _own_data import CLASSES, IMAGES, expected_boxes, write_coco, write_image, write_voc, write_yolo


def _examples(ds):
    return [(image.numpy(), {k: v.numpy() for k, v in targets.items()}) for image, targets in ds]


def _assert_matches(examples, images=IMAGES, order=CLASSES, atol=1e-6):
    assert len(examples) == len(images)
    for (image, targets), (_, w, h, objects) in zip(examples, images):
        assert image.dtype == np.uint8 and image.shape == (h, w, 3)
        boxes, classes = expected_boxes(objects, w, h, order)
        np.testing.assert_allclose(targets["boxes"], boxes, atol=atol)
        np.testing.assert_array_equal(targets["classes"], classes)
        assert targets["boxes"].dtype == np.float32 and targets["classes"].dtype == np.int32


# ------------------------------------------------------------------------------------------------------ COCO
def test_coco_json_boxes_classes_and_ids(tmp_path):
    path = write_coco(str(tmp_path))
    info = kd.dataset_info(path)
    # Classes are the categories sorted by id: cat 3, bird 7, dog 12; the ids are kept.
    assert info.class_names == ("cat", "bird", "dog") and info.category_ids == (3, 7, 12)
    examples = _examples(kd.load(path))
    _assert_matches(examples, order=info.class_names)
    assert examples[2][1]["boxes"].shape == (0, 4)  # an image without annotations: no objects
    # The pixels are the file's (PNG is lossless; sub/b.png sits in a sub-folder of the JSON's folder).
    np.testing.assert_array_equal(examples[1][0], np.asarray(Image.open(tmp_path / "sub" / "b.png").convert("RGB")))


def test_coco_crowd_boxes_image_dir_and_clipping(tmp_path):
    images = [("a.jpg", 50, 40, [((10, 10, 20, 20), "cat"), ((-10, 30, 30, 60), "dog"), ((5, 5, 5, 30), "cat")])]
    path = write_coco(str(tmp_path / "ann"), images, {"cat": 1, "dog": 2}, crowd={(0, 0)})
    os.rename(tmp_path / "ann" / "a.jpg", tmp_path / "a.jpg")
    with pytest.raises(kd.DataSourceError, match="a.jpg: image file not found"):
        kd.load(path)
    (image, targets), = _examples(kd.load(path, image_dir=str(tmp_path)))
    # Crowd box left out; the box partly outside is clipped to the image; the zero-width box is dropped.
    np.testing.assert_allclose(targets["boxes"], [[30 / 40, 0, 1, 30 / 50]], atol=1e-6)
    np.testing.assert_array_equal(targets["classes"], [1])
    (_, kept), = _examples(kd.load(path, image_dir=str(tmp_path), keep_crowd=True))
    np.testing.assert_array_equal(kept["is_crowd"], [True, False])
    np.testing.assert_allclose(kept["boxes"][0], [10 / 40, 10 / 50, 20 / 40, 20 / 50], atol=1e-6)


# ------------------------------------------------------------------------------------------------------- VOC
def test_voc_one_based_pixels_difficult_and_splits(tmp_path):
    root = write_voc(str(tmp_path / "voc"), difficult={(0, 1)}, splits={"train": [0, 2], "val": [1]})
    info = kd.dataset_info(root)
    assert info.class_names == kd.VOC_CLASS_NAMES and info.splits == ("train", "validation")
    voc_order = kd.VOC_CLASS_NAMES
    train = _examples(kd.load(root, "train"))
    # Image 0's dog is difficult: left out by default, kept with keep_difficult.
    _assert_matches(train, [IMAGES[0][:3] + (IMAGES[0][3][:1],), IMAGES[2]], voc_order)
    _assert_matches(_examples(kd.load(root, "train", keep_difficult=True)), [IMAGES[0], IMAGES[2]], voc_order)
    _assert_matches(_examples(kd.load(root, "validation")), [IMAGES[1]], voc_order)


def test_voc_class_rule(tmp_path):
    images = [("x.jpg", 40, 40, [((1, 1, 20, 20), "zebra"), ((2, 2, 30, 30), "apple")])]
    root = write_voc(str(tmp_path / "voc"), images)  # no ImageSets: every XML file is the split
    assert kd.dataset_info(root).class_names == ("apple", "zebra")  # not all VOC names: sorted names found
    assert kd.dataset_info(root).splits == ("all",)
    _assert_matches(_examples(kd.load(root, "train")), images, ("apple", "zebra"))
    names = ("zebra", "apple", "pear")
    _assert_matches(_examples(kd.load(root, class_names=names)), images, names)
    with pytest.raises(kd.DataSourceError, match=r"x.xml: undeclared class name 'apple'"):
        kd.load(root, class_names=("zebra",))


# ------------------------------------------------------------------------------------------------------ YOLO
@pytest.mark.parametrize("as_mapping", [False, True])
def test_yolo_yaml(tmp_path, as_mapping):
    path = write_yolo(str(tmp_path / "yolo"), as_mapping=as_mapping, splits={"train": [0, 1, 2], "val": [1]})
    info = kd.dataset_info(path)
    assert info.class_names == CLASSES and info.splits == ("train", "validation")
    # Image 2 has no label file at all: an image without objects. YOLO stores 6 decimals.
    _assert_matches(_examples(kd.load(path, "train")), IMAGES, atol=2e-5)
    _assert_matches(_examples(kd.load(path, "val")), [IMAGES[1]], atol=2e-5)


def test_yolo_split_as_txt_list(tmp_path):
    path = write_yolo(str(tmp_path), splits={"train": [0, 1]})
    with open(tmp_path / "train.txt", "w") as f:
        f.write("images/train/b.jpg\n")
    with open(path) as f:
        text = f.read().replace("train: images/train", "train: train.txt")
    with open(path, "w") as f:
        f.write(text)
    _assert_matches(_examples(kd.load(path, "train")), [IMAGES[1]], atol=2e-5)
    with pytest.raises(kd.DataSourceError, match="no 'test' entry"):
        kd.load(path, "test")


# ------------------------------------------------------------------------------------------- image decoding
@pytest.mark.parametrize("name,mode,fmt", [("gray.png", "L", None), ("rgba.png", "RGBA", None),
                                           ("palette.png", "P", None), ("palette.gif", "P", None),
                                           ("plain.bmp", "RGB", None), ("photo.jpeg", "RGB", None)])
def test_image_modes_become_rgb_uint8(tmp_path, name, mode, fmt):
    expected = write_image(str(tmp_path / name), 24, 16, mode=mode, fmt=fmt)
    image = kd.sources.decode_image_file(tf.constant(str(tmp_path / name))).numpy()
    assert image.dtype == np.uint8 and image.shape == (16, 24, 3)
    if not name.endswith(".jpeg"):  # lossless: PIL's RGB conversion, pixel for pixel
        np.testing.assert_array_equal(image, expected)


@pytest.mark.parametrize("damage", ["text", "truncated", "empty"])
def test_corrupt_image_bytes_name_the_file(tmp_path, damage):
    path = write_coco(str(tmp_path))
    data = open(tmp_path / "a.jpg", "rb").read()
    broken = {"text": b"version https://git-lfs.github.com/spec/v1\n", "truncated": data[: len(data) // 2],
              "empty": b""}[damage]
    with open(tmp_path / "a.jpg", "wb") as f:
        f.write(broken)
    ds = kd.load(path)  # the annotations are fine, the file exists: load itself passes
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"a\.jpg"):
        _examples(ds)
    assert len(_examples(kd.load(path, on_error="skip"))) == 2  # the two good images


def test_declared_size_must_match_the_image(tmp_path):
    path = write_coco(str(tmp_path))
    write_image(str(tmp_path / "c.jpg"), 30, 20)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"c\.jpg.*differs from the annotated"):
        _examples(kd.load(path))


# ---------------------------------------------------------------------------------------------- bad input
def _coco(tmp_path, **extra):
    return write_coco(str(tmp_path), extra=extra)


def test_bad_coco_json(tmp_path):
    path = write_coco(str(tmp_path))
    text = open(path).read()
    with open(path, "w") as f:
        f.write(text[: len(text) // 2])
    with pytest.raises(kd.DataSourceError, match=r"instances.json: not valid JSON.*truncated or malformed"):
        kd.load(path)
    with pytest.raises(kd.DataSourceError, match="instances.json: not valid JSON"):
        kd.dataset_info(path)

    doc = json.loads(text)
    doc["annotations"][1]["category_id"] = 99
    with open(path, "w") as f:
        json.dump(doc, f)
    with pytest.raises(kd.DataSourceError, match=r"image .*a\.jpg: undeclared category id 99"):
        kd.load(path)
    with pytest.warns(UserWarning, match=r"(?s)skipped 1 of 3 images.*undeclared category id 99"):
        assert len(_examples(kd.load(path, on_error="skip"))) == 2

    os.remove(tmp_path / "c.jpg")
    with pytest.raises(kd.DataSourceError, match=r"(?s)2 problem\(s\).*category id 99.*c\.jpg: image file not found"):
        kd.load(path)
    with pytest.warns(UserWarning, match=r"(?s)skipped 2 of 3 images.*c\.jpg: image file not found"):
        kd.load(path, on_error="skip")


def test_bad_yolo_labels(tmp_path):
    path = write_yolo(str(tmp_path))
    labels = tmp_path / "labels" / "train" / "a.txt"
    good = labels.read_text()
    labels.write_text(good + "1 0.5 0.5 0.2\n")
    with pytest.raises(kd.DataSourceError, match=r"labels/train/a\.txt: line 3 has 4 fields, expected 5"):
        kd.load(path)
    labels.write_text(good + "7 0.5 0.5 0.2 0.2\n")
    with pytest.raises(kd.DataSourceError, match=r"a\.txt: line 3: undeclared class index 7"):
        kd.load(path)
    with pytest.warns(UserWarning, match=r"(?s)skipped 1 of 3 images.*a\.txt"):
        _assert_matches(_examples(kd.load(path, on_error="skip")), IMAGES[1:], atol=2e-5)
    (tmp_path / "data.yaml").write_text("names: [a, b\ntrain: x")
    with pytest.raises(kd.DataSourceError, match=r"data\.yaml: malformed YAML"):
        kd.dataset_info(path)


def test_bad_voc_xml_and_missing_sources(tmp_path):
    root = write_voc(str(tmp_path / "voc"))
    (tmp_path / "voc" / "Annotations" / "c.xml").write_text("<annotation><object>")
    with pytest.raises(kd.DataSourceError, match=r"c\.xml: malformed XML"):
        kd.load(root)
    with pytest.warns(UserWarning, match=r"(?s)skipped 1 of 3 images.*c\.xml"):
        assert len(_examples(kd.load(root, on_error="skip"))) == 2
    for missing in (tmp_path / "nope.json", tmp_path / "nope" / "data.yaml", tmp_path / "no_folder" / "x"):
        with pytest.raises(kd.DataSourceError, match=f"{missing} does not exist"):
            kd.load(str(missing))
        with pytest.raises(kd.DataSourceError, match=f"{missing} does not exist"):
            kd.dataset_info(str(missing))
    with pytest.raises(kd.DataSourceError, match="not a dataset source"):
        kd.load(str(tmp_path / "voc" / "JPEGImages"))
    with pytest.raises(ValueError, match="on_error"):
        kd.load(root, on_error="ignore")


# --------------------------------------------------------------------------------------- into the pipeline
def test_source_through_make_dataset_and_model_class_names(tmp_path):
    from _tiny import tiny_model

    path = write_coco(str(tmp_path))
    info = kd.dataset_info(path)
    model = tiny_model(num_classes=info.num_classes, class_names=info.class_names)
    batches = kd.make_dataset(kd.load(path), image_size=(64, 64), batch_size=3, encoder=model.anchor_encoder,
                              augment=True)
    images, targets = next(iter(batches))
    assert images.shape == (3, 64, 64, 3) and targets["class_targets"].shape[0] == 3
    assert model.class_names == ("cat", "bird", "dog")
    assert model.get_config()["class_names"] == ["cat", "bird", "dog"]
    with pytest.raises(ValueError, match="class_names must be 3"):
        tiny_model(num_classes=3, class_names=("a", "b"))
