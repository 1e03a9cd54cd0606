"""The scripts end to end on your own data: train.py (one step, evaluation, export), evaluate.py, predict.py and
inspect_dataset.py on a tiny COCO JSON and a tiny YOLO YAML, with a tiny backbone and small images."""

import json
import os

import numpy as np
import pytest

import keras_focal.evaluation
import keras_focal.models
from _examples import load_example
from _own_data import CLASSES, write_coco, write_yolo
from _tiny import tiny_backbone


@pytest.fixture
def tiny_retinanet(monkeypatch):
    """train.py builds its RetinaNet on the 5-conv tiny backbone instead of a ResNet."""
    original = keras_focal.models.RetinaNet
    monkeypatch.setattr(keras_focal.models, "RetinaNet",
                        lambda num_classes, backbone=None, **kw: original(num_classes, backbone=tiny_backbone(), **kw))


def _train_args(dataset, tmp_path, *extra):
    return ["--dataset", dataset, "--image-size", "64", "--fpn-width", "16", "--head-convs", "1", "--batch-size",
            "2", "--steps-per-epoch", "1", "--epochs", "1", "--warmup-steps", "1", "--head", "retina",
            "--model-dir", str(tmp_path / "run"), "--export-dir", str(tmp_path / "export"), *extra]


def test_coco_json_train_evaluate_predict(tiny_retinanet, tmp_path, capsys):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    annotations = write_coco(str(tmp_path / "coco"))
    load_example("train").main(_train_args(annotations, tmp_path))
    version = tmp_path / "export" / "1"
    # The export carries the classes sorted by category id (cat 3, bird 7, dog 12), one per line.
    assert (version / "assets" / "labels.txt").read_text() == "cat\nbird\ndog\n"
    model = keras_focal.evaluation.load_detector(str(tmp_path / "run" / "model.keras"))
    assert model.class_names == ("cat", "bird", "dog")
    served = keras_focal.evaluation.load_detector(str(version))  # tf.saved_model.load: the names from the asset
    assert keras_focal.evaluation.detector_class_names(served) == ("cat", "bird", "dog")

    results = tmp_path / "results.json"
    metrics = load_example("evaluate").main(["--model", str(tmp_path / "export"), "--dataset", annotations,
                                         "--output", str(results)])
    out = capsys.readouterr().out
    assert all(name in out for name in ("cat", "bird", "dog")) and "AP@[.50:.95] per class" in out
    detections = json.loads(results.read_text())
    assert {d["image_id"] for d in detections} <= {100, 101, 102}
    assert {d["category_id"] for d in detections} <= {3, 7, 12}
    # pycocotools on the user's own file gives the metrics evaluate.py printed.
    gt = COCO(annotations)
    ev = COCOeval(gt, gt.loadRes(str(results)) if detections else COCO(), "bbox")
    if detections:
        ev.evaluate(), ev.accumulate(), ev.summarize()
        assert np.isclose(ev.stats[1], metrics["AP50"], atol=1e-6, equal_nan=True)

    predictions = load_example("predict").main(["--model", str(version), "--images", str(tmp_path / "coco"),
                                            "--score-threshold", "0", "--output-dir", str(tmp_path / "pred")])
    assert sorted(os.path.basename(p) for p in predictions) == ["a.png", "c.png"]  # the folder's own images
    assert {name for found in predictions.values() for name, _ in found} <= {"cat", "bird", "dog"}


def test_yolo_yaml_train_inspect_and_missing_source(tiny_retinanet, tmp_path, capsys):
    # One step and the evaluation; the export is the COCO test's (it does not depend on the source format).
    data_yaml = write_yolo(str(tmp_path / "yolo"))
    metrics = load_example("train").main(_train_args(data_yaml, tmp_path, "--eval-dataset", data_yaml,
                                                 "--export-dir", ""))
    assert 0.0 <= metrics["AP50"] <= 1.0 or np.isnan(metrics["AP50"])
    model = keras_focal.evaluation.load_detector(str(tmp_path / "run" / "model.keras"))
    assert model.class_names == CLASSES

    stats = load_example("inspect_dataset").main([data_yaml, "--image-size", "64", "--num-images", "3",
                                              "--output-dir", str(tmp_path / "inspect")])
    out = capsys.readouterr().out
    assert stats["images"] == 3 and stats["boxes"] == 4 and stats["images_without_boxes"] == 1
    assert stats["boxes_per_class"] == {"bird": 1, "cat": 1, "dog": 2}
    # At 64 px the 20 x 24 px bird box is 20 * 64 / 64 = 20 px wide: no box under 8 px.
    assert stats["small_boxes"] == 0 and "P3 (stride   8" in out and "image sizes" in out
    assert sorted(os.listdir(tmp_path / "inspect")) == ["box_sizes.png", "gallery.png"]
    with pytest.raises(SystemExit, match="no/such/data.yaml does not exist"):
        load_example("train").main(_train_args(str(tmp_path / "no" / "such" / "data.yaml"), tmp_path))
    with pytest.raises(SystemExit, match="missing.json does not exist"):
        load_example("evaluate").main(["--model", str(tmp_path / "export"), "--dataset", str(tmp_path / "missing.json")])
