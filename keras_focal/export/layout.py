"""What an export directory holds, read back without TensorFlow: the version folders TF Serving loads, the class
names (`assets/labels.txt`) and the input limits (`assets/limits.json`) of a version.

    saved_models/<name>/            TF Serving's base_path
        <version>/                  an integer folder name (the rule below); the highest one is served
            saved_model.pb, variables/, assets.extra/tf_serving_warmup_requests
            assets/labels.txt       one class name per line, line i (0-based) = detection class i, UTF-8
            assets/limits.json      {"max_image_pixels": int or null, "max_batch_size": int or null}

TF Serving loads the children of its base path whose name parses as an integer (`safe_strto64`, in
`tensorflow_serving/sources/storage_path/file_system_storage_path_source.cc`: optional surrounding whitespace and
a leading "+", decimal digits). `parse_version` applies that rule; every reader of version folders in keras_focal
goes through it.
"""

import json
import os
import re

LABELS_FILE = "labels.txt"
LIMITS_FILE = "limits.json"
ASSETS_DIR = "assets"
_VERSION_RE = re.compile(r"^\s*\+?(\d+)\s*$")  # what TF Serving's safe_strto64 accepts as a version >= 0


def parse_version(name):
    """The version number TF Serving would read from a directory name, or None."""
    match = _VERSION_RE.match(name)
    return int(match.group(1)) if match else None


def existing_versions(export_dir):
    """Sorted version numbers of the version directories under `export_dir` ([] if it does not exist)."""
    export_dir = os.fspath(export_dir)
    if not os.path.isdir(export_dir):
        return []
    return sorted(version for name in os.listdir(export_dir)
                  if (version := parse_version(name)) is not None and os.path.isdir(os.path.join(export_dir, name)))


def latest_version_dir(export_dir):
    """The directory of the highest version under `export_dir` that holds a `saved_model.pb` (the one TF Serving
    serves by default), or None when there is none."""
    export_dir = os.fspath(export_dir)
    if not os.path.isdir(export_dir):
        return None
    best = None
    for name in os.listdir(export_dir):
        version = parse_version(name)
        if version is not None and os.path.isfile(os.path.join(export_dir, name, "saved_model.pb")):
            if best is None or version > best[0]:
                best = (version, name)
    return None if best is None else os.path.join(export_dir, best[1])


def _asset(path, filename):
    """`path` itself when it is a file, else `<path>/assets/<filename>`."""
    path = os.fspath(path)
    return path if os.path.isfile(path) else os.path.join(path, ASSETS_DIR, filename)


def read_class_names(path):
    """The class names of an export: `path` is a version directory (its `assets/labels.txt` is read) or a labels
    file itself. None when the export has no labels file."""
    path = _asset(path, LABELS_FILE)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return tuple(line.rstrip("\n") for line in f)


def write_class_names(path, class_names):
    with open(path, "w", encoding="utf-8") as f:
        f.write("".join(f"{name}\n" for name in class_names))


def read_input_limits(path):
    """The input limits of an export: `path` is a version directory (its `assets/limits.json`) or the file itself.
    A dict {"max_image_pixels", "max_batch_size"} (None = no limit); None for an export without the file (one
    written before the limits existed, which has none)."""
    path = _asset(path, LIMITS_FILE)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def write_input_limits(path, max_image_pixels, max_batch_size):
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"max_image_pixels": max_image_pixels, "max_batch_size": max_batch_size}, f, indent=2)
        f.write("\n")
