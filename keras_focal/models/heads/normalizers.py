"""The loss normalizers of a head over the global batch: one all-reduce per step."""

from keras import ops


def num_replicas():
    import tensorflow as tf

    return tf.distribute.get_strategy().num_replicas_in_sync


def global_sums(local):
    """{name: scalar} summed over all replicas and workers with ONE all-reduce (identity outside tf.distribute).

    The scalars are stacked in sorted-name order and reduced together. One collective per step, whose result every
    loss term (and so every gradient) depends on, cannot be issued in different orders by different replicas;
    two independent all-reduces can, and under `MirroredStrategy` with `model.fit` they are (the replicas then
    pair a scalar with a gradient in the collective and fail on the shape mismatch). A head's loss therefore calls
    this once, with every normalizer it needs.
    """
    import tensorflow as tf

    names = sorted(local)
    packed = ops.stack([ops.cast(local[n], "float32") for n in names])
    context = tf.distribute.get_replica_context()
    if context is not None and context.num_replicas_in_sync > 1:
        packed = context.all_reduce(tf.distribute.ReduceOp.SUM, packed)
    return {n: packed[i] for i, n in enumerate(names)}
