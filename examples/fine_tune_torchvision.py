"""Fine-tune torchvision's COCO RetinaNet on your own classes (what `keras-focal train --torchvision-checkpoint`
does). Save the weights once on a machine with a network:

    torch.save(retinanet_resnet50_fpn(weights=RetinaNet_ResNet50_FPN_Weights.COCO_V1).state_dict(), "retinanet_coco.pth")

then
    python examples/fine_tune_torchvision.py retinanet_coco.pth export/train.json

Every weight but the final class layer comes from the checkpoint; torchvision trained with letterboxed images, so
the pipeline letterboxes too. Reading .pth needs torch (`pip install "keras_focal[torch]"`).
"""

import sys

import keras

import keras_focal

if __name__ == "__main__":
    checkpoint, annotations = sys.argv[1], sys.argv[2]
    info = keras_focal.data.dataset_info(annotations)                 # your classes, from the annotation file
    model = keras_focal.models.from_torchvision(checkpoint, num_classes=info.num_classes, image_size=(512, 512),
                                                class_names=info.class_names)   # trains the top 3 backbone stages
    model.compile(optimizer=keras.optimizers.SGD(0.005, momentum=0.9, clipnorm=10.0))
    train = keras_focal.data.make_dataset(keras_focal.data.load(annotations), image_size=(512, 512), batch_size=4,
                                          augment=True, shuffle=True, repeat=True, letterbox=True)
    model.fit(train, epochs=4, steps_per_epoch=100)
    model.save("fine_tuned.keras")
