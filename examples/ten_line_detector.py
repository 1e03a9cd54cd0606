"""A detector in ten lines: build, train, predict and export with the Python API (what `keras-focal train` does).

    python examples/ten_line_detector.py
"""

import keras

import keras_focal

if __name__ == "__main__":
    model = keras_focal.models.RetinaNet(num_classes=5, backbone="resnet18", head="gfl", fpn_width=64, head_convs=2,
                                         image_size=(128, 128))
    model.compile(optimizer=keras.optimizers.AdamW(1e-3))          # the head's own losses (QFL + DFL + GIoU here)
    train = keras_focal.data.make_dataset(keras_focal.data.load("keras_focal_shapes", "train"), image_size=(128, 128),
                                          batch_size=8, encoder=model.anchor_encoder, augment=True, shuffle=True)
    model.fit(train, epochs=1, steps_per_epoch=20)                 # (images, {"boxes", "classes"})
    images, _ = next(iter(train))
    detections = model.predict(images)                             # detection_boxes / _scores / _classes, num_detections
    keras_focal.export.export_saved_model(model, "saved_models/shapes_demo")   # -> saved_models/shapes_demo/1
