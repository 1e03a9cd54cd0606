"""`export_tflite`: the whole detector in one `.tflite` file for the LiteRT interpreter, and `TFLiteDetector` to run it.

The file holds the same path as the SavedModel's `serving_default` (`keras_focal.export.serving`):

    images uint8 [1, H, W, 3] -> float32 -> normalisation -> backbone, FPN, heads
        -> box decoding -> top-k per level -> score threshold -> class-aware NMS
        -> {"detection_boxes" float32 [1, N, 4] normalized yxyx, "detection_scores" float32 [1, N],
            "detection_classes" int32 [1, N], "num_detections" int32 [1]}

with (H, W) = `model.image_size`, fixed: a TFLite input has a static shape, so the caller resizes (the boxes are
normalized, so they hold for the original image whatever its size).

NMS. Only TFLite builtin ops are allowed (`OpsSet.TFLITE_BUILTINS`, no Flex delegate), and
`tf.image.combined_non_max_suppression`, the decoder's default, has no TFLite kernel. The graph is therefore traced
with the decoder's `nms_method="padded"`: one `tf.image.non_max_suppression_padded` over all classes, each class's
boxes shifted by 2 * class id so that boxes of different classes never overlap. It lowers to TFLite builtins
(a WHILE loop, GATHER, TOPK_V2) and is the decoder's own code: the same per-level top-k, score threshold and greedy
per-class suppression as the SavedModel's combined NMS, so float32 gives its detections (all of them on the trained
model's validation images, `benchmarks/tflite.py`).
The other way, TFLite's `TFLite_Detection_PostProcess` custom op, was measured with `benchmarks/tflite.py --nms
postprocess` (decoded boxes passed as centre-size encodings against a unit anchor): with per-class ("regular") NMS it
kept all the SavedModel's detections on the trained GFL model and on a random RetinaNet, and ran about 1.2x faster;
its class-agnostic "fast" NMS kept 37% of them and lost 2 AP. It is not used because it re-implements decoding
outside the decoder (box encodings, no per-level top-k, its own threshold rule), needs `allow_custom_ops`, and
returns classes and counts as float32 where the SavedModel returns int32.

Quantization (`quantization=`):
- None: float32, gives the SavedModel's detections;
- "float16": weights stored as float16 (about half the file), computed in float32 on CPU;
- "dynamic": dynamic-range int8, weights stored as int8 (about a quarter of the file), activations quantized on
  the fly in the convolutions.
"""

import contextlib
import os
import tempfile

import numpy as np
import tensorflow as tf

from keras_focal.export import serving

QUANTIZATIONS = (None, "float16", "dynamic")
SIGNATURE = serving.SIGNATURE_IMAGES  # "serving_default"
TFLITE_NMS_METHOD = "padded"


@contextlib.contextmanager
def _nms_method(model, method):
    """Traces `model.detect` with its prediction decoder's `nms_method` set to `method`, then restores it (every
    other decoding setting is the model's)."""
    decoder = model.prediction_decoder
    previous = decoder.nms_method
    decoder.nms_method = method
    try:
        yield
    finally:
        decoder.nms_method = previous


class TFLiteServingModule(serving.DetectionServingModule):
    """The serving module with one more entry point: uint8 `images` [1, H, W, 3] at `model.image_size`."""

    def tflite_function(self):
        """The concrete function to convert: the `serving_default` path at a fixed input shape."""
        spec = tf.TensorSpec([1, *self.image_size, 3], tf.uint8, name=serving.IMAGES)

        def serve_fixed_size(images):
            return self._detect(self._resize(images))

        return tf.function(serve_fixed_size, input_signature=[spec]).get_concrete_function()


def _converter(concrete_function, module, quantization):
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete_function], module)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantization == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantization == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    return converter


def trace(model):
    """(module, concrete function) of `model`'s fixed-size serving path, with the TFLite NMS; one trace can be
    converted several times (`convert_tflite(..., traced=...)`), e.g. to each quantization."""
    module = TFLiteServingModule(model)
    with _nms_method(model, TFLITE_NMS_METHOD):
        return module, module.tflite_function()


def convert_tflite(model, quantization=None, traced=None):
    """The `.tflite` flatbuffer (bytes) of `model`, from `traced` (`trace(model)`) if given; see `export_tflite`."""
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization must be one of {QUANTIZATIONS}, got {quantization!r}")
    module, concrete_function = traced or trace(model)
    try:
        return _converter(concrete_function, module, quantization).convert()
    except Exception as error:  # the converter raises ConverterError, a plain Exception subclass
        raise RuntimeError(f"TFLite conversion of {model.name} failed (TFLite builtin ops only, no Flex delegate): "
                           f"{error}") from error


def _write_bytes(file, data):
    file.write(data)
    file.flush()
    os.fsync(file.fileno())


def _write_atomically(data, path):
    """Writes `data` to a temporary file next to `path`, then renames it onto `path` (rename(2) is atomic)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp_path = tempfile.mkstemp(prefix=".tmp-", suffix=".tflite", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            _write_bytes(f, data)
        os.chmod(tmp_path, 0o644)  # mkstemp makes it 0600
        os.replace(tmp_path, path)
    except BaseException:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
        raise


def export_tflite(model, path, quantization=None, traced=None):
    """Writes `model` as one `.tflite` file, normalisation, decoding and NMS included, and returns `path`.

    Args:
        model: a `keras_focal.models.RetinaNet` (anything with `detect(images)`, `image_size` and a
            `prediction_decoder` with `nms_method`).
        path: the file to write, e.g. `exports/shapes_gfl.tflite`. It appears complete or not at all (written to a
            temporary file in the same folder, then renamed); an existing file is replaced.
        quantization: None (float32), "float16" (float16 weights) or "dynamic" (dynamic-range int8 weights).
        traced: `trace(model)`, to export several quantizations of one model without tracing it each time.

    Signature `serving_default`: input `images` uint8 [1, H, W, 3] with (H, W) = `model.image_size`; outputs
    `detection_boxes` float32 [1, N, 4] normalized yxyx, `detection_scores` float32 [1, N] sorted descending,
    `detection_classes` int32 [1, N], `num_detections` int32 [1]. Runs in the LiteRT interpreter
    (`ai_edge_litert.interpreter.Interpreter`) without the Flex delegate; `TFLiteDetector` wraps it.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path} is a directory; export_tflite writes one file (e.g. {path}/model.tflite)")
    _write_atomically(convert_tflite(model, quantization, traced), path)
    return path


def _interpreter_class():
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # the interpreter that ships with TensorFlow, where ai-edge-litert is not installed
        Interpreter = tf.lite.Interpreter
    return Interpreter


class TFLiteDetector:
    """Runs a `.tflite` file written by `export_tflite` in the LiteRT interpreter.

        detector = TFLiteDetector("shapes_gfl.tflite", num_threads=2)
        out = detector(images)   # uint8 [B, H, W, 3] at detector.image_size -> dict of numpy arrays

    The file takes one image per call; `detector(images)` runs the B images in turn and stacks the outputs to
    `detection_boxes` [B, N, 4], `detection_scores` [B, N], `detection_classes` [B, N], `num_detections` [B].
    `detector.signatures["serving_default"](images=...)` is the same call under the name a loaded SavedModel
    uses, so `keras_focal.evaluation.detection_fn` / `evaluate_model` accept a TFLiteDetector.
    """

    def __init__(self, path, num_threads=None):
        self.path = os.fspath(path)
        if not os.path.isfile(self.path):
            raise FileNotFoundError(f"{self.path}: no such .tflite file")
        self.interpreter = _interpreter_class()(model_path=self.path, num_threads=num_threads)
        signatures = self.interpreter.get_signature_list()
        if SIGNATURE not in signatures or signatures[SIGNATURE]["inputs"] != [serving.IMAGES]:
            raise ValueError(f"{self.path}: expected a signature {SIGNATURE!r} with one input {serving.IMAGES!r} "
                             f"(a file written by keras_focal.export.export_tflite), got {signatures}")
        self._runner = self.interpreter.get_signature_runner(SIGNATURE)
        details = self._runner.get_input_details()[serving.IMAGES]
        self.input_shape = tuple(int(s) for s in details["shape"])
        self.input_dtype = np.dtype(details["dtype"])
        self.image_size = self.input_shape[1:3]
        self.signatures = {SIGNATURE: self._serve}

    def _expected(self):
        return f"{self.input_dtype.name} [B, {self.image_size[0]}, {self.image_size[1]}, 3]"

    def __call__(self, images):
        images = np.asarray(images)
        if images.dtype != self.input_dtype:
            raise ValueError(f"{self.path}: `images` must be {self._expected()} (RGB values 0-255), got dtype "
                             f"{images.dtype.name}; cast with np.asarray(images, np.{self.input_dtype.name})")
        if images.ndim != 4 or tuple(images.shape[1:]) != (*self.image_size, 3) or images.shape[0] < 1:
            raise ValueError(f"{self.path}: `images` must be {self._expected()} (the model's input size), got shape "
                             f"{list(images.shape)}; resize the images to {self.image_size[0]}x{self.image_size[1]}")
        outputs = [self._runner(**{serving.IMAGES: image[np.newaxis]}) for image in images]
        return {name: np.concatenate([o[name] for o in outputs], axis=0) for name in serving.OUTPUT_DTYPES}

    def _serve(self, images):
        return self(np.asarray(images))
