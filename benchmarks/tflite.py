r"""The `.tflite` forms of a trained detector against its SavedModel, in one process: file size, latency per image
in the LiteRT interpreter with 1 and 2 threads, COCO AP on the validation split, and how many of the SavedModel's
detections each form keeps.

    python benchmarks/tflite.py --checkpoint runs/shapes_gfl/model.keras --saved-model saved_models/shapes_gfl/1
    python benchmarks/tflite.py --checkpoint runs/shapes_gfl/model.keras --nms postprocess   # + the NMS peer

Rows:
- `savedmodel`: `tf.saved_model.load(dir).signatures["serving_default"]` (TensorFlow's own thread pools, all
  cores), the reference. Without --saved-model the checkpoint is exported to a temporary folder first.
- `tflite float32`, `tflite float16`, `tflite dynamic`, `tflite int8`: `keras_focal.export.export_tflite(model,
  path, quantization=...)`, run by `keras_focal.export.TFLiteDetector(path, num_threads=1 or 2)` (XNNPACK on CPU).
  int8 is calibrated on the first 100 images of --calibration-split (the training split), and the ops of its
  integer and float sections are printed.
- with `--network`, `tflite float32 network` and `tflite int8 network`: the float32 and int8 files cut where
  their integer section ends (the head outputs; for int8 the DEQUANTIZEs), timed only: the network's speed-up
  apart from decoding and NMS, and, cut after the backbone (the FPN's lateral inputs), the backbone's.
- with `--nms postprocess`, two more float32 files where the class-offset NMS is replaced by TFLite's
  `TFLite_Detection_PostProcess` op (per-class "regular" NMS, and the class-agnostic "fast" NMS), the other way to
  put NMS in a `.tflite` file. The op decodes center-size box encodings against anchors itself, so the decoded
  boxes are handed to it as encodings against a unit anchor at the origin (ty, tx = box centre, th, tw = log of
  its height and width): the boxes it outputs are then the decoder's, for either head.

"kept" is the share of the SavedModel's detections that the form returns too on the validation images: the same
class, a score within 1e-3 and the box within half a pixel (greedy one-to-one matching, by SavedModel score).
Latency is per image at batch 1 (the `.tflite` input shape), the median of --iters calls, the runners taking turns
call by call (`_profile.time_interleaved`), so every ratio compares runs made at the same moment.
"""

import argparse
import os
import tempfile

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from _profile import time_interleaved  # noqa: E402

QUANTIZATIONS = {"float32": None, "float16": "float16", "dynamic": "dynamic", "int8": "int8"}
KEPT_SCORE_TOLERANCE = 1e-3
KEPT_BOX_TOLERANCE_PX = 0.5


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="runs/shapes_gfl/model.keras", help="trained .keras model")
    p.add_argument("--saved-model", default=None,
                   help="its SavedModel version directory (default: export the checkpoint to a temporary folder)")
    p.add_argument("--dataset", default="keras_focal_shapes", help="dataset for COCO AP (default: %(default)s)")
    p.add_argument("--split", default="validation", help="split for COCO AP and 'kept' (default: %(default)s)")
    p.add_argument("--max-images", type=int, default=None, help="evaluate only this many images")
    p.add_argument("--calibration-split", default="train",
                   help="split whose first 100 images calibrate the int8 file (default: %(default)s)")
    p.add_argument("--iters", type=int, default=30, help="timed calls per runner (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls per runner first (default: %(default)s)")
    p.add_argument("--nms", nargs="*", default=[], choices=["postprocess"],
                   help="also measure TFLite_Detection_PostProcess in place of the class-offset NMS")
    p.add_argument("--network", action="store_true",
                   help="also time the network alone (and the backbone alone) of the float32 and int8 files")
    p.add_argument("--output-dir", default=None, help="keep the .tflite files here (default: a temporary folder)")
    return p.parse_args(argv)


# ------------------------------------------------------------------------------------- the NMS peer
def _postprocess_signature(num_classes, score_threshold, iou_threshold, max_detections, regular_nms):
    """The `experimental_implements` text the TFLite converter turns into a TFLite_Detection_PostProcess op
    (attributes of tensorflow/lite/kernels/detection_postprocess.cc; scales 1: encodings are used as they are)."""
    attributes = {"max_detections": ("i", max_detections), "max_classes_per_detection": ("i", 1),
                  "detections_per_class": ("i", max_detections), "use_regular_nms": ("b", str(regular_nms).lower()),
                  "nms_score_threshold": ("f", score_threshold), "nms_iou_threshold": ("f", iou_threshold),
                  "y_scale": ("f", 1.0), "x_scale": ("f", 1.0), "h_scale": ("f", 1.0), "w_scale": ("f", 1.0),
                  "num_classes": ("i", num_classes)}
    return " ".join(['name: "TFLite_Detection_PostProcess"'] + [
        f'attr {{ key: "{key}" value {{ {kind}: {value} }} }}' for key, (kind, value) in attributes.items()])


def postprocess_tflite(model, regular_nms):
    """float32 `.tflite` bytes of `model` with TFLite_Detection_PostProcess as its NMS (same signature names)."""
    import tensorflow as tf

    from keras_focal.export import tflite

    decoder = model.prediction_decoder
    height, width = model.image_size
    num_anchors = model.anchor_generator(height, width).shape[0]
    signature = _postprocess_signature(model.num_classes, decoder.score_threshold, decoder.iou_threshold,
                                       decoder.max_detections, regular_nms)

    @tf.function(experimental_implements=signature)
    def detection_postprocess(box_encodings, class_predictions, anchors):
        zero = tf.constant(0.0)  # the converter replaces the whole function by the op
        return zero, zero, zero, zero

    def serve(images):
        outputs = model(tf.cast(images, tf.float32), training=False)
        boxes = tf.clip_by_value(model.detection_head.decode_boxes(outputs, height, width), 0.0, 1.0)
        # Centre-size encodings against the anchor (ycenter 0, xcenter 0, h 1, w 1): y = ty, h = exp(th).
        sizes = tf.maximum(boxes[..., 2:] - boxes[..., :2], 1e-6)
        encodings = tf.concat([(boxes[..., :2] + boxes[..., 2:]) / 2.0, tf.math.log(sizes)], axis=-1)
        unit_anchors = tf.tile(tf.constant([[0.0, 0.0, 1.0, 1.0]]), [num_anchors, 1])
        scores = model.detection_head.scores(outputs)
        boxes, classes, scores, count = detection_postprocess(encodings, scores, unit_anchors)
        return {"detection_boxes": boxes, "detection_classes": classes, "detection_scores": scores,
                "num_detections": count}

    module = tflite.TFLiteServingModule(model)
    spec = tf.TensorSpec([1, height, width, 3], tf.uint8, name="images")
    function = tf.function(serve, input_signature=[spec]).get_concrete_function()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function], module)
    converter.allow_custom_ops = True  # TFLite_Detection_PostProcess is a custom op the interpreter ships with
    return converter.convert()


class _IntegerOutputs:
    """TFLite_Detection_PostProcess returns classes and counts as float32; the other forms return int32."""

    def __init__(self, detector):
        self.detector = detector
        self.signatures = {"serving_default": self._serve}

    def __call__(self, images):
        import numpy as np

        out = self.detector(images)
        for name in ("detection_classes", "num_detections"):
            out[name] = np.round(out[name]).astype(np.int32)
        return out

    def _serve(self, images):
        import numpy as np

        return self(np.asarray(images))


# ---------------------------------------------------------------------------------- the network alone
def _ancestors(subgraph, tensors):
    """Indices of the ops that `tensors` depend on, in the main subgraph."""
    from keras_focal.export import tflite

    producer = {int(t): i for i, op in enumerate(subgraph.operators) for t in tflite._list(op.outputs)}
    ops, pending = set(), [int(t) for t in tensors]
    while pending:
        i = producer.get(pending.pop())
        if i is not None and i not in ops:
            ops.add(i)
            pending.extend(tflite._list(subgraph.operators[i].inputs))
    return ops


def cut_file(path, part="network"):
    """The `.tflite` bytes of `path` cut to its network (input to the head outputs: for an int8 file the
    DEQUANTIZE outputs, for a float one where `tflite._sections` ends the integer section), or to its backbone
    (`part="backbone"`: up to the inputs of the FPN's lateral convolutions). No signature: run with
    `set_tensor` / `invoke`."""
    import re

    import numpy as np
    from tensorflow.lite.tools import flatbuffer_utils

    from keras_focal.export import tflite

    model_object = flatbuffer_utils.read_model(path)
    subgraph = model_object.subgraphs[0]
    names = [tflite._op_name(model_object, op) for op in subgraph.operators]
    if part == "backbone":
        tensor_names = tflite._tensor_names(subgraph)
        ends = [int(op.inputs[0]) for op, name in zip(subgraph.operators, names)
                if name == "CONV_2D" and re.search(r"/fpn_lateral\d", tensor_names[int(op.outputs[0])])]
    elif "DEQUANTIZE" in names:
        ends = [int(op.outputs[0]) for op, name in zip(subgraph.operators, names) if name == "DEQUANTIZE"]
    else:
        ends = tflite._sections(model_object)[2]
    subgraph.operators = [subgraph.operators[i] for i in sorted(_ancestors(subgraph, ends))]
    subgraph.outputs = np.asarray(ends, np.int32)
    model_object.signatureDefs = []
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model_object))


class _RawRunner:
    """Runs a signature-less `.tflite` (bytes) on one image, cast to its input dtype."""

    def __init__(self, content, threads):
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_content=content, num_threads=threads)
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]

    def __call__(self, images):
        self.interpreter.set_tensor(self.input["index"], images.astype(self.input["dtype"]))
        self.interpreter.invoke()


# ------------------------------------------------------------------------------------------- measures
def kept_fraction(reference, outputs, image_size):
    """Share of the reference detections found in `outputs`: same class, score within 1e-3, box within 0.5 px."""
    import numpy as np

    scale = np.array([image_size[0], image_size[1]] * 2, np.float32)
    found = total = 0
    for ref, out in zip(reference, outputs):
        n_ref, n_out = int(ref["num_detections"]), int(out["num_detections"])
        unused = np.ones(n_out, bool)
        for i in range(n_ref):
            total += 1
            close = (unused & (out["detection_classes"][:n_out] == ref["detection_classes"][i])
                     & (np.abs(out["detection_scores"][:n_out] - ref["detection_scores"][i]) <= KEPT_SCORE_TOLERANCE)
                     & np.all(np.abs(out["detection_boxes"][:n_out] - ref["detection_boxes"][i]) * scale
                              <= KEPT_BOX_TOLERANCE_PX, axis=1))
            if close.any():
                unused[np.argmax(close)] = False
                found += 1
    return found / max(total, 1)


def per_image_outputs(detect, images):
    import numpy as np

    return [{k: np.asarray(v)[0] for k, v in detect(image[np.newaxis]).items()} for image in images]


def main(argv=None):
    args = parse_args(argv)
    import keras
    import numpy as np
    import tensorflow as tf

    import keras_focal.data as kd
    import keras_focal.evaluation as ke
    import keras_focal.models  # noqa: F401  registers the classes the .keras file refers to
    from keras_focal.export import TFLiteDetector, export_saved_model, export_tflite, tflite

    model = keras.saving.load_model(args.checkpoint, compile=False)
    size = tuple(model.image_size)
    folder = args.output_dir or tempfile.mkdtemp(prefix="kf-tflite-")
    os.makedirs(folder, exist_ok=True)
    saved_model = args.saved_model or export_saved_model(model, os.path.join(folder, "saved_models"))
    loaded = tf.saved_model.load(saved_model)
    serve = loaded.signatures["serving_default"]

    def savedmodel(x):
        return {k: v.numpy() for k, v in serve(images=tf.constant(x)).items()}

    files = {}
    traced = {None: tflite.trace(model), "int8": tflite.trace(model, quantization="int8")}
    for name, quantization in QUANTIZATIONS.items():
        calibration = kd.load(args.dataset, split=args.calibration_split) if quantization == "int8" else None
        files[f"tflite {name}"] = export_tflite(model, os.path.join(folder, f"{model.name}_{name}.tflite"),
                                                quantization=quantization,
                                                traced=traced["int8" if quantization == "int8" else None],
                                                representative_data=calibration)
    summary = tflite.op_summary(files["tflite int8"])
    print("int8 file, integer section:", ", ".join(f"{op} x{n}" for op, n in sorted(summary["integer"].items())))
    print("int8 file, float section:", ", ".join(f"{op} x{n}" for op, n in sorted(summary["float"].items())))
    for form in args.nms:
        for regular in (True, False):
            path = os.path.join(folder, f"{model.name}_float32_{form}_{'regular' if regular else 'fast'}.tflite")
            with open(path, "wb") as f:
                f.write(postprocess_tflite(model, regular_nms=regular))
            files[f"tflite float32 {form} {'regular' if regular else 'fast'}"] = path

    def detector(path, threads):
        d = TFLiteDetector(path, num_threads=threads)
        return _IntegerOutputs(d) if "postprocess" in path else d

    runners = {"savedmodel": savedmodel}
    for name, path in files.items():
        for threads in (1, 2):
            runners[f"{name} / {threads} thread{'s' if threads > 1 else ''}"] = detector(path, threads)
    timed_only = {}
    if args.network:
        for name in ("float32", "int8"):
            for part in ("network", "backbone"):
                content = cut_file(files[f"tflite {name}"], part)
                timed_only[f"tflite {name} {part}"] = len(content)
                for threads in (1, 2):
                    runners[f"tflite {name} {part} / {threads} thread{'s' if threads > 1 else ''}"] = _RawRunner(
                        content, threads)

    ds = kd.load(args.dataset, split=args.split)
    if args.max_images:
        ds = ds.take(args.max_images)
    images = np.stack([kd.resize_image(img, size).numpy() for img, _ in ds])
    images = np.clip(np.round(images), 0, 255).astype(np.uint8)
    print(f"{args.checkpoint}: {model.name}, image {size[0]}x{size[1]}, {len(images)} {args.split} images; "
          f"TF intra-op threads {tf.config.threading.get_intra_op_parallelism_threads() or 'default'}, "
          f"{os.cpu_count()} CPUs")

    image = images[:1]
    calls = {name: (lambda run=run: run(image)) for name, run in runners.items()}
    medians, ratios = time_interleaved(calls, args.iters, args.warmup)

    reference = per_image_outputs(savedmodel, images)
    rows = []
    sizes = {"savedmodel": sum(os.path.getsize(os.path.join(root, f))
                               for root, _, names in os.walk(saved_model) for f in names)}
    sizes.update({name: os.path.getsize(path) for name, path in files.items()})
    for name in ["savedmodel", *files]:
        one = runners["savedmodel"] if name == "savedmodel" else runners[f"{name} / 1 thread"]
        metrics = ke.evaluate_model(loaded if name == "savedmodel" else one, ds, num_classes=model.num_classes,
                                    image_size=size, batch_size=8)
        kept = kept_fraction(reference, per_image_outputs(one, images), size)
        if name == "savedmodel":
            timing = (medians[name], None, ratios[name], None)
        else:
            t1, t2 = f"{name} / 1 thread", f"{name} / 2 threads"
            timing = (medians[t1], medians[t2], ratios[t1], ratios[t2])
        rows.append((name, sizes[name], *timing, metrics["AP"], metrics["AP50"], kept))

    for name, nbytes in timed_only.items():
        t1, t2 = f"{name} / 1 thread", f"{name} / 2 threads"
        rows.append((name, nbytes, medians[t1], medians[t2], ratios[t1], ratios[t2], None, None, None))

    print(f"\n{'form':<38}{'size MB':>9}{'ms 1 thr':>10}{'ms 2 thr':>10}{'x SM 1':>8}{'x SM 2':>8}"
          f"{'AP':>8}{'AP50':>8}{'kept':>8}")
    for name, nbytes, t1, t2, r1, r2, ap, ap50, kept in rows:
        def fmt(value, spec):
            return format(value, spec) if value is not None else f"{'-':>{spec.split('.')[0]}}"
        print(f"{name:<38}{nbytes / 1e6:>9.2f}{1000 * t1:>10.1f}{fmt(t2 and 1000 * t2, '10.1f')}"
              f"{r1:>8.2f}{fmt(r2, '8.2f')}{fmt(ap and 100 * ap, '8.1f')}{fmt(ap50 and 100 * ap50, '8.1f')}"
              f"{fmt(kept and 100 * kept, '7.1f')}{'%' if kept is not None else ' '}")
    for part in ("", " network", " backbone"):
        pair = [f"tflite {name}{part} / {threads} thread{'s' if threads > 1 else ''}" for threads in (1, 2)
                for name in ("float32", "int8")]
        if all(p in medians for p in pair):
            print(f"int8{part} over float32{part}: x{ratios[pair[1]] / ratios[pair[0]]:.2f} at 1 thread, "
                  f"x{ratios[pair[3]] / ratios[pair[2]]:.2f} at 2 threads (ratio of their speed-ups over the "
                  "savedmodel, each the median of per-round ratios)")
    print("\nms: per image at batch 1 (savedmodel: TensorFlow's thread pools); x SM: speed-up over the savedmodel, "
          "median of per-round ratios; AP in points; kept: SavedModel detections returned too (same class, "
          f"score within {KEPT_SCORE_TOLERANCE}, box within {KEPT_BOX_TOLERANCE_PX} px).")
    return rows


if __name__ == "__main__":
    main()
