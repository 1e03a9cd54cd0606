"""Run a detector on your images (or a dataset split): prints each detection with its class name and writes
PNGs with boxes, class names and scores drawn (keras_focal.visualization).

    python examples/predict.py --model saved_models/retinanet --images photos/ --output-dir predictions
    python examples/predict.py --model saved_models/retinanet --images a.jpg b.png
    python examples/predict.py --model runs/shapes/best.keras --split test --num-images 8
    python examples/predict.py --model tflite_models/shapes_gfl_dynamic.tflite --images a.jpg

Class names come from the model (a .keras model's class_names, a SavedModel's assets/labels.txt), else from
--dataset.
"""

import argparse
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402

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
            raise SystemExit(f"error: {path} does not exist")
    if not files:
        raise SystemExit(f"error: no image files in {' '.join(paths)}")
    return files


def _decode(path):
    import tensorflow as tf

    from keras_focal.data.sources import decode_image_file

    return decode_image_file(tf.constant(path)).numpy()


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True,
                   help="a .keras model file, a SavedModel directory, an export root holding integer versions, "
                        "or a .tflite file (examples/export.py --format tflite)")
    p.add_argument("--images", nargs="*", default=None,
                   help="image files and / or folders of them (JPEG, PNG, BMP, GIF); if none, use --dataset/--split")
    p.add_argument("--dataset", default="keras_focal_shapes",
                   help="a tfds name or a source path: images when --images is not given, and class names for a "
                        "model that carries none")
    p.add_argument("--image-dir", default=None, help="image folder of a COCO JSON / VOC --dataset")
    p.add_argument("--split", default="test", help="dataset split to draw from when --images is not given")
    p.add_argument("--data-dir", default=None, help="tensorflow-datasets data directory")
    p.add_argument("--num-images", type=int, default=8, help="how many dataset images to draw")
    p.add_argument("--image-size", type=int, nargs="+", default=None,
                   help="H [W] the model input is resized to (default: the model's image_size, else 128)")
    p.add_argument("--score-threshold", type=float, default=0.3, help="draw detections scoring at least this")
    p.add_argument("--output-dir", default="predictions", help="where the PNGs go")
    p.add_argument("--show-ground-truth", action="store_true", help="also draw the dataset's boxes (dashed)")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    import keras_focal.data as kd
    import keras_focal.evaluation as ke
    from keras_focal.letterbox import boxes_from_frame, letterbox
    from keras_focal.visualization import class_label, draw_detections

    model = ke.load_detector(args.model)
    class_names = ke.detector_class_names(model) or kd.dataset_info(args.dataset).class_names
    detect = ke.detection_fn(model)
    if args.image_size:
        size = tuple(args.image_size) if len(args.image_size) == 2 else (args.image_size[0],) * 2
    else:
        size = tuple(getattr(model, "image_size", None) or (128, 128))
    if args.images:
        items = ((os.path.splitext(os.path.basename(f))[0], _decode(f), None) for f in image_files(args.images))
    else:
        ds = kd.load(args.dataset, split=args.split, data_dir=args.data_dir, image_dir=args.image_dir)
        ds = ds.take(args.num_images)
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
            out = detect(kd.resize_image(img, size)[None])
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


if __name__ == "__main__":
    main()
