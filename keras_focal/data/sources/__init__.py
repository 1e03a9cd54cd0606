"""Annotation files as dataset sources: a COCO-format JSON file, a Pascal VOC folder, a YOLO data YAML.

    annotations = read("labels/instances.json")           # all annotations in memory, image files checked
    examples = stream(annotations)                        # unbatched (image uint8 [H, W, 3], {"boxes", "classes"})

`keras_focal.data.load` and `dataset_info` call these for any source that is a path. Each reader parses its files
into an `Annotations` and collects the bad examples it finds in a `Problems`; `read` then checks that every image
file exists and applies `on_error` once ("raise": one `DataSourceError` naming each offending file; "skip": those
images are left out with a warning that names the first ones).
"""

from __future__ import annotations

import os

from keras_focal.data.sources import coco_json, voc, yolo
from keras_focal.data.sources._records import (
    IMAGE_SUFFIXES,
    ON_ERROR,
    Annotations,
    DataSourceError,
    Problems,
    check_images_exist,
    decode_image_file,
    image_size_from_header,
    require_path,
    stream,
)
from keras_focal.data.sources.voc import VOC_CLASS_NAMES

KINDS = ("coco", "voc", "yolo")


def kind_of(source):
    """"coco" (a .json file), "voc" (a folder holding Annotations/) or "yolo" (a .yaml / .yml file).

    Raises DataSourceError naming the path when it does not exist or is none of these."""
    source = os.fspath(source)
    require_path(source)
    lower = source.lower()
    if os.path.isfile(source) and lower.endswith(".json"):
        return "coco"
    if os.path.isfile(source) and lower.endswith((".yaml", ".yml")):
        return "yolo"
    if os.path.isdir(source) and voc.is_voc_folder(source):
        return "voc"
    raise DataSourceError(f"{source} is not a dataset source: expected a COCO-format .json file, a Pascal VOC "
                          "folder holding Annotations/, or a YOLO data .yaml")


def _check_class_names(source, kind, class_names):
    if class_names is not None and kind != "voc":
        raise ValueError(f"{source}: class_names applies to VOC folders; a {kind.upper()} source declares its own")


def describe(source, class_names=None):
    """(class_names, category_ids, splits) of a source, from its annotation files (no image is read)."""
    kind = kind_of(source)
    _check_class_names(source, kind, class_names)
    if kind == "coco":
        _, (category_ids, names) = coco_json.parse(source)
        return names, category_ids, ()
    if kind == "voc":
        names = voc.class_names_of(source, class_names)
        return names, tuple(range(1, len(names) + 1)), voc.splits_of(source)
    _, config, names = yolo.parse(source)
    return names, tuple(range(1, len(names) + 1)), yolo.splits_of(config)


def read(source, split="train", *, image_dir=None, class_names=None, keep_difficult=False, on_error="raise"):
    """The split's `Annotations` with the bad examples handled per `on_error` (see the module docstring).

    split: not used by a COCO JSON file (one file is one split); "train", "validation" (VOC: val.txt), "test", ...
    image_dir: COCO: the folder `file_name` is relative to (default: the JSON file's); VOC: the images' folder
        (default ROOT/JPEGImages); not used by YOLO, whose YAML names the image folders.
    class_names: VOC only (see `voc`). keep_difficult: VOC only, keep `difficult` objects.
    """
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    source = os.fspath(source)
    kind = kind_of(source)
    _check_class_names(source, kind, class_names)
    if image_dir is not None:
        require_path(os.fspath(image_dir), "image_dir")
    if kind == "coco":
        annotations, problems = coco_json.read(source, image_dir=image_dir, on_error=on_error)
    elif kind == "voc":
        annotations, problems = voc.read(source, split, image_dir=image_dir, class_names=class_names,
                                         keep_difficult=keep_difficult, on_error=on_error)
    else:
        if image_dir is not None:
            raise ValueError(f"{source}: image_dir is not used by a YOLO source (its YAML names the image folders)")
        annotations, problems = yolo.read(source, split, on_error=on_error)
    check_images_exist(annotations, problems)
    return problems.resolve(annotations)


__all__ = [
    "Annotations", "DataSourceError", "IMAGE_SUFFIXES", "KINDS", "ON_ERROR", "Problems", "VOC_CLASS_NAMES", "coco_json",
    "decode_image_file", "describe", "image_size_from_header", "kind_of", "read", "stream", "voc", "yolo",
]
