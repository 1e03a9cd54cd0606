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


def _assert_same_detections(expected, got, score_threshold, tolerance):
    """Every detection of one output is in the other (same class, score and box within `tolerance`), but for one
    scored within `tolerance` of the score threshold, which rounding may put on either side."""
    for b in range(len(expected["num_detections"])):
        for one, other in ((expected, got), (got, expected)):
            n = int(other["num_detections"][b])
            for i in np.flatnonzero(one["detection_scores"][b, :int(one["num_detections"][b])]
                                    >= score_threshold + tolerance):
                close = ((other["detection_classes"][b, :n] == one["detection_classes"][b, i])
                         & (np.abs(other["detection_scores"][b, :n] - one["detection_scores"][b, i]) <= tolerance)
                         & np.all(np.abs(other["detection_boxes"][b, :n] - one["detection_boxes"][b, i])
                                  <= tolerance, axis=1))
                assert close.any(), (b, i, one["detection_scores"][b, i], one["detection_boxes"][b, i])


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
    from keras_focal.export import export_tflite, tflite

    folder = tmp_path_factory.mktemp("tflite_int8")
    decoder = trained.prediction_decoder
    config = decoder.get_config()
    traced = tflite.trace(trained, quantization="int8")  # a float32 input, which the int8 converter makes uint8
    files = {
        "float32": export_tflite(trained, str(folder / "float32.tflite")),
        "int8": export_tflite(trained, str(folder / "int8.tflite"), quantization="int8", traced=traced,
                              representative_data=_calibration_images()),
        "camera": export_tflite(trained, str(folder / "camera.tflite"), input_size=CAMERA_SIZE),
        "float32_input": str(folder / "float32_input.tflite"),
    }
    # The same trace not quantized: the float32 file with a float32 input (takes frames that are not whole values).
    with open(files["float32_input"], "wb") as f:
        f.write(tflite._converter(traced[1], traced[0], None).convert())
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


def test_input_size_letterbox_equals_letterbox_and_the_fixed_size_file(trained, exports):
    from keras_focal import letterbox as letterboxing
    from keras_focal.export import TFLiteDetector

    camera = TFLiteDetector(exports["camera"])
    fixed = TFLiteDetector(exports["float32_input"])
    assert camera.image_size == CAMERA_SIZE
    images, _, _ = _shapes(400, 3)
    frames = images[:, 28:100]  # [3, 72, 128, 3] camera frames
    got = camera(frames)
    letterboxed, content = letterboxing.letterbox(frames, IMAGE_SIZE)
    # The image rows are whole values (scale 1), the pad is the mean colour (123.675, ...), which a uint8 input would
    # round: the fixed-size file here takes float32, so it gets the frame the file with the letterbox inside makes.
    np.testing.assert_array_equal(letterboxed.numpy()[:, :72], frames)
    expected = fixed(letterboxed.numpy())
    expected["detection_boxes"] = letterboxing.boxes_from_frame(expected["detection_boxes"], content).numpy()
    assert int(expected["num_detections"].min()) >= 1
    # Equal up to float rounding (the same graph but for the resize and the mapping of the boxes back).
    _assert_same_detections(expected, got, trained.prediction_decoder.score_threshold, tolerance=1e-4)
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


# ------------------------------------------------------------------------------ GroupNorm heads (GFL)
#
# An untrained tiny GFL model (its towers: conv, GroupNorm, ReLU) with random GroupNorm scales and offsets and a
# class conv without the prior bias, so that its scores spread over (0, 1) and it detects something to compare.
# FPN width 64: 32 groups of 2 channels, so the group means are means over more than one channel.

def _group_norm_reference(x, groups, gamma, beta, epsilon):
    """float64 NumPy GroupNorm of x [B, H, W, C] over consecutive blocks of C / groups channels."""
    x = np.asarray(x, np.float64)
    b, h, w, c = x.shape
    g = x.reshape(b, h, w, groups, c // groups)
    mean = g.mean(axis=(1, 2, 4), keepdims=True)
    variance = ((g - mean) ** 2).mean(axis=(1, 2, 4), keepdims=True)
    return ((g - mean) / np.sqrt(variance + epsilon)).reshape(b, h, w, c) * gamma + beta


@pytest.fixture(scope="module")
def gfl():
    import keras

    from keras_focal.models import RetinaNet

    keras.utils.set_random_seed(5)
    model = RetinaNet(NUM_CLASSES, backbone=tiny_backbone(), head="gfl", fpn_width=64, head_convs=1,
                      image_size=IMAGE_SIZE)
    rng = np.random.default_rng(5)
    for layer in model._flatten_layers():
        if isinstance(layer, keras.layers.GroupNormalization):
            layer.gamma.assign(rng.uniform(0.5, 1.5, layer.gamma.shape))
            layer.beta.assign(rng.normal(0.0, 0.3, layer.beta.shape))
        if layer.name == "class_subnet_logits":
            layer.kernel.assign(rng.normal(0.0, 0.05, layer.kernel.shape))
            layer.bias.assign(np.zeros(layer.bias.shape))
    return model


@pytest.fixture(scope="module")
def gfl_exports(gfl, tmp_path_factory):
    from keras_focal.export import export_tflite, tflite

    folder = tmp_path_factory.mktemp("tflite_gfl")
    # One trace for both files: the int8 trace (GroupNorm as group_norm_4d, a float32 input), converted once
    # without quantization (float32 through, the proof that the formulation keeps the detections) and once to int8.
    traced = tflite.trace(gfl, quantization="int8")
    float32 = str(folder / "float32_4d.tflite")
    with open(float32, "wb") as f:
        f.write(tflite._converter(traced[1], traced[0], None).convert())
    with pytest.warns(UserWarning, match="int8 calibration on 25 images"):
        int8 = export_tflite(gfl, str(folder / "int8.tflite"), quantization="int8", traced=traced,
                             representative_data=_calibration_images()[:25])
    return {"float32_4d": float32, "int8": int8}


def test_group_norm_4d_equals_group_normalization(gfl):
    import keras

    from keras_focal.export import group_norm

    layer = keras.layers.GroupNormalization(groups=4, epsilon=1e-3)
    x = np.random.default_rng(0).normal(2.0, 3.0, (2, 5, 7, 16)).astype(np.float32)
    layer.build(x.shape)
    rng = np.random.default_rng(1)
    layer.gamma.assign(rng.uniform(0.5, 1.5, 16))
    layer.beta.assign(rng.normal(0.0, 1.0, 16))
    expected = _group_norm_reference(x, 4, layer.gamma.numpy(), layer.beta.numpy(), 1e-3)
    np.testing.assert_allclose(layer(x).numpy(), expected, atol=2e-5)
    got = group_norm.group_norm_4d(layer, tf.constant(x)).numpy()
    np.testing.assert_allclose(got, expected, atol=2e-5)
    # The reference can fail: groups of strided channels (0, 4, 8, ... together) instead of consecutive ones.
    strided = _group_norm_reference(x.reshape(2, 5, 7, 4, 4).swapaxes(3, 4).reshape(2, 5, 7, 16), 4, 1.0, 0.0,
                                    1e-3).reshape(2, 5, 7, 4, 4).swapaxes(3, 4).reshape(2, 5, 7, 16)
    assert np.abs(strided * layer.gamma.numpy() + layer.beta.numpy() - expected).max() > 0.1
    # The whole GFL model with every GroupNorm swapped: the same outputs; restored after the block.
    images = _shapes(500, 2)[0].astype(np.float32)
    before = gfl(images)
    with group_norm.integer_group_norm(gfl) as swapped:
        during = gfl(images)
    assert swapped == 2  # one per tower conv (class and box), shared across the levels
    for name in before:
        np.testing.assert_allclose(during[name].numpy(), before[name].numpy(), atol=1e-4, rtol=1e-4)
    assert not [layer for layer in gfl._flatten_layers() if "call" in layer.__dict__]


def test_gfl_float32_file_of_the_4d_group_norm_gives_the_models_detections(gfl, gfl_exports):
    from keras_focal.export import TFLiteDetector

    images = _shapes(600, 3)[0].astype(np.float32)  # the file has the int8 trace's float32 input
    expected = gfl.predict(images, verbose=0)
    got = TFLiteDetector(gfl_exports["float32_4d"])(images)
    assert int(expected["num_detections"].min()) >= 10, "nothing to compare"
    _assert_same_detections(expected, got, gfl.prediction_decoder.score_threshold, tolerance=1e-5)
    # The comparison can fail: the boxes moved by 1e-4 (a hundredth of a pixel) differ.
    with pytest.raises(AssertionError):
        _assert_same_detections(expected, {**got, "detection_boxes": got["detection_boxes"] + 1e-4},
                                gfl.prediction_decoder.score_threshold, tolerance=1e-5)


def test_gfl_int8_file_is_integer_from_the_input_through_the_group_norm_towers(gfl_exports):
    from ai_edge_litert.interpreter import Interpreter

    from keras_focal.export import tflite

    interpreter = Interpreter(model_path=gfl_exports["int8"])
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    ops = interpreter._get_ops_details()
    names = [op["op_name"] for op in ops]
    # One QUANTIZE (the uint8 input), one DEQUANTIZE per head output (class_logits, box_outputs), nothing else
    # converts between int8 and float; no op without an int8 kernel (Keras' GroupNorm: NEG, SQUARE), no TILE.
    assert names.count("QUANTIZE") == 1 and names[0] == "QUANTIZE"
    assert names.count("DEQUANTIZE") == 2
    assert not {"NEG", "SQUARE", "SQUARED_DIFFERENCE", "TILE"} & set(names), names
    summary = tflite.op_summary(gfl_exports["int8"])
    assert {"CONV_2D", "MEAN", "RSQRT", "SUB", "MUL", "RESIZE_NEAREST_NEIGHBOR"} <= set(summary["integer"]), summary
    assert not {"CONV_2D", "MEAN", "RSQRT", "RESIZE_NEAREST_NEIGHBOR"} & set(summary["float"]), summary
    # Every op before the DEQUANTIZEs (all their ancestors: input, backbone, FPN, towers, last head convolutions)
    # reads and writes int8 (uint8: the input), in at most 4 dimensions (the Edge TPU maps tensors with at most 3
    # dimensions larger than 1).
    producer = {t: i for i, op in enumerate(ops) for t in op["outputs"]}
    pending = [t for op in ops if op["op_name"] == "DEQUANTIZE" for t in op["inputs"]]
    ancestors = set()
    while pending:
        i = producer.get(pending.pop())
        if i is not None and i not in ancestors:
            ancestors.add(i)
            pending.extend(ops[i]["inputs"])
    assert {names[i] for i in ancestors} >= {"CONV_2D", "MEAN", "RSQRT", "QUANTIZE"}
    assert sum(names[i] == "CONV_2D" for i in ancestors) == names.count("CONV_2D")
    for i in ancestors:
        for t in [t for t in [*ops[i]["inputs"], *ops[i]["outputs"]] if t >= 0]:
            if tensors[t]["dtype"] != np.int32:  # int32: biases and shape operands
                assert tensors[t]["dtype"] == (np.uint8 if names[i] == "QUANTIZE" and t in ops[i]["inputs"]
                                               else np.int8), (names[i], tensors[t]["name"], tensors[t]["dtype"])
        for t in ops[i]["outputs"]:
            assert np.sum(np.asarray(tensors[t]["shape"]) > 1) <= 3, (names[i], tensors[t]["shape"])
