"""Look at a dataset before training on it: most "mAP 0" reports are data problems.

    python examples/inspect_dataset.py train/instances.json --image-size 512
    python examples/inspect_dataset.py VOCdevkit/VOC2007 --split train --head gfl
    python examples/inspect_dataset.py data.yaml --split val --output-dir inspect

It prints the number of images, the boxes per class, the images without boxes, the image sizes, the boxes smaller
than 8 px at the training size, and the anchor coverage per FPN level for the chosen head and image size (the
share of boxes that get a positive anchor on each level, keras_focal.diagnostics.anchor_coverage). It writes
two PNGs to --output-dir: box_sizes.png (a histogram of box sizes at the training size, anchor sizes marked) and
gallery.png (the first --num-images images with their boxes and class names drawn).

For a COCO JSON, VOC folder or YOLO YAML everything but the gallery comes from the annotations (image sizes from
the annotations, or from the image headers for YOLO); a tfds dataset is read image by image (--max-images).
"""

import argparse
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402

# Boxes under this many pixels on a side at the training size hardly reach a positive anchor (P3 anchors are
# 32 px for RetinaNet, 64 px for GFL, at stride 8).
SMALL_BOX_PX = 8.0


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", help="a COCO .json file, a Pascal VOC folder, a YOLO data .yaml, or a tfds name")
    p.add_argument("--split", default="train", help="split to inspect (unused for a COCO .json)")
    p.add_argument("--image-dir", default=None, help="image folder of a COCO .json / VOC source")
    p.add_argument("--data-dir", default=None, help="tensorflow-datasets data directory (tfds names)")
    p.add_argument("--head", default="retina", choices=["retina", "gfl"], help="head whose anchors are checked")
    p.add_argument("--image-size", type=int, default=512, help="square training size in pixels")
    p.add_argument("--max-images", type=int, default=None,
                   help="read at most this many images (tfds sources are read image by image)")
    p.add_argument("--coverage-images", type=int, default=500, help="images the anchor coverage is measured on")
    p.add_argument("--num-images", type=int, default=16, help="images in the gallery")
    p.add_argument("--output-dir", default="inspect", help="where box_sizes.png and gallery.png go")
    return p.parse_args(argv)


def _annotations(args):
    """(class names, image sizes [N, 2], per-image boxes, per-image classes, per-image crowd flags)."""
    import keras_focal.data as kd

    if kd.is_source_path(args.source):
        ann = kd.sources.read(args.source, args.split, image_dir=args.image_dir)
        if args.max_images:
            ann = ann.subset(range(min(args.max_images, len(ann))))
        sizes = [s if s[0] > 0 else kd.sources.image_size_from_header(p)
                 for s, p in zip(ann.image_sizes, ann.image_paths)]
        return ann.class_names, np.asarray(sizes).reshape(-1, 2), ann.boxes, ann.classes, ann.is_crowd
    ds = kd.load(args.source, args.split, data_dir=args.data_dir, keep_crowd=True)
    if args.max_images:
        ds = ds.take(args.max_images)
    sizes, boxes, classes, crowd = [], [], [], []
    for image, t in ds:
        sizes.append(image.shape[:2])
        boxes.append(t["boxes"].numpy())
        classes.append(t["classes"].numpy())
        crowd.append(t["is_crowd"].numpy() if "is_crowd" in t else np.zeros(len(classes[-1]), bool))
    return kd.dataset_info(args.source).class_names, np.asarray(sizes).reshape(-1, 2), boxes, classes, crowd


def _coverage(boxes, classes, head, size, max_images):
    """Anchor coverage (diagnostics.anchor_coverage) on batches of 16 padded images at the training size."""
    import tensorflow as tf

    from keras_focal.data.pipeline import pad_targets
    from keras_focal.diagnostics import anchor_coverage
    from keras_focal.models.heads import get_head

    encoder = get_head(head).anchor_encoder()
    generator = encoder.anchor_generator
    boxes, classes = boxes[:max_images], classes[:max_images]
    max_boxes = max([len(c) for c in classes] + [1])
    padded = [pad_targets(b, c, max_boxes) for b, c in zip(boxes, classes)]
    batches = tf.data.Dataset.from_tensor_slices({k: tf.stack([p[k] for p in padded]) for k in ("boxes", "classes")})
    return generator, anchor_coverage(batches.batch(16), encoder, (size, size))


def main(argv=None):
    args = parse_args(argv)
    import keras_focal.data as kd
    from keras_focal import visualization

    try:
        class_names, sizes, boxes, classes, crowd = _annotations(args)
    except kd.DataSourceError as e:
        raise SystemExit(f"error: {e}") from None
    # Crowd regions are never training targets: they are counted apart.
    targets = [(np.asarray(b).reshape(-1, 4)[~np.asarray(k, bool)], np.asarray(c)[~np.asarray(k, bool)])
               for b, c, k in zip(boxes, classes, crowd)]
    boxes, classes = [b for b, _ in targets], [c for _, c in targets]
    all_boxes = np.concatenate(boxes) if boxes else np.zeros((0, 4))
    all_classes = np.concatenate(classes).astype(int) if classes else np.zeros(0, int)
    size = args.image_size
    heights, widths = (all_boxes[:, 2] - all_boxes[:, 0]) * size, (all_boxes[:, 3] - all_boxes[:, 1]) * size
    stats = {
        "images": len(sizes),
        "boxes": len(all_classes),
        "crowd_boxes": int(sum(np.sum(k) for k in crowd)),
        "boxes_per_class": {name: int(np.sum(all_classes == i)) for i, name in enumerate(class_names)},
        "images_without_boxes": int(sum(len(c) == 0 for c in classes)),
        "small_boxes": int(np.sum(np.minimum(heights, widths) < SMALL_BOX_PX)),
    }
    print(f"{args.source} [{args.split}]: {stats['images']} images, {stats['boxes']} boxes "
          f"(+ {stats['crowd_boxes']} crowd regions, not counted), {len(class_names)} classes")
    width = max(len(n) for n in class_names)
    print("boxes per class:")
    for name, count in stats["boxes_per_class"].items():
        print(f"  {name:<{width}}  {count:7d}" + ("   <- no boxes" if count == 0 else ""))
    print(f"images without boxes: {stats['images_without_boxes']}")
    if len(sizes):
        print(f"image sizes (height x width): min {sizes[:, 0].min()} x {sizes[:, 1].min()}, median "
              f"{int(np.median(sizes[:, 0]))} x {int(np.median(sizes[:, 1]))}, max {sizes[:, 0].max()} x "
              f"{sizes[:, 1].max()}; {len({tuple(s) for s in sizes})} distinct")
    share = 100.0 * stats["small_boxes"] / max(stats["boxes"], 1)
    print(f"boxes smaller than {SMALL_BOX_PX:g} px at {size}x{size}: {stats['small_boxes']} ({share:.1f}%)")

    generator, coverage = _coverage(boxes, classes, args.head, size, args.coverage_images)
    stats["coverage"] = coverage
    shown = min(len(boxes), args.coverage_images)
    print(f"anchor coverage, {args.head} head at {size}x{size} ({shown} images, {coverage['num_ground_truth']} "
          f"boxes): {100 * coverage['matched_fraction']:.1f}% of boxes get a positive anchor, "
          f"{coverage['mean_positives_per_image']:.1f} positives per image")
    for level, fraction in zip(generator.levels, coverage["matched_fraction_per_level"]):
        print(f"  P{level} (stride {2 ** level:3d}, anchors {generator.anchor_size * 2 ** level:5.0f} px): "
              f"{100 * fraction:5.1f}% of boxes")
    if coverage["best_anchor_iou"].size:
        print(f"  best-anchor IoU below 0.5: {100 * np.mean(coverage['best_anchor_iou'] < 0.5):.1f}% of boxes")

    os.makedirs(args.output_dir, exist_ok=True)
    histogram = visualization.plot_box_sizes(
        np.sqrt(np.maximum(heights * widths, 0)), os.path.join(args.output_dir, "box_sizes.png"),
        anchor_sizes=[generator.anchor_size * 2 ** level for level in generator.levels], min_size=SMALL_BOX_PX,
        title=f"{stats['boxes']} boxes at {size}x{size}")
    gallery = os.path.join(args.output_dir, "gallery.png")
    ds = kd.load(args.source, args.split, data_dir=args.data_dir, image_dir=args.image_dir).take(args.num_images)
    examples = [(image.numpy(), {k: v.numpy() for k, v in t.items()}) for image, t in ds]
    if examples:
        visualization.plot_gallery([e[0] for e in examples], [e[1] for e in examples], class_names, gallery)
    print(f"wrote {histogram} and {gallery}")
    return stats


if __name__ == "__main__":
    main()
