"""TensorBoard for detection training: the loss terms and the learning rate per step, and at each COCO evaluation
its AP / AP50 / AP_S and a few validation images with their detections drawn (the Images tab).

    summaries = TensorBoardSummaries("runs/x/logs", every_n_steps=10, images=val_images, class_names=names)
    model.fit(ds, callbacks=[COCOEvalCallback(val, ...), summaries])   # after the evaluation callback
    summaries.write_evaluation(model, metrics, step)                     # an evaluation outside fit

Tags: `train/loss`, `train/<term>` (every `*_loss` the model logs, e.g. class_loss, box_loss), `train/learning_rate`;
`eval/AP`, `eval/AP50`, `eval/AP75`, `eval/APs`, `eval/APm`, `eval/APl`; images `eval/detections`. The step is the
optimizer's iteration count, so a resumed run continues the same curves.

Keras' `fit` logs running means over the epoch; the value of step k is recovered from two of them:
x_k = k * mean_k - (k - 1) * mean_{k-1}.
"""

import numpy as np
import keras

EVAL_TAGS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


class TensorBoardSummaries(keras.callbacks.Callback):
    def __init__(self, log_dir, every_n_steps=10, images=None, class_names=None, score_threshold=0.3,
                 metrics_prefix="val_"):
        super().__init__()
        self.log_dir = log_dir
        self.every_n_steps = max(1, int(every_n_steps))
        self.images = list(images or [])
        self.class_names = class_names
        self.score_threshold = score_threshold
        self.metrics_prefix = metrics_prefix
        self._writer = None
        self._means = {}

    @property
    def writer(self):
        if self._writer is None:
            import tensorflow as tf

            self._writer = tf.summary.create_file_writer(self.log_dir)
        return self._writer

    def _step(self):
        return int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))

    def on_epoch_begin(self, epoch, logs=None):
        self._means = {}

    def on_train_batch_end(self, batch, logs=None):
        import tensorflow as tf

        logs = logs or {}
        k = batch + 1
        values = {}
        for name, mean in logs.items():
            if name != "loss" and not name.endswith("_loss"):
                continue
            mean = float(mean)
            previous = self._means.get(name, 0.0)
            values[name] = k * mean - (k - 1) * previous
            self._means[name] = mean
        step = self._step()
        if step % self.every_n_steps:
            return
        with self.writer.as_default(step=step):
            for name, value in values.items():
                tf.summary.scalar(f"train/{name}", value)
            tf.summary.scalar("train/learning_rate",
                              float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        metrics = {k[len(self.metrics_prefix):]: v for k, v in logs.items() if k.startswith(self.metrics_prefix)}
        if "AP" in metrics:
            self.write_evaluation(self.model, metrics, self._step())
        self.writer.flush()

    def detections(self, model):
        """The validation images drawn with the model's detections: uint8 [N, H', W', 3]."""
        from keras_focal.data.pipeline import resize_image
        from keras_focal.letterbox import boxes_from_frame, letterbox
        from keras_focal.visualization import draw_detections

        pictures = []
        size = tuple(model.image_size)
        for image in self.images:
            if getattr(model, "letterbox", False):
                x, content = letterbox(image, size)
                out = dict(model.detect(np.asarray(x)[None]))
                out["detection_boxes"] = boxes_from_frame(out["detection_boxes"], content[None])
            else:
                out = model.detect(np.asarray(resize_image(image, size))[None])
            out = {k: np.asarray(v)[0] for k, v in out.items()}
            pictures.append(draw_detections(image, out["detection_boxes"], out["detection_scores"],
                                            out["detection_classes"], self.class_names, self.score_threshold,
                                            out.get("num_detections"), scale=256 / max(image.shape[:2])))
        if not pictures:
            return np.zeros((0, 1, 1, 3), np.uint8)
        height = max(p.shape[0] for p in pictures)
        width = max(p.shape[1] for p in pictures)
        return np.stack([np.pad(p, ((0, height - p.shape[0]), (0, width - p.shape[1]), (0, 0))) for p in pictures])

    def write_evaluation(self, model, metrics, step):
        """COCO metrics as `eval/<name>` scalars and the validation images with detections as `eval/detections`."""
        import tensorflow as tf

        with self.writer.as_default(step=step):
            for name in EVAL_TAGS:
                if name in metrics and metrics[name] == metrics[name]:  # NaN (undefined) values are left out
                    tf.summary.scalar(f"eval/{name}", float(metrics[name]))
            if self.images:
                pictures = self.detections(model)
                tf.summary.image("eval/detections", pictures, step=step, max_outputs=len(pictures),
                                 description=f"detections scoring >= {self.score_threshold}")
        self.writer.flush()

    def close(self):
        if self._writer is not None:
            self._writer.close()
            self._writer = None
