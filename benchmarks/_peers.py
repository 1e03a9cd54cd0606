"""Peer detectors built the same way as keras_focal's for side-by-side benchmarks (never imported by the package)."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# depth -> (blocks per stage, block type) of the torchvision-style ResNets both libraries build.
RESNETS = {
    "resnet18": ([2, 2, 2, 2], "basic_block"),
    "resnet34": ([3, 4, 6, 3], "basic_block"),
    "resnet50": ([3, 4, 6, 3], "bottleneck_block"),
    "resnet101": ([3, 4, 23, 3], "bottleneck_block"),
    "resnet152": ([3, 8, 36, 3], "bottleneck_block"),
}


def build_keras_hub_detector(args):
    """keras-hub's RetinaNetObjectDetector with the same ResNet, P3-P7 (P6 from C5), head depth and image size.

    args: backbone, image_size, num_classes, head_convs, score_threshold."""
    import keras_hub

    blocks, block_type = RESNETS[args.backbone]
    encoder = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[7], stackwise_num_filters=[64, 128, 256, 512],
        stackwise_num_blocks=blocks, stackwise_num_strides=[1, 2, 2, 2], block_type=block_type,
        use_pre_activation=False, image_shape=(None, None, 3))
    # P3-P7 with P6 from C5 (use_p5=False), as keras_focal's RetinaNet head.
    backbone = keras_hub.models.RetinaNetBackbone(image_encoder=encoder, min_level=3, max_level=7, use_p5=False,
                                                  image_shape=(None, None, 3))
    converter = keras_hub.layers.RetinaNetImageConverter(
        image_size=(args.image_size, args.image_size),
        scale=[1.0 / (255.0 * s) for s in IMAGENET_STD],
        offset=[-m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)])
    decoder = keras_hub.layers.NonMaxSuppression(bounding_box_format="yxyx", from_logits=True,
                                                 iou_threshold=0.5, confidence_threshold=args.score_threshold,
                                                 max_detections=100)
    preprocessor = keras_hub.models.RetinaNetObjectDetectorPreprocessor(image_converter=converter)
    detector = keras_hub.models.RetinaNetObjectDetector(
        backbone=backbone, num_classes=args.num_classes, bounding_box_format="yxyx",
        pre_logits_num_conv_layers=args.head_convs, preprocessor=preprocessor, prediction_decoder=decoder)
    return detector


def keras_hub_predictor(detector):
    """`predict(images [B, H, W, 3]) -> keras-hub's output dict`, one call per batch.

    keras-hub's NonMaxSuppression needs a static batch size (`ops.zeros([boxes.shape[0]])`); when predict retraces
    for a second batch size, Keras relaxes the batch dimension to None and the NMS fails. So the predict function is
    rebuilt whenever the batch size changes (in the benchmarks, outside the timed calls: the warmup calls trace it).
    """
    traced_batch = []

    def predict(images):
        if traced_batch != [len(images)]:
            detector.make_predict_function(force=True)
            traced_batch[:] = [len(images)]
        return detector.predict(images.astype("float32"), batch_size=len(images), verbose=0)

    return predict
