"""Train a keras_focal detector, evaluate it with COCO mAP and export it for TF Serving.

With no arguments it trains a compact detector on the built-in offline dataset (keras_focal_shapes) in about a
quarter of an hour on a 2-core CPU: ResNet-18, FPN and subnets 64 wide with 2 convs (the papers: 256 and 4), the GFL
head (it learns fastest from random init: QFL + DFL + GIoU, ATSS, GroupNorm subnets), 128 px, batch 8, AdamW,
4 epochs. Pass --head retina for the RetinaNet head.

    python examples/train.py

Your own annotations: --dataset takes a COCO-format .json file, a Pascal VOC folder or a YOLO data .yaml
(docs/own-data.md); the model then carries the dataset's class names, in the .keras file and in the SavedModel
(assets/labels.txt).

    python examples/train.py --dataset train/instances.json --eval-dataset val/instances.json --image-size 512
    python examples/train.py --dataset data.yaml --model-dir runs/mine --export-dir saved_models/mine

Kill it at any time and run the same command again: it resumes from the last finished epoch
(keras.callbacks.BackupAndRestore in --model-dir).

With TF_CONFIG naming several workers it trains with MultiWorkerMirroredStrategy through
keras_focal.training.distributed_fit (see docs/distributed.md); run the same command on every worker.
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    data = p.add_argument_group("data")
    data.add_argument("--dataset", default="keras_focal_shapes",
                      help="tfds name: keras_focal_shapes (built-in, offline), coco/2017, voc/2007, voc/2012; or a "
                           "COCO-format .json file, a Pascal VOC folder, a YOLO data .yaml")
    data.add_argument("--eval-dataset", default=None,
                      help="source evaluated after training (default: the --eval-split of --dataset)")
    data.add_argument("--image-dir", default=None,
                      help="image folder of a COCO .json (default: the file's folder) or VOC --dataset")
    data.add_argument("--data-dir", default=None, help="tensorflow-datasets data_dir (default: tfds' own)")
    data.add_argument("--image-size", type=int, default=128, help="square training and serving size in pixels")
    data.add_argument("--no-augment", action="store_true", help="disable flip and scale-jitter augmentation")
    data.add_argument("--letterbox", action="store_true",
                      help="resize keeping the aspect ratio and pad, in training, evaluation and the export (always on "
                           "with --torchvision-checkpoint: torchvision's models were trained that way)")
    data.add_argument("--encode-in", default="auto", choices=["auto", "pipeline", "model"],
                      help="where anchor targets are computed: in the tf.data pipeline or in the train step; "
                           "auto: pipeline with --data-service, model otherwise (docs/input_pipeline.md)")
    data.add_argument("--data-service", default=None, metavar="grpc://HOST:PORT",
                      help="run the input pipeline on tf.data service workers of this dispatcher "
                           "(start them with python -m keras_focal.data.service)")
    model = p.add_argument_group("model")
    model.add_argument("--backbone", default="resnet18", choices=["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"],
                       help="ResNet depth of the backbone (keras-hub ResNetBackbone)")
    model.add_argument("--head", default="gfl", choices=["retina", "gfl"],
                       help="retina: focal loss, 9 anchors per location; gfl: QFL + DFL + GIoU with ATSS")
    model.add_argument("--fpn-width", type=int, default=64, help="FPN and head channels (the papers use 256)")
    model.add_argument("--head-convs", type=int, default=2, help="convs per subnet (the papers use 4)")
    model.add_argument("--backbone-weights", default=None,
                       help="None for random init, 'imagenet' (needs a network), a local .weights.h5 file or a "
                            "torchvision ImageNet ResNet state_dict (.pth, needs torch)")
    model.add_argument("--torchvision-checkpoint", default=None, metavar="PATH",
                       help="fine-tune a torchvision RetinaNet state_dict (.pth); replaces --backbone, --head, "
                            "--fpn-width, --head-convs and --backbone-weights")
    model.add_argument("--torchvision-variant", default="retinanet_resnet50_fpn",
                       choices=["retinanet_resnet50_fpn", "retinanet_resnet50_fpn_v2"],
                       help="architecture of --torchvision-checkpoint")
    model.add_argument("--trainable-backbone-layers", type=int, default=None,
                       help="backbone stages trained, from C5 down to the stem, 0-5 (torchvision's meaning; "
                            "default: all, 3 with --torchvision-checkpoint)")
    optim = p.add_argument_group("optimization")
    optim.add_argument("--epochs", type=int, default=4, help="number of epochs")
    optim.add_argument("--batch-size", type=int, default=8, help="global batch size, split over the replicas")
    optim.add_argument("--steps-per-epoch", type=int, default=None,
                       help="steps per epoch (default: one pass over the training split)")
    optim.add_argument("--optimizer", default="adamw", choices=["sgd", "adamw"],
                       help="sgd: momentum 0.9 as in the paper; adamw: trains faster from random init")
    optim.add_argument("--learning-rate", type=float, default=None,
                       help="base learning rate (default: 0.01 * batch/16 for sgd, 1e-3 for adamw)")
    optim.add_argument("--weight-decay", type=float, default=1e-4, help="weight decay (paper: 1e-4)")
    optim.add_argument("--warmup-steps", type=int, default=200, help="linear warmup steps")
    optim.add_argument("--decay-epochs", type=int, nargs="*", default=None,
                       help="epochs after which the rate drops 10x (default: at 2/3 and 8/9 of training, as the 1x schedule)")
    optim.add_argument("--clipnorm", type=float, default=10.0,
                       help="clip the global gradient norm (0: off); keeps from-scratch training stable")
    optim.add_argument("--mixed-precision", action="store_true", help="mixed_float16 (GPU) compute")
    optim.add_argument("--jit-compile", action="store_true", help="compile the train step with XLA")
    optim.add_argument("--seed", type=int, default=0, help="random seed")
    run = p.add_argument_group("run")
    run.add_argument("--model-dir", default="runs/shapes_gfl",
                     help="checkpoints (model.keras), BackupAndRestore state and TensorBoard logs")
    run.add_argument("--export-dir", default="saved_models/shapes_gfl",
                     help="SavedModel export base; versions go to <export-dir>/<n>/ ('' to skip)")
    run.add_argument("--eval-every", type=int, default=0, help="COCO evaluation every N epochs during training (0: only at the end)")
    run.add_argument("--eval-split", default="validation", help="split used for evaluation")
    run.add_argument("--tpu", default=None, help="TPU name or 'local' to train on a TPU")
    return p.parse_args(argv)


def encode_placement(requested, data_service, strategy=None):
    """Where anchor targets are computed. "auto": in the pipeline when tf.data service workers run it (their CPU
    is not the trainer's) or on a TPU (static shapes), else in the model: on a 2-core CPU the train step with
    in-graph encoding was as fast or faster than encoding in tf.data (benchmarks/encode_placement.py), and on a
    GPU the matching is a few dense ops while the host's cores are needed to decode."""
    if requested != "auto":
        return requested
    import tensorflow as tf

    # TPUs need static shapes; the in-graph encoder keeps only the real boxes, a dynamic count.
    on_tpu = isinstance(strategy, tf.distribute.TPUStrategy)
    return "pipeline" if data_service or on_tpu else "model"


def main(argv=None):
    args = parse_args(argv)
    from keras_focal.data import DataSourceError

    try:
        return run(args)
    except DataSourceError as e:  # bad input in a dataset source: the message names the file
        raise SystemExit(f"error: {e}") from None


def run(args):
    import keras
    import tensorflow as tf

    import keras_focal
    from keras_focal import data, evaluation, training

    keras.utils.set_random_seed(args.seed)
    if args.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    strategy = training.select_strategy(args.tpu)
    chief = training.is_chief(strategy)
    print(f"Strategy: {type(strategy).__name__} with {strategy.num_replicas_in_sync} replica(s)")

    info = data.dataset_info(args.dataset)
    train_examples = data.load(args.dataset, "train", data_dir=args.data_dir, image_dir=args.image_dir)
    num_train = int(train_examples.cardinality())
    eval_source = args.eval_dataset or args.dataset
    eval_info = data.dataset_info(eval_source)
    # The evaluation examples are read (and checked) now, before the first training step.
    eval_ds = data.load(eval_source, args.eval_split, data_dir=args.data_dir,
                        image_dir=None if args.eval_dataset else args.image_dir)
    if eval_info.class_names != info.class_names:
        raise SystemExit(f"error: {eval_source} has the classes {list(eval_info.class_names)}, {args.dataset} has "
                         f"{list(info.class_names)}")
    size = (args.image_size, args.image_size)
    with strategy.scope():
        if args.torchvision_checkpoint:
            options = {} if args.trainable_backbone_layers is None else {
                "trainable_backbone_layers": args.trainable_backbone_layers}
            model = keras_focal.models.from_torchvision(
                args.torchvision_checkpoint, args.torchvision_variant, num_classes=info.num_classes,
                image_size=size, class_names=info.class_names, **options)
        else:
            model = keras_focal.models.RetinaNet(
                info.num_classes, backbone=args.backbone, head=args.head, fpn_width=args.fpn_width,
                head_convs=args.head_convs, image_size=size, backbone_weights=args.backbone_weights,
                trainable_backbone_layers=args.trainable_backbone_layers, letterbox=args.letterbox,
                class_names=info.class_names)

        steps = args.steps_per_epoch or max(1, num_train // args.batch_size)
        optimizer = training.make_optimizer(
            args.optimizer, steps_per_epoch=steps, epochs=args.epochs, batch_size=args.batch_size,
            learning_rate=args.learning_rate, warmup_steps=args.warmup_steps, decay_epochs=args.decay_epochs,
            weight_decay=args.weight_decay, clipnorm=args.clipnorm)
        model.compile(optimizer=optimizer, jit_compile=args.jit_compile)

    encode_in = encode_placement(args.encode_in, args.data_service, strategy)
    encoder = model.anchor_encoder if encode_in == "pipeline" else None
    print(f"Anchor targets encoded in the {encode_in}" + (f"; input from tf.data service {args.data_service}"
                                                         if args.data_service else ""))
    train_ds = data.make_dataset(
        train_examples, image_size=size, batch_size=args.batch_size,
        encoder=encoder, augment=not args.no_augment, shuffle=True, repeat=True, seed=args.seed,
        letterbox=model.letterbox)
    if args.data_service:
        train_ds = data.service.distribute(train_ds, args.data_service)

    os.makedirs(args.model_dir, exist_ok=True)
    callbacks = [
        # Saves the whole training state at each epoch end; a rerun after a kill resumes from there.
        keras.callbacks.BackupAndRestore(os.path.join(args.model_dir, "backup")),
        keras.callbacks.TensorBoard(os.path.join(args.model_dir, "logs"), update_freq=50),
    ]
    if chief:
        callbacks.append(keras.callbacks.ModelCheckpoint(os.path.join(args.model_dir, "model.keras")))
    if args.eval_every:
        callbacks.insert(0, evaluation.COCOEvalCallback(eval_ds, every_n_epochs=args.eval_every, image_size=size,
                                                     class_names=eval_info.class_names,
                                                     category_ids=eval_info.category_ids))

    start = time.time()
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        # Keras 3's fit fails under MultiWorkerMirroredStrategy (docs/distributed.md); the package's loop does the same
        # job, with BackupAndRestore's role played by its own checkpoint (the chief writes, every worker restores).
        # Each worker reads its own shard of the examples: the shuffled, parallel-augmented pipeline is not in the
        # same order on every worker, so AutoShardPolicy.DATA on the global batches could repeat or skip examples.
        def worker_dataset(context):
            return data.make_dataset(
                train_examples.shard(context.num_input_pipelines, context.input_pipeline_id), image_size=size,
                batch_size=context.get_per_replica_batch_size(args.batch_size), encoder=encoder,
                augment=not args.no_augment, shuffle=True, repeat=True, seed=args.seed, letterbox=model.letterbox)

        loop_callbacks = [c for c in callbacks if not isinstance(c, keras.callbacks.BackupAndRestore)
                          and (chief or not isinstance(c, keras.callbacks.TensorBoard))]
        training.distributed_fit(model, worker_dataset, epochs=args.epochs, steps_per_epoch=steps, strategy=strategy,
                                 model_dir=os.path.join(args.model_dir, "train_state"), callbacks=loop_callbacks)
    else:
        model.fit(train_ds, epochs=args.epochs, steps_per_epoch=steps, callbacks=callbacks)
    print(f"Training took {time.time() - start:.0f} s")

    metrics = evaluation.evaluate_model(model, eval_ds, image_size=size, class_names=eval_info.class_names,
                                         category_ids=eval_info.category_ids)
    print(f"COCO evaluation on {eval_source}" + ("" if args.eval_dataset else f" {args.eval_split}") + ":")
    print(evaluation.format_coco_table(metrics))
    if chief and args.export_dir:
        version_dir = keras_focal.export.export_saved_model(model, args.export_dir)
        print(f"Exported SavedModel to {version_dir}")
    return metrics


if __name__ == "__main__":
    main()
