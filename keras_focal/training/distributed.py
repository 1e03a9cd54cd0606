"""A custom training loop for any tf.distribute strategy, MultiWorkerMirroredStrategy included.

Why a custom loop: Keras 3.15's `model.fit` fails under `tf.distribute.MultiWorkerMirroredStrategy`. Before the
first step, `fit` (keras/src/backend/tensorflow/trainer.py, `_maybe_symbolic_build`) calls
`strategy.reduce("MEAN", <first distributed batch>)` to build the model symbolically, and the collective
all-reduce cannot convert the `PerReplica` batch ("Attempt to convert a value (PerReplica:{...}) with an
unsupported type"); see keras-team/keras#20585 and tensorflow/tensorflow#72388. The same model trains under
MultiWorkerMirroredStrategy with `strategy.run` in a loop, which is what this module does. It works with any
strategy (default, MirroredStrategy, MultiWorkerMirroredStrategy, TPUStrategy) and mirrors `fit`:

- the same per-step maths as Keras' TF `train_step`: forward with `training=True`, `model.compute_loss`,
  `optimizer.scale_loss` (mixed-precision loss scaling), gradients, `optimizer.apply_gradients` (which sums the
  gradients over all replicas and workers);
- the same callbacks: a `keras.callbacks.CallbackList` with Keras' progress bar (`ProgbarLogger`, i.e.
  `keras.utils.Progbar`) and `History`, `on_train/epoch/batch_*` hooks, `model.stop_training`;
- the same logs: "loss" is the global-batch loss (each replica's share times the number of replicas, averaged,
  Keras' `unscale_loss_for_distribution` convention), plus the model's own metrics (class_loss, box_loss);
- BackupAndRestore-equivalent resume: at each epoch end the training state (model, optimizer, epoch) is written
  with a `tf.train.CheckpointManager`. Every worker takes part in the save (reading distributed variables may
  need collectives); only the chief writes to `model_dir`, the other workers write to a private temporary
  directory that is deleted (TensorFlow's multi-worker checkpointing recipe). On start every worker restores
  the chief's latest checkpoint, so `model_dir` must be readable by all workers (shared disk, GCS). Unlike
  Keras' BackupAndRestore the checkpoint is kept when training completes, so asking for more epochs later
  continues (2 epochs done, `epochs=3` runs only the third).

Input sharding is set deliberately: a `tf.data.Dataset` of *global* batches is distributed with
`AutoShardPolicy.DATA` (default): every worker runs the same pipeline and keeps its own slice of every global
batch (worker w gets per-replica batches w*R .. w*R+R-1 of each global batch of R*W replica batches), so the
global batches are exactly those of a single-process run. This costs each worker the whole input pipeline; with
large file-based datasets pass `shard_policy="file"` (workers read disjoint files, different batch composition)
or a `dataset_fn(input_context)` that shards itself (given to `distribute_datasets_from_function`).
"""

import os
import shutil
import tempfile

import keras
import tensorflow as tf

from keras_focal.training.strategy import is_chief

SHARD_POLICIES = {
    "auto": tf.data.experimental.AutoShardPolicy.AUTO,
    "data": tf.data.experimental.AutoShardPolicy.DATA,
    "file": tf.data.experimental.AutoShardPolicy.FILE,
    "off": tf.data.experimental.AutoShardPolicy.OFF,
}


def task_id(strategy):
    resolver = getattr(strategy, "cluster_resolver", None)
    return int(resolver.task_id or 0) if resolver is not None and resolver.task_type else 0


def distribute_dataset(dataset, strategy, shard_policy="data"):
    """Distributes `dataset` over the strategy's replicas.

    dataset: a `tf.data.Dataset` of global batches, a callable `dataset_fn(tf.distribute.InputContext)` returning
        that replica's per-replica batches (sharded by the function), or an already distributed dataset.
    shard_policy: "data" (default; see the module docstring), "file", "auto" or "off" (each worker gets the
        whole dataset: only right when the dataset is already sharded per worker).
    """
    if isinstance(dataset, tf.data.Dataset):
        if shard_policy not in SHARD_POLICIES:
            raise ValueError(f"shard_policy must be one of {sorted(SHARD_POLICIES)}, got {shard_policy!r}")
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = SHARD_POLICIES[shard_policy]
        return strategy.experimental_distribute_dataset(dataset.with_options(options))
    if callable(dataset) and not hasattr(dataset, "element_spec"):
        return strategy.distribute_datasets_from_function(dataset)
    return dataset  # already distributed


class DistributedTrainer:
    """Trains a compiled Keras model (e.g. a `keras_focal.models.RetinaNet`) with `strategy.run`.

    The model and its optimizer must have been created and compiled under `strategy.scope()`.

        with strategy.scope():
            model = RetinaNet(...)
            model.compile(optimizer=...)
        history = DistributedTrainer(model, strategy).fit(dataset, epochs=12, steps_per_epoch=1000,
                                                           model_dir="runs/x/backup")
    """

    def __init__(self, model, strategy=None, jit_compile=None):
        if model.optimizer is None:
            raise ValueError("Compile the model (under strategy.scope()) before training it")
        self.model = model
        self.strategy = strategy or model.distribute_strategy
        if jit_compile is None:
            jit_compile = getattr(model, "jit_compile", False) is True
        self.jit_compile = bool(jit_compile)
        with self.strategy.scope():
            # Build the optimizer's slots now, so a checkpoint restores into existing variables.
            if not model.optimizer.built:
                model.optimizer.build(model.trainable_variables)
            self.loss_tracker = keras.metrics.Mean(name="loss")
        self._train_function = None
        self.last_write_dir = None  # where this worker wrote its last checkpoint (the model_dir on the chief)

    # ------------------------------------------------------------------------------------------ one step
    def _replica_step(self, data):
        model = self.model
        x, y = data[0], data[1]
        with tf.GradientTape() as tape:
            y_pred = model(x, training=True)
            # Each replica's loss is its share of the global-batch loss (RetinaNet: local sum over the global
            # positive count), so the sum of the replicas' gradients, which apply_gradients all-reduces, is the
            # gradient of the global-batch loss.
            loss = model.compute_loss(x=x, y=y, y_pred=y_pred, training=True)
            scaled = model.optimizer.scale_loss(loss)
        variables = model.trainable_variables
        gradients = tape.gradient(scaled, variables)
        model.optimizer.apply_gradients(zip(gradients, variables))
        # Keras' convention for the reported loss: the share times the number of replicas, averaged over replicas.
        self.loss_tracker.update_state(_unscale(loss), sample_weight=tf.shape(x)[0])

    def _metric_logs(self):
        logs = {"loss": self.loss_tracker.result()}
        for metric in self._model_metrics():
            result = metric.result()
            if isinstance(result, dict):
                logs.update(result)
            else:
                logs[metric.name] = result
        return logs

    def _model_metrics(self):
        skip = getattr(self.model, "_loss_tracker", None)
        return [m for m in self.model.metrics if m is not skip and m is not self.loss_tracker]

    def reset_metrics(self):
        self.loss_tracker.reset_state()
        for metric in self._model_metrics():
            metric.reset_state()

    def make_train_function(self):
        if self._train_function is not None:
            return self._train_function

        def one_step(data):
            self.strategy.run(self._replica_step, args=(data,))

        if self.jit_compile:
            one_step = tf.function(one_step, jit_compile=True, reduce_retracing=True)

        @tf.function(reduce_retracing=True)
        def train_function(iterator):
            one_step(next(iterator))
            return self._metric_logs()

        self._train_function = train_function
        return train_function

    def train_step(self, iterator):
        """One optimizer step on the next batch of a distributed iterator; returns the running metric logs
        (tensors) since the last `reset_metrics`."""
        return self.make_train_function()(iterator)

    # --------------------------------------------------------------------------------------------- fit
    def _checkpoint(self, model_dir):
        epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        checkpoint = tf.train.Checkpoint(model=self.model, optimizer=self.model.optimizer, epoch=epoch)
        chief = is_chief(self.strategy)
        write_dir = model_dir if chief else tempfile.mkdtemp(prefix=f"keras_focal_worker{task_id(self.strategy)}_")
        manager = tf.train.CheckpointManager(checkpoint, write_dir, max_to_keep=1)
        return checkpoint, manager, epoch, write_dir, chief

    def fit(self, dataset, epochs, steps_per_epoch, model_dir=None, callbacks=None, verbose="auto",
            initial_epoch=0, shard_policy="data"):
        """Trains for `epochs` epochs of `steps_per_epoch` steps, resuming from `model_dir` if it holds a checkpoint.

        dataset: global batches `(images, targets)`, repeated if `steps_per_epoch` needs more than one pass (see
            `distribute_dataset` for the other accepted forms and `shard_policy`).
        model_dir: where the chief keeps the resume checkpoint (None: no checkpointing).
        callbacks: Keras callbacks, as for `fit` (progress bar and History are added). Do not add Keras'
            BackupAndRestore: with `model_dir` this loop does that job, correctly with several workers.
        verbose: "auto" (progress bar on the chief only), 0, 1 or 2.
        Returns the `keras.callbacks.History`.
        """
        model = self.model
        if verbose == "auto":
            verbose = 1 if is_chief(self.strategy) else 0
        checkpoint = manager = write_dir = None
        if model_dir:
            if is_chief(self.strategy):
                os.makedirs(model_dir, exist_ok=True)
            checkpoint, manager, epoch_var, write_dir, chief = self._checkpoint(model_dir)
            self.last_write_dir = write_dir
            latest = tf.train.latest_checkpoint(model_dir)  # every worker restores the chief's state
            if latest:
                checkpoint.restore(latest).assert_existing_objects_matched()
                initial_epoch = max(initial_epoch, int(epoch_var.numpy()))
        callback_list = callbacks if isinstance(callbacks, keras.callbacks.CallbackList) else \
            keras.callbacks.CallbackList(callbacks, add_history=True, add_progbar=verbose != 0, model=model,
                                         verbose=verbose, epochs=epochs, steps=steps_per_epoch)
        iterator = iter(distribute_dataset(dataset, self.strategy, shard_policy))
        train_function = self.make_train_function()
        model.stop_training = False
        try:
            callback_list.on_train_begin()
            logs = {}
            for epoch in range(initial_epoch, epochs):
                self.reset_metrics()
                callback_list.on_epoch_begin(epoch)
                for step in range(steps_per_epoch):
                    callback_list.on_train_batch_begin(step)
                    logs = train_function(iterator)
                    callback_list.on_train_batch_end(step, logs)
                    if model.stop_training:
                        break
                logs = {name: float(value) for name, value in logs.items()}
                callback_list.on_epoch_end(epoch, logs)
                if manager is not None:
                    epoch_var.assign(epoch + 1)
                    manager.save()
                if model.stop_training:
                    break
            callback_list.on_train_end(logs)
        finally:
            if manager is not None and not chief:
                shutil.rmtree(write_dir, ignore_errors=True)
        return model.history if isinstance(getattr(model, "history", None), keras.callbacks.History) else None


def _unscale(loss):
    return keras.ops.multiply(loss, keras.ops.cast(tf.distribute.get_strategy().num_replicas_in_sync, loss.dtype))


def distributed_fit(model, dataset, epochs, steps_per_epoch, strategy=None, model_dir=None, callbacks=None,
                    verbose="auto", initial_epoch=0, shard_policy="data", jit_compile=None):
    """`DistributedTrainer(model, strategy, jit_compile).fit(...)`: the drop-in for `model.fit` under
    MultiWorkerMirroredStrategy (and any other strategy)."""
    trainer = DistributedTrainer(model, strategy, jit_compile)
    return trainer.fit(dataset, epochs, steps_per_epoch, model_dir=model_dir, callbacks=callbacks, verbose=verbose,
                       initial_epoch=initial_epoch, shard_policy=shard_policy)
