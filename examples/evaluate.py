"""COCO evaluation (pycocotools COCOeval) of a trained detector on a dataset split.

    python examples/evaluate.py --model saved_models/retinanet          # newest exported version
    python examples/evaluate.py --model runs/shapes/best.keras --split test
    python examples/evaluate.py --model saved_models/retinanet/3 --dataset voc/2007 --image-size 384
    python examples/evaluate.py --model saved_models/mine --dataset val/instances.json --output results.json

--dataset is a tfds name or your own annotations (a COCO-format .json, a Pascal VOC folder, a YOLO data .yaml).
It prints COCOeval's table and the AP of every class by name. --output writes the detections as a COCO results
JSON with the source's own image ids and category ids, so pycocotools evaluates it against your annotation file:
`COCOeval(COCO("instances.json"), COCO("instances.json").loadRes("results.json"), "bbox")`.
The built-in dataset (keras_focal_shapes) is generated locally if missing; nothing is downloaded.
"""

import argparse
import json
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True,
                   help="a .keras model file, a SavedModel directory, or an export root holding integer versions")
    p.add_argument("--dataset", default="keras_focal_shapes",
                   help="keras_focal_shapes (default), coco/2017, voc/2007, voc/2012, or a COCO .json file, a VOC "
                        "folder or a YOLO .yaml")
    p.add_argument("--split", default="validation",
                   help="tfds split (e.g. validation, test, 'validation[:500]'), VOC / YOLO split; unused for a "
                        "COCO .json")
    p.add_argument("--image-dir", default=None, help="image folder of a COCO .json / VOC --dataset")
    p.add_argument("--data-dir", default=None, help="tensorflow-datasets data directory (tfds default if unset)")
    p.add_argument("--image-size", type=int, nargs="+", default=None,
                   help="H [W] images are resized to before the model (default: the model's image_size, else 128)")
    p.add_argument("--batch-size", type=int, default=8, help="images per inference batch")
    p.add_argument("--max-images", type=int, default=None, help="evaluate only the first N images")
    p.add_argument("--output-json", default=None, help="also write the metrics to this JSON file")
    p.add_argument("--output", default=None,
                   help="write the detections to this COCO results JSON (the source's image and category ids)")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    import keras_focal.data as kd
    import keras_focal.evaluation as ke

    try:
        info = kd.dataset_info(args.dataset)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    model = ke.load_detector(args.model)
    model_names = ke.detector_class_names(model)
    if model_names is not None and tuple(model_names) != tuple(info.class_names):
        print(f"warning: the model's classes {list(model_names)} differ from {info.name}'s {list(info.class_names)}; "
              "detections are scored as the dataset's classes of the same index")
    if args.image_size:
        image_size = tuple(args.image_size) if len(args.image_size) == 2 else (args.image_size[0],) * 2
    else:
        image_size = tuple(getattr(model, "image_size", None) or (128, 128))
    ds = kd.load(args.dataset, split=args.split, data_dir=args.data_dir, image_dir=args.image_dir, keep_crowd=True)
    if args.max_images:
        ds = ds.take(args.max_images)
    metrics, evaluator = ke.evaluate_model(model, ds, class_names=info.class_names, category_ids=info.category_ids,
                                           image_size=image_size, batch_size=args.batch_size, return_evaluator=True)
    print(f"COCO evaluation of {args.model} on {info.name} [{args.split}], {evaluator.num_images} images, "
          f"input {image_size[0]}x{image_size[1]}")
    ke.print_coco_table(evaluator)
    width = max(len(name) for name in info.class_names)
    print("AP@[.50:.95] per class:")
    for name, ap in evaluator.per_class_ap.items():
        print(f"  {name:<{width}}  {ap:.3f}")
    if args.output_json:
        with open(args.output_json, "w") as f:
            json.dump(metrics, f, indent=2)
    if args.output:
        image_ids = None
        if kd.is_source_path(args.dataset):
            image_ids = kd.sources.read(args.dataset, args.split, image_dir=args.image_dir).image_ids
        with open(args.output, "w") as f:
            json.dump(evaluator.detections_json(image_ids), f)
        print(f"Wrote the detections as COCO results to {args.output}")
    return metrics


if __name__ == "__main__":
    main()
