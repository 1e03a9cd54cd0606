"""Where a head's anchor targets are computed: in the tf.data pipeline or in the train step.

    encode_in = encode_placement("auto", data_service=None, strategy=strategy, model=model)
    encoder = model.anchor_encoder if encode_in == "pipeline" else None     # data.make_dataset(encoder=...)

"auto" chooses the pipeline when tf.data service workers run it (their CPU is not the trainer's) or on a TPU (static
shapes: the in-graph encoder keeps only the real boxes, a dynamic count), and the model otherwise: on a 2-core CPU
the train step with in-graph encoding was as fast or faster than encoding in tf.data
(benchmarks/encode_placement.py), and on a GPU the matching is a few dense ops while the host's cores are needed to
decode images. A head whose assigner needs the predictions (task-aligned assignment) can only encode in the model.
"""

PLACEMENTS = ("auto", "pipeline", "model")


def needs_predictions(model):
    """True when the model's head assigns anchors from its own predictions (so inside the train step)."""
    head = getattr(model, "detection_head", None)
    return bool(getattr(getattr(head, "assigner", None), "needs_predictions", False))


def encode_placement(requested="auto", data_service=None, strategy=None, model=None):
    """"pipeline" or "model" for `requested` in PLACEMENTS; ValueError for a placement the model cannot use."""
    if requested not in PLACEMENTS:
        raise ValueError(f"encode placement must be one of {PLACEMENTS}, got {requested!r}")
    dynamic = model is not None and needs_predictions(model)
    if dynamic:
        if requested == "pipeline":
            head = type(model.detection_head).__name__
            assigner = type(model.detection_head.assigner).__name__
            raise ValueError(f"--encode-in pipeline: the {head}'s {assigner} assigns anchors from the model's own "
                             "predictions, so its targets are computed in the train step; use --encode-in model "
                             "(or auto)")
        return "model"
    if requested != "auto":
        return requested
    import tensorflow as tf

    on_tpu = isinstance(strategy, tf.distribute.TPUStrategy)
    return "pipeline" if data_service or on_tpu else "model"
