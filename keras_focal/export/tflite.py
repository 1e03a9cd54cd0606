"""`export_tflite`: the whole detector in one `.tflite` file for the LiteRT interpreter, and `TFLiteDetector` to run it.

The file holds the same path as the SavedModel's `serving_default` (`keras_focal.export.serving`):

    images uint8 [1, H, W, 3] -> float32 -> normalisation -> backbone, FPN, heads
        -> box decoding -> top-k per level -> score threshold -> class-aware NMS
        -> {"detection_boxes" float32 [1, N, 4] normalized yxyx, "detection_scores" float32 [1, N],
            "detection_classes" int32 [1, N], "num_detections" int32 [1]}

with (H, W) = `model.image_size` (or `input_size`), fixed: a TFLite input has a static shape, so the caller resizes
(the boxes are normalized, so they hold for the original image whatever its size).

NMS. Only TFLite builtin ops are allowed (`OpsSet.TFLITE_BUILTINS`, no Flex delegate), and
`tf.image.combined_non_max_suppression`, the decoder's default, has no TFLite kernel. The graph is therefore traced
with a copy of the model's decoder with `nms_method="padded"` (`_ExportDetector`; the model is not changed): one
`tf.image.non_max_suppression_padded` over all classes, each class's boxes shifted by 2 * class id so that boxes of
different classes never overlap. It lowers to TFLite builtins
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
  the fly in the convolutions;
- "int8": full-integer, for NPUs and integer-only accelerators. The integer section, everything traced under
  `INTEGER_SCOPE` (the input resize and the network, `model(images)`), has int8 weights and activations with
  ranges calibrated on `representative_data` (`keras_focal.export.calibration`); the float section starts at the
  head's outputs (one DEQUANTIZE each): scores, box decoding, top-k and NMS stay float32. The uint8 input has
  scale 1 and zero point 0. How it is made: "full-integer quantization" below.

`input_size=(H, W)` fixes another input size (a camera's): the resize to `model.image_size`, or for a `letterbox`
model the letterbox and the mapping of the boxes back to the frame, is then in the file (serving.py's `_resize`).
"""

import contextlib
import copy
import os
import tempfile

import numpy as np
import tensorflow as tf

from keras_focal.export import calibration, group_norm, serving

QUANTIZATIONS = (None, "float16", "dynamic", "int8")
SIGNATURE = serving.SIGNATURE_IMAGES  # "serving_default"
TFLITE_NMS_METHOD = "padded"
# Name scope of the ops that full-integer quantization turns into int8: the input resize (or letterbox) and the
# network, `model(images)`, up to the last head convolution and the head's own reshape / concatenation. Every other
# op (the head's scores and box decoding, the decoder, NMS, the output casts) is the float section.
INTEGER_SCOPE = "integer_section"


class _ExportDetector:
    """`model.detect` as the export traces it, without touching `model`:

    - its own copy of `model.prediction_decoder`, with the TFLite NMS (`nms_method="padded"`) and every other
      decoding setting of the model's decoder (the model's decoder is neither swapped nor modified);
    - `self(images)`, the network, runs in the name scope `INTEGER_SCOPE`, so the converted ops of the network
      can be told from those of decoding;
    - with `integer_group_norm`, every GroupNormalization of the network is traced as
      `keras_focal.export.group_norm.group_norm_4d` (int8 kernels only, 4-D tensors), the same function.

    Every other attribute is the model's (`detect` is the model's own method, bound to this object).
    """

    def __init__(self, model, integer_group_norm=False):
        self._model = model
        self._integer_group_norm = integer_group_norm
        decoder = model.prediction_decoder
        config = decoder.get_config()
        config["nms_method"] = TFLITE_NMS_METHOD
        self.prediction_decoder = self._decoder = type(decoder).from_config(config)
        self.detect = type(model).detect.__get__(self)

    def __getattr__(self, name):
        return getattr(self._model, name)

    def __call__(self, images, training=False):
        swap = group_norm.integer_group_norm(self._model) if self._integer_group_norm else contextlib.nullcontext()
        with swap, tf.name_scope(INTEGER_SCOPE + "/"):  # a trailing "/" makes it the absolute scope
            return self._model(images, training=training)


def _size(input_size):
    size = tuple(int(s) for s in input_size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"input_size must be (height, width) > 0, got {input_size}")
    return size


class TFLiteServingModule(serving.DetectionServingModule):
    """The serving module with one more entry point: `images` [1, h, w, 3], with (h, w) = `input_size`, by default
    `model.image_size`. Another `input_size` puts the resize (a stretch, or for a `letterbox` model the letterbox
    and the mapping of the boxes back) inside the file. `integer_group_norm`: GroupNorm traced in int8 kernels
    (`_ExportDetector`), for full-integer quantization."""

    def __init__(self, model, input_size=None, integer_group_norm=False):
        super().__init__(_ExportDetector(model, integer_group_norm))
        self.input_size = self.image_size if input_size is None else _size(input_size)

    def tflite_function(self, dtype=tf.uint8):
        """The concrete function to convert: the `serving_default` path at a fixed input shape, input `dtype`
        (uint8; float32 for full-integer quantization, whose converter makes the input uint8 itself)."""
        spec = tf.TensorSpec([1, *self.input_size, 3], dtype, name=serving.IMAGES)

        def serve_fixed_size(images):
            with tf.name_scope(INTEGER_SCOPE):
                framed = self._resize(images)
            return self._detect(framed)

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


def trace(model, input_size=None, quantization=None):
    """(module, concrete function) of `model`'s fixed-size serving path, with the TFLite NMS; one trace can be
    converted several times (`convert_tflite(..., traced=...)`): to None / "float16" / "dynamic" from
    `trace(model)`, to "int8" from `trace(model, quantization="int8")` (a float32 input, which the converter turns
    into uint8, and GroupNorm traced as `group_norm.group_norm_4d`, whose ops all have int8 kernels)."""
    module = TFLiteServingModule(model, input_size, integer_group_norm=quantization == "int8")
    module.input_dtype = tf.float32 if quantization == "int8" else tf.uint8
    return module, module.tflite_function(module.input_dtype)


# ------------------------------------------------------------------------------ full-integer quantization
#
# Full-integer quantization: the converter's post-training integer quantization in three steps, so that the float
# section stays float and calibration only runs what it quantizes:
#
#   float32 model (one conversion; `_experimental_calibrate_only` with one image gives it in the form the
#   quantizer reads: every tensor with a min / max)
#     -> `_sections`: the integer section = the ops named under INTEGER_SCOPE all of whose inputs come from the
#        integer section or the graph input; the float section = the rest
#     -> `_calibrate`: the integer section alone (a copy of the graph cut at its outputs) run on every calibration
#        image in the interpreter, every tensor kept; the running min / max of each (what the converter's
#        calibrator records) replace those of the one-image pass. The float section's tensors, and those of the
#        control-flow bodies (the NMS loop), lose theirs (the quantizer leaves a tensor without a range float), and
#        the input's range is set to exactly [0, 255], so that uint8 pixel p means the value p (scale 1, zero
#        point 0).
#     -> `mlir_quantize` (the converter's own quantizer) with the float section's ops on its deny list: int8 weights
#        (per channel for convolutions) and activations in the integer section, a DEQUANTIZE where it ends.
#
# Calibrating the float section too would cost about 100x more (measured on the test model: 7 s against 0.03 s per
# image; the NMS loop runs instrumented) for ranges that are never used.

def _list(indices):
    """An operator's inputs or outputs (None in the flatbuffer object when there are none)."""
    return [] if indices is None else [int(t) for t in indices]


def _op_name(model_object, op):
    """The builtin name of `op` ("CONV_2D", "TOPK_V2", ...)."""
    from tensorflow.lite.tools import flatbuffer_utils

    return flatbuffer_utils.opcode_to_name(model_object, op.opcodeIndex)


def _tensor_names(subgraph):
    return [t.name.decode() if isinstance(t.name, bytes) else str(t.name) for t in subgraph.tensors or []]


def _sections(model_object):
    """(indices of the integer section's ops, of the float section's, the tensors where the integer section
    ends) in the main subgraph of a converted model."""
    subgraph = model_object.subgraphs[0]
    names = _tensor_names(subgraph)
    producer = {int(t): i for i, op in enumerate(subgraph.operators) for t in _list(op.outputs)}
    integer = set()
    for i, op in enumerate(subgraph.operators):  # topological order: producers come first
        parts = [p for t in op.outputs for p in names[t].split(";")]
        named = any(p.startswith(INTEGER_SCOPE + "/") for p in parts)
        if named and all(int(t) < 0 or producer.get(int(t), -1) in integer or int(t) not in producer
                         for t in _list(op.inputs)):
            integer.add(i)
    floating = [i for i in range(len(subgraph.operators)) if i not in integer]
    produced = {int(t) for i in integer for t in _list(subgraph.operators[i].outputs)}
    consumed_by_float = {int(t) for i in floating for t in _list(subgraph.operators[i].inputs)}
    ends = sorted(produced & (consumed_by_float | {int(t) for t in subgraph.outputs}))
    return sorted(integer), floating, ends


def _calibrate(model_object, integer, ends, samples):
    """{tensor index: (min, max)} of the float32 tensors of the integer section over `samples` (float32
    [1, h, w, 3] arrays): the integer section alone (the graph cut where it ends) run in the interpreter with every
    tensor kept, the running min / max of each (what the converter's calibrator records)."""
    from tensorflow.lite.tools import flatbuffer_utils

    cut = copy.deepcopy(model_object)
    subgraph = cut.subgraphs[0]
    subgraph.operators = [subgraph.operators[i] for i in integer]
    subgraph.outputs = np.asarray(ends, np.int32)
    cut.signatureDefs = []
    interpreter = _interpreter(model_content=bytes(flatbuffer_utils.convert_object_to_bytearray(cut)),
                               experimental_preserve_all_tensors=True)
    interpreter.allocate_tensors()
    (image_input,) = [int(t) for t in subgraph.inputs]
    tensors = sorted({int(t) for op in subgraph.operators for t in _list(op.outputs)} | {image_input})
    tensors = [t for t in tensors if subgraph.tensors[t].type == 0]  # TensorType FLOAT32
    low = {t: np.inf for t in tensors}
    high = {t: -np.inf for t in tensors}
    for sample in samples:
        interpreter.set_tensor(image_input, sample)
        interpreter.invoke()
        for t in tensors:
            value = interpreter.get_tensor(t)
            low[t] = min(low[t], float(value.min()))
            high[t] = max(high[t], float(value.max()))
    return {t: (low[t], high[t]) for t in tensors}


def _int8_flatbuffer(concrete_function, module, samples):
    from tensorflow.lite.python import convert
    from tensorflow.lite.tools import flatbuffer_utils

    converter = _converter(concrete_function, module, "dynamic")
    converter.representative_dataset = lambda: iter([[samples[0]]])
    converter.inference_input_type = tf.uint8
    converter._experimental_calibrate_only = True  # the float model with ranges, not yet quantized
    model_object = flatbuffer_utils.convert_bytearray_to_object(converter.convert())
    integer, floating, ends = _sections(model_object)
    ranges = _calibrate(model_object, integer, ends, samples)
    subgraph = model_object.subgraphs[0]
    names = _tensor_names(subgraph)
    float_tensors = {int(t) for i in floating for t in _list(subgraph.operators[i].outputs)}
    for index, tensor in enumerate(subgraph.tensors):
        if tensor.quantization is None or tensor.quantization.min is None:
            continue
        if index in ranges:
            tensor.quantization.min = np.array([ranges[index][0]], np.float32)
            tensor.quantization.max = np.array([ranges[index][1]], np.float32)
        elif index in float_tensors:
            tensor.quantization.min, tensor.quantization.max = None, None
    # The other subgraphs are the bodies of the float section's control flow (the NMS loop, its conditions): float,
    # all of them.
    body_tensor_names, body_ops = set(), set()
    for body in model_object.subgraphs[1:]:
        body_names = _tensor_names(body)
        for tensor in body.tensors or []:
            if tensor.quantization is not None:
                tensor.quantization.min, tensor.quantization.max = None, None
        operators = body.operators or []
        body_tensor_names |= {body_names[t] for op in operators for t in _list(op.outputs) if t >= 0}
        body_ops |= {_op_name(model_object, op) for op in operators}
    (image_input,) = subgraph.inputs
    subgraph.tensors[image_input].quantization.min = np.array([0.0], np.float32)
    subgraph.tensors[image_input].quantization.max = np.array([255.0], np.float32)
    # The quantizer matches a deny-listed node by its first output only, and passes a range on through ops that
    # keep their input's scale (TOPK_V2, SPLIT, ...), so the float section's multi-output ops are deny-listed by
    # type as well (none of them occurs in the integer section).
    op_names = [_op_name(model_object, op) for op in subgraph.operators]
    float_ops = {op_names[i] for i in floating if len(subgraph.operators[i].outputs) > 1} | body_ops
    float_ops -= {op_names[i] for i in integer}
    return convert.mlir_quantize(bytes(flatbuffer_utils.convert_object_to_bytearray(model_object)),
                                 input_data_type=tf.uint8, output_data_type=tf.float32,
                                 denylisted_nodes=sorted({names[t] for t in float_tensors} | body_tensor_names),
                                 denylisted_ops=sorted(float_ops))


def convert_tflite(model, quantization=None, traced=None, representative_data=None, input_size=None):
    """The `.tflite` flatbuffer (bytes) of `model`, from `traced` (`trace(model, ...)`) if given; see
    `export_tflite`."""
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization must be one of {QUANTIZATIONS}, got {quantization!r}")
    if quantization == "int8":
        module = traced[0] if traced else TFLiteServingModule(model, input_size, integer_group_norm=True)
        letterbox_calibration = module.letterbox and module.input_size == module.image_size
        samples = calibration.calibration_images(representative_data, module.input_size, letterbox_calibration)
    elif representative_data is not None:
        raise ValueError(f"representative_data is for quantization='int8' only, got quantization={quantization!r}")
    module, concrete_function = traced or trace(model, input_size, quantization)
    expected = tf.float32 if quantization == "int8" else tf.uint8
    if module.input_dtype != expected:
        how = 'trace(model, quantization="int8")' if quantization == "int8" else "trace(model)"
        raise ValueError(f"traced has a {module.input_dtype.name} input; for quantization={quantization!r} pass "
                         f"traced={how}")
    try:
        if quantization == "int8":
            return _int8_flatbuffer(concrete_function, module, samples)
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


def export_tflite(model, path, quantization=None, traced=None, *, representative_data=None, input_size=None):
    """Writes `model` as one `.tflite` file, normalisation, decoding and NMS included, and returns `path`.

    Args:
        model: a `keras_focal.models.RetinaNet` (anything with `detect(images)`, `image_size` and a
            `prediction_decoder`). It is not changed: the file's decoder is a copy of the model's.
        path: the file to write, e.g. `exports/shapes_gfl.tflite`. It appears complete or not at all (written to a
            temporary file in the same folder, then renamed); an existing file is replaced.
        quantization: None (float32), "float16" (float16 weights), "dynamic" (dynamic-range int8 weights) or
            "int8" (full-integer: int8 weights and activations from the input through the last head convolution,
            calibrated on `representative_data`; decoding and NMS float).
        traced: `trace(model, input_size, quantization)`, to export several quantizations of one model without
            tracing it each time.
        representative_data: "int8" only, and needed there: the calibration images, a keras_focal data source
            (tfds name, COCO JSON, VOC folder or YOLO data.yaml; its "train" split), a `tf.data.Dataset` from
            `keras_focal.data.load`, or any iterable of uint8 [H, W, 3] images; the first 100 are used
            (`keras_focal.export.calibration`). None or empty: ValueError.
        input_size: None (the input is `model.image_size`), or the (height, width) of the frames the file will
            get, e.g. a camera's: the resize to the model's size (stretch, or for a `letterbox` model the letterbox
            and the mapping of the boxes back to the frame) is then inside the file, in TFLite builtin ops.

    Signature `serving_default`: input `images` uint8 [1, h, w, 3] with (h, w) = `input_size` or
    `model.image_size`; outputs `detection_boxes` float32 [1, N, 4] normalized yxyx, `detection_scores` float32
    [1, N] sorted descending, `detection_classes` int32 [1, N], `num_detections` int32 [1]. Runs in the LiteRT
    interpreter (`ai_edge_litert.interpreter.Interpreter`) without the Flex delegate; `TFLiteDetector` wraps it.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path} is a directory; export_tflite writes one file (e.g. {path}/model.tflite)")
    _write_atomically(convert_tflite(model, quantization, traced, representative_data, input_size), path)
    return path


def op_summary(path):
    """{"integer": {op name: count}, "float": {op name: count}} of a `.tflite` file: an op is in the integer section
    when its (first) output is int8 or uint8, QUANTIZE included; every other op (DEQUANTIZE, the float ops, the
    int32 / bool bookkeeping of decoding and NMS) is in the float section."""
    interpreter = _interpreter_class()(model_path=os.fspath(path))
    dtypes = {t["index"]: np.dtype(t["dtype"]) for t in interpreter.get_tensor_details()}
    summary = {"integer": {}, "float": {}}
    for op in interpreter._get_ops_details():
        outputs = [t for t in op["outputs"] if t >= 0]
        section = "integer" if outputs and dtypes[outputs[0]] in (np.int8, np.uint8) else "float"
        summary[section][op["op_name"]] = summary[section].get(op["op_name"], 0) + 1
    return summary


def _interpreter_class():
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # the interpreter that ships with TensorFlow, where ai-edge-litert is not installed
        Interpreter = tf.lite.Interpreter
    return Interpreter


def _interpreter(**kwargs):
    """An interpreter with TFLite's reference kernels only (no XNNPACK delegate, which fuses ops and so drops the
    intermediate tensors)."""
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError:
        Interpreter, OpResolverType = tf.lite.Interpreter, tf.lite.experimental.OpResolverType
    return Interpreter(experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES, **kwargs)


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
