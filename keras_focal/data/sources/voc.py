"""A Pascal VOC folder (LabelImg exports, VOCdevkit/VOC2007) as a dataset source.

    ROOT/Annotations/<id>.xml         <filename>, <size><width><height>, <object><name><difficult><bndbox>
    ROOT/JPEGImages/<filename>        (or `image_dir`)
    ROOT/ImageSets/Main/<split>.txt   optional: the image ids of a split, one per line ("validation" -> val.txt)

Without a split list every XML file is the split. `difficult` objects are left out unless `keep_difficult=True`.
Classes: `class_names` if given; else the 20 VOC names if every name in `Annotations/` is one of them; else the
sorted names found in `Annotations/` (all XML files, so every split of one folder has the same classes).

VOC pixel coordinates are 1-based (the top-left pixel is (1, 1)); as tfds' VOC builder does, 1 is subtracted from
all four corners before normalizing by the declared width and height: normalized x = (x_voc - 1) / width.
"""

from __future__ import annotations

import functools
import os
import warnings
import xml.etree.ElementTree as ElementTree

import numpy as np

from keras_focal.data.sources._records import (
    Annotations,
    DataSourceError,
    Problems,
    image_size_from_header,
    normalized_boxes,
)

VOC_CLASS_NAMES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable", "dog",
    "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
SPLIT_FILES = {"validation": "val"}


def is_voc_folder(path):
    return os.path.isdir(os.path.join(path, "Annotations"))


def _text(node, tag, file):
    child = node.find(tag)
    if child is None or child.text is None or not child.text.strip():
        raise DataSourceError(f"{file}: missing <{tag}>")
    return child.text.strip()


def _number(node, tag, file):
    text = _text(node, tag, file)
    try:
        return float(text)
    except ValueError:
        raise DataSourceError(f"{file}: <{tag}> is not a number: {text!r}") from None


@functools.lru_cache(maxsize=None)
def _parse(path, mtime):  # mtime: a changed file is parsed again
    try:
        root = ElementTree.parse(path).getroot()
    except ElementTree.ParseError as e:
        raise DataSourceError(f"{path}: malformed XML ({e}); a truncated or broken annotation file") from None
    size = root.find("size")
    width = height = 0.0
    if size is not None and size.find("width") is not None and size.find("height") is not None:
        width, height = _number(size, "width", path), _number(size, "height", path)
    objects = []
    for obj in root.findall("object"):
        box = obj.find("bndbox")
        if box is None:
            raise DataSourceError(f"{path}: an <object> without <bndbox>")
        difficult = obj.find("difficult")
        difficult = difficult is not None and (difficult.text or "0").strip() not in ("0", "")
        objects.append((_text(obj, "name", path), difficult) +
                       tuple(_number(box, tag, path) for tag in ("xmin", "ymin", "xmax", "ymax")))
    filename = root.find("filename")
    filename = filename.text.strip() if filename is not None and filename.text and filename.text.strip() else None
    return filename, (height, width), tuple(objects)


def parse_xml(path):
    """(filename or None, (height, width) or (0, 0), objects (name, difficult, xmin, ymin, xmax, ymax))."""
    return _parse(path, os.stat(path).st_mtime_ns)


def _xml_files(root):
    folder = os.path.join(root, "Annotations")
    return sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.endswith(".xml"))


def class_names_of(root, class_names=None):
    """The folder's classes by the rule in the module docstring (XML files that do not parse are not counted;
    `read` reports them)."""
    if class_names is not None:
        return tuple(str(n) for n in class_names)
    found = set()
    for file in _xml_files(root):
        try:
            found.update(obj[0] for obj in parse_xml(file)[2])
        except DataSourceError:
            continue
    if found <= set(VOC_CLASS_NAMES):
        return VOC_CLASS_NAMES
    return tuple(sorted(found))


def splits_of(root):
    """Split names with a list file in ImageSets/Main ("val" reported as "validation"), or ("all",) when none."""
    folder = os.path.join(root, "ImageSets", "Main")
    names = sorted(f[:-4] for f in os.listdir(folder) if f.endswith(".txt") and "_" not in f) \
        if os.path.isdir(folder) else []
    return tuple("validation" if n == "val" else n for n in names) or ("all",)


def _split_ids(root, split):
    """The split's XML files: from its ImageSets/Main list, or every XML file when there is none."""
    folder = os.path.join(root, "ImageSets", "Main")
    listing = os.path.join(folder, SPLIT_FILES.get(split, split) + ".txt")
    if not os.path.isfile(listing):
        if os.path.isdir(folder) and any(f.endswith(".txt") for f in os.listdir(folder)):
            warnings.warn(f"{root}: no {listing}; using every XML file in Annotations/ as split {split!r}",
                          stacklevel=4)
        return _xml_files(root), None
    with open(listing, encoding="utf-8") as f:
        ids = [line.split()[0] for line in f if line.strip()]
    return [os.path.join(root, "Annotations", i + ".xml") for i in ids], listing


def read(root, split="train", image_dir=None, class_names=None, keep_difficult=False, on_error="raise"):
    """Parses the split into (`Annotations`, `Problems`) (see the module docstring)."""
    class_names = class_names_of(root, class_names)
    class_of = {name: i for i, name in enumerate(class_names)}
    image_dir = os.path.join(root, "JPEGImages") if image_dir is None else os.fspath(image_dir)
    files, listing = _split_ids(root, split)
    problems = Problems(root, on_error)
    paths, ids, sizes, boxes, classes = [], [], [], [], []
    for file in files:
        image = len(paths)
        stem = os.path.splitext(os.path.basename(file))[0]
        ids.append(stem)
        if not os.path.isfile(file):
            problems.add(file, f"annotation file not found (listed in {listing})", image=image)
            filename, size, objects = None, (0, 0), ()
        else:
            try:
                filename, size, objects = parse_xml(file)
            except DataSourceError as e:
                problems.add(file, str(e).removeprefix(f"{file}: "), image=image)
                filename, size, objects = None, (0, 0), ()
        path = os.path.join(image_dir, filename or stem + ".jpg")
        paths.append(path)
        if not (size[0] > 0 and size[1] > 0) and os.path.isfile(path):
            size = image_size_from_header(path)
            if not (size[0] > 0 and size[1] > 0):
                problems.add(file, f"no <size> and the header of {path} does not read as an image", image=image)
        sizes.append((int(size[0]), int(size[1])))
        kept = []
        for name, difficult, *corners in objects:
            if name not in class_of:
                problems.add(file, f"undeclared class name {name!r} (classes: {list(class_names)})", image=image)
                continue
            if difficult and not keep_difficult:
                continue
            kept.append([c - 1.0 for c in corners] + [class_of[name]])
        rows = np.asarray(kept, np.float64).reshape(-1, 5)
        height, width = max(size[0], 1), max(size[1], 1)
        b, keep = normalized_boxes(rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3], width, height)
        boxes.append(b[keep])
        classes.append(rows[keep, 4].astype(np.int32))
    crowd = [np.zeros(len(c), bool) for c in classes]
    return Annotations(root, class_names, tuple(range(1, len(class_names) + 1)), paths, ids, sizes, boxes, classes,
                       crowd), problems
