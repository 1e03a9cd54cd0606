"""The `keras-focal` command line: the installed script end to end on COCO's layout (train + evaluate in one command,
the run folder, TensorBoard read back from the event file), then evaluate; the other subcommands in process through
`keras_focal.cli.main` (on tiny models), `--data` files of every format, `--config` round trips, and errors that name the flag."""

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

import keras_focal.models
from _own_data import CLASSES, IMAGES, write_coco, write_voc, write_yolo
from _tiny import tiny_backbone
from keras_focal import cli, data_check
from keras_focal.cli import train as train_command
from keras_focal.data import spec

ROOT = Path(__file__).resolve().parents[1]
KERAS_FOCAL = str(Path(sys.executable).with_name("keras-focal"))
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "", "PYTHONUNBUFFERED": "1"}
TINY = ["--image-size", "64", "--fpn-width", "16", "--head-convs", "1", "--batch-size", "2", "--steps-per-epoch",
        "2", "--epochs", "1", "--warmup-steps", "1", "--log-every", "1", "--tensorboard-images", "2"]


def write_coco_layout(root):
    """COCO's own layout: annotations/instances_{train,val}.json, train/, val/ (different images in each)."""
    for split, images in (("train", IMAGES), ("val", IMAGES[:2])):
        path = write_coco(os.path.join(root, split), images=images)
        os.makedirs(os.path.join(root, "annotations"), exist_ok=True)
        shutil.move(path, os.path.join(root, "annotations", f"instances_{split}.json"))
    return root


def read_events(log_dir):
    """{tag: [(step, value)]} of the scalars and {tag: [(step, [png bytes])]} of the images in a log folder."""
    import tensorflow as tf

    scalars, images = {}, {}
    for name in os.listdir(log_dir):
        for event in tf.compat.v1.train.summary_iterator(os.path.join(log_dir, name)):
            for value in event.summary.value:
                tensor = tf.make_ndarray(value.tensor)
                if value.metadata.plugin_data.plugin_name == "images":
                    images.setdefault(value.tag, []).append((event.step, list(tensor[2:])))
                elif value.metadata.plugin_data.plugin_name == "scalars":
                    scalars.setdefault(value.tag, []).append((event.step, float(tensor)))
    return scalars, images


@pytest.mark.timeout(900)
def test_keras_focal_train_on_coco_layout_then_evaluate(tmp_path, capsys, monkeypatch):
    write_coco_layout(str(tmp_path / "shop"))
    # The installed script, from a working folder: runs/<name>/ and saved_models/<name>/ are relative to it.
    done = subprocess.run([KERAS_FOCAL, "train", "--dataset", "shop", *TINY, "--backbone", "resnet18", "--name",
                           "tiny"], cwd=tmp_path, capture_output=True, text=True, env=ENV, timeout=800)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert "Data check of" in output and "best possible recall" in output and "AP50" in output
    run = tmp_path / "runs" / "tiny"
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml", "export.txt", "logs", "metrics.json",
                                                     "model.keras"]
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["dataset"] == "shop" and config["head"] == "gfl" and config["image_size"] == 64
    assert config["run_dir"] == os.path.join("runs", "tiny") and config["export_dir"] == os.path.join(
        "saved_models", "tiny")
    assert set(json.loads((run / "metrics.json").read_text())) >= {"AP", "AP50", "APs"}
    assert (run / "export.txt").read_text().strip() == str(tmp_path / "saved_models" / "tiny" / "1")
    assert (tmp_path / "saved_models" / "tiny" / "1" / "assets" / "labels.txt").read_text() == "cat\nbird\ndog\n"

    scalars, images = read_events(str(run / "logs"))
    # Per step: the loss, its terms and the learning rate (steps 1 and 2); per evaluation: COCO AP, AP50, AP_S.
    for tag in ("train/loss", "train/class_loss", "train/box_loss", "train/learning_rate"):
        assert [step for step, _ in scalars[tag]] == [1, 2], tag
    for tag in ("eval/AP", "eval/AP50", "eval/APs"):
        assert [step for step, _ in scalars[tag]] == [2] and 0.0 <= scalars[tag][0][1] <= 1.0
    assert 0 < scalars["train/learning_rate"][0][1] <= 1.0001e-3  # AdamW 1e-3, in float32
    (step, pictures), = images["eval/detections"]
    assert step == 2 and len(pictures) == 2 and all(p.startswith(b"\x89PNG") for p in pictures)

    # evaluate, through a --data file naming the same layout; COCO results with the file's own ids.
    data_yaml = tmp_path / "shop" / "data.yaml"
    data_yaml.write_text("format: coco\nval: {annotations: annotations/instances_val.json, images: val}\n")
    monkeypatch.chdir(tmp_path)
    metrics = cli.main(["evaluate", "--model", "saved_models/tiny", "--data", str(data_yaml), "--split", "val",
                        "--output", "results.json"])
    out = capsys.readouterr().out
    assert "AP@[.50:.95] per class" in out and all(name in out for name in ("cat", "bird", "dog"))
    assert np.isnan(metrics["AP"]) or 0.0 <= metrics["AP"] <= 1.0
    assert {d["image_id"] for d in json.loads((tmp_path / "results.json").read_text())} <= {100, 101}


@pytest.fixture
def tiny_retinanet(monkeypatch):
    """The train subcommand builds its RetinaNet on the 5-conv tiny backbone instead of a ResNet."""
    original = keras_focal.models.RetinaNet
    monkeypatch.setattr(keras_focal.models, "RetinaNet",
                        lambda num_classes, backbone=None, **kw: original(num_classes, backbone=tiny_backbone(), **kw))


@pytest.mark.timeout(600)
def test_ctrl_c_saves_the_epoch_and_the_rerun_resumes(tiny_retinanet, tmp_path, monkeypatch, capsys):
    # A YOLO data.yaml as it is, through --data; Ctrl-C arrives in the second epoch.
    data_yaml = write_yolo(str(tmp_path / "yolo"))
    argv = ["train", "--data", data_yaml, *TINY, "--epochs", "2", "--head", "retina", "--run-dir",
            str(tmp_path / "run"), "--export-dir", "", "--no-check"]
    from keras_focal.training import summaries

    step_end = summaries.TensorBoardSummaries.on_train_batch_end

    def interrupted(self, batch, logs=None):
        if self._step() == 3:
            raise KeyboardInterrupt
        return step_end(self, batch, logs)

    monkeypatch.setattr(summaries.TensorBoardSummaries, "on_train_batch_end", interrupted)
    with pytest.raises(SystemExit) as stopped:
        cli.main(argv)
    assert stopped.value.code == 130
    out = capsys.readouterr().out
    assert "Interrupted" in out and "to resume" in out
    metadata = json.loads((tmp_path / "run" / "backup" / "training_metadata.json").read_text())
    assert metadata["epoch"] == 1  # the first epoch, whole
    monkeypatch.setattr(summaries.TensorBoardSummaries, "on_train_batch_end", step_end)
    metrics = cli.main(argv)
    out = capsys.readouterr().out
    assert "Epoch 2/2" in out and "Epoch 1/2" not in out  # resumed in the second epoch
    assert "AP50" in metrics and not (tmp_path / "run" / "backup").exists()
    assert keras_focal.evaluation.load_detector(str(tmp_path / "run" / "model.keras")).class_names == CLASSES


def test_inspect_prints_the_data_check_and_draws(tmp_path, capsys):
    data_yaml = write_yolo(str(tmp_path / "yolo"))
    stats = cli.main(["inspect", "--data", data_yaml, "--image-size", "64", "--num-images", "3", "--output-dir",
                      str(tmp_path / "inspect")])
    out = capsys.readouterr().out
    assert stats["images"] == 3 and stats["boxes"] == 4 and stats["images_without_boxes"] == 1
    assert stats["boxes_per_class"] == {"bird": 1, "cat": 1, "dog": 2}
    # At 64 px the 20 x 24 px bird box is 20 px on its short side: no box under 8 px, nothing to suggest.
    assert stats["small_boxes"] == 0 and stats["suggested_image_size"] is None
    assert "gfl head at 64x64" in out and "P3 (stride   8" in out and "best possible recall" in out
    assert sorted(os.listdir(tmp_path / "inspect")) == ["box_sizes.png", "gallery.png"]
    # At 16 px that box is 5 x 6 px: too small, with the size that fixes it.
    stats = cli.main(["inspect", str(tmp_path / "yolo" / "data.yaml"), "--image-size", "16", "--num-images", "1",
                      "--output-dir", str(tmp_path / "inspect")])
    assert stats["small_boxes"] >= 1 and stats["suggested_image_size"] is not None
    assert f"--image-size {stats['suggested_image_size']} brings them" in capsys.readouterr().out


def test_suggested_image_size_against_a_reference():
    rng = np.random.default_rng(0)
    sides = rng.uniform(0.002, 0.3, 500)
    for size in (64, 128, 512):
        suggested = data_check.suggested_image_size(sides, size)
        small = lambda s: np.mean(sides.astype(np.float64) * s < 8.0)  # noqa: E731  float64 reference share
        if small(size) <= 0.05:
            assert suggested is None
            continue
        # The smallest multiple of 32 (not below `size`) at which at most 5% of the boxes are under 8 px.
        reference = next(s for s in range(size, 100000) if s % 32 == 0 and small(s) <= 0.05)
        assert suggested == reference and small(suggested - 32) > 0.05
    # The reference can fail: one size step less is not enough.
    assert data_check.suggested_image_size(sides, 64) - 32 != next(
        s for s in range(64, 100000) if s % 32 == 0 and np.mean(sides * s < 8.0) <= 0.05)


def test_data_files_of_every_format(tmp_path):
    import keras_focal.data as kd

    def count(part):
        return sum(1 for _ in kd.load(part.source, part.split, **part.load_options()))

    # COCO: paths relative to `path:`, itself relative to the file.
    write_coco_layout(str(tmp_path / "coco"))
    (tmp_path / "specs").mkdir()
    coco_yaml = tmp_path / "specs" / "coco.yaml"
    coco_yaml.write_text("format: coco\npath: ../coco\ntrain: {annotations: annotations/instances_train.json, "
                         "images: train}\nval: {annotations: annotations/instances_val.json, images: val}\n"
                         "names: [cat, bird, dog]\n")
    coco = spec.read_spec(str(coco_yaml))
    assert count(coco.split("train")) == 3 and count(coco.split("validation")) == 2
    assert coco.split("val").image_dir == str(tmp_path / "coco" / "val")
    # COCO's layout as a folder gives the same splits.
    assert spec.coco_layout(str(tmp_path / "coco")).split("val") == coco.split("val")
    # VOC: one folder, the split lists; names override the classes.
    write_voc(str(tmp_path / "voc"), splits={"train": [0, 2], "val": [1]})
    voc_yaml = tmp_path / "voc.yaml"
    voc_yaml.write_text("format: voc\ntrain: voc\nval: {annotations: voc, split: val}\nnames: [bird, cat, dog]\n")
    voc = spec.read_spec(str(voc_yaml))
    assert (count(voc.split("train")), count(voc.split("val"))) == (2, 1)
    assert kd.dataset_info(voc.split("val").source, class_names=voc.split("val").class_names).class_names == CLASSES
    # YOLO: the ultralytics file as it is.
    yolo = spec.read_spec(write_yolo(str(tmp_path / "yolo")))
    assert yolo.format == "yolo" and count(yolo.split("val")) == 3
    # export --data (int8 calibration) reads the same files: their train entry.
    from keras_focal.cli import export as export_command

    calibration = export_command.calibration_split(argparse.Namespace(data=str(coco_yaml), image_dir=None))
    assert calibration == coco.split("train")
    # tfds: a name and split expressions.
    tfds_yaml = tmp_path / "tfds.yaml"
    tfds_yaml.write_text("format: tfds\nname: keras_focal_shapes/small\ntrain: 'train[:8]'\nval: validation\n")
    assert spec.read_spec(str(tfds_yaml)).split("train") == spec.DataSplit("keras_focal_shapes/small", "train[:8]")
    # Names that disagree with the annotations, a missing folder and a missing entry are named.
    coco_yaml.write_text(coco_yaml.read_text().replace("[cat, bird, dog]", "[cat, dog, bird]"))
    with pytest.raises(kd.DataSourceError, match="'names' is"):
        spec.read_spec(str(coco_yaml)).check_class_names(kd.dataset_info(coco.split("val").source).class_names)
    voc_yaml.write_text("format: voc\ntrain: {annotations: voc, images: pictures}\n")
    with pytest.raises(kd.DataSourceError, match=r"train.images .*pictures does not exist"):
        spec.read_spec(str(voc_yaml))
    with pytest.raises(kd.DataSourceError, match="has no 'test' entry"):
        voc.split("test")


def test_config_round_trip(tmp_path):
    argv = ["train", "--dataset", "data.yaml", "--head", "retina", "--image-size", "320", "--decay-epochs", "3", "5",
            "--model-dir", str(tmp_path / "run"), "--export-dir", ""]
    args, _ = cli.parse_args(argv)
    train_command.resolve(args)
    path = str(tmp_path / "config.yaml")
    cli.common.write_config(args, path)
    again, _ = cli.parse_args(["train", "--config", path])
    assert cli.common.config_values(train_command.resolve(again)) == cli.common.config_values(args)
    assert again.decay_epochs == [3, 5] and again.export_dir == "" and again.run_dir == str(tmp_path / "run")
    # Flags given with --config win.
    changed, _ = cli.parse_args(["train", "--config", path, "--image-size", "256", "--head", "gfl"])
    assert (changed.image_size, changed.head, changed.decay_epochs) == (256, "gfl", [3, 5])
    # The defaults name the main job's run.
    default, _ = cli.parse_args(["train"])
    train_command.resolve(default)
    assert (default.run_dir, default.export_dir) == (os.path.join("runs", "shapes_gfl"),
                                                     os.path.join("saved_models", "shapes_gfl"))


@pytest.mark.parametrize("argv, message", [
    (["train", "--bogus"], "unrecognized arguments: --bogus"),
    (["train", "--head", "nope"], "argument --head: invalid choice: 'nope'"),
    (["train", "--image-size", "big"], "argument --image-size: invalid int value: 'big'"),
    (["train", "--dataset", "no/such/instances.json"], "argument --dataset: no/such/instances.json does not exist"),
    (["train", "--dataset", "__file__", "--image-dir", "no/such/images"],
     "argument --image-dir: no/such/images does not exist"),
    (["train", "--data", "no/such/data.yaml"], "argument --data: no/such/data.yaml does not exist"),
    (["train", "--data", "__file__", "--dataset", "coco/2017"], "argument --data: not allowed with --dataset"),
    (["train", "--dataset", "cocoa"], "argument --dataset: Unknown dataset 'cocoa'"),
    (["train", "--eval-dataset", "no/such/val.json"], "argument --eval-dataset: no/such/val.json does not exist"),
    (["evaluate", "--model", "no/such/model.keras"], "argument --model: no/such/model.keras does not exist"),
    (["evaluate"], "argument --model: required"),
    (["predict", "--model", "__file__", "--images", "no/such.jpg"], "argument --images: no/such.jpg does not exist"),
    (["export", "--checkpoint", "no/such/model.keras"], "argument --checkpoint: no/such/model.keras does not exist"),
    (["inspect", "--dataset", "no/such/data.yaml"], "argument --dataset: no/such/data.yaml does not exist"),
    (["convert", "no/such.pth"], "argument checkpoint: no/such.pth does not exist"),
    (["train", "--config", "__config__"], "unknown setting 'colour'"),
])
def test_bad_arguments_exit_2_naming_them(argv, message, tmp_path, capsys):
    (tmp_path / "bad.yaml").write_text("image_size: 64\ncolour: red\n")
    argv = [str(tmp_path / "bad.yaml") if a == "__config__" else __file__ if a == "__file__" else a for a in argv]
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_encode_placement_refuses_the_pipeline_for_a_dynamic_assigner():
    from types import SimpleNamespace

    from keras_focal.training.placement import encode_placement

    static = SimpleNamespace(detection_head=SimpleNamespace(assigner=SimpleNamespace()))
    dynamic = SimpleNamespace(detection_head=SimpleNamespace(assigner=SimpleNamespace(needs_predictions=True)))
    assert encode_placement("auto", model=static) == "model"
    assert encode_placement("auto", data_service="grpc://host:5050", model=static) == "pipeline"
    assert encode_placement("pipeline", model=static) == "pipeline"
    assert encode_placement("auto", data_service="grpc://host:5050", model=dynamic) == "model"
    with pytest.raises(ValueError, match="--encode-in pipeline: .* assigns anchors from the model's own predictions"):
        encode_placement("pipeline", model=dynamic)


def test_convert_then_export_and_predict(tmp_path, monkeypatch):
    from _own_data import write_image
    from _tiny import tiny_model

    calls = []

    def from_torchvision(checkpoint, variant, num_classes=None, image_size=None, **kwargs):
        calls.append((checkpoint, variant, num_classes, image_size, kwargs))
        return tiny_model(num_classes=num_classes or 3, **kwargs)

    monkeypatch.setattr(keras_focal.models, "from_torchvision", from_torchvision)
    checkpoint = tmp_path / "retinanet.pth"
    checkpoint.write_bytes(b"")
    output = cli.main(["convert", str(checkpoint), "--num-classes", "2", "--class-names", "a", "b",
                       "--variant", "retinanet_resnet50_fpn_v2", "--image-size", "640"])
    assert output == str(tmp_path / "retinanet.keras") and os.path.exists(output)
    assert calls == [(str(checkpoint), "retinanet_resnet50_fpn_v2", 2, (640, 640), {"class_names": ["a", "b"]})]
    assert keras_focal.evaluation.load_detector(output).class_names == ("a", "b")

    version = cli.main(["export", "--checkpoint", output, "--export-dir", str(tmp_path / "served"), "--version", "5",
                        "--score-threshold", "0.3", "--max-image-pixels", "1000000", "--max-batch-size", "4"])
    assert version == str(tmp_path / "served" / "5") and os.path.exists(os.path.join(version, "saved_model.pb"))
    assert (tmp_path / "served" / "5" / "assets" / "labels.txt").read_text() == "a\nb\n"
    assert keras_focal.export.layout.read_input_limits(version) == {"max_image_pixels": 1000000, "max_batch_size": 4}

    for name, width in (("x.jpg", 80), ("y.png", 48)):
        write_image(str(tmp_path / "photos" / name), width, 64)
    found = cli.main(["predict", "--model", output, "--images", str(tmp_path / "photos"), "--score-threshold", "0",
                      "--output-dir", str(tmp_path / "pred")])
    assert sorted(os.path.basename(p) for p in found) == ["x.png", "y.png"]
    assert {name for detections in found.values() for name, _ in detections} <= {"a", "b"}


def test_examples_compile():
    # The teaching scripts run their work under `if __name__ == "__main__"`; here they are compiled (and the custom
    # head's module imported: its registration is real code).
    for name in ("ten_line_detector", "fine_tune_torchvision", "custom_head", "serve_client"):
        path = ROOT / "examples" / f"{name}.py"
        compile(path.read_text(), str(path), "exec")
    for name in ("train", "evaluate", "predict", "export", "inspect_dataset"):
        assert not (ROOT / "examples" / f"{name}.py").exists(), f"examples/{name}.py is `keras-focal` now"


class _Stub:
    """A SavedModel with the contract's serving_default signature: one fixed detection per image."""

    @staticmethod
    def save(path):
        import tensorflow as tf

        class Stub(tf.Module):
            @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")])
            def serve(self, images):
                b = tf.shape(images)[0]
                return {"detection_boxes": tf.tile(tf.constant([[[0.25, 0.25, 0.75, 0.75]]]), [b, 1, 1]),
                        "detection_scores": tf.fill([b, 1], 0.9),
                        "detection_classes": tf.zeros([b, 1], tf.float32),
                        "num_detections": tf.fill([b], 1)}

        m = Stub()
        tf.saved_model.save(m, path, signatures={"serving_default": m.serve})


def test_evaluate_and_predict_on_a_tfds_dataset(tmp_path):
    import keras_focal.data as kd

    _Stub.save(str(tmp_path / "stub" / "1"))
    data_dir = str(tmp_path / "tfds")
    kd.build_shapes_dataset(data_dir, config="small")
    metrics = cli.main(["evaluate", "--model", str(tmp_path / "stub"), "--dataset", "keras_focal_shapes/small",
                        "--data-dir", data_dir, "--max-images", "6", "--output-json", str(tmp_path / "m.json")])
    assert 0.0 <= metrics["AP"] < 0.5 and os.path.exists(tmp_path / "m.json")
    out = tmp_path / "pred"
    cli.main(["predict", "--model", str(tmp_path / "stub"), "--dataset", "keras_focal_shapes/small", "--split",
              "test", "--data-dir", data_dir, "--num-images", "2", "--output-dir", str(out), "--show-ground-truth"])
    assert sorted(os.listdir(out)) == ["test_0000.png", "test_0001.png"]
