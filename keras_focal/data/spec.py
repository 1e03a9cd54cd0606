"""A dataset described in one YAML file (`keras-focal train --data DATA.yaml`), any format, in the spirit of
ultralytics' `data.yaml`:

    format: coco            # coco | voc | yolo | tfds
    train: {annotations: annotations/instances_train.json, images: train}
    val:   {annotations: annotations/instances_val.json, images: val}
    names: [cat, dog]       # optional: overrides (VOC) or checks (the others) the class names

    spec = read_spec("data.yaml")
    part = spec.split("val")                    # DataSplit(source, split, image_dir, data_dir)
    ds = keras_focal.data.load(part.source, part.split, **part.load_options())

Paths are relative to the YAML file's folder, or to `path:` when given (itself relative to the file's folder).
Entries per format:
- coco: `{annotations: FILE.json, images: FOLDER}` (`images` defaults to the JSON file's folder), or just the
  JSON path;
- voc: `{annotations: VOC_FOLDER, images: FOLDER, split: NAME}` (`split` defaults to the entry's own name,
  `ImageSets/Main/<split>.txt`), or just the folder;
- tfds: `name: coco/2017` (and optional `data_dir:`), entries are split expressions (`train: "train[:90%]"`);
- yolo: the ultralytics file itself, read by the YOLO reader (`path`, `train`, `val`, `test`, `names`); a YAML
  without `format` that has `names` and string entries is taken as one, so a YOLO `data.yaml` works as it is.

`coco_layout(folder)` recognizes COCO's own layout (`annotations/instances_train*.json`, `instances_val*.json` and
the image folders `train*/`, `val*/` beside `annotations/`) and returns the same `DataSpec`.
"""

from __future__ import annotations

import dataclasses
import glob
import os

from keras_focal.data.sources import DataSourceError

FORMATS = ("coco", "voc", "yolo", "tfds")
SPLITS = ("train", "val", "test")
# The split names the rest of the package uses for the spec's keys (tfds and VOC call the second "validation").
SPLIT_ALIASES = {"train": "train", "val": "val", "validation": "val", "test": "test"}


@dataclasses.dataclass(frozen=True)
class DataSplit:
    """One split: what `keras_focal.data.load(source, split, image_dir=..., data_dir=..., class_names=...)` takes."""

    source: str
    split: str = "train"
    image_dir: str | None = None
    data_dir: str | None = None
    class_names: tuple | None = None  # VOC only: the classes named by the spec

    def load_options(self):
        options = {"image_dir": self.image_dir, "data_dir": self.data_dir, "class_names": self.class_names}
        return {k: v for k, v in options.items() if v is not None}


@dataclasses.dataclass(frozen=True)
class DataSpec:
    path: str
    format: str
    splits: dict  # "train" / "val" / "test" -> DataSplit
    names: tuple | None = None

    def split(self, name):
        """The DataSplit of "train", "val" ("validation") or "test"; DataSourceError naming the file if absent."""
        key = SPLIT_ALIASES.get(name, name)
        if key not in self.splits:
            raise DataSourceError(f"{self.path} has no {name!r} entry (it has {', '.join(self.splits) or 'none'})")
        return self.splits[key]

    def check_class_names(self, class_names):
        """Raises DataSourceError when `names` is given and the source's classes differ."""
        if self.names is not None and tuple(class_names) != self.names:
            raise DataSourceError(f"{self.path}: 'names' is {list(self.names)} but the {self.format} annotations "
                                  f"have the classes {list(class_names)}")


def _names(path, names):
    if names is None:
        return None
    if isinstance(names, dict):
        if sorted(names) != list(range(len(names))):
            raise DataSourceError(f"{path}: 'names' keys must be the class indices 0..{len(names) - 1}")
        names = [names[i] for i in range(len(names))]
    if not isinstance(names, (list, tuple)) or not names:
        raise DataSourceError(f"{path}: 'names' must be a non-empty list or an index -> name mapping")
    return tuple(str(n) for n in names)


def _file_entry(path, root, key, entry, fmt, names):
    """A coco / voc entry -> DataSplit, its paths resolved against `root`; a missing path is named with its key."""
    if isinstance(entry, str):
        entry = {"annotations": entry}
    if not isinstance(entry, dict) or "annotations" not in entry:
        raise DataSourceError(f"{path}: '{key}' must be {{annotations: ..., images: ...}} or a path")
    unknown = sorted(set(entry) - {"annotations", "images", "split"})
    if unknown:
        raise DataSourceError(f"{path}: '{key}' has unknown keys {unknown} (expected annotations, images, split)")
    resolved = {k: os.path.normpath(os.path.join(root, os.fspath(entry[k])))
                for k in ("annotations", "images") if entry.get(k) is not None}
    for k, p in resolved.items():
        if not os.path.exists(p):
            raise DataSourceError(f"{path}: {key}.{k} {p} does not exist")
    split = str(entry.get("split") or ("validation" if key == "val" else key))
    return DataSplit(resolved["annotations"], split if fmt == "voc" else key, resolved.get("images"),
                     class_names=names if fmt == "voc" else None)


def read_spec(path):
    """The `DataSpec` of a dataset YAML; DataSourceError naming the file (and the key) for what is wrong in it."""
    import yaml

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataSourceError(f"dataset file {path} does not exist")
    try:
        with open(path, encoding="utf-8") as f:
            config = yaml.safe_load(f)
    except yaml.YAMLError as e:
        raise DataSourceError(f"{path}: malformed YAML ({e})") from None
    if not isinstance(config, dict):
        raise DataSourceError(f"{path}: expected a YAML mapping with 'format' and 'train' / 'val' / 'test'")
    fmt = config.get("format")
    if fmt is None and "names" in config and all(isinstance(config.get(k), (str, list, type(None))) for k in SPLITS):
        fmt = "yolo"
    if fmt not in FORMATS:
        raise DataSourceError(f"{path}: 'format' must be one of {', '.join(FORMATS)}, got {fmt!r}")
    names = _names(path, config.get("names"))
    if fmt == "yolo":
        # The YOLO reader resolves `path`, the split folders / lists and the label files itself.
        splits = {k: DataSplit(path, k) for k in SPLITS if config.get(k)}
        return DataSpec(path, fmt, splits, names)
    base = os.path.dirname(os.path.abspath(path))
    root = os.path.normpath(os.path.join(base, os.fspath(config.get("path") or ".")))
    if fmt == "tfds":
        if not config.get("name"):
            raise DataSourceError(f"{path}: format tfds needs 'name' (e.g. coco/2017)")
        data_dir = config.get("data_dir")
        data_dir = os.path.normpath(os.path.join(root, data_dir)) if data_dir else None
        splits = {}
        for key in SPLITS:
            entry = config.get(key)
            if isinstance(entry, dict):
                entry = entry.get("split")
            if entry:
                splits[key] = DataSplit(str(config["name"]), str(entry), data_dir=data_dir)
        return DataSpec(path, fmt, splits, names)
    splits = {key: _file_entry(path, root, key, config[key], fmt, names) for key in SPLITS if config.get(key)}
    if not splits:
        raise DataSourceError(f"{path}: no 'train', 'val' or 'test' entry")
    return DataSpec(path, fmt, splits, names)


def coco_layout(folder):
    """The DataSpec of a folder in COCO's layout, or None when it is not one:
    FOLDER/annotations/instances_<train|val|test><suffix>.json with images in FOLDER/<train|val|test><suffix>/
    (suffix "" or a year, e.g. instances_val2017.json and val2017/)."""
    folder = os.fspath(folder)
    if not os.path.isdir(os.path.join(folder, "annotations")):
        return None
    splits = {}
    for key in SPLITS:
        for annotations in sorted(glob.glob(os.path.join(folder, "annotations", f"instances_{key}*.json"))):
            suffix = os.path.basename(annotations)[len(f"instances_{key}"):-len(".json")]
            images = os.path.join(folder, key + suffix)
            if os.path.isdir(images):
                splits[key] = DataSplit(os.path.normpath(annotations), key, os.path.normpath(images))
                break
    if "train" not in splits:
        return None
    return DataSpec(folder, "coco", splits)
