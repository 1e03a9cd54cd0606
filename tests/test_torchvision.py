"""from_torchvision and torchvision ImageNet backbones against torchvision itself, on the same image.

The references are torchvision's own models (`tests/_torchvision.py` imports them on a CPU torch) with random
weights, random BatchNorm statistics and random GroupNorm parameters, so no layer is an identity. Tolerances: the
same labels, scores within 1e-3 and boxes within half a pixel for the 100 highest-scoring detections.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_focal.layers import AnchorGenerator
from keras_focal.letterbox import PAD_COLOUR
from keras_focal.models import RetinaNet, from_torchvision
from keras_focal.models.torchvision import (load_torchvision_weights, torchvision_anchor_generator,
                                            torchvision_retinanet)
from tests._tiny import padded_targets
from tests._torchvision import import_torchvision, numpy_state_dict, random_retinanet, randomize_normalization

torch = pytest.importorskip("torch")

SIZE = 256  # a multiple of 128, so torchvision's P7 stride (image size // grid size) is 128 as ours
VARIANTS = ("retinanet_resnet50_fpn", "retinanet_resnet50_fpn_v2")
COMPARED = 100  # the contract compares torchvision's 100 highest-scoring detections


def _image(seed=0):
    """A smooth random RGB image (noise blurred by upsampling), uint8 [SIZE, SIZE, 3]."""
    coarse = np.random.default_rng(seed).uniform(0, 255, (SIZE // 16, SIZE // 16, 3))
    return np.kron(coarse, np.ones((16, 16, 1))).clip(0, 255).astype("uint8")


def _torch_image(image):
    return torch.from_numpy(image).permute(2, 0, 1).float() / 255.0


@pytest.fixture(scope="module", params=VARIANTS)
def reference(request):
    """(variant, state_dict, image, torchvision detections, torchvision raw head outputs)."""
    model = random_retinanet(request.param, SIZE)
    image = _image()
    with torch.no_grad():
        detections = model([_torch_image(image)])[0]
        batch, _ = model.transform([_torch_image(image)])
        head = model.head(list(model.backbone(batch.tensors).values()))
    return request.param, numpy_state_dict(model), image, detections, head


def test_anchors_are_torchvisions():
    tv = import_torchvision()
    from torchvision.models.detection.image_list import ImageList
    from torchvision.models.detection.retinanet import _default_anchorgen

    strides = (8, 16, 32, 64, 128)
    maps = [torch.zeros(1, 1, SIZE // s, SIZE // s) for s in strides]
    expected = _default_anchorgen()(ImageList(torch.zeros(1, 3, SIZE, SIZE), [(SIZE, SIZE)]), maps)[0].numpy()
    assert tv is not None
    anchors = np.asarray(torchvision_anchor_generator()(SIZE, SIZE)) * SIZE  # normalized yxyx -> pixels
    np.testing.assert_allclose(anchors[:, [1, 0, 3, 2]], expected, atol=1e-3)
    # The default generator differs (offset, sizes, order): the options are what makes them equal.
    assert not np.allclose(np.asarray(AnchorGenerator()(SIZE, SIZE)) * SIZE, anchors[:, [1, 0, 3, 2]], atol=1)
    config = torchvision_anchor_generator().get_config()
    assert AnchorGenerator.from_config(config).get_config() == config
    with pytest.raises(ValueError, match="order"):
        AnchorGenerator(order="scale_first")


def test_matches_torchvision(reference):
    variant, state, image, expected, head = reference
    model = from_torchvision(state, variant, image_size=(SIZE, SIZE))

    raw = model(image[None].astype("float32"), training=False)
    logits = np.asarray(raw["class_logits"])[0]
    np.testing.assert_allclose(logits, head["cls_logits"][0].numpy(), atol=2e-4)
    deltas = head["bbox_regression"][0].numpy()[:, [1, 0, 3, 2]]  # (dx, dy, dw, dh) -> (dy, dx, dh, dw)
    np.testing.assert_allclose(np.asarray(raw["box_outputs"])[0], deltas, atol=2e-4)

    assert len(expected["scores"]) >= COMPARED, "the reference must give enough detections to compare"
    got = model.predict(image[None], verbose=0)
    assert int(got["num_detections"][0]) == len(expected["scores"])
    boxes = got["detection_boxes"][0, :COMPARED][:, [1, 0, 3, 2]] * SIZE  # normalized yxyx -> pixel xyxy
    np.testing.assert_array_equal(got["detection_classes"][0, :COMPARED], expected["labels"][:COMPARED].numpy())
    np.testing.assert_allclose(got["detection_scores"][0, :COMPARED], expected["scores"][:COMPARED].numpy(),
                               atol=1e-3)
    np.testing.assert_allclose(boxes, expected["boxes"][:COMPARED].numpy(), atol=0.5)


def test_imagenet_backbone_matches_torchvision(tmp_path):
    tv = import_torchvision()
    reference = randomize_normalization(tv.models.resnet18(weights=None), seed=3)
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    model = RetinaNet(3, backbone="resnet18", backbone_weights=str(path), image_size=(128, 128))
    image = _image(1)[:128, :160]
    normalized = model.get_layer("normalization")(image[None].astype("float32"))
    c3, c4, c5 = model.get_layer("resnet18_features")(normalized)

    x = _torch_image(image)[None]
    x = (x - torch.tensor([0.485, 0.456, 0.406])[:, None, None]) / torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    with torch.no_grad():
        x = reference.maxpool(reference.relu(reference.bn1(reference.conv1(x))))
        outputs = []
        for stage in (reference.layer1, reference.layer2, reference.layer3, reference.layer4):
            x = stage(x)
            outputs.append(x.permute(0, 2, 3, 1).numpy())
    for got, want in zip((c3, c4, c5), outputs[1:]):
        np.testing.assert_allclose(np.asarray(got), want, atol=1e-4 * max(1.0, np.abs(want).max()))
    assert all(not layer.trainable for layer in model.get_layer("resnet18_features").layers
               if "bn" in layer.name), "pretrained BatchNorms are frozen"


@pytest.fixture(scope="module")
def v1_state():
    return numpy_state_dict(random_retinanet("retinanet_resnet50_fpn", SIZE, seed=5))


@pytest.fixture(scope="module")
def v1_model():
    return torchvision_retinanet("retinanet_resnet50_fpn", 91, image_size=(128, 128))


def test_fine_tune_keeps_weights_trains_and_exports(v1_state, tmp_path):
    from keras_focal.export import export_saved_model

    model = from_torchvision(v1_state, num_classes=2, image_size=(128, 128))
    logits = model.get_layer("class_subnet_logits")
    assert logits.kernel.shape[-1] == 9 * 2
    np.testing.assert_allclose(np.asarray(logits.bias), -np.log(99.0), rtol=1e-6)  # the focal prior
    kernel = v1_state["head.classification_head.conv.0.0.weight"].transpose(2, 3, 1, 0)
    np.testing.assert_array_equal(np.asarray(model.get_layer("class_subnet_conv0").kernel), kernel)

    backbone = model.get_layer("resnet50_features")
    trainable = {layer.name.split("_")[0] for layer in backbone.layers if layer.trainable and layer.weights
                 and "bn" not in layer.name}
    assert trainable == {"stack1", "stack2", "stack3"}, trainable  # torchvision's trainable_backbone_layers=3
    assert not any(layer.trainable for layer in backbone.layers if "bn" in layer.name)

    frozen = np.asarray(backbone.get_layer("stack0_block0_1_conv").kernel).copy()
    trained = np.asarray(backbone.get_layer("stack3_block0_1_conv").kernel).copy()
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    images = np.stack([_image(2)[:128, :128], _image(3)[:128, :128]])
    targets = padded_targets([[[0.1, 0.1, 0.6, 0.5]], []], [[1], []])
    history = model.fit(images, targets, batch_size=2, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    np.testing.assert_array_equal(np.asarray(backbone.get_layer("stack0_block0_1_conv").kernel), frozen)
    assert not np.array_equal(np.asarray(backbone.get_layer("stack3_block0_1_conv").kernel), trained)

    # Converted models letterbox: the served boxes are the model's on the padded frame, mapped to the original.
    assert model.letterbox
    wide = np.stack([_image(4)[:96, :128], _image(5)[:96, :128]])  # 96 x 128 fills 0.75 of a 128 x 128 frame
    served = tf.saved_model.load(export_saved_model(model, str(tmp_path / "tv"), version=1))
    out = served.signatures["serving_default"](images=tf.constant(wide))
    frames = np.concatenate([wide, np.broadcast_to(PAD_COLOUR, (2, 32, 128, 3))], axis=1).astype("float32")
    expected = model.detect(frames)
    n = int(expected["num_detections"][0])
    assert n > 0 and int(tf.reduce_max(out["detection_classes"])) < 2
    np.testing.assert_array_equal(out["num_detections"], expected["num_detections"])
    want = np.clip(np.asarray(expected["detection_boxes"]) / [0.75, 1.0, 0.75, 1.0], 0, 1)
    np.testing.assert_allclose(out["detection_boxes"][0, :n], want[0, :n], atol=1e-4)
    np.testing.assert_allclose(out["detection_scores"], expected["detection_scores"], atol=1e-5)


@pytest.mark.parametrize("change, error, named", [
    ("missing", KeyError, "backbone.fpn.extra_blocks.p7.weight"),
    ("unexpected", ValueError, "head.extra.weight"),
    ("shape", ValueError, "backbone.body.layer1.0.conv1.weight"),
])
def test_bad_checkpoints_name_the_tensor(v1_model, v1_state, change, error, named):
    state = dict(v1_state)
    if change == "missing":
        del state[named]
    elif change == "unexpected":
        state[named] = np.zeros((1,), "float32")
    else:
        state[named] = state[named][:, :32]
    with pytest.raises(error, match=named.replace(".", r"\.")):
        load_torchvision_weights(v1_model, state, "retinanet_resnet50_fpn")


def test_bad_arguments():
    with pytest.raises(ValueError, match="variant"):
        from_torchvision({}, variant="retinanet_resnet101")
    with pytest.raises(KeyError, match="cls_logits"):
        from_torchvision({"backbone.body.conv1.weight": np.zeros((64, 3, 7, 7))})
    with pytest.raises(FileNotFoundError, match="nothing.pth"):
        from_torchvision("/nonexistent/nothing.pth")


def test_converted_config_round_trips(v1_model):
    config = v1_model.get_config()
    assert config["letterbox"] and config["symmetric_padding"]
    assert config["head"]["config"]["extra_levels_from"] == "p5" and not config["head"]["config"]["group_norm"]
    assert config["max_detections"] == 300 and config["trainable_backbone_layers"] == 3
    rebuilt = RetinaNet.from_config(config)
    assert rebuilt.get_config() == config
    def options(generator):
        return {k: v for k, v in generator.get_config().items() if k != "name"}

    assert options(rebuilt.anchor_generator) == options(torchvision_anchor_generator())
