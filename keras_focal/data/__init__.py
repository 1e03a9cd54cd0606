"""Datasets for keras_focal: the built-in `keras_focal_shapes` tfds dataset, COCO / VOC tfds loaders, your own
annotations (a COCO-format JSON file, a Pascal VOC folder, a YOLO data YAML), box-aware augmentation and the
batched training pipeline.

    ds = keras_focal.data.load("keras_focal_shapes", split="train")      # (uint8 image, {"boxes", "classes"})
    ds = keras_focal.data.load("export/instances.json")                  # your own COCO-format annotations
    info = keras_focal.data.dataset_info("export/instances.json")        # class_names, num_classes, category_ids
    batches = keras_focal.data.make_dataset(ds, image_size=(128, 128), batch_size=16, encoder=encoder,
                                            augment=True, shuffle=True)

Importing this package registers `keras_focal_shapes` with tensorflow-datasets.
"""

from keras_focal.data import service, shapes_dataset, sources
from keras_focal.data.augment import Augmenter, filter_boxes, flip_left_right
from keras_focal.data.catalog import (
    COCO_CATEGORY_IDS,
    COCO_CLASS_NAMES,
    VOC_CLASS_NAMES,
    DatasetInfo,
    available_datasets,
    dataset_info,
    is_source_path,
    resolve_name,
)
from keras_focal.data.loaders import clean_annotations, load
from keras_focal.data.mosaic import MosaicMixup
from keras_focal.data.pipeline import make_dataset, pad_targets, resize_image
from keras_focal.data.shapes_dataset import CLASS_NAMES as SHAPES_CLASS_NAMES
from keras_focal.data.shapes_dataset import KerasFocalShapes, ShapesConfig, generate_example
from keras_focal.data.sources import DataSourceError

build_shapes_dataset = shapes_dataset.build

__all__ = [
    "Augmenter", "COCO_CATEGORY_IDS", "COCO_CLASS_NAMES", "DataSourceError", "DatasetInfo", "KerasFocalShapes",
    "MosaicMixup",
    "SHAPES_CLASS_NAMES", "ShapesConfig", "VOC_CLASS_NAMES", "available_datasets", "build_shapes_dataset",
    "clean_annotations", "dataset_info", "filter_boxes", "flip_left_right", "generate_example", "is_source_path",
    "load", "make_dataset", "pad_targets", "resize_image", "resolve_name", "service", "sources",
]
