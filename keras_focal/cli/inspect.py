"""Look at a dataset before training on it: most "mAP 0" reports are data problems.

    keras-focal inspect --dataset train/instances.json --image-size 512
    keras-focal inspect --dataset VOCdevkit/VOC2007 --split train --head retina
    keras-focal inspect --data data.yaml --split val --output-dir inspect

It prints the number of images, the boxes per class, the images without boxes, the image sizes, and the data check
that `keras-focal train` runs before its first step: the boxes smaller than 8 px at the training size (with the
--image-size that would fix too many of them) and the anchor coverage per FPN level of the chosen head (its
best-possible recall). It writes two PNGs to --output-dir: box_sizes.png (a histogram of box sizes at the training
size, anchor sizes marked) and gallery.png (the first --num-images images with their boxes and class names drawn).
The head and image size default to train's, so "inspect, then train" checks the anchors the model uses.

For a COCO JSON, VOC folder or YOLO YAML everything but the gallery comes from the annotations (image sizes from the
annotations, or from the image headers for YOLO); a tfds dataset is read image by image (--max-images).
"""

import os

from keras_focal.cli import common, defaults


def add_arguments(p):
    p.add_argument("source", nargs="?", default=None, help="the same as --dataset")
    common.add_source_arguments(p)
    p.add_argument("--split", default="train", help="split to inspect (unused for a COCO .json)")
    p.add_argument("--head", default=defaults.HEAD, choices=defaults.head_names(),
                   help="head whose anchors are checked")
    p.add_argument("--image-size", type=int, default=defaults.IMAGE_SIZE, help="square training size in pixels")
    p.add_argument("--max-images", type=int, default=None,
                   help="read at most this many images (tfds sources are read image by image)")
    p.add_argument("--coverage-images", type=int, default=defaults.CHECK_IMAGES,
                   help="images the anchor coverage is measured on")
    p.add_argument("--num-images", type=int, default=16, help="images in the gallery")
    p.add_argument("--output-dir", default="inspect", help="where box_sizes.png and gallery.png go")


def run(args):
    if args.source:
        if args.dataset:
            raise common.UsageError("argument --dataset: not allowed with a positional source")
        args.dataset, args.source = args.source, None
    part, layout = common.resolve_split(args, args.split)
    import numpy as np

    from keras_focal import data_check, visualization

    boxes = data_check.read_boxes(part.source, part.split, image_dir=part.image_dir, data_dir=part.data_dir,
                                  class_names=part.class_names, max_images=args.max_images)
    if layout is not None:
        layout.check_class_names(boxes.class_names)
    class_names, sizes = boxes.class_names, boxes.image_sizes
    all_boxes = np.concatenate(boxes.boxes) if boxes.boxes else np.zeros((0, 4))
    all_classes = np.concatenate(boxes.classes).astype(int) if boxes.classes else np.zeros(0, int)
    report = data_check.check_boxes(boxes, args.head, args.image_size, args.coverage_images)
    stats = {
        "images": len(sizes),
        "boxes": len(all_classes),
        "crowd_boxes": boxes.crowd_boxes,
        "boxes_per_class": {name: int(np.sum(all_classes == i)) for i, name in enumerate(class_names)},
        "images_without_boxes": int(sum(len(c) == 0 for c in boxes.classes)),
        "small_boxes": report.small_boxes,
        "coverage": report.coverage,
        "suggested_image_size": report.suggested_image_size,
    }
    print(f"{part.source} [{part.split}]: {stats['images']} images, {stats['boxes']} boxes "
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
    print("\n".join(report.lines()))

    size, generator = args.image_size, report.anchor_generator
    os.makedirs(args.output_dir, exist_ok=True)
    heights, widths = (all_boxes[:, 2] - all_boxes[:, 0]) * size, (all_boxes[:, 3] - all_boxes[:, 1]) * size
    histogram = visualization.plot_box_sizes(
        np.sqrt(np.maximum(heights * widths, 0)), os.path.join(args.output_dir, "box_sizes.png"),
        anchor_sizes=[generator.anchor_size * 2 ** level for level in generator.levels],
        min_size=data_check.SMALL_BOX_PX, title=f"{stats['boxes']} boxes at {size}x{size}")
    gallery = os.path.join(args.output_dir, "gallery.png")
    examples = [(image.numpy(), {k: v.numpy() for k, v in t.items()})
                for image, t in common.load(part).take(args.num_images)]
    if examples:
        visualization.plot_gallery([e[0] for e in examples], [e[1] for e in examples], class_names, gallery)
    print(f"wrote {histogram} and {gallery}")
    return stats
