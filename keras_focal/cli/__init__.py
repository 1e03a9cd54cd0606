"""`keras-focal`, the command line (also `python -m keras_focal`): one module per subcommand, each a thin layer
that parses flags and calls the package.

    keras-focal train                                   # the main job: built-in dataset, evaluate, export
    keras-focal train --data data.yaml --image-size 512
    keras-focal train --config runs/shapes_gfl/config.yaml --epochs 8   # a run repeated; flags win
    keras-focal evaluate --model saved_models/shapes_gfl
    keras-focal predict --model saved_models/shapes_gfl --images photos/
    keras-focal export --checkpoint runs/shapes_gfl/model.keras --format tflite
    keras-focal inspect --dataset train/instances.json --image-size 512
    keras-focal convert retinanet_coco.pth --output retinanet_coco.keras

Each subcommand module has `add_arguments(parser)` and `run(args)`. `main(argv)` returns what `run` returns (the
metrics of train / evaluate, ...), so tests and notebooks call it in process; `console()` is the installed script.
Errors: a wrong flag, or a path given by a flag that does not exist, exits with status 2 and a message naming the
flag (argparse's `error`); bad content in a dataset exits with status 1 and a message naming the file.
"""

import argparse
import importlib
import os
import sys

from keras_focal.cli.common import UsageError, read_config

SUBCOMMANDS = ("train", "evaluate", "predict", "export", "inspect", "convert")


def build_parser():
    """(the `keras-focal` parser, {subcommand: its sub-parser})."""
    from keras_focal.version import __version__

    parser = argparse.ArgumentParser(prog="keras-focal", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"keras_focal {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers = {}
    for name in SUBCOMMANDS:
        module = importlib.import_module(f"keras_focal.cli.{name}")
        sub = commands.add_parser(name, help=module.__doc__.split("\n")[0], description=module.__doc__,
                                  formatter_class=_Formatter)
        module.add_arguments(sub)
        sub.add_argument("--config", default=None, metavar="FILE",
                         help="read the arguments from a config.yaml (one written in a run folder); flags given on "
                              "the command line win")
        sub.set_defaults(_run=module.run)
        subparsers[name] = sub
    return parser, subparsers


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """The description as written; "(default: X)" after a flag's help unless it is None or the help says it."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default not in (None, False, argparse.SUPPRESS) and "default" not in text and action.option_strings:
            text += " (default: %(default)s)"
        return text


def parse_args(argv=None):
    """The resolved argparse namespace of a command line (with `--config` applied), and its sub-parser."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, subparsers = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        parser.exit(2, "\nkeras-focal: error: name a subcommand (train, evaluate, predict, export, inspect, "
                       "convert)\n")
    sub = subparsers[args.command]
    if args.config:
        try:
            sub.set_defaults(**read_config(args.config, sub))
        except UsageError as e:
            sub.error(str(e))
        args = parser.parse_args(argv)
    return args, sub


def main(argv=None):
    """Runs one `keras-focal` command line (a list of arguments; default sys.argv) and returns its result."""
    args, sub = parse_args(argv)
    from keras_focal.data import DataSourceError

    try:
        return args._run(args)
    except UsageError as e:
        sub.error(str(e))
    except DataSourceError as e:  # bad content in a dataset: the message names the file
        sub.exit(1, f"keras-focal {args.command}: error: {e}\n")


def console():
    """The `keras-focal` console script."""
    main()
    sys.exit(0)
