r"""Export a trained checkpoint (.keras) as a versioned SavedModel for TF Serving, or as one .tflite file for the
LiteRT interpreter (phones, Raspberry Pi, edge devices).

    keras-focal export --checkpoint runs/shapes_gfl/model.keras --export-dir saved_models/shapes_gfl
    keras-focal export --checkpoint runs/shapes_gfl/model.keras --format tflite --quantization dynamic \
        --output tflite_models/shapes_gfl_dynamic.tflite

writes `saved_models/shapes_gfl/<next version>/` with the signatures serving_default (uint8 images, any size),
serving_bytes (JPEG/PNG bytes) and tf_example, and TF Serving warmup requests. The version appears atomically, so a
running TF Serving that polls the directory picks it up only once it is complete.

`--format tflite` writes the whole detector (normalisation, decoding, NMS) as one file taking uint8 images
[1, H, W, 3] at the model's image size; see docs/tflite.md. `--quantization float16` halves the file, `dynamic`
(int8 weights) quarters it.
"""

import os

from keras_focal.cli import common, defaults

DEFAULT_NAME = f"shapes_{defaults.HEAD}"  # the main job's run name


def add_arguments(p):
    p.add_argument("--checkpoint", default=os.path.join(defaults.RUNS_ROOT, DEFAULT_NAME, "model.keras"),
                   help="the .keras file keras-focal train writes in its run folder")
    p.add_argument("--export-dir", default=os.path.join(defaults.EXPORT_ROOT, DEFAULT_NAME),
                   help="the model's base path; the version goes to <export-dir>/<version>/")
    p.add_argument("--format", choices=["savedmodel", "tflite"], default="savedmodel",
                   help="savedmodel (TF Serving) or tflite (one file for the LiteRT interpreter)")
    p.add_argument("--quantization", choices=["float16", "dynamic", "int8"], default=None,
                   help="tflite only: float16 weights, dynamic-range int8 weights, or int8: full-integer, "
                        "calibrated on --data (default: float32)")
    p.add_argument("--data", default=None, metavar="SOURCE",
                   help="--quantization int8 only: the calibration images, the first 100 of this source's train "
                        "split (a DATA.yaml as keras-focal train reads it, a tfds name, COCO JSON, VOC folder or "
                        "YOLO data.yaml)")
    p.add_argument("--image-dir", default=None, help="the images of a COCO JSON --data (default: its folder)")
    p.add_argument("--input-size", type=int, nargs=2, metavar=("HEIGHT", "WIDTH"), default=None,
                   help="tflite only: the frame size the file takes (e.g. a camera's); the resize or letterbox to "
                        "the model's size is then inside the file (default: the model's size)")
    p.add_argument("--output", default=None,
                   help="tflite only: the file to write (default: tflite_models/<export-dir name>_<quantization>"
                        ".tflite)")
    p.add_argument("--version", type=int, default=None,
                   help="integer version to write (default: the next one, 1 for the first); an existing version is "
                        "never overwritten")
    p.add_argument("--image-size", type=int, nargs=2, metavar=("HEIGHT", "WIDTH"), default=None,
                   help="size the served graph resizes to (default: the model's image_size from training)")
    p.add_argument("--score-threshold", type=float, default=None,
                   help="minimum detection score kept by the served graph (default: the model's, 0.05; a "
                        "deployment often uses 0.3-0.5)")
    p.add_argument("--max-detections", type=int, default=None,
                   help="detections per image, N in the outputs (default: the model's, 100)")
    add_limit_arguments(p)


def add_limit_arguments(p):
    """The SavedModel's input limits (`export_saved_model(max_image_pixels=, max_batch_size=)`)."""
    p.add_argument("--max-image-pixels", type=int, default=defaults.MAX_IMAGE_PIXELS,
                   help="savedmodel: refuse an image whose header declares more pixels, before decoding it; 0: no "
                        "limit")
    p.add_argument("--max-batch-size", type=int, default=None,
                   help="savedmodel: refuse larger batches (default: no limit)")


def limits(args):
    """The keyword arguments of `export_saved_model` for the limit flags."""
    return {"max_image_pixels": args.max_image_pixels or None, "max_batch_size": args.max_batch_size}


def load_checkpoint(args):
    """The model of --checkpoint with the serving settings of the flags applied."""
    import keras

    import keras_focal.models  # noqa: F401  registers the custom objects the .keras file refers to

    model = keras.saving.load_model(args.checkpoint, compile=False)
    if args.image_size is not None:
        model.image_size = tuple(args.image_size)
    if args.score_threshold is not None:
        model.score_threshold = args.score_threshold  # replaces model.prediction_decoder, which the export reads
    if args.max_detections is not None:
        model.max_detections = args.max_detections
    return model


def calibration_split(args):
    """The DataSplit of --data: the train entry of a DATA.yaml, or a source with --image-dir."""
    from keras_focal.data import spec

    if os.path.splitext(args.data)[1] not in (".yaml", ".yml"):
        return spec.DataSplit(args.data, "train", args.image_dir)
    common.require_path(args.data, "--data")
    if args.image_dir:
        raise common.UsageError("argument --image-dir: not allowed with a --data file (it names its images)")
    return spec.read_spec(args.data).split("train")


def run(args):
    if args.format != "tflite" and (args.quantization or args.output or args.input_size):
        raise common.UsageError("argument --quantization / --output / --input-size: apply to --format tflite only")
    if (args.quantization == "int8") != (args.data is not None):
        raise common.UsageError("argument --data: needed with --quantization int8 (the calibration images), and "
                                "only there")
    if not os.path.exists(args.checkpoint):
        raise common.UsageError(f"argument --checkpoint: {args.checkpoint} does not exist; train first "
                                "(keras-focal train) or pass --checkpoint")
    import keras_focal.export

    model = load_checkpoint(args)
    settings = (f"image size {model.image_size[0]}x{model.image_size[1]}, score threshold "
                f"{model.score_threshold}, {model.max_detections} detections")
    if args.format == "tflite":
        name = os.path.basename(os.path.normpath(args.export_dir))
        output = args.output or os.path.join("tflite_models", f"{name}_{args.quantization or 'float32'}.tflite")
        data = None
        if args.data is not None:
            import keras_focal.data

            part = calibration_split(args)
            data = keras_focal.data.load(part.source, split=part.split, **part.load_options())
        path = keras_focal.export.export_tflite(model, output, quantization=args.quantization,
                                                representative_data=data, input_size=args.input_size)
        print(f"Exported {args.checkpoint} to {path} ({os.path.getsize(path) / 1e6:.1f} MB, "
              f"{args.quantization or 'float32'}, {settings})")
        print(f"Run it with: keras-focal predict --model {path} --images IMAGE.jpg")
        return path
    version_dir = keras_focal.export.export_saved_model(model, args.export_dir, version=args.version, **limits(args))
    print(f"Exported {args.checkpoint} to {version_dir} ({settings})")
    print(f"Inspect it with: saved_model_cli show --all --dir {version_dir}")
    return version_dir
