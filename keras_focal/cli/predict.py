"""Run a detector on your images (or a dataset split): prints each detection with its class name and writes PNGs
with boxes, class names and scores drawn.

    keras-focal predict --model saved_models/shapes_gfl --images photos/ --output-dir predictions
    keras-focal predict --model saved_models/shapes_gfl --images a.jpg b.png
    keras-focal predict --model runs/shapes_gfl/model.keras --split test --num-images 8
    keras-focal predict --model tflite_models/shapes_gfl_dynamic.tflite --images a.jpg

Class names come from the model (a .keras model's class_names, a SavedModel's assets/labels.txt), else from the
dataset.
"""

import os

from keras_focal.cli import common, defaults


def add_arguments(p):
    p.add_argument("--model", default=None,
                   help="a .keras model file, a SavedModel directory, an export root holding integer versions, "
                        "or a .tflite file (keras-focal export --format tflite)")
    p.add_argument("--images", nargs="*", default=None,
                   help="image files and / or folders of them (JPEG, PNG, BMP, GIF); if none, the dataset's "
                        "--split")
    common.add_source_arguments(p)
    p.add_argument("--split", default="test", help="dataset split to draw from when --images is not given")
    p.add_argument("--num-images", type=int, default=8, help="how many dataset images to draw")
    p.add_argument("--image-size", type=int, nargs="+", default=None,
                   help=f"H [W] the model input is resized to (default: the model's image_size, else "
                        f"{defaults.IMAGE_SIZE})")
    p.add_argument("--score-threshold", type=float, default=defaults.SCORE_THRESHOLD,
                   help="draw detections scoring at least this")
    p.add_argument("--output-dir", default="predictions", help="where the PNGs go")
    p.add_argument("--show-ground-truth", action="store_true", help="also draw the dataset's boxes (dashed)")


def image_files(paths):
    """The image files among `paths` (files as given; folders: their image files, sorted, not recursive)."""
    from keras_focal.data.sources import IMAGE_SUFFIXES

    files = []
    for path in paths:
        if os.path.isdir(path):
            files += sorted(os.path.join(path, f) for f in os.listdir(path) if f.lower().endswith(IMAGE_SUFFIXES))
        elif os.path.isfile(path):
            files.append(path)
        else:
            raise common.UsageError(f"argument --images: {path} does not exist")
    if not files:
        raise common.UsageError(f"argument --images: no image files in {' '.join(paths)}")
    return files


def run(args):
    if not args.model:
        raise common.UsageError("argument --model: required (a .keras file, a SavedModel or export folder, a "
                                ".tflite file)")
    common.require_path(args.model, "--model")
    files = image_files(args.images) if args.images else None
    import numpy as np
    import tensorflow as tf

    import keras_focal.evaluation as ke
    from keras_focal.data import resize_image
    from keras_focal.data.sources import decode_image_file
    from keras_focal.letterbox import boxes_from_frame, letterbox
    from keras_focal.visualization import class_label, draw_detections

    model = ke.load_detector(args.model)
    # The dataset is read for its images when no --images are given, and for class names when the model has none.
    part, layout = common.resolve_split(args, "train" if files else args.split)
    class_names = ke.detector_class_names(model) or common.class_names_of(part, layout).class_names
    detect = ke.detection_fn(model)
    size = common.square_or_pair(args.image_size, model)
    if files:
        items = ((os.path.splitext(os.path.basename(f))[0], decode_image_file(tf.constant(f)).numpy(), None)
                 for f in files)
    else:
        ds = common.load(part).take(args.num_images)
        items = [(f"{args.split}_{i:04d}", img.numpy(), (t["boxes"].numpy(), t["classes"].numpy()))
                 for i, (img, t) in enumerate(ds)]
    os.makedirs(args.output_dir, exist_ok=True)
    results = {}  # PNG path -> [(class name, score)]
    for name, img, gt in items:
        if getattr(model, "letterbox", False):
            x, content = letterbox(img, size)
            out = dict(detect(x[None]))
            out["detection_boxes"] = boxes_from_frame(out["detection_boxes"], content[None])
        else:
            out = detect(resize_image(img, size)[None])
        out = {k: np.asarray(v)[0] for k, v in out.items()}
        path = os.path.join(args.output_dir, f"{name}.png")
        draw_detections(img, out["detection_boxes"], out["detection_scores"], out["detection_classes"],
                        class_names, args.score_threshold, out.get("num_detections"), path=path,
                        ground_truth=gt if args.show_ground_truth else None)
        count = int(out.get("num_detections", len(out["detection_scores"])))
        shown = [i for i in range(count) if out["detection_scores"][i] >= args.score_threshold]
        print(f"{path}: {len(shown)} detections >= {args.score_threshold}")
        results[path] = [(class_label(out["detection_classes"][i], class_names), float(out["detection_scores"][i]))
                         for i in shown]
        for i in shown:
            y0, x0, y1, x1 = (float(v) for v in out["detection_boxes"][i])
            print(f"  {class_label(out['detection_classes'][i], class_names):<20} {out['detection_scores'][i]:.3f}  "
                  f"box yxyx [{y0:.3f}, {x0:.3f}, {y1:.3f}, {x1:.3f}]")
    return results
