"""A YOLO dataset YAML (the ultralytics layout; Roboflow "YOLOv5/v8" exports) as a dataset source.

    data.yaml:  path: ROOT        (optional; relative to the YAML's folder, which is the default)
                train: images/train   (a folder of images, or a .txt list of image paths; relative to ROOT)
                val: images/val
                test: images/test     (optional)
                names: [cat, dog]     (or a mapping {0: cat, 1: dog})
    ROOT/images/train/a.jpg  ->  ROOT/labels/train/a.txt:  one `class cx cy w h` line per object, normalized

An image's label file is its path with the last `images` folder replaced by `labels` and the suffix by `.txt`; a
missing label file means an image without objects. Splits: "train", "validation" or "val", "test".
"""

from __future__ import annotations

import os

import numpy as np

from keras_focal.data.sources._records import IMAGE_SUFFIXES, Annotations, DataSourceError, Problems, clipped
SPLIT_KEYS = {"train": "train", "validation": "val", "val": "val", "test": "test"}


def parse(path):
    """(root, config, class_names) of a data YAML; raises DataSourceError naming the file."""
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            config = yaml.safe_load(f)
    except yaml.YAMLError as e:
        raise DataSourceError(f"{path}: malformed YAML ({e})") from None
    if not isinstance(config, dict) or "names" not in config:
        raise DataSourceError(f"{path}: expected a YAML mapping with 'names' and 'train' / 'val' / 'test'")
    names = config["names"]
    if isinstance(names, dict):
        if sorted(names) != list(range(len(names))):
            raise DataSourceError(f"{path}: 'names' keys must be the class indices 0..{len(names) - 1}, got "
                                  f"{sorted(names)}")
        names = [names[i] for i in range(len(names))]
    if not isinstance(names, list) or not names:
        raise DataSourceError(f"{path}: 'names' must be a non-empty list or an index -> name mapping")
    if "nc" in config and config["nc"] != len(names):
        raise DataSourceError(f"{path}: nc is {config['nc']} but 'names' has {len(names)} entries")
    base = os.path.dirname(os.path.abspath(path))
    root = os.path.join(base, os.fspath(config.get("path") or "."))
    return os.path.normpath(root), config, tuple(str(n) for n in names)


def splits_of(config):
    return tuple({"train": "train", "val": "validation", "test": "test"}[k] for k in ("train", "val", "test")
                 if config.get(k))


def label_path(image_path):
    """ROOT/images/train/a.jpg -> ROOT/labels/train/a.txt (the last `images` folder of the path)."""
    parts = os.path.normpath(image_path).split(os.sep)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return os.path.splitext(os.sep.join(parts))[0] + ".txt"


def _split_images(path, root, entries):
    """Image paths of one split: each entry is a folder (searched recursively) or a .txt list of paths."""
    images = []
    for entry in entries if isinstance(entries, list) else [entries]:
        location = os.path.join(root, os.fspath(entry))
        if os.path.isdir(location):
            for folder, _, files in sorted(os.walk(location)):
                images += [os.path.join(folder, f) for f in sorted(files) if f.lower().endswith(IMAGE_SUFFIXES)]
        elif os.path.isfile(location) and location.endswith(".txt"):
            with open(location, encoding="utf-8") as f:
                images += [os.path.normpath(os.path.join(root, line.strip())) for line in f if line.strip()]
        else:
            raise DataSourceError(f"{path}: split entry {entry!r} ({location}) is neither a folder nor a .txt list")
    return images


def _read_labels(file, num_classes, problems, image):
    """Rows [class, cx, cy, w, h] of one label file, or None after recording the problem."""
    rows = []
    with open(file, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 5:
                problems.add(file, f"line {number} has {len(fields)} fields, expected 5 (class cx cy w h)",
                             image=image)
                return None
            try:
                values = [float(v) for v in fields]
            except ValueError:
                problems.add(file, f"line {number} is not numbers: {line.strip()!r}", image=image)
                return None
            if values[0] != int(values[0]) or not 0 <= values[0] < num_classes:
                problems.add(file, f"line {number}: undeclared class index {fields[0]} (names has {num_classes} "
                             "classes)", image=image)
                return None
            rows.append(values)
    return rows


def read(path, split="train", on_error="raise"):
    """Parses the split into (`Annotations`, `Problems`) (see the module docstring)."""
    root, config, class_names = parse(path)
    if split not in SPLIT_KEYS:
        raise DataSourceError(f"{path}: unknown split {split!r}; use one of {sorted(SPLIT_KEYS)}")
    key = SPLIT_KEYS[split]
    if not config.get(key):
        raise DataSourceError(f"{path}: no {key!r} entry, so there is no split {split!r}")
    images = _split_images(path, root, config[key])
    problems = Problems(path, on_error)
    boxes, classes = [], []
    for image, image_path in enumerate(images):
        labels = label_path(image_path)
        rows = _read_labels(labels, len(class_names), problems, image) if os.path.isfile(labels) else []
        rows = np.asarray(rows or [], np.float64).reshape(-1, 5)
        cls, cx, cy, w, h = rows.T
        b, keep = clipped(np.stack([cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2], axis=-1))
        boxes.append(b[keep])
        classes.append(cls[keep].astype(np.int32))
    crowd = [np.zeros(len(c), bool) for c in classes]
    return Annotations(path, class_names, tuple(range(1, len(class_names) + 1)), images, list(range(len(images))),
                       [(0, 0)] * len(images), boxes, classes, crowd), problems
