"""The defaults every subcommand shares, so "inspect, then train, then evaluate" talk about the same model.

The main job (`keras-focal train` with no arguments) trains a compact GFL detector on the built-in offline dataset
in about a quarter of an hour on a 2-core CPU: ResNet-18, FPN and subnets 64 wide with 2 convs (the papers: 256
and 4), 128 px, batch 8, AdamW, 4 epochs. GFL learns fastest from random init (QFL + DFL + GIoU, ATSS, GroupNorm
subnets).
"""

DATASET = "keras_focal_shapes"
HEAD = "gfl"
BACKBONE = "resnet18"
BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
IMAGE_SIZE = 128
FPN_WIDTH = 64
HEAD_CONVS = 2
BATCH_SIZE = 8
EPOCHS = 4
EVAL_SPLIT = "validation"
RUNS_ROOT = "runs"
EXPORT_ROOT = "saved_models"
SCORE_THRESHOLD = 0.3          # drawing (predict, TensorBoard images); the model keeps its own 0.05 for COCO AP
MAX_IMAGE_PIXELS = 40_000_000  # the SavedModel's input limit (keras_focal.image_limits.DEFAULT_MAX_IMAGE_PIXELS)
CHECK_IMAGES = 500             # images the data check measures anchor coverage on
TORCHVISION_VARIANTS = ("retinanet_resnet50_fpn", "retinanet_resnet50_fpn_v2")


def head_names():
    """The registered heads, read when a parser is built (a head registered by an imported module is offered)."""
    from keras_focal.models.heads import HEADS

    return sorted(HEADS)
