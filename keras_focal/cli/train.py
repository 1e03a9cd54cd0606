"""Train a detector, evaluate it with COCO mAP and export it for TF Serving.

With no arguments it is the main job: the compact GFL detector (ResNet-18, FPN and subnets 64 wide with 2 convs,
128 px, batch 8, AdamW, 4 epochs) on the built-in offline dataset (keras_focal_shapes), in about a quarter of an hour
on a 2-core CPU.

    keras-focal train
    keras-focal train --data data.yaml --image-size 512
    keras-focal train --dataset coco/ --image-size 512                # COCO's layout: annotations/, train/, val/
    keras-focal train --dataset annotations/instances_train.json --image-dir train \\
        --eval-dataset annotations/instances_val.json --eval-image-dir val
    keras-focal train --config runs/shapes_gfl/config.yaml            # the same run again

Every run writes runs/<name>/ (--run-dir): config.yaml (every resolved argument), model.keras, backup/ (what
resuming needs), logs/ (TensorBoard: loss terms and learning rate per step, COCO AP / AP50 / AP_S and validation
images with their detections at each evaluation), metrics.json and export.txt (where the SavedModel went). Before
the first step it checks the data: the share of boxes under 8 px at --image-size and the head's anchor coverage.
Kill it (or Ctrl-C) at any time and run the same command again: it resumes from the last finished epoch.
With TF_CONFIG naming several workers it trains with MultiWorkerMirroredStrategy (docs/distributed.md); run the same
command on every worker.
"""

import argparse
import json
import os
import re
import time

from keras_focal.cli import common, defaults
from keras_focal.cli import export as export_command


def add_arguments(p):
    """The train flags, in groups; to add a flag, add a line to the group it belongs to (its value reaches `run`
    as `args.<dest>`, and config.yaml records it)."""
    data = p.add_argument_group("data")
    common.add_source_arguments(data)
    data.add_argument("--eval-dataset", default=None,
                      help="source evaluated during and after training (default: the --eval-split of the training "
                           "source)")
    data.add_argument("--eval-image-dir", default=None,
                      help="image folder of --eval-dataset (default: --image-dir)")
    data.add_argument("--eval-split", default=defaults.EVAL_SPLIT, help="split evaluated (tfds, VOC, YOLO, --data)")
    data.add_argument("--image-size", type=int, default=defaults.IMAGE_SIZE,
                      help="square training and serving size in pixels")
    data.add_argument("--no-augment", action="store_true", help="disable flip and scale-jitter augmentation")
    recipe = _default_recipe()
    data.add_argument("--mosaic", type=float, default=recipe.mosaic, metavar="P",
                      help="probability that a training image is a mosaic of four (docs/input_pipeline.md)")
    data.add_argument("--mixup", type=float, default=recipe.mixup, metavar="P",
                      help="probability that a training image is blended with another (MixUp)")
    data.add_argument("--close-mosaic", type=int, default=recipe.close_mosaic, metavar="EPOCHS",
                      help="train the last EPOCHS epochs without mosaic and mixup")
    data.add_argument("--multi-scale", type=float, default=recipe.multi_scale, metavar="F",
                      help="resize each training batch to a random square size, a multiple of 32 within (1 +- F) x "
                           "--image-size (docs/input_pipeline.md)")
    data.add_argument("--letterbox", action="store_true",
                      help="resize keeping the aspect ratio and pad, in training, evaluation and the export (always "
                           "on with --torchvision-checkpoint: torchvision's models were trained that way)")
    data.add_argument("--encode-in", default="auto", choices=["auto", "pipeline", "model"],
                      help="where anchor targets are computed: in the tf.data pipeline or in the train step; "
                           "auto: pipeline with --data-service or a TPU, model otherwise (docs/input_pipeline.md)")
    data.add_argument("--data-service", default=None, metavar="grpc://HOST:PORT",
                      help="run the input pipeline on tf.data service workers of this dispatcher "
                           "(start them with python -m keras_focal.data.service)")
    data.add_argument("--no-check", action="store_true",
                      help="skip the data check before training (small boxes, anchor coverage)")
    data.add_argument("--check-images", type=int, default=defaults.CHECK_IMAGES,
                      help="images the data check reads (a tfds dataset is read image by image)")
    model = p.add_argument_group("model")
    model.add_argument("--backbone", default=defaults.BACKBONE, choices=defaults.BACKBONES,
                       help="ResNet depth of the backbone (keras-hub ResNetBackbone)")
    model.add_argument("--head", default=defaults.HEAD, choices=defaults.head_names(),
                       help="the registered detection head (retina: focal loss, 9 anchors per location; gfl: "
                            "QFL + DFL + GIoU with ATSS)")
    model.add_argument("--fpn-width", type=int, default=defaults.FPN_WIDTH,
                       help="FPN and head channels (the papers use 256)")
    model.add_argument("--head-convs", type=int, default=defaults.HEAD_CONVS, help="convs per subnet (the papers "
                                                                                   "use 4)")
    model.add_argument("--backbone-weights", default=None,
                       help="None for random init, 'imagenet' (needs a network), a local .weights.h5 file or a "
                            "torchvision ImageNet ResNet state_dict (.pth, needs torch)")
    model.add_argument("--torchvision-checkpoint", default=None, metavar="PATH",
                       help="fine-tune a torchvision RetinaNet state_dict (.pth); replaces --backbone, --head, "
                            "--fpn-width, --head-convs and --backbone-weights")
    model.add_argument("--torchvision-variant", default=defaults.TORCHVISION_VARIANTS[0],
                       choices=defaults.TORCHVISION_VARIANTS, help="architecture of --torchvision-checkpoint")
    model.add_argument("--trainable-backbone-layers", type=int, default=None,
                       help="backbone stages trained, from C5 down to the stem, 0-5 (torchvision's meaning; "
                            "default: all, 3 with --torchvision-checkpoint)")
    optim = p.add_argument_group("optimization")
    optim.add_argument("--epochs", type=int, default=defaults.EPOCHS, help="number of epochs")
    optim.add_argument("--batch-size", type=int, default=defaults.BATCH_SIZE,
                       help="global batch size, split over the replicas")
    optim.add_argument("--steps-per-epoch", type=int, default=None,
                       help="steps per epoch (default: one pass over the training split)")
    optim.add_argument("--optimizer", default="adamw", choices=["sgd", "adamw"],
                       help="sgd: momentum 0.9 as in the paper; adamw: trains faster from random init")
    optim.add_argument("--learning-rate", type=float, default=None,
                       help="base learning rate (default: 0.01 * batch/16 for sgd, 1e-3 for adamw)")
    optim.add_argument("--weight-decay", type=float, default=1e-4, help="weight decay (paper: 1e-4)")
    optim.add_argument("--warmup-steps", type=int, default=recipe.warmup_steps, help="linear warmup steps")
    optim.add_argument("--schedule", default=recipe.schedule, choices=["cosine", "step"],
                       help="cosine: Keras' CosineDecay to 1%% of the rate; step: 10x drops at --decay-epochs")
    optim.add_argument("--ema", action=argparse.BooleanOptionalAction, default=recipe.ema,
                       help="train with an exponential moving average of the weights; it is what is evaluated, "
                            "saved and exported")
    optim.add_argument("--ema-momentum", type=float, default=recipe.ema_momentum, help="EMA decay per step")
    optim.add_argument("--decay-epochs", type=int, nargs="*", default=None,
                       help="epochs after which the rate drops 10x (default: at 2/3 and 8/9 of training, as the 1x "
                            "schedule)")
    optim.add_argument("--clipnorm", type=float, default=10.0,
                       help="clip the global gradient norm (0: off); keeps from-scratch training stable")
    optim.add_argument("--mixed-precision", action="store_true", help="mixed_float16 (GPU) compute")
    optim.add_argument("--jit-compile", action="store_true", help="compile the train step with XLA")
    optim.add_argument("--seed", type=int, default=0, help="random seed")
    run_group = p.add_argument_group("run")
    run_group.add_argument("--name", default=None,
                           help="run name: the run folder runs/<name>/ and the export saved_models/<name>/ "
                                "(default: <dataset>_<head>, e.g. shapes_gfl)")
    run_group.add_argument("--run-dir", "--model-dir", dest="run_dir", default=None,
                           help="the run folder: config.yaml, model.keras, backup/, logs/, metrics.json "
                                "(default: runs/<name>)")
    run_group.add_argument("--export-dir", default=None,
                           help="SavedModel export base; versions go to <export-dir>/<n>/ ('' to skip; default: "
                                "saved_models/<name>)")
    export_command.add_limit_arguments(run_group)
    run_group.add_argument("--eval-every", type=int, default=0,
                           help="COCO evaluation every N epochs during training (0: only at the end)")
    run_group.add_argument("--log-every", type=int, default=10,
                           help="TensorBoard: loss terms and learning rate every N steps")
    run_group.add_argument("--tensorboard-images", type=int, default=4,
                           help="validation images drawn with their detections at each evaluation (0: none)")
    run_group.add_argument("--tpu", default=None, help="TPU name or 'local' to train on a TPU")


def run_name(args):
    """<dataset>_<head>: 'shapes_gfl' for the built-in dataset; a file's folder when its own name says nothing."""
    source = args.data or args.dataset or defaults.DATASET
    if args.torchvision_checkpoint:
        head = "torchvision"
    else:
        head = args.head
    stem = os.path.splitext(os.path.basename(os.path.normpath(source)))[0]
    if stem in ("data", "dataset", "instances", "annotations") or stem.startswith("instances_"):
        parent = os.path.dirname(os.path.dirname(os.path.abspath(source))) if stem.startswith("instances") \
            else os.path.dirname(os.path.abspath(source))
        stem = os.path.basename(parent) or stem
    stem = re.sub(r"^keras_focal_", "", stem)
    stem = re.sub(r"[^A-Za-z0-9.-]+", "_", stem).strip("_") or "run"
    return f"{stem}_{head}"


def _default_recipe():
    from keras_focal.training.recipe import Recipe

    return Recipe()


def recipe_of(args):
    """The `keras_focal.training.Recipe` the flags describe."""
    from keras_focal.training.recipe import Recipe

    return Recipe(schedule=args.schedule, warmup_steps=args.warmup_steps, ema=args.ema,
                  ema_momentum=args.ema_momentum, mosaic=args.mosaic, mixup=args.mixup,
                  close_mosaic=args.close_mosaic, multi_scale=args.multi_scale)


def resolve(args):
    """Fills the arguments whose default depends on others (name, run folder, export folder, eval image folder),
    so config.yaml holds every value the run used."""
    args.name = args.name or run_name(args)
    args.run_dir = args.run_dir or os.path.join(defaults.RUNS_ROOT, args.name)
    if args.export_dir is None:
        args.export_dir = os.path.join(defaults.EXPORT_ROOT, args.name)
    if args.eval_image_dir is None and args.eval_dataset:
        args.eval_image_dir = args.image_dir
    return args


def build_model(args, info, size):
    """The detector the flags describe, built under the current strategy scope."""
    import keras_focal
    from keras_focal.models.heads import get_head

    if args.torchvision_checkpoint:
        options = {} if args.trainable_backbone_layers is None else {
            "trainable_backbone_layers": args.trainable_backbone_layers}
        return keras_focal.models.from_torchvision(
            args.torchvision_checkpoint, args.torchvision_variant, num_classes=info.num_classes, image_size=size,
            class_names=info.class_names, **options)
    return keras_focal.models.RetinaNet(
        info.num_classes, backbone=args.backbone, head=get_head(args.head, num_convs=args.head_convs),
        fpn_width=args.fpn_width, image_size=size, backbone_weights=args.backbone_weights,
        trainable_backbone_layers=args.trainable_backbone_layers, letterbox=args.letterbox,
        class_names=info.class_names)


def check_data(args, part, model):
    """Prints the data check (keras_focal.data_check) of the training split for the model's head."""
    from keras_focal import data_check

    boxes = data_check.read_boxes(part.source, part.split, image_dir=part.image_dir, data_dir=part.data_dir,
                                  class_names=part.class_names, max_images=args.check_images)
    report = data_check.check_boxes(boxes, model.detection_head, args.image_size, args.check_images)
    print(f"Data check of {part.source} [{part.split}], {len(boxes.boxes)} images:")
    print("\n".join("  " + line for line in report.lines()))
    return report


def run(args):
    import keras
    import tensorflow as tf

    import keras_focal
    from keras_focal import data, evaluation, training
    from keras_focal.training.placement import encode_placement
    from keras_focal.training.summaries import TensorBoardSummaries

    resolve(args)
    for flag, path in (("--torchvision-checkpoint", args.torchvision_checkpoint),
                       ("--backbone-weights", args.backbone_weights if args.backbone_weights != "imagenet" else None)):
        common.require_path(path, flag)
    train_part, layout = common.resolve_split(args, "train")
    if args.eval_dataset:
        eval_part, eval_layout = common.resolve_split(args, args.eval_split, args.eval_dataset, args.eval_image_dir,
                                                      "--eval-dataset", "--eval-image-dir")
    else:
        eval_part, eval_layout = common.resolve_split(args, args.eval_split)
    info = common.class_names_of(train_part, layout)
    eval_info = common.class_names_of(eval_part, eval_layout)
    if eval_info.class_names != info.class_names:
        raise data.DataSourceError(f"{eval_part.source} has the classes {list(eval_info.class_names)}, "
                                   f"{train_part.source} has {list(info.class_names)}")

    keras.utils.set_random_seed(args.seed)
    if args.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    strategy = training.select_strategy(args.tpu)
    chief = training.is_chief(strategy)
    print(f"Strategy: {type(strategy).__name__} with {strategy.num_replicas_in_sync} replica(s)")
    os.makedirs(args.run_dir, exist_ok=True)
    if chief:
        common.write_config(args, os.path.join(args.run_dir, "config.yaml"))
    print(f"Run folder {args.run_dir} (config.yaml: keras-focal train --config "
          f"{os.path.join(args.run_dir, 'config.yaml')} repeats it)")

    # The examples are read (and checked: annotations, image files) now, before the first training step.
    train_examples = common.load(train_part)
    num_train = int(train_examples.cardinality())
    eval_ds = common.load(eval_part)
    size = (args.image_size, args.image_size)
    try:
        recipe = recipe_of(args)
        mixer = recipe.mosaic_mixup()  # outside the strategy scope: its rates are host variables
        multi_scale = recipe.multi_scale_range(size)
    except ValueError as e:
        raise common.UsageError(str(e)) from None
    if mixer is not None and args.data_service:
        raise common.UsageError("--mosaic / --mixup read their rates from this process: they do not run on "
                                "tf.data service workers (--data-service)")
    with strategy.scope():
        model = build_model(args, info, size)
        steps = args.steps_per_epoch or max(1, num_train // args.batch_size)
        model.detection_head.total_steps = steps * args.epochs  # a head's training phases (TOOD's warm-up)
        optimizer = recipe.optimizer(
            args.optimizer, steps_per_epoch=steps, epochs=args.epochs, batch_size=args.batch_size,
            learning_rate=args.learning_rate, decay_epochs=args.decay_epochs, weight_decay=args.weight_decay,
            clipnorm=args.clipnorm)
        model.compile(optimizer=optimizer, jit_compile=args.jit_compile)
    if not args.no_check and chief:
        check_data(args, train_part, model)

    try:
        encode_in = encode_placement(args.encode_in, args.data_service, strategy, model)
    except ValueError as e:
        raise common.UsageError(str(e)) from None
    encoder = model.anchor_encoder if encode_in == "pipeline" else None
    print(f"Anchor targets encoded in the {encode_in}" + (f"; input from tf.data service {args.data_service}"
                                                         if args.data_service else ""))
    train_ds = data.make_dataset(
        train_examples, image_size=size, batch_size=args.batch_size, encoder=encoder, augment=not args.no_augment,
        shuffle=True, repeat=True, seed=args.seed, letterbox=model.letterbox, mosaic=mixer, multi_scale=multi_scale)
    if args.data_service:
        train_ds = data.service.distribute(train_ds, args.data_service)

    eval_options = dict(image_size=size, class_names=eval_info.class_names, category_ids=eval_info.category_ids)
    summaries = TensorBoardSummaries(
        os.path.join(args.run_dir, "logs"), every_n_steps=args.log_every, class_names=eval_info.class_names,
        images=[image.numpy() for image, _ in eval_ds.take(args.tensorboard_images)] if chief else None)
    eval_callback = None
    callbacks = [
        # Saves the whole training state at each epoch end (keeping the previous one until the new one is written);
        # a rerun after a kill resumes from there.
        keras.callbacks.BackupAndRestore(os.path.join(args.run_dir, "backup"), double_checkpoint=True),
    ]
    if chief:
        callbacks += [summaries, keras.callbacks.ModelCheckpoint(os.path.join(args.run_dir, "model.keras"))]
    if args.eval_every:
        eval_callback = evaluation.COCOEvalCallback(eval_ds, every_n_epochs=args.eval_every, **eval_options)
        callbacks.insert(0, eval_callback)  # first: the callbacks after it see val_AP in the epoch logs
    # BackupAndRestore, then the recipe's (closing mosaic, swapping the EMA in), then evaluation and checkpoints.
    callbacks = recipe.callbacks(callbacks, optimizer, mixer, epochs=args.epochs)

    start = time.time()
    try:
        if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
            # Keras 3's fit fails under MultiWorkerMirroredStrategy (docs/distributed.md); the package's loop does
            # the same job, with BackupAndRestore's role played by its own checkpoint (the chief writes, every worker
            # restores). Each worker reads its own shard of the examples: the shuffled, parallel-augmented pipeline
            # is not in the same order on every worker, so AutoShardPolicy.DATA could repeat or skip examples.
            def worker_dataset(context):
                return data.make_dataset(
                    train_examples.shard(context.num_input_pipelines, context.input_pipeline_id), image_size=size,
                    batch_size=context.get_per_replica_batch_size(args.batch_size), encoder=encoder,
                    augment=not args.no_augment, shuffle=True, repeat=True, seed=args.seed,
                    letterbox=model.letterbox, mosaic=mixer, multi_scale=multi_scale)

            # The loop checkpoints after the epoch-end callbacks, so the EMA is not swapped in during training
            # (its evaluations see the raw weights); the model takes the EMA at the end, as fit does.
            loop_callbacks = [c for c in callbacks if not isinstance(
                c, (keras.callbacks.BackupAndRestore, keras.callbacks.SwapEMAWeights))]
            training.distributed_fit(model, worker_dataset, epochs=args.epochs, steps_per_epoch=steps,
                                     strategy=strategy, model_dir=os.path.join(args.run_dir, "train_state"),
                                     callbacks=loop_callbacks)
            optimizer.finalize_variable_values(model.trainable_variables)
        else:
            model.fit(train_ds, epochs=args.epochs, steps_per_epoch=steps, callbacks=callbacks)
    except KeyboardInterrupt:
        # The state of the last finished epoch is on disk (backup/, written whole at each epoch end); the epoch
        # under way is trained again on resume.
        summaries.close()
        print(f"\nInterrupted after {time.time() - start:.0f} s. The state after the last finished epoch is in "
              f"{os.path.join(args.run_dir, 'backup')}; run the same command (or keras-focal train --config "
              f"{os.path.join(args.run_dir, 'config.yaml')}) to resume.")
        raise SystemExit(130) from None
    print(f"Training took {time.time() - start:.0f} s")

    if eval_callback is not None and eval_callback.history and eval_callback.history[-1][0] == args.epochs - 1:
        metrics = eval_callback.last_metrics  # the last epoch was just evaluated
    else:
        metrics = evaluation.evaluate_model(model, eval_ds, **eval_options)
        if chief:
            summaries.write_evaluation(model, metrics, int(model.optimizer.iterations.numpy()))
    summaries.close()
    described = f"{eval_part.source}" + ("" if eval_part.source.endswith(".json") else f" [{eval_part.split}]")
    print(f"COCO evaluation on {described}:")
    print(evaluation.format_coco_table(metrics))
    if chief:
        with open(os.path.join(args.run_dir, "metrics.json"), "w") as f:
            json.dump({k: (None if v != v else v) for k, v in metrics.items()}, f, indent=2)
    if chief and args.export_dir:
        version_dir = keras_focal.export.export_saved_model(model, args.export_dir, **export_command.limits(args))
        with open(os.path.join(args.run_dir, "export.txt"), "w") as f:
            f.write(os.path.abspath(version_dir) + "\n")
        print(f"Exported SavedModel to {version_dir}")
    return metrics
