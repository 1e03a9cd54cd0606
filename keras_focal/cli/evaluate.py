"""Evaluate a trained detector with COCO mAP (pycocotools COCOeval) on a dataset split.

    keras-focal evaluate --model saved_models/shapes_gfl            # newest exported version, built-in dataset
    keras-focal evaluate --model runs/shapes_gfl/model.keras --split test
    keras-focal evaluate --model saved_models/mine --data data.yaml --split val
    keras-focal evaluate --model saved_models/mine --dataset annotations/instances_val.json --image-dir val \\
        --output results.json

It prints COCOeval's table and the AP of every class by name. --output writes the detections as a COCO results
JSON with the source's own image ids and category ids, so pycocotools evaluates it against your annotation file:
`COCOeval(COCO("instances.json"), COCO("instances.json").loadRes("results.json"), "bbox")`.
"""

import json

from keras_focal.cli import common, defaults


def add_arguments(p):
    p.add_argument("--model", default=None,
                   help="a .keras model file, a SavedModel directory, an export root holding integer versions, or a "
                        ".tflite file")
    common.add_source_arguments(p)
    p.add_argument("--split", default=defaults.EVAL_SPLIT,
                   help="tfds split (e.g. validation, test, 'validation[:500]'), VOC / YOLO / --data split; unused "
                        "for a COCO .json")
    p.add_argument("--image-size", type=int, nargs="+", default=None,
                   help="H [W] images are resized to before the model (default: the model's image_size, else "
                        f"{defaults.IMAGE_SIZE})")
    p.add_argument("--batch-size", type=int, default=defaults.BATCH_SIZE, help="images per inference batch")
    p.add_argument("--max-images", type=int, default=None, help="evaluate only the first N images")
    p.add_argument("--output-json", default=None, help="also write the metrics to this JSON file")
    p.add_argument("--output", default=None,
                   help="write the detections to this COCO results JSON (the source's image and category ids)")


def run(args):
    if not args.model:
        raise common.UsageError("argument --model: required (a .keras file, a SavedModel or export folder, a "
                                ".tflite file)")
    common.require_path(args.model, "--model")
    part, layout = common.resolve_split(args, args.split)
    import keras_focal.data as kd
    import keras_focal.evaluation as ke

    info = common.class_names_of(part, layout)
    model = ke.load_detector(args.model)
    model_names = ke.detector_class_names(model)
    if model_names is not None and tuple(model_names) != tuple(info.class_names):
        print(f"warning: the model's classes {list(model_names)} differ from {info.name}'s {list(info.class_names)}; "
              "detections are scored as the dataset's classes of the same index")
    image_size = common.square_or_pair(args.image_size, model)
    ds = common.load(part, keep_crowd=True)
    if args.max_images:
        ds = ds.take(args.max_images)
    metrics, evaluator = ke.evaluate_model(model, ds, class_names=info.class_names, category_ids=info.category_ids,
                                           image_size=image_size, batch_size=args.batch_size, return_evaluator=True)
    print(f"COCO evaluation of {args.model} on {info.name} [{part.split}], {evaluator.num_images} images, "
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
        if kd.is_source_path(part.source):
            image_ids = kd.sources.read(part.source, part.split, image_dir=part.image_dir,
                                        class_names=part.class_names).image_ids
        with open(args.output, "w") as f:
            json.dump(evaluator.detections_json(image_ids), f)
        print(f"Wrote the detections as COCO results to {args.output}")
    return metrics
