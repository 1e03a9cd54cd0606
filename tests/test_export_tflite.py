"""The `.tflite` export, run in the LiteRT interpreter: float32 gives the SavedModel's detections, the quantized
files run and are smaller, bad input names the expected one, and the file appears atomically.

One model for the module: the tiny backbone with a 128-channel FPN and head, so that the file is dominated by
weights (about 1.4M parameters, 6 MB in float32) and the size ratios of the quantized forms mean something. Its
class-logit bias is moved up and its kernel scaled, so that the random network gives a full set of detections.
Their scores lie close together (gaps down to 1e-7, the size of float rounding), so detections are matched one to
one within the tolerance rather than compared row by row: the order of near-ties is not compared.
"""

import os

import numpy as np
import pytest
import tensorflow as tf

from _tiny import tiny_backbone

IMAGE_SIZE = (128, 128)


def _images(batch, seed, size=IMAGE_SIZE):
    return np.random.default_rng(seed).integers(0, 256, size=(batch, *size, 3), dtype=np.uint8)


def _unmatched(expected, got, image_size):
    """Detections of `expected` with no partner in `got` (same class, score within 1e-3, box within 0.5 px)."""
    scale = np.array(image_size * 2, np.float32)  # (h, w, h, w): yxyx in pixels
    missing = []
    for b in range(len(expected["num_detections"])):
        free = np.ones(int(got["num_detections"][b]), bool)
        for i in range(int(expected["num_detections"][b])):
            n = len(free)
            partner = (free & (got["detection_classes"][b, :n] == expected["detection_classes"][b, i])
                       & (np.abs(got["detection_scores"][b, :n] - expected["detection_scores"][b, i]) <= 1e-3)
                       & np.all(np.abs(got["detection_boxes"][b, :n] - expected["detection_boxes"][b, i]) * scale
                                <= 0.5, axis=1))
            if partner.any():
                free[np.argmax(partner)] = False
            else:
                missing.append((b, i))
    return missing


@pytest.fixture(scope="module")
def model():
    import keras

    from keras_focal.models import RetinaNet

    keras.utils.set_random_seed(7)  # module fixtures run before the per-test seed of conftest.py
    model = RetinaNet(3, backbone=tiny_backbone(), fpn_width=128, head_convs=2, image_size=IMAGE_SIZE)
    logits = model.get_layer("class_subnet_logits")
    logits.kernel.assign(logits.kernel.numpy() * 30.0)
    logits.bias.assign(np.full(logits.bias.shape, -2.0, "float32"))
    return model


@pytest.fixture(scope="module")
def exports(model, tmp_path_factory):
    from keras_focal.export import export_tflite, tflite

    folder = tmp_path_factory.mktemp("tflite")
    traced = tflite.trace(model)  # one trace, three conversions
    return {q: export_tflite(model, str(folder / f"tiny_{q or 'float32'}.tflite"), quantization=q, traced=traced)
            for q in (None, "float16", "dynamic")}


def test_float32_gives_the_saved_models_detections(model, exports):
    from keras_focal.export import DetectionServingModule, TFLiteDetector

    # The SavedModel's serving_default function, run in process: saving it adds nothing to the numbers, and
    # test_export.py checks that the saved and loaded signature gives these same detections.
    module = DetectionServingModule(model)
    detector = TFLiteDetector(exports[None])
    assert detector.image_size == IMAGE_SIZE
    images = _images(2, seed=0)
    expected = {k: v.numpy() for k, v in module.serve_images(tf.constant(images)).items()}
    got = detector(images)
    assert int(expected["num_detections"].min()) == 100, "nothing to compare: raise the class bias"
    assert got["detection_classes"].dtype == np.int32 and got["num_detections"].dtype == np.int32
    assert got["detection_boxes"].dtype == np.float32 and got["detection_boxes"].shape == (2, 100, 4)
    np.testing.assert_array_equal(got["num_detections"], expected["num_detections"])
    assert _unmatched(expected, got, IMAGE_SIZE) == []
    np.testing.assert_allclose(got["detection_scores"], expected["detection_scores"], atol=1e-3, rtol=0)
    assert np.all(np.diff(got["detection_scores"], axis=1) <= 0), "scores not sorted descending"


def test_only_builtin_ops_and_the_signature(exports):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=exports[None])
    assert interpreter.get_signature_list() == {"serving_default": {
        "inputs": ["images"],
        "outputs": ["detection_boxes", "detection_classes", "detection_scores", "num_detections"]}}
    (image,) = interpreter.get_signature_runner("serving_default").get_input_details().values()
    assert image["dtype"] == np.uint8 and list(image["shape"]) == [1, *IMAGE_SIZE, 3]
    ops = {op["op_name"] for op in interpreter._get_ops_details()}
    assert not [op for op in ops if op.startswith("Flex") or op == "CUSTOM"], ops
    assert {"NON_MAX_SUPPRESSION_V5", "TFLite_Detection_PostProcess"}.isdisjoint(ops) and "WHILE" in ops


@pytest.mark.parametrize("quantization, max_ratio", [("float16", 0.6), ("dynamic", 0.35)])
def test_quantized_files_run_and_are_smaller(exports, quantization, max_ratio):
    from keras_focal.export import TFLiteDetector

    ratio = os.path.getsize(exports[quantization]) / os.path.getsize(exports[None])
    assert ratio <= max_ratio, f"{quantization}: {ratio:.2f} of the float32 file"
    images = _images(1, seed=1)
    reference = TFLiteDetector(exports[None])(images)
    got = TFLiteDetector(exports[quantization], num_threads=2)(images)
    assert got["detection_boxes"].shape == (1, 100, 4) and got["detection_classes"].dtype == np.int32
    assert int(got["num_detections"][0]) == 100
    scores = got["detection_scores"][0]
    assert np.all(np.diff(scores) <= 1e-6) and np.all((got["detection_boxes"] >= 0) & (got["detection_boxes"] <= 1))
    # Quantization moves the scores a little; the best detection stays the same object.
    np.testing.assert_allclose(scores[0], reference["detection_scores"][0, 0], atol=0.02)


def test_wrong_input_names_the_expected_one(exports):
    from keras_focal.export import TFLiteDetector

    detector = TFLiteDetector(exports[None])
    with pytest.raises(ValueError, match=r"uint8 \[B, 128, 128, 3\].*got shape \[1, 96, 128, 3\]"):
        detector(_images(1, seed=2, size=(96, 128)))
    with pytest.raises(ValueError, match=r"uint8 \[B, 128, 128, 3\].*got dtype float32"):
        detector(_images(1, seed=2).astype(np.float32))
    with pytest.raises(ValueError, match=r"got shape \[128, 128, 3\]"):
        detector(_images(1, seed=2)[0])
    with pytest.raises(FileNotFoundError, match="missing.tflite"):
        TFLiteDetector(os.path.join(os.path.dirname(exports[None]), "missing.tflite"))


def test_export_is_atomic(model, tmp_path, monkeypatch):
    from keras_focal.export import export_tflite, tflite

    with pytest.raises(ValueError, match="quantization must be one of"):
        export_tflite(model, str(tmp_path / "x.tflite"), quantization="int4")
    previous = tmp_path / "model.tflite"
    previous.write_bytes(b"previous version")

    def failing_write(file, data):
        file.write(data[:10])
        raise OSError("disk full")

    monkeypatch.setattr(tflite, "convert_tflite", lambda model, *args: b"0123456789" * 100)
    monkeypatch.setattr(tflite, "_write_bytes", failing_write)
    with pytest.raises(OSError, match="disk full"):
        export_tflite(model, str(previous))
    assert previous.read_bytes() == b"previous version"
    assert os.listdir(tmp_path) == ["model.tflite"], "temporary file left behind"


def test_load_detector_runs_a_tflite_file_on_float_batches(exports):
    import keras_focal.evaluation as ke
    from keras_focal.export import TFLiteDetector

    detector = ke.load_detector(exports[None])
    assert isinstance(detector, TFLiteDetector) and detector.image_size == IMAGE_SIZE
    images = _images(2, seed=3)
    # evaluate_model and examples/predict.py feed resized float images; they are rounded to uint8 as for a SavedModel.
    got = ke.detection_fn(detector)(tf.constant(images.astype(np.float32) + 0.2))
    expected = detector(images)
    for name, value in expected.items():
        np.testing.assert_array_equal(got[name], value)
