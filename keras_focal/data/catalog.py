"""The datasets `load` accepts, their class names and the category ids results are written with.

A source is a tfds name (see `available_datasets`) or a path: a COCO-format JSON file, a Pascal VOC folder or a
YOLO data YAML (`keras_focal.data.sources`). A tfds name wins; a folder that happens to share one (e.g. `voc`) is
given as `./voc`.
"""

from __future__ import annotations

import dataclasses
import os

from keras_focal.data import shapes_dataset, sources
from keras_focal.data.sources import VOC_CLASS_NAMES

# The 80 COCO detection categories in the order tfds' coco/2017 `objects/label` uses (sorted by category id),
# with their official category ids (1..90 with gaps). Contiguous index i <-> COCO_CATEGORY_IDS[i].
COCO_CLASS_NAMES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush",
)
COCO_CATEGORY_IDS = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28, 31, 32, 33, 34,
    35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62,
    63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84, 85, 86, 87, 88, 89, 90,
)


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What a detector and its evaluation need to know about a dataset.

    name: canonical tfds name (e.g. "keras_focal_shapes", "coco/2017"), or the source's path.
    class_names: tuple of names, index = contiguous class id used in targets and detections.
    category_ids: the id each contiguous class has in the original annotation format (COCO's 1..90, or a COCO
        JSON file's own ids); for datasets without one, `i + 1`. Used when writing COCO-format results.
    splits: the split names the dataset offers (empty for a COCO JSON file: one file is one split).
    """

    name: str
    class_names: tuple
    category_ids: tuple
    splits: tuple

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


_DATASETS = {
    shapes_dataset.NAME: DatasetInfo(
        shapes_dataset.NAME, tuple(shapes_dataset.CLASS_NAMES),
        tuple(range(1, len(shapes_dataset.CLASS_NAMES) + 1)), ("train", "validation", "test")),
    "coco/2017": DatasetInfo("coco/2017", COCO_CLASS_NAMES, COCO_CATEGORY_IDS, ("train", "validation", "test")),
    "voc/2007": DatasetInfo("voc/2007", VOC_CLASS_NAMES, tuple(range(1, 21)), ("train", "validation", "test")),
    "voc/2012": DatasetInfo("voc/2012", VOC_CLASS_NAMES, tuple(range(1, 21)), ("train", "validation", "test")),
}
_ALIASES = {
    "shapes": shapes_dataset.NAME,
    "coco": "coco/2017",
    "coco2017": "coco/2017",
    "voc": "voc/2007",
    "voc2007": "voc/2007",
    "voc2012": "voc/2012",
}


def available_datasets() -> tuple:
    """The canonical names `load` accepts (aliases: "shapes", "coco", "voc", "voc2007", "voc2012")."""
    return tuple(_DATASETS)


def resolve_name(name: str) -> tuple:
    """Returns (canonical_name, config) for a user-given name, e.g. "keras_focal_shapes/small" ->
    ("keras_focal_shapes", "small"). Raises ValueError listing the available names for an unknown one."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"Dataset name must be a non-empty string; available: {', '.join(available_datasets())}")
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key in _DATASETS:
        return key, None
    # "keras_focal_shapes/small", "shapes/small", "coco/2017:1.1.0"
    base, _, rest = key.partition("/")
    base = _ALIASES.get(base, base)
    if base == shapes_dataset.NAME and rest:
        return base, rest
    raise ValueError(
        f"Unknown dataset {name!r} (no such file or folder either). Available datasets: "
        f"{', '.join(available_datasets())} "
        f"(aliases: {', '.join(sorted(_ALIASES))}; the built-in one also takes a config, e.g. "
        f"'{shapes_dataset.NAME}/small'), or a path: a COCO .json file, a VOC folder or a YOLO .yaml.")


def is_tfds_name(source) -> bool:
    """True when `source` names a tfds dataset `load` knows (not a path)."""
    if not isinstance(source, str):
        return False
    try:
        resolve_name(source)
    except ValueError:
        return False
    return True


def dataset_info(source: str = shapes_dataset.NAME, class_names=None) -> DatasetInfo:
    """Class names, number of classes, category ids and splits of a tfds dataset (no data needed) or of a source
    path (read from its annotation files; no image is read). `class_names`: a VOC folder's classes, as `load`."""
    if is_source_path(source):
        names, category_ids, splits = sources.describe(source, class_names)
        return DatasetInfo(os.fspath(source), names, category_ids, splits)
    canonical, _ = resolve_name(source)  # an unknown name raises, listing the datasets
    return _DATASETS[canonical]


def is_source_path(source) -> bool:
    """True when `source` is meant as a path (it is not a tfds name, and it exists, holds a folder separator, or
    ends in .json / .yaml / .yml); a path that does not exist is then reported as such."""
    if isinstance(source, os.PathLike):
        return True
    if not isinstance(source, str) or is_tfds_name(source):
        return False
    return (os.path.exists(source) or os.sep in source or source.startswith(".")
            or source.lower().endswith((".json", ".yaml", ".yml")))
