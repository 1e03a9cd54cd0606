"""What several subcommands share: the dataset flags and how they resolve to a source, config files, errors."""

import argparse
import os

from keras_focal.cli import defaults

# Arguments that are not settings of a run: never written to, nor read from, a config.yaml.
NOT_CONFIG = ("command", "config", "_run")


class UsageError(Exception):
    """A command-line mistake: `keras-focal` prints it with the usage and exits with status 2."""


def require_path(path, flag):
    """UsageError naming the flag when `path` does not exist."""
    if path and not os.path.exists(path):
        raise UsageError(f"argument {flag}: {path} does not exist")


def add_source_arguments(group, dataset_help="a tfds name (keras_focal_shapes, coco/2017, voc/2007, voc/2012), a "
                         "COCO-format .json file, a Pascal VOC folder, a YOLO data .yaml, or a folder in COCO's "
                         "layout (annotations/instances_train.json, train/, ...)"):
    """--data, --dataset, --image-dir, --data-dir."""
    group.add_argument("--data", default=None, metavar="DATA.yaml",
                       help="the dataset in one file: format, train / val / test {annotations, images}, names "
                            "(docs/own-data.md); replaces --dataset and the image folders")
    group.add_argument("--dataset", default=None, help=f"{dataset_help} (default: {defaults.DATASET})")
    group.add_argument("--image-dir", default=None,
                       help="image folder of a COCO .json (default: the file's folder) or VOC --dataset")
    group.add_argument("--data-dir", default=None, help="tensorflow-datasets data_dir (default: tfds' own)")


def _spec_of(args):
    """The DataSpec of --data, or of a --dataset folder in COCO's layout, else None."""
    from keras_focal.data import spec

    if args.data:
        for flag, value in (("--dataset", args.dataset), ("--image-dir", args.image_dir)):
            if value:
                raise UsageError(f"argument --data: not allowed with {flag} (the file names the dataset and its "
                                 "images)")
        require_path(args.data, "--data")
        return spec.read_spec(args.data)
    if args.dataset and os.path.isdir(args.dataset):
        return spec.coco_layout(args.dataset)
    return None


def resolve_split(args, split, dataset=None, image_dir=None, flag="--dataset", image_flag="--image-dir"):
    """The DataSplit (keras_focal.data.spec) that the flags name for `split`: by default the main source (--data, a
    folder in COCO's layout, or --dataset with --image-dir; the built-in dataset when none is given), else `dataset`
    with `image_dir` (e.g. --eval-dataset, --eval-image-dir). A missing path is a UsageError naming the flag it came
    from."""
    from keras_focal.data import catalog, spec

    if dataset is None:  # the main source, with its own image folder
        dataset, image_dir = args.dataset, args.image_dir
        layout = _spec_of(args)
        if layout is not None:
            return layout.split(split), layout
    dataset = dataset or defaults.DATASET
    if catalog.is_source_path(dataset):
        require_path(dataset, flag)
    elif not catalog.is_tfds_name(dataset):
        try:
            catalog.resolve_name(dataset)
        except ValueError as e:  # names the datasets there are
            raise UsageError(f"argument {flag}: {e}") from None
    elif image_dir:
        raise UsageError(f"argument {image_flag}: applies to annotation files, not to the tfds dataset {dataset}")
    require_path(image_dir, image_flag)
    return spec.DataSplit(dataset, split, image_dir, args.data_dir), None


def class_names_of(part, layout=None):
    """The class names of a DataSplit (checked against the spec's `names` when it has them)."""
    from keras_focal import data

    info = data.dataset_info(part.source, class_names=part.class_names)
    if layout is not None:
        layout.check_class_names(info.class_names)
    return info


def load(part, **options):
    from keras_focal import data

    return data.load(part.source, part.split, **part.load_options(), **options)


def square_or_pair(values, model=None):
    """--image-size H [W] -> (H, W); None -> the model's image_size, else the shared default."""
    if values:
        return tuple(values) if len(values) == 2 else (values[0],) * 2
    return tuple(getattr(model, "image_size", None) or (defaults.IMAGE_SIZE,) * 2)


def config_values(args):
    """The settings of a namespace, as written to config.yaml."""
    return {k: v for k, v in sorted(vars(args).items()) if k not in NOT_CONFIG}


def write_config(args, path):
    import yaml

    with open(path, "w", encoding="utf-8") as f:
        f.write(f"# keras-focal {args.command} --config {path} repeats this run; flags given with it win.\n")
        yaml.safe_dump(config_values(args), f, sort_keys=True)


def read_config(path, parser):
    """{dest: value} of a config.yaml, checked against the parser: an unknown key or a value outside an argument's
    choices is a UsageError naming it."""
    import yaml

    require_path(path, "--config")
    with open(path, encoding="utf-8") as f:
        values = yaml.safe_load(f) or {}
    if not isinstance(values, dict):
        raise UsageError(f"argument --config: {path} is not a mapping of argument names to values")
    actions = {a.dest: a for a in parser._actions if a.dest != argparse.SUPPRESS}
    for key, value in values.items():
        if key not in actions or key in NOT_CONFIG:
            raise UsageError(f"argument --config: {path} has the unknown setting {key!r}")
        choices = actions[key].choices
        items = value if isinstance(value, list) else [value]
        if choices is not None and value is not None and any(v not in choices for v in items):
            raise UsageError(f"argument --config: {path}: {key} must be one of {sorted(choices)}, got {value!r}")
    return values
