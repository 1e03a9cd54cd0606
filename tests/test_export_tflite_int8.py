"""Full-integer TFLite export (`quantization="int8"`) and the letterbox inside the file (`input_size=`).

One model for the module: the tiny backbone, a 16-channel FPN and one-conv RetinaNet head, `letterbox=True`,
trained for a few steps on eight built-in-dataset images so that it detects something (int8 is compared with
float32 on what the model finds, which a random network does not). It is converted three times: float32 and int8
at the model's size, and float32 at a camera size with the letterbox inside.
"""

import numpy as np
import pytest
import tensorflow as tf

from _tiny import padded_targets, tiny_backbone

IMAGE_SIZE = (128, 128)
CAMERA_SIZE = (72, 128)  # 16:9; the letterbox scale is 1, so the reference frames are exact whole pixel values
NUM_CLASSES = 5  # the built-in dataset's


def _shapes(start, count):
    from keras_focal.data import generate_example
    from keras_focal.data.shapes_dataset import ShapesConfig

    config = ShapesConfig(name="int8", max_objects=3, min_object_size=24, max_object_size=64)
    images, boxes, classes = [], [], []
    index = start
    while len(images) < count:
        image, b, c = generate_example("train", index, config)
        index += 1
        if len(b):
            images.append(image)
            boxes.append(b)
            classes.append(c)
    return np.stack(images), boxes, classes


def _calibration_images():
    """100 uint8 images of other sizes than the model's (crops and flips of 25 generated ones): the export resizes
    them as the model's input is (here, by letterbox)."""
    images, _, _ = _shapes(100, 25)
    return ([im for im in images] + [im[:, ::-1] for im in images] + [im[16:, :96] for im in images]
            + [im[:112, 8:] for im in images])


def _iou(a, b):
    """float64 IoU of yxyx boxes a [N, 4] and b [M, 4] -> [N, M] (the NumPy reference)."""
    a, b = np.asarray(a, np.float64)[:, None], np.asarray(b, np.float64)[None]
    h = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    w = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = h * w
    area = lambda x: (x[..., 2] - x[..., 0]) * (x[..., 3] - x[..., 1])  # noqa: E731
    return inter / np.maximum(area(a) + area(b) - inter, 1e-12)


def _matched_share(reference, got, top, min_iou=0.5):
    """Share of the `top` best detections of `reference` (per image) with a detection of the same class in `got`
    at IoU >= min_iou."""
    matched = total = 0
    for b in range(len(reference["num_detections"])):
        n_ref = min(int(reference["num_detections"][b]), top)
        n_got = int(got["num_detections"][b])
        if not n_ref:
            continue
        iou = _iou(reference["detection_boxes"][b, :n_ref], got["detection_boxes"][b, :n_got])
        same = reference["detection_classes"][b, :n_ref, None] == got["detection_classes"][b, None, :n_got]
        matched += int(np.sum(np.any((iou >= min_iou) & same, axis=1)))
        total += n_ref
    return matched / max(total, 1)


@pytest.fixture(scope="module")
def trained():
    import keras

    from keras_focal.models import RetinaNet

    keras.utils.set_random_seed(3)
    images, boxes, classes = _shapes(0, 8)
    targets = padded_targets(boxes, classes, max_boxes=3)
    model = RetinaNet(NUM_CLASSES, backbone=tiny_backbone(), fpn_width=16, head_convs=1, image_size=IMAGE_SIZE,
                      letterbox=True)
    model.compile(optimizer=keras.optimizers.Adam(3e-3, global_clipnorm=10.0))
    encoded = model.anchor_encoder(targets["boxes"], targets["classes"], *IMAGE_SIZE)
    data = tf.data.Dataset.from_tensors((images.astype("float32"), {**targets, **encoded})).repeat()
    model.fit(data, steps_per_epoch=150, epochs=1, verbose=0)
    return model


@pytest.fixture(scope="module")
def exports(trained, tmp_path_factory):
    from keras_focal.export import export_tflite

    folder = tmp_path_factory.mktemp("tflite_int8")
    decoder = trained.prediction_decoder
    config = decoder.get_config()
    files = {
        "float32": export_tflite(trained, str(folder / "float32.tflite")),
        "int8": export_tflite(trained, str(folder / "int8.tflite"), quantization="int8",
                              representative_data=_calibration_images()),
        "camera": export_tflite(trained, str(folder / "camera.tflite"), input_size=CAMERA_SIZE),
    }
    # The file's decoder is a copy: the model's own decoder is neither swapped nor modified.
    assert trained.prediction_decoder is decoder and decoder.get_config() == config
    return files


def test_int8_file_is_integer_from_the_input_through_the_head(exports):
    from ai_edge_litert.interpreter import Interpreter

    from keras_focal.export import tflite

    interpreter = Interpreter(model_path=exports["int8"])
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    runner = interpreter.get_signature_runner("serving_default")
    (image,) = runner.get_input_details().values()
    assert image["dtype"] == np.uint8 and list(image["shape"]) == [1, *IMAGE_SIZE, 3]
    assert image["quantization"] == (1.0, 0), "uint8 pixel p must mean the value p"
    ops = interpreter._get_ops_details()
    names = [op["op_name"] for op in ops]
    assert not [n for n in names if n.startswith("Flex") or n == "CUSTOM"], names
    convs = [op for op in ops if op["op_name"] == "CONV_2D"]
    assert len(convs) >= 10
    for op in convs:
        _, kernel, bias = (tensors[i] for i in op["inputs"])
        assert kernel["dtype"] == np.int8 and bias["dtype"] == np.int32, tensors[op["outputs"][0]]["name"]
        assert tensors[op["inputs"][0]]["dtype"] == np.int8 and tensors[op["outputs"][0]]["dtype"] == np.int8
    # One QUANTIZE (the uint8 input) and one DEQUANTIZE per head output (class logits, box outputs): nothing
    # between goes back to float.
    assert names.count("QUANTIZE") == 1 and names[0] == "QUANTIZE"
    assert names.count("DEQUANTIZE") == 2
    summary = tflite.op_summary(exports["int8"])
    assert {"CONV_2D", "RESIZE_BILINEAR", "ADD"} <= set(summary["integer"]), summary
    assert {"WHILE", "TOPK_V2", "LOGISTIC"} <= set(summary["float"]), summary
    out = runner(images=_shapes(200, 1)[0])
    assert out["detection_boxes"].dtype == np.float32 and out["detection_boxes"].shape == (1, 100, 4)
    assert out["detection_classes"].dtype == np.int32 and out["num_detections"].dtype == np.int32


def test_int8_detections_overlap_float32(exports):
    from keras_focal.export import TFLiteDetector

    images, _, _ = _shapes(300, 12)
    reference = TFLiteDetector(exports["float32"])(images)
    got = TFLiteDetector(exports["int8"])(images)
    assert int(reference["num_detections"].min()) >= 5, "nothing to compare: train longer"
    share = _matched_share(reference, got, top=5)
    # Measured 0.98 (59 of the 60 top-5 detections; top 1: 1.0, top 10: 0.94; at IoU >= 0.7: 0.77). 0.8 leaves room
    # for other CPUs' rounding, and the int8 boxes shifted by a fifth of the image width give 0.65, below it.
    assert share >= 0.8, share
    shifted = {**got, "detection_boxes": got["detection_boxes"] + np.array([0.0, 0.2, 0.0, 0.2], np.float32)}
    assert _matched_share(reference, shifted, top=5) < 0.8


def test_representative_data_missing_or_empty_names_what_to_pass(trained, tmp_path):
    from keras_focal.export import calibration, export_tflite

    path = str(tmp_path / "x.tflite")
    for data in (None, [], tf.data.Dataset.from_tensor_slices(np.zeros((0, 8, 8, 3), np.uint8))):
        with pytest.raises(ValueError, match=r"representative_data.*tf\.data\.Dataset.*uint8 \[H, W, 3\]"):
            export_tflite(trained, path, quantization="int8", representative_data=data)
    with pytest.raises(ValueError, match=r"image 1 is float32, expected uint8"):
        export_tflite(trained, path, quantization="int8",
                      representative_data=[np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.float32)])
    with pytest.raises(ValueError, match="representative_data is for quantization='int8' only"):
        export_tflite(trained, path, quantization="dynamic", representative_data=[np.zeros((8, 8, 3), np.uint8)])
    with pytest.warns(UserWarning, match="int8 calibration on 2 images"):
        frames = calibration.calibration_images([np.full((64, 32, 3), 7, np.uint8)] * 2, IMAGE_SIZE,
                                                letterbox=True)
    # Letterboxed as the model's input is: the image scaled by 2 at the top left, the rest the mean colour.
    assert frames[0].shape == (1, *IMAGE_SIZE, 3) and frames[0].dtype == np.float32
    np.testing.assert_array_equal(frames[0][0, :, :64], 7.0)
    np.testing.assert_array_equal(frames[0][0, :, 64:], np.broadcast_to(np.round(
        np.array([0.485, 0.456, 0.406]) * 255.0), (128, 64, 3)))
    assert not (tmp_path / "x.tflite").exists()


def test_input_size_letterbox_equals_letterbox_and_the_fixed_size_file(exports):
    from keras_focal import letterbox as letterboxing
    from keras_focal.export import TFLiteDetector

    camera = TFLiteDetector(exports["camera"])
    fixed = TFLiteDetector(exports["float32"])
    assert camera.image_size == CAMERA_SIZE
    images, _, _ = _shapes(400, 3)
    frames = images[:, 28:100]  # [3, 72, 128, 3] camera frames
    got = camera(frames)
    letterboxed, content = letterboxing.letterbox(frames, IMAGE_SIZE)
    # The image rows are whole values (scale 1); the fixed-size file's uint8 input rounds the pad colour (123.675 ->
    # 124, ...), which the file with the letterbox inside keeps exact: the scores may differ by that much.
    np.testing.assert_array_equal(letterboxed.numpy()[:, :72], frames)
    expected = fixed(np.round(letterboxed.numpy()).astype(np.uint8))
    expected["detection_boxes"] = letterboxing.boxes_from_frame(expected["detection_boxes"], content).numpy()
    assert int(expected["num_detections"].min()) >= 1
    np.testing.assert_array_equal(got["num_detections"], expected["num_detections"])
    for b in range(len(frames)):
        n = int(expected["num_detections"][b])
        order = lambda out: np.lexsort((*out["detection_boxes"][b, :n].T, out["detection_classes"][b, :n]))  # noqa
        e, g = order(expected), order(got)
        np.testing.assert_array_equal(got["detection_classes"][b, g], expected["detection_classes"][b, e])
        np.testing.assert_allclose(got["detection_scores"][b, g], expected["detection_scores"][b, e], atol=5e-3)
        np.testing.assert_allclose(got["detection_boxes"][b, g], expected["detection_boxes"][b, e], atol=5e-3)
    # The reference can fail: the boxes left in frame coordinates differ.
    frame_boxes = expected["detection_boxes"] * np.tile(content.numpy(), 2)[:, None]
    assert np.abs(frame_boxes - got["detection_boxes"]).max() > 0.05


def test_command_line_int8_needs_data(capsys):
    from keras_focal import cli

    for argv in (["--quantization", "int8"], ["--quantization", "dynamic", "--data", "shapes"]):
        with pytest.raises(SystemExit) as stopped:
            cli.main(["export", "--format", "tflite", *argv])
        assert stopped.value.code == 2
        assert "argument --data: needed with --quantization int8" in capsys.readouterr().err
