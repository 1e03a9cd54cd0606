"""Convert a torchvision RetinaNet checkpoint (a state_dict saved with torch.save) to a keras_focal `.keras` file.

    keras-focal convert retinanet_coco.pth --output retinanet_coco.keras --image-size 800
    keras-focal convert retinanet_v2.pth --variant retinanet_resnet50_fpn_v2 --num-classes 3 --class-names a b c

The model gives torchvision's detections for the same image (docs/torchvision.md); with --num-classes it gets a new
class layer for fine-tuning (keras-focal train --torchvision-checkpoint does this itself). Reading .pth needs torch
(`pip install "keras_focal[torch]"`).
"""

import os

from keras_focal.cli import common, defaults


def add_arguments(p):
    p.add_argument("checkpoint", nargs="?", default=None, help="the torchvision state_dict (.pth)")
    p.add_argument("--output", default=None, help="the .keras file to write (default: the checkpoint's name, .keras)")
    p.add_argument("--variant", default=defaults.TORCHVISION_VARIANTS[0], choices=defaults.TORCHVISION_VARIANTS,
                   help="the checkpoint's architecture")
    p.add_argument("--num-classes", type=int, default=None,
                   help="a new class layer with this many outputs (default: keep the checkpoint's, 91 for COCO: "
                        "label = COCO category id)")
    p.add_argument("--class-names", nargs="*", default=None, help="names of the classes, kept in the model")
    p.add_argument("--image-size", type=int, nargs="+", default=[800],
                   help="H [W] the model is served at (the SavedModel export resizes to it)")


def run(args):
    if not args.checkpoint:
        raise common.UsageError("argument checkpoint: required (a torchvision state_dict .pth)")
    common.require_path(args.checkpoint, "checkpoint")
    import keras_focal.models

    options = {"class_names": args.class_names} if args.class_names else {}
    model = keras_focal.models.from_torchvision(args.checkpoint, args.variant, num_classes=args.num_classes,
                                                image_size=common.square_or_pair(args.image_size), **options)
    output = args.output or os.path.splitext(args.checkpoint)[0] + ".keras"
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    model.save(output)
    print(f"Converted {args.checkpoint} ({args.variant}, {model.num_classes} classes) to {output}")
    return output
