"""The versioned, atomic layout of export_saved_model: versions increment, nothing is overwritten, and an export
that fails before the rename leaves neither a version nor a temporary directory behind.

A stand-in detector (one Dense layer, the SavedModel outputs) keeps these exports fast; the real RetinaNet is
exported in tests/test_export.py.
"""

import os

import keras
import pytest
import tensorflow as tf

import keras_focal.export
from keras_focal.export import saved_model as export_lib


class _StandInDetector(keras.Model):
    def __init__(self):
        super().__init__(name="stand_in_detector")
        self.image_size = (16, 16)
        self.dense = keras.layers.Dense(4)

    def call(self, images):
        return self.dense(tf.reduce_mean(images, axis=[1, 2]))

    def detect(self, images):
        x = tf.sigmoid(self(images))  # [B, 4]
        batch = tf.shape(images)[0]
        return {"detection_boxes": tf.reshape(tf.sort(x, axis=-1), [batch, 1, 4]),
                "detection_scores": x[:, :1],
                "detection_classes": tf.zeros([batch, 1], tf.int32),
                "num_detections": tf.ones([batch], tf.int32)}


@pytest.fixture
def model():
    m = _StandInDetector()
    m(tf.zeros([1, 16, 16, 3]))
    return m


def _children(path):
    return sorted(os.listdir(path))


def test_versions_increment_and_are_never_overwritten(model, tmp_path):
    base = tmp_path / "stand_in"
    assert export_lib.existing_versions(str(base)) == []
    assert keras_focal.export.export_saved_model(model, str(base)) == str(base / "1")
    assert keras_focal.export.export_saved_model(model, base) == str(base / "2")
    assert keras_focal.export.export_saved_model(model, str(base), version=10) == str(base / "10")
    assert keras_focal.export.export_saved_model(model, str(base)) == str(base / "11")
    assert _children(base) == ["1", "10", "11", "2"]

    before = os.stat(base / "2" / "saved_model.pb").st_mtime_ns
    with pytest.raises(FileExistsError, match="never overwritten"):
        keras_focal.export.export_saved_model(model, str(base), version=2)
    assert os.stat(base / "2" / "saved_model.pb").st_mtime_ns == before
    assert _children(base) == ["1", "10", "11", "2"]
    for bad in (-1, 1.5, "3", True):
        with pytest.raises(ValueError):
            keras_focal.export.export_saved_model(model, str(base), version=bad)

    loaded = tf.saved_model.load(str(base / "11"))
    out = loaded.signatures["serving_default"](images=tf.zeros([2, 5, 7, 3], tf.uint8))
    assert out["num_detections"].dtype == tf.int32 and out["detection_boxes"].shape == (2, 1, 4)
    assert os.path.isfile(base / "11" / "assets.extra" / "tf_serving_warmup_requests")


def test_empty_version_directory_is_not_replaced(model, tmp_path):
    base = tmp_path / "m"
    (base / "1").mkdir(parents=True)  # e.g. created by hand: the rename would silently replace it
    with pytest.raises(FileExistsError):
        keras_focal.export.export_saved_model(model, str(base), version=1)
    assert _children(base) == ["1"] and _children(base / "1") == []


@pytest.mark.parametrize("where", ["warmup", "rename", "interrupt"])
def test_failed_export_leaves_nothing_behind(model, tmp_path, monkeypatch, where):
    base = tmp_path / "m"
    keras_focal.export.export_saved_model(model, str(base))  # version 1 exists and must survive

    def boom(*args, **kwargs):
        raise (KeyboardInterrupt if where == "interrupt" else RuntimeError)("injected failure")

    if where == "rename":
        monkeypatch.setattr(export_lib.os, "rename", boom)
    else:  # after the SavedModel is written, before the rename
        monkeypatch.setattr(export_lib.warmup, "write_warmup_requests", boom)
    with pytest.raises((RuntimeError, KeyboardInterrupt), match="injected failure"):
        keras_focal.export.export_saved_model(model, str(base))
    assert _children(base) == ["1"]  # no version 2, no .tmp-export-* directory
    monkeypatch.undo()
    assert keras_focal.export.export_saved_model(model, str(base)) == str(base / "2")


def test_temporary_names_are_not_tf_serving_versions():
    # TF Serving loads the children whose name parses as an int64 (safe_strto64: digits, sign, spaces).
    assert keras_focal.export.parse_version("1") == 1
    assert keras_focal.export.parse_version("0007") == 7
    assert keras_focal.export.parse_version(" 3 ") == 3
    for name in (export_lib.TMP_PREFIX + "abc123", export_lib.TMP_PREFIX + "123", "1a", "v1", "", "1.0"):
        assert keras_focal.export.parse_version(name) is None


def test_rejects_objects_without_detect(tmp_path):
    with pytest.raises(TypeError, match="detect"):
        keras_focal.export.export_saved_model(keras.Sequential([keras.layers.Dense(1)]), str(tmp_path / "x"))
    assert not (tmp_path / "x" / "1").exists()


def test_one_version_rule_and_one_labels_reader_for_export_and_evaluation(tmp_path, monkeypatch):
    """`latest_version_dir` (used by `evaluation.load_detector`) applies `parse_version`: "0010" is version 10, a
    folder without saved_model.pb is skipped; `read_class_names` takes a version folder or the labels file."""
    from keras_focal.evaluation import model_eval

    for name, complete in (("2", True), ("0010", True), ("+3", True), ("12", False), ("v99", True)):
        (tmp_path / name).mkdir()
        if complete:
            (tmp_path / name / "saved_model.pb").write_bytes(b"")
    assert keras_focal.export.latest_version_dir(tmp_path) == str(tmp_path / "0010")
    assert keras_focal.export.existing_versions(tmp_path) == [2, 3, 10, 12]
    opened = []
    monkeypatch.setattr(model_eval.tf.saved_model, "load", opened.append)
    model_eval.load_detector(str(tmp_path))
    assert opened == [str(tmp_path / "0010")]

    (tmp_path / "0010" / "assets").mkdir()
    (tmp_path / "0010" / "assets" / "labels.txt").write_text("cat\ndog\n", encoding="utf-8")
    assert keras_focal.export.read_class_names(tmp_path / "0010") == ("cat", "dog")
    assert keras_focal.export.read_class_names(tmp_path / "0010" / "assets" / "labels.txt") == ("cat", "dog")
    assert keras_focal.export.read_class_names(tmp_path / "2") is None
