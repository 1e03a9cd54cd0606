"""A COCO-format JSON file (CVAT, Label Studio, Roboflow exports) as a dataset source.

    {"images": [{"id", "file_name", "width", "height"}, ...],
     "annotations": [{"image_id", "category_id", "bbox": [x, y, width, height], "iscrowd"?}, ...],
     "categories": [{"id", "name"}, ...]}

One file is one split. An image's path is `image_dir / file_name` (`file_name` may hold sub-folders; `image_dir`
defaults to the JSON file's folder). Classes are the categories sorted by id, so class i has category id
`category_ids[i]`; detections written back in COCO format use the file's own ids. `bbox` is in pixels of the
image's declared `width` x `height`; `iscrowd: 1` boxes are flagged as crowd (evaluation only). An image without
annotations is an image without objects.
"""

from __future__ import annotations

import json
import numbers
import os

import numpy as np

from keras_focal.data.sources._records import Annotations, DataSourceError, Problems, normalized_boxes


def _is_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _categories(path, categories):
    if not isinstance(categories, list) or not categories:
        raise DataSourceError(f"{path}: 'categories' must be a non-empty list of {{'id', 'name'}} entries")
    seen = {}
    for entry in categories:
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), int) or "name" not in entry:
            raise DataSourceError(f"{path}: every category needs an integer 'id' and a 'name', got {entry!r}")
        if entry["id"] in seen:
            raise DataSourceError(f"{path}: category id {entry['id']} is declared twice")
        seen[entry["id"]] = str(entry["name"])
    ids = tuple(sorted(seen))
    return ids, tuple(seen[i] for i in ids)


def parse(path):
    """The JSON document, its (category_ids, class_names); raises DataSourceError naming the file."""
    try:
        with open(path, encoding="utf-8") as f:
            document = json.load(f)
    except json.JSONDecodeError as e:
        raise DataSourceError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}); "
                              "a truncated or malformed annotation file") from None
    except UnicodeDecodeError as e:
        raise DataSourceError(f"{path}: not a UTF-8 text file ({e.reason})") from None
    if not isinstance(document, dict):
        raise DataSourceError(f"{path}: expected a JSON object with 'images', 'annotations' and 'categories'")
    for key in ("images", "categories"):
        if key not in document:
            raise DataSourceError(f"{path}: no {key!r} list; not a COCO-format annotation file")
    if not isinstance(document["images"], list) or not isinstance(document.get("annotations", []), list):
        raise DataSourceError(f"{path}: 'images' and 'annotations' must be lists")
    return document, _categories(path, document["categories"])


def read(path, image_dir=None, on_error="raise"):
    """Parses the file into (`Annotations`, `Problems`) (see the module docstring)."""
    document, (category_ids, class_names) = parse(path)
    image_dir = os.path.dirname(os.path.abspath(path)) if image_dir is None else os.fspath(image_dir)
    problems = Problems(path, on_error)
    class_of = {cid: i for i, cid in enumerate(category_ids)}

    index_of, paths, ids, sizes = {}, [], [], []
    for entry in document["images"]:
        ok = (isinstance(entry, dict) and "id" in entry and isinstance(entry.get("file_name"), str)
              and _is_number(entry.get("width")) and _is_number(entry.get("height"))
              and entry["width"] > 0 and entry["height"] > 0)
        if not ok:
            raise DataSourceError(f"{path}: every image needs 'id', 'file_name' and a positive 'width' and "
                                  f"'height', got {entry!r}")
        if entry["id"] in index_of:
            raise DataSourceError(f"{path}: image id {entry['id']} is declared twice")
        index_of[entry["id"]] = len(paths)
        paths.append(os.path.join(image_dir, entry["file_name"]))
        ids.append(entry["id"])
        sizes.append((int(entry["height"]), int(entry["width"])))

    per_image = [[] for _ in paths]  # (x0, y0, x1, y1, class, crowd)
    for ann in document.get("annotations", []):
        if not isinstance(ann, dict):
            raise DataSourceError(f"{path}: every annotation must be an object, got {ann!r}")
        image = index_of.get(ann.get("image_id"))
        if image is None:
            problems.add(path, f"annotation {ann.get('id', '?')} refers to image id {ann.get('image_id')!r}, which "
                         "'images' does not declare")
            continue
        where = f"annotation {ann.get('id', '?')} of image {paths[image]}"
        if ann.get("category_id") not in class_of:
            problems.add(path, f"{where}: undeclared category id {ann.get('category_id')!r} (declared: "
                         f"{list(category_ids)})", image=image)
            continue
        bbox = ann.get("bbox")
        if not (isinstance(bbox, (list, tuple)) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
            problems.add(path, f"{where}: 'bbox' must be [x, y, width, height], got {bbox!r}", image=image)
            continue
        x, y, w, h = (float(v) for v in bbox)
        per_image[image].append((x, y, x + w, y + h, class_of[ann["category_id"]], bool(ann.get("iscrowd", 0))))

    boxes, classes, crowd = [], [], []
    for (height, width), objects in zip(sizes, per_image):
        rows = np.asarray(objects, np.float64).reshape(-1, 6)
        b, keep = normalized_boxes(rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3], width, height)
        boxes.append(b[keep])
        classes.append(rows[keep, 4].astype(np.int32))
        crowd.append(rows[keep, 5].astype(bool))
    return Annotations(path, class_names, category_ids, paths, ids, sizes, boxes, classes, crowd), problems
